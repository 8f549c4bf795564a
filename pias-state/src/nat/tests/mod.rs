//! NAT table tests: shared helpers and the basic scenarios (rewrites,
//! ICMP echo, configuration errors, determinism, memory); TCP states, bounds and expiry, and the model-based
//! property test are in the submodules.

mod bounds;
mod flood;
mod model;
mod tcp;

use super::*;
use core::time::Duration;

pub(super) fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn key(proto: IpProtocol, src: &str, sp: u16, dst: &str, dp: u16) -> FlowKey {
    FlowKey {
        proto,
        src: v4(src),
        src_port: sp,
        dst: v4(dst),
        dst_port: dp,
    }
}

pub(super) fn cfg(pool: &[&str]) -> NatConfig {
    NatConfig::with_pool(pool.iter().map(|s| v4(s)).collect())
}

pub(super) fn drain(t: &mut NatTable) -> Vec<NatEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

pub(super) fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

#[test]
fn forward_and_reverse_rewrite_udp() {
    let mut t = NatTable::new(
        cfg(&["198.51.100.1", "2001:db8::1"]),
        crate::secrets::table_key_for_tests(7),
    )
    .unwrap();
    let c = key(IpProtocol::Udp, "203.0.113.9", 5353, "192.0.2.53", 53);
    let tr = t.create(&c, (v4("10.0.0.7"), 5300), 42, secs(1)).unwrap();
    assert_eq!(tr.src, v4("198.51.100.1"));
    assert!(tr.src_port >= 1024);
    assert_eq!((tr.dst, tr.dst_port), (v4("10.0.0.7"), 5300));
    assert_eq!(t.lookup_forward(&c, 100, secs(2)), Some(tr));
    // The target's reply: T → P.
    let reply = FlowKey {
        proto: IpProtocol::Udp,
        src: tr.dst,
        src_port: tr.dst_port,
        dst: tr.src,
        dst_port: tr.src_port,
    };
    let back = t.lookup_reverse(&reply, 200, secs(3)).unwrap();
    assert_eq!(
        (back.src, back.src_port, back.dst, back.dst_port),
        (v4("192.0.2.53"), 53, v4("203.0.113.9"), 5353)
    );
    // A reply from another source port of the target does not match (endpoint-dependent filtering).
    let mut stray = reply;
    stray.src_port += 1;
    assert_eq!(t.lookup_reverse(&stray, 0, secs(3)), None);
    let b = t.get_forward(&c).unwrap();
    assert_eq!(
        (
            b.tag,
            b.forward_packets,
            b.forward_bytes,
            b.reverse_packets,
            b.reverse_bytes
        ),
        (42, 1, 100, 1, 200)
    );
    assert_eq!(b.reverse, reply);
    assert_eq!(b.expires, secs(3 + 120));
    assert_eq!(t.counters().forward_hits, 1);
    assert_eq!(t.counters().reverse_hits, 1);
    assert_eq!(t.counters().reverse_misses, 1);
    assert!(matches!(
        drain(&mut t)[..],
        [NatEvent::Created { forward, reverse, tag: 42, .. }] if forward == c && reverse == reply
    ));
    assert!(
        matches!(t.create(&c, (v4("10.0.0.8"), 1), 0, secs(4)), Err(NatError::AlreadyExists(id)) if id == tr.id)
    );
    // IPv6 uses the v6 pool address; mixed families are refused.
    let c6 = FlowKey {
        proto: IpProtocol::Tcp,
        src: v4("2001:db8:c::9"),
        src_port: 40000,
        dst: v4("2001:db8:a::1"),
        dst_port: 443,
    };
    let tr6 = t.create(&c6, (v4("2001:db8:f::7"), 8443), 0, secs(4)).unwrap();
    assert_eq!(tr6.src, v4("2001:db8::1"));
    assert_eq!(
        t.create(&c6, (v4("10.0.0.1"), 1), 0, secs(4)),
        Err(NatError::FamilyMismatch)
    );
    let other = FlowKey {
        proto: IpProtocol::Other(47),
        ..c
    };
    assert_eq!(
        t.create(&other, (v4("10.0.0.1"), 1), 0, secs(4)),
        Err(NatError::UnsupportedProtocol(IpProtocol::Other(47)))
    );
    assert_eq!(t.counters().create_rejected, 3);
}

