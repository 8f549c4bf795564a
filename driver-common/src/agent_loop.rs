//! The target agent's loop body, once for every driver: what a wake-up does with the agent, whatever woke
//! it.
//!
//! [`AgentLoop`] holds the [`TargetAgent`], the [`Clock`] and the stop state. A driver keeps only how it
//! waits, its socket, and how it runs a health check; for every wake-up it
//! 1. hands each datagram received to [`AgentLoop::on_datagram`], a finished health check's result to
//!    [`AgentLoop::on_health`], a stop signal to [`AgentLoop::on_signal`];
//! 2. calls [`AgentLoop::handle_timeout`] when [`AgentLoop::deadline`] has passed;
//! 3. calls [`AgentLoop::drain`] (sends what the agent wrote to the registration address, logs its events);
//! 4. starts the health check [`AgentLoop::poll_health_check`] returns, if any (the agent keeps the
//!    schedule: `TargetAgent::poll_health_check`);
//! 5. stops once [`AgentLoop::is_done`], or re-arms its timer on [`AgentLoop::deadline`].
//!
//! Stop: the first SIGINT/SIGTERM calls `TargetAgent::shutdown` (Deregister until the JAP acknowledges or
//! `hold_ms` passes), a second stops at once. A check-mode agent (`AgentConfig::check`) stops by itself.

use core::net::SocketAddr;
use core::time::Duration;
use std::io;

use pias_state::agent::{AgentCounters, AgentEvent, AgentState, TargetAgent};
use tracing::{debug, info, warn};

use crate::events::log_agent_event;
use crate::{AgentDriverConfig, Clock, HealthCheck};

/// Largest reply a driver reads, and the agent's transmit buffer, bytes.
pub const AGENT_BUFFER: usize = 2048;

/// The agent and everything a driver's wake-up does with it. See the module documentation.
#[derive(Debug)]
pub struct AgentLoop {
    agent: TargetAgent,
    clock: Clock,
    health: Option<HealthCheck>,
    last_health: Option<bool>,
    stopping: bool,
    done: bool,
    tx: Vec<u8>,
}

