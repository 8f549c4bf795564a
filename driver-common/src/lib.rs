//! What every user-space PIAS driver shares, written once: the drivers (`driver-tokio`, `driver-mio`)
//! differ only in how they wait and wake, and how they move bytes.
//!
//! - [`proxy_loop`], [`agent_loop`]: the loop bodies — what a wake-up does with the core (input, the drain
//!   order, timers, counters, the fast path's tick, the graceful stop, the one overload policy: a full
//!   queue drops and counts, a send never waits);
//! - [`tun`]: the TUN device (raw `/dev/net/tun` + `TUNSETIFF`, non-blocking, not persistent; with
//!   offloads where the kernel has them), [`gso`] cutting the trains of segments it then hands over, and
//!   [`gro`] coalescing segments written back into it;
//! - [`host`]: routes into it and the forwarding sysctls;
//! - [`overlay`]: the overlay UDP socket and its options (socket2);
//! - [`mmsg`], [`batch`]: many datagrams per system call on it (`recvmmsg`/`sendmmsg`, UDP GRO/GSO),
//!   and the batched loop steps both drivers run around [`ProxyLoop`];
//! - [`DriverCounters`], [`Clock`], [`ProxyDriverConfig`], [`AgentDriverConfig`], [`HealthCheck`];
//! - [`health`]: what the drivers' health checks share (the HTTP request and status line, the command);
//! - [`events`]: the core's events as logs;
//! - [`fastpath`]: the hook a kernel fast path (`driver-xdp`) plugs into a driver's loop;
//! - [`metrics`]: Prometheus text of every counter, and the answer to an HTTP request for it;
//! - [`control`]: the control socket's protocol (one request line → one JSON line).
//!
//! Nothing here holds protocol logic (that is `pias-state`) or waits for anything (that is a driver).

pub mod agent_loop;
pub mod batch;
pub mod control;
pub mod entropy;
pub mod events;
pub mod fastpath;
pub mod gro;
pub mod gso;
pub mod health;
pub mod host;
pub mod metrics;
pub mod mmsg;
pub mod overlay;
pub mod proxy_loop;
pub mod tun;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use pias_state::agent::AgentConfig;
use pias_state::proxy::ProxyConfig;

pub use agent_loop::AgentLoop;
pub use fastpath::{FAST_PATH_TICK, FastPath, FastPathSlot};
pub use host::{HostSetup, Prefix};
pub use proxy_loop::{ProxyLoop, Side, Wire};

/// Largest packet or datagram a driver reads (an IP datagram's maximum).
pub const MAX_PACKET: usize = 65_535;

/// How far ahead a driver's timer is armed when the core has nothing scheduled.
pub const IDLE_TIMER: Duration = Duration::from_secs(3600);

/// What a proxy driver needs beyond the core's configuration.
#[derive(Debug, Clone)]
pub struct ProxyDriverConfig {
    pub proxy: ProxyConfig,
    /// The TUN, its MTU, the routes into it, and whether to set sysctls.
    pub host: HostSetup,
    /// `SO_RCVBUF` / `SO_SNDBUF` of the overlay socket, bytes (the kernel caps them at `rmem_max`/`wmem_max`
    /// unless we are root, which uses the FORCE variants).
    pub socket_buffer: usize,
    /// Packets read per source per wake-up.
    pub batch: usize,
}

impl ProxyDriverConfig {
    /// Defaults: 4 MiB socket buffers, batches of 64.
    pub fn new(proxy: ProxyConfig, host: HostSetup) -> Self {
        ProxyDriverConfig {
            proxy,
            host,
            socket_buffer: 4 << 20,
            batch: 64,
        }
    }
}

/// How an agent checks its service (SPEC.md §10.3; each driver runs it its own way, `health` has what
/// they share). Each check is given the agent's `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Passes when a TCP connection to `addr` opens.
    Tcp { addr: SocketAddr },
    /// Sends `payload` in a UDP datagram to `addr`. With `silence_passes` unset it passes on an answer
    /// (beginning with `expect`, if set); with it set (the port check: the service's port is open, as far
    /// as the host can tell) it fails only when the host refuses (ICMP port unreachable), and passes on
    /// an answer or on silence until the timeout.
    Udp {
        addr: SocketAddr,
        payload: Vec<u8>,
        expect: Option<Vec<u8>>,
        silence_passes: bool,
    },
    /// Passes when `GET path` (HTTP/1.0, `Host: host`) to `addr` draws a response with status `status`.
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
        status: u16,
    },
    /// Passes when `sh -c command` exits with status 0 (it is killed at the timeout).
    Command { command: String },
}

impl HealthCheck {
    /// The check's kind, for logs: `tcp`, `udp`, `udp-port`, `http` or `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            HealthCheck::Tcp { .. } => "tcp",
            HealthCheck::Udp {
                silence_passes: true, ..
            } => "udp-port",
            HealthCheck::Udp { .. } => "udp",
            HealthCheck::Http { .. } => "http",
            HealthCheck::Command { .. } => "command",
        }
    }
}

