//! Graceful degradation under a flood of new flows: early drop of the oldest transitory binding, protected
//! (assured UDP, established TCP) bindings never dropped for a new flow, the per-prefix cap on new bindings,
//! and exhaustion of a pool of several addresses.

use super::*;

use proptest::prelude::*;
use std::collections::BTreeSet;

fn reply_of(tr: &Translation, proto: IpProtocol) -> FlowKey {
    FlowKey {
        proto,
        src: tr.dst,
        src_port: tr.dst_port,
        dst: tr.src,
        dst_port: tr.src_port,
    }
}

/// A UDP flow that exchanged packets both ways for 2 s: assured.
fn assured_udp(t: &mut NatTable, k: &FlowKey, at: u64) {
    let tr = t.create(k, (v4("10.0.0.7"), 53), 0, secs(at)).unwrap();
    t.lookup_reverse(&reply_of(&tr, IpProtocol::Udp), 0, secs(at))
        .unwrap();
    t.lookup_forward(k, 0, secs(at + 2)).unwrap();
    assert_eq!(t.get_forward(k).unwrap().class, TimeoutClass::Udp);
}

/// A TCP flow past its handshake: established.
fn established_tcp(t: &mut NatTable, k: &FlowKey, at: u64) {
    let tr = t.create(k, (v4("10.0.0.8"), 80), 0, secs(at)).unwrap();
    t.observe_tcp(tr.id, TcpFlags::SYN, Direction::Forward, secs(at));
    t.observe_tcp(tr.id, TcpFlags::SYN_ACK, Direction::Reverse, secs(at));
    assert_eq!(
        t.observe_tcp(tr.id, TcpFlags::ACK, Direction::Forward, secs(at)),
        Some(TcpState::Established)
    );
}

fn spoofed(i: u32) -> FlowKey {
    FlowKey {
        proto: IpProtocol::Udp,
        src: IpAddr::V4(Ipv4Addr::from(0xC633_0000 | i)), // 198.51.0.0/16, one flow per source
        src_port: 1024 + (i % 50_000) as u16,
        dst: v4("192.0.2.53"),
        dst_port: 53,
    }
}

#[test]
fn a_one_shot_exchange_stays_transitory_a_stream_is_assured() {
    let mut t = NatTable::new(cfg(&["198.51.100.1"]), crate::secrets::table_key_for_tests(1)).unwrap();
    let q = key(IpProtocol::Udp, "203.0.113.9", 5000, "192.0.2.53", 53);
    let tr = t.create(&q, (v4("10.0.0.7"), 53), 0, secs(10)).unwrap();
    assert_eq!(t.get_forward(&q).unwrap().expires, secs(40), "unreplied: 30 s");
    // The answer, then nothing: a one-shot exchange keeps the short timeout.
    t.lookup_reverse(&reply_of(&tr, IpProtocol::Udp), 0, secs(10))
        .unwrap();
    let b = t.get_forward(&q).unwrap();
    assert_eq!((b.class, b.expires), (TimeoutClass::UdpTransitory, secs(40)));
    // Unreplied packets later do not assure it either.
    let u = key(IpProtocol::Udp, "203.0.113.9", 5001, "192.0.2.53", 53);
    t.create(&u, (v4("10.0.0.7"), 53), 0, secs(10)).unwrap();
    t.lookup_forward(&u, 0, secs(15)).unwrap();
    assert_eq!(t.get_forward(&u).unwrap().class, TimeoutClass::UdpTransitory);
    // A packet 2 s after creation, once replied: assured, 120 s, no longer new.
    assert_eq!(t.new_in_prefix(q.src), 2);
    t.lookup_forward(&q, 0, secs(15)).unwrap();
    let b = t.get_forward(&q).unwrap();
    assert_eq!(b.class, TimeoutClass::Udp);
    assert_eq!(b.expires, secs(135), "assured at 15 s: 120 s from there");
    assert_eq!(t.new_in_prefix(q.src), 1);
    assert_eq!(t.counters().assured, 1);
    assert_eq!(t.handle_timeout(secs(45)), 1, "the unreplied one goes at 45 s");
    assert_eq!(t.counters().expired(TimeoutClass::UdpTransitory), 1);
    assert!(t.get_forward(&q).is_some());
}

