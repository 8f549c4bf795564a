//! The passive watch (SPEC.md §10.4): unanswered new flows from several clients take a target out of the
//! choice for a back-off; one client, answered flows, or the last target never do.

use super::*;

/// A registry with targets 10.0.0.1 and 10.0.0.2 (weight 1 each) of the UDP group.
fn two_targets() -> Registry {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for last in [1u8, 2] {
        let ip = IpAddr::from([10, 0, 0, last]);
        let s = TransportAddr::new(ip, 5353, IpProtocol::Udp);
        register_direct(
            &mut reg,
            t(0),
            SocketAddr::new(ip, 40000),
            &key,
            &group(),
            &s,
            1,
            10,
        )
        .unwrap();
    }
    events(&mut reg);
    // Both services answered a flow once (a one-way service, never answering, is not watched).
    for slot in reg.targets(&group()).map(|t| t.slot).collect::<Vec<_>>() {
        reg.watch_answered(slot);
    }
    reg
}

/// The target chosen (with the watch) for a new flow from `client:port` at `now`.
fn pick(reg: &mut Registry, now: Instant, client: IpAddr, port: u16) -> u32 {
    let f = flow_from(client, port);
    let h = crate::flowhash::flow_hash(&MasterKey::from_bytes(MASTER).flow_key(), &f);
    reg.choose_target_at(now, &group(), &f, h, &TargetOptions::default())
        .unwrap()
        .first()
        .slot
}

/// A new flow from `client` that lands on `slot` (trying source ports), watched at `now`.
fn flow_to(reg: &mut Registry, now: Instant, client: IpAddr, slot: u32) {
    let port = (1..2000u16)
        .find(|&p| pick(reg, now, client, p) == slot)
        .expect("some port lands on the target");
    reg.watch_flow(slot, client, IpProtocol::Udp, now);
    let _ = port;
}

fn slots(reg: &Registry) -> (u32, u32) {
    let ts: Vec<u32> = reg.targets(&group()).map(|t| t.slot).collect();
    (ts[0], ts[1])
}

/// Whether any of 200 new flows from fresh clients at `now` lands on `slot`.
fn gets_flows(reg: &mut Registry, now: Instant, slot: u32) -> bool {
    (0..200u32).any(|i| pick(reg, now, IpAddr::from([192, 0, (i >> 8) as u8, i as u8]), 7) == slot)
}

#[test]
fn unanswered_flows_from_several_clients_take_a_target_out_for_a_back_off() {
    let mut reg = two_targets();
    let (dead, live) = slots(&reg);
    // Three unanswered new flows from two prefixes, the last at 100 ms.
    flow_to(&mut reg, t(0), ip("198.51.100.1"), dead);
    flow_to(&mut reg, t(50), ip("198.51.100.2"), dead);
    flow_to(&mut reg, t(100), ip("203.0.113.9"), dead);
    assert!(
        gets_flows(&mut reg, t(599), dead),
        "not before answer_ms (500) passed"
    );
    assert!(!gets_flows(&mut reg, t(600), dead), "suspect: no new flows");
    assert!(gets_flows(&mut reg, t(600), live));
    assert_eq!(reg.counters().target_suspected, 1);
    assert!(reg.counters().suspect_avoided > 0);
    assert!(
        events(&mut reg)
            .iter()
            .any(|e| matches!(e, RegistryEvent::TargetSuspected { slot, .. } if *slot == dead))
    );
    // Still registered, only out of the choice for 2 s.
    assert_eq!(reg.group_count(&group()), 2);
    assert!(!gets_flows(&mut reg, t(2599), dead));
    // Probation: back in the choice; one unanswered flow makes it suspect again, for twice as long.
    assert!(gets_flows(&mut reg, t(2600), dead));
    flow_to(&mut reg, t(2600), ip("198.51.100.1"), dead);
    assert!(!gets_flows(&mut reg, t(3100), dead));
    assert_eq!(reg.counters().target_suspected, 2);
    assert!(!gets_flows(&mut reg, t(7099), dead), "4 s back-off");
    // Back again; an answered flow clears it for good.
    assert!(gets_flows(&mut reg, t(7100), dead));
    flow_to(&mut reg, t(7100), ip("198.51.100.1"), dead);
    reg.watch_answered(dead);
    assert!(gets_flows(&mut reg, t(8000), dead));
    flow_to(&mut reg, t(8000), ip("198.51.100.1"), dead);
    assert!(
        gets_flows(&mut reg, t(9000), dead),
        "no probation after an answer: one flow is no evidence"
    );
    assert_eq!(reg.counters().target_suspected, 2);
}

#[test]
fn one_client_however_many_flows_cannot_get_a_target_removed() {
    let mut reg = two_targets();
    let (victim, _) = slots(&reg);
    // A client sending flows the service ignores (a closed port, garbage), from one /24.
    for i in 0..100u8 {
        flow_to(&mut reg, t(u64::from(i)), IpAddr::from([198, 51, 100, i]), victim);
    }
    assert!(gets_flows(&mut reg, t(5000), victim));
    assert_eq!(reg.counters().target_suspected, 0);
}

