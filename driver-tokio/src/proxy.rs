//! The proxy on tokio: one task, one TUN, one overlay socket, one timer.
//!
//! Every wake-up is one of: the TUN is readable, the overlay socket is readable, the timer fired, a signal
//! arrived, or a [`ProxyHandle`] asked to look at the state (the metrics endpoint and the control socket,
//! [`crate::admin`]). What a wake-up does with the core is `driver_common::ProxyLoop`'s, shared with the
//! mio driver, and so is how bytes move (`driver_common::batch`): reads are batched (up to `batch` packets
//! per source per wake-up, read into slots at offset `HEADROOM`, handled in place, forwarded from the same
//! bytes; the overlay socket with `recvmmsg`/`sendmmsg` through tokio's readiness, UDP GRO and GSO when
//! the kernel has them), then the core's queues are drained and the timer re-armed. Sends never wait: a full TUN queue or socket buffer drops the
//! packet and counts it.
//!
//! Graceful stop: the first SIGINT/SIGTERM starts the leave (SPEC.md §7.6) and the loop keeps running until
//! the core says it has drained (`drain_time`); a second signal returns at once. Returning drops the TUN:
//! the kernel deletes it and its remaining routes.

use core::net::SocketAddr;
use core::pin::pin;
use std::io;
use std::os::fd::AsFd;

use pias_state::proxy::Proxy;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use driver_common::batch::Batch;
use driver_common::{DriverCounters, FastPath, ProxyDriverConfig, ProxyLoop, Wire};

use crate::tun::{ReadyGuard, Tun};
use crate::{Signals, deadline};

/// A look at the running proxy (or an operator's change: `announce off|on|auto`), run on the driver's task
/// between wake-ups; the loop drains after it.
type Job = Box<dyn FnOnce(&mut ProxyLoop) + Send>;

/// A handle to a running proxy: the metrics endpoint and the control socket read its state through it.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    tx: mpsc::Sender<Job>,
}

impl ProxyHandle {
    /// Runs `f` on the proxy's task with its loop (the proxy, the driver's counters, the fast path);
    /// `None` if the proxy stopped.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ProxyLoop) -> R + Send + 'static,
    ) -> Option<R> {
        self.run(move |l: &mut ProxyLoop| f(l)).await
    }

    /// Runs `f` on the proxy's task with its loop, which it may change; `None` if the proxy stopped.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ProxyLoop) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |l| {
            let _ = tx.send(f(l));
        });
        self.tx.send(job).await.ok()?;
        rx.await.ok()
    }

    /// The Prometheus text of every counter, the fast path's included; `None` if the proxy stopped.
    pub async fn metrics(&self) -> Option<String> {
        self.inspect(ProxyLoop::metrics).await
    }

    /// The control socket's answer to one request line (which may change the announcement, SPEC.md §7.7);
    /// `None` if the proxy stopped.
    pub async fn answer(&self, line: String) -> Option<String> {
        self.run(move |l| l.answer(&line)).await
    }
}

/// A bound proxy, ready to [`ProxyDriver::run`].
#[derive(Debug)]
pub struct ProxyDriver {
    core: ProxyLoop,
    tun: Tun,
    overlay: UdpSocket,
    jobs: mpsc::Receiver<Job>,
}

/// The TUN and the overlay socket, sending without waiting.
struct TokioWire<'a> {
    tun: &'a Tun,
    overlay: &'a UdpSocket,
}

impl Wire for TokioWire<'_> {
    fn send_host(&mut self, pkt: &[u8]) -> io::Result<usize> {
        self.tun.try_send(pkt)
    }

    fn send_overlay(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        driver_common::overlay::send_to(self.overlay.as_fd(), datagram, to)
    }
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
        let core = ProxyLoop::new(&cfg, host, "tokio")?;
        let (tx, jobs) = mpsc::channel(64);
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

    /// The core (e.g. to start a fast path from its state) and its current time.
    pub fn proxy(&self) -> (&Proxy, pias_state::Instant) {
        (self.core.proxy(), self.core.now())
    }

    /// Installs a fast path: it sees every event, ticks about once a second, and joins the metrics.
    pub fn set_fast_path(&mut self, f: Box<dyn FastPath>) {
        self.core.set_fast_path(f);
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
        let mut wire = TokioWire {
            tun: &tun,
            overlay: &overlay,
        };
        let mut batch = Batch::new(core.batch(), overlay.as_fd(), tun.vnet());
        let mut timer = pin!(tokio::time::sleep_until(deadline(core.deadline())));
        loop {
            tokio::select! {
                r = tun.readable() => {
                    let mut guard = r?;
                    host_batch(&mut core, &mut batch, &mut guard, &tun, &overlay);
                }
                r = overlay.readable() => {
                    r?;
                    batch.overlay(&mut core, tun.fd(), overlay.as_fd(), |recv| {
                        overlay.try_io(Interest::READABLE, recv)
                    });
                }
                () = &mut timer => core.handle_timeout(),
                Some(job) = jobs.recv() => job(&mut core),
                sig = signals.recv() => {
                    if core.on_signal(sig) {
                        return Ok(*core.counters());
                    }
                }
            }
            core.drain(&mut wire);
            if core.is_drained() {
                info!("drained: stopping");
                return Ok(*core.counters());
            }
            timer.as_mut().reset(deadline(core.deadline()));
        }
    }
}

/// A batch from the TUN through its readiness guard, which forgets the readiness when the queue is empty
/// (and after an error, so a persistent error cannot spin the loop).
fn host_batch(
    core: &mut ProxyLoop,
    batch: &mut Batch,
    guard: &mut ReadyGuard<'_>,
    tun: &Tun,
    overlay: &UdpSocket,
) {
    let mut failed = false;
    batch.tun(core, tun.fd(), overlay.as_fd(), |b| match guard.recv(b) {
        None => Err(io::ErrorKind::WouldBlock.into()),
        Some(r) => {
            failed |= r.is_err();
            r
        }
    });
    if failed {
        guard.clear();
    }
}
