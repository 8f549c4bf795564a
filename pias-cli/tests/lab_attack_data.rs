//! Attacks on the data plane of a running lab (SPEC.md §4.1, §8.1): from a client's namespace, data frames
//! whose outer source is a member proxy's overlay address (spoofed with a raw socket) are sent to every
//! proxy — untagged, tagged under a wrong key, and a valid frame altered in its inner header — for the UDP
//! echo group, with the attacker's own address as the inner source. None may reach a target: no echo comes
//! back, no proxy delivers anything or creates a NAT binding, and the bad-tag drop counter (the core's, or
//! the XDP program's at TC ingress) rises by one per frame. The same valid frame, unaltered, is then
//! delivered and echoed: the attack path is real, only the tag stops it.
//!
//! Needs root and the lab's tools; run one lab test at a time:
//! `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_attack_data`.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::lab::*;
use pias_proto::ProxyId;
use pias_proto::auth::MasterKey;
use pias_proto::build::udp_packet;
use pias_proto::tunnel::{DATA_HEADER_LEN, DataHeader, DataKeys};

#[test]
fn lab_attack_data_tokio() {
    attack_data("tokio");
}

#[test]
fn lab_attack_data_xdp_tc() {
    attack_data("xdp-tc");
}

/// The lab's UDP echo group (served by the site t1 only).
const ECHO: &str = "10.99.0.7:7";

/// `proxy.overlay` of a lab proxy, from the configuration `pias lab up` wrote.
fn overlay_of(p: &str) -> SocketAddr {
    let cfg = std::fs::read_to_string(format!("{DIR}/{p}/proxy.toml")).expect("proxy.toml");
    let line = cfg
        .lines()
        .find(|l| l.starts_with("overlay ="))
        .expect("overlay line");
    line.split('"').nth(1).unwrap().parse().unwrap()
}

/// The first global IPv4 address of a node.
fn addr4_of(node: &str) -> Ipv4Addr {
    let out = text(&exec(
        node,
        &["ip", "-4", "-o", "addr", "show", "scope", "global"],
    ));
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{node} has no IPv4 address: {out}"))
}

/// One spoofed datagram: the outer IPv4/UDP packet and the local port its echo would come back to.
struct Spoof {
    packet: Vec<u8>,
    reply_port: u16,
}

/// Where a spoofed frame claims to come from (a member's overlay address and id) and goes to.
#[derive(Clone, Copy)]
struct Leg {
    from: SocketAddr,
    to: SocketAddr,
    ingress: ProxyId,
}

/// To proxy `i` at `to`, claiming to be the next proxy (a live member).
fn leg(overlays: &[SocketAddr], i: usize, to: SocketAddr) -> Leg {
    let j = (i + 1) % overlays.len();
    Leg {
        from: overlays[j],
        to,
        ingress: ProxyId(j as u32 + 1),
    }
}

/// A data frame for the echo group with inner source `client:port`, under `key` (`None`: untagged), in an
/// outer UDP datagram along `leg`; `alter` changes the frame after tagging.
fn spoof(
    leg: Leg,
    client: Ipv4Addr,
    port: u16,
    payload: &[u8],
    key: Option<&MasterKey>,
    alter: impl FnOnce(&mut [u8]),
) -> Spoof {
    let mut inner = vec![0u8; 1500];
    let n = udp_packet(
        SocketAddr::new(IpAddr::V4(client), port),
        ECHO.parse().unwrap(),
        payload,
        &mut inner,
    )
    .unwrap();
    let h = DataHeader {
        vni: 1,
        flags: 0,
        hops: 2,
        epoch: 0,
        ingress: leg.ingress,
    };
    let mut frame = vec![0u8; DATA_HEADER_LEN + n];
    match key {
        Some(k) => h.encapsulate_tagged(DataKeys::new(k, 0).current(), &inner[..n], &mut frame),
        None => h.encapsulate(&inner[..n], &mut frame),
    }
    .unwrap();
    alter(&mut frame);
    let mut packet = vec![0u8; 1600];
    let m = udp_packet(leg.from, leg.to, &frame, &mut packet).unwrap();
    packet.truncate(m);
    Spoof {
        packet,
        reply_port: port,
    }
}

