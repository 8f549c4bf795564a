//! Bounds and expiry: port exhaustion, eviction in a full table, bounded `handle_timeout` work, target
//! sweeps, and lazy touches.

use super::*;

use std::collections::BTreeSet;

/// Creates a UDP binding at `now` and makes it assured: a reply, then a packet 2 s later.
fn assured(t: &mut NatTable, k: &FlowKey, now: Instant) -> Translation {
    let tr = t.create(k, (v4("10.0.0.7"), 53), 0, now).unwrap();
    let reply = FlowKey {
        proto: k.proto,
        src: tr.dst,
        src_port: tr.dst_port,
        dst: tr.src,
        dst_port: tr.src_port,
    };
    t.lookup_reverse(&reply, 0, now).unwrap();
    let later = now + Duration::from_secs(2);
    t.lookup_forward(k, 0, later).unwrap();
    assert_eq!(t.get_forward(k).unwrap().class, TimeoutClass::Udp);
    tr
}

#[test]
fn port_exhaustion_is_typed_and_counted() {
    let mut c = cfg(&["198.51.100.1"]);
    (c.port_min, c.port_max) = (2000, 2003);
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(9)).unwrap();
    let mut ports = BTreeSet::new();
    for i in 0..4 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        ports.insert(assured(&mut t, &k, secs(2 * u64::from(i))).src_port);
    }
    assert_eq!(ports, (2000..=2003).collect());
    // Every port is held by an assured binding: nothing to drop, the new flow is refused.
    let k = key(IpProtocol::Udp, "203.0.113.9", 2000, "192.0.2.53", 53);
    assert_eq!(
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(8)),
        Err(NatError::PortsExhausted)
    );
    assert_eq!(t.counters().port_exhausted, 1);
    assert_eq!(t.counters().early_drop, 0);
    // Another protocol has its own ports.
    let k = key(IpProtocol::Tcp, "203.0.113.9", 2000, "192.0.2.53", 53);
    assert!(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(8)).is_ok());
    // Expiry frees a port.
    t.handle_timeout(secs(122));
    let k = key(IpProtocol::Udp, "203.0.113.9", 2000, "192.0.2.53", 53);
    assert!(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(122)).is_ok());
}

#[test]
fn full_table_drops_the_oldest_transitory_binding_and_counts() {
    let mut c = cfg(&["198.51.100.1"]);
    c.max_entries = 3;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(9)).unwrap();
    let tcp = key(IpProtocol::Tcp, "203.0.113.1", 1, "192.0.2.53", 53);
    let id = t.create(&tcp, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap().id;
    t.observe_tcp(id, TcpFlags::SYN_ACK, Direction::Reverse, secs(0));
    t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(0)); // established: deadline 7440
    let u1 = key(IpProtocol::Udp, "203.0.113.2", 1, "192.0.2.53", 53);
    let u2 = key(IpProtocol::Udp, "203.0.113.3", 1, "192.0.2.53", 53);
    t.create(&u1, (v4("10.0.0.7"), 53), 0, secs(1)).unwrap();
    t.create(&u2, (v4("10.0.0.7"), 53), 0, secs(2)).unwrap();
    t.lookup_forward(&u1, 0, secs(3));
    drain(&mut t);
    let u3 = key(IpProtocol::Udp, "203.0.113.4", 1, "192.0.2.53", 53);
    t.create(&u3, (v4("10.0.0.7"), 53), 0, secs(4)).unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t.counters().early_drop, 1);
    assert!(
        t.get_forward(&u2).is_none(),
        "u2 was the oldest transitory binding"
    );
    assert!(t.get_forward(&tcp).is_some() && t.get_forward(&u1).is_some());
    let ev = drain(&mut t);
    assert!(
        matches!(ev[0], NatEvent::Removed { forward, reason: RemoveReason::Evicted, .. } if forward == u2)
    );
    // A due binding is expired rather than evicted.
    let u4 = key(IpProtocol::Udp, "203.0.113.5", 1, "192.0.2.53", 53);
    t.create(&u4, (v4("10.0.0.7"), 53), 0, secs(200)).unwrap();
    assert_eq!(t.counters().early_drop, 1);
    assert_eq!(t.counters().expired(TimeoutClass::UdpTransitory), 1);
    // max_entries = 0: creation refused.
    let mut c = cfg(&["198.51.100.1"]);
    c.max_entries = 0;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(9)).unwrap();
    assert_eq!(
        t.create(&u4, (v4("10.0.0.7"), 53), 0, secs(0)),
        Err(NatError::NoCapacity)
    );
}

