//! The JAP's reports to RAPs: batching, retransmission until acknowledged, refresh, and re-reporting when
//! membership moves a group to new RAPs (SPEC.md §9.1).

use core::time::Duration;
use std::collections::BTreeMap;

use pias_proto::ProxyId;
use pias_proto::TransportAddr;
use pias_proto::control::{Message, ReportEntry, Reports};

use crate::membership::Membership;
use crate::registry::Registry;
use crate::ring::{Raps, Ring};
use crate::seal::{Dest, Sealer, Transmit};
use crate::time::Instant;

/// Members whose restart is handled by re-reporting to them alone; more at once take a full refresh.
const MAX_RESTARTS: usize = 64;

/// Report timers and bounds (SPEC.md §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportConfig {
    pub delay: Duration,
    pub rto: Duration,
    pub rto_max: Duration,
    pub refresh: Duration,
    /// Unacknowledged report messages kept for retransmission; beyond it the oldest is dropped (counted) and
    /// the refresh repairs what it carried.
    pub max_inflight: usize,
    /// Entries waiting to be sent; beyond it new entries are dropped (counted) until the next refresh.
    pub max_pending: usize,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            delay: Duration::from_millis(50),
            rto: Duration::from_millis(500),
            rto_max: Duration::from_secs(8),
            refresh: Duration::from_secs(30),
            max_inflight: 1024,
            max_pending: 65_536,
        }
    }
}

