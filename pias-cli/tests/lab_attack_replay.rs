//! Attack: replayed control frames (issue "Hostile Internet", item 3; SPEC.md §8.2).
//!
//! Control frames p1 sends to the other proxies are captured in p1's namespace (a packet socket), then sent
//! again from client c3's namespace with p1's overlay address as their spoofed source: to their original
//! receiver (a replay), and to the other proxy (a frame recorded for another receiver, which a MAC covering
//! only header and body used to let through once). Then the original receiver restarts — its replay windows
//! are gone — and the same frames are replayed to its new life. Every copy must be refused by the right
//! check (bad MAC at another receiver, the replay window at the same one, the timestamp after a restart), and
//! no member table may move.
//!
//! Needs root and the lab's tools, like `lab_e2e`; run under the cross-helper lock:
//! `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_attack_replay`.
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::lab::*;

#[test]
fn lab_attack_replay_tokio() {
    replay_attack("tokio");
}

#[test]
fn lab_attack_replay_mio() {
    replay_attack("mio");
}

/// Captures, in p1's namespace for `secs`, the Geneve control frames p1 sends from `src`: one
/// `DST_IP HEX` line per distinct frame.
const CAPTURE: &str = r#"
import socket, sys, time
src, secs = sys.argv[1], float(sys.argv[2])
# ETH_P_ALL: a packet socket bound to one protocol never sees outgoing packets.
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
s.settimeout(0.2)
seen, end = set(), time.time() + secs
while time.time() < end:
    try:
        p, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[1] != 0x0800 or len(p) < 28 or p[9] != 17 or socket.inet_ntoa(p[12:16]) != src:
        continue
    ihl = (p[0] & 15) * 4
    u = p[ihl:]
    g = u[8:]
    if int.from_bytes(u[2:4], "big") != 6081 or len(g) < 8 or not g[1] & 0x80 or g[2:4] != b"\x88\xb5":
        continue
    if g not in seen:
        seen.add(g)
        print(socket.inet_ntoa(p[16:20]), g.hex())
"#;

