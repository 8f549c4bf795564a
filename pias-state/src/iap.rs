//! The IAP's cache: group → the JAP set a RAP answered, with the slot table that maps a flow to one JAP.
//!
//! SPEC.md §9.3. Per packet the IAP does one cache lookup and one table read: the flow hash is computed by the
//! caller (it is also what XDP computes), `table[hash mod 251]` names the JAP. Because the slot table depends
//! only on the JAP set and its weights (§13.3), every IAP holding the same answer sends a flow to the same
//! JAP, which is what keeps a TCP connection alive across a change of IAP under the `affinity` policy.
//!
//! Entry states: *resolved* (a JAP set, until `expires`; then *stale* for `stale_grace` while a Resolve is
//! sent), *negative* (the RAP said no JAP; packets are dropped until `expires`), *pending* (a packet went to
//! the RAP with WANT_ANSWER; later packets go to the RAP too, asking again at most every `resolve_retry`).

use core::time::Duration;

use pias_proto::control::Answer;
use pias_proto::{ProxyId, TransportAddr};

use crate::flowhash::{MAX_JAPS, MaglevTable};
use crate::lru::LruMap;
use crate::time::Instant;
use pias_proto::auth::SipKey;

/// IAP settings (SPEC.md §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IapConfig {
    pub cache_entries: usize,
    pub stale_grace: Duration,
    pub resolve_retry: Duration,
    /// Longest validity an Answer's `ttl_ms` may give an entry (SPEC.md §9.3); longer ones are capped.
    pub max_ttl: Duration,
    /// How long after a JAP's Invalidate(draining) the flows it may already serve stay pinned to it
    /// (SPEC.md §9.6). Each further draining Invalidate from it extends the hold.
    pub drain_hold: Duration,
    /// Groups with a draining JAP remembered at once; beyond it the least recently drained is forgotten
    /// (counted `iap_drains_evicted`: its established flows then follow the new answer).
    pub max_drains: usize,
    /// Flows started during drains whose first JAP the IAP remembers (SPEC.md §9.6). When full, further
    /// new flows are not steered (counted `iap_drain_fresh_full`): they stay at the draining JAP.
    pub max_drain_flows: usize,
}

impl Default for IapConfig {
    fn default() -> Self {
        IapConfig {
            cache_entries: 65_536,
            stale_grace: Duration::from_secs(10),
            resolve_retry: Duration::from_millis(250),
            max_ttl: Duration::from_secs(300),
            drain_hold: Duration::from_secs(120),
            max_drains: 256,
            max_drain_flows: 16_384,
        }
    }
}

impl IapConfig {
    /// Checks every field; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), crate::proxy::ConfigError> {
        use crate::proxy::{ConfigError, ConfigPart::Iap};
        // One table of the rules, in the order they are checked: the first broken one is the error.
        let counts = [
            (
                "cache_entries",
                self.cache_entries,
                "must be at least 1 (default 65536)",
            ),
            ("max_drains", self.max_drains, "must be at least 1 (default 256)"),
            (
                "max_drain_flows",
                self.max_drain_flows,
                "must be at least 1 (default 16384)",
            ),
        ];
        let times = [
            (
                "resolve_retry",
                self.resolve_retry,
                "must be at least 1 ms (default 250 ms)",
            ),
            ("max_ttl", self.max_ttl, "must be at least 1 ms (default 300 s)"),
            (
                "drain_hold",
                self.drain_hold,
                "must be at least 1 ms (default 120 s)",
            ),
        ];
        if let Some((field, _, fix)) = counts[..1].iter().find(|c| c.1 == 0) {
            return Err(ConfigError::field(Iap, field, *fix));
        }
        if let Some((field, _, fix)) = times.iter().find(|t| t.1.is_zero()) {
            return Err(ConfigError::field(Iap, field, *fix));
        }
        if let Some((field, _, fix)) = counts[1..].iter().find(|c| c.1 == 0) {
            return Err(ConfigError::field(Iap, field, *fix));
        }
        Ok(())
    }
}

// Entries live in a preallocated slab, so the large variant costs no allocation; boxing it would.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum State {
    Resolved {
        table: MaglevTable,
        weights: [u32; MAX_JAPS],
    },
    Negative,
    Pending,
}

/// One cached group.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    state: State,
    /// End of validity (Resolved, Negative) — for Pending, when the WANT_ANSWER/Resolve was last sent.
    expires: Instant,
    last_ask: Option<Instant>,
}