/// What an agent driver needs beyond the agent's configuration.
#[derive(Debug, Clone)]
pub struct AgentDriverConfig {
    pub agent: AgentConfig,
    /// Local address of the agent's socket; default: any address of the registration's family, any port.
    pub bind: Option<SocketAddr>,
    /// The service's health check (needs `agent.health`, the schedule).
    pub health: Option<HealthCheck>,
}

impl AgentDriverConfig {
    /// The socket's local address: `bind`, or the unspecified address of the registration's family.
    pub fn local_addr(&self) -> SocketAddr {
        self.bind
            .unwrap_or_else(|| unspecified(self.agent.registration.ip()))
    }
}

/// The unspecified address of `like`'s family, port 0.
pub fn unspecified(like: IpAddr) -> SocketAddr {
    match like {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// A driver's own counters (the core has its own, walked by `Proxy::for_each_counter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverCounters {
    pub tun_rx: u64,
    pub tun_tx: u64,
    pub overlay_rx: u64,
    pub overlay_tx: u64,
    pub tun_rx_errors: u64,
    pub tun_tx_errors: u64,
    pub overlay_rx_errors: u64,
    pub overlay_tx_errors: u64,
    /// Packets dropped because the TUN's queue was full (a send never waits: see [`proxy_loop`]).
    pub tun_tx_full: u64,
    /// Datagrams dropped because the overlay socket's send buffer was full.
    pub overlay_tx_full: u64,
    /// Wake-ups that read at least one packet.
    pub rx_batches: u64,
    pub timer_fires: u64,
}

impl DriverCounters {
    /// Walks the counters as `(name, value)`; names are Prometheus-ready (`driver_` prefix).
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (n, v) in [
            ("driver_tun_rx", self.tun_rx),
            ("driver_tun_tx", self.tun_tx),
            ("driver_overlay_rx", self.overlay_rx),
            ("driver_overlay_tx", self.overlay_tx),
            ("driver_tun_rx_errors", self.tun_rx_errors),
            ("driver_tun_tx_errors", self.tun_tx_errors),
            ("driver_overlay_rx_errors", self.overlay_rx_errors),
            ("driver_overlay_tx_errors", self.overlay_tx_errors),
            ("driver_tun_tx_full", self.tun_tx_full),
            ("driver_overlay_tx_full", self.overlay_tx_full),
            ("driver_rx_batches", self.rx_batches),
            ("driver_timer_fires", self.timer_fires),
            ("driver_control_refused", control::refused()),
        ] {
            f(n, v);
        }
    }
}

/// A driver's clock: the core's [`pias_state::Instant`] is microseconds since [`Clock::new`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// The wall-clock time (Unix milliseconds) of this clock's origin: what the core takes as
    /// `ProxyConfig::wall_origin_ms`, since it reads no clock itself (SPEC.md §8.2).
    pub fn wall_origin_ms(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(self.origin.elapsed());
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }

    /// The core's `now`.
    pub fn now(&self) -> pias_state::Instant {
        pias_state::Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The wall-clock instant of a core deadline; `None` (nothing scheduled) and far deadlines are capped
    /// [`IDLE_TIMER`] ahead, so a timer never overflows.
    pub fn deadline(&self, at: Option<pias_state::Instant>) -> std::time::Instant {
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

/// Wall-clock seconds since the Unix epoch: the incarnation SPEC.md §3 asks drivers to use.
pub fn wall_clock_incarnation() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32)
}

/// A stop signal's meaning to a loop: `true` (stop now) if one came before (`stopping`); otherwise it is
/// logged and the loop starts its graceful stop.
fn stop_now(stopping: bool, sig: &str) -> bool {
    if stopping {
        tracing::warn!(signal = sig, "second signal: stopping now");
    } else {
        tracing::info!(signal = sig, "signal");
    }
    stopping
}

/// A proxy's configuration for unit tests: proxy `id`, overlay address `10.0.0.<id>:6081`.
#[cfg(test)]
pub(crate) fn test_proxy_config(id: u8) -> ProxyConfig {
    ProxyConfig::new(
        pias_proto::ProxyId(id.into()),
        format!("10.0.0.{id}:6081").parse().unwrap(),
        pias_proto::auth::MasterKey::from_bytes([id; 32]),
        vec![format!("10.98.0.{id}").parse().unwrap()],
        vec!["10.99.0.250".parse().unwrap()],
    )
}

#[cfg(test)]
mod clock_tests {
    use super::Clock;

    #[test]
    fn wall_origin_plus_now_is_the_wall_clock() {
        let c = Clock::new();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let core = c.wall_origin_ms() + c.now().as_millis();
        assert!(core.abs_diff(wall) < 1000, "core {core} wall {wall}");
        assert!(
            c.wall_origin_ms() + 15 <= wall,
            "the origin is when the clock was made"
        );
    }
}
