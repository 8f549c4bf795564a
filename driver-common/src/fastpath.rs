//! The hook a kernel fast path (`driver-xdp`) plugs into a user-space driver's loop.
//!
//! A driver holding a [`FastPath`] keeps its slow path exactly as it is and adds three calls, with no
//! protocol logic of its own:
//! 1. [`FastPath::on_event`] for every event it drains from `Proxy::poll_event`;
//! 2. [`FastPath::on_tick`] about every [`FAST_PATH_TICK`] (the fast path feeds its activity back to the
//!    core, so expiry stays the core's decision, drops what the core no longer has, and rebuilds itself from
//!    `Proxy::state_events` when `Proxy::events_lost` moved);
//! 3. [`FastPath::for_each_counter`] next to the proxy's and the driver's counters in the metrics.

use core::time::Duration;

use pias_state::Instant;
use pias_state::proxy::{Event, Proxy};

/// How often a driver calls [`FastPath::on_tick`].
pub const FAST_PATH_TICK: Duration = Duration::from_secs(1);

/// A cache of the core's decisions outside the driver's loop (e.g. an XDP program).
pub trait FastPath: Send {
    /// One of the proxy's events, as drained.
    fn on_event(&mut self, proxy: &Proxy, ev: &Event, now: Instant);
    /// Periodic work; may feed activity to the core (`Proxy::touch_nat`: a binding it no longer has must
    /// leave the fast path) and resynchronise after lost events (`Proxy::events_lost`).
    fn on_tick(&mut self, proxy: &mut Proxy, now: Instant);
    /// Walks the fast path's counters as `(name, value)` (Prometheus-ready names).
    fn for_each_counter(&self, f: &mut dyn FnMut(&'static str, u64));
}

/// A driver's fast path and the time of its next tick.
pub struct FastPathSlot {
    inner: Option<Box<dyn FastPath>>,
    next_tick: Instant,
}

impl core::fmt::Debug for FastPathSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FastPathSlot")
            .field("attached", &self.inner.is_some())
            .field("next_tick", &self.next_tick)
            .finish()
    }
}

impl Default for FastPathSlot {
    fn default() -> Self {
        FastPathSlot {
            inner: None,
            next_tick: Instant::from_micros(0),
        }
    }
}

impl FastPathSlot {
    /// Installs `f`; its first tick is one [`FAST_PATH_TICK`] after `now`.
    pub fn set(&mut self, f: Box<dyn FastPath>, now: Instant) {
        self.inner = Some(f);
        self.next_tick = now + FAST_PATH_TICK;
    }

    /// The fast path, if any.
    pub fn get(&self) -> Option<&dyn FastPath> {
        self.inner.as_deref()
    }

    /// Passes an event on.
    pub fn on_event(&mut self, proxy: &Proxy, ev: &Event, now: Instant) {
        if let Some(f) = &mut self.inner {
            f.on_event(proxy, ev, now);
        }
    }

    /// Ticks if due.
    pub fn poll_tick(&mut self, proxy: &mut Proxy, now: Instant) {
        if let Some(f) = &mut self.inner
            && now >= self.next_tick
        {
            f.on_tick(proxy, now);
            self.next_tick = now + FAST_PATH_TICK;
        }
    }

    /// When the driver must wake for the next tick (`None` without a fast path).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.as_ref().map(|_| self.next_tick)
    }

    /// `a` or the next tick, whichever is first.
    pub fn earliest(&self, a: Option<Instant>) -> Option<Instant> {
        match (a, self.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