impl CacheEntry {
    /// The JAPs of a resolved entry, sorted by id, with their weights.
    pub fn japs(&self) -> impl Iterator<Item = (ProxyId, u32)> + '_ {
        let (ids, weights): (&[ProxyId], &[u32]) = match &self.state {
            State::Resolved { table, weights } => (table.ids(), &weights[..]),
            _ => (&[], &[]),
        };
        ids.iter().copied().zip(weights.iter().copied())
    }

    /// The slot table of a resolved entry (what XDP maps hold).
    pub fn table(&self) -> Option<&MaglevTable> {
        match &self.state {
            State::Resolved { table, .. } => Some(table),
            _ => None,
        }
    }

    pub fn expires(&self) -> Instant {
        self.expires
    }

    pub fn is_negative(&self) -> bool {
        matches!(self.state, State::Negative)
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending)
    }
}

/// What the IAP does with a client's packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Send to this JAP. `resolve`: also send a Resolve to a RAP (the entry is stale).
    Jap { jap: ProxyId, resolve: bool },
    /// Send through a RAP; `want_answer`: set WANT_ANSWER on this frame.
    ViaRap { want_answer: bool },
    /// The group has no JAP now (negative answer): drop.
    NoJap,
}

impl Route {
    /// The JAP the packet goes to directly, if any.
    pub fn jap(&self) -> Option<ProxyId> {
        match self {
            Route::Jap { jap, .. } => Some(*jap),
            _ => None,
        }
    }
}

/// Changes of the cache, for events and XDP map sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheChange {
    Installed(TransportAddr),
    Removed(TransportAddr),
}

counters! {
    /// IAP counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct IapCounters("iap_") {
        hits,
        misses,
        stale_hits,
        negative_drops,
        answers_installed,
        /// Answers for a group this IAP had no question outstanding for (SPEC.md §9.3).
        answers_ignored,
        /// Answers whose `ttl_ms` was above `max_ttl` (installed with `max_ttl`).
        ttls_capped,
        invalidations,
        evictions,
        /// Invalidate(draining) received: a JAP over capacity asked for new flows to go elsewhere.
        drains,
        /// Packets of established flows sent to their draining JAP rather than by the entry's table.
        drain_pinned,
        /// New flows steered away from a draining JAP before the RAP's new answer arrived.
        drain_steered,
        /// New flows left at a draining JAP because the table of flows started during drains was full.
        drain_fresh_full,
        drains_expired,
        drains_evicted,
    }
}

/// A JAP that asked this IAP to send a group's new flows elsewhere (Invalidate with reason draining,
/// SPEC.md §9.6), while the flows it already serves stay with it.
#[derive(Debug, Clone)]
struct Drain {
    jap: ProxyId,
    /// The entry's slot table when the first drain came: a flow it maps to `jap` may have a binding there.
    before: MaglevTable,
    /// The table without `jap` (`None` if it was the only JAP): new flows use it until the RAP answers.
    rest: Option<MaglevTable>,
    /// Whether an answer was installed since: then new flows follow the entry (the RAP's load-aware
    /// choice), and `rest` is no longer used.
    answered: bool,
    until: Instant,
}

/// The IAP cache.
#[derive(Debug, Clone)]
pub struct IapCache {
    cfg: IapConfig,
    key: SipKey,
    map: LruMap<TransportAddr, CacheEntry>,
    /// Groups with a draining JAP (bounded by `max_drains`); empty in the common case, which keeps the
    /// per-packet cost to one `is_empty` check.
    drains: LruMap<TransportAddr, Drain>,
    /// Flows (by flow hash) started during a drain that the table's old choice sent to the draining JAP,
    /// and the JAP their first packet went to instead (bounded by `max_drain_flows`, cleared when the
    /// last drain ends).
    /// Allocated at the first drain, freed when the last one ends.
    fresh: Option<LruMap<u64, ProxyId>>,
    /// The key `fresh` is built with.
    fresh_key: SipKey,
    counters: IapCounters,
}

impl IapCache {
    /// A cache choosing JAPs by `flow_key` (shared by all proxies, §13.2), its table keyed by `table_key`
    /// (this proxy's secret, §8.1).
    pub fn new(cfg: IapConfig, flow_key: SipKey, table_key: SipKey) -> Self {
        IapCache {
            cfg,
            key: flow_key,
            map: LruMap::new(cfg.cache_entries, table_key),
            drains: LruMap::new(cfg.max_drains, table_key),
            fresh: None,
            fresh_key: table_key,
            counters: IapCounters::default(),
        }
    }

