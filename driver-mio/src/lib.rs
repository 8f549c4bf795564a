//! The mio driver of PIAS: binds the sans-IO core ([`pias_state::proxy::Proxy`],
//! [`pias_state::agent::TargetAgent`]) to one [`mio::Poll`], for hosts that run one single-threaded poll
//! loop of their own and will not take an async runtime (routing daemons, load balancers).
//!
//! Two ways to use it:
//! - **Embedded**: [`MioProxy`] (and [`MioAgent`]) register their sources on the *host's*
//!   [`mio::Registry`] under tokens the host chooses; the host's loop calls `handle_ready(token)` for every
//!   event, polls with a timeout no later than `next_deadline()`, and calls `handle_timeout()` when it
//!   passes. `examples/embed.rs` is such a host: a UDP echo, a periodic timer and a proxy in one thread.
//! - **Standalone**: [`ProxyRunner`] / [`run_agent`] own the `Poll` and add signals (signalfd), the
//!   Prometheus endpoint and the control socket; `pias proxy` with `driver = "mio"` and
//!   `pias target --driver mio` use them.
//!
//! Per wake-up each readable source is drained up to the configured batch: the overlay socket with
//! `recvmmsg` into fixed slots (each with [`pias_state::proxy::HEADROOM`] in front), the TUN with one
//! `read` per packet; datagrams the core sends to the overlay are gathered per chunk and sent with one
//! `sendmmsg`, same-size runs to one peer as one UDP GSO message, coalesced (UDP GRO) receives split
//! again (`driver_common::batch`, shared with the tokio driver). Buffers are allocated once; nothing is
//! allocated per packet. Everything that is not about
//! waiting or moving bytes — what a wake-up does with the core (`driver_common::{ProxyLoop, AgentLoop}`:
//! the drain order, timers, counters, the fast path's tick, the graceful stop, the overload policy), TUN
//! creation, routes, sysctls, socket options, metrics and control answers — is in `driver-common`, shared
//! with the tokio driver. No protocol logic lives here.

mod admin;
pub mod agent;
pub mod proxy;
pub mod signals;

pub use agent::{AgentTokens, MioAgent, run_agent};
pub use driver_common::{
    AgentDriverConfig, DriverCounters, HealthCheck, HostSetup, Prefix, ProxyDriverConfig,
};
pub use proxy::{MioProxy, ProxyRunner, ProxyTokens};
pub use signals::Signals;

/// The poll timeout until `deadline` (zero if it passed), rounded *up* to the next millisecond, since
/// epoll's timeout is in milliseconds and waking early would only spin.
pub fn timeout_until(deadline: std::time::Instant) -> core::time::Duration {
    let d = deadline.saturating_duration_since(std::time::Instant::now());
    let ms = d.as_micros().div_ceil(1000);
    core::time::Duration::from_millis(ms as u64)
}
