//! Liveness (SPEC.md §10): the list of registrations by last refresh, group membership, removal with a
//! tombstone, and expiry after `hold_ms`.

use super::*;

impl Registry {
    // ----- liveness list -----

    fn unlink(&mut self, i: u32) {
        let Some((prev, next)) = self
            .regs
            .get(i as usize)
            .and_then(|r| r.as_ref())
            .map(|r| (r.prev, r.next))
        else {
            return;
        };
        match self.regs.get_mut(prev as usize).and_then(|r| r.as_mut()) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.regs.get_mut(next as usize).and_then(|r| r.as_mut()) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    pub(super) fn push_tail(&mut self, i: u32) {
        let old = self.tail;
        if let Some(r) = self.regs.get_mut(i as usize).and_then(|r| r.as_mut()) {
            r.prev = old;
            r.next = NIL;
        }
        match self.regs.get_mut(old as usize).and_then(|r| r.as_mut()) {
            Some(o) => o.next = i,
            None => self.head = i,
        }
        self.tail = i;
    }

    pub(super) fn touch(&mut self, i: u32, now: Instant) {
        if let Some(r) = self.regs.get_mut(i as usize).and_then(|r| r.as_mut()) {
            r.last_refresh = r.last_refresh.max(now);
        }
        if self.tail != i {
            self.unlink(i);
            self.push_tail(i);
        }
    }

    pub(super) fn add_member(&mut self, group: &TransportAddr, slot: u32, mode: DeliveryMode) {
        let band = self.cfg.band_percent;
        let h = self.hash_group(group);
        let (k0, k1) = (self.sip.1, self.sip.0);
        let g = match self.groups.find_mut(h, |g| g.group == *group) {
            Some(g) => g,
            None => {
                let hasher = |g: &GroupState| {
                    let mut hh = SipHasher13::new_with_keys(k0, k1);
                    g.group.hash(&mut hh);
                    hh.finish()
                };
                self.groups
                    .insert_unique(
                        h,
                        GroupState {
                            group: *group,
                            members: Vec::new(),
                            tunnel: 0,
                            hyst: Hysteresis::new(band),
                            reported_flags: 0,
                            queued: false,
                            table: TargetTable::default(),
                            table_stale: true,
                        },
                        hasher,
                    )
                    .into_mut()
            }
        };
        let pos = g.members.partition_point(|&s| s < slot);
        g.members.insert(pos, slot);
        if mode == DeliveryMode::Tunnel {
            g.tunnel += 1;
        }
        g.table_stale = true;
        // A new registration in this slot starts with a clean record (the passive watch, `watch.rs`).
        self.watch_reset(slot);
        self.check_report(group);
    }

    /// Removes a live registration, leaving a tombstone with its replay window.
    pub(super) fn remove(&mut self, slot: u32, now: Instant, reason: DownReason) {
        self.unlink(slot);
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.take()) else {
            return;
        };
        self.live = self.live.saturating_sub(1);
        self.free.push(slot);
        let h = self.hash_pair(&r.group, &r.service);
        if let Ok(e) = self.index.find_entry(h, |&i| i == slot) {
            e.remove();
        }
        let until = now.saturating_add(core::time::Duration::from_millis(
            2 * u64::from(self.cfg.cookie_period_ms),
        ));
        if self
            .tombstones
            .insert(
                (r.group, r.service),
                Tombstone {
                    window: r.window,
                    until,
                },
            )
            .is_some()
        {
            self.counters.tombstones_evicted += 1;
        }
        if let Some(g) = self.group_mut(&r.group) {
            if let Ok(pos) = g.members.binary_search(&slot) {
                g.members.remove(pos);
            }
            if r.mode == DeliveryMode::Tunnel {
                g.tunnel = g.tunnel.saturating_sub(1);
            }
            g.table_stale = true;
        }
        self.check_report(&r.group);
        self.drop_group_if_idle(&r.group);
        self.push_event(RegistryEvent::TargetDown {
            slot,
            group: r.group,
            service: r.service,
            reason,
        });
    }

    /// Forgets a group with no targets whose zero count is reported (or was never reported).
    pub(super) fn drop_group_if_idle(&mut self, group: &TransportAddr) {
        let h = self.hash_group(group);
        if let Ok(e) = self.groups.find_entry(h, |g| g.group == *group) {
            let g = e.get();
            let idle = g.members.is_empty() && matches!(g.hyst.reported, None | Some(0)) && !g.queued;
            if idle {
                e.remove();
            }
        }
    }

    // ----- timers -----

    /// When [`Registry::handle_timeout`] has work: the earliest refresh deadline. `None` with no registration,
    /// and while draining (nothing expires then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.draining {
            return None;
        }
        let r = self.regs.get(self.head as usize)?.as_ref()?;
        Some(
            r.last_refresh
                .saturating_add(core::time::Duration::from_millis(u64::from(self.cfg.hold_ms))),
        )
    }

    /// Removes targets with no refresh for `hold_ms` (at most `expiry_budget` per call, and no more than the
    /// event queue has room for; call again while `poll_timeout() <= now`). Early or repeated calls are
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.draining {
            return;
        }
        let hold = core::time::Duration::from_millis(u64::from(self.cfg.hold_ms));
        for _ in 0..self.cfg.expiry_budget {
            if self.events.len() >= self.cfg.event_queue {
                break;
            }
            let head = self.head;
            let Some(r) = self.regs.get(head as usize).and_then(|r| r.as_ref()) else {
                break;
            };
            if r.last_refresh.saturating_add(hold) > now {
                break;
            }
            self.remove(head, now, DownReason::Expired);
            self.counters.expired += 1;
        }
    }
}
