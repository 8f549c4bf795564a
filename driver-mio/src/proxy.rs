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
//! The TUN: up to `batch` packets, one `read` each into a slot at `HEADROOM`, handed to the core in place;
//! host-bound results are written back at once, overlay-bound ones gathered and sent with `sendmmsg` per
//! chunk of 64. The overlay socket: `recvmmsg` of up to 64 datagrams per call, up to `batch` per wake-up,
//! likewise. Then the drain order of `pias_state::proxy`: `poll_transmit` (sent one by one: control
//! traffic), `poll_event` (logs), and the next deadline from `poll_timeout`. A full socket or TUN queue
//! drops the packet and counts it (`driver_*_tx_errors`): a UDP data path sheds load, it does not stall.

use core::net::SocketAddr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Instant as StdInstant;

use driver_common::events::log_proxy_event;
use driver_common::{
    Clock, DriverCounters, FastPath, FastPathSlot, HostSetup, MAX_PACKET, ProxyDriverConfig,
};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use pias_state::proxy::{HEADROOM, PacketBuf, Proxy, Verdict};
use pias_state::seal::Dest;
use tracing::{debug, info, warn};

use crate::admin::Admin;
use crate::mmsg::{self, CHUNK, Out};
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
    proxy: Proxy,
    clock: Clock,
    counters: DriverCounters,
    tun: OwnedFd,
    overlay: UdpSocket,
    tokens: Option<ProxyTokens>,
    batch: usize,
    /// Receive slots: packets are read at `HEADROOM`, handled and forwarded in place.
    slots: Vec<Vec<u8>>,
    /// Lengths and senders of the last `recvmmsg`.
    got: Vec<(usize, SocketAddr)>,
    /// Overlay-bound datagrams of the current chunk.
    outs: Vec<Out>,
    /// Transmit buffer for `poll_transmit`.
    tx: Vec<u8>,
    /// A source stopped at its batch bound with packets possibly left (edge-triggered: read on without an
    /// event).
    tun_more: bool,
    overlay_more: bool,
    /// The graceful stop's end, after [`MioProxy::leave`].
    stop_at: Option<pias_state::Instant>,
    /// The kernel fast path, if any (`driver = "xdp"`).
    fast: FastPathSlot,
    /// What `bind` installed; its anycast routes are withdrawn by [`MioProxy::leave`].
    host: HostSetup,
}

