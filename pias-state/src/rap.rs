//! The RAP's view of its groups: which JAPs have targets, roughly how many, and the choice of JAPs for an IAP.
//!
//! SPEC.md §9.1, §9.2, §9.5. State is soft: every entry comes from a JAP's report and expires when reports
//! stop (`report_expiry`); entries of JAPs that membership marks unusable are skipped at once and swept
//! away. Each of a group's `k` RAPs receives the same reports, so they converge to the same view.

use core::time::Duration;
use std::collections::BTreeMap;

use pias_proto::control::{AnswerEntry, MAX_ANSWER_ENTRIES, ReportEntry};
use pias_proto::{ProxyId, TransportAddr};
use smallvec::SmallVec;

use crate::lru::LruMap;
use crate::time::Instant;

/// How a RAP picks the JAP set it answers (SPEC.md §9.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RapPolicy {
    /// The JAPs nearest to the IAP (within `proximity_slack` × the nearest distance), at most 4, by count.
    #[default]
    Proximity,
    /// Up to 16 JAPs with the largest counts, weighted by count.
    Load,
    /// Like `Load` but identical for every IAP, so a flow maps to the same JAP from any IAP.
    Affinity,
    /// Up to 16 JAPs, equal weights.
    Random,
}

impl core::str::FromStr for RapPolicy {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "proximity" => RapPolicy::Proximity,
            "load" => RapPolicy::Load,
            "affinity" => RapPolicy::Affinity,
            "random" => RapPolicy::Random,
            _ => return Err("expected one of: proximity, load, affinity, random"),
        })
    }
}

/// What the RAP needs to know about proxies: liveness and distances (from membership and coordinates).
pub trait Topology {
    /// Whether data may be sent to `id` (status Alive).
    fn usable(&self, id: ProxyId) -> bool;
    /// Estimated RTT in milliseconds between two proxies, if both have coordinates.
    fn distance_ms(&self, a: ProxyId, b: ProxyId) -> Option<f64>;
}

/// RAP settings (SPEC.md §14).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RapConfig {
    pub max_groups: usize,
    pub max_japs_per_group: usize,
    pub report_expiry: Duration,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub proximity_slack: f64,
    pub proximity_max: usize,
    /// Groups one JAP may have in this table (SPEC.md §9.1): a member reporting more is refused the excess
    /// (counted), so one proxy cannot fill the table. Default: what one JAP can hold, its registrations.
    pub max_groups_per_jap: usize,
    /// Largest target count a report may claim: what one JAP can hold for one group (`targets_per_group`,
    /// at most 4095). Larger counts are capped (counted), so one member cannot outweigh every other JAP.
    pub max_count: u32,
    /// Largest `load` a report may claim (per-mille of the JAP's capacity, SPEC.md §9.1); larger loads are
    /// capped (counted). Anything at or above 1000 already means "full", so the cap only keeps the figure
    /// in a range state dumps can show meaningfully.
    pub max_load: u16,
}

impl Default for RapConfig {
    fn default() -> Self {
        RapConfig {
            max_groups: 262_144,
            max_japs_per_group: 1024,
            report_expiry: Duration::from_secs(90),
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(2),
            proximity_slack: 1.25,
            proximity_max: 4,
            max_groups_per_jap: 65_536,
            max_count: crate::registry::MAX_TABLE_MEMBERS as u32,
            max_load: 10_000,
        }
    }
}

