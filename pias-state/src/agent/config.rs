//! The agent's configuration and its validation.

use super::*;

/// Configuration of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub group: TransportAddr,
    /// Where the target listens (its protocol is the group's; in NAT mode, so is its family).
    pub service: TransportAddr,
    pub mode: DeliveryMode,
    /// Share of new flows at the JAP (1–65535; 0 is sent as 1).
    pub weight: u16,
    /// The registration address: an anycast IP and port 6082.
    pub registration: SocketAddr,
    /// The group's registration key (from `pias key`).
    pub key: MacKey,
    /// Refresh interval until a JAP says otherwise (default 200 ms).
    pub refresh_ms: u32,
    /// The JAP is dead after this long without a RegisterAck (default 700 ms).
    pub hold_ms: u32,
    /// Wait after a Full answer before registering again (default 5 s).
    pub full_backoff_ms: u32,
    /// The service's health check (SPEC.md §10.3): register only while it passes, as reported by
    /// [`TargetAgent::set_health`]. `None` registers unconditionally (`--no-health-check`, `--check`).
    pub health: Option<HealthSchedule>,
    /// The agent's incarnation (SPEC.md §3): larger at every start, so the JAP's windows accept it.
    pub incarnation: u32,
    /// Seeds the back-off jitter.
    pub seed: u64,
    /// Check mode (`pias target --check`): register once, then deregister and stop; stop at once when the
    /// registration goes unanswered or is refused. See [`TargetAgent::check_outcome`].
    pub check: bool,
}

/// When the agent checks its service and how many results change its mind (SPEC.md §10.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSchedule {
    /// A check starts this often (default 300 ms); one at a time, so a slow one delays the next.
    pub interval_ms: u32,
    /// A check that has not passed after this long fails (default 300 ms).
    pub timeout_ms: u32,
    /// Consecutive passing checks that bring a failed service back (default 2). At start one suffices.
    pub rise: u32,
    /// Consecutive failing checks after which the agent deregisters (default 2).
    pub fall: u32,
}

impl Default for HealthSchedule {
    /// 300 ms, 300 ms, rise 2, fall 2: a dead service is deregistered 0.6–0.9 s after it died, a
    /// flapping one changes state at most once per 600 ms.
    fn default() -> Self {
        HealthSchedule {
            interval_ms: 300,
            timeout_ms: 300,
            rise: 2,
            fall: 2,
        }
    }
}

/// A configuration value that cannot work: the field and how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("agent.{field}: {fix}")]
pub struct AgentConfigError {
    pub field: &'static str,
    pub fix: &'static str,
}

impl AgentConfig {
    /// A configuration with the defaults of SPEC.md §14, without a health check (the core cannot run one;
    /// `pias target` sets [`AgentConfig::health`] unless told not to).
    pub fn new(
        group: TransportAddr,
        service: TransportAddr,
        mode: DeliveryMode,
        registration: SocketAddr,
        key: MacKey,
        incarnation: u32,
        seed: u64,
    ) -> Self {
        AgentConfig {
            group,
            service,
            mode,
            weight: 1,
            registration,
            key,
            refresh_ms: 200,
            hold_ms: 700,
            full_backoff_ms: 5000,
            health: None,
            incarnation,
            seed,
            check: false,
        }
    }

    /// Checks every field; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        let e = |field, fix| Err(AgentConfigError { field, fix });
        if self.group.proto != self.service.proto {
            return e("service", "must use the group's protocol");
        }
        if self.mode == DeliveryMode::Nat && self.group.ip.is_ipv4() != self.service.ip.is_ipv4() {
            return e(
                "service",
                "in NAT mode must be of the group's address family (or use tunnel mode)",
            );
        }
        if self.refresh_ms == 0 {
            return e("refresh_ms", "must be at least 1 (default 200)");
        }
        if self.hold_ms <= self.refresh_ms {
            return e("hold_ms", "must exceed refresh_ms (default 700)");
        }
        if let Some(h) = self.health {
            if h.interval_ms == 0 {
                return e("health.interval_ms", "must be at least 1 (default 300)");
            }
            if h.timeout_ms == 0 {
                return e("health.timeout_ms", "must be at least 1 (default 300)");
            }
            if h.rise == 0 {
                return e("health.rise", "must be at least 1 (default 2)");
            }
            if h.fall == 0 {
                return e("health.fall", "must be at least 1 (default 2)");
            }
        }
        Ok(())
    }
}
