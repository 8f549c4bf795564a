//! Flooding (SPEC.md §7.3): queueing changed records for every neighbour and sending them, batched,
//! at the flood tick.

use pias_proto::control::{Message, ProxyRecord, Records};
use smallvec::SmallVec;

use super::Membership;
use super::outbox::Step;
use crate::seal::{Dest, Sealer, Transmit};
use crate::time::Instant;

impl Membership {
    /// Queues record `id` for every neighbour (chosen and reverse) except `except` (§7.3).
    pub(super) fn flood(&mut self, now: Instant, id: u32, except: Option<u32>) {
        let recent = self.reverse_window();
        let cap = self.cfg.flood_queue;
        let mut queued = false;
        for (&pid, p) in self.peers.iter_mut() {
            let reverse = p.probed_me.is_some_and(|t| now < t + recent);
            if !(p.chosen || reverse) || Some(pid) == except {
                continue;
            }
            if p.flood.len() >= cap {
                p.flood.pop_front();
                self.counters.flood_dropped += 1;
            }
            p.flood.push_back(id);
            queued = true;
        }
        if queued {
            self.arm_tick(now);
        }
    }

    pub(super) fn arm_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.cfg.flood_interval);
        }
    }

    pub(super) fn emit_flood(
        &mut self,
        now: Instant,
        pid: u32,
        sealer: &mut Sealer,
        buf: &mut [u8],
        scratch: &mut [ProxyRecord; Records::MAX],
    ) -> Step {
        let Some(addr) = self.table.get(pid).map(|m| m.record.addr) else {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.flood.clear();
            }
            return Step::Skip;
        };
        let Some(p) = self.peers.get(&pid) else {
            return Step::Skip;
        };
        let mut n = 0;
        let mut consumed = 0;
        let mut ids: SmallVec<[u32; Records::MAX]> = SmallVec::new();
        for &id in &p.flood {
            if n == Records::MAX {
                break;
            }
            consumed += 1;
            if ids.contains(&id) {
                continue;
            }
            if let Some(m) = self.table.get(id) {
                ids.push(id);
                scratch[n] = m.record;
                n += 1;
            }
        }
        if n == 0 {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.flood.clear();
            }
            return Step::Skip;
        }
        let msg = Message::Records(Records::Slice(&scratch[..n]));
        let Some(len) = sealer.seal(now, addr, &msg, buf) else {
            return Step::Blocked;
        };
        if let Some(p) = self.peers.get_mut(&pid) {
            p.flood.drain(..consumed.min(p.flood.len()));
        }
        self.counters.floods += 1;
        self.counters.records_out += n as u64;
        Step::Sent(Transmit {
            dest: Dest::Overlay(addr),
            len,
        })
    }
}