    /// Decides where a client's packet for `group` goes (per packet: one lookup, no allocation).
    /// `established`: the packet cannot start a flow (a TCP segment without SYN), so while a JAP of the
    /// group drains it keeps going to that JAP if the JAP may hold its binding (SPEC.md §9.6).
    pub fn route(&mut self, now: Instant, group: &TransportAddr, flow_hash: u64, established: bool) -> Route {
        self.route_lazy(now, group, || flow_hash, established)
    }

    /// [`IapCache::route`] with the flow hash computed on demand: with no drain, only a cached JAP set of
    /// more than one JAP needs it ([`crate::flowhash::MaglevTable::pick_id_lazy`]).
    pub fn route_lazy(
        &mut self,
        now: Instant,
        group: &TransportAddr,
        flow_hash: impl FnOnce() -> u64,
        established: bool,
    ) -> Route {
        if self.drains.is_empty() {
            return self.route_entry(now, group, flow_hash);
        }
        // A drain decides per flow: the hash is needed whatever the entry holds.
        let flow_hash = flow_hash();
        let route = self.route_entry(now, group, || flow_hash);
        let Route::Jap { jap, resolve } = route else {
            return route;
        };
        let Some(d) = self.drains.peek(group).filter(|d| now < d.until) else {
            return route;
        };
        // Only flows the table mapped to the draining JAP when the drain came can be its connections.
        if d.before.pick_id(flow_hash) != Some(d.jap) {
            return route;
        }
        let drained = d.jap;
        // A flow started during the drain goes where its first packet went.
        let fresh = self
            .fresh
            .get_or_insert_with(|| LruMap::new(self.cfg.max_drain_flows, self.fresh_key));
        if let Some(to) = fresh.get_mut(&flow_hash).map(|j| *j) {
            return Route::Jap { jap: to, resolve };
        }
        if established {
            // A connection that may have its binding at the draining JAP stays there.
            if jap != drained {
                self.counters.drain_pinned += 1;
            }
            return Route::Jap {
                jap: drained,
                resolve,
            };
        }
        // A new flow: away from the draining JAP until the RAP answers, then as the answer says.
        let to = match d.rest.as_ref().and_then(|t| t.pick_id(flow_hash)) {
            Some(other) if jap == drained && !d.answered => other,
            _ => jap,
        };
        if to == drained {
            return route;
        }
        // Remember where it went, so its later packets (which do not start a flow) follow; with no room
        // left, the flow stays at the draining JAP rather than risk being split later.
        if fresh.len() >= fresh.capacity() {
            self.counters.drain_fresh_full += 1;
            return Route::Jap {
                jap: drained,
                resolve,
            };
        }
        fresh.insert(flow_hash, to);
        if to != jap {
            self.counters.drain_steered += 1;
        }
        Route::Jap { jap: to, resolve }
    }

    fn route_entry(&mut self, now: Instant, group: &TransportAddr, flow_hash: impl FnOnce() -> u64) -> Route {
        let retry = self.cfg.resolve_retry;
        let grace = self.cfg.stale_grace;
        let Some(e) = self.map.get_mut(group) else {
            self.counters.misses += 1;
            let evicted = self.map.insert(
                *group,
                CacheEntry {
                    state: State::Pending,
                    expires: now,
                    last_ask: Some(now),
                },
            );
            if evicted.is_some() {
                self.counters.evictions += 1;
            }
            return Route::ViaRap { want_answer: true };
        };
        let ask_due = e.last_ask.is_none_or(|t| now.saturating_since(t) >= retry);
        match &e.state {
            State::Resolved { table, .. } => {
                let Some(jap) = table.pick_id_lazy(flow_hash) else {
                    return Route::ViaRap { want_answer: ask_due };
                };
                if now < e.expires {
                    self.counters.hits += 1;
                    Route::Jap { jap, resolve: false }
                } else if now < e.expires + grace {
                    self.counters.stale_hits += 1;
                    if ask_due {
                        e.last_ask = Some(now);
                    }
                    Route::Jap {
                        jap,
                        resolve: ask_due,
                    }
                } else {
                    self.counters.misses += 1;
                    e.state = State::Pending;
                    e.last_ask = Some(now);
                    Route::ViaRap { want_answer: true }
                }
            }
            State::Negative if now < e.expires => {
                self.counters.negative_drops += 1;
                Route::NoJap
            }
            State::Negative | State::Pending => {
                self.counters.misses += 1;
                if !matches!(e.state, State::Pending) {
                    e.state = State::Pending;
                }
                if ask_due {
                    e.last_ask = Some(now);
                }
                Route::ViaRap { want_answer: ask_due }
            }
        }
    }

