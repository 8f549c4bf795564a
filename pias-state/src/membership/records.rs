//! Records (SPEC.md §7.1): applying a received or local record by the precedence rule, refuting what
//! others say about this proxy, and the bookkeeping (events, suspicion and tombstone timers) after a
//! record changes.

use pias_proto::control::{MemberStatus, ProxyRecord};

use super::outbox::Out;
use super::{MemberEvent, Membership, supersedes, usable_status};
use crate::time::Instant;

impl Membership {
    /// Applies a received record with the precedence rule (§7.1); `from` is the member it came from.
    pub(super) fn apply(&mut self, now: Instant, r: ProxyRecord, from: Option<u32>) {
        if r.id == self.me.id {
            self.about_me(now, r, from);
            return;
        }
        match self.table.get(r.id.0) {
            Some(m) => {
                if !supersedes(&r, &m.record) {
                    self.counters.records_stale += 1;
                    return;
                }
                let old = self.table.replace(r, now);
                self.counters.records_applied += 1;
                self.changed(now, old, r);
                self.flood(now, r.id.0, from);
            }
            None => {
                if !usable_status(r.status) {
                    self.counters.tombstones_ignored += 1;
                    return;
                }
                let window = self
                    .strangers
                    .map
                    .remove(&r.id.0)
                    .map(|(w, _)| w)
                    .unwrap_or_default();
                if self.table.insert(r, window, now).is_err() {
                    self.counters.table_full += 1;
                    return;
                }
                self.counters.records_applied += 1;
                self.changed(now, None, r);
                self.flood(now, r.id.0, from);
            }
        }
    }

    /// A change made here (a suspicion or Down verdict about another member).
    pub(super) fn apply_local(&mut self, now: Instant, r: ProxyRecord) {
        if let Some(old) = self.table.replace(r, now) {
            self.changed(now, Some(old), r);
            self.flood(now, r.id.0, None);
        }
    }

    /// A record about this proxy: refute anything that supersedes the own record (§7.1).
    pub(super) fn about_me(&mut self, now: Instant, r: ProxyRecord, from: Option<u32>) {
        if !supersedes(&r, &self.me) {
            self.counters.records_stale += 1;
            return;
        }
        let mut mine = self.me;
        if r.incarnation > mine.incarnation {
            mine.incarnation = r.incarnation;
            mine.version = r.version.saturating_add(1);
        } else {
            mine.version = r.version.max(mine.version).saturating_add(1);
        }
        if !supersedes(&mine, &r) {
            // Version space exhausted; only a restart with a higher incarnation helps.
            self.counters.records_stale += 1;
            return;
        }
        self.counters.refutations += 1;
        self.set_me(now, mine);
        // The one that told us is the one most in need of the answer, even if it is not a neighbour.
        if let Some(m) = from.and_then(|f| self.table.get(f)) {
            let addr = m.record.addr;
            self.push_out(Out::Tell {
                addr,
                ids: [self.me.id.0, 0],
            });
        }
    }

    pub(super) fn set_me(&mut self, now: Instant, r: ProxyRecord) {
        self.me = r;
        self.table.replace(r, now);
        self.flood(now, r.id.0, None);
    }

    /// Bookkeeping after a record changed from `old` to `new`: events, timers, neighbour graph.
    pub(super) fn changed(&mut self, now: Instant, old: Option<ProxyRecord>, new: ProxyRecord) {
        use MemberStatus::*;
        let id = new.id;
        let old_status = old.map(|o| o.status);
        let was_usable = old_status.is_some_and(usable_status);
        if was_usable != usable_status(new.status) {
            self.nbr_dirty = true;
        }
        let cap = self.cfg.max_members.saturating_mul(2);
        match new.status {
            Suspect => {
                let fresh = old.is_none_or(|o| {
                    (o.status, o.incarnation, o.version) != (Suspect, new.incarnation, new.version)
                });
                if fresh {
                    if self.suspicions.len() < cap {
                        self.suspicions.push_back((now + self.cfg.suspect_timeout, id.0));
                    } else {
                        self.counters.timers_dropped += 1;
                    }
                }
            }
            Down | Left => {
                if old_status.is_none_or(|s| s != new.status) {
                    if self.tombstones.len() < cap {
                        self.tombstones.push_back((now + self.cfg.tombstone_time, id.0));
                    } else {
                        self.counters.timers_dropped += 1;
                    }
                }
            }
            Alive => {}
        }
        // A higher incarnation is a restart (drivers use wall-clock seconds, SPEC.md §3): the member lost its
        // state (the reports it held as a RAP, its registrations as a JAP), so it is news even when it was
        // Alive before and comes back Alive — the proxy re-sends it what it must hold.
        let restarted = old.is_some_and(|o| new.incarnation > o.incarnation);
        let ev = match (old_status, new.status) {
            (Some(Alive | Suspect), Alive) if restarted => Some(MemberEvent::Up { id, addr: new.addr }),
            (Some(Alive), Alive) | (Some(Suspect), Suspect) => {
                if old.is_some_and(|o| o.addr != new.addr) {
                    Some(MemberEvent::AddrChanged { id, addr: new.addr })
                } else {
                    None
                }
            }
            (Some(Suspect), Alive) => Some(MemberEvent::Alive { id }),
            (_, Alive) => Some(MemberEvent::Up { id, addr: new.addr }),
            (_, Suspect) => Some(MemberEvent::Suspect { id }),
            (Some(Down), Down) | (Some(Left), Left) => None,
            (_, Down) => Some(MemberEvent::Down { id }),
            (_, Left) => Some(MemberEvent::Left { id }),
        };
        if let Some(e) = ev {
            self.event(e);
        }
    }

    pub(super) fn event(&mut self, e: MemberEvent) {
        if self.events.len() >= self.cfg.event_queue {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }
}
