//! Attacks on a running lab: the one-packet loop and spoofed overlay or martian sources (SPEC.md §8.5).
//!
//! One spoofed UDP packet `G:7 → G:7` to the lab's echo group (10.99.0.7:7/udp, served by t1) used to loop
//! for ever: the JAP's reverse NAT wrote the echo's reply `G:7 → G:7` to the TUN, the kernel routed it back
//! into the TUN, the IAP forwarded it to the same binding, the target echoed it again... Here the packet is
//! sent once from a client's namespace (a python3 raw socket, IP_HDRINCL) while a packet capture in t1's
//! namespace counts what reaches the echo: at most a few datagrams in 3 s, and the ingress proxy counted
//! the drop. Spoofed sources in the anycast prefix, the registration address, NAT pools and link-local
//! space are dropped at the IAP (127.0.0.1, which routers drop as martian, is sent from the proxy's own
//! namespace). With the XDP fast path (TC hook) the group is cached in the program first, so the refused
//! packets meet the program's filter (`xdp_pass_filtered`) before the core's.
//!
//! Run one at a time, as root: `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_attack_loop`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::*;

/// The lab's UDP echo group (see `pias lab topology`), served by t1 only.
const ECHO4: &str = "10.99.0.7";
/// The registration address and the proxies' NAT pools in the default topology.
const REGISTRATION4: &str = "10.99.0.1";
/// The marker every attack datagram carries (the echo sends it back unchanged).
const MARK: &str = "pias-loop-attack";

/// Sends one UDP datagram with any source, from a raw socket (the IP header is ours, IP_HDRINCL).
/// argv: src sport dst dport payload.
const SEND: &str = r#"
import socket, struct, sys
src, sport, dst, dport, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s4, d4 = socket.inet_aton(src), socket.inet_aton(dst)
ulen = 8 + len(payload)
pseudo = s4 + d4 + struct.pack("!BBH", 0, 17, ulen)
u = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
c = csum(pseudo + u) or 0xffff
u = struct.pack("!HHHH", sport, dport, ulen, c) + payload
h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0x1234, 0, 64, 17, 0, s4, d4)
h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(h + u, (dst, 0))
"#;

/// Counts, for argv[1] seconds, the IPv4 UDP datagrams to port 7 whose payload starts with argv[2], as
/// received by this namespace's interfaces (a packet socket: every datagram, before any socket). Prints
/// "ready" once capturing, then the count.
const CAPTURE: &str = r#"
import socket, sys, time
secs, mark = float(sys.argv[1]), sys.argv[2].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.settimeout(0.1)
print("ready", flush=True)
end, n = time.time() + secs, 0
while time.time() < end:
    try:
        d, a = s.recvfrom(65535)
    except socket.timeout:
        continue
    if a[2] == socket.PACKET_OUTGOING or len(d) < 28 or d[9] != 17:
        continue
    ihl = (d[0] & 15) * 4
    if d[ihl + 2:ihl + 4] == b"\x00\x07" and d[ihl + 8:].startswith(mark):
        n += 1
print(n, flush=True)
"#;

/// A legitimate echo round trip from a client, retried: the group is registered, resolved and (with XDP)
/// cached in the program.
const PING: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
ok = 0
for i in range(int(sys.argv[2])):
    s.sendto(b"warm-up", (sys.argv[1], 7))
    try:
        d, _ = s.recvfrom(2048)
        ok += d == b"warm-up"
    except socket.timeout:
        pass
print(ok)
"#;

fn send(node: &str, src: &str, sport: u16, dst: &str, dport: u16) {
    let o = exec(
        node,
        &[
            "python3",
            "-c",
            SEND,
            src,
            &sport.to_string(),
            dst,
            &dport.to_string(),
            MARK,
        ],
    );
    assert!(
        o.status.success(),
        "{node}: raw send {src}:{sport} → {dst}:{dport} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Starts a capture in `node` for `secs`; returns it once it is capturing.
fn capture(node: &str, secs: u32) -> std::process::Child {
    let ns = format!("{NAME}-{node}");
    let mut c = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "python3",
            "-c",
            CAPTURE,
            &secs.to_string(),
            MARK,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the capture");
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .expect("capture output");
    assert_eq!(line.trim(), "ready", "the capture did not start");
    c
}

fn captured(mut c: std::process::Child) -> u64 {
    let status = c.wait().expect("capture");
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "capture failed: {err}");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("capture printed {out:?}"))
}

/// Packets the proxies forwarded (core and fast path), summed.
fn forwarded(
    a: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    b: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
) -> u64 {
    let names = [
        "jap_delivered",
        "jap_replies",
        "iap_to_jap",
        "iap_to_rap",
        "xdp_iap_hit",
        "xdp_iap_local_hit",
        "xdp_jap_forward_hit",
        "xdp_jap_reverse_hit",
        "xdp_jap_tunnel_hit",
    ];
    PROXIES
        .iter()
        .map(|p| names.iter().map(|n| delta(a, b, p, n)).sum::<u64>())
        .sum()
}

