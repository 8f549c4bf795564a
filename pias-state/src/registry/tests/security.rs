//! Security and bounds: wrong keys, bad cookies, replays, forged acks, and the Full answers and bounded key
//! cache.

use super::*;

// ----- security -----

#[test]
fn wrong_group_key_is_refused_without_state() {
    let mut reg = registry(1);
    let mut cfg = agent_cfg(group(), service(5), reg_addr());
    cfg.key = MasterKey::from_bytes([1; 32]).group_key(&group());
    let mut a = TargetAgent::new(cfg.clone()).unwrap();
    let mut buf = [0u8; 1500];
    let n = a.poll_transmit(t(0), &mut buf).unwrap();
    assert_eq!(
        reg.handle_target_packet(t(0), reg_addr(), agent_addr(5), &buf[..n]),
        Err(RegistryError::BadMac)
    );
    // The key of another group is wrong too.
    cfg.key = MasterKey::from_bytes(MASTER).group_key(&group_n(1));
    let mut a = TargetAgent::new(cfg).unwrap();
    let n = a.poll_transmit(t(0), &mut buf).unwrap();
    assert_eq!(
        reg.handle_target_packet(t(0), reg_addr(), agent_addr(5), &buf[..n]),
        Err(RegistryError::BadMac)
    );
    assert_eq!(reg.counters().bad_mac, 2);
    assert!(reg.is_empty());
    assert_eq!(reg.cached_keys(), 0, "no key is cached for unauthenticated input");
    assert!(replies(&mut reg).is_empty(), "no answer to a bad MAC");
    assert_eq!(reg.poll_event(), None);
    assert_eq!(reg.poll_report(), None);
}

/// Drives `p` to registration and returns the Register-with-cookie payload it sent.
fn registered_pair() -> (Pair, Vec<u8>) {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.exchange();
    p.exchange();
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
    let with_cookie = p.sent[1].clone();
    (p, with_cookie)
}

#[test]
fn register_replays_are_refused() {
    let (mut p, register) = registered_pair();
    let (me, reg) = (p.me, &mut p.regs[0]);
    // Replay while registered: the registration's window has seen it.
    assert_eq!(
        reg.handle_target_packet(t(1), reg_addr(), me, &register),
        Err(RegistryError::Replay)
    );
    // Deregister, then replay within the cookie's life: the tombstone has seen it.
    p.agent.shutdown(t(2));
    p.now = t(2);
    p.exchange();
    let reg = &mut p.regs[0];
    assert_eq!(reg.group_count(&group()), 0);
    assert_eq!(
        reg.handle_target_packet(t(3), reg_addr(), me, &register),
        Err(RegistryError::Replay)
    );
    assert_eq!(reg.counters().tombstone_replay, 1);
    // Two cookie periods later the cookie itself is stale.
    let later = t(2 * 30_000 + 10);
    assert_eq!(
        reg.handle_target_packet(later, reg_addr(), me, &register),
        Err(RegistryError::BadCookie)
    );
    assert_eq!(reg.group_count(&group()), 0);
    assert_eq!(reg.counters().bad_cookie, 1);
    assert!(replies(reg).is_empty());
}

#[test]
fn stale_cookie_is_refused_even_without_tombstone() {
    let cfg = RegistryConfig {
        max_tombstones: 1,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let (first, cookie) = challenge(&mut reg, t(0), agent_addr(5), &key, 1);
    assert_eq!(first, 1);
    let reg_msg = register_bytes(&key, &group(), &service(5), cookie, 2, 1);
    // Previous epoch: still fine (but do not use it yet).
    assert!(reg.cookie_ok(t(30_000 + 5), agent_addr(5), &group(), &cookie));
    assert_eq!(
        reg.handle_target_packet(t(60_000), reg_addr(), agent_addr(5), &reg_msg),
        Err(RegistryError::BadCookie),
        "two epochs later"
    );
    assert!(reg.is_empty());
}

#[test]
fn cookie_of_another_source_is_refused() {
    let (mut p, register) = registered_pair();
    let reg = &mut p.regs[0];
    let other = agent_addr(6);
    assert_eq!(
        reg.handle_target_packet(t(1), reg_addr(), other, &register),
        Err(RegistryError::BadCookie)
    );
    let port = SocketAddr::new(p.me.ip(), p.me.port() + 1);
    assert_eq!(
        reg.handle_target_packet(t(1), reg_addr(), port, &register),
        Err(RegistryError::BadCookie)
    );
    assert_eq!(reg.counters().bad_cookie, 2);
    let info: Vec<_> = reg.targets(&group()).collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].source, p.me, "the registration did not move");
}