/// Sends each `DST_IP HEX` line of the file `argv[2]` as a UDP datagram 6081 → 6081 from the spoofed source
/// `argv[1]`, built with a raw socket (IP_HDRINCL); at most 400 datagrams, 2 ms apart.
const REPLAY: &str = r#"
import socket, struct, sys, time
src = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
n = 0
for line in open(sys.argv[2]):
    dst, hexpayload = line.split()
    payload = bytes.fromhex(hexpayload)
    udp = struct.pack("!HHHH", 6081, 6081, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
    n += 1
    if n >= 400:
        break
    time.sleep(0.002)
print(n)
"#;

/// A proxy's overlay IPv4 address, from the configuration the lab wrote for it.
fn overlay_ip(proxy: &str) -> String {
    let cfg = std::fs::read_to_string(format!("{DIR}/{proxy}/proxy.toml")).expect("proxy.toml");
    cfg.lines()
        .find_map(|l| l.strip_prefix("overlay = \""))
        .and_then(|v| v.split(':').next())
        .map(str::to_owned)
        .expect("overlay address in proxy.toml")
}

/// A proxy's member table as (id, status, incarnation, address): what a replay must not change (versions
/// move on their own with coordinates).
fn members(proxy: &str) -> BTreeSet<(u64, String, u64, String)> {
    let sock = format!("{DIR}/{proxy}/ctl.sock");
    let o = run(PIAS, &["ctl", "--socket", &sock, "members", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{proxy} members: {e}: {}", text(&o)));
    v.as_array()
        .expect("members array")
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["status"].as_str().unwrap_or("").to_owned(),
                m["incarnation"].as_u64().unwrap_or(0),
                m["addr"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Replays every line of `frames` (`DST HEX`) from c3 with source `src`, with the destination replaced
/// by `to`; returns how many were sent.
fn replay_to(frames: &[(String, String)], src: &str, to: &str) -> usize {
    let file = format!("/tmp/{NAME}-replay-{to}.txt");
    let body: String = frames.iter().map(|(_, hex)| format!("{to} {hex}\n")).collect();
    std::fs::write(&file, body).expect("replay file");
    let o = exec("c3", &["python3", "-c", REPLAY, src, &file]);
    let _ = std::fs::remove_file(&file);
    assert!(
        o.status.success(),
        "replay from c3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o).trim().parse().expect("replay count")
}

fn replay_attack(driver: &str) {
    let lab = Lab::up(driver);
    let (a1, a2, a3) = (overlay_ip("p1"), overlay_ip("p2"), overlay_ip("p3"));
    for p in PROXIES {
        assert_eq!(members(p).len(), 3, "{p} knows every proxy before the attack");
    }

    // 1. Record what p1 sends to p2 and p3 (probes, acks, digests, records ...).
    let o = exec("p1", &["python3", "-c", CAPTURE, &a1, "4"]);
    assert!(
        o.status.success(),
        "capture: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let captured: Vec<(String, String)> = text(&o)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(d, h)| (d.to_owned(), h.to_owned())))
        .collect();
    let for_p2: Vec<_> = captured.iter().filter(|(d, _)| *d == a2).cloned().collect();
    let for_p3: Vec<_> = captured.iter().filter(|(d, _)| *d == a3).cloned().collect();
    assert!(
        for_p2.len() >= 5 && for_p3.len() >= 5,
        "captured {} frames for p2, {} for p3",
        for_p2.len(),
        for_p3.len()
    );
    let (for_p2, for_p3) = (&for_p2[..for_p2.len().min(200)], &for_p3[..for_p3.len().min(200)]);

    // 2. Replay them, spoofed from p1, to their receiver and to the other proxy.
    let views = (members("p2"), members("p3"));
    let before = counters();
    let n22 = replay_to(for_p2, &a1, &a2);
    let n23 = replay_to(for_p2, &a1, &a3);
    let n33 = replay_to(for_p3, &a1, &a3);
    let n32 = replay_to(for_p3, &a1, &a2);
    std::thread::sleep(Duration::from_secs(1));
    let after = counters();
    let why = changed(&before, &after);
    // At another receiver the MAC fails (it is bound to the receiver's address); at the same one the
    // replay window refuses it (the frame is still within the skew).
    assert_eq!(
        delta(&before, &after, "p3", "drop_bad_mac"),
        n23 as u64,
        "p3 bad MAC:{why}"
    );
    assert_eq!(
        delta(&before, &after, "p2", "drop_bad_mac"),
        n32 as u64,
        "p2 bad MAC:{why}"
    );
    assert_eq!(
        delta(&before, &after, "p2", "member_replays"),
        n22 as u64,
        "p2 replays:{why}"
    );
    assert_eq!(
        delta(&before, &after, "p3", "member_replays"),
        n33 as u64,
        "p3 replays:{why}"
    );
    for p in ["p2", "p3"] {
        assert_eq!(delta(&before, &after, p, "drop_stale"), 0, "{p} stale:{why}");
    }
    assert_eq!(
        (members("p2"), members("p3")),
        views,
        "a replay changed a member table"
    );

    // 3. p2 restarts: its windows are gone; what p1 sent to its previous life is refused by timestamp.
    kill9("p2", "proxy");
    lab.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while members("p2").iter().filter(|m| m.1 == "alive").count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "p2 did not rejoin: {:?}",
            members("p2")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let view = members("p2");
    let before = counters();
    let n22 = replay_to(for_p2, &a1, &a2);
    let n32 = replay_to(for_p3, &a1, &a2);
    std::thread::sleep(Duration::from_secs(1));
    let after = counters();
    let why = changed(&before, &after);
    assert_eq!(
        delta(&before, &after, "p2", "drop_stale"),
        n22 as u64,
        "p2 stale:{why}"
    );
    assert_eq!(
        delta(&before, &after, "p2", "drop_bad_mac"),
        n32 as u64,
        "p2 bad MAC:{why}"
    );
    assert_eq!(
        members("p2"),
        view,
        "a replay changed the restarted proxy's member table"
    );
    // Service goes on. p2 restarted a few seconds ago: as a RAP it knows a group's JAPs only once their
    // reports reach it again, and until then its IAP caches "no JAP" for negative_ttl (2 s), so allow a few
    // seconds, as for any restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while answer(&dig("c2", DNS4, "A")).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "DNS through PIAS after the attack:{}",
            changed(&before, &counters())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
