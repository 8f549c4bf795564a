//! The proxy loop: one task, one TUN, one overlay socket, one timer.
//!
//! Every wake-up is one of: the TUN is readable, the overlay socket is readable, the timer fired, a signal
//! arrived, or a [`ProxyHandle`] asked to look at the state. Reads are batched: up to `batch` packets per
//! wake-up from a source, each read into the same buffer at offset [`HEADROOM`], handed to the core in
//! place, and forwarded from the same bytes as the `Verdict` says — no allocation per packet. After each
//! wake-up the driver drains `poll_transmit` (into one reused buffer), then `poll_event` (logs), then
//! re-arms the timer on `poll_timeout`. The core's queues are bounded and a batch adds at most a few entries
//! per packet, so draining once per batch rather than once per packet loses nothing.
//!
//! Graceful stop: the first SIGINT/SIGTERM calls `Proxy::leave` and the loop keeps running for the
//! configured `drain_time` (the proxy floods Left, redirects its targets, keeps forwarding), then returns; a
//! second signal returns at once. Returning drops the TUN: the kernel deletes it and its routes.

use core::net::SocketAddr;
use core::pin::pin;
use std::io;

use pias_state::proxy::{Event, HEADROOM, PacketBuf, Proxy, ProxyConfig, Verdict};
use pias_state::seal::Dest;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::host::HostSetup;
use crate::tun::{ReadyGuard, Tun};
use crate::{Clock, Signals};

/// Largest packet or datagram the driver reads (an IP datagram's maximum).
const MAX_PACKET: usize = 65_535;

/// What the proxy driver needs beyond the core's configuration.
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

/// The driver's own counters (the core has its own, walked by `Proxy::for_each_counter`).
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
            ("driver_rx_batches", self.rx_batches),
            ("driver_timer_fires", self.timer_fires),
        ] {
            f(n, v);
        }
    }
}

/// A read-only look at the running proxy, run on the driver's task between wake-ups.
type Job = Box<dyn FnOnce(&Proxy, &DriverCounters, pias_state::Instant) + Send>;

/// A handle to a running proxy: control sockets and metrics endpoints read its state through it.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    tx: mpsc::Sender<Job>,
}

impl ProxyHandle {
    /// Runs `f` on the proxy's task with the proxy, the driver's counters and the core's current time;
    /// `None` if the proxy stopped.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Proxy, &DriverCounters, pias_state::Instant) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |p, c, now| {
            let _ = tx.send(f(p, c, now));
        });
        self.tx.send(job).await.ok()?;
        rx.await.ok()
    }
}

/// A bound proxy, ready to [`ProxyDriver::run`].
#[derive(Debug)]
pub struct ProxyDriver {
    core: Core,
    tun: Tun,
    overlay: UdpSocket,
    jobs: mpsc::Receiver<Job>,
}

/// The parts of the driver a wake-up mutates.
#[derive(Debug)]
struct Core {
    proxy: Proxy,
    clock: Clock,
    counters: DriverCounters,
    batch: usize,
    /// Receive buffer: packets are read at `HEADROOM`.
    rx: Vec<u8>,
    /// Transmit buffer for `poll_transmit`.
    tx: Vec<u8>,
}