#[test]
fn refresh_replay_and_foreign_refresh_are_refused() {
    let (mut p, _) = registered_pair();
    p.now = t(300);
    p.exchange();
    let refresh = p.sent.last().unwrap().clone();
    assert_eq!(p.regs[0].counters().refreshed, 1);
    let reg = &mut p.regs[0];
    assert_eq!(
        reg.handle_target_packet(t(301), reg_addr(), p.me, &refresh),
        Err(RegistryError::Replay)
    );
    assert_eq!(reg.counters().replay, 1);
    assert!(replies(reg).is_empty(), "a replay gets no answer");
    // The same refresh from another source: nothing refreshed and no answer (a spoofed replay must not
    // draw replies towards its forged source, SPEC.md §8.4).
    let last = reg.targets(&group()).next().unwrap().last_refresh;
    assert_eq!(
        reg.handle_target_packet(t(400), reg_addr(), agent_addr(9), &refresh),
        Err(RegistryError::UnknownRegistration)
    );
    assert_eq!(reg.targets(&group()).next().unwrap().last_refresh, last);
    assert!(replies(reg).is_empty());
    assert_eq!(reg.counters().other_source, 1);
    // A replayed Deregister from the right source does nothing either.
    p.agent.shutdown(t(500));
    let mut buf = [0u8; 1500];
    let n = p.agent.poll_transmit(t(500), &mut buf).unwrap();
    let dereg = buf[..n].to_vec();
    let reg = &mut p.regs[0];
    assert_eq!(
        reg.handle_target_packet(t(500), reg_addr(), agent_addr(9), &dereg),
        Err(RegistryError::UnknownRegistration)
    );
    assert_eq!(
        reg.group_count(&group()),
        1,
        "deregister from another source removes nothing"
    );
    assert_eq!(reg.handle_target_packet(t(500), reg_addr(), p.me, &dereg), Ok(()));
    assert_eq!(reg.group_count(&group()), 0);
}