#[test]
fn a_flood_drops_the_oldest_transitory_binding_and_never_a_protected_one() {
    let mut c = cfg(&["198.51.100.1"]);
    c.max_entries = 6;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(4)).unwrap();
    let u = key(IpProtocol::Udp, "203.0.113.1", 4000, "192.0.2.53", 53);
    let tcp = key(IpProtocol::Tcp, "203.0.113.2", 4000, "192.0.2.80", 80);
    assured_udp(&mut t, &u, 0);
    established_tcp(&mut t, &tcp, 1);
    let legit = key(IpProtocol::Udp, "203.0.113.3", 4000, "192.0.2.53", 53);
    for i in 0..1000u32 {
        t.create(&spoofed(i), (v4("10.0.0.7"), 53), 0, secs(3)).unwrap();
        if i == 500 {
            t.create(&legit, (v4("10.0.0.7"), 53), 0, secs(3)).unwrap();
        }
        if i > 503 {
            assert!(
                t.get_forward(&spoofed(i - 4)).is_none(),
                "the oldest transitory binding goes first"
            );
        }
        drain(&mut t);
    }
    assert!(t.get_forward(&u).is_some() && t.get_forward(&tcp).is_some());
    assert_eq!(t.len(), 6);
    assert_eq!(t.counters().early_drop, 1001 - 4);
    // A legitimate new flow created mid-flood is served, then dropped in its turn once it is the oldest.
    assert!(t.get_forward(&legit).is_none());
    // Full of protected bindings: a new flow is refused and counted, nothing is dropped.
    let mut c = cfg(&["198.51.100.1"]);
    c.max_entries = 2;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(4)).unwrap();
    assured_udp(&mut t, &u, 0);
    established_tcp(&mut t, &tcp, 1);
    drain(&mut t);
    assert_eq!(
        t.create(&spoofed(1), (v4("10.0.0.7"), 53), 0, secs(3)),
        Err(NatError::Full)
    );
    assert_eq!(
        (t.counters().refused_full, t.counters().early_drop, t.len()),
        (1, 0, 2)
    );
    assert!(drain(&mut t).is_empty());
    // The pool port taken for the refused flow was given back: the family still has its free ports.
    assert_eq!(t.pool_ports[0][1].free(), 64512 - 1);
}

