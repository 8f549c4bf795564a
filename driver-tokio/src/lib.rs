//! The tokio driver of PIAS: binds the sans-IO core ([`pias_state::proxy::Proxy`],
//! [`pias_state::agent::TargetAgent`]) to sockets, a TUN device and one timer.
//!
//! The driver holds no protocol logic. It
//! - owns the clock: the core's [`pias_state::Instant`] counts microseconds since the driver started
//!   ([`Clock`]);
//! - moves bytes: packets read from the TUN go to `Proxy::handle_host`, datagrams from the overlay socket to
//!   `Proxy::handle_overlay`, each in place in a reused buffer with [`pias_state::proxy::HEADROOM`] in front,
//!   and the returned `Verdict` says where the same bytes go (TUN, overlay, nowhere);
//! - drains what the core queued (`poll_transmit`, then `poll_event` for logs) and re-arms its one timer on
//!   `poll_timeout`.
//!
//! Modules: [`proxy`] (the proxy loop), [`agent`] (the target agent loop, with the surrogate health
//! check), [`tun`] (the TUN device), [`host`] (routes and sysctls around it).

pub mod agent;
pub mod host;
pub mod proxy;
pub mod tun;

use core::time::Duration;
use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

pub use agent::{AgentDriver, AgentDriverConfig, HealthCheck};
pub use host::{HostSetup, Prefix};
pub use proxy::{DriverCounters, ProxyDriver, ProxyDriverConfig, ProxyHandle};

/// The driver's clock: the core's [`pias_state::Instant`] is microseconds since [`Clock::new`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

/// How far ahead the one timer is armed when the core has nothing scheduled.
const IDLE_TIMER: Duration = Duration::from_secs(3600);

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The core's `now`.
    pub fn now(&self) -> pias_state::Instant {
        pias_state::Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The tokio instant of a core deadline; `None` (nothing scheduled) and far deadlines are capped an hour
    /// ahead, so the timer never overflows.
    pub fn deadline(&self, at: Option<pias_state::Instant>) -> tokio::time::Instant {
        let cap = self.origin.elapsed() + IDLE_TIMER;
        let d = at.map_or(cap, |t| Duration::from_micros(t.as_micros()).min(cap));
        self.origin + d
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
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

/// Wall-clock seconds since the Unix epoch: the incarnation SPEC.md §3 asks drivers to use.
pub fn wall_clock_incarnation() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32)
}
