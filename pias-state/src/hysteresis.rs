//! When a JAP tells a group's RAPs its target count: only when the count leaves a band around the last
//! reported value, and always on a change between zero and non-zero.
//!
//! RAPs weight JAPs by target count, so they need the count roughly, not exactly; reporting every change
//! would make target churn flood the RAPs. With the default band of ±25 %, a count near `N` must move by
//! more than `N/4` before the next report, so the report rate falls as `1/N` while the RAP's view stays
//! within 25 % of the truth. The zero/non-zero edge is exact because it decides whether a JAP is chosen at
//! all.
//!
//! # Rule (SPEC.md, target-count reports)
//!
//! With `r` the last reported count, `t` the true count and `b` the band in percent (default
//! [`DEFAULT_BAND_PERCENT`] = 25), all in 64-bit integers, `d = floor(r · b / 100)`. A report of `t` is due
//! when:
//!
//! - (a) nothing has been reported yet; or
//! - (b) `t == 0` and `r != 0`; or
//! - (c) `t != 0` and `r == 0`; or
//! - (d) `t > r + d` or `t < r − d` (with `r − d` saturating at 0).
//!
//! `b = 0` reports every change. Invariant after every report decision: `|t − r| <= d` and
//! (`r == 0` iff `t == 0`).
//!
//! Emit, then commit: [`Hysteresis::due`] says whether to report; the caller sends the report and, once
//! the send was accepted, calls [`Hysteresis::commit`]. [`Hysteresis::observe`] does both at once for
//! callers whose send cannot fail.

/// The default band, in percent.
pub const DEFAULT_BAND_PERCENT: u8 = 25;

/// The reporting state of one (JAP, group) count. See the module documentation for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Half-width of the band, in percent of the reported value.
    pub band_percent: u8,
    /// The last value committed as reported, if any.
    pub reported: Option<u32>,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis::new(DEFAULT_BAND_PERCENT)
    }
}

impl Hysteresis {
    /// Nothing reported yet, with a band of `band_percent` (values of 100 or more mean "only on 0 ↔
    /// non-zero and upward moves past `r + d`").
    pub const fn new(band_percent: u8) -> Self {
        Hysteresis {
            band_percent,
            reported: None,
        }
    }

    /// Whether a report of `true_count` is due. Does not change state.
    pub fn due(&self, true_count: u32) -> bool {
        let Some(r) = self.reported else { return true };
        let (t, r) = (u64::from(true_count), u64::from(r));
        if (t == 0) != (r == 0) {
            return true;
        }
        let d = r * u64::from(self.band_percent) / 100;
        t > r + d || t < r.saturating_sub(d)
    }

    /// Records that `reported` was sent (the commit half of emit-then-commit).
    pub fn commit(&mut self, reported: u32) {
        self.reported = Some(reported);
    }

