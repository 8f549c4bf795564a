//! The tokio driver of PIAS: binds the sans-IO core ([`pias_state::proxy::Proxy`],
//! [`pias_state::agent::TargetAgent`]) to sockets, a TUN device and one timer.
//!
//! The driver holds no protocol logic and no loop logic: what a wake-up does with the core (input, the
//! drain order, timers, counters, the fast path, the graceful stop, the overload policy) is
//! `driver_common::{ProxyLoop, AgentLoop}`, shared with the mio driver. What is here is how tokio waits
//! (one `select!` per wake-up over the sources, the timer, signals and [`ProxyHandle`] requests) and moves
//! bytes.
//!
//! Modules: [`proxy`] (the proxy's task), [`agent`] (the target agent's, with the service's health check
//! on a task), [`admin`] (the metrics endpoint and the control socket, on tasks of the same runtime),
//! [`tun`] (the TUN device on tokio's reactor). TUN creation, routes and sysctls, the overlay socket's
//! options, counters, metrics and control answers are `driver-common`'s.

pub mod admin;
pub mod agent;
pub mod proxy;
pub mod tun;

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

pub use admin::{serve_control, serve_metrics};
pub use agent::{AgentDriver, check_health};
pub use driver_common::{
    AgentDriverConfig, Clock, DriverCounters, HealthCheck, HostSetup, Prefix, ProxyDriverConfig, host,
    wall_clock_incarnation,
};
pub use proxy::{ProxyDriver, ProxyHandle};

/// The tokio instant of a loop's deadline.
pub(crate) fn deadline(at: std::time::Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(at)
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