impl RapConfig {
    /// Checks every field; the error names the field and the fix. That `report_expiry` exceeds the JAPs'
    /// report refresh is checked by [`ProxyConfig::validate`](crate::proxy::ProxyConfig::validate), which
    /// sees both.
    pub fn validate(&self) -> Result<(), crate::proxy::ConfigError> {
        use crate::proxy::{ConfigError, ConfigPart::Rap};
        if self.max_groups == 0 {
            return Err(ConfigError::field(
                Rap,
                "max_groups",
                "must be at least 1 (default 262144)",
            ));
        }
        if self.max_japs_per_group == 0 {
            return Err(ConfigError::field(
                Rap,
                "max_japs_per_group",
                "must be at least 1 (default 1024)",
            ));
        }
        for (field, d, fix) in [
            (
                "report_expiry",
                self.report_expiry,
                "must be at least 1 ms (default 90 s)",
            ),
            (
                "cache_ttl",
                self.cache_ttl,
                "must be at least 1 ms (default 60 s)",
            ),
            (
                "negative_ttl",
                self.negative_ttl,
                "must be at least 1 ms (default 2 s)",
            ),
        ] {
            if d.is_zero() {
                return Err(ConfigError::field(Rap, field, fix));
            }
        }
        if !(self.proximity_slack >= 1.0 && self.proximity_slack.is_finite()) {
            return Err(ConfigError::field(
                Rap,
                "proximity_slack",
                "must be a finite number >= 1 (default 1.25)",
            ));
        }
        if self.proximity_max == 0 {
            return Err(ConfigError::field(
                Rap,
                "proximity_max",
                "must be at least 1 (default 4)",
            ));
        }
        if self.max_groups_per_jap == 0 {
            return Err(ConfigError::field(
                Rap,
                "max_groups_per_jap",
                "must be at least 1 (default 65536)",
            ));
        }
        if self.max_count == 0 {
            return Err(ConfigError::field(
                Rap,
                "max_count",
                "must be at least 1 (default 4095)",
            ));
        }
        if self.max_load < ReportEntry::LOAD_FULL {
            return Err(ConfigError::field(
                Rap,
                "max_load",
                "must be at least 1000, a JAP at capacity (default 10000)",
            ));
        }
        Ok(())
    }
}

/// One JAP as a RAP knows it for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JapInfo {
    pub jap: ProxyId,
    pub count: u32,
    pub flags: u8,
    /// The JAP's last reported load, per-mille of its capacity (0: not loaded or no capacity set).
    pub load: u16,
    pub last_report: Instant,
}

impl JapInfo {
    /// Whether the JAP reported itself at or over its capacity for new flows.
    pub fn full(&self) -> bool {
        self.load >= ReportEntry::LOAD_FULL
    }

    /// The JAP's weight in an answer: its target count scaled by its spare capacity,
    /// `count × (1000 − load) / 1000`, at least 1 (SPEC.md §9.5). A full JAP gets its bare count: it is
    /// answered only when every candidate is full, and then the counts are all there is to go by.
    pub fn weight(&self) -> u32 {
        if self.full() {
            return self.count;
        }
        let spare = u64::from(ReportEntry::LOAD_FULL - self.load);
        let w = u64::from(self.count) * spare / u64::from(ReportEntry::LOAD_FULL);
        (w as u32).max(1)
    }
}

type JapList = SmallVec<[JapInfo; 4]>;

counters! {
    /// RAP counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct RapCounters("rap_") {
        reports,
        report_entries,
        groups_refused,
        japs_refused,
        /// Report entries refused because their JAP already had `max_groups_per_jap` groups here.
        jap_groups_refused,
        /// Report entries whose count was above `max_count` (applied capped).
        counts_capped,
        /// Report entries whose load was above `max_load` (applied capped).
        loads_capped,
        /// Answers that left out JAPs at or over capacity (some candidate still had spare capacity).
        full_japs_skipped,
        expired,
        answers,
        empty_answers,
    }
}

/// The RAP table.
#[derive(Debug, Clone)]
pub struct RapTable {
    cfg: RapConfig,
    groups: LruMap<TransportAddr, JapList>,
    /// Groups each JAP is in here (only JAPs in at most one group; authenticated members only, so bounded
    /// by the member table).
    per_jap: BTreeMap<ProxyId, usize>,
    counters: RapCounters,
}

