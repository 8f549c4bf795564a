//! The proxy's loop body, once for every driver: what a wake-up does with the core, whatever woke it.
//!
//! [`ProxyLoop`] holds the [`Proxy`], the [`Clock`], the [`DriverCounters`], the fast path and the host
//! set-up. A driver keeps only how it waits and how it moves bytes ([`Wire`]); for every wake-up it
//! 1. hands what it read to [`ProxyLoop::on_host`] / [`ProxyLoop::on_overlay`] (one packet each, in place)
//!    and sends the bytes where the returned `Verdict` says ([`ProxyLoop::forward`], or a batch of its own
//!    counted with [`ProxyLoop::on_sent_batch`]) — or lets [`ProxyLoop::read_batch`] do both, one read at
//!    a time;
//! 2. calls [`ProxyLoop::handle_timeout`] when [`ProxyLoop::deadline`] has passed (the core's timers, the
//!    drain's end, the fast path's tick);
//! 3. calls [`ProxyLoop::drain`]: `poll_transmit` (sent), then `poll_event` (logged, passed to the fast
//!    path) — the drain order of `pias_state::proxy`;
//! 4. stops once [`ProxyLoop::is_drained`] (a graceful leave, started by [`ProxyLoop::on_signal`]), then
//!    re-arms its timer on [`ProxyLoop::deadline`].
//!
//! # Overload
//! One policy for every driver: a send never waits. A TUN queue or socket buffer that is full
//! (`EAGAIN`/`ENOBUFS`) drops the packet and counts it (`driver_tun_tx_full`, `driver_overlay_tx_full`);
//! other send errors count as `driver_*_tx_errors`. A UDP data path sheds load, it does not stall the loop
//! (and with it timers, control traffic and the other direction).

use core::net::SocketAddr;
use core::ops::Range;
use std::io;

use pias_state::Instant;
use pias_state::proxy::{HEADROOM, PacketBuf, Proxy, Verdict};
use pias_state::seal::Dest;
use tracing::{debug, info};

use crate::events::log_proxy_event;
use crate::{Clock, DriverCounters, FastPath, FastPathSlot, HostSetup, MAX_PACKET, ProxyDriverConfig};

/// How a driver sends, without waiting: a full queue is `WouldBlock` (or `ENOBUFS`), which
/// [`ProxyLoop`] counts and drops.
pub trait Wire {
    /// Writes one IP packet to the TUN.
    fn send_host(&mut self, pkt: &[u8]) -> io::Result<usize>;
    /// Sends one datagram on the overlay socket.
    fn send_overlay(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<usize>;
}

/// One of the proxy's two packet sources and sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The TUN device (the host side).
    Tun,
    /// The overlay UDP socket.
    Overlay,
}

/// Whether a send error means a full queue (drop and count as overload), not a failure.
pub fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// The proxy and everything a driver's wake-up does with it. See the module documentation.
#[derive(Debug)]
pub struct ProxyLoop {
    proxy: Proxy,
    clock: Clock,
    counters: DriverCounters,
    fast: FastPathSlot,
    /// What the driver installed (the TUN's real name in `tun`); anycast routes withdrawn on leave.
    host: HostSetup,
    batch: usize,
    /// Transmit buffer for `poll_transmit`.
    tx: Vec<u8>,
    /// A signal started the graceful leave.
    leaving: bool,
    /// Whether the anycast routes are in `main` now: what [`ProxyLoop::sync_announce`] last applied.
    announced: bool,
    /// Whether the last overlay send failed (not for a full queue): what the core was last told.
    overlay_failing: bool,
}