#[test]
fn handle_timeout_does_bounded_work() {
    let mut c = cfg(&["198.51.100.1"]);
    c.expiry_budget = 10;
    c.udp_transitory_timeout = Duration::from_secs(120);
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(5)).unwrap();
    for i in 0..35u16 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(u64::from(i))).unwrap();
    }
    drain(&mut t);
    assert_eq!(t.handle_timeout(secs(10)), 0, "early call is harmless");
    let now = secs(1000);
    let mut calls = 0;
    while t.poll_timeout().is_some_and(|d| d <= now) {
        let n = t.handle_timeout(now);
        assert!(n <= 10);
        assert_eq!(drain(&mut t).len(), n);
        calls += 1;
    }
    assert_eq!(calls, 4);
    assert!(t.is_empty());
    // The event queue bounds expiry too: with room for 3 events, 3 per call.
    let mut c = cfg(&["198.51.100.1"]);
    c.event_capacity = 3;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(5)).unwrap();
    for i in 0..5u16 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    }
    assert_eq!(t.counters().events_dropped, 2);
    drain(&mut t);
    assert_eq!(t.handle_timeout(secs(500)), 3);
    assert_eq!(t.handle_timeout(secs(500)), 0, "queue full");
    drain(&mut t);
    assert_eq!(t.handle_timeout(secs(500)), 2);
}

#[test]
fn remove_where_target_sweeps_in_bounded_steps() {
    let mut c = cfg(&["198.51.100.1"]);
    c.sweep_budget = 8;
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(5)).unwrap();
    let mut keys = Vec::new();
    for i in 0..40u16 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        let target = if i % 2 == 0 { "10.0.0.7" } else { "10.0.0.8" };
        t.create(&k, (v4(target), 53), u32::from(i), secs(0)).unwrap();
        keys.push(k);
    }
    drain(&mut t);
    assert!(t.remove_where_target(v4("10.0.0.7"), None));
    assert!(t.is_draining(v4("10.0.0.7"), 53));
    assert_eq!(t.poll_timeout(), Some(secs(0)));
    // Lookups of the dead target miss at once; creation towards it is refused.
    assert_eq!(t.lookup_forward(&keys[0], 0, secs(1)), None);
    assert!(t.lookup_forward(&keys[1], 0, secs(1)).is_some());
    let k = key(IpProtocol::Udp, "203.0.113.1", 1, "192.0.2.53", 53);
    assert_eq!(
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(1)),
        Err(NatError::TargetDraining)
    );
    let mut calls = 0;
    while t.is_draining(v4("10.0.0.7"), 53) {
        assert!(t.handle_timeout(secs(1)) <= 8);
        calls += 1;
    }
    assert_eq!(calls, 5);
    assert_eq!(t.len(), 20);
    assert_eq!(t.counters().removed_target, 20);
    assert!(t.iter().all(|b| b.reverse.src == v4("10.0.0.8")));
    assert!(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(1)).is_ok());
}

#[test]
fn lazy_touch_expires_at_most_one_granularity_late() {
    let mut c = cfg(&["198.51.100.1"]);
    c.touch_granularity = Duration::from_secs(3);
    c.udp_transitory_timeout = Duration::from_secs(120);
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(5)).unwrap();
    let a = key(IpProtocol::Udp, "203.0.113.1", 1, "192.0.2.53", 53);
    let b = key(IpProtocol::Udp, "203.0.113.2", 1, "192.0.2.53", 53);
    t.create(&a, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    t.create(&b, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    // A hit 2 s later only records last_seen: `a` stays at the head, ahead of `b`.
    assert!(t.lookup_forward(&a, 0, secs(2)).is_some());
    assert_eq!(t.get_forward(&a).unwrap().expires, secs(122));
    assert_eq!(t.poll_timeout(), Some(secs(122)), "head is `a`");
    // `b` is due at 120 but waits behind `a`; a lookup still misses exactly at the deadline.
    assert_eq!(t.handle_timeout(secs(121)), 0);
    assert!(t.get_forward(&b).is_some());
    assert_eq!(
        t.handle_timeout(secs(122)),
        2,
        "both go, `b` 2 s late (< granularity)"
    );
    // With granularity 0 the order is exact.
    let mut c = cfg(&["198.51.100.1"]);
    c.touch_granularity = Duration::ZERO;
    c.udp_transitory_timeout = Duration::from_secs(120);
    let mut t = NatTable::new(c, crate::secrets::table_key_for_tests(5)).unwrap();
    t.create(&a, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    t.create(&b, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    t.lookup_forward(&a, 0, secs(2));
    assert_eq!(t.poll_timeout(), Some(secs(120)));
    assert_eq!(t.handle_timeout(secs(121)), 1);
    assert!(t.get_forward(&b).is_none());
    // A lookup of a due binding misses even before handle_timeout runs.
    assert_eq!(t.lookup_forward(&a, 0, secs(122)), None);
    assert_eq!(t.counters().expired(TimeoutClass::UdpTransitory), 2);
}
