//! Target choice: weights, per-flow stability, exclude_sender, scope, replicate and random.

use super::*;
use crate::registry::choice::same_prefix;

// ----- target choice -----

fn chooser(weights: &[(IpAddr, u16)]) -> Registry {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for (i, &(ip, w)) in weights.iter().enumerate() {
        let s = TransportAddr::new(ip, 5353, IpProtocol::Udp);
        register_direct(
            &mut reg,
            t(0),
            SocketAddr::new(ip, 40000),
            &key,
            &group(),
            &s,
            w,
            10,
        )
        .unwrap();
        let _ = i;
    }
    events(&mut reg);
    reg
}

#[test]
fn choice_respects_weights_and_is_stable_per_flow() {
    let ws = [(ip("10.0.0.1"), 1u16), (ip("10.0.0.2"), 2), (ip("10.0.0.3"), 5)];
    let mut reg = chooser(&ws);
    let key = MasterKey::from_bytes(MASTER).flow_key();
    let mut counts = [0u32; 3];
    let mut first = Vec::new();
    let n = 40_000u32;
    for i in 0..n {
        let f = flow_from(
            IpAddr::V4(core::net::Ipv4Addr::from(0xc633_0000 + i)),
            1000 + (i % 7) as u16,
        );
        let h = crate::flowhash::flow_hash(&key, &f);
        let c = reg
            .choose_target(&group(), &f, h, &TargetOptions::default())
            .unwrap();
        assert_eq!(c.len(), 1);
        let k = ws.iter().position(|w| w.0 == c.first().service.ip).unwrap();
        counts[k] += 1;
        first.push((f, h, c.first().slot));
    }
    for (k, w) in [1.0f64, 2.0, 5.0].iter().enumerate() {
        let share = f64::from(counts[k]) / f64::from(n);
        assert!(
            (share - w / 8.0).abs() < 0.03,
            "target {k}: share {share:.3}, want {:.3}",
            w / 8.0
        );
    }
    assert_eq!(reg.counters().tables_built, 1, "built once, not per flow");
    // The table the XDP sync reads gives the same answers.
    let (members, slots) = reg
        .slot_table(&group())
        .map(|(m, s)| (m.to_vec(), s.to_vec()))
        .unwrap();
    assert_eq!(slots.len(), 251);
    for (_, h, slot) in first.iter().take(1000) {
        assert_eq!(members[usize::from(slots[(*h % 251) as usize])], *slot);
    }
    // Same flows, same choices; also after an unrelated group changed.
    let k2 = MasterKey::from_bytes(MASTER).group_key(&group_n(3));
    register_direct(
        &mut reg,
        t(1),
        agent_addr(99),
        &k2,
        &group_n(3),
        &service(99),
        1,
        10,
    )
    .unwrap();
    for (f, h, slot) in &first {
        assert_eq!(
            reg.choose_target(&group(), f, *h, &TargetOptions::default())
                .unwrap()
                .first()
                .slot,
            *slot
        );
    }
    assert_eq!(reg.counters().tables_built, 1);
    // Removing one target moves only its flows (Maglev's minimal disruption, roughly).
    let gone = reg
        .targets(&group())
        .find(|i| i.service.ip == ip("10.0.0.1"))
        .unwrap()
        .slot;
    let key_g = MasterKey::from_bytes(MASTER).group_key(&group());
    let s1 = TransportAddr::new(ip("10.0.0.1"), 5353, IpProtocol::Udp);
    reg.handle_target_packet(
        t(2),
        reg_addr(),
        SocketAddr::new(ip("10.0.0.1"), 40000),
        &op_bytes(&key_g, &group(), &s1, 100, false),
    )
    .unwrap();
    let moved = first
        .iter()
        .filter(|(f, h, slot)| {
            *slot != gone
                && reg
                    .choose_target(&group(), f, *h, &TargetOptions::default())
                    .unwrap()
                    .first()
                    .slot
                    != *slot
        })
        .count();
    assert!(
        moved < first.len() / 20,
        "{moved} flows of surviving targets moved"
    );
}

#[test]
fn exclude_sender_never_picks_the_sender() {
    let ws = [(ip("10.0.0.1"), 1u16), (ip("10.0.0.2"), 1), (ip("10.0.0.3"), 1)];
    let mut reg = chooser(&ws);
    let opts = TargetOptions {
        exclude_sender: true,
        ..TargetOptions::default()
    };
    let mut seen = [0u32; 3];
    for i in 0..5000u64 {
        let f = flow_from(ip("10.0.0.2"), i as u16);
        let h = crate::rng::mix(i + 1);
        let c = reg.choose_target(&group(), &f, h, &opts).unwrap();
        assert_ne!(c.first().service.ip, ip("10.0.0.2"));
        seen[ws.iter().position(|w| w.0 == c.first().service.ip).unwrap()] += 1;
        // Stable per flow.
        assert_eq!(reg.choose_target(&group(), &f, h, &opts).unwrap(), c);
    }
    assert!(seen[0] > 2000 && seen[2] > 2000, "{seen:?}");
    // Only the sender left: nothing, counted.
    let mut reg = chooser(&ws[1..2]);
    assert_eq!(
        reg.choose_target(&group(), &flow_from(ip("10.0.0.2"), 1), 7, &opts),
        None
    );
    assert_eq!(reg.counters().no_eligible_target, 1);
    assert!(
        reg.choose_target(&group(), &flow_from(ip("10.0.0.9"), 1), 7, &opts)
            .is_some()
    );
}