    /// Installs an Answer received from a RAP, only if this IAP asked for the group (a pending entry, or a
    /// stale one that sent a Resolve) and not yet answered; otherwise ignores it (counted). `None` when
    /// ignored. An authenticated member can still send what nobody asked for; the cache takes only answers
    /// to its own questions, for no longer than `max_ttl` (SPEC.md §9.3).
    pub fn accept_answer(
        &mut self,
        now: Instant,
        answer: &Answer,
        usable: impl Fn(ProxyId) -> bool,
    ) -> Option<CacheChange> {
        let asked = self.map.peek(&answer.group).is_some_and(|e| e.last_ask.is_some());
        if !asked {
            self.counters.answers_ignored += 1;
            return None;
        }
        Some(self.install(now, answer, usable))
    }

    /// Installs a RAP's answer. JAPs for which `usable` is false are left out (SPEC.md §9.3). Returns the
    /// change to report. This proxy's own RAP role calls it directly; answers from others go through
    /// [`IapCache::accept_answer`].
    pub fn install(
        &mut self,
        now: Instant,
        answer: &Answer,
        usable: impl Fn(ProxyId) -> bool,
    ) -> CacheChange {
        let mut list = [(ProxyId::NONE, 0u32); MAX_JAPS];
        let mut n = 0;
        for e in answer.japs() {
            if n < MAX_JAPS && usable(e.jap) && !list[..n].iter().any(|(id, _)| *id == e.jap) {
                list[n] = (e.jap, e.weight);
                n += 1;
            }
        }
        let mut ttl = Duration::from_millis(u64::from(answer.ttl_ms));
        if ttl > self.cfg.max_ttl {
            self.counters.ttls_capped += 1;
            ttl = self.cfg.max_ttl;
        }
        let expires = now + ttl;
        let state = if n == 0 {
            State::Negative
        } else {
            resolved(&self.key, &list[..n])
        };
        self.counters.answers_installed += 1;
        if let Some(d) = self.drains.peek_mut(&answer.group) {
            d.answered = true;
        }
        if self
            .map
            .insert(
                answer.group,
                CacheEntry {
                    state,
                    expires,
                    last_ask: None,
                },
            )
            .is_some()
        {
            self.counters.evictions += 1;
        }
        CacheChange::Installed(answer.group)
    }

    /// A JAP said it has no target for `group`: drop it from the entry (the whole entry if it was the last).
    pub fn invalidate(&mut self, group: &TransportAddr, jap: ProxyId) -> Option<CacheChange> {
        self.counters.invalidations += 1;
        if self.drains.peek(group).is_some_and(|d| d.jap == jap) {
            self.drains.remove(group);
            self.forget_fresh_if_idle();
        }
        self.remove_jap_from(group, jap)
    }

    /// A JAP over its capacity asked for `group`'s new flows to go elsewhere (Invalidate, draining; SPEC.md
    /// §9.6). The entry stays, so established flows keep their JAP, but is made due for a Resolve after
    /// `resolve_retry`; until the answer, new flows that the table maps to `jap` go to the others. Returns
    /// [`CacheChange::Removed`] when a drain starts (a fast path must hand the group's packets to the core
    /// while it lasts, as only the core tells established flows from new ones) and `None` otherwise.
    pub fn drain(&mut self, now: Instant, group: &TransportAddr, jap: ProxyId) -> Option<CacheChange> {
        self.counters.drains += 1;
        let until = now + self.cfg.drain_hold;
        // A JAP still over capacity extends its hold; the flows of before stay as they were.
        if let Some(d) = self.drains.peek_mut(group)
            && d.jap == jap
        {
            d.until = until;
            if let Some(e) = self.map.peek_mut(group)
                && e.table().is_some_and(|t| t.ids().contains(&jap))
            {
                e.expires = e.expires.min(now + self.cfg.resolve_retry);
            }
            return None;
        }
        let e = self.map.peek_mut(group)?;
        let State::Resolved { table, weights } = &e.state else {
            return None;
        };
        if !table.ids().contains(&jap) {
            return None;
        }
        // Due for a Resolve one `resolve_retry` from now (the stale path keeps using the entry meanwhile):
        // the JAP reports its load to the RAPs as it sends this, so asking at once would often get the
        // answer of before. New flows are steered away from the JAP until the answer comes.
        e.expires = e.expires.min(now + self.cfg.resolve_retry);
        let mut list = [(ProxyId::NONE, 0u32); MAX_JAPS];
        let mut n = 0;
        for (id, w) in table.ids().iter().zip(weights.iter()) {
            if *id != jap {
                list[n] = (*id, *w);
                n += 1;
            }
        }
        let d = Drain {
            jap,
            before: *table,
            rest: (n > 0).then(|| MaglevTable::build(&self.key, &list[..n])),
            answered: false,
            until,
        };
        if self.drains.insert(*group, d).is_some() {
            self.counters.drains_evicted += 1;
        }
        Some(CacheChange::Removed(*group))
    }