fn lab_attack_loop(driver: &str) {
    let _lab = Lab::up(driver);
    let iap = ingress("c1");
    assert!(PROXIES.contains(&iap.as_str()), "c1 reaches no proxy: {iap:?}");

    // 0. The echo group works for a real client (and, with XDP, its entry is in the program's map).
    let o = exec("c1", &["python3", "-c", PING, ECHO4, "5"]);
    let ok: u32 = text(&o).trim().parse().unwrap_or(0);
    assert!(ok >= 3, "the echo group does not answer c1 ({ok}/5):\n{}", logs());
    std::thread::sleep(Duration::from_millis(300));

    // 1. The one-packet loop: G:7 → G:7, sent once. It is dropped at the IAP: nothing (or, at worst, a
    //    few datagrams) reaches the echo in 3 s, and no proxy forwards it.
    let cap = capture("t1", 3);
    let a = counters();
    send("c1", ECHO4, 7, ECHO4, 7);
    let at_target = captured(cap);
    let b = counters();
    assert!(
        at_target <= 3,
        "the spoofed G:7 → G:7 reached the echo {at_target} times in 3 s (a loop){}",
        changed(&a, &b)
    );
    assert!(
        forwarded(&a, &b) <= 3,
        "the proxies forwarded the loop packet {} times{}",
        forwarded(&a, &b),
        changed(&a, &b)
    );
    assert_eq!(
        delta(&a, &b, &iap, "drop_overlay_source"),
        1,
        "the IAP {iap} must drop and count the spoofed group source{}",
        changed(&a, &b)
    );
    if driver.starts_with("xdp") {
        assert_eq!(
            delta(&a, &b, &iap, "xdp_pass_filtered"),
            1,
            "the program must refuse the cached group's spoofed source{}",
            changed(&a, &b)
        );
    }

    // 2. Other overlay sources, and a link-local one, from the client: each dropped at the IAP.
    let p_index: usize = iap.trim_start_matches('p').parse().expect("proxy name pN");
    let own_pool = format!("10.98.{p_index}.1");
    let other_pool = format!("10.98.{}.1", p_index % PROXIES.len() + 1);
    let cases = [
        ("10.99.0.200", "drop_overlay_source"),
        (REGISTRATION4, "drop_overlay_source"),
        (own_pool.as_str(), "drop_overlay_source"),
        (other_pool.as_str(), "drop_overlay_source"),
        ("169.254.7.7", "drop_martian_source"),
    ];
    for (src, counter) in cases {
        let cap = capture("t1", 1);
        let a = counters();
        send("c1", src, 40_000, ECHO4, 7);
        let at_target = captured(cap);
        let b = counters();
        assert_eq!(at_target, 0, "{src}: the spoofed packet reached the echo");
        assert_eq!(
            delta(&a, &b, &iap, counter),
            1,
            "{src}: the IAP {iap} must count {counter}{}",
            changed(&a, &b)
        );
        assert_eq!(forwarded(&a, &b), 0, "{src}: forwarded{}", changed(&a, &b));
    }

    // 3. Loopback: routers drop it as martian, so it comes from the proxy's own namespace (into its TUN).
    let a = counters();
    send(&iap, "127.0.0.1", 40_000, ECHO4, 7);
    std::thread::sleep(Duration::from_millis(300));
    let b = counters();
    assert_eq!(
        delta(&a, &b, &iap, "drop_martian_source"),
        1,
        "127.0.0.1 must be dropped at the IAP{}",
        changed(&a, &b)
    );
    assert_eq!(forwarded(&a, &b), 0, "127.0.0.1: forwarded{}", changed(&a, &b));

    // 4. The group still serves real clients.
    let o = exec("c1", &["python3", "-c", PING, ECHO4, "3"]);
    let ok: u32 = text(&o).trim().parse().unwrap_or(0);
    assert!(ok >= 2, "the echo group stopped answering c1 ({ok}/3)");
}

#[test]
fn lab_attack_loop_tokio() {
    lab_attack_loop("tokio");
}

#[test]
fn lab_attack_loop_mio() {
    lab_attack_loop("mio");
}

/// The XDP program (XDP hook) on the proxies' veths in front of the tokio slow path.
#[test]
fn lab_attack_loop_xdp() {
    lab_attack_loop("xdp");
}

/// The XDP program at the veths' TC ingress in front of the tokio slow path.
#[test]
fn lab_attack_loop_xdp_tc() {
    lab_attack_loop("xdp-tc");
}