impl ProxyLoop {
    /// Starts the core with `cfg.proxy`, for a driver that created the TUN and installed `host` (its `tun`
    /// the device's real name). Logs the start, naming the driver.
    pub fn new(cfg: &ProxyDriverConfig, host: HostSetup, driver: &'static str) -> io::Result<ProxyLoop> {
        let clock = Clock::new();
        // Secrets come from the OS at every start, never from `cfg.proxy.seed` (SPEC.md §8.1).
        let secrets = crate::entropy::os_secrets()?;
        let mut core_cfg = cfg.proxy.clone();
        core_cfg.wall_origin_ms = clock.wall_origin_ms();
        let proxy = Proxy::new(core_cfg, &secrets, clock.now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        info!(
            id = %proxy.id(),
            overlay = %cfg.proxy.overlay_addr,
            tun = %host.tun,
            incarnation = cfg.proxy.incarnation,
            driver,
            "proxy started"
        );
        Ok(ProxyLoop {
            proxy,
            clock,
            counters: DriverCounters::default(),
            fast: FastPathSlot::default(),
            host,
            batch: cfg.batch.max(1),
            tx: vec![0; MAX_PACKET],
            leaving: false,
            // `HostSetup::apply` installed the routes before the core started, which starts announced.
            announced: true,
            overlay_failing: false,
        })
    }

    // ----- getters -----

    /// The core.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The driver's counters.
    pub fn counters(&self) -> &DriverCounters {
        &self.counters
    }

    /// The fast path, if any.
    pub fn fast_path(&self) -> Option<&dyn FastPath> {
        self.fast.get()
    }

    /// The core's current time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Packets read per source per wake-up.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The TUN's name.
    pub fn tun_name(&self) -> &str {
        &self.host.tun
    }

    /// Installs a fast path: it sees every event, ticks about once a second, and joins the metrics.
    pub fn set_fast_path(&mut self, f: Box<dyn FastPath>) {
        let now = self.clock.now();
        self.fast.set(f, now);
    }

    // ----- what the admin endpoints answer -----

    /// The Prometheus text of every counter, the fast path's included.
    pub fn metrics(&self) -> String {
        crate::metrics::render_with(&self.proxy, &self.counters, self.fast.get())
    }

    /// The control socket's answer to one request line. `announce off|on|auto` sets the operator's mode
    /// (SPEC.md §7.7) and applies the result to the routes at once; every other request only reads.
    pub fn answer(&mut self, line: &str) -> String {
        use crate::control;
        match control::parse_announce(line) {
            Some(Ok(mode)) => {
                let now = self.clock.now();
                info!(mode = mode.word(), "operator: announce");
                self.proxy.set_announce_mode(now, mode);
                self.sync_announce();
                control::ok_line(control::Query::Announce, control::announce_data(&self.proxy))
            }
            Some(Err(e)) => control::error_line(&e),
            None => control::answer_with(line, &self.proxy, &self.counters, self.fast.get(), self.now()),
        }
    }

    // ----- input -----

    /// One packet the driver read from the TUN into `buf[HEADROOM..HEADROOM + len]`: the core's verdict and
    /// where in `buf` the bytes to forward now are.
    pub fn on_host(&mut self, now: Instant, buf: &mut [u8], len: usize) -> (Verdict, Range<usize>) {
        self.counters.tun_rx += 1;
        let mut pb = PacketBuf::new(buf, HEADROOM, HEADROOM + len);
        let v = self.proxy.handle_host(now, &mut pb);
        (v, pb.range())
    }

    /// One datagram the driver received from `from` on the overlay socket into
    /// `buf[HEADROOM..HEADROOM + len]`; as [`ProxyLoop::on_host`].
    pub fn on_overlay(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> (Verdict, Range<usize>) {
        self.counters.overlay_rx += 1;
        let mut pb = PacketBuf::new(buf, HEADROOM, HEADROOM + len);
        let v = self.proxy.handle_overlay(now, from, &mut pb);
        (v, pb.range())
    }

    /// A read failed (not `WouldBlock`). On the overlay socket these are mostly ICMP errors (port
    /// unreachable from a dead peer): counted, never fatal.
    pub fn on_read_error(&mut self, side: Side, e: &io::Error) {
        match side {
            Side::Tun => {
                self.counters.tun_rx_errors += 1;
                debug!(error = %e, "TUN read failed");
            }
            Side::Overlay => {
                self.counters.overlay_rx_errors += 1;
                debug!(error = %e, "overlay receive error");
            }
        }
    }

    /// A wake-up's batch from one source ended having read `got` packets.
    pub fn on_batch(&mut self, got: usize) {
        if got > 0 {
            self.counters.rx_batches += 1;
        }
    }

    /// Reads up to [`ProxyLoop::batch`] packets from `side`, one `read` each into `rx` at `HEADROOM` (`rx`
    /// at least `HEADROOM + MAX_PACKET` long), and forwards each as the core decides. `read` returns the
    /// length and sender (ignored for the TUN), `WouldBlock` when the source is empty. Each error takes a
    /// place in the batch, so a stream of them cannot spin the loop. Returns whether the batch filled up
    /// (packets may be left).
    pub fn read_batch(
        &mut self,
        side: Side,
        rx: &mut [u8],
        mut read: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
        wire: &mut impl Wire,
    ) -> bool {
        let now = self.clock.now();
        let (mut got, mut tries) = (0, 0);
        while tries < self.batch {
            tries += 1;
            let (n, from) = match read(&mut rx[HEADROOM..]) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.on_read_error(side, &e);
                    continue;
                }
            };
            got += 1;
            let (v, r) = match side {
                Side::Tun => self.on_host(now, rx, n),
                Side::Overlay => self.on_overlay(now, from, rx, n),
            };
            self.forward(v, &rx[r], wire);
        }
        self.on_batch(got);
        tries == self.batch
    }