#[test]
fn port_exhaustion_drops_a_transitory_binding_of_the_same_family_and_protocol() {
    let mut c = NatConfig::with_pool(vec![v4("198.51.100.1"), v4("198.51.100.2"), v4("2001:db8:e::1")]);
    (c.port_min, c.port_max) = (2000, 2001);
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(8)).unwrap();
    // Four v4 UDP ports over two addresses: two assured, two transitory.
    let ks: Vec<FlowKey> = (1..=4)
        .map(|i| key(IpProtocol::Udp, &format!("203.0.113.{i}"), 7, "192.0.2.53", 53))
        .collect();
    assured_udp(&mut t, &ks[0], 0);
    assured_udp(&mut t, &ks[1], 2);
    t.create(&ks[2], (v4("10.0.0.7"), 53), 0, secs(5)).unwrap();
    t.create(&ks[3], (v4("10.0.0.7"), 53), 0, secs(6)).unwrap();
    // Transitory bindings of other protocols and families are never taken for a v4 UDP port.
    let tcp = key(IpProtocol::Tcp, "203.0.113.5", 7, "192.0.2.80", 80);
    t.create(&tcp, (v4("10.0.0.8"), 80), 0, secs(1)).unwrap();
    let v6 = FlowKey {
        proto: IpProtocol::Udp,
        src: v4("2001:db8:c::1"),
        src_port: 7,
        dst: v4("2001:db8:a::53"),
        dst_port: 53,
    };
    t.create(&v6, (v4("2001:db8:f::7"), 53), 0, secs(1)).unwrap();
    let used: BTreeSet<(IpAddr, u16)> = t
        .iter()
        .filter(|b| b.forward.proto == IpProtocol::Udp && b.forward.src.is_ipv4())
        .map(|b| (b.reverse.dst, b.reverse.dst_port))
        .collect();
    assert_eq!(used.len(), 4, "both addresses' ports are in use");
    drain(&mut t);
    let n1 = key(IpProtocol::Udp, "203.0.113.6", 7, "192.0.2.53", 53);
    t.create(&n1, (v4("10.0.0.7"), 53), 0, secs(7)).unwrap();
    assert!(
        t.get_forward(&ks[2]).is_none(),
        "the oldest transitory v4 UDP binding"
    );
    let n2 = key(IpProtocol::Udp, "203.0.113.7", 7, "192.0.2.53", 53);
    t.create(&n2, (v4("10.0.0.7"), 53), 0, secs(8)).unwrap();
    assert!(t.get_forward(&ks[3]).is_none());
    assert_eq!(t.counters().early_drop, 2);
    assert!(t.get_forward(&tcp).is_some() && t.get_forward(&v6).is_some());
    // Now only the two new ones are transitory; assure them and the family is exhausted.
    for k in [&n1, &n2] {
        let b = t.get_forward(k).unwrap();
        t.lookup_reverse(&b.reverse, 0, secs(10)).unwrap();
        t.lookup_forward(k, 0, secs(10)).unwrap();
    }
    let n3 = key(IpProtocol::Udp, "203.0.113.8", 7, "192.0.2.53", 53);
    assert_eq!(
        t.create(&n3, (v4("10.0.0.7"), 53), 0, secs(11)),
        Err(NatError::PortsExhausted)
    );
    assert_eq!(t.counters().port_exhausted, 1);
    for k in ks.iter().take(2) {
        assert!(t.get_forward(k).is_some(), "assured bindings survive");
    }
}

#[test]
fn the_prefix_cap_bounds_new_bindings_per_client_prefix() {
    let mut c = NatConfig::with_pool(vec![v4("198.51.100.1"), v4("2001:db8:e::1")]);
    c.new_per_prefix = 3;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(2)).unwrap();
    let k = |src: &str, p: u16| key(IpProtocol::Udp, src, p, "192.0.2.53", 53);
    for (i, src) in ["203.0.113.1", "203.0.113.200", "203.0.113.77"]
        .iter()
        .enumerate()
    {
        t.create(&k(src, 1), (v4("10.0.0.7"), 53), 0, secs(i as u64))
            .unwrap();
    }
    assert_eq!(t.new_in_prefix(v4("203.0.113.5")), 3);
    // A fourth from the same /24 is refused and counted; another /24 is not affected.
    assert_eq!(
        t.create(&k("203.0.113.9", 1), (v4("10.0.0.7"), 53), 0, secs(3)),
        Err(NatError::PrefixCap)
    );
    assert_eq!(t.counters().prefix_refused, 1);
    t.create(&k("203.0.114.9", 1), (v4("10.0.0.7"), 53), 0, secs(3))
        .unwrap();
    // Assuring one, or its removal, makes room.
    let b = t.get_forward(&k("203.0.113.1", 1)).unwrap();
    t.lookup_reverse(&b.reverse, 0, secs(3)).unwrap();
    t.lookup_forward(&k("203.0.113.1", 1), 0, secs(3)).unwrap();
    assert_eq!(t.new_in_prefix(v4("203.0.113.5")), 2);
    t.create(&k("203.0.113.9", 1), (v4("10.0.0.7"), 53), 0, secs(4))
        .unwrap();
    assert!(t.remove(&k("203.0.113.200", 1)));
    t.create(&k("203.0.113.10", 1), (v4("10.0.0.7"), 53), 0, secs(4))
        .unwrap();
    // Expiry too.
    t.handle_timeout(secs(100));
    assert_eq!(t.new_in_prefix(v4("203.0.113.5")), 0);
    // IPv6: a /56.
    let k6 = |src: &str| FlowKey {
        proto: IpProtocol::Udp,
        src: v4(src),
        src_port: 9,
        dst: v4("2001:db8:a::53"),
        dst_port: 53,
    };
    for s in ["2001:db8:c:100::1", "2001:db8:c:1ff::2", "2001:db8:c:1aa::3"] {
        t.create(&k6(s), (v4("2001:db8:f::7"), 53), 0, secs(100)).unwrap();
    }
    assert_eq!(
        t.create(&k6("2001:db8:c:180::4"), (v4("2001:db8:f::7"), 53), 0, secs(100)),
        Err(NatError::PrefixCap)
    );
    t.create(&k6("2001:db8:c:200::4"), (v4("2001:db8:f::7"), 53), 0, secs(100))
        .unwrap();
    assert_eq!(t.counters().prefix_refused, 2);
}

