//! Arbitrary input creates no state, and the hot paths do not grow the tables.

use super::*;

// ----- arbitrary input -----

proptest! {
    #[test]
    fn arbitrary_bytes_never_create_state(
        data in proptest::collection::vec(any::<u8>(), 0..200),
        kind in 0x20u8..=0x24,
        v6 in any::<bool>(),
    ) {
        let mut reg = registry(1);
        let from: SocketAddr = if v6 { "[2001:db8::5]:1".parse().unwrap() } else { agent_addr(1) };
        let local: SocketAddr = if v6 { "[2001:db8::1]:6082".parse().unwrap() } else { reg_addr() };
        // Raw bytes, and the same bytes framed as a target message (so the body parsers run).
        let mut framed = vec![1u8, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let body_len = data.len().saturating_sub(16);
        framed.extend_from_slice(&(body_len as u16).to_be_bytes());
        framed.extend_from_slice(&[0, 0]);
        framed.extend_from_slice(&data);
        for input in [&data[..], &framed[..]] {
            prop_assert!(reg.handle_target_packet(t(5), local, from, input).is_err());
        }
        prop_assert!(reg.is_empty());
        prop_assert_eq!(reg.cached_keys(), 0);
        prop_assert_eq!(reg.poll_event(), None);
        prop_assert_eq!(reg.poll_report(), None);
        prop_assert!(reg.poll_transmit(&mut [0u8; 1500]).is_none());
        reg.handle_timeout(t(10_000));
    }

    #[test]
    fn mutated_valid_messages_never_create_state(pos in 0usize..96, bit in 0u8..8) {
        let mut reg = registry(1);
        let key = MasterKey::from_bytes(MASTER).group_key(&group());
        let (_, cookie) = challenge(&mut reg, t(0), agent_addr(1), &key, 1);
        let mut m = register_bytes(&key, &group(), &service(0), cookie, 2, 1);
        let at = pos % m.len();
        m[at] ^= 1 << bit;
        prop_assert!(reg.handle_target_packet(t(1), reg_addr(), agent_addr(1), &m).is_err());
        prop_assert!(reg.is_empty());
        prop_assert_eq!(reg.poll_event(), None);
    }

    #[test]
    fn arbitrary_bytes_into_the_agent_change_nothing(
        data in proptest::collection::vec(any::<u8>(), 0..120),
        registered in any::<bool>(),
    ) {
        let mut p = Pair::new(reg_addr(), agent_addr(5));
        if registered {
            p.exchange();
            p.exchange();
        }
        agent_events(&mut p.agent);
        let (state, timeout) = (p.agent.state(), p.agent.poll_timeout());
        prop_assert!(p.agent.handle_datagram(t(0), reg_addr(), &data).is_err());
        prop_assert_eq!(p.agent.state(), state);
        prop_assert_eq!(p.agent.poll_timeout(), timeout);
        prop_assert_eq!(p.agent.poll_event(), None);
    }
}

#[test]
fn hot_paths_do_not_grow_tables() {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for i in 0..50u16 {
        register_direct(
            &mut reg,
            t(0),
            agent_addr(i),
            &key,
            &group(),
            &service(i),
            1 + i % 3,
            10,
        )
        .unwrap();
    }
    let f = flow_from(ip("1.2.3.4"), 9);
    reg.choose_target(&group(), &f, 1, &TargetOptions::default())
        .unwrap();
    let before = reg.memory_bytes();
    let mut buf = [0u8; 1500];
    for round in 0..20u64 {
        for i in 0..50u16 {
            let m = op_bytes(&key, &group(), &service(i), 12 + round, true);
            reg.handle_target_packet(t(1 + round), reg_addr(), agent_addr(i), &m)
                .unwrap();
        }
        while reg.poll_transmit(&mut buf).is_some() {}
        for h in 0..100 {
            reg.choose_target(
                &group(),
                &f,
                h,
                &TargetOptions {
                    replicate: 3,
                    exclude_sender: true,
                    scope_prefix: Some(8),
                    random: false,
                },
            )
            .unwrap();
        }
    }
    assert_eq!(reg.memory_bytes(), before);
    assert_eq!(reg.counters().refreshed, 1000);
    assert!(before < 4 << 20, "{before} bytes");
    let _ = MS;
}