impl ProxyDriver {
    /// Creates the TUN and its routes, binds the overlay socket, and starts the core. Call inside a tokio
    /// runtime, as root (or with `CAP_NET_ADMIN`).
    pub fn bind(cfg: ProxyDriverConfig) -> io::Result<(ProxyDriver, ProxyHandle)> {
        let tun = Tun::create(&cfg.host.tun)?;
        let mut host = cfg.host.clone();
        host.tun = tun.name().to_owned();
        host.apply()?;
        let overlay = bind_overlay(cfg.proxy.overlay_addr, cfg.socket_buffer)?;
        let clock = Clock::new();
        let proxy = Proxy::new(cfg.proxy.clone(), clock.now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        info!(
            id = %proxy.id(),
            overlay = %cfg.proxy.overlay_addr,
            tun = %tun.name(),
            incarnation = cfg.proxy.incarnation,
            "proxy started"
        );
        let (tx, jobs) = mpsc::channel(64);
        let core = Core {
            proxy,
            clock,
            counters: DriverCounters::default(),
            batch: cfg.batch.max(1),
            rx: vec![0; HEADROOM + MAX_PACKET],
            tx: vec![0; MAX_PACKET],
        };
        Ok((
            ProxyDriver {
                core,
                tun,
                overlay,
                jobs,
            },
            ProxyHandle { tx },
        ))
    }

    /// The TUN's name.
    pub fn tun_name(&self) -> &str {
        self.tun.name()
    }

    /// Runs until the graceful stop after a signal has drained (or a second signal). Returns the final
    /// driver counters.
    pub async fn run(self, mut signals: Signals) -> io::Result<DriverCounters> {
        let ProxyDriver {
            mut core,
            tun,
            overlay,
            mut jobs,
        } = self;
        let mut timer = pin!(tokio::time::sleep_until(
            core.clock.deadline(core.proxy.poll_timeout())
        ));
        let mut stop_at: Option<pias_state::Instant> = None;
        loop {
            tokio::select! {
                r = tun.readable() => {
                    let mut guard = r?;
                    core.host_batch(&mut guard, &tun, &overlay).await;
                }
                r = overlay.readable() => {
                    r?;
                    core.overlay_batch(&tun, &overlay).await;
                }
                () = &mut timer => {
                    core.counters.timer_fires += 1;
                    let now = core.clock.now();
                    core.proxy.handle_timeout(now);
                }
                Some(job) = jobs.recv() => {
                    job(&core.proxy, &core.counters, core.clock.now());
                }
                sig = signals.recv() => {
                    if stop_at.is_some() {
                        warn!(signal = sig, "second signal: stopping now");
                        return Ok(core.counters);
                    }
                    let now = core.clock.now();
                    let drain = core.proxy.config().membership.drain_time;
                    info!(signal = sig, drain_ms = drain.as_millis() as u64, "leaving the overlay");
                    core.proxy.leave(now);
                    stop_at = Some(now + drain);
                }
            }
            let now = core.clock.now();
            core.drain(now, &tun, &overlay).await;
            if stop_at.is_some_and(|t| now >= t) {
                info!("drained: stopping");
                return Ok(core.counters);
            }
            let next = match (core.proxy.poll_timeout(), stop_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            timer.as_mut().reset(core.clock.deadline(next));
        }
    }
}

impl Core {
    /// Reads up to `batch` packets from the TUN and forwards each as the core decides.
    async fn host_batch(&mut self, guard: &mut ReadyGuard<'_>, tun: &Tun, udp: &UdpSocket) {
        let now = self.clock.now();
        let mut got = 0;
        while got < self.batch {
            let n = match guard.recv(&mut self.rx[HEADROOM..]) {
                None => break,
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    self.counters.tun_rx_errors += 1;
                    debug!(error = %e, "TUN read failed");
                    guard.clear();
                    break;
                }
            };
            got += 1;
            self.counters.tun_rx += 1;
            let mut pb = PacketBuf::new(&mut self.rx, HEADROOM, HEADROOM + n);
            let v = self.proxy.handle_host(now, &mut pb);
            let range = pb.range();
            forward(v, &self.rx[range], tun, udp, &mut self.counters).await;
        }
        if got > 0 {
            self.counters.rx_batches += 1;
        }
    }

    /// Reads up to `batch` datagrams from the overlay socket and forwards each as the core decides.
    async fn overlay_batch(&mut self, tun: &Tun, udp: &UdpSocket) {
        let now = self.clock.now();
        let mut got = 0;
        while got < self.batch {
            let (n, from) = match udp.try_recv_from(&mut self.rx[HEADROOM..]) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here (e.g. port unreachable from a dead peer); not fatal. Each
                    // takes a place in the batch, so a stream of errors cannot spin the loop.
                    self.counters.overlay_rx_errors += 1;
                    debug!(error = %e, "overlay receive error");
                    got += 1;
                    continue;
                }
            };
            got += 1;
            self.counters.overlay_rx += 1;
            let mut pb = PacketBuf::new(&mut self.rx, HEADROOM, HEADROOM + n);
            let v = self.proxy.handle_overlay(now, from, &mut pb);
            let range = pb.range();
            forward(v, &self.rx[range], tun, udp, &mut self.counters).await;
        }
        if got > 0 {
            self.counters.rx_batches += 1;
        }
    }

    /// Sends everything the core queued, then logs its events.
    async fn drain(&mut self, now: pias_state::Instant, tun: &Tun, udp: &UdpSocket) {
        while let Some(t) = self.proxy.poll_transmit(now, &mut self.tx) {
            let v = match t.dest {
                Dest::Overlay(a) => Verdict::Overlay(a),
                Dest::Host => Verdict::Host,
            };
            forward(v, &self.tx[..t.len], tun, udp, &mut self.counters).await;
        }
        while let Some(ev) = self.proxy.poll_event() {
            log_event(&ev);
        }
    }
}

