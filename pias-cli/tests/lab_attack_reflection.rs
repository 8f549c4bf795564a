//! Attacks on a running lab: reflection through the registration address (SPEC.md §8.4), and the local
//! surfaces of a running proxy and agent (§8.6).
//!
//! Reflection: a zero-cookie Register and a Refresh, crafted with the group key from the lab's key files
//! (what an eavesdropper on a target's path records), are each replayed 10,000 times from client c1 with the
//! source forged to c2's address (random ports), towards the registration address, which routing leads to
//! p1. A sniffer in c2's namespace counts the replies that reach the victim. The bound: at most
//! `reply_burst + reply_rate × T` = 64 + 20 × T replies for a flood and sniff lasting T seconds, whatever the
//! number of requests; none at all for the Refresh (the registration exists, from t1's source). The lab's
//! real targets stay registered and answer through the group throughout.
//!
//! Needs root and the lab's tools, like `lab_e2e`; run under the cross-helper lock:
//! `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_attack_reflection`.
mod common;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::*;
use pias_proto::auth::MacKey;
use pias_proto::control::{Binding, COOKIE_LEN, ControlHeader, DeliveryMode, Message, Register, TargetOp};
use pias_proto::{IpProtocol, ProxyId, TransportAddr};

/// The registry's default reply budget per source prefix (RegistryConfig: reply_burst, reply_rate).
const REPLY_BURST: u64 = 64;
const REPLY_RATE: u64 = 20;
/// Copies of each recorded request.
const REPLAYS: u32 = 10_000;
/// How long the sniffer in the victim's namespace listens (the flood takes about 2 s of it).
const SNIFF_S: u64 = 6;

const REGISTRATION: &str = "10.99.0.1";
const GROUP: &str = "10.99.0.53";

#[test]
fn lab_attack_reflection_tokio() {
    lab_attack_reflection("tokio");
}

/// The same with every proxy and agent on the mio driver (its own control-socket server).
#[test]
fn lab_attack_reflection_mio() {
    lab_attack_reflection("mio");
}

/// A target message for the DNS group and t1's service, MACed with the group key from the lab's key file.
fn crafted(msg: Message<'_>) -> Vec<u8> {
    let hex = std::fs::read_to_string(format!("{DIR}/keys/{GROUP}-53-udp.key")).expect("group key file");
    let key = MacKey::from_hex(hex.trim()).expect("group key");
    let mut b = vec![0u8; msg.buffer_len()];
    msg.emit(
        ControlHeader {
            sender: ProxyId::NONE,
            seq: 1,
            time_ms: 0,
        },
        &key,
        Binding::Target,
        &mut b,
    )
    .expect("emit");
    b
}

fn group() -> TransportAddr {
    TransportAddr::new(GROUP.parse().unwrap(), 53, IpProtocol::Udp)
}