    /// Whether `group` has a draining JAP now (its packets must take the core's path).
    pub fn draining(&self, group: &TransportAddr) -> bool {
        self.drains.peek(group).is_some()
    }

    /// Ends the drains whose hold is over; `f` gets the change for each group still cached (the fast path
    /// may serve it again).
    pub fn expire_drains(&mut self, now: Instant, mut f: impl FnMut(CacheChange)) {
        if self.next_drain_end().is_none_or(|t| now < t) {
            return;
        }
        let mut ended: smallvec::SmallVec<[TransportAddr; 16]> = smallvec::SmallVec::new();
        let budget = self.drains.len();
        self.drains.retain_budgeted(budget, |g, d| {
            let keep = now < d.until;
            if !keep {
                ended.push(*g);
            }
            keep
        });
        self.counters.drains_expired += ended.len() as u64;
        self.forget_fresh_if_idle();
        for g in ended {
            if self.map.peek(&g).is_some() {
                f(CacheChange::Installed(g));
            }
        }
    }

    /// The flows started during drains are forgotten once no drain is left (they then follow the entry's
    /// table like every flow). Until then they are kept whole: a drain's flows cannot be told apart by
    /// group from their hash alone, and the table is bounded anyway.
    fn forget_fresh_if_idle(&mut self) {
        if self.drains.is_empty() {
            self.fresh = None;
        }
    }

    /// When the next drain ends.
    pub fn next_drain_end(&self) -> Option<Instant> {
        self.drains.iter().map(|(_, d)| d.until).min()
    }

    fn remove_jap_from(&mut self, group: &TransportAddr, jap: ProxyId) -> Option<CacheChange> {
        let key = self.key;
        let e = self.map.peek_mut(group)?;
        let State::Resolved { table, weights } = &e.state else {
            return None;
        };
        if !table.ids().contains(&jap) {
            return None;
        }
        let mut list = [(ProxyId::NONE, 0u32); MAX_JAPS];
        let mut n = 0;
        for (id, w) in table.ids().iter().zip(weights.iter()) {
            if *id != jap {
                list[n] = (*id, *w);
                n += 1;
            }
        }
        if n == 0 {
            self.map.remove(group);
            return Some(CacheChange::Removed(*group));
        }
        e.state = resolved(&key, &list[..n]);
        Some(CacheChange::Installed(*group))
    }

    /// A member became unusable: rebuild every entry naming it. Calls `f` for each change. O(entries); runs
    /// only on membership changes, which are rare (proxies are stable boxes).
    pub fn remove_jap(&mut self, jap: ProxyId, mut f: impl FnMut(CacheChange)) {
        if !self.drains.is_empty() {
            let budget = self.drains.len();
            self.drains.retain_budgeted(budget, |_, d| d.jap != jap);
            self.forget_fresh_if_idle();
        }
        let mut groups = smallvec::SmallVec::<[TransportAddr; 16]>::new();
        loop {
            groups.clear();
            for (g, e) in self.map.iter() {
                if e.table().is_some_and(|t| t.ids().contains(&jap)) {
                    groups.push(*g);
                    if groups.len() == groups.inline_size() {
                        break;
                    }
                }
            }
            if groups.is_empty() {
                return;
            }
            for g in &groups {
                if let Some(c) = self.remove_jap_from(g, jap) {
                    f(c);
                }
            }
        }
    }