/// One group fewer for `jap` in `per_jap`.
fn forget(per_jap: &mut BTreeMap<ProxyId, usize>, jap: ProxyId) {
    if let Some(n) = per_jap.get_mut(&jap) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_jap.remove(&jap);
        }
    }
}

impl RapTable {
    /// A table keyed by `key` (secret, SPEC.md §8.1).
    pub fn new(cfg: RapConfig, key: pias_proto::auth::SipKey) -> Self {
        RapTable {
            cfg,
            groups: LruMap::new(cfg.max_groups, key),
            per_jap: BTreeMap::new(),
            counters: RapCounters::default(),
        }
    }

    /// Applies one report entry from `jap`. A count of 0 removes the JAP from the group. A count is capped
    /// at `max_count`, and a JAP gets at most `max_groups_per_jap` groups (SPEC.md §9.1): a report is
    /// trusted to come from its member, not to be plausible.
    pub fn handle_report(&mut self, now: Instant, jap: ProxyId, e: &ReportEntry) {
        self.counters.report_entries += 1;
        if e.count == 0 {
            let (empty, removed) = match self.groups.peek_mut(&e.group) {
                Some(list) => {
                    let before = list.len();
                    list.retain(|j| j.jap != jap);
                    (list.is_empty(), list.len() < before)
                }
                None => (false, false),
            };
            if removed {
                forget(&mut self.per_jap, jap);
            }
            if empty {
                self.groups.remove(&e.group);
            }
            return;
        }
        let count = if e.count > self.cfg.max_count {
            self.counters.counts_capped += 1;
            self.cfg.max_count
        } else {
            e.count
        };
        let load = if e.load > self.cfg.max_load {
            self.counters.loads_capped += 1;
            self.cfg.max_load
        } else {
            e.load
        };
        let info = JapInfo {
            jap,
            count,
            flags: e.flags,
            load,
            last_report: now,
        };
        let known = self
            .groups
            .peek(&e.group)
            .is_some_and(|l| l.iter().any(|j| j.jap == jap));
        if !known && self.per_jap.get(&jap).copied().unwrap_or(0) >= self.cfg.max_groups_per_jap {
            self.counters.jap_groups_refused += 1;
            return;
        }
        if self.groups.peek(&e.group).is_none() {
            if self.groups.len() >= self.groups.capacity() {
                // SPEC §14: new groups are refused when the table is full (reports are soft state; the JAP
                // retries at its next refresh).
                self.counters.groups_refused += 1;
                return;
            }
            self.groups.insert(e.group, JapList::new());
        }
        let max = self.cfg.max_japs_per_group;
        let Some(list) = self.groups.peek_mut(&e.group) else {
            return;
        };
        if let Some(j) = list.iter_mut().find(|j| j.jap == jap) {
            *j = info;
        } else if list.len() < max {
            list.push(info);
            *self.per_jap.entry(jap).or_insert(0) += 1;
        } else if let Some((i, smallest)) = list.iter().enumerate().min_by_key(|(_, j)| (j.count, j.jap)) {
            if smallest.count < info.count {
                let old = smallest.jap;
                list[i] = info;
                forget(&mut self.per_jap, old);
                *self.per_jap.entry(jap).or_insert(0) += 1;
            } else {
                self.counters.japs_refused += 1;
            }
        }
    }

    /// Groups `jap` has in this table.
    pub fn groups_of(&self, jap: ProxyId) -> usize {
        self.per_jap.get(&jap).copied().unwrap_or(0)
    }

    /// Counts one received Report message.
    pub fn note_report_message(&mut self) {
        self.counters.reports += 1;
    }

    /// The JAP set for `iap` under `policy`; returns the number of entries written to `out` (0: no JAP).
    /// Skips unusable and expired JAPs. No allocation.
    pub fn select(
        &mut self,
        now: Instant,
        group: &TransportAddr,
        iap: ProxyId,
        policy: RapPolicy,
        topo: &impl Topology,
        out: &mut [AnswerEntry; MAX_ANSWER_ENTRIES],
    ) -> usize {
        self.select_excluding(now, group, iap, policy, topo, None, out)
    }

