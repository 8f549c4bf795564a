//! The proxy on mio: [`MioProxy`] (the embeddable part: TUN + overlay socket + core) and
//! [`ProxyRunner`] (a complete loop around it: its own `Poll`, signals, metrics, control socket).
//!
//! # Embedding
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! # let cfg: driver_mio::ProxyDriverConfig = unimplemented!();
//! use driver_mio::{MioProxy, ProxyTokens, timeout_until};
//! use mio::{Events, Poll, Token};
//! let mut poll = Poll::new()?;
//! let mut pias = MioProxy::bind(cfg)?;
//! pias.register(poll.registry(), ProxyTokens { tun: Token(100), overlay: Token(101) })?;
//! let mut events = Events::with_capacity(256);
//! loop {
//!     let deadline = pias.next_deadline();
//!     poll.poll(&mut events, Some(timeout_until(deadline)))?;
//!     for ev in &events {
//!         if !pias.handle_ready(ev.token()) {
//!             // the host's own sources
//!         }
//!     }
//!     if std::time::Instant::now() >= deadline {
//!         pias.handle_timeout();
//!     }
//! }
//! # }
//! ```
//! `next_deadline` is *now* while a source still holds packets beyond the per-wake-up batch (mio is
//! edge-triggered: no new event would come for them), so the host comes straight back and
//! `handle_timeout` reads on — each source gets at most one batch per turn of the host's loop, and the host's
//! own work is never starved.
//!
//! # Per wake-up
//! What a wake-up does with the core is `driver_common::ProxyLoop`'s, shared with the tokio driver; what is
//! here is how mio waits; how the bytes move is `driver_common::batch`'s, also shared. The TUN: up to
//! `batch` packets, one `read` each into a slot at `HEADROOM`, handed to the core in place; host-bound
//! results are written back at once, overlay-bound ones gathered and sent with `sendmmsg` per chunk of 64
//! (same-size runs to one peer as one UDP GSO message). The overlay socket: `recvmmsg` of up to 64
//! messages per call (UDP GRO may coalesce several datagrams into one; they are split again), up to
//! `batch` per wake-up, likewise. Then the drain order of
//! `pias_state::proxy`: `poll_transmit` (sent one by one: control traffic), `poll_event` (logs), and the
//! next deadline from `poll_timeout`. A full socket or TUN queue drops the packet and counts it
//! (`driver_*_tx_full`): a UDP data path sheds load, it does not stall.

use core::net::SocketAddr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Instant as StdInstant;

use driver_common::batch::Batch;
use driver_common::{DriverCounters, FastPath, ProxyDriverConfig, ProxyLoop, Wire};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use pias_state::proxy::Proxy;
use tracing::info;

use crate::admin::Admin;
use crate::signals::Signals;
use crate::timeout_until;

/// The host's tokens for a proxy's two sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTokens {
    pub tun: Token,
    pub overlay: Token,
}

/// A proxy bound to its TUN and overlay socket, driven by a host's mio loop.
#[derive(Debug)]
pub struct MioProxy {
    core: ProxyLoop,
    io: MioIo,
    tokens: Option<ProxyTokens>,
    /// A source stopped at its batch bound with packets possibly left (edge-triggered: read on without an
    /// event).
    tun_more: bool,
    overlay_more: bool,
}

/// The TUN, the overlay socket and the batch buffers.
#[derive(Debug)]
struct MioIo {
    tun: OwnedFd,
    overlay: UdpSocket,
    /// The batch buffers (`driver_common::batch`, shared with the tokio driver).
    batch: Batch,
}

impl Wire for MioIo {
    fn send_host(&mut self, pkt: &[u8]) -> io::Result<usize> {
        driver_common::tun::send(self.tun.as_fd(), pkt, self.batch.vnet())
    }

    fn send_overlay(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.overlay.send_to(datagram, to)
    }
}