#[test]
fn forged_and_replayed_acks_are_ignored_by_the_agent() {
    let (mut p, _) = registered_pair();
    agent_events(&mut p.agent);
    let good_key = p.agent.config().key.clone();
    let me = p.agent.config().service;
    let ack = |status, key: &MacKey, seq, service| {
        let jap = if seq == 2 { ProxyId(1) } else { ProxyId(66) };
        let msg = Message::RegisterAck(RegisterAck {
            group: group(),
            service,
            status,
            jap,
            refresh_ms: 200,
            hold_ms: 700,
        });
        let mut b = vec![0u8; msg.buffer_len()];
        msg.emit(
            ControlHeader {
                sender: ProxyId::NONE,
                seq,
                time_ms: 0,
            },
            key,
            pias_proto::control::Binding::Target,
            &mut b,
        )
        .unwrap();
        b
    };
    let before = (p.agent.state(), *p.agent.counters());
    let bad_key = MacKey::from_bytes([5; 32]);
    let a = &mut p.agent;
    assert_eq!(
        a.handle_datagram(t(1), reg_addr(), &ack(RegAckStatus::Gone, &bad_key, u64::MAX, me)),
        Err(crate::agent::AgentError::BadMac)
    );
    assert_eq!(
        a.handle_datagram(
            t(1),
            agent_addr(77),
            &ack(RegAckStatus::Gone, &good_key, u64::MAX, me)
        ),
        Err(crate::agent::AgentError::WrongSource)
    );
    assert_eq!(
        a.handle_datagram(
            t(1),
            reg_addr(),
            &ack(RegAckStatus::Gone, &good_key, u64::MAX, service(99))
        ),
        Err(crate::agent::AgentError::NotForUs)
    );
    // The JAP's RegisterAck Ok (its second message), byte for byte, replayed.
    let old = ack(RegAckStatus::Ok, &good_key, 2, me);
    assert_eq!(
        a.handle_datagram(t(1), reg_addr(), &old),
        Err(crate::agent::AgentError::Replay)
    );
    assert_eq!(
        a.handle_datagram(t(1), reg_addr(), b"garbage"),
        Err(crate::agent::AgentError::Malformed(WireError::Truncated {
            what: "control header",
            need: 28,
            have: 7
        }))
    );
    assert_eq!(a.state(), before.0);
    assert_eq!(agent_events(a), vec![]);
    let c = a.counters();
    assert_eq!(
        (c.bad_mac, c.wrong_source, c.not_for_us, c.replay, c.malformed),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(c.acks_ok, before.1.acks_ok);
}

#[test]
fn max_registrations_answers_full_and_agent_backs_off() {
    let cfg = RegistryConfig {
        max_registrations: 3,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for i in 0..3u16 {
        register_direct(&mut reg, t(0), agent_addr(i), &key, &group(), &service(i), 1, 10).unwrap();
    }
    // The fourth, through a real agent.
    let mut a = TargetAgent::new(agent_cfg(group(), service(3), reg_addr())).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..2 {
        let n = a.poll_transmit(t(1), &mut buf).unwrap();
        let r = reg.handle_target_packet(t(1), reg_addr(), agent_addr(3), &buf[..n]);
        for (src, _, payload) in replies(&mut reg) {
            a.handle_datagram(t(1), src, &payload).unwrap();
        }
        if r.is_err() {
            assert_eq!(r, Err(RegistryError::Full));
        }
    }
    assert_eq!(reg.len(), 3);
    assert_eq!(reg.counters().refused_full, 1);
    assert_eq!(a.state(), AgentState::BackingOff);
    assert_eq!(
        agent_events(&mut a),
        vec![AgentEvent::Refused {
            jap: ProxyId(1),
            status: RegAckStatus::Full
        }]
    );
    let wake = a.poll_timeout().unwrap();
    assert!(wake >= t(5001) && wake <= t(6251), "{wake}");
    assert_eq!(
        a.poll_transmit(t(2000), &mut buf),
        None,
        "quiet while backing off"
    );
}

#[test]
fn targets_per_group_bound_answers_full() {
    let cfg = RegistryConfig {
        max_targets_per_group: 2,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for i in 0..2u16 {
        register_direct(&mut reg, t(0), agent_addr(i), &key, &group(), &service(i), 1, 10).unwrap();
    }
    assert_eq!(
        register_direct(&mut reg, t(0), agent_addr(2), &key, &group(), &service(2), 1, 10),
        Err(RegistryError::Full)
    );
    assert_eq!(reg.counters().refused_group_full, 1);
    // Another group still has room.
    let k2 = MasterKey::from_bytes(MASTER).group_key(&group_n(1));
    register_direct(
        &mut reg,
        t(0),
        agent_addr(2),
        &k2,
        &group_n(1),
        &service(2),
        1,
        10,
    )
    .unwrap();
}

#[test]
fn derived_key_cache_is_bounded() {
    let cfg = RegistryConfig {
        max_derived_keys: 4,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let master = MasterKey::from_bytes(MASTER);
    for i in 0..10u16 {
        let g = group_n(i);
        register_direct(
            &mut reg,
            t(0),
            agent_addr(i),
            &master.group_key(&g),
            &g,
            &service(i),
            1,
            10,
        )
        .unwrap();
        assert!(reg.cached_keys() <= 4);
    }
    assert_eq!(reg.len(), 10);
    assert_eq!(reg.cached_keys(), 4);
    assert_eq!(reg.counters().keys_evicted, 6);
    // Each group's key was derived once and then hit (second Register) while cached.
    assert_eq!(reg.counters().keys_derived, 10);
    assert_eq!(reg.counters().key_cache_hits, 10);
}

// ----- reflection (SPEC.md §8.4) -----

/// A spoofed source in 198.51.100.0/24, the n-th of the flood.
fn spoofed(n: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(core::net::Ipv4Addr::new(198, 51, 100, (n % 254) as u8 + 1)),
        1024 + (n % 60_000) as u16,
    )
}

#[test]
fn replayed_zero_cookie_register_draws_bounded_challenges() {
    // 10,000 copies of one recorded zero-cookie Register, from forged sources of one /24, over 5 s: the
    // Challenges towards that /24 are at most burst + rate × 5 s, each smaller than its request.
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let register = register_bytes(&key, &group(), &service(5), [0; COOKIE_LEN], 1, 1);
    let mut got = 0usize;
    for n in 0..10_000u32 {
        let now = t(u64::from(n) / 2); // 2 per ms: 5 s
        assert_eq!(
            reg.handle_target_packet(now, reg_addr(), spoofed(n), &register),
            Ok(())
        );
        for (_, dst, payload) in replies(&mut reg) {
            assert!(
                payload.len() < register.len(),
                "a Challenge is smaller than the Register"
            );
            assert_eq!(prefix_v4(dst.ip()), [198, 51, 100]);
            got += 1;
        }
    }
    let c = reg.config().clone();
    let bound = c.reply_burst as usize + c.reply_rate as usize * 5;
    assert!(got <= bound, "{got} challenges, bound {bound}");
    assert!(got >= c.reply_burst as usize, "the burst is answered: {got}");
    assert_eq!(reg.counters().replies_rate_limited as usize, 10_000 - got);
    assert_eq!(reg.counters().replies_oversize, 0);
    // Another prefix is not affected: a real target elsewhere still gets its Challenge at once.
    let (answers, _) = challenge(&mut reg, t(5000), agent_addr(7), &key, 1);
    assert_eq!(answers, 1);
    // And the flooded prefix gets tokens back at the configured rate.
    assert!(replies(&mut reg).is_empty());
    let later = t(5000 + 1000);
    reg.handle_target_packet(later, reg_addr(), spoofed(1), &register)
        .unwrap();
    assert_eq!(replies(&mut reg).len(), 1);
}

fn prefix_v4(ip: IpAddr) -> [u8; 3] {
    match ip {
        IpAddr::V4(a) => [a.octets()[0], a.octets()[1], a.octets()[2]],
        IpAddr::V6(_) => panic!("v6"),
    }
}

#[test]
fn replayed_refresh_and_deregister_from_spoofed_sources_draw_no_reply() {
    // 10,000 copies each of a recorded Refresh and Deregister from forged sources: while the registration
    // exists (from its real source) none is answered and nothing changes.
    let (mut p, _) = registered_pair();
    p.now = t(300);
    p.exchange();
    let refresh = p.sent.last().unwrap().clone();
    let key = p.agent.config().key.clone();
    let dereg = op_bytes(&key, &group(), &p.agent.config().service, 99, false);
    let reg = &mut p.regs[0];
    let before = reg.counters().refreshed;
    for n in 0..10_000u32 {
        let now = t(301 + u64::from(n) / 4);
        let msg = if n % 2 == 0 { &refresh } else { &dereg };
        assert_eq!(
            reg.handle_target_packet(now, reg_addr(), spoofed(n), msg),
            Err(RegistryError::UnknownRegistration)
        );
    }
    assert!(replies(reg).is_empty());
    assert_eq!(reg.counters().other_source, 10_000);
    assert_eq!(reg.counters().refreshed, before);
    assert_eq!(reg.group_count(&group()), 1, "the real target stays registered");
}

#[test]
fn gone_for_no_registration_is_rate_limited_per_prefix() {
    // A Refresh for a registration this JAP does not hold is answered Gone (so a forgotten target registers
    // again at once) — but only within the prefix's reply budget.
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let refresh = op_bytes(&key, &group(), &service(5), 7, true);
    let mut got = 0;
    for n in 0..10_000u32 {
        let _ = reg.handle_target_packet(t(u64::from(n) / 10), reg_addr(), spoofed(n), &refresh);
        for (_, _, payload) in replies(&mut reg) {
            assert!(
                payload.len() <= refresh.len(),
                "Gone is no larger than the Refresh"
            );
            got += 1;
        }
    }
    let c = reg.config().clone();
    assert!(
        got <= c.reply_burst as usize + c.reply_rate as usize,
        "{got} in 1 s"
    );
    assert!(got >= c.reply_burst as usize);
    assert_eq!(reg.counters().unknown_registration, 10_000);
}

#[test]
fn every_reply_is_no_larger_than_its_request() {
    // The whole life of a registration: each reply against the request that caused it.
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    let mut buf = [0u8; 1500];
    let mut pairs = 0;
    for step in 0..6u64 {
        p.now = t(step * 300);
        if step == 5 {
            p.agent.shutdown(p.now);
        }
        p.agent.handle_timeout(p.now);
        while let Some(n) = p.agent.poll_transmit(p.now, &mut buf) {
            let req = buf[..n].to_vec();
            let _ = p.regs[0].handle_target_packet(p.now, reg_addr(), p.me, &req);
            for (src, _, payload) in replies(&mut p.regs[0]) {
                assert!(payload.len() <= req.len(), "{} > {}", payload.len(), req.len());
                let _ = p.agent.handle_datagram(p.now, src, &payload);
                pairs += 1;
            }
        }
    }
    assert!(pairs >= 4, "Challenge, Ok, refreshes, Gone: {pairs}");
    assert_eq!(p.regs[0].counters().replies_oversize, 0);
}

#[test]
fn cookies_come_from_the_secrets_not_the_seed() {
    // SPEC.md §8.1: the same seed with other secrets gives other cookies (the seed derives no secret); the
    // same secrets give the same cookie (reproducible simulations).
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let cookie = |secret_seed: u64| {
        let mut reg = Registry::new(
            RegistryConfig::default(),
            MasterKey::from_bytes(MASTER),
            ProxyId(1),
            &crate::secrets::Secrets::from_seed_for_tests(secret_seed),
            7,
        )
        .unwrap();
        challenge(&mut reg, t(0), agent_addr(5), &key, 1).1
    };
    assert_eq!(cookie(1), cookie(1));
    assert_ne!(cookie(1), cookie(2));
}
