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
    /// Register only while [`TargetAgent::set_health`] reports a passing check.
    pub surrogate: bool,
    /// Consecutive failed checks after which a surrogate deregisters (default 2).
    pub health_failures: u32,
    /// The agent's incarnation (SPEC.md §3): larger at every start, so the JAP's windows accept it.
    pub incarnation: u32,
    /// Seeds the back-off jitter.
    pub seed: u64,
    /// Check mode (`pias target --check`): register once, then deregister and stop; stop at once when the
    /// registration goes unanswered or is refused. See [`TargetAgent::check_outcome`].
    pub check: bool,
}

/// A configuration value that cannot work: the field and how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("agent.{field}: {fix}")]
pub struct AgentConfigError {
    pub field: &'static str,
    pub fix: &'static str,
}

impl AgentConfig {
    /// A configuration with the defaults of SPEC.md §14.
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
            surrogate: false,
            health_failures: 2,
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
        if self.health_failures == 0 {
            return e("health_failures", "must be at least 1 (default 2)");
        }
        Ok(())
    }
}
