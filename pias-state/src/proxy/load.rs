//! The JAP's load: new flows per second against its configured capacity (SPEC.md §9.6).
//!
//! A JAP's per-flow work — choosing a target, creating a NAT binding, the target's own work for a new
//! client — comes with new flows, not with packets of flows it already serves, so the load is the rate of
//! bindings created. It is measured in windows of one second and smoothed (each complete window moves the
//! rate half-way to its count), and the current window counts as soon as it alone exceeds the rate, so a
//! sudden crowd is seen within the window rather than a second later. The figure reported to RAPs is the rate
//! in per-mille of the capacity; it moves with hysteresis ([`load_report_due`]) like target counts do.

use core::time::Duration;

use pias_proto::control::ReportEntry;

use crate::time::Instant;

/// The measuring window.
pub(super) const LOAD_WINDOW: Duration = Duration::from_secs(1);
/// Smallest move of the reported load (per-mille) that is worth a report, whatever the band: a tenth of the
/// capacity. Keeps a lightly loaded JAP, whose load jitters by whole flows, from reporting every window.
pub(super) const LOAD_STEP: u16 = 100;
/// Band of the load hysteresis, in percent of the last reported load (as for counts, §9.1).
pub(super) const LOAD_BAND_PERCENT: u16 = 25;

/// Whether a load of `now` (per-mille) is worth reporting when `reported` was the last one: it crossed the
/// capacity line (either way: that decides whether RAPs answer the JAP at all), or moved by more than the
/// larger of [`LOAD_STEP`] and [`LOAD_BAND_PERCENT`] % of `reported`.
pub(super) fn load_report_due(reported: u16, now: u16) -> bool {
    let full = ReportEntry::LOAD_FULL;
    if (reported >= full) != (now >= full) {
        return true;
    }
    let d = (u32::from(reported) * u32::from(LOAD_BAND_PERCENT) / 100).max(u32::from(LOAD_STEP));
    u32::from(now.abs_diff(reported)) > d
}

/// New flows per second at this JAP, and whether that is over its capacity.
#[derive(Debug, Clone)]
pub(super) struct LoadMeter {
    /// `capacity_flows_per_s`; `None`: no capacity, the load is always reported as 0 and nothing is shed.
    capacity: Option<u32>,
    window_start: Instant,
    in_window: u32,
    /// Smoothed new flows per second over complete windows.
    rate: u32,
    /// The JAP went over its capacity at this time and RAPs have not been told: `handle_timeout` is due
    /// now rather than at the window's end, so the report goes out with the first Invalidate.
    report_due: Option<Instant>,
}

impl LoadMeter {
    pub(super) fn new(capacity: Option<u32>, now: Instant) -> Self {
        LoadMeter {
            capacity,
            window_start: now,
            in_window: 0,
            rate: 0,
            report_due: None,
        }
    }

    /// Closes the windows that ended by `now`. An idle gap of many windows decays the rate as many times
    /// (each empty window halves it), in at most 32 steps.
    pub(super) fn roll(&mut self, now: Instant) {
        let mut steps = 0;
        while now.saturating_since(self.window_start) >= LOAD_WINDOW {
            self.rate = self.rate.div_ceil(2) + self.in_window / 2;
            if self.in_window == 0 && self.rate == 1 {
                self.rate = 0;
            }
            self.in_window = 0;
            self.window_start += LOAD_WINDOW;
            steps += 1;
            if steps >= 32 {
                self.rate = 0;
                self.window_start = now;
                break;
            }
        }
    }

    /// A binding was created.
    pub(super) fn note_new_flow(&mut self, now: Instant) {
        self.roll(now);
        self.in_window = self.in_window.saturating_add(1);
    }

    /// New flows per second: the smoothed rate, or the current window's count once it is above it.
    pub(super) fn flows_per_s(&self) -> u32 {
        self.rate.max(self.in_window)
    }

    /// Whether the JAP is over its capacity for new flows (never without a capacity).
    pub(super) fn over(&self) -> bool {
        self.capacity.is_some_and(|c| self.flows_per_s() > c)
    }

    /// The load to report: new flows per second in per-mille of the capacity, saturating; 0 without one.
    pub(super) fn per_mille(&self) -> u16 {
        let Some(c) = self.capacity.filter(|c| *c > 0) else {
            return 0;
        };
        let pm = u64::from(self.flows_per_s()) * 1000 / u64::from(c);
        u16::try_from(pm).unwrap_or(u16::MAX)
    }

    /// Asks for `handle_timeout` at once (the JAP just went over capacity and has not reported it).
    pub(super) fn report_soon(&mut self, now: Instant) {
        self.report_due.get_or_insert(now);
    }

    /// `handle_timeout` took the load.
    pub(super) fn reported(&mut self) {
        self.report_due = None;
    }

    /// When the current window ends, while there is a load to let decay (a capacity and a non-zero rate);
    /// sooner if a report is due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let end = (self.capacity.is_some() && (self.rate > 0 || self.in_window > 0))
            .then(|| self.window_start + LOAD_WINDOW);
        [end, self.report_due].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_windows_and_decays() {
        let t0 = Instant::from_secs(10);
        let mut m = LoadMeter::new(Some(100), t0);
        for i in 0..150u64 {
            m.note_new_flow(t0 + Duration::from_millis(i * 6));
        }
        // The window alone counts once it is above the smoothed rate.
        assert_eq!(m.flows_per_s(), 150);
        assert!(m.over());
        assert_eq!(m.per_mille(), 1500);
        m.roll(t0 + Duration::from_secs(1));
        assert_eq!(m.flows_per_s(), 75);
        assert!(!m.over());
        m.roll(t0 + Duration::from_secs(2));
        assert_eq!(m.flows_per_s(), 38);
        // A long idle gap decays to zero and stops asking for timers.
        m.roll(t0 + Duration::from_secs(100));
        assert_eq!(m.flows_per_s(), 0);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn without_capacity_nothing_is_over_and_load_is_zero() {
        let t0 = Instant::from_secs(1);
        let mut m = LoadMeter::new(None, t0);
        for _ in 0..10_000 {
            m.note_new_flow(t0);
        }
        assert!(!m.over());
        assert_eq!(m.per_mille(), 0);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn load_hysteresis() {
        // Crossing the capacity line is always due, however small the move.
        assert!(load_report_due(999, 1000));
        assert!(load_report_due(1000, 999));
        // Small moves are not; moves beyond the step (low loads) or the band (high loads) are.
        assert!(!load_report_due(0, 100));
        assert!(load_report_due(0, 101));
        assert!(!load_report_due(2000, 2500));
        assert!(load_report_due(2000, 2501));
        assert!(!load_report_due(500, 375));
        assert!(load_report_due(500, 374));
    }

    proptest::proptest! {
        /// Whatever the arrivals, the meter never panics and is over capacity exactly when its rate is.
        #[test]
        fn meter_is_consistent(
            cap in proptest::option::of(1u32..1000),
            steps in proptest::collection::vec((0u64..3000, 0u32..50), 1..60),
        ) {
            let mut now = Instant::from_secs(1);
            let mut m = LoadMeter::new(cap, now);
            for (dt, n) in steps {
                now += Duration::from_millis(dt);
                m.roll(now);
                for _ in 0..n {
                    m.note_new_flow(now);
                }
                proptest::prop_assert_eq!(m.over(), cap.is_some_and(|c| m.flows_per_s() > c));
                proptest::prop_assert_eq!(
                    m.per_mille() >= ReportEntry::LOAD_FULL,
                    cap.is_some_and(|c| m.flows_per_s() >= c)
                );
            }
        }
    }
}