#[test]
fn scope_prefers_the_clients_prefix() {
    let ws = [
        (ip("10.1.0.1"), 1u16),
        (ip("10.1.0.2"), 1),
        (ip("10.2.0.1"), 1),
        (ip("10.2.0.2"), 1),
        (ip("10.3.0.1"), 1),
    ];
    let mut reg = chooser(&ws);
    let opts = TargetOptions {
        scope_prefix: Some(16),
        ..TargetOptions::default()
    };
    let mut spread = [0u32; 5];
    for i in 0..4000u64 {
        let h = crate::rng::mix(i + 5);
        let c = reg
            .choose_target(&group(), &flow_from(ip("10.1.77.3"), i as u16), h, &opts)
            .unwrap();
        assert!(
            same_prefix(c.first().service.ip, ip("10.1.0.0"), 16),
            "{:?}",
            c.first()
        );
        let c = reg
            .choose_target(&group(), &flow_from(ip("172.16.0.1"), i as u16), h, &opts)
            .unwrap();
        spread[ws.iter().position(|w| w.0 == c.first().service.ip).unwrap()] += 1;
    }
    assert!(
        spread.iter().all(|&n| n > 500),
        "out-of-scope clients use every target: {spread:?}"
    );
    // Both in-scope targets get flows.
    let mut both = [false; 2];
    for i in 0..200u64 {
        let c = reg
            .choose_target(
                &group(),
                &flow_from(ip("10.1.77.3"), 1),
                crate::rng::mix(i + 9),
                &opts,
            )
            .unwrap();
        both[usize::from(c.first().service.ip == ip("10.1.0.2"))] = true;
    }
    assert_eq!(both, [true, true]);
    // Scope with exclude_sender: the only in-scope target is the sender → fall back to the others.
    let opts = TargetOptions {
        scope_prefix: Some(16),
        exclude_sender: true,
        ..TargetOptions::default()
    };
    let c = reg
        .choose_target(&group(), &flow_from(ip("10.3.0.1"), 1), 3, &opts)
        .unwrap();
    assert_ne!(c.first().service.ip, ip("10.3.0.1"));
}

#[test]
fn replicate_gives_distinct_targets_and_random_uses_the_generator() {
    let ws: Vec<_> = (1..=5)
        .map(|i| (IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, i)), 1u16))
        .collect();
    let mut reg = chooser(&ws);
    let opts = TargetOptions {
        replicate: 3,
        ..TargetOptions::default()
    };
    for i in 0..500u64 {
        let h = crate::rng::mix(i + 1);
        let f = flow_from(ip("198.51.100.1"), i as u16);
        let c = reg.choose_target(&group(), &f, h, &opts).unwrap();
        assert_eq!(c.len(), 3);
        let slots: Vec<u32> = c.iter().map(|t| t.slot).collect();
        assert!(
            slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2],
            "{slots:?}"
        );
        assert_eq!(
            c.first(),
            reg.choose_target(&group(), &f, h, &TargetOptions::default())
                .unwrap()
                .first()
        );
        // TCP is never replicated.
        let tcp = FlowKey {
            proto: IpProtocol::Tcp,
            ..f
        };
        assert_eq!(reg.choose_target(&group(), &tcp, h, &opts).unwrap().len(), 1);
    }
    let opts4 = TargetOptions {
        replicate: 9,
        ..TargetOptions::default()
    };
    let mut small = chooser(&ws[..2]);
    assert_eq!(
        small
            .choose_target(&group(), &flow_from(ip("1.2.3.4"), 1), 1, &opts4)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        reg.choose_target(&group(), &flow_from(ip("1.2.3.4"), 1), 1, &opts4)
            .unwrap()
            .len(),
        MAX_REPLICAS
    );
    // Random: the same flow and hash spread over all targets.
    let rnd = TargetOptions {
        random: true,
        ..TargetOptions::default()
    };
    let mut seen = [0u32; 5];
    for _ in 0..2000 {
        let c = reg
            .choose_target(&group(), &flow_from(ip("1.2.3.4"), 1), 1, &rnd)
            .unwrap();
        seen[usize::from(match c.first().service.ip {
            IpAddr::V4(a) => a.octets()[3] - 1,
            IpAddr::V6(_) => 9,
        })] += 1;
    }
    assert!(seen.iter().all(|&n| n > 250), "{seen:?}");
    // No target: None, counted.
    assert_eq!(
        reg.choose_target(
            &group_n(9),
            &flow_from(ip("1.2.3.4"), 1),
            1,
            &TargetOptions::default()
        ),
        None
    );
    assert_eq!(reg.counters().no_target, 1);
}