#[test]
fn answered_flows_void_the_evidence_of_spoofed_ones() {
    let mut reg = two_targets();
    let (victim, _) = slots(&reg);
    // Spoofed flows from many prefixes, but real clients' flows are answered in between.
    for i in 0..60u64 {
        flow_to(&mut reg, t(i * 100), IpAddr::from([100, i as u8, 0, 1]), victim);
        if i % 2 == 1 {
            reg.watch_answered(victim);
        }
        assert!(gets_flows(&mut reg, t(i * 100 + 1), victim), "flow {i}");
    }
    assert_eq!(reg.counters().target_suspected, 0);
}

#[test]
fn the_last_target_is_never_taken_out() {
    let mut reg = two_targets();
    let (a, b) = slots(&reg);
    for s in [a, b] {
        flow_to(&mut reg, t(0), ip("198.51.100.1"), s);
        flow_to(&mut reg, t(0), ip("203.0.113.1"), s);
        flow_to(&mut reg, t(0), ip("192.0.2.1"), s);
    }
    // Both suspect: every flow still gets a target, as if there were no watch.
    assert!(gets_flows(&mut reg, t(1000), a));
    assert!(gets_flows(&mut reg, t(1000), b));
    assert!(reg.counters().suspect_ignored > 0);
}

#[test]
fn old_evidence_is_forgotten_and_a_new_registration_starts_clean() {
    let mut reg = two_targets();
    let (victim, _) = slots(&reg);
    flow_to(&mut reg, t(0), ip("198.51.100.1"), victim);
    flow_to(&mut reg, t(10), ip("203.0.113.1"), victim);
    // 11 s later (window 10 s): the old two count no more.
    flow_to(&mut reg, t(11_000), ip("192.0.2.1"), victim);
    assert!(gets_flows(&mut reg, t(12_000), victim));
    assert_eq!(reg.counters().target_suspected, 0);
    // TCP needs two SYNs; a disabled protocol (0) is not watched.
    let mut cfg = RegistryConfig::default();
    cfg.watch.udp_flows = 0;
    let mut off = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for last in [1u8, 2] {
        let a = IpAddr::from([10, 0, 0, last]);
        let s = TransportAddr::new(a, 5353, IpProtocol::Udp);
        register_direct(
            &mut off,
            t(0),
            SocketAddr::new(a, 40000),
            &key,
            &group(),
            &s,
            1,
            10,
        )
        .unwrap();
    }
    let (v, _) = slots(&off);
    off.watch_answered(v);
    for i in 0..10u8 {
        off.watch_flow(v, IpAddr::from([10 + i, 0, 0, 1]), IpProtocol::Udp, t(0));
    }
    assert!(!off.is_suspect(v, t(5000)), "UDP watch off");
    off.watch_flow(v, ip("198.51.100.1"), IpProtocol::Tcp, t(0));
    off.watch_flow(v, ip("203.0.113.1"), IpProtocol::Tcp, t(0));
    assert!(off.is_suspect(v, t(500)), "two unanswered SYNs from two prefixes");
}

proptest! {
    /// Whatever the flows and answers, every new flow of a group with two targets gets a target, and an
    /// answer leaves no evidence pending (a target not yet suspect stays out of suspicion).
    #[test]
    fn the_watch_never_leaves_a_group_without_a_target(
        ops in proptest::collection::vec((0u8..2, 0u8..8, any::<bool>(), 0u64..400), 1..200)
    ) {
        let mut reg = two_targets();
        let (a, b) = slots(&reg);
        let mut now = 0;
        for (which, client, answered, dt) in ops {
            now += dt;
            let s = if which == 0 { a } else { b };
            reg.watch_flow(s, IpAddr::from([10 + client, 1, 1, 1]), IpProtocol::Udp, t(now));
            if answered {
                let before = reg.is_suspect(s, t(now));
                reg.watch_answered(s);
                prop_assert!(!reg.is_suspect(s, t(now + 20_000)), "no evidence left after an answer (back-offs end within 16 s)");
                prop_assert!(reg.is_suspect(s, t(now)) == before || !reg.is_suspect(s, t(now)));
            }
            // `pick` unwraps: a flow without a target fails the property.
            let _ = pick(&mut reg, t(now), IpAddr::from([172, 16, client, 1]), 1);
        }
        prop_assert!(gets_flows(&mut reg, t(now), a) || gets_flows(&mut reg, t(now), b));
    }
}

#[test]
fn a_service_that_never_answered_is_not_watched() {
    // One-way UDP (syslog, metrics): no flow of the target was ever answered, so silence is no evidence.
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for last in [1u8, 2] {
        let a = IpAddr::from([10, 0, 0, last]);
        let s = TransportAddr::new(a, 5353, IpProtocol::Udp);
        register_direct(
            &mut reg,
            t(0),
            SocketAddr::new(a, 40000),
            &key,
            &group(),
            &s,
            1,
            10,
        )
        .unwrap();
    }
    let (a, _) = slots(&reg);
    for i in 0..20u8 {
        reg.watch_flow(
            a,
            IpAddr::from([10 + i, 0, 0, 1]),
            IpProtocol::Udp,
            t(u64::from(i)),
        );
    }
    assert!(!reg.is_suspect(a, t(5000)));
    assert!(gets_flows(&mut reg, t(5000), a));
    // Once it answered, the same silence is evidence.
    reg.watch_answered(a);
    for i in 0..3u8 {
        reg.watch_flow(a, IpAddr::from([10 + i, 0, 0, 1]), IpProtocol::Udp, t(6000));
    }
    assert!(reg.is_suspect(a, t(6500)));
}