impl AgentLoop {
    /// Validates the agent's configuration.
    pub fn new(cfg: &AgentDriverConfig) -> io::Result<AgentLoop> {
        let agent = TargetAgent::new(cfg.agent.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(AgentLoop {
            agent,
            clock: Clock::new(),
            health: cfg.health.clone(),
            last_health: None,
            stopping: false,
            done: false,
            tx: vec![0; AGENT_BUFFER],
        })
    }

    /// Logs the start, once the driver bound its socket at `local`.
    pub fn log_start(&self, local: SocketAddr, driver: &'static str) {
        let c = self.agent.config();
        info!(
            group = %c.group,
            service = %c.service,
            registration = %c.registration,
            %local,
            health = self.health.as_ref().map_or("none", HealthCheck::kind),
            driver,
            "target agent started"
        );
    }

    /// The agent, for inspection.
    pub fn agent(&self) -> &TargetAgent {
        &self.agent
    }

    /// The agent's counters.
    pub fn counters(&self) -> &AgentCounters {
        self.agent.counters()
    }

    /// The last health check's result; `None` before the first (or without a health check).
    pub fn last_health(&self) -> Option<bool> {
        self.last_health
    }

    /// Whether a stop signal arrived (or [`AgentLoop::shutdown`] was called).
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    // ----- input -----

    /// One datagram received from `from` (the agent refuses anything not from the registration address).
    pub fn on_datagram(&mut self, from: SocketAddr, payload: &[u8]) {
        if let Err(e) = self.agent.handle_datagram(self.clock.now(), from, payload) {
            debug!(error = %e, %from, "reply ignored");
        }
    }

    /// A receive failed (not `WouldBlock`): logged, never fatal.
    pub fn on_recv_error(&self, e: &io::Error) {
        debug!(error = %e, "agent receive error");
    }

    /// A health check's result: logged when it changes, and reported to the agent.
    pub fn on_health(&mut self, ok: bool) {
        if self.last_health != Some(ok) {
            if ok {
                info!("health check passes");
            } else {
                warn!("health check fails");
            }
            self.last_health = Some(ok);
        }
        self.agent.set_health(self.clock.now(), ok);
    }

    /// A stop signal: the first starts deregistering ([`AgentLoop::shutdown`]), a second means stop now
    /// (`true`).
    pub fn on_signal(&mut self, sig: &str) -> bool {
        if crate::stop_now(self.stopping, sig) {
            return true;
        }
        self.shutdown();
        false
    }

    /// Starts deregistering; [`AgentLoop::is_done`] says when it is over. A running health check's
    /// result no longer matters (the driver may abandon it).
    pub fn shutdown(&mut self) {
        info!("deregistering");
        self.stopping = true;
        self.agent.shutdown(self.clock.now());
    }

    /// Runs the agent's timer if due. Harmless when early.
    pub fn handle_timeout(&mut self) {
        let now = self.clock.now();
        if self.agent.poll_timeout().is_some_and(|t| t <= now) {
            self.agent.handle_timeout(now);
        }
    }

    // ----- output -----

    /// Sends what the agent wrote (each a datagram to the registration address, with `send`; a failure is
    /// logged and the message dropped: the agent repeats itself), then logs its events.
    pub fn drain(&mut self, mut send: impl FnMut(&[u8], SocketAddr) -> io::Result<usize>) {
        let now = self.clock.now();
        let registration = self.agent.config().registration;
        while let Some(n) = self.agent.poll_transmit(now, &mut self.tx) {
            if let Err(e) = send(&self.tx[..n], registration) {
                debug!(error = %e, %registration, "agent send failed");
            }
        }
        while let Some(ev) = self.agent.poll_event() {
            log_agent_event(&ev);
            if self.stopping && ev == AgentEvent::Deregistered {
                info!("deregistered: stopping");
                self.done = true;
            }
        }
    }

    /// The health check to start now, and the time it is given before it counts as failed (with a check
    /// configured; the agent keeps the schedule).
    pub fn poll_health_check(&mut self) -> Option<(HealthCheck, Duration)> {
        let h = self.health.clone()?;
        let limit = self.agent.poll_health_check(self.clock.now())?;
        Some((h, limit))
    }

    /// When [`AgentLoop::handle_timeout`] (or the next health check) is due, as a wall-clock instant.
    pub fn deadline(&self) -> std::time::Instant {
        self.clock.deadline(self.agent.poll_timeout())
    }

    /// Whether the agent is finished: deregistered after a stop, or stopped (a check ended).
    pub fn is_done(&self) -> bool {
        self.done || self.agent.state() == AgentState::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pias_proto::control::DeliveryMode;
    use pias_proto::{IpProtocol, TransportAddr};
    use pias_state::agent::AgentConfig;

    fn agent_loop(checked: bool) -> AgentLoop {
        let ta = |ip: &str| TransportAddr::new(ip.parse().unwrap(), 53, IpProtocol::Udp);
        let (g, svc) = (ta("10.99.0.1"), ta("127.0.0.1"));
        let key = pias_proto::auth::MasterKey::from_bytes([3; 32]).group_key(&g);
        let reg = "127.0.0.1:9".parse().unwrap();
        let mut agent = AgentConfig::new(g, svc, DeliveryMode::Nat, reg, key, 1, 1);
        agent.health = checked.then(pias_state::agent::HealthSchedule::default);
        let addr = "127.0.0.1:53".parse().unwrap();
        let health = Some(HealthCheck::Tcp { addr });
        AgentLoop::new(&AgentDriverConfig {
            agent,
            bind: None,
            health,
        })
        .unwrap()
    }

    #[test]
    fn a_checked_agent_checks_before_it_registers_and_stops_on_signals() {
        let mut l = agent_loop(true);
        let mut sent = 0;
        l.drain(|_, _| {
            sent += 1;
            Ok(0)
        });
        assert_eq!(sent, 0, "nothing before a passing check");
        let (h, limit) = l.poll_health_check().expect("a check is due at once");
        assert!(matches!(h, HealthCheck::Tcp { .. }));
        assert_eq!(limit, Duration::from_millis(300));
        assert!(l.poll_health_check().is_none(), "one at a time");
        l.on_health(true);
        assert_eq!(l.last_health(), Some(true));
        l.drain(|_, _| {
            sent += 1;
            Ok(0)
        });
        assert_eq!(sent, 1, "a Register once the check passed");
        // Registering, never answered: the first signal stops (nothing to deregister), a second is "now".
        assert!(!l.on_signal("SIGTERM"));
        l.drain(|_, _| Ok(0));
        assert!(l.is_done());
        assert!(l.poll_health_check().is_none());
        assert!(l.on_signal("SIGTERM"));
    }

    #[test]
    fn an_agent_without_a_health_check_runs_none() {
        let mut l = agent_loop(false);
        assert!(l.poll_health_check().is_none());
    }
}