/// Sends the packets from `node` with a raw socket (IP_HDRINCL), listening on every reply port for 1.5 s
/// after; returns the ports that got a datagram back.
fn send_raw(node: &str, spoofs: &[Spoof]) -> Vec<u16> {
    const SCRIPT: &str = r#"
import select, socket, sys, time
pkts = [(bytes.fromhex(h), int(p)) for h, p in (a.split(':') for a in sys.argv[1:])]
socks = {}
for _, p in pkts:
    if p not in socks:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(('0.0.0.0', p))
        socks[p] = s
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for b, _ in pkts:
    dst = socket.inet_ntoa(b[16:20])
    raw.sendto(b, (dst, 0))
    time.sleep(0.02)
got = set()
end = time.time() + 1.5
while time.time() < end:
    r, _, _ = select.select(list(socks.values()), [], [], max(0.0, end - time.time()))
    for s in r:
        s.recv(2048)
        got.add(s.getsockname()[1])
print(' '.join(str(p) for p in sorted(got)))
"#;
    let args: Vec<String> = spoofs
        .iter()
        .map(|s| {
            let hex: String = s.packet.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}:{}", s.reply_port)
        })
        .collect();
    let mut a: Vec<&str> = vec!["python3", "-c", SCRIPT];
    a.extend(args.iter().map(String::as_str));
    let o = exec(node, &a);
    assert!(
        o.status.success(),
        "raw send from {node} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&o)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn sum(
    a: &BTreeMap<String, BTreeMap<String, u64>>,
    b: &BTreeMap<String, BTreeMap<String, u64>>,
    p: &str,
    names: &[&str],
) -> u64 {
    names.iter().map(|n| delta(a, b, p, n)).sum()
}

fn attack_data(driver: &str) {
    let _lab = Lab::up(driver);
    let master = MasterKey::from_hex(&std::fs::read_to_string(format!("{DIR}/master.key")).unwrap())
        .expect("the lab's master key");
    let wrong = MasterKey::from_bytes([0x66; 32]);
    let attacker = CLIENTS[0];
    let client = addr4_of(attacker);
    let overlays: Vec<SocketAddr> = PROXIES.iter().map(|p| overlay_of(p)).collect();
    let delivered = [
        "jap_delivered",
        "xdp_jap_forward_hit",
        "xdp_jap_tunnel_hit",
        "jap_replies",
        "xdp_jap_reverse_hit",
    ];
    let bad_tag = ["drop_bad_tag", "xdp_drop_bad_tag"];

    // To each proxy, from the next one's overlay address (a live member): four frames that must not pass.
    let mut attacks = Vec::new();
    for (i, to) in overlays.iter().enumerate() {
        let leg = leg(&overlays, i, *to);
        let base = 41000 + 10 * i as u16;
        let long = b"pias attack: forged data frame payload";
        attacks.push(spoof(leg, client, base, long, None, |_| {}));
        attacks.push(spoof(leg, client, base + 1, b"x", None, |_| {}));
        attacks.push(spoof(leg, client, base + 2, long, Some(&wrong), |_| {}));
        // A valid frame whose inner source port is rewritten on the way (to steer the echo elsewhere).
        attacks.push(spoof(leg, client, base + 3, long, Some(&master), |f| {
            f[DATA_HEADER_LEN + 21] ^= 0x01;
        }));
    }
    let a = counters();
    let echoed = send_raw(attacker, &attacks);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = counters();
    assert!(
        echoed.is_empty(),
        "[{driver}] forged frames reached the echo target (replies on {echoed:?}):{}",
        changed(&a, &b)
    );
    for p in PROXIES {
        assert_eq!(
            sum(&a, &b, p, &bad_tag),
            4,
            "[{driver}] {p}: every forged frame is dropped as a bad tag:{}",
            changed(&a, &b)
        );
        if driver.starts_with("xdp") {
            assert_eq!(
                delta(&a, &b, p, "xdp_drop_bad_tag"),
                4,
                "[{driver}] {p}: the program drops forgeries before the slow path:{}",
                changed(&a, &b)
            );
        }
        assert_eq!(
            sum(&a, &b, p, &delivered),
            0,
            "[{driver}] {p} delivered a forged frame:{}",
            changed(&a, &b)
        );
        assert_eq!(
            delta(&a, &b, p, "nat_bindings"),
            0,
            "[{driver}] {p}: a forged frame made a NAT binding:{}",
            changed(&a, &b)
        );
    }
    eprintln!("[{driver}] 12 forged frames dropped as bad tags, none delivered");

    // The control: the same frames, valid and unaltered, are delivered by the JAP holding the echo target
    // and echoed back to the attacker's address.
    let valid: Vec<Spoof> = overlays
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let port = 41000 + 10 * i as u16 + 5;
            spoof(
                leg(&overlays, i, *to),
                client,
                port,
                b"pias attack: control frame",
                Some(&master),
                |_| {},
            )
        })
        .collect();
    let c = counters();
    let echoed = send_raw(attacker, &valid);
    let d = counters();
    assert!(
        !echoed.is_empty(),
        "[{driver}] a correctly tagged frame must be delivered and echoed (is the echo target up?):{}",
        changed(&c, &d)
    );
    assert!(
        PROXIES.iter().any(|p| sum(&c, &d, p, &delivered) > 0),
        "[{driver}] the echo came through no JAP:{}",
        changed(&c, &d)
    );
    for p in PROXIES {
        assert_eq!(
            sum(&c, &d, p, &bad_tag),
            0,
            "[{driver}] {p}: a valid frame counted as bad"
        );
    }
    eprintln!("[{driver}] valid frames echoed on ports {echoed:?}");
}
