//! Registration, refresh, deregistration, expiry, dead JAPs and draining, re-registration with changes,
//! and the configuration's validation.

use super::*;

#[test]
fn registration_completes_in_two_round_trips_v4_and_v6() {
    for (registration, me) in [
        (reg_addr(), agent_addr(5)),
        (
            "[2001:db8::1]:6082".parse().unwrap(),
            "[2001:db8:1::5]:40000".parse().unwrap(),
        ),
    ] {
        let mut p = Pair::new(registration, me);
        p.agent.config(); // (getter smoke)
        assert_eq!(p.exchange(), (1, 1), "round trip 1: Register → Challenge");
        assert_eq!(p.agent.state(), AgentState::Registering);
        assert_eq!(
            p.exchange(),
            (1, 1),
            "round trip 2: Register with cookie → RegisterAck Ok"
        );
        assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
        assert_eq!(
            agent_events(&mut p.agent),
            vec![AgentEvent::Registered { jap: ProxyId(1) }]
        );
        let reg = &mut p.regs[0];
        assert_eq!(reg.group_count(&group()), 1);
        let evs = events(reg);
        assert!(matches!(evs[..], [RegistryEvent::TargetUp { group: g, .. }] if g == group()));
        let info: Vec<_> = reg.targets(&group()).collect();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].source, me);
        assert_eq!(info[0].local, registration);
        let flags = if me.is_ipv6() { FLAG_TUNNEL } else { 0 };
        assert_eq!(
            reg.poll_report(),
            Some(GroupReport {
                group: group(),
                count: 1,
                flags
            })
        );
        assert_eq!(reg.counters().challenges, 1);
        assert_eq!(reg.counters().registered, 1);
    }
}

#[test]
fn refresh_keeps_alive_and_silence_expires_after_exactly_hold() {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.run_until(t(10_000));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
    assert_eq!(p.regs[0].group_count(&group()), 1, "refreshes keep the target");
    assert!(p.regs[0].counters().refreshed >= 45, "{:?}", p.regs[0].counters());
    assert_eq!(p.regs[0].counters().expired, 0);
    events(&mut p.regs[0]);

    // The agent goes silent (the path is cut).
    let last = p.regs[0].targets(&group()).next().unwrap().last_refresh;
    p.route = None;
    let reg = &mut p.regs[0];
    assert_eq!(reg.poll_timeout(), Some(last + Duration::from_millis(700)));
    reg.handle_timeout(last + Duration::from_micros(699_999));
    assert_eq!(reg.group_count(&group()), 1, "alive until hold_ms has passed");
    reg.handle_timeout(last + Duration::from_millis(700));
    assert_eq!(reg.group_count(&group()), 0, "removed at last refresh + hold_ms");
    assert!(matches!(
        events(reg)[..],
        [RegistryEvent::TargetDown {
            reason: DownReason::Expired,
            ..
        }]
    ));
    assert_eq!(reg.poll_timeout(), None);
    assert_eq!(reg.counters().expired, 1);
}

#[test]
fn deregister_removes_at_once() {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.run_until(t(1000));
    events(&mut p.regs[0]);
    agent_events(&mut p.agent);
    p.agent.shutdown(p.now);
    assert_eq!(p.agent.state(), AgentState::Leaving);
    assert_eq!(p.exchange(), (1, 1));
    assert_eq!(p.regs[0].group_count(&group()), 0);
    assert!(matches!(
        events(&mut p.regs[0])[..],
        [RegistryEvent::TargetDown {
            reason: DownReason::Deregistered,
            ..
        }]
    ));
    assert_eq!(p.agent.state(), AgentState::Stopped);
    assert_eq!(agent_events(&mut p.agent), vec![AgentEvent::Deregistered]);
    assert_eq!(p.agent.poll_timeout(), None);
    assert_eq!(p.exchange(), (0, 0), "a stopped agent sends nothing");
}

#[test]
fn agent_detects_dead_jap_within_hold_and_reregisters_elsewhere() {
    let mut p = Pair::registered_with_first_of_two();
    // JAP 1 dies: nothing reaches it any more, nothing comes back.
    p.route = None;
    let cut = p.now;
    let mut lost_at = None;
    while lost_at.is_none() && p.now < t(5000) {
        p.run_until(p.now + Duration::from_millis(1));
        if agent_events(&mut p.agent).contains(&AgentEvent::JapLost {
            jap: ProxyId(1),
            reason: LostReason::Silent,
        }) {
            lost_at = Some(p.now);
        }
    }
    let lost_at = lost_at.expect("JAP loss detected");
    assert!(
        lost_at - cut <= Duration::from_millis(700),
        "detected after {:?}",
        lost_at - cut
    );
    // Routing converges on proxy 2 some time later; the agent keeps retrying every refresh_ms.
    p.run_until(lost_at + Duration::from_millis(1000));
    assert!(
        p.agent.counters().sent_register >= 5 + 2,
        "{:?}",
        p.agent.counters()
    );
    p.route = Some(1);
    let moved = p.now;
    p.run_until(moved + Duration::from_millis(250));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(2) });
    // A second of unanswered Registers was told to the user, then that an answer came.
    let evs = agent_events(&mut p.agent);
    assert!(
        matches!(
            evs[..],
            [
                AgentEvent::Unanswered { attempts: 5, .. },
                AgentEvent::Answered { .. },
                AgentEvent::Registered { jap: ProxyId(2) }
            ]
        ),
        "{evs:?}"
    );
    assert_eq!(p.regs[1].group_count(&group()), 1);
    // Proxy 1 expired it meanwhile.
    assert_eq!(p.regs[0].group_count(&group()), 0);
}