/// Sends `bytes` where the verdict says.
async fn forward(v: Verdict, bytes: &[u8], tun: &Tun, udp: &UdpSocket, c: &mut DriverCounters) {
    match v {
        Verdict::Host => match tun.send(bytes).await {
            Ok(_) => c.tun_tx += 1,
            Err(e) => {
                c.tun_tx_errors += 1;
                debug!(error = %e, len = bytes.len(), "TUN write failed");
            }
        },
        Verdict::Overlay(to) => {
            let r = match udp.try_send_to(bytes, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => udp.send_to(bytes, to).await,
                r => r,
            };
            match r {
                Ok(_) => c.overlay_tx += 1,
                Err(e) => {
                    c.overlay_tx_errors += 1;
                    debug!(error = %e, %to, "overlay send failed");
                }
            }
        }
        Verdict::Consumed | Verdict::Drop(_) => {}
    }
}

/// The core's events as logs (member and target news at info, table changes at debug).
fn log_event(ev: &Event) {
    match *ev {
        Event::MemberUp { id, addr } => info!(member = %id, %addr, "member up"),
        Event::MemberSuspect { id } => warn!(member = %id, "member suspect"),
        Event::MemberDown { id } => warn!(member = %id, "member down or left"),
        Event::TargetUp { group, service } => info!(%group, %service, "target registered"),
        Event::TargetDown { group, service } => info!(%group, %service, "target gone"),
        Event::CacheInstalled { group } => debug!(%group, "IAP cache entry installed"),
        Event::CacheRemoved { group } => debug!(%group, "IAP cache entry removed"),
        Event::Nat(n) => debug!(event = ?n, "NAT"),
    }
}

/// The overlay socket: bound to the proxy's overlay address, with large buffers and address reuse (a
/// restarted proxy binds again at once).
fn bind_overlay(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if buffer > 0 {
        // As root, the FORCE options ignore net.core.{r,w}mem_max; otherwise fall back to the capped ones.
        if set_buffer_force(&s, libc::SO_RCVBUFFORCE, buffer).is_err() {
            s.set_recv_buffer_size(buffer)?;
        }
        if set_buffer_force(&s, libc::SO_SNDBUFFORCE, buffer).is_err() {
            s.set_send_buffer_size(buffer)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("bind overlay socket {addr}: {e} (is the address configured on this host?)"),
        )
    })?;
    UdpSocket::from_std(s.into())
}

/// `setsockopt(SOL_SOCKET, opt, size)` for the FORCE buffer options socket2 does not wrap.
fn set_buffer_force(s: &Socket, opt: libc::c_int, size: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: `v` is a live c_int and the length passed is its size; the descriptor is open.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