    // ----- output -----

    /// Sends `bytes` where the verdict says, dropping them if the queue is full (counted).
    pub fn forward(&mut self, v: Verdict, bytes: &[u8], wire: &mut impl Wire) {
        match v {
            Verdict::Host => {
                let r = wire.send_host(bytes);
                self.on_sent(Side::Tun, r, None);
            }
            Verdict::Overlay(to) => {
                let r = wire.send_overlay(bytes, to);
                self.on_sent(Side::Overlay, r, Some(to));
            }
            Verdict::Consumed | Verdict::Drop(_) => {}
        }
    }

    /// Counts one send's result under the overload policy (see the module documentation).
    pub fn on_sent(&mut self, side: Side, r: io::Result<usize>, to: Option<SocketAddr>) {
        match r {
            Ok(_) => self.on_sent_batch(side, 1, 0, 0),
            Err(e) if is_full(&e) => self.on_sent_batch(side, 0, 1, 0),
            // Too big for the path is the packet's problem, not the socket's: counted, not reported.
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                debug!(error = %e, ?side, to = ?to, "send failed");
                self.counters.count_sent(side, 0, 0, 1);
            }
            Err(e) => {
                debug!(error = %e, ?side, to = ?to, "send failed");
                self.on_sent_batch(side, 0, 0, 1);
            }
        }
    }

    /// Counts a batch a driver sent its own way (e.g. `sendmmsg`): `sent` went, `full` were dropped on a
    /// full queue, `failed` were refused.
    /// An overlay batch in which nothing went and some sends were refused tells the core the socket
    /// fails; one that sent anything tells it the socket works (only changes reach the core, SPEC.md §7.7).
    pub fn on_sent_batch(&mut self, side: Side, sent: usize, full: usize, failed: usize) {
        self.counters.count_sent(side, sent, full, failed);
        if side == Side::Overlay {
            let failing = if sent > 0 {
                false
            } else if failed > 0 {
                true
            } else {
                return;
            };
            if failing != self.overlay_failing {
                self.overlay_failing = failing;
                if failing {
                    tracing::warn!("overlay sends failing");
                } else {
                    info!("overlay sends succeed again");
                }
                self.proxy.set_overlay_failed(self.clock.now(), failing);
            }
        }
    }

    /// Whether the last overlay send the driver counted failed (see [`ProxyLoop::on_sent_batch`]).
    pub fn overlay_failing(&self) -> bool {
        self.overlay_failing
    }
}

impl DriverCounters {
    fn count_sent(&mut self, side: Side, sent: usize, full: usize, failed: usize) {
        let c = self;
        let (ok, f, err) = match side {
            Side::Tun => (&mut c.tun_tx, &mut c.tun_tx_full, &mut c.tun_tx_errors),
            Side::Overlay => (
                &mut c.overlay_tx,
                &mut c.overlay_tx_full,
                &mut c.overlay_tx_errors,
            ),
        };
        *ok += sent as u64;
        *f += full as u64;
        *err += failed as u64;
    }
}

impl ProxyLoop {
    /// Sends everything the core queued, then logs its events and passes them to the fast path.
    pub fn drain(&mut self, wire: &mut impl Wire) {
        let now = self.clock.now();
        while let Some(t) = self.proxy.poll_transmit(now, &mut self.tx) {
            let bytes = &self.tx[..t.len];
            let (side, r, to) = match t.dest {
                Dest::Host => (Side::Tun, wire.send_host(bytes), None),
                Dest::Overlay(a) => (Side::Overlay, wire.send_overlay(bytes, a), Some(a)),
            };
            self.on_sent(side, r, to);
        }
        while let Some(ev) = self.proxy.poll_event() {
            log_proxy_event(&ev);
            self.fast.on_event(&self.proxy, &ev, now);
        }
        self.sync_announce();
    }