impl MioProxy {
    /// Creates the TUN and its routes, binds the overlay socket, and starts the core. As root (or with
    /// `CAP_NET_ADMIN`). Register the sources with [`MioProxy::register`] before polling.
    pub fn bind(cfg: ProxyDriverConfig) -> io::Result<MioProxy> {
        let (tun, tun_name, vnet) = driver_common::tun::open_offload(&cfg.host.tun)?;
        let mut host = cfg.host.clone();
        host.tun = tun_name;
        host.apply()?;
        let overlay = UdpSocket::from_std(driver_common::overlay::bind(
            cfg.proxy.overlay_addr,
            cfg.socket_buffer,
        )?);
        let core = ProxyLoop::new(&cfg, host, "mio")?;
        let batch = Batch::new(core.batch(), overlay.as_fd(), vnet);
        Ok(MioProxy {
            core,
            io: MioIo { tun, overlay, batch },
            tokens: None,
            tun_more: false,
            overlay_more: false,
        })
    }

    /// Registers the TUN and the overlay socket (readable) on `registry` under the host's tokens.
    pub fn register(&mut self, registry: &Registry, tokens: ProxyTokens) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.io.tun.as_raw_fd()),
            tokens.tun,
            Interest::READABLE,
        )?;
        registry.register(&mut self.io.overlay, tokens.overlay, Interest::READABLE)?;
        self.tokens = Some(tokens);
        // Packets may have queued before registration; the first edge could be gone.
        self.tun_more = true;
        self.overlay_more = true;
        Ok(())
    }

    /// Removes both sources from `registry`.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut SourceFd(&self.io.tun.as_raw_fd()))?;
        registry.deregister(&mut self.io.overlay)?;
        self.tokens = None;
        Ok(())
    }

    /// Handles a readiness event; `false` if `token` is not one of the proxy's (the host's own).
    pub fn handle_ready(&mut self, token: Token) -> bool {
        let Some(t) = self.tokens else { return false };
        if token == t.tun {
            self.tun_more = self.io.tun_batch(&mut self.core);
        } else if token == t.overlay {
            self.overlay_more = self.io.overlay_batch(&mut self.core);
        } else {
            return false;
        }
        self.core.drain(&mut self.io);
        true
    }

    /// When the host must call [`MioProxy::handle_timeout`] next: the core's next timer (the graceful
    /// stop's end included), or now while a source has packets left beyond its batch. Take it before
    /// polling and compare the clock with *that* value after (a value taken later may have moved on).
    pub fn next_deadline(&self) -> StdInstant {
        if self.tun_more || self.overlay_more {
            return StdInstant::now();
        }
        self.core.deadline()
    }

    /// Installs a fast path: it sees every event, ticks about once a second, and joins the metrics.
    pub fn set_fast_path(&mut self, f: Box<dyn FastPath>) {
        self.core.set_fast_path(f);
    }

    /// The fast path, if any.
    pub fn fast_path(&self) -> Option<&dyn FastPath> {
        self.core.fast_path()
    }

    /// Runs the core's timers if due, and reads on from sources left with packets. Harmless when early.
    pub fn handle_timeout(&mut self) {
        self.core.handle_timeout();
        if self.tun_more {
            self.tun_more = self.io.tun_batch(&mut self.core);
        }
        if self.overlay_more {
            self.overlay_more = self.io.overlay_batch(&mut self.core);
        }
        self.core.drain(&mut self.io);
    }

    /// Starts a graceful stop (SPEC.md §7.6): the proxy leaves the overlay, its anycast routes are deleted
    /// (blocking `ip` runs, a few milliseconds), and it keeps forwarding for its `drain_time`, after which
    /// [`MioProxy::is_drained`] is true.
    pub fn leave(&mut self) {
        self.core.leave();
        self.core.drain(&mut self.io);
    }

    /// A stop signal: the first starts the graceful stop ([`MioProxy::leave`]), a second means stop now
    /// (`true`).
    pub fn on_signal(&mut self, sig: &str) -> bool {
        let now = self.core.on_signal(sig);
        self.core.drain(&mut self.io);
        now
    }

    /// Whether a graceful stop has drained (the host may now drop the proxy: the TUN and its routes go).
    pub fn is_drained(&self) -> bool {
        self.core.is_drained()
    }

    /// The core, for inspection.
    pub fn proxy(&self) -> &Proxy {
        self.core.proxy()
    }

    /// The loop body: the core, the driver's counters and the fast path, and what the metrics endpoint
    /// and the control socket answer.
    pub fn core(&self) -> &ProxyLoop {
        &self.core
    }

    /// The loop body, for the control socket's one changing request (`announce off|on|auto`), which
    /// applies its result to the routes itself.
    pub fn core_mut(&mut self) -> &mut ProxyLoop {
        &mut self.core
    }

    /// The driver's counters.
    pub fn counters(&self) -> &DriverCounters {
        self.core.counters()
    }

    /// The core's current time.
    pub fn now(&self) -> pias_state::Instant {
        self.core.now()
    }

    /// The TUN's name.
    pub fn tun_name(&self) -> &str {
        self.core.tun_name()
    }
}

