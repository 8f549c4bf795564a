//! The service's health check (SPEC.md §10.3): its schedule, and the rise/fall thresholds that gate
//! registration. The driver runs the checks (a TCP connect, a UDP request, an HTTP GET, a command); the
//! agent decides when one is due and what the results mean.

use super::*;

impl TargetAgent {
    /// `Some(timeout)` when the driver must run a health check now: it fails if it has not passed within
    /// `timeout` ([`HealthSchedule::timeout_ms`]); report it with [`TargetAgent::set_health`]. `None` when
    /// no check is due, one runs, the agent is shutting down, or it has no health check. Each `Some`
    /// schedules the next check [`HealthSchedule::interval_ms`] later (or at the result, if later).
    pub fn poll_health_check(&mut self, now: Instant) -> Option<Duration> {
        let h = self.cfg.health?;
        if !self.checks_due() || now < self.next_check {
            return None;
        }
        self.checking = true;
        self.next_check = now + Duration::from_millis(u64::from(h.interval_ms));
        Some(Duration::from_millis(u64::from(h.timeout_ms)))
    }

    /// Whether health checks are scheduled now: a health check configured, none running, not shutting
    /// down.
    pub(super) fn checks_due(&self) -> bool {
        self.cfg.health.is_some() && !self.checking && !self.shutting_down()
    }