#[test]
fn route_change_gets_gone_and_reregisters_at_once() {
    let mut p = Pair::registered_with_first_of_two();
    p.route = Some(1);
    let moved = p.now;
    p.run_until(moved + Duration::from_millis(201));
    // Refresh → Gone → Register → Challenge → Register → Ok, all in one refresh interval.
    let evs = agent_events(&mut p.agent);
    assert_eq!(
        evs,
        vec![
            AgentEvent::JapLost {
                jap: ProxyId(1),
                reason: LostReason::Gone
            },
            AgentEvent::Registered { jap: ProxyId(2) }
        ]
    );
    assert_eq!(p.regs[1].counters().unknown_registration, 1);
}

#[test]
fn draining_jap_sends_its_targets_elsewhere_within_refreshes() {
    let mut p = Pair::registered_with_first_of_two();
    assert_eq!(p.regs[0].group_count(&group()), 1);
    // Proxy 1 starts leaving; routing still leads to it for another 300 ms (its withdrawal converging).
    p.regs[0].drain();
    let left = p.now;
    p.run_until(left + Duration::from_millis(300));
    let evs = agent_events(&mut p.agent);
    assert_eq!(
        evs.first(),
        Some(&AgentEvent::JapLost {
            jap: ProxyId(1),
            reason: LostReason::Draining
        }),
        "{evs:?}"
    );
    // A Register that still reaches proxy 1 is refused too (after the cookie checks), and registers nothing.
    assert!(
        evs[1..].iter().all(|e| matches!(
            e,
            AgentEvent::Refused {
                status: RegAckStatus::Draining,
                ..
            }
        )),
        "{evs:?}"
    );
    assert!(p.regs[0].counters().refused_draining >= 1);
    assert_eq!(
        p.regs[0].counters().registered,
        1,
        "nothing new registered while draining"
    );
    // The registration already there stays for flows bound through proxy 1: it no longer expires.
    assert_eq!(p.regs[0].group_count(&group()), 1);
    assert_eq!(p.regs[0].poll_timeout(), None, "nothing to expire while draining");
    p.route = Some(1);
    let moved = p.now;
    p.run_until(moved + Duration::from_millis(250));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(2) });
    assert_eq!(p.regs[1].group_count(&group()), 1);
    // With Draining the target moved within two refresh intervals of the routing change, where a JAP that
    // simply stopped costs `hold_ms` of silence first (agent_detects_dead_jap_within_hold_...).
    p.run_until(left + Duration::from_millis(3000));
    assert_eq!(
        p.regs[0].group_count(&group()),
        1,
        "kept on proxy 1 until it stops"
    );
    assert_eq!(p.regs[0].counters().expired, 0);
}

#[test]
fn mode_and_source_changes_replace_and_reports_carry_the_tunnel_flag() {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    register_direct(&mut reg, t(0), agent_addr(1), &key, &group(), &service(1), 1, 10).unwrap();
    events(&mut reg);
    assert_eq!(
        reg.poll_report(),
        Some(GroupReport {
            group: group(),
            count: 1,
            flags: 0
        })
    );
    reg.commit_report(&group(), 1, 0);
    // Same service registers in tunnel mode from another source.
    let from = agent_addr(2);
    reg.handle_target_packet(
        t(1),
        reg_addr(),
        from,
        &register_bytes(&key, &group(), &service(1), [0; 16], 20, 1),
    )
    .unwrap();
    let r = replies(&mut reg);
    let Message::Challenge(c) = ControlPacket::new_checked(&r[0].2).unwrap().message().unwrap() else {
        panic!()
    };
    let msg = Message::Register(Register {
        group: group(),
        service: service(1),
        mode: DeliveryMode::Tunnel,
        weight: 3,
        cookie: c.cookie,
    });
    let mut b = vec![0u8; msg.buffer_len()];
    msg.emit(
        ControlHeader {
            sender: ProxyId::NONE,
            seq: 21,
            time_ms: 0,
        },
        &key,
        pias_proto::control::Binding::Target,
        &mut b,
    )
    .unwrap();
    reg.handle_target_packet(t(1), reg_addr(), from, &b).unwrap();
    let evs = events(&mut reg);
    assert!(
        matches!(
            evs[..],
            [
                RegistryEvent::TargetDown {
                    reason: DownReason::Replaced,
                    ..
                },
                RegistryEvent::TargetUp {
                    mode: DeliveryMode::Tunnel,
                    ..
                }
            ]
        ),
        "{evs:?}"
    );
    assert_eq!(reg.group_count(&group()), 1);
    assert_eq!(
        reg.poll_report(),
        Some(GroupReport {
            group: group(),
            count: 1,
            flags: FLAG_TUNNEL
        })
    );
    assert_eq!(reg.targets(&group()).next().unwrap().source, from);
    assert_eq!(reg.counters().replaced, 1);
}

#[test]
fn config_validation_names_the_field() {
    let mut c = RegistryConfig::default();
    assert_eq!(c.validate(), Ok(()));
    c.hold_ms = 100;
    let e = c.validate().unwrap_err();
    assert_eq!(e.field, "hold_ms");
    assert!(
        e.to_string()
            .starts_with("registry.hold_ms: must exceed refresh_ms")
    );
    let c = RegistryConfig {
        max_targets_per_group: 5000,
        ..RegistryConfig::default()
    };
    assert_eq!(c.validate().unwrap_err().field, "max_targets_per_group");
    assert!(
        Registry::new(
            c,
            MasterKey::from_bytes(MASTER),
            ProxyId(1),
            &crate::secrets::Secrets::from_seed_for_tests(0),
            0
        )
        .is_err()
    );
    let mut a = agent_cfg(group(), service(1), reg_addr());
    a.service.proto = IpProtocol::Tcp;
    assert_eq!(a.validate().unwrap_err().field, "service");
}