impl MioIo {
    /// Up to `batch` packets from the TUN; whether packets may be left.
    fn tun_batch(&mut self, core: &mut ProxyLoop) -> bool {
        let tun = self.tun.as_fd();
        self.batch.tun(core, tun, self.overlay.as_fd(), |b| {
            driver_common::tun::read(tun, b)
        })
    }

    /// Up to `batch` datagrams from the overlay socket, `recvmmsg` per chunk; whether datagrams may be
    /// left.
    fn overlay_batch(&mut self, core: &mut ProxyLoop) -> bool {
        self.batch
            .overlay(core, self.tun.as_fd(), self.overlay.as_fd(), |recv| recv())
    }
}

const TUN: Token = Token(0);
const OVERLAY: Token = Token(1);
const SIGNALS: Token = Token(2);

/// A proxy with a loop of its own: one `Poll` for the TUN, the overlay socket, SIGINT/SIGTERM, and
/// optionally the Prometheus endpoint and the control socket (both served in the same thread, between
/// packet batches).
#[derive(Debug)]
pub struct ProxyRunner {
    proxy: MioProxy,
    admin: Admin,
}

impl ProxyRunner {
    /// Binds the proxy (see [`MioProxy::bind`]).
    pub fn bind(cfg: ProxyDriverConfig) -> io::Result<ProxyRunner> {
        Ok(ProxyRunner {
            proxy: MioProxy::bind(cfg)?,
            admin: Admin::default(),
        })
    }

    /// Serves `GET /metrics` on `l`.
    pub fn metrics(&mut self, l: std::net::TcpListener) -> io::Result<()> {
        self.admin.set_metrics(l)
    }

    /// Serves the control protocol on `l`.
    pub fn control(&mut self, l: UnixListener, access: driver_common::control::Access) -> io::Result<()> {
        self.admin.set_control(l, access)
    }

    /// The proxy.
    pub fn proxy(&self) -> &MioProxy {
        &self.proxy
    }

    /// The proxy, to install a fast path ([`MioProxy::set_fast_path`]).
    pub fn proxy_mut(&mut self) -> &mut MioProxy {
        &mut self.proxy
    }

    /// Runs until the graceful stop after a signal has drained (or a second signal). `signals` must have
    /// been created on this thread. Returns the final driver counters.
    pub fn run(self, mut signals: Signals) -> io::Result<DriverCounters> {
        let ProxyRunner { mut proxy, mut admin } = self;
        let mut poll = Poll::new()?;
        proxy.register(
            poll.registry(),
            ProxyTokens {
                tun: TUN,
                overlay: OVERLAY,
            },
        )?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        admin.register(poll.registry())?;
        let mut events = Events::with_capacity(256);
        loop {
            let proxy_deadline = proxy.next_deadline();
            let deadline = proxy_deadline.min(admin.next_deadline());
            match poll.poll(&mut events, Some(timeout_until(deadline))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in &events {
                let t = ev.token();
                if proxy.handle_ready(t) {
                    continue;
                }
                if t == SIGNALS {
                    while let Some(sig) = signals.recv() {
                        if proxy.on_signal(sig) {
                            return Ok(*proxy.counters());
                        }
                    }
                } else {
                    admin.handle_ready(poll.registry(), t, proxy.core_mut());
                }
            }
            let now = StdInstant::now();
            if now >= proxy_deadline {
                proxy.handle_timeout();
            }
            admin.handle_timeout(poll.registry(), now);
            if proxy.is_drained() {
                info!("drained: stopping");
                return Ok(*proxy.counters());
            }
        }
    }
}
