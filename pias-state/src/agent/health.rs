//! Surrogate mode: the health check's schedule and its results gating registration.

use super::*;

impl TargetAgent {
    /// Surrogate mode: `Some(limit)` when the driver must run a health check now (it fails if it has not
    /// passed within `limit`, one configured refresh interval), and report it with
    /// [`TargetAgent::set_health`]. `None` when no check is due, one runs, the agent is shutting down, or
    /// it is not a surrogate. Each `Some` schedules the next check `refresh_ms` later.
    pub fn poll_health_check(&mut self, now: Instant) -> Option<Duration> {
        if !self.checks_due() || now < self.next_check {
            return None;
        }
        let every = Duration::from_millis(u64::from(self.cfg.refresh_ms));
        self.checking = true;
        self.next_check = now + every;
        Some(every)
    }

    /// Whether health checks are scheduled now: a surrogate, no check running, not shutting down.
    pub(super) fn checks_due(&self) -> bool {
        self.cfg.surrogate && !self.checking && !self.shutting_down()
    }

    /// After [`TargetAgent::shutdown`] (or the end of a check): deregistering for good, or stopped.
    fn shutting_down(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopped | Phase::Leaving { then_idle: false, .. }
        )
    }

    /// The surrogate's health check result (ignored unless `surrogate`, or once shutting down).
    pub fn set_health(&mut self, now: Instant, ok: bool) {
        self.checking = false;
        if !self.cfg.surrogate || self.shutting_down() {
            return;
        }
        self.advance(now);
        if ok {
            self.failures = 0;
            self.healthy = true;
            if self.phase == Phase::Idle {
                self.restart(now);
            }
            return;
        }
        self.healthy = false;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.cfg.health_failures {
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

    fn surrogate() -> TargetAgent {
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
        cfg.surrogate = true;
        TargetAgent::new(cfg).unwrap()
    }

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    #[test]
    fn a_surrogate_schedules_its_health_checks() {
        let mut a = surrogate();
        let every = Duration::from_millis(200);
        // Due at once, one at a time: none while one runs, whatever the time.
        assert_eq!(a.poll_timeout(), Some(ms(0)));
        assert_eq!(a.poll_health_check(ms(0)), Some(every));
        assert_eq!(a.poll_health_check(ms(500)), None);
        // Result at 50 ms: the next is due 200 ms after the previous started.
        a.set_health(ms(50), true);
        assert!(a.poll_timeout().is_some_and(|t| t <= ms(200)));
        assert_eq!(a.poll_health_check(ms(199)), None);
        assert_eq!(a.poll_health_check(ms(200)), Some(every));
        // A result later than the interval: the next is due at once.
        a.set_health(ms(450), false);
        assert_eq!(a.poll_health_check(ms(450)), Some(every));
        a.set_health(ms(460), true);
        // Shutting down (never registered: stopped at once): no more checks, and a late result changes
        // nothing.
        a.shutdown(ms(470));
        assert_eq!(a.poll_health_check(ms(10_000)), None);
        a.set_health(ms(480), true);
        assert_eq!(a.state(), AgentState::Stopped);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn a_plain_agent_schedules_no_health_check() {
        let mut cfg = surrogate().cfg;
        cfg.surrogate = false;
        let mut a = TargetAgent::new(cfg).unwrap();
        assert_eq!(a.poll_health_check(ms(0)), None);
        assert_eq!(a.poll_health_check(ms(10_000)), None);
    }
}