    /// The groups whose resolved entry names `jap` (to re-announce them when its address changes). O(entries).
    pub fn groups_naming(&self, jap: ProxyId) -> impl Iterator<Item = TransportAddr> + '_ {
        self.map
            .iter()
            .filter(move |(_, e)| e.table().is_some_and(|t| t.ids().contains(&jap)))
            .map(|(g, _)| *g)
    }

    /// Forgets a group.
    pub fn remove(&mut self, group: &TransportAddr) -> bool {
        if self.drains.remove(group).is_some() {
            self.forget_fresh_if_idle();
        }
        self.map.remove(group).is_some()
    }

    pub fn get(&self, group: &TransportAddr) -> Option<&CacheEntry> {
        self.map.peek(group)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TransportAddr, &CacheEntry)> + '_ {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn counters(&self) -> &IapCounters {
        &self.counters
    }

    pub fn memory_bytes(&self) -> usize {
        self.map.memory_bytes()
    }
}

fn resolved(key: &SipKey, list: &[(ProxyId, u32)]) -> State {
    let table = MaglevTable::build(key, list);
    let mut weights = [0u32; MAX_JAPS];
    for (i, id) in table.ids().iter().enumerate() {
        weights[i] = list.iter().find(|(x, _)| x == id).map(|(_, w)| *w).unwrap_or(0);
    }
    State::Resolved { table, weights }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pias_proto::IpProtocol;
    use pias_proto::control::AnswerEntry;

    fn g() -> TransportAddr {
        TransportAddr::new("10.99.0.1".parse().unwrap(), 53, IpProtocol::Udp)
    }

    fn key() -> SipKey {
        SipKey { k0: 1, k1: 2 }
    }

    fn answer(japs: &[(u32, u32)], ttl_ms: u32) -> Answer {
        let v: Vec<_> = japs
            .iter()
            .map(|&(j, w)| AnswerEntry {
                jap: ProxyId(j),
                weight: w,
            })
            .collect();
        Answer::new(g(), ttl_ms, &v)
    }

    #[test]
    fn miss_then_hit_then_stale_then_miss() {
        let mut c = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t0 = Instant::from_secs(1);
        assert_eq!(c.route(t0, &g(), 5, false), Route::ViaRap { want_answer: true });
        assert_eq!(
            c.route(t0 + Duration::from_millis(10), &g(), 5, false),
            Route::ViaRap { want_answer: false }
        );
        assert_eq!(
            c.route(t0 + Duration::from_millis(300), &g(), 5, false),
            Route::ViaRap { want_answer: true }
        );
        c.install(t0, &answer(&[(7, 1)], 1000), |_| true);
        assert_eq!(
            c.route(t0 + Duration::from_millis(500), &g(), 5, false),
            Route::Jap {
                jap: ProxyId(7),
                resolve: false
            }
        );
        // Past the TTL: still used, and a Resolve is due once per retry interval.
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(
            c.route(t1, &g(), 5, false),
            Route::Jap {
                jap: ProxyId(7),
                resolve: true
            }
        );
        assert_eq!(
            c.route(t1 + Duration::from_millis(1), &g(), 5, false),
            Route::Jap {
                jap: ProxyId(7),
                resolve: false
            }
        );
        // Past the grace: back to the RAP.
        assert_eq!(
            c.route(t0 + Duration::from_secs(12), &g(), 5, false),
            Route::ViaRap { want_answer: true }
        );
        assert_eq!(c.counters().hits, 1);
    }

    #[test]
    fn negative_answers_drop_until_expiry() {
        let mut c = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t0 = Instant::from_secs(1);
        c.install(t0, &answer(&[], 2000), |_| true);
        assert_eq!(c.route(t0 + Duration::from_secs(1), &g(), 1, false), Route::NoJap);
        assert_eq!(
            c.route(t0 + Duration::from_secs(3), &g(), 1, false),
            Route::ViaRap { want_answer: true }
        );
    }

    #[test]
    fn unusable_and_invalidated_japs_are_left_out() {
        let mut c = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t0 = Instant::from_secs(1);
        c.install(t0, &answer(&[(1, 1), (2, 1), (3, 1)], 60_000), |id| {
            id != ProxyId(2)
        });
        let ids: Vec<_> = c.get(&g()).unwrap().japs().map(|(id, _)| id.0).collect();
        assert_eq!(ids, vec![1, 3]);
        for h in 0..1000u64 {
            assert_ne!(
                c.route(t0, &g(), h, false),
                Route::Jap {
                    jap: ProxyId(2),
                    resolve: false
                }
            );
        }
        assert_eq!(c.invalidate(&g(), ProxyId(1)), Some(CacheChange::Installed(g())));
        for h in 0..1000u64 {
            assert_eq!(
                c.route(t0, &g(), h, false),
                Route::Jap {
                    jap: ProxyId(3),
                    resolve: false
                }
            );
        }
        let mut changes = vec![];
        c.remove_jap(ProxyId(3), |ch| changes.push(ch));
        assert_eq!(changes, vec![CacheChange::Removed(g())]);
        assert!(c.get(&g()).is_none());
    }

    #[test]
    fn two_iaps_with_the_same_answer_pick_the_same_jap_per_flow() {
        let a = answer(&[(11, 3), (12, 1), (13, 2)], 60_000);
        let mut c1 = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let mut c2 = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(999),
        );
        let t = Instant::from_secs(1);
        c1.install(t, &a, |_| true);
        // Same set in another order.
        let b = answer(&[(13, 2), (11, 3), (12, 1)], 60_000);
        c2.install(t, &b, |_| true);
        for h in 0..5000u64 {
            assert_eq!(
                c1.route(t, &g(), h.wrapping_mul(0x9e3779b97f4a7c15), false),
                c2.route(t, &g(), h.wrapping_mul(0x9e3779b97f4a7c15), false)
            );
        }
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = IapCache::new(
            IapConfig {
                cache_entries: 8,
                ..IapConfig::default()
            },
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t = Instant::from_secs(1);
        for p in 0..100u16 {
            let grp = TransportAddr::new("10.99.0.1".parse().unwrap(), p, IpProtocol::Udp);
            c.route(t, &grp, 1, false);
            assert!(c.len() <= 8);
        }
        assert_eq!(c.counters().evictions, 92);
    }

    #[test]
    fn unsolicited_answers_are_ignored_and_ttls_capped() {
        let mut c = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t0 = Instant::from_secs(1);
        // Nobody asked: ignored, nothing cached.
        assert_eq!(c.accept_answer(t0, &answer(&[(7, 1)], 1000), |_| true), None);
        assert!(c.get(&g()).is_none());
        assert_eq!(c.counters().answers_ignored, 1);
        // Asked (a miss): accepted once; a second answer to the same question is ignored.
        assert_eq!(c.route(t0, &g(), 5, false), Route::ViaRap { want_answer: true });
        let huge = answer(&[(7, 1)], u32::MAX);
        assert_eq!(
            c.accept_answer(t0, &huge, |_| true),
            Some(CacheChange::Installed(g()))
        );
        assert_eq!(c.counters().ttls_capped, 1);
        assert_eq!(c.get(&g()).unwrap().expires(), t0 + IapConfig::default().max_ttl);
        assert_eq!(c.accept_answer(t0, &answer(&[(8, 1)], 1000), |_| true), None);
        assert_eq!(c.get(&g()).unwrap().japs().next(), Some((ProxyId(7), 1)));
        assert_eq!(c.counters().answers_ignored, 2);
        // Stale and asking again (a Resolve went out): the answer is taken.
        let t1 = t0 + IapConfig::default().max_ttl + Duration::from_secs(1);
        assert_eq!(
            c.route(t1, &g(), 5, false),
            Route::Jap {
                jap: ProxyId(7),
                resolve: true
            }
        );
        assert!(c.accept_answer(t1, &answer(&[(8, 1)], 1000), |_| true).is_some());
        assert_eq!(c.get(&g()).unwrap().japs().next(), Some((ProxyId(8), 1)));
    }

    /// SPEC.md §9.6: a draining JAP keeps the established flows it may hold, new flows go to the others at
    /// once and then by the RAP's new answer, and the hold ends after `drain_hold`.
    #[test]
    fn draining_jap_keeps_established_flows_only() {
        let mut c = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t0 = Instant::from_secs(1);
        c.install(t0, &answer(&[(7, 1), (8, 1)], 60_000), |_| true);
        let on = |c: &mut IapCache, jap: u32, skip: usize| {
            (0u64..)
                .map(|h| h.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .filter(|&h| {
                    c.route(t0, &g(), h, false)
                        == Route::Jap {
                            jap: ProxyId(jap),
                            resolve: false,
                        }
                })
                .nth(skip)
                .unwrap()
        };
        let (new7, old7, later7, h8) = (
            on(&mut c, 7, 0),
            on(&mut c, 7, 1),
            on(&mut c, 7, 2),
            on(&mut c, 8, 0),
        );
        // A drain from a JAP not in the entry changes nothing.
        assert_eq!(c.drain(t0, &g(), ProxyId(9)), None);
        assert!(!c.draining(&g()));
        assert_eq!(c.drain(t0, &g(), ProxyId(7)), Some(CacheChange::Removed(g())));
        assert!(c.draining(&g()));
        let t1 = t0 + Duration::from_millis(10);
        // A new flow of JAP 7 goes to 8 now, and the entry asks the RAP again.
        assert_eq!(
            c.route(t1, &g(), new7, false),
            Route::Jap {
                jap: ProxyId(8),
                resolve: false
            }
        );
        assert_eq!(c.counters().drain_steered, 1);
        // Its later packets follow it; a connection of before stays at 7; JAP 8's flows are untouched.
        assert_eq!(c.route(t1, &g(), new7, true).jap(), Some(ProxyId(8)));
        assert_eq!(c.route(t1, &g(), old7, true).jap(), Some(ProxyId(7)));
        assert_eq!(c.route(t1, &g(), h8, true).jap(), Some(ProxyId(8)));
        // The Resolve waits a `resolve_retry`, for the RAP to hear the JAP's load first.
        let ask = t0 + IapConfig::default().resolve_retry;
        assert_eq!(
            c.route(ask, &g(), h8, false),
            Route::Jap {
                jap: ProxyId(8),
                resolve: true
            }
        );
        // The RAP answers without 7: the connection of before stays pinned, new flows follow the answer.
        c.install(t1, &answer(&[(8, 1)], 60_000), |_| true);
        assert_eq!(c.route(t1, &g(), old7, true).jap(), Some(ProxyId(7)));
        assert_eq!(c.counters().drain_pinned, 1);
        assert_eq!(c.route(t1, &g(), later7, false).jap(), Some(ProxyId(8)));
        assert_eq!(c.route(t1, &g(), later7, true).jap(), Some(ProxyId(8)));
        assert_eq!(c.route(t1, &g(), new7, true).jap(), Some(ProxyId(8)));
        // A second drain within the hold extends it without forgetting the flows of before.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(c.drain(t2, &g(), ProxyId(7)), None);
        let mut changes = Vec::new();
        c.expire_drains(t2 + Duration::from_secs(119), |ch| changes.push(ch));
        assert!(changes.is_empty());
        assert_eq!(c.next_drain_end(), Some(t2 + Duration::from_secs(120)));
        c.expire_drains(t2 + Duration::from_secs(120), |ch| changes.push(ch));
        assert_eq!(changes, vec![CacheChange::Installed(g())]);
        assert!(!c.draining(&g()));
        assert_eq!(c.counters().drains_expired, 1);
        assert_eq!(c.route(t2, &g(), old7, true).jap(), Some(ProxyId(8)));
    }

    /// A JAP that goes down, or says it has no targets, ends its drains.
    #[test]
    fn drains_end_with_their_jap() {
        let mut c = IapCache::new(
            IapConfig::default(),
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        let t0 = Instant::from_secs(1);
        c.install(t0, &answer(&[(7, 1), (8, 1)], 60_000), |_| true);
        c.drain(t0, &g(), ProxyId(7));
        c.remove_jap(ProxyId(7), |_| {});
        assert!(!c.draining(&g()));
        c.install(t0, &answer(&[(7, 1), (8, 1)], 60_000), |_| true);
        c.drain(t0, &g(), ProxyId(7));
        c.invalidate(&g(), ProxyId(7));
        assert!(!c.draining(&g()));
        // Bounded: more groups than `max_drains` forget the oldest, counted.
        let mut c = IapCache::new(
            IapConfig {
                max_drains: 2,
                ..IapConfig::default()
            },
            key(),
            crate::secrets::table_key_for_tests(1),
        );
        for port in 1..=3u16 {
            let grp = TransportAddr::new("10.99.0.1".parse().unwrap(), port, IpProtocol::Udp);
            let mut a = answer(&[(7, 1), (8, 1)], 60_000);
            a.group = grp;
            c.install(t0, &a, |_| true);
            c.drain(t0, &grp, ProxyId(7));
        }
        assert_eq!(c.counters().drains_evicted, 1);
    }
}