    /// If a report is due, commits `true_count` and returns it for sending; otherwise `None`.
    pub fn observe(&mut self, true_count: u32) -> Option<u32> {
        if self.due(true_count) {
            self.commit(true_count);
            Some(true_count)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn in_band(h: &Hysteresis, t: u32) -> bool {
        let r = u64::from(h.reported.unwrap());
        let d = r * u64::from(h.band_percent) / 100;
        u64::from(t).abs_diff(r) <= d && ((r == 0) == (t == 0))
    }

    /// xorshift64: a tiny seeded generator for walks.
    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn rules() {
        let mut h = Hysteresis::default();
        assert_eq!(h.band_percent, 25);
        assert!(h.due(0));
        assert_eq!(h.observe(0), Some(0)); // (a)
        assert_eq!(h.observe(0), None);
        assert_eq!(h.observe(1), Some(1)); // (c)
        assert_eq!(h.observe(0), Some(0)); // (b)
        assert_eq!(h.observe(100), Some(100));
        assert_eq!(h.observe(125), None); // d = 25: 125 is inside
        assert_eq!(h.observe(75), None);
        assert_eq!(h.observe(126), Some(126)); // (d) above
        assert_eq!(h.observe(95), None); // d = 31: 95 = 126 - 31 inside
        assert_eq!(h.observe(94), Some(94)); // (d) below
        // Emit-then-commit: due does not change state; an unsent report stays due.
        assert!(h.due(200));
        assert!(h.due(200));
        h.commit(200);
        assert!(!h.due(200));
        // No overflow at the top.
        let mut h = Hysteresis::new(u8::MAX);
        assert_eq!(h.observe(u32::MAX), Some(u32::MAX));
        assert_eq!(h.observe(1), None);
        assert_eq!(h.observe(0), Some(0));
        // Band 0: every change.
        let mut h = Hysteresis::new(0);
        assert_eq!(h.observe(5), Some(5));
        assert_eq!(h.observe(5), None);
        assert_eq!(h.observe(6), Some(6));
        assert_eq!(h.observe(5), Some(5));
    }

    /// Under heavy churn (a ±1 walk with random jumps of up to ±5 % around 1000, 100 000 steps), band 25
    /// sends at least 10× fewer reports than band 0.
    #[test]
    fn band_cuts_reports_under_churn() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let (mut h0, mut h25) = (Hysteresis::new(0), Hysteresis::new(25));
        let (mut n0, mut n25) = (0u32, 0u32);
        let mut t: u32 = 1000;
        for _ in 0..100_000 {
            let r = xorshift(&mut s);
            t = if r.is_multiple_of(10) {
                t.saturating_add((r >> 8) as u32 % 101).saturating_sub(50)
            } else if r & 0x100 == 0 {
                t + 1
            } else {
                t - 1
            }
            .clamp(500, 2000);
            n0 += u32::from(h0.observe(t).is_some());
            n25 += u32::from(h25.observe(t).is_some());
        }
        eprintln!("hysteresis churn: band 0 sent {n0} reports, band 25 sent {n25}");
        assert!(n0 >= 10 * n25, "band 0: {n0}, band 25: {n25}");
    }

    proptest! {
        #[test]
        fn reported_stays_in_band(band in 0u8..=255, counts in proptest::collection::vec(any::<u32>(), 1..200)) {
            let mut h = Hysteresis::new(band);
            for t in counts {
                let before = h.reported;
                let sent = h.observe(t);
                prop_assert!(in_band(&h, t), "t {} reported {:?}", t, h.reported);
                if sent.is_none() { prop_assert_eq!(h.reported, before); }
                else { prop_assert_eq!(sent, Some(t)); }
                prop_assert!(!h.due(t));
            }
        }

        #[test]
        fn small_values_stay_in_band(band in 0u8..=100, counts in proptest::collection::vec(0u32..20, 1..200)) {
            let mut h = Hysteresis::new(band);
            for t in counts {
                h.observe(t);
                prop_assert!(in_band(&h, t));
            }
        }

        /// Report bound for a walk in [L, H] with steps of at most 1: after a report at r >= L, the next one
        /// needs |t − r| > floor(r·b/100) >= floor(L·b/100) =: g, i.e. at least g + 1 steps. So
        /// reports <= 1 + steps / (g + 1).
        #[test]
        fn walk_report_bound(seed in 1u64.., band in 1u8..=50, n in 10u32..10_000, steps in 100usize..5000) {
            let (lo, hi) = (n / 2, n * 2);
            let mut s = seed;
            let mut t = n;
            let mut h = Hysteresis::new(band);
            let mut reports = 0usize;
            for _ in 0..steps {
                t = if xorshift(&mut s) & 1 == 0 { t + 1 } else { t - 1 }.clamp(lo, hi);
                reports += usize::from(h.observe(t).is_some());
            }
            let g = (u64::from(lo) * u64::from(band) / 100) as usize;
            let bound = 1 + steps / (g + 1);
            prop_assert!(reports <= bound, "reports {} > bound {} (g {})", reports, bound, g);
        }
    }
}