    /// Makes the routes say what the core's [`Proxy::announce`] says (SPEC.md §7.7): the one place the
    /// anycast routes are withdrawn and announced again, whatever the reason (a graceful leave, a fault,
    /// the operator). It compares states rather than following events, so a lost event cannot leave the
    /// routes wrong. Blocking `ip` runs, only on a change.
    pub fn sync_announce(&mut self) {
        let a = self.proxy.announce();
        if a.up == self.announced {
            return;
        }
        self.announced = a.up;
        if a.up {
            let n = self.host.announce();
            info!(routes = n, reason = a.reason.word(), "anycast routes announced");
        } else {
            let n = self.host.withdraw();
            info!(routes = n, reason = a.reason.word(), "anycast routes withdrawn");
        }
    }

    /// Whether the anycast routes are in the main table (announced) now.
    pub fn announced(&self) -> bool {
        self.announced
    }

    // ----- time -----

    /// Runs the core's timers if due, and the fast path's tick. Harmless when early.
    pub fn handle_timeout(&mut self) {
        let now = self.clock.now();
        if self.proxy.poll_timeout().is_some_and(|t| t <= now) {
            self.counters.timer_fires += 1;
            self.proxy.handle_timeout(now);
        }
        self.fast.poll_tick(&mut self.proxy, now);
    }

    /// When [`ProxyLoop::handle_timeout`] is due: the core's next timer (the drain's end included) or the
    /// fast path's tick, as a wall-clock instant (capped at [`crate::IDLE_TIMER`] ahead).
    pub fn deadline(&self) -> std::time::Instant {
        self.clock.deadline(self.fast.earliest(self.proxy.poll_timeout()))
    }

    // ----- stopping -----

    /// A stop signal (SIGINT/SIGTERM) arrived: the first starts the graceful leave ([`ProxyLoop::leave`]),
    /// a second one means stop now (`true`).
    pub fn on_signal(&mut self, sig: &str) -> bool {
        if crate::stop_now(self.leaving, sig) {
            return true;
        }
        self.leave();
        false
    }