fn t1_service() -> TransportAddr {
    TransportAddr::new(T1.0.parse().unwrap(), 53, IpProtocol::Udp)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The IPv4 address of `node`'s first interface (not lo).
fn addr4(node: &str) -> IpAddr {
    let o = exec(node, &["ip", "-4", "-o", "addr", "show", "scope", "global"]);
    text(&o)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address in {node}: {}", text(&o)))
}

/// Sends `count` copies of `payload` from `node` with the source forged to `src` (random ports), UDP to
/// REGISTRATION:6082, through a raw socket; paced to about 5,000 per second so the flood takes ~2 s.
const FLOOD: &str = r#"
import socket, struct, sys, random, time
src, dst, payload, count = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
sa, da = socket.inet_aton(src), socket.inet_aton(dst)
t0 = time.time()
for i in range(count):
    sport = random.randint(1024, 65535)
    ulen = 8 + len(payload)
    ph = sa + da + struct.pack('!BBH', 0, 17, ulen)
    u = struct.pack('!HHHH', sport, 6082, ulen, 0) + payload
    c = csum(ph + u) or 0xffff
    u = u[:6] + struct.pack('!H', c) + u[8:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + ulen, i & 0xffff, 0, 64, 17, 0, sa, da)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    s.sendto(ip + u, (dst, 0))
    if i % 100 == 99:
        time.sleep(max(0.0, t0 + (i + 1) / 5000.0 - time.time()))
    if time.time() - t0 > 10: break
print(i + 1)
"#;

/// Counts IPv4 UDP packets from REGISTRATION:6082 seen on any interface of the namespace for `secs` s.
const SNIFF: &str = r#"
import socket, struct, sys, time
src, secs = socket.inet_aton(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.settimeout(0.2)
n, end = 0, time.time() + secs
while time.time() < end:
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if len(ip) < 28 or ip[9] != 17 or ip[12:16] != src: continue
    ihl = (ip[0] & 15) * 4
    if struct.unpack('!H', ip[ihl:ihl + 2])[0] == 6082: n += 1
print(n)
"#;

/// Floods `payload` from c1 forged as c2 while sniffing in c2; returns (sent, replies seen by the victim).
fn replay_flood(payload: &[u8], victim: IpAddr) -> (u64, u64) {
    let sniffer = Command::new("ip")
        .args(["netns", "exec", &format!("{NAME}-c2"), "python3", "-c", SNIFF])
        .args([REGISTRATION, &SNIFF_S.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sniffer");
    std::thread::sleep(Duration::from_millis(500));
    let count = REPLAYS.to_string();
    let o = exec(
        "c1",
        &[
            "python3",
            "-c",
            FLOOD,
            &victim.to_string(),
            REGISTRATION,
            &hex(payload),
            &count,
        ],
    );
    assert!(
        o.status.success(),
        "flood: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sent: u64 = text(&o).trim().parse().expect("flood count");
    let out = sniffer.wait_with_output().expect("sniffer output");
    assert!(
        out.status.success(),
        "sniffer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: u64 = text(&out).trim().parse().expect("sniffer count");
    (sent, seen)
}

fn lab_attack_reflection(driver: &str) {
    let _lab = Lab::up(driver);
    let victim = addr4("c2");
    let dns_ok = |what: &str| {
        let out = dig("c1", DNS4, "A");
        assert!(
            answer(&out).is_some(),
            "{what}: no DNS answer through the group:\n{out}"
        );
    };
    dns_ok("before");

    // ----- 1. a zero-cookie Register, replayed from forged sources: Challenges are bounded -----
    let register = crafted(Message::Register(Register {
        group: group(),
        service: t1_service(),
        mode: DeliveryMode::Nat,
        weight: 1,
        cookie: [0; COOKIE_LEN],
    }));
    let a = counters();
    let t0 = Instant::now();
    let (sent, seen) = replay_flood(&register, victim);
    let secs = t0.elapsed().as_secs() + 1;
    let b = counters();
    let challenges = delta(&a, &b, "p1", "reg_challenges");
    let limited = delta(&a, &b, "p1", "reg_replies_rate_limited");
    let bound = REPLY_BURST + REPLY_RATE * secs;
    eprintln!(
        "register replay: sent {sent}, p1 challenged {challenges} (rate-limited {limited}), victim saw {seen} \
         replies, bound {bound}"
    );
    assert_eq!(sent, u64::from(REPLAYS));
    assert!(
        challenges >= u64::from(REPLAYS) / 2,
        "most replays reached p1's registry: {challenges}{}",
        changed(&a, &b)
    );
    assert!(
        seen >= 1,
        "the sniffer sees the replies that are sent (it can count)"
    );
    assert!(
        seen <= bound,
        "{seen} replies reached the victim's prefix, bound {bound}"
    );
    assert!(
        limited + bound >= challenges,
        "every challenge over the bound was rate-limited: {limited} of {challenges}"
    );
    assert_eq!(delta(&a, &b, "p1", "reg_replies_oversize"), 0);

    // ----- 2. a Refresh of t1's registration, replayed from forged sources: no reply at all -----
    let refresh = crafted(Message::Refresh(TargetOp {
        group: group(),
        service: t1_service(),
    }));
    let a = counters();
    let (sent, seen) = replay_flood(&refresh, victim);
    let b = counters();
    let other = delta(&a, &b, "p1", "reg_other_source");
    eprintln!("refresh replay: sent {sent}, p1 other_source {other}, victim saw {seen} replies");
    assert!(
        other >= u64::from(REPLAYS) / 2,
        "the replays reached p1's registry as refreshes of a registration held by t1: {other}{}",
        changed(&a, &b)
    );
    assert_eq!(seen, 0, "a replayed Refresh draws no reply");
    for p in PROXIES {
        for n in ["reg_expired", "reg_deregistered", "reg_replaced"] {
            assert_eq!(
                delta(&a, &b, p, n),
                0,
                "{p} {n}: the real targets stay registered"
            );
        }
    }
    dns_ok("after");

    // ----- 3. local surfaces (SPEC.md §8.6) -----
    control_socket_is_private();
    open_key_file_is_refused();
}

/// The proxy's control socket is 0600, and a peer that is neither root nor the proxy's user is refused by
/// the peer check even when the file's mode would let it in.
fn control_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let sock = format!("{DIR}/p1/ctl.sock");
    let mode = std::fs::metadata(&sock)
        .expect("p1's control socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{sock}: mode {:o}", mode & 0o777);
    // Open the file to everyone and the path to it, then connect as nobody: SO_PEERCRED still refuses.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    for d in [DIR.to_owned(), format!("{DIR}/p1")] {
        let m = std::fs::metadata(&d).unwrap().permissions().mode();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m | 0o005)).unwrap();
    }
    let a = counters();
    let o = run(
        "python3",
        &[
            "-c",
            "import os, socket, sys\n\
             os.setgroups([]); os.setgid(65534); os.setuid(65534)\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
             s.settimeout(3); s.connect(sys.argv[1])\n\
             try:\n    s.sendall(b'counters\\n'); print('answer' if s.recv(100) else 'closed')\n\
             except (BrokenPipeError, ConnectionResetError, socket.timeout):\n    print('closed')\n",
            &sock,
        ],
    );
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = counters();
    assert_eq!(
        text(&o).trim(),
        "closed",
        "nobody got an answer: {}{}",
        String::from_utf8_lossy(&o.stderr),
        changed(&a, &b)
    );
    assert_eq!(
        delta(&a, &b, "p1", "driver_control_refused"),
        1,
        "{}",
        changed(&a, &b)
    );
}

/// `pias target` refuses a group key file that others can read, naming the file and the fix.
fn open_key_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let open = format!("{DIR}/open.key");
    std::fs::copy(format!("{DIR}/keys/{GROUP}-53-udp.key"), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let service = format!("{}:53", T1.0);
    let o = exec(
        "t1",
        &[
            "timeout",
            "5",
            PIAS,
            "target",
            "--group",
            "10.99.0.53:53/udp",
            "--service",
            &service,
            "--key-file",
            &open,
            "--registration",
            REGISTRATION,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "pias target ran with a 0644 key file: {err}");
    assert!(err.contains(&format!("chmod 600 {open}")), "{err}");
    assert!(err.contains("--insecure-key-file-permissions"), "{err}");
    let _ = std::fs::remove_file(&open);
}