#[test]
fn pool_addresses_are_recognised() {
    let t = NatTable::new(
        cfg(&["198.51.100.9", "2001:db8::1", "198.51.100.1"]),
        crate::secrets::table_key_for_tests(1),
    )
    .unwrap();
    for a in ["198.51.100.9", "2001:db8::1", "198.51.100.1"] {
        assert!(t.is_pool_address(v4(a)), "{a}");
    }
    for a in ["198.51.100.2", "2001:db8::2", "10.0.0.1"] {
        assert!(!t.is_pool_address(v4(a)), "{a}");
    }
}

#[test]
fn icmp_echo_identifier_is_the_port() {
    let mut t = NatTable::new(cfg(&["198.51.100.1"]), crate::secrets::table_key_for_tests(1)).unwrap();
    let c = key(IpProtocol::Icmp, "203.0.113.9", 777, "192.0.2.1", 777);
    let tr = t.create(&c, (v4("10.0.0.7"), 0), 0, secs(0)).unwrap();
    assert_eq!(tr.src_port, tr.dst_port, "the new identifier on both sides");
    let reply = key(
        IpProtocol::Icmp,
        "10.0.0.7",
        tr.src_port,
        "198.51.100.1",
        tr.src_port,
    );
    let back = t.lookup_reverse(&reply, 64, secs(1)).unwrap();
    assert_eq!((back.src_port, back.dst_port), (777, 777));
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(61));
    assert_eq!(t.get_forward(&c).unwrap().class, TimeoutClass::Icmp);
}

#[test]
fn config_errors_name_the_field() {
    let bad = |f: fn(&mut NatConfig)| {
        let mut c = cfg(&["198.51.100.1"]);
        f(&mut c);
        NatTable::new(c, crate::secrets::table_key_for_tests(0))
            .unwrap_err()
            .to_string()
    };
    assert!(bad(|c| c.pool.clear()).contains("nat.pool"));
    assert!(bad(|c| c.pool.push(v4("198.51.100.1"))).contains("twice"));
    assert!(bad(|c| c.pool[0] = v4("0.0.0.0")).contains("nat.pool"));
    assert!(bad(|c| c.port_min = 0).contains("nat.port_min"));
    assert!(bad(|c| (c.port_min, c.port_max) = (5, 4)).contains("nat.port_max"));
    assert!(bad(|c| c.max_entries = u32::MAX).contains("nat.max_entries"));
    assert!(bad(|c| c.tcp_closed_timeout = Duration::ZERO).contains("nat.tcp_closed_timeout"));
    assert!(bad(|c| c.expiry_budget = 0).contains("nat.expiry_budget"));
}

#[test]
fn same_seed_same_ports() {
    let run = |seed| {
        let mut t = NatTable::new(
            cfg(&["198.51.100.1", "198.51.100.2"]),
            crate::secrets::table_key_for_tests(seed),
        )
        .unwrap();
        (0..50u16)
            .map(|i| {
                let k = key(IpProtocol::Udp, "203.0.113.9", i, "192.0.2.53", 53);
                let tr = t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
                (tr.src, tr.src_port)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// 10^6 bindings stay under 160 MB. Creating them takes a few seconds in a debug build.
#[test]
fn a_million_bindings_fit_in_160_mb() {
    let pool: Vec<IpAddr> = (1..=20)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    let mut t = NatTable::new(NatConfig::with_pool(pool), crate::secrets::table_key_for_tests(1)).unwrap();
    let before = t.memory_bytes();
    for i in 0..1_000_000u32 {
        let k = FlowKey {
            proto: IpProtocol::Udp,
            src: IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (i >> 4))),
            src_port: 1024 + (i & 15) as u16,
            dst: v4("192.0.2.53"),
            dst_port: 53,
        };
        t.create(&k, (v4("10.9.0.1"), 53), i, secs(0)).unwrap();
        if i % 4096 == 0 {
            drain(&mut t);
        }
    }
    assert_eq!(t.len(), 1_000_000);
    assert_eq!(t.memory_bytes(), before, "everything was preallocated");
    assert!(t.memory_bytes() < 160_000_000, "{}", t.memory_bytes());
}