    /// Starts a graceful stop (SPEC.md §7.6): the proxy leaves the overlay, its anycast routes are moved
    /// out of the main table ([`ProxyLoop::sync_announce`]: blocking `ip` runs, once: the loop pauses for a
    /// few milliseconds), and it
    /// keeps forwarding for its `drain_time`, after which [`ProxyLoop::is_drained`]. Call
    /// [`ProxyLoop::drain`] after it.
    pub fn leave(&mut self) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let now = self.clock.now();
        let drain = self.proxy.config().membership.drain_time;
        info!(drain_ms = drain.as_millis() as u64, "leaving the overlay");
        // The core now answers "withdraw" (Draining); applied at once, before any more packets.
        self.proxy.leave(now);
        self.sync_announce();
    }

    /// Whether a graceful stop has drained: the driver may now stop (dropping the TUN deletes it and its
    /// remaining routes).
    pub fn is_drained(&self) -> bool {
        self.proxy.is_drained(self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wire whose queues are full, or refuse, or take everything.
    #[derive(Default)]
    struct TestWire {
        full: bool,
        refuse: bool,
        host: usize,
        overlay: usize,
    }

    impl TestWire {
        fn result(&self) -> io::Result<usize> {
            if self.full {
                Err(io::ErrorKind::WouldBlock.into())
            } else if self.refuse {
                Err(io::Error::from_raw_os_error(libc::EHOSTUNREACH))
            } else {
                Ok(1)
            }
        }
    }

    impl Wire for TestWire {
        fn send_host(&mut self, _: &[u8]) -> io::Result<usize> {
            self.host += 1;
            self.result()
        }
        fn send_overlay(&mut self, _: &[u8], _: SocketAddr) -> io::Result<usize> {
            self.overlay += 1;
            self.result()
        }
    }

    fn proxy_loop() -> ProxyLoop {
        let cfg = crate::test_proxy_config(2);
        let host = HostSetup {
            tun: "pias-test".into(),
            mtu: 1500,
            anycast: vec![],
            pool: vec![],
            sysctls: false,
        };
        let mut cfg = ProxyDriverConfig::new(cfg, host);
        cfg.batch = 3;
        let host = cfg.host.clone();
        ProxyLoop::new(&cfg, host, "test").unwrap()
    }

    #[test]
    fn a_full_queue_drops_and_counts_never_waits() {
        let mut l = proxy_loop();
        let to: SocketAddr = "10.0.0.9:6081".parse().unwrap();
        let mut w = TestWire::default();
        l.forward(Verdict::Overlay(to), b"x", &mut w);
        l.forward(Verdict::Host, b"x", &mut w);
        w.full = true;
        l.forward(Verdict::Overlay(to), b"x", &mut w);
        l.forward(Verdict::Host, b"x", &mut w);
        w.full = false;
        w.refuse = true;
        l.forward(Verdict::Overlay(to), b"x", &mut w);
        l.on_sent(Side::Tun, Err(io::Error::from_raw_os_error(libc::ENOBUFS)), None);
        l.on_sent_batch(Side::Overlay, 5, 2, 1);
        let c = *l.counters();
        assert_eq!((c.overlay_tx, c.overlay_tx_full, c.overlay_tx_errors), (6, 3, 2));
        assert_eq!((c.tun_tx, c.tun_tx_full, c.tun_tx_errors), (1, 2, 0));
        let m = l.metrics();
        assert!(m.contains("pias_driver_overlay_tx_full_total 3\n"), "{m}");
    }

    #[test]
    fn failing_overlay_sends_reach_the_core_and_withdraw_after_its_hold_down() {
        let mut l = proxy_loop();
        let to: SocketAddr = "10.0.0.9:6081".parse().unwrap();
        // Too big is the packet's fault: counted, not reported.
        l.on_sent(
            Side::Overlay,
            Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
            Some(to),
        );
        // A full queue is overload, not failure.
        l.on_sent(Side::Overlay, Err(io::ErrorKind::WouldBlock.into()), Some(to));
        assert!(!l.overlay_failing());
        l.on_sent(
            Side::Overlay,
            Err(io::Error::from_raw_os_error(libc::EPERM)),
            Some(to),
        );
        assert!(l.overlay_failing());
        assert_eq!(l.counters().overlay_tx_errors, 2);
        let hold = l.proxy().config().announce.hold_down;
        assert!(
            l.deadline() <= std::time::Instant::now() + hold,
            "the core wakes at the hold-down"
        );
        std::thread::sleep(hold);
        l.handle_timeout();
        let mut w = TestWire::default();
        l.drain(&mut w);
        assert!(!l.proxy().announce().up);
        assert!(!l.announced(), "the loop applied the withdrawal");
        // One send that goes clears the failure (the core then waits for its hold-up).
        l.on_sent_batch(Side::Overlay, 1, 0, 0);
        assert!(!l.overlay_failing());
        // The operator's `on` announces at once, through the same place.
        let a = l.answer("announce on");
        assert!(a.contains(r#""up":true"#) && a.contains(r#""mode":"on""#), "{a}");
        assert!(l.announced());
        assert!(l.answer("announce sideways").contains(r#""ok":false"#));
    }

    #[test]
    fn batches_are_bounded_and_errors_take_a_place() {
        let mut l = proxy_loop();
        let mut rx = vec![0u8; HEADROOM + MAX_PACKET];
        let mut w = TestWire::default();
        let from: SocketAddr = "10.0.0.9:6081".parse().unwrap();
        // Garbage without end: the batch stops at 3 reads, all dropped by the core.
        let full = l.read_batch(Side::Overlay, &mut rx, |b| Ok((b[..8].len(), from)), &mut w);
        assert!(full);
        assert_eq!(l.counters().overlay_rx, 3);
        assert_eq!(w.overlay + w.host, 0);
        // Errors without end: counted, and the batch still ends.
        let full = l.read_batch(
            Side::Tun,
            &mut rx,
            |_| Err(io::Error::from_raw_os_error(libc::EIO)),
            &mut w,
        );
        assert!(full);
        assert_eq!(l.counters().tun_rx_errors, 3);
        // An empty source ends the batch at once.
        let full = l.read_batch(
            Side::Tun,
            &mut rx,
            |_| Err(io::ErrorKind::WouldBlock.into()),
            &mut w,
        );
        assert!(!full);
        assert_eq!(l.counters().rx_batches, 1);
    }

    #[test]
    fn the_first_signal_leaves_and_the_drain_ends_the_loop() {
        let mut l = proxy_loop();
        let mut w = TestWire::default();
        assert!(!l.is_drained());
        assert!(!l.on_signal("SIGTERM"));
        l.drain(&mut w);
        assert!(l.proxy().is_leaving());
        assert!(!l.is_drained());
        let drain = l.proxy().config().membership.drain_time;
        assert!(l.deadline() <= std::time::Instant::now() + drain);
        assert!(l.on_signal("SIGTERM"), "a second signal stops at once");
    }
}