impl MioProxy {
    /// Creates the TUN and its routes, binds the overlay socket, and starts the core. As root (or with
    /// `CAP_NET_ADMIN`). Register the sources with [`MioProxy::register`] before polling.
    pub fn bind(cfg: ProxyDriverConfig) -> io::Result<MioProxy> {
        let (tun, tun_name) = driver_common::tun::open(&cfg.host.tun)?;
        let mut host = cfg.host.clone();
        host.tun = tun_name.clone();
        host.apply()?;
        let overlay = UdpSocket::from_std(driver_common::overlay::bind(
            cfg.proxy.overlay_addr,
            cfg.socket_buffer,
        )?);
        let clock = Clock::new();
        let proxy = Proxy::new(cfg.proxy.clone(), clock.now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        info!(
            id = %proxy.id(),
            overlay = %cfg.proxy.overlay_addr,
            tun = %tun_name,
            incarnation = cfg.proxy.incarnation,
            driver = "mio",
            "proxy started"
        );
        let batch = cfg.batch.max(1);
        let nslots = batch.min(CHUNK);
        Ok(MioProxy {
            proxy,
            clock,
            counters: DriverCounters::default(),
            tun,
            overlay,
            tokens: None,
            batch,
            host,
            slots: (0..nslots).map(|_| vec![0u8; HEADROOM + MAX_PACKET]).collect(),
            got: vec![(0, SocketAddr::from(([0, 0, 0, 0], 0))); nslots],
            outs: Vec::with_capacity(nslots),
            tx: vec![0; MAX_PACKET],
            tun_more: false,
            overlay_more: false,
            stop_at: None,
            fast: FastPathSlot::default(),
        })
    }

    /// Registers the TUN and the overlay socket (readable) on `registry` under the host's tokens.
    pub fn register(&mut self, registry: &Registry, tokens: ProxyTokens) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.tun.as_raw_fd()),
            tokens.tun,
            Interest::READABLE,
        )?;
        registry.register(&mut self.overlay, tokens.overlay, Interest::READABLE)?;
        self.tokens = Some(tokens);
        // Packets may have queued before registration; the first edge could be gone.
        self.tun_more = true;
        self.overlay_more = true;
        Ok(())
    }

    /// Removes both sources from `registry`.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut SourceFd(&self.tun.as_raw_fd()))?;
        registry.deregister(&mut self.overlay)?;
        self.tokens = None;
        Ok(())
    }

    /// Handles a readiness event; `false` if `token` is not one of the proxy's (the host's own).
    pub fn handle_ready(&mut self, token: Token) -> bool {
        let Some(t) = self.tokens else { return false };
        if token == t.tun {
            self.tun_batch();
        } else if token == t.overlay {
            self.overlay_batch();
        } else {
            return false;
        }
        self.drain();
        true
    }

    /// When the host must call [`MioProxy::handle_timeout`] next: the core's next timer (or the graceful
    /// stop's end), or now while a source has packets left beyond its batch. Take it before polling and
    /// compare the clock with *that* value after (a value taken later may have moved on).
    pub fn next_deadline(&self) -> StdInstant {
        if self.tun_more || self.overlay_more {
            return StdInstant::now();
        }
        self.clock.deadline(self.core_deadline())
    }

    fn core_deadline(&self) -> Option<pias_state::Instant> {
        let d = match (self.proxy.poll_timeout(), self.stop_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.fast.earliest(d)
    }

    /// Installs a fast path: it sees every event, ticks about once a second, and joins the metrics.
    pub fn set_fast_path(&mut self, f: Box<dyn FastPath>) {
        let now = self.clock.now();
        self.fast.set(f, now);
    }

    /// The fast path, if any.
    pub fn fast_path(&self) -> Option<&dyn FastPath> {
        self.fast.get()
    }

    /// Runs the core's timers if due, and reads on from sources left with packets. Harmless when early.
    pub fn handle_timeout(&mut self) {
        let now = self.clock.now();
        if self.proxy.poll_timeout().is_some_and(|t| t <= now) {
            self.counters.timer_fires += 1;
            self.proxy.handle_timeout(now);
        }
        self.fast.poll_tick(&mut self.proxy, now);
        if self.tun_more {
            self.tun_batch();
        }
        if self.overlay_more {
            self.overlay_batch();
        }
        self.drain();
    }

    /// Starts a graceful stop (SPEC.md §7.6): the proxy leaves the overlay, its anycast routes are deleted
    /// (blocking `ip` runs, a few milliseconds), and it keeps forwarding for its `drain_time`, after which
    /// [`MioProxy::is_drained`] is true.
    pub fn leave(&mut self) {
        let now = self.clock.now();
        let drain = self.proxy.config().membership.drain_time;
        info!(drain_ms = drain.as_millis() as u64, "leaving the overlay");
        self.proxy.leave(now);
        let n = self.host.withdraw();
        info!(routes = n, "anycast routes withdrawn");
        self.stop_at = Some(now + drain);
        self.drain();
    }

    /// Whether a graceful stop has drained (the host may now drop the proxy: the TUN and its routes go).
    pub fn is_drained(&self) -> bool {
        self.stop_at.is_some_and(|t| self.clock.now() >= t)
    }

    /// The core, for inspection (control answers, metrics).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The driver's counters.
    pub fn counters(&self) -> &DriverCounters {
        &self.counters
    }

    /// The core's current time.
    pub fn now(&self) -> pias_state::Instant {
        self.clock.now()
    }

    /// The TUN's name.
    pub fn tun_name(&self) -> &str {
        &self.host.tun
    }

    /// Up to `batch` packets from the TUN.
    fn tun_batch(&mut self) {
        let now = self.clock.now();
        let mut left = self.batch;
        self.tun_more = false;
        let mut any = false;
        'outer: while left > 0 {
            let step = left.min(self.slots.len());
            self.outs.clear();
            let mut read = 0;
            while read < step {
                let slot = read;
                let n = match driver_common::tun::read(self.tun.as_fd(), &mut self.slots[slot][HEADROOM..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.flush_outs();
                        break 'outer;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // A persistent error must not spin the loop: stop this batch, wait for an event.
                        self.counters.tun_rx_errors += 1;
                        debug!(error = %e, "TUN read failed");
                        self.flush_outs();
                        break 'outer;
                    }
                };
                read += 1;
                any = true;
                self.counters.tun_rx += 1;
                let buf = &mut self.slots[slot];
                let mut pb = PacketBuf::new(buf, HEADROOM, HEADROOM + n);
                let v = self.proxy.handle_host(now, &mut pb);
                let r = pb.range();
                self.route(v, slot, r.start, r.end);
            }
            self.flush_outs();
            left -= read;
            if left == 0 {
                self.tun_more = true;
            }
        }
        if any {
            self.counters.rx_batches += 1;
        }
    }

    /// Up to `batch` datagrams from the overlay socket, `recvmmsg` per chunk.
    fn overlay_batch(&mut self) {
        let now = self.clock.now();
        let mut left = self.batch;
        self.overlay_more = false;
        let mut any = false;
        let fd = self.overlay.as_raw_fd();
        while left > 0 {
            let want = left.min(self.slots.len());
            let n = match mmsg::recv(fd, &mut self.slots[..want], HEADROOM, &mut self.got) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (e.g. port unreachable from a dead peer); not fatal. Each
                    // takes a place in the batch, so a stream of errors cannot spin the loop.
                    self.counters.overlay_rx_errors += 1;
                    debug!(error = %e, "overlay receive error");
                    left -= 1;
                    if left == 0 {
                        self.overlay_more = true;
                    }
                    continue;
                }
            };
            any = true;
            self.outs.clear();
            for slot in 0..n {
                let (len, from) = self.got[slot];
                self.counters.overlay_rx += 1;
                let buf = &mut self.slots[slot];
                let mut pb = PacketBuf::new(buf, HEADROOM, HEADROOM + len);
                let v = self.proxy.handle_overlay(now, from, &mut pb);
                let r = pb.range();
                self.route(v, slot, r.start, r.end);
            }
            self.flush_outs();
            left -= n;
            if n < want {
                // The queue was empty before the chunk filled: a later datagram brings a new edge.
                break;
            }
            if left == 0 {
                self.overlay_more = true;
            }
        }
        if any {
            self.counters.rx_batches += 1;
        }
    }

    /// Where slot `slot`'s bytes `start..end` go: the TUN at once, the overlay with the chunk.
    fn route(&mut self, v: Verdict, slot: usize, start: usize, end: usize) {
        match v {
            Verdict::Host => {
                let bytes = &self.slots[slot][start..end];
                tun_write(&self.tun, bytes, &mut self.counters);
            }
            Verdict::Overlay(to) => self.outs.push(Out { slot, start, end, to }),
            Verdict::Consumed | Verdict::Drop(_) => {}
        }
    }

    fn flush_outs(&mut self) {
        if self.outs.is_empty() {
            return;
        }
        let (sent, failed) = mmsg::send(self.overlay.as_raw_fd(), &self.slots, &self.outs);
        self.counters.overlay_tx += sent as u64;
        self.counters.overlay_tx_errors += failed as u64;
        self.outs.clear();
    }

    /// Sends everything the core queued, then logs its events.
    fn drain(&mut self) {
        let now = self.clock.now();
        while let Some(t) = self.proxy.poll_transmit(now, &mut self.tx) {
            let bytes = &self.tx[..t.len];
            match t.dest {
                Dest::Host => tun_write(&self.tun, bytes, &mut self.counters),
                Dest::Overlay(to) => match self.overlay.send_to(bytes, to) {
                    Ok(_) => self.counters.overlay_tx += 1,
                    Err(e) => {
                        self.counters.overlay_tx_errors += 1;
                        debug!(error = %e, %to, "overlay send failed");
                    }
                },
            }
        }
        while let Some(ev) = self.proxy.poll_event() {
            log_proxy_event(&ev);
            self.fast.on_event(&self.proxy, &ev, now);
        }
    }
}

fn tun_write(tun: &OwnedFd, bytes: &[u8], c: &mut DriverCounters) {
    match driver_common::tun::write(tun.as_fd(), bytes) {
        Ok(_) => c.tun_tx += 1,
        Err(e) => {
            c.tun_tx_errors += 1;
            debug!(error = %e, len = bytes.len(), "TUN write failed");
        }
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
    pub fn control(&mut self, l: UnixListener) -> io::Result<()> {
        self.admin.set_control(l)
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
        let mut stopping = false;
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
                        if stopping {
                            warn!(signal = sig, "second signal: stopping now");
                            return Ok(*proxy.counters());
                        }
                        info!(signal = sig, "signal");
                        stopping = true;
                        proxy.leave();
                    }
                } else {
                    admin.handle_ready(poll.registry(), t, &proxy);
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