#[derive(Debug, Clone)]
enum FloodOp {
    /// A spoofed new flow (source `i` of a /16).
    Spoof(u32),
    /// A legitimate flow that becomes protected: assured UDP or established TCP.
    Protect(bool),
    /// Time passes (seconds).
    Wait(u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the mix of floods and waits, a protected binding is never removed except by its own
    /// timeout, and creation fails only when the table or ports are full of protected bindings.
    #[test]
    fn no_protected_binding_is_ever_dropped_for_a_new_flow(
        ops in proptest::collection::vec(prop_oneof![
            6 => any::<u32>().prop_map(FloodOp::Spoof),
            1 => any::<bool>().prop_map(FloodOp::Protect),
            1 => (0..40u64).prop_map(FloodOp::Wait),
        ], 1..300),
        max in 2u32..12,
        ports in 2u16..10,
        seed: u64,
    ) {
        let mut c = cfg(&["198.51.100.1", "198.51.100.2"]);
        c.max_entries = max;
        (c.port_min, c.port_max) = (3000, 3000 + ports - 1);
        c.new_per_prefix = u32::MAX;
        let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(seed)).unwrap();
        let mut now = 0;
        let mut protected = 0u16;
        for op in ops {
            match op {
                FloodOp::Spoof(i) => {
                    let r = t.create(&spoofed(i & 0xffff), (v4("10.0.0.7"), 53), 0, secs(now));
                    if let Err(e) = r {
                        prop_assert!(matches!(e, NatError::Full | NatError::PortsExhausted | NatError::AlreadyExists(_)), "{e:?}");
                        if matches!(e, NatError::Full | NatError::PortsExhausted) {
                            prop_assert!(t.iter().filter(|b| b.forward.proto == IpProtocol::Udp).all(|b| !b.class.is_transitory() || b.expires <= secs(now)));
                        }
                    }
                }
                FloodOp::Protect(udp) => {
                    protected += 1;
                    let k = key(if udp { IpProtocol::Udp } else { IpProtocol::Tcp }, "203.0.113.1", protected, "192.0.2.53", 53);
                    if let Ok(tr) = t.create(&k, (v4("10.0.0.9"), 53), 0, secs(now)) {
                        if udp {
                            t.lookup_reverse(&reply_of(&tr, IpProtocol::Udp), 0, secs(now));
                            now += 2;
                            t.lookup_forward(&k, 0, secs(now));
                        } else {
                            t.observe_tcp(tr.id, TcpFlags::SYN_ACK, Direction::Reverse, secs(now));
                            t.observe_tcp(tr.id, TcpFlags::ACK, Direction::Forward, secs(now));
                        }
                    }
                }
                FloodOp::Wait(s) => {
                    now += s;
                    t.handle_timeout(secs(now));
                }
            }
            while let Some(ev) = t.poll_event() {
                if let NatEvent::Removed { reason: RemoveReason::Evicted, forward, .. } = ev {
                    prop_assert!(forward.src.to_string().starts_with("198.51."), "only flood bindings are dropped early: {forward:?}");
                }
            }
        }
    }
}
