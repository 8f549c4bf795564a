//! The tokio driver of PIAS: binds the sans-IO core ([`pias_state::proxy::Proxy`],
//! [`pias_state::agent::TargetAgent`]) to sockets, a TUN device and one timer.
//!
//! The driver holds no protocol logic. It
//! - owns the clock: the core's [`pias_state::Instant`] counts microseconds since the driver started
//!   ([`Clock`], shared with the other drivers in `driver-common`);
//! - moves bytes: packets read from the TUN go to `Proxy::handle_host`, datagrams from the overlay socket to
//!   `Proxy::handle_overlay`, each in place in a reused buffer with [`pias_state::proxy::HEADROOM`] in front,
//!   and the returned `Verdict` says where the same bytes go (TUN, overlay, nowhere);
//! - drains what the core queued (`poll_transmit`, then `poll_event` for logs) and re-arms its one timer on
//!   `poll_timeout`.
//!
//! Modules: [`proxy`] (the proxy loop), [`agent`] (the target agent loop, with the surrogate health
//! check), [`tun`] (the TUN device on tokio's reactor). What is not about waiting — TUN creation, routes
//! and sysctls, the overlay socket's options, counters, metrics and control answers — is `driver-common`'s.

pub mod agent;
pub mod proxy;
pub mod tun;

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

pub use agent::{AgentDriver, check_health};
pub use driver_common::{
    AgentDriverConfig, Clock, DriverCounters, HealthCheck, HostSetup, Prefix, ProxyDriverConfig, host,
    wall_clock_incarnation,
};
pub use proxy::{ProxyDriver, ProxyHandle};

/// The tokio instant of a core deadline (see [`Clock::deadline`]).
pub(crate) fn deadline(clock: &Clock, at: Option<pias_state::Instant>) -> tokio::time::Instant {
    tokio::time::Instant::from_std(clock.deadline(at))
}

/// SIGINT and SIGTERM: the first starts a graceful stop, a second one stops at once.
#[derive(Debug)]
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn new() -> io::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}
