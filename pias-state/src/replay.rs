//! Anti-replay: a sliding window over a sender's sequence numbers (SPEC.md §8.2, RFC 4303 §3.4.3).
//!
//! Sequence numbers are `(incarnation << 32) | counter`. A number above the highest seen is accepted and
//! slides the window; one among the last 64 and not yet seen is accepted once; anything older is a replay.
//! Because the incarnation is in the high bits, a restarted sender (higher incarnation) is accepted at once.
//!
//! Windows are memory, and memory is lost: a receiver restarts, a tombstone expires, a stranger's window is
//! evicted. [`Freshness`] bounds what such a loss can re-open: every sealed message carries its sender's
//! wall-clock time, and a receiver refuses one outside `±skew` of its own clock or older than its own start,
//! so only a message younger than `skew` can ever be replayed into a forgotten window (SPEC.md §8.2).

use crate::time::Instant;

/// A proxy's wall clock and its freshness rule for received control messages. The core reads no clock:
/// the driver gives the wall-clock time (Unix milliseconds) of the core's [`Instant::ZERO`] as `origin_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    origin_ms: u64,
    skew_ms: u64,
    /// The wall-clock time the proxy started: anything sealed before it may have been accepted by the
    /// previous life of this proxy, whose windows are gone.
    start_ms: u64,
}

/// Why [`Freshness::check`] refused a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// More than `skew` from the receiver's clock (either way).
    Skew,
    /// Sealed before the receiver started.
    BeforeStart,
}

impl Freshness {
    /// The clock of a proxy started at `start` (core time), whose `Instant::ZERO` is `origin_ms` of wall
    /// time, accepting timestamps within `skew_ms` of its own clock.
    pub fn new(origin_ms: u64, skew_ms: u64, start: Instant) -> Self {
        Freshness {
            origin_ms,
            skew_ms,
            start_ms: origin_ms.saturating_add(start.as_millis()),
        }
    }

    /// The wall-clock time at `now`, in Unix milliseconds: what this proxy stamps into what it seals.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.origin_ms.saturating_add(now.as_millis())
    }

    /// Whether a message stamped `time_ms` may be accepted at `now`.
    pub fn check(&self, time_ms: u64, now: Instant) -> Result<(), Stale> {
        let wall = self.wall_ms(now);
        if time_ms.abs_diff(wall) > self.skew_ms {
            Err(Stale::Skew)
        } else if time_ms < self.start_ms {
            Err(Stale::BeforeStart)
        } else {
            Ok(())
        }
    }
}

/// Width of the window in sequence numbers.
pub const WINDOW: u64 = 64;

/// One sender's window. `Default` is "nothing seen yet".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted; 0 means none (senders start their counter at 1).
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted.
    bitmap: u64,
}

impl ReplayWindow {
    /// Whether `seq` would be accepted, without recording it (check, then verify the MAC, then commit).
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            return true;
        }
        let back = self.highest - seq;
        back < WINDOW && self.bitmap & (1u64 << back) == 0
    }

    /// Records `seq` as seen. Returns false (and changes nothing) if it is not acceptable.
    pub fn commit(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.bitmap = if shift >= WINDOW { 0 } else { self.bitmap << shift };
            self.bitmap |= 1;
            self.highest = seq;
        } else {
            self.bitmap |= 1u64 << (self.highest - seq);
        }
        true
    }

    /// The highest sequence number accepted so far (0 if none).
    pub fn highest(&self) -> u64 {
        self.highest
    }
}

/// A sender's side: produces `(incarnation << 32) | counter`, counter from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCounter {
    incarnation: u32,
    counter: u32,
}

impl SeqCounter {
    pub fn new(incarnation: u32) -> Self {
        SeqCounter {
            incarnation,
            counter: 0,
        }
    }

    /// The next sequence number. After 2^32 − 1 messages in one incarnation the counter saturates, and the
    /// sender must restart with a higher incarnation (at one message per microsecond that is over an hour of
    /// continuous sending; proxies send far less).
    pub fn next_seq(&mut self) -> u64 {
        self.counter = self.counter.saturating_add(1);
        (u64::from(self.incarnation) << 32) | u64::from(self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_each_once_and_rejects_old() {
        let mut w = ReplayWindow::default();
        assert!(!w.commit(0));
        assert!(w.commit(5));
        assert!(!w.commit(5));
        assert!(w.commit(3));
        assert!(!w.commit(3));
        assert!(w.commit(100));
        assert!(w.commit(37), "100 - 37 = 63 is inside the window");
        assert!(!w.commit(36), "64 behind is outside");
        assert!(w.commit(1 << 32), "a new incarnation is accepted");
        assert!(!w.commit(101));
    }

    proptest! {
        /// Against a model that remembers everything: never accept a number twice, never accept one more
        /// than 63 below the highest, and always accept a number above the highest.
        #[test]
        fn matches_model(seqs in proptest::collection::vec(1u64..300, 1..200)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest = 0u64;
            for s in seqs {
                let fresh = !seen.contains(&s) && (s > highest || highest - s < WINDOW);
                prop_assert_eq!(w.commit(s), fresh, "seq {} highest {}", s, highest);
                if fresh {
                    seen.insert(s);
                    highest = highest.max(s);
                }
            }
        }
    }

    #[test]
    fn freshness_bounds_age_future_and_restart() {
        // Core time zero is Unix time 1_000_000 ms; the proxy started at core time 10 s; skew 30 s.
        let f = Freshness::new(1_000_000, 30_000, Instant::from_secs(10));
        let now = Instant::from_secs(100);
        let wall = f.wall_ms(now);
        assert_eq!(wall, 1_100_000);
        assert_eq!(f.check(wall, now), Ok(()));
        assert_eq!(f.check(wall - 30_000, now), Ok(()));
        assert_eq!(f.check(wall + 30_000, now), Ok(()));
        assert_eq!(f.check(wall - 30_001, now), Err(Stale::Skew));
        assert_eq!(f.check(wall + 30_001, now), Err(Stale::Skew));
        assert_eq!(f.check(0, now), Err(Stale::Skew));
        assert_eq!(f.check(u64::MAX, now), Err(Stale::Skew));
        // Shortly after the start, a message sealed before it is refused even inside the skew: the
        // previous life of this proxy may have accepted it, and its windows are gone.
        let early = Instant::from_secs(12);
        assert_eq!(
            f.check(f.wall_ms(Instant::from_secs(9)), early),
            Err(Stale::BeforeStart)
        );
        assert_eq!(f.check(f.wall_ms(Instant::from_secs(10)), early), Ok(()));
    }

    #[test]
    fn counter_is_monotonic_and_carries_incarnation() {
        let mut c = SeqCounter::new(7);
        let a = c.next_seq();
        let b = c.next_seq();
        assert_eq!(a, (7 << 32) | 1);
        assert!(b > a);
    }
}