    /// [`RapTable::select`] as if `exclude` were not a JAP of the group: for a flow that JAP handed off
    /// because its only targets are the client (SPEC.md §9.5), the set the policy would choose among the
    /// others — with `proximity`, the ones nearest the IAP after it.
    #[allow(clippy::too_many_arguments)]
    pub fn select_excluding(
        &mut self,
        now: Instant,
        group: &TransportAddr,
        iap: ProxyId,
        policy: RapPolicy,
        topo: &impl Topology,
        exclude: Option<ProxyId>,
        out: &mut [AnswerEntry; MAX_ANSWER_ENTRIES],
    ) -> usize {
        self.counters.answers += 1;
        let expiry = self.cfg.report_expiry;
        let Some(list) = self.groups.peek(group) else {
            self.counters.empty_answers += 1;
            return 0;
        };
        // Candidates: usable, fresh JAPs, largest count first (ties by id, so every RAP and IAP agrees).
        let mut cand: SmallVec<[JapInfo; 32]> = SmallVec::new();
        let rank = |c: &JapInfo| (c.count, core::cmp::Reverse(c.jap));
        for j in list.iter().filter(|j| {
            topo.usable(j.jap) && now.saturating_since(j.last_report) < expiry && Some(j.jap) != exclude
        }) {
            if cand.len() < cand.inline_size() {
                cand.push(*j);
            } else if let Some((i, m)) = cand.iter().enumerate().min_by_key(|(_, c)| rank(c))
                && rank(m) < rank(j)
            {
                // Keep the 32 largest without spilling to the heap.
                cand[i] = *j;
            }
        }
        // Load (SPEC.md §9.5): JAPs at or over capacity are left out while any candidate has spare capacity,
        // so new flows go where there is room; the rest are weighted by spare capacity below.
        if cand.iter().any(|c| !c.full()) && cand.iter().any(|c| c.full()) {
            cand.retain(|c| !c.full());
            self.counters.full_japs_skipped += 1;
        }
        cand.sort_unstable_by(|a, b| b.count.cmp(&a.count).then(a.jap.cmp(&b.jap)));
        let n = match policy {
            RapPolicy::Load | RapPolicy::Affinity => {
                let n = cand.len().min(MAX_ANSWER_ENTRIES);
                for (o, c) in out.iter_mut().zip(&cand[..n]) {
                    *o = AnswerEntry {
                        jap: c.jap,
                        weight: c.weight(),
                    };
                }
                n
            }
            RapPolicy::Random => {
                let n = cand.len().min(MAX_ANSWER_ENTRIES);
                for (o, c) in out.iter_mut().zip(&cand[..n]) {
                    *o = AnswerEntry {
                        jap: c.jap,
                        weight: 1,
                    };
                }
                n
            }
            RapPolicy::Proximity => {
                // Distance to the IAP; JAPs without coordinates count as far (but still serve if alone).
                let mut with_d: SmallVec<[(f64, JapInfo); 32]> = cand
                    .iter()
                    .map(|c| (topo.distance_ms(iap, c.jap).unwrap_or(f64::MAX), *c))
                    .collect();
                with_d.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.jap.cmp(&b.1.jap)));
                let nearest = with_d.first().map(|x| x.0).unwrap_or(0.0);
                let limit = if nearest == f64::MAX {
                    f64::MAX
                } else {
                    nearest * self.cfg.proximity_slack + 0.5
                };
                let mut n = 0;
                for (d, c) in with_d.iter() {
                    if n >= self.cfg.proximity_max.min(MAX_ANSWER_ENTRIES) || *d > limit {
                        break;
                    }
                    out[n] = AnswerEntry {
                        jap: c.jap,
                        weight: c.weight(),
                    };
                    n += 1;
                }
                n
            }
        };
        if n == 0 {
            self.counters.empty_answers += 1;
        }
        n
    }

    /// The TTL to put in an answer with `n` entries.
    pub fn ttl_ms(&self, n: usize) -> u32 {
        let d = if n == 0 {
            self.cfg.negative_ttl
        } else {
            self.cfg.cache_ttl
        };
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
    }

    /// Drops expired and unusable JAPs, visiting at most `budget` groups (least recently reported first).
    pub fn sweep(&mut self, now: Instant, budget: usize, topo: &impl Topology) -> usize {
        let expiry = self.cfg.report_expiry;
        let mut expired = 0u64;
        let per_jap = &mut self.per_jap;
        let removed = self.groups.retain_budgeted(budget, |_, list| {
            let before = list.len();
            list.retain(|j| {
                let keep = topo.usable(j.jap) && now.saturating_since(j.last_report) < expiry;
                if !keep {
                    forget(per_jap, j.jap);
                }
                keep
            });
            expired += (before - list.len()) as u64;
            !list.is_empty()
        });
        self.counters.expired += expired;
        removed
    }

    /// The JAPs known for a group.
    pub fn japs(&self, group: &TransportAddr) -> &[JapInfo] {
        self.groups.peek(group).map(|l| &l[..]).unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TransportAddr, &[JapInfo])> + '_ {
        self.groups.iter().map(|(g, l)| (g, &l[..]))
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn counters(&self) -> &RapCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pias_proto::IpProtocol;

    struct Line;
    /// Proxies on a line: distance = |a - b| ms; proxy 99 is down.
    impl Topology for Line {
        fn usable(&self, id: ProxyId) -> bool {
            id.0 != 99
        }
        fn distance_ms(&self, a: ProxyId, b: ProxyId) -> Option<f64> {
            Some((f64::from(a.0) - f64::from(b.0)).abs())
        }
    }

    fn g() -> TransportAddr {
        TransportAddr::new("10.99.0.1".parse().unwrap(), 80, IpProtocol::Tcp)
    }

    fn rep(count: u32) -> ReportEntry {
        ReportEntry {
            group: g(),
            count,
            flags: 0,
            load: 0,
        }
    }

    fn sel(t: &mut RapTable, now: Instant, iap: u32, p: RapPolicy) -> Vec<(u32, u32)> {
        let mut out = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        let n = t.select(now, &g(), ProxyId(iap), p, &Line, &mut out);
        out[..n].iter().map(|e| (e.jap.0, e.weight)).collect()
    }

    #[test]
    fn policies_pick_as_specified() {
        let mut t = RapTable::new(RapConfig::default(), crate::secrets::table_key_for_tests(1));
        let now = Instant::from_secs(10);
        for (jap, count) in [(10, 5), (20, 50), (12, 7), (99, 100), (40, 1)] {
            t.handle_report(now, ProxyId(jap), &rep(count));
        }
        // Load: by count, the dead JAP 99 skipped.
        assert_eq!(
            sel(&mut t, now, 11, RapPolicy::Load),
            vec![(20, 50), (12, 7), (10, 5), (40, 1)]
        );
        assert_eq!(
            sel(&mut t, now, 30, RapPolicy::Affinity),
            sel(&mut t, now, 1, RapPolicy::Affinity)
        );
        assert!(
            sel(&mut t, now, 11, RapPolicy::Random)
                .iter()
                .all(|(_, w)| *w == 1)
        );
        // Proximity from IAP 11: JAPs 10 and 12 at distance 1 (slack keeps both), 20 at 9 is too far.
        assert_eq!(sel(&mut t, now, 11, RapPolicy::Proximity), vec![(10, 5), (12, 7)]);
        // From IAP 38: 40 is nearest (2), nothing else within 1.25 × 2 + 0.5.
        assert_eq!(sel(&mut t, now, 38, RapPolicy::Proximity), vec![(40, 1)]);
    }

    #[test]
    fn reports_expire_and_zero_removes() {
        let mut t = RapTable::new(RapConfig::default(), crate::secrets::table_key_for_tests(1));
        let t0 = Instant::from_secs(10);
        t.handle_report(t0, ProxyId(1), &rep(3));
        t.handle_report(t0, ProxyId(2), &rep(3));
        t.handle_report(t0, ProxyId(2), &rep(0));
        assert_eq!(sel(&mut t, t0, 1, RapPolicy::Load), vec![(1, 3)]);
        let late = t0 + Duration::from_secs(91);
        assert_eq!(sel(&mut t, late, 1, RapPolicy::Load), vec![]);
        assert_eq!(t.sweep(late, 100, &Line), 1);
        assert!(t.is_empty());
        assert_eq!(t.counters().expired, 1);
    }

    #[test]
    fn bounds_hold() {
        let cfg = RapConfig {
            max_groups: 2,
            max_japs_per_group: 2,
            ..RapConfig::default()
        };
        let mut t = RapTable::new(cfg, crate::secrets::table_key_for_tests(1));
        let now = Instant::from_secs(1);
        for port in 0..5u16 {
            let e = ReportEntry {
                group: TransportAddr::new("10.0.0.1".parse().unwrap(), port, IpProtocol::Udp),
                count: 1,
                flags: 0,
                load: 0,
            };
            t.handle_report(now, ProxyId(1), &e);
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.counters().groups_refused, 3);
        t.handle_report(now, ProxyId(5), &rep(1));
        // Group g() was refused above only if the table was full; use a fresh table for per-group bounds.
        let mut t = RapTable::new(
            RapConfig {
                max_japs_per_group: 2,
                ..RapConfig::default()
            },
            crate::secrets::table_key_for_tests(1),
        );
        t.handle_report(now, ProxyId(1), &rep(1));
        t.handle_report(now, ProxyId(2), &rep(5));
        t.handle_report(now, ProxyId(3), &rep(3)); // replaces JAP 1 (smaller)
        t.handle_report(now, ProxyId(4), &rep(1)); // refused: not larger than the smallest
        let mut ids: Vec<u32> = t.japs(&g()).iter().map(|j| j.jap.0).collect();
        ids.sort();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(t.counters().japs_refused, 1);
    }

    #[test]
    fn reports_are_bounded_by_what_a_jap_can_hold() {
        let mut t = RapTable::new(
            RapConfig {
                max_groups_per_jap: 3,
                ..RapConfig::default()
            },
            crate::secrets::table_key_for_tests(1),
        );
        let now = Instant::from_secs(1);
        let grp = |p: u16| TransportAddr::new("10.99.0.1".parse().unwrap(), p, IpProtocol::Udp);
        let entry = |p: u16, count: u32| ReportEntry {
            group: grp(p),
            count,
            flags: 0,
            load: 0,
        };
        // A count above what one JAP can hold is capped.
        t.handle_report(now, ProxyId(5), &entry(1, u32::MAX));
        assert_eq!(t.japs(&grp(1))[0].count, RapConfig::default().max_count);
        assert_eq!(t.counters().counts_capped, 1);
        // Groups per JAP: the fourth is refused, others' reports are not affected.
        for p in 2..=4 {
            t.handle_report(now, ProxyId(5), &entry(p, 1));
        }
        assert_eq!(t.groups_of(ProxyId(5)), 3);
        assert!(t.japs(&grp(4)).is_empty());
        assert_eq!(t.counters().jap_groups_refused, 1);
        assert_eq!(t.len(), 3, "a refused report creates no group");
        t.handle_report(now, ProxyId(6), &entry(4, 1));
        assert_eq!(t.japs(&grp(4)).len(), 1);
        // Updating a group it is in is not a new group; leaving one frees a place.
        t.handle_report(now, ProxyId(5), &entry(2, 9));
        assert_eq!(t.counters().jap_groups_refused, 1);
        t.handle_report(now, ProxyId(5), &entry(2, 0));
        assert_eq!(t.groups_of(ProxyId(5)), 2);
        t.handle_report(now, ProxyId(5), &entry(4, 1));
        assert_eq!(t.groups_of(ProxyId(5)), 3);
        // Expiry gives the places back.
        let later = now + RapConfig::default().report_expiry + Duration::from_secs(1);
        t.sweep(later, usize::MAX, &Line);
        assert_eq!(t.groups_of(ProxyId(5)), 0);
        assert_eq!(t.groups_of(ProxyId(6)), 0);
        assert!(t.is_empty());
    }

    fn rep_load(count: u32, load: u16) -> ReportEntry {
        ReportEntry { load, ..rep(count) }
    }

    /// SPEC.md §9.5: weights follow spare capacity; a full JAP is left out while another has room, and
    /// answered again (by count) when every JAP is full.
    #[test]
    fn answers_weight_spare_capacity_and_skip_full_japs() {
        let mut t = RapTable::new(RapConfig::default(), crate::secrets::table_key_for_tests(1));
        let now = Instant::from_secs(10);
        t.handle_report(now, ProxyId(1), &rep_load(100, 0));
        t.handle_report(now, ProxyId(2), &rep_load(100, 750));
        t.handle_report(now, ProxyId(3), &rep_load(100, 999));
        assert_eq!(
            sel(&mut t, now, 1, RapPolicy::Load),
            vec![(1, 100), (2, 25), (3, 1)]
        );
        assert_eq!(t.counters().full_japs_skipped, 0);
        t.handle_report(now, ProxyId(1), &rep_load(100, 1000));
        assert_eq!(sel(&mut t, now, 1, RapPolicy::Load), vec![(2, 25), (3, 1)]);
        assert_eq!(t.counters().full_japs_skipped, 1);
        // Proximity chooses among the JAPs with room: from IAP 1, JAP 2 is now the nearest.
        assert_eq!(sel(&mut t, now, 1, RapPolicy::Proximity), vec![(2, 25)]);
        for jap in [2, 3] {
            t.handle_report(now, ProxyId(jap), &rep_load(100, 5000));
        }
        assert_eq!(
            sel(&mut t, now, 1, RapPolicy::Load),
            vec![(1, 100), (2, 100), (3, 100)]
        );
        // Implausible loads are capped, still "full".
        t.handle_report(now, ProxyId(3), &rep_load(100, u16::MAX));
        assert_eq!(t.counters().loads_capped, 1);
        assert_eq!(
            t.japs(&g()).iter().find(|j| j.jap == ProxyId(3)).unwrap().load,
            10_000
        );
    }

    proptest::proptest! {
        /// Whatever the reports, each JAP's group count equals the groups that list it, and stays within
        /// the bound.
        #[test]
        fn per_jap_counts_match_the_table(
            ops in proptest::collection::vec((1u32..5, 0u16..6, 0u32..4), 1..120),
        ) {
            let mut t = RapTable::new(
                RapConfig { max_groups_per_jap: 3, max_japs_per_group: 2, ..RapConfig::default() },
                crate::secrets::table_key_for_tests(1),
            );
            let now = Instant::from_secs(1);
            for (jap, port, count) in ops {
                let e = ReportEntry {
                    group: TransportAddr::new("10.99.0.1".parse().unwrap(), port, IpProtocol::Udp),
                    count,
                    flags: 0,
                    load: 0,
                };
                t.handle_report(now, ProxyId(jap), &e);
                for j in 1..5 {
                    let listed = t.iter().filter(|(_, l)| l.iter().any(|x| x.jap == ProxyId(j))).count();
                    proptest::prop_assert_eq!(t.groups_of(ProxyId(j)), listed);
                    proptest::prop_assert!(listed <= 3);
                }
            }
        }
    }
}
