//! What the agent tells its user: unanswered registrations (wrong key), check mode, and the service's health.

use super::*;

/// A Pair whose agent holds `key` instead of its group's key.
fn pair_with_key(key: MacKey, check: bool) -> Pair {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    let mut cfg = p.agent.config().clone();
    cfg.key = key;
    cfg.check = check;
    p.agent = TargetAgent::new(cfg).unwrap();
    p
}

#[test]
fn a_wrong_key_is_told_to_the_agents_user_within_a_second_and_the_agent_keeps_trying() {
    use crate::agent::{UNANSWERED_WARN_AFTER, UNANSWERED_WARN_ATTEMPTS};
    let wrong = MasterKey::from_bytes(MASTER).group_key(&group_n(1));
    let mut p = pair_with_key(wrong, false);
    let mut warned_at = None;
    while p.now < t(5000) {
        p.run_until(p.now + Duration::from_millis(10));
        for ev in agent_events(&mut p.agent) {
            if let AgentEvent::Unanswered { attempts, waited } = ev {
                warned_at.get_or_insert((p.now, attempts, waited));
            }
        }
    }
    let (at, attempts, waited) = warned_at.expect("the agent warns about unanswered registrations");
    assert!(at <= t(1100), "warned at {at}, not within about a second");
    assert!(attempts >= UNANSWERED_WARN_ATTEMPTS || waited >= UNANSWERED_WARN_AFTER);
    // The JAP stayed silent (no oracle), and the agent kept trying at its refresh rate.
    assert!(p.regs[0].is_empty());
    assert_eq!(p.regs[0].counters().bad_mac, p.agent.counters().sent_register);
    assert!(p.agent.counters().sent_register >= 24, "{:?}", p.agent.counters());
    assert_eq!(p.agent.state(), AgentState::Registering);
    // Repeated at each doubling, not at every attempt: 5, 10, 20 in five seconds.
    assert_eq!(p.agent.counters().unanswered_warnings, 3);
}

#[test]
fn unanswered_then_answered_is_told_once_each() {
    // The path is cut: no warning before the threshold, one at it, an Answered once the path is back,
    // and the agent registers.
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.route = None;
    p.run_until(t(700));
    assert!(
        agent_events(&mut p.agent).is_empty(),
        "no warning before the threshold"
    );
    p.run_until(t(1050));
    let evs = agent_events(&mut p.agent);
    assert!(
        matches!(evs[..], [AgentEvent::Unanswered { attempts: 5, .. }]),
        "{evs:?}"
    );
    p.route = Some(0);
    p.run_until(t(1500));
    let evs = agent_events(&mut p.agent);
    assert!(
        matches!(evs[0], AgentEvent::Answered { after_attempts } if after_attempts >= 6),
        "{evs:?}"
    );
    assert!(matches!(evs[1], AgentEvent::Registered { .. }), "{evs:?}");
    // Registered for a long time: refreshes are not registrations, nothing more is said.
    p.run_until(t(5000));
    assert!(agent_events(&mut p.agent).is_empty());
    assert_eq!(p.agent.counters().unanswered_warnings, 1);
}

#[test]
fn check_mode_ends_registered_then_deregistered_or_unanswered() {
    use crate::agent::CheckOutcome;
    // The right key: registered, then deregistered at once, and the JAP holds nothing.
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let mut p = pair_with_key(key, true);
    p.run_until(t(300));
    assert!(matches!(p.agent.check_outcome(), Some(CheckOutcome::Registered { jap }) if jap == ProxyId(1)));
    assert_eq!(p.agent.state(), AgentState::Stopped);
    assert!(p.regs[0].is_empty(), "the check deregistered");
    // The wrong key: stopped, unanswered, after about a second.
    let wrong = MasterKey::from_bytes([1; 32]).group_key(&group());
    let mut p = pair_with_key(wrong, true);
    p.run_until(t(900));
    assert_eq!(p.agent.check_outcome(), None);
    p.run_until(t(1100));
    assert_eq!(
        p.agent.check_outcome(),
        Some(CheckOutcome::Unanswered { attempts: 5 })
    );
    assert_eq!(p.agent.state(), AgentState::Stopped);
    let sent = p.agent.counters().sent_register;
    p.run_until(t(3000));
    assert_eq!(
        p.agent.counters().sent_register,
        sent,
        "a stopped check sends nothing"
    );
    assert_eq!(p.agent.poll_timeout(), None);
}

fn pias_state_health() -> crate::agent::HealthSchedule {
    crate::agent::HealthSchedule::default()
}

#[test]
fn a_checked_agent_registers_only_while_healthy() {
    let mut cfg = agent_cfg(group(), service(5), reg_addr());
    cfg.health = Some(pias_state_health());
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.agent = TargetAgent::new(cfg).unwrap();
    p.run_until(t(500));
    assert_eq!(p.agent.state(), AgentState::Idle);
    assert!(p.sent.is_empty(), "nothing sent before a passing check");
    p.agent.set_health(p.now, true);
    p.run_until(t(600));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
    // One failure: still registered, refreshing; two in a row: deregistered at once.
    p.agent.set_health(p.now, false);
    let sent = p.agent.counters().sent_refresh;
    p.run_until(t(900));
    assert!(p.agent.counters().sent_refresh > sent);
    assert_eq!(p.regs[0].group_count(&group()), 1);
    p.agent.set_health(p.now, false);
    p.run_until(t(910));
    assert_eq!(p.regs[0].group_count(&group()), 0);
    assert_eq!(p.agent.state(), AgentState::Idle);
    assert!(agent_events(&mut p.agent).contains(&AgentEvent::Deregistered));
    // `rise` (2) passes in a row bring it back.
    p.agent.set_health(p.now, true);
    p.run_until(t(1000));
    assert_eq!(p.regs[0].group_count(&group()), 0, "one pass is not enough");
    p.agent.set_health(p.now, true);
    p.run_until(t(1100));
    assert_eq!(
        p.regs[0].group_count(&group()),
        1,
        "back after two passing checks"
    );
}