    /// After [`TargetAgent::shutdown`] (or the end of a check): deregistering for good, or stopped.
    fn shutting_down(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopped | Phase::Leaving { then_idle: false, .. }
        )
    }

    /// Whether the service counts as healthy: no health check, or the thresholds say so (at start: once
    /// the first check passed).
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// A health check's result (ignored without a health check, or once shutting down).
    ///
    /// Down after `fall` consecutive failures: the agent deregisters (Deregister, so the JAP drops the
    /// target at once rather than `hold_ms` later) and waits, still checking. Up after `rise` consecutive
    /// passes (at start, after the first): it registers from scratch. Between the thresholds nothing
    /// changes, so a flapping service changes state at most once per `min(rise, fall)` checks.
    pub fn set_health(&mut self, now: Instant, ok: bool) {
        self.checking = false;
        let Some(h) = self.cfg.health else { return };
        if self.shutting_down() {
            return;
        }
        self.advance(now);
        if ok {
            self.counters.health_passed += 1;
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.healthy && (self.passes >= h.rise || !self.ever_healthy) {
                self.healthy = true;
                self.ever_healthy = true;
                self.counters.health_up += 1;
                self.push_event(AgentEvent::ServiceUp);
            }
            if self.healthy && self.phase == Phase::Idle {
                self.restart(now);
            }
            return;
        }
        self.counters.health_failed += 1;
        self.passes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.healthy && self.failures >= h.fall {
            self.healthy = false;
            self.counters.health_down += 1;
            self.push_event(AgentEvent::ServiceDown);
            let leaving = self.start_leaving(now, true);
            if !leaving && matches!(self.phase, Phase::Registering { .. } | Phase::BackingOff { .. }) {
                self.phase = Phase::Idle;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pias_proto::IpProtocol;

    fn checked() -> TargetAgent {
        let g = TransportAddr::new("10.99.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        let svc = TransportAddr::new("10.2.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        let key = pias_proto::auth::MasterKey::from_bytes([3; 32]).group_key(&g);
        let mut cfg = AgentConfig::new(
            g,
            svc,
            DeliveryMode::Nat,
            "10.99.0.250:6082".parse().unwrap(),
            key,
            1,
            1,
        );
        cfg.health = Some(HealthSchedule {
            interval_ms: 200,
            timeout_ms: 150,
            rise: 2,
            fall: 2,
        });
        TargetAgent::new(cfg).unwrap()
    }

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    /// Sends whatever is due at `now`; returns the message types written.
    fn sent(a: &mut TargetAgent, now: Instant) -> Vec<&'static str> {
        let mut buf = [0u8; 256];
        let mut v = Vec::new();
        while let Some(n) = a.poll_transmit(now, &mut buf) {
            v.push(
                match ControlPacket::new_checked(&buf[..n]).unwrap().message().unwrap() {
                    Message::Register(_) => "Register",
                    Message::Refresh(_) => "Refresh",
                    Message::Deregister(_) => "Deregister",
                    _ => "other",
                },
            );
        }
        v
    }

    #[test]
    fn health_checks_are_scheduled_one_at_a_time() {
        let mut a = checked();
        let timeout = Duration::from_millis(150);
        // Due at once, one at a time: none while one runs, whatever the time.
        assert_eq!(a.poll_timeout(), Some(ms(0)));
        assert_eq!(a.poll_health_check(ms(0)), Some(timeout));
        assert_eq!(a.poll_health_check(ms(500)), None);
        // Result at 50 ms: the next is due 200 ms after the previous started.
        a.set_health(ms(50), true);
        assert!(a.poll_timeout().is_some_and(|t| t <= ms(200)));
        assert_eq!(a.poll_health_check(ms(199)), None);
        assert_eq!(a.poll_health_check(ms(200)), Some(timeout));
        // A result later than the interval: the next is due at once.
        a.set_health(ms(450), false);
        assert_eq!(a.poll_health_check(ms(450)), Some(timeout));
        a.set_health(ms(460), true);
        // Shutting down (never answered: stopped at once): no more checks, and a late result changes
        // nothing.
        a.shutdown(ms(470));
        assert_eq!(a.poll_health_check(ms(10_000)), None);
        a.set_health(ms(480), true);
        assert_eq!(a.state(), AgentState::Stopped);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn without_a_health_check_none_is_scheduled_and_it_registers_at_once() {
        let mut cfg = checked().cfg;
        cfg.health = None;
        let mut a = TargetAgent::new(cfg).unwrap();
        assert_eq!(a.poll_health_check(ms(0)), None);
        assert_eq!(a.poll_health_check(ms(10_000)), None);
        assert!(a.is_healthy());
        assert_eq!(a.state(), AgentState::Registering);
    }

    #[test]
    fn the_first_pass_registers_then_fall_deregisters_and_rise_registers_again() {
        let mut a = checked();
        assert_eq!(a.state(), AgentState::Idle);
        assert!(sent(&mut a, ms(0)).is_empty(), "nothing before a passing check");
        a.set_health(ms(10), false);
        assert!(
            sent(&mut a, ms(10)).is_empty(),
            "a failing service is not registered"
        );
        a.set_health(ms(20), true);
        assert!(a.is_healthy(), "at start one pass suffices");
        assert_eq!(sent(&mut a, ms(20)), vec!["Register"]);
        assert_eq!(a.poll_event(), Some(AgentEvent::ServiceUp));
        // Pretend the JAP accepted: a cookie sent, so a JAP may hold the registration.
        a.phase = Phase::Registered {
            jap: ProxyId(1),
            last_ack: ms(20),
        };
        a.next_send = ms(220);
        // One failure changes nothing: refreshes go on.
        a.set_health(ms(100), false);
        assert!(a.is_healthy());
        assert_eq!(sent(&mut a, ms(220)), vec!["Refresh"]);
        a.phase = Phase::Registered {
            jap: ProxyId(1),
            last_ack: ms(220),
        };
        // The second in a row: Deregister at once.
        a.set_health(ms(300), false);
        assert!(!a.is_healthy());
        assert_eq!(a.poll_event(), Some(AgentEvent::ServiceDown));
        assert_eq!(sent(&mut a, ms(300)), vec!["Deregister"]);
        assert_eq!(a.counters().health_down, 1);
        // A pass, a failure, a pass: not `rise` in a row, still down; the second in a row: up again.
        a.set_health(ms(400), true);
        a.set_health(ms(500), false);
        a.set_health(ms(600), true);
        assert!(!a.is_healthy());
        a.set_health(ms(1200), true);
        assert!(a.is_healthy());
        assert_eq!(a.state(), AgentState::Registering);
        assert_eq!(a.counters().health_up, 2);
    }

    #[test]
    fn flapping_is_bounded_by_the_thresholds() {
        // Whatever the results, state changes are at most one per `min(rise, fall)` results (plus the
        // first), and the agent is healthy exactly when the thresholds say.
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..200 {
            let mut a = checked();
            let mut changes = 0u32;
            let mut was = a.is_healthy();
            let (mut ups, mut downs) = (0u32, 0u32);
            for i in 0..64u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ok = x & 1 == 1;
                if ok {
                    ups += 1;
                    downs = 0;
                } else {
                    downs += 1;
                    ups = 0;
                }
                a.set_health(ms(10 * i), ok);
                let _ = sent(&mut a, ms(10 * i));
                if a.is_healthy() != was {
                    changes += 1;
                    was = a.is_healthy();
                    if was {
                        assert!(ups >= 2 || a.counters().health_up == 1);
                    } else {
                        assert!(downs >= 2);
                    }
                }
            }
            assert!(changes <= 1 + 64 / 2, "{changes} changes");
        }
    }
}