impl ReportConfig {
    /// Checks every field; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        use super::{ConfigError, ConfigPart::Reports};
        for (field, d, fix) in [
            ("delay", self.delay, "must be at least 1 ms (default 50 ms)"),
            ("rto", self.rto, "must be at least 1 ms (default 500 ms)"),
            ("refresh", self.refresh, "must be at least 1 ms (default 30 s)"),
        ] {
            if d.is_zero() {
                return Err(ConfigError::field(Reports, field, fix));
            }
        }
        if self.rto_max < self.rto {
            return Err(ConfigError::field(
                Reports,
                "rto_max",
                "must be at least rto (default 8 s)",
            ));
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::field(
                Reports,
                "max_inflight",
                "must be at least 1 (default 1024)",
            ));
        }
        if self.max_pending == 0 {
            return Err(ConfigError::field(
                Reports,
                "max_pending",
                "must be at least 1 (default 65536)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Inflight {
    rap: ProxyId,
    entries: Vec<ReportEntry>,
    retx_at: Instant,
    rto: Duration,
}

counters! {
    /// Reporter counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ReporterCounters("report_") {
        messages as "reports_sent",
        entries as "report_entries_sent",
        retransmits as "report_retransmits",
        acked as "reports_acked",
        inflight_dropped,
        pending_dropped,
        refreshes,
        /// Re-sends of every entry because the JAP's load moved past its hysteresis band (SPEC.md §9.1).
        load_changes as "report_load_changes",
        /// Groups re-reported to a RAP that restarted (it lost every report it held, SPEC.md §9.1).
        restart_resends as "report_restart_resends",
    }
}

#[derive(Debug)]
pub(crate) struct Reporter {
    cfg: ReportConfig,
    me: ProxyId,
    pending: BTreeMap<ProxyId, Vec<ReportEntry>>,
    pending_len: usize,
    flush_at: Option<Instant>,
    inflight: BTreeMap<u64, Inflight>,
    local: Vec<ReportEntry>,
    next_refresh: Instant,
    ring_dirty: bool,
    /// The RAPs each reported group was last reported to. Ordered (not a `HashMap` with OS-random state):
    /// the re-report after a ring change walks it, and the walk's order is the order of the entries on the
    /// wire, which must be the same in every run of the same seed and inputs. Bounded by the registry's
    /// groups: an entry exists only while the group's committed count is non-zero.
    group_raps: BTreeMap<TransportAddr, Raps>,
    /// The load figure every entry carries (SPEC.md §9.1): the JAP's, not a group's, since capacity is the
    /// JAP's. Changed only through [`Reporter::set_load`], with hysteresis.
    load: u16,
    /// A load change passed the hysteresis: re-send every group's entry with it at the next `collect`.
    load_resend: bool,
    /// Members that (re)started since the last `collect`: each is sent again the entries of the groups it is
    /// a RAP of, since a restart empties its RAP table (bounded by [`MAX_RESTARTS`]; beyond, a full refresh).
    restarted: Vec<ProxyId>,
    counters: ReporterCounters,
}

impl Reporter {
    pub(crate) fn new(cfg: ReportConfig, me: ProxyId, now: Instant) -> Self {
        Reporter {
            cfg,
            me,
            pending: BTreeMap::new(),
            pending_len: 0,
            flush_at: None,
            inflight: BTreeMap::new(),
            local: Vec::new(),
            next_refresh: now + cfg.refresh,
            ring_dirty: false,
            group_raps: BTreeMap::new(),
            load: 0,
            load_resend: false,
            restarted: Vec::new(),
            counters: ReporterCounters::default(),
        }
    }

    pub(crate) fn counters(&self) -> &ReporterCounters {
        &self.counters
    }

    /// The JAP's current load (per-mille of its capacity). When it is far enough from the load last reported
    /// ([`super::load::load_report_due`]), every group is re-reported with it at the next `collect`; small
    /// moves wait, so a load hovering near one value costs no reports. Returns whether it was taken.
    pub(crate) fn set_load(&mut self, load: u16) -> bool {
        if !super::load::load_report_due(self.load, load) {
            return false;
        }
        self.load = load;
        self.load_resend = true;
        self.counters.load_changes += 1;
        true
    }

    /// The load figure the entries carry now.
    pub(crate) fn load(&self) -> u16 {
        self.load
    }

    /// Membership changed: groups may have new RAPs.
    pub(crate) fn ring_changed(&mut self) {
        self.ring_dirty = true;
    }

    /// A member came up — new, back from Down, or restarted while others still saw it Alive. A restarted
    /// RAP lost its table and the ring does not move (its id and points are the same), so without this it
    /// would answer "no JAP" for our groups until the next refresh (`refresh`, 30 s).
    pub(crate) fn member_up(&mut self, id: ProxyId) {
        if id == self.me || self.restarted.contains(&id) {
            return;
        }
        if self.restarted.len() >= MAX_RESTARTS {
            // Many at once (a whole site restarted): one full refresh costs less than many walks.
            self.next_refresh = Instant::ZERO;
            return;
        }
        self.restarted.push(id);
    }

    fn queue(&mut self, me: ProxyId, rap: ProxyId, e: ReportEntry, now: Instant) {
        if rap == me {
            self.local.push(e);
            return;
        }
        if self.pending_len >= self.cfg.max_pending {
            self.counters.pending_dropped += 1;
            return;
        }
        let list = self.pending.entry(rap).or_default();
        // A newer count for the same group replaces the queued one.
        if let Some(old) = list.iter_mut().find(|o| o.group == e.group) {
            *old = e;
        } else {
            list.push(e);
            self.pending_len += 1;
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.cfg.delay);
        }
    }

    /// Takes what the registry says is due, plus re-reports after ring changes and periodic refreshes.
    pub(crate) fn collect(&mut self, now: Instant, registry: &mut Registry, ring: &Ring, k: usize) {
        let me = self.me;
        let mut raps = Raps::new();
        while let Some(r) = registry.poll_report() {
            ring.raps(&r.group, k, &mut raps);
            let e = ReportEntry {
                group: r.group,
                count: r.count,
                flags: r.flags,
                load: self.load,
            };
            for &rap in raps.iter() {
                self.queue(me, rap, e, now);
            }
            registry.commit_report(&r.group, r.count, r.flags);
            if r.count == 0 {
                self.group_raps.remove(&r.group);
            } else {
                self.group_raps.insert(r.group, raps.clone());
            }
        }
        if self.ring_dirty {
            self.ring_dirty = false;
            let groups: Vec<(TransportAddr, Raps)> =
                self.group_raps.iter().map(|(g, r)| (*g, r.clone())).collect();
            for (g, old) in groups {
                ring.raps(&g, k, &mut raps);
                if raps == old {
                    continue;
                }
                let Some(e) = registry.reported_of(&g) else {
                    continue;
                };
                let e = ReportEntry {
                    group: g,
                    count: e.count,
                    flags: e.flags,
                    load: self.load,
                };
                for &rap in raps.iter().filter(|r| !old.contains(r)) {
                    self.queue(me, rap, e, now);
                }
                self.group_raps.insert(g, raps.clone());
            }
        }
        if !self.restarted.is_empty() {
            let ids = core::mem::take(&mut self.restarted);
            let groups: Vec<(TransportAddr, Raps)> = self
                .group_raps
                .iter()
                .filter(|(_, r)| r.iter().any(|x| ids.contains(x)))
                .map(|(g, r)| (*g, r.clone()))
                .collect();
            for (g, r) in groups {
                let Some(e) = registry.reported_of(&g) else {
                    continue;
                };
                let e = ReportEntry {
                    group: g,
                    count: e.count,
                    flags: e.flags,
                    load: self.load,
                };
                for &rap in r.iter().filter(|x| ids.contains(x)) {
                    self.counters.restart_resends += 1;
                    self.queue(me, rap, e, now);
                }
            }
        }
        let refresh = now >= self.next_refresh;
        if refresh || self.load_resend {
            if refresh {
                self.next_refresh = now + self.cfg.refresh;
                self.counters.refreshes += 1;
            }
            self.load_resend = false;
            let load = self.load;
            let all: Vec<_> = registry.reported().filter(|r| r.count > 0).collect();
            for r in all {
                ring.raps(&r.group, k, &mut raps);
                for &rap in raps.iter() {
                    self.queue(
                        me,
                        rap,
                        ReportEntry {
                            group: r.group,
                            count: r.count,
                            flags: r.flags,
                            load,
                        },
                        now,
                    );
                }
            }
        }
    }

    /// Entries this proxy reported to itself as one of the group's RAPs.
    pub(crate) fn take_local(&mut self) -> impl Iterator<Item = (ProxyId, ReportEntry)> + '_ {
        let me = self.me;
        self.local.drain(..).map(move |e| (me, e))
    }

    pub(crate) fn handle_ack(&mut self, seq: u64) {
        if self.inflight.remove(&seq).is_some() {
            self.counters.acked += 1;
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let retx = self.inflight.values().map(|i| i.retx_at).min();
        [self.flush_at, retx, Some(self.next_refresh)]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        sealer: &mut Sealer,
        membership: &Membership,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        // 1. A due retransmission (to a RAP that is still usable; others are forgotten: the group's new RAPs
        //    get the entries through the ring-change re-report).
        let due = self
            .inflight
            .iter()
            .find(|(_, i)| i.retx_at <= now)
            .map(|(s, _)| *s);
        if let Some(seq) = due
            && let Some(mut inf) = self.inflight.remove(&seq)
            && membership.is_usable(inf.rap)
            && let Some(addr) = membership.get(inf.rap).map(|m| m.addr())
            && let Some((len, seq)) =
                sealer.seal_seq(now, addr, &Message::Report(Reports::Slice(&inf.entries)), buf)
        {
            self.counters.retransmits += 1;
            inf.rto = (inf.rto * 2).min(self.cfg.rto_max);
            inf.retx_at = now + inf.rto;
            self.inflight.insert(seq, inf);
            return Some(Transmit {
                dest: Dest::Overlay(addr),
                len,
            });
        }
        // 2. A batch whose delay has passed.
        if self.flush_at.is_some_and(|t| t <= now) {
            while let Some((&rap, _)) = self.pending.iter().next() {
                let Some(mut list) = self.pending.remove(&rap) else {
                    break;
                };
                let take = list.len().min(Reports::MAX);
                let rest = list.split_off(take);
                self.pending_len = self.pending_len.saturating_sub(take);
                if !rest.is_empty() {
                    self.pending.insert(rap, rest);
                }
                let Some(addr) = membership.get(rap).map(|m| m.addr()) else {
                    continue;
                };
                let Some((len, seq)) =
                    sealer.seal_seq(now, addr, &Message::Report(Reports::Slice(&list)), buf)
                else {
                    continue;
                };
                self.counters.messages += 1;
                self.counters.entries += list.len() as u64;
                if self.inflight.len() >= self.cfg.max_inflight
                    && let Some((&oldest, _)) = self.inflight.iter().next()
                {
                    self.inflight.remove(&oldest);
                    self.counters.inflight_dropped += 1;
                }
                self.inflight.insert(
                    seq,
                    Inflight {
                        rap,
                        entries: list,
                        retx_at: now + self.cfg.rto,
                        rto: self.cfg.rto,
                    },
                );
                return Some(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                });
            }
            self.flush_at = None;
        }
        None
    }
}
