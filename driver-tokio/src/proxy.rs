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
//! configured `drain_time` (the proxy floods Left, withdraws its anycast routes, answers its targets
//! Draining, keeps forwarding), then returns; a second signal returns at once. Returning drops the TUN: the
//! kernel deletes it and its remaining routes.

use core::pin::pin;
use std::io;

use pias_state::proxy::{HEADROOM, PacketBuf, Proxy, Verdict};
use pias_state::seal::Dest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use driver_common::events::log_proxy_event as log_event;
use driver_common::{
    Clock, DriverCounters, FastPath, FastPathSlot, HostSetup, MAX_PACKET, ProxyDriverConfig,
};

use crate::tun::{ReadyGuard, Tun};
use crate::{Signals, deadline};

/// A read-only look at the running proxy, run on the driver's task between wake-ups.
type Job = Box<dyn FnOnce(&Proxy, &DriverCounters, Option<&dyn FastPath>, pias_state::Instant) + Send>;

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
        let job: Job = Box::new(move |p, c, _, now| {
            let _ = tx.send(f(p, c, now));
        });
        self.tx.send(job).await.ok()?;
        rx.await.ok()
    }

    /// [`ProxyHandle::inspect`], with the fast path (if any) too.
    pub async fn inspect_with_fast_path<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Proxy, &DriverCounters, Option<&dyn FastPath>, pias_state::Instant) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |p, c, fast, now| {
            let _ = tx.send(f(p, c, fast, now));
        });
        self.tx.send(job).await.ok()?;
        rx.await.ok()
    }

    /// The Prometheus text of every counter, the fast path's included; `None` if the proxy stopped.
    pub async fn metrics(&self) -> Option<String> {
        self.inspect_with_fast_path(|p, c, fast, _| driver_common::metrics::render_with(p, c, fast))
            .await
    }
}

/// A bound proxy, ready to [`ProxyDriver::run`].
#[derive(Debug)]
pub struct ProxyDriver {
    core: Core,
    tun: Tun,
    overlay: UdpSocket,
    jobs: mpsc::Receiver<Job>,
    /// What `bind` installed; its anycast routes are withdrawn when the proxy starts leaving.
    host: HostSetup,
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
    /// The kernel fast path, if any (`driver = "xdp"`).
    fast: FastPathSlot,
}

impl ProxyDriver {
    /// Creates the TUN and its routes, binds the overlay socket, and starts the core. Call inside a tokio
    /// runtime, as root (or with `CAP_NET_ADMIN`).
    pub fn bind(cfg: ProxyDriverConfig) -> io::Result<(ProxyDriver, ProxyHandle)> {
        let tun = Tun::create(&cfg.host.tun)?;
        let mut host = cfg.host.clone();
        host.tun = tun.name().to_owned();
        host.apply()?;
        let overlay = UdpSocket::from_std(driver_common::overlay::bind(
            cfg.proxy.overlay_addr,
            cfg.socket_buffer,
        )?)?;
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
            fast: FastPathSlot::default(),
        };
        Ok((
            ProxyDriver {
                core,
                tun,
                overlay,
                jobs,
                host,
            },
            ProxyHandle { tx },
        ))
    }

    /// The TUN's name.
    pub fn tun_name(&self) -> &str {
        self.tun.name()
    }

    /// The core (e.g. to start a fast path from its state) and its current time.
    pub fn proxy(&self) -> (&Proxy, pias_state::Instant) {
        (&self.core.proxy, self.core.clock.now())
    }

    /// Installs a fast path: it sees every event, ticks about once a second, and joins the metrics.
    pub fn set_fast_path(&mut self, f: Box<dyn FastPath>) {
        let now = self.core.clock.now();
        self.core.fast.set(f, now);
    }

    /// Runs until the graceful stop after a signal has drained (or a second signal). Returns the final
    /// driver counters.
    pub async fn run(self, mut signals: Signals) -> io::Result<DriverCounters> {
        let ProxyDriver {
            mut core,
            tun,
            overlay,
            mut jobs,
            host,
        } = self;
        let mut timer = pin!(tokio::time::sleep_until(deadline(
            &core.clock,
            core.proxy.poll_timeout()
        )));
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
                    job(&core.proxy, &core.counters, core.fast.get(), core.clock.now());
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
                    // Blocking `ip` runs, once: the loop pauses for a few milliseconds.
                    let n = host.withdraw();
                    info!(routes = n, "anycast routes withdrawn");
                    stop_at = Some(now + drain);
                }
            }
            let now = core.clock.now();
            core.fast.poll_tick(&mut core.proxy, now);
            core.drain(now, &tun, &overlay).await;
            if stop_at.is_some_and(|t| now >= t) {
                info!("drained: stopping");
                return Ok(core.counters);
            }
            let next = match (core.proxy.poll_timeout(), stop_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = core.fast.earliest(next);
            timer.as_mut().reset(deadline(&core.clock, next));
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
            self.fast.on_event(&self.proxy, &ev, now);
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
