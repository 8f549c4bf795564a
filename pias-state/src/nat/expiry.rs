//! Expiry and target sweeps: deadlines, `poll_timeout`/`handle_timeout`, and `remove_where_target`.

use super::*;

impl NatTable {
    /// Starts removing every binding towards `ip` (and `port`, or every port when `None`). The sweep runs in
    /// `handle_timeout`, `sweep_budget` slots per call; until it ends, lookups of those bindings miss and
    /// `create` towards the target fails. Returns false (counted in `sweeps_refused`) when
    /// [`MAX_PENDING_SWEEPS`] sweeps are already running; the caller retries after `handle_timeout`.
    pub fn remove_where_target(&mut self, ip: IpAddr, port: Option<u16>) -> bool {
        let (b, v6) = ip_bytes(&ip);
        let left = self.slab.len() as u32;
        if left == 0 {
            return true;
        }
        if let Some(s) = self
            .sweeps
            .iter_mut()
            .find(|s| s.ip == b && s.v6 == v6 && s.port == port)
        {
            s.left = left;
            return true;
        }
        if self.sweeps.len() >= MAX_PENDING_SWEEPS {
            self.counters.sweeps_refused += 1;
            return false;
        }
        self.sweeps.push(Sweep {
            ip: b,
            v6,
            port,
            left,
        });
        true
    }

    /// When `handle_timeout` has work: the earliest binding deadline (possibly already past), or the current
    /// time while a target sweep runs. `None` when the table is empty and no sweep runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.sweeps.is_empty() {
            return Some(Instant::from_micros(self.now));
        }
        self.earliest().map(|(_, d)| Instant::from_micros(d))
    }

    /// Expires due bindings (at most `expiry_budget`, and no more than the event queue has room for) and
    /// advances target sweeps (at most `sweep_budget` slots). Returns the number of bindings removed.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        self.advance(now);
        let mut removed = 0;
        while (removed as u32) < self.cfg.expiry_budget
            && self.events.len() < self.cfg.event_capacity as usize
        {
            match self.earliest() {
                Some((i, d)) if d <= self.now => {
                    self.expire(i);
                    removed += 1;
                }
                _ => break,
            }
        }
        let mut visited = 0;
        while !self.sweeps.is_empty()
            && visited < self.cfg.sweep_budget
            && self.events.len() < self.cfg.event_capacity as usize
        {
            if self.sweep_cursor as usize >= self.slab.len() {
                self.sweep_cursor = 0;
            }
            let i = self.sweep_cursor;
            if (i as usize) < self.slab.len() && self.slab[i as usize].class != FREE && self.doomed(i) {
                self.remove_slot(i, RemoveReason::TargetRemoved);
                removed += 1;
            }
            self.sweep_cursor = i + 1;
            visited += 1;
            for s in &mut self.sweeps {
                s.left = s.left.saturating_sub(1);
            }
            self.sweeps.retain(|s| s.left > 0);
        }
        removed
    }

    /// `Some(i)` if the binding found at `i` may be used now; otherwise removes it (expired, or its target is
    /// being swept) and returns `None`.
    #[inline]
    pub(super) fn check_live(&mut self, i: u32) -> Option<u32> {
        if self.deadline(i) <= self.now {
            self.expire(i);
            return None;
        }
        if !self.sweeps.is_empty() && self.doomed(i) {
            self.remove_slot(i, RemoveReason::TargetRemoved);
            return None;
        }
        Some(i)
    }

    pub(super) fn doomed(&self, i: u32) -> bool {
        let e = &self.slab[i as usize];
        self.sweeps
            .iter()
            .any(|s| s.ip == e.target && s.v6 == e.v6 && s.port.is_none_or(|p| p == e.target_port))
    }

    #[inline]
    pub(super) fn deadline(&self, i: u32) -> u64 {
        let e = &self.slab[i as usize];
        e.last_seen.saturating_add(self.timeouts[usize::from(e.class)])
    }

    /// The class head with the earliest deadline (lowest class index on ties).
    pub(super) fn earliest(&self) -> Option<(u32, u64)> {
        let mut best: Option<(u32, u64)> = None;
        for &h in &self.heads {
            if h != NIL {
                let d = self.deadline(h);
                if best.is_none_or(|(_, bd)| d < bd) {
                    best = Some((h, d));
                }
            }
        }
        best
    }

    pub(super) fn expire(&mut self, i: u32) {
        let class = TimeoutClass::from_index(self.slab[i as usize].class);
        self.remove_slot(i, RemoveReason::Timeout(class));
    }
}
