//! Neighbours and probes (SPEC.md §7.2, §7.5): choosing the neighbour graph, the probe tick and
//! suspicion, probes and acks, and the RTT samples that move the Vivaldi coordinate.

use core::net::SocketAddr;
use core::ops::Bound;
use core::time::Duration;

use pias_proto::control::{MemberStatus, Probe};
use smallvec::SmallVec;

use super::anti_entropy::AeJob;
use super::outbox::Out;
use super::table::{chord_position, ring_position};
use super::{
    CHORDS, CHOSEN, Membership, PROBE_RING, Peer, REVERSE_CYCLES, RTT_WINDOW, peer_entry, supersedes,
};
use crate::coords::Coord;
use crate::time::Instant;

/// Ticks a confirming monitor's probes must stay unanswered (§7.2): two, so that a monitor whose round trip
/// to the suspect is longer than one tick does not confirm a suspicion of a live member.
const CONFIRM_MISSES: u32 = 2;

impl Membership {
    pub(super) fn peer(&mut self, id: u32) -> Option<&mut Peer> {
        peer_entry(
            &mut self.peers,
            self.cfg.max_peers,
            &mut self.counters.peers_full,
            id,
        )
    }

    /// How long a proxy that probed this one stays a reverse neighbour (§7.2).
    pub(super) fn reverse_window(&self) -> Duration {
        self.cfg
            .probe_interval
            .saturating_mul(CHOSEN as u32 * REVERSE_CYCLES)
    }

    /// Recomputes the chosen neighbours if membership changed (§7.2): O(log n).
    pub(super) fn refresh_neighbours(&mut self) {
        if !self.nbr_dirty {
            return;
        }
        self.nbr_dirty = false;
        let me = self.me.id.0;
        let at = (ring_position(&self.ring_key, me), me);
        let ring = self.table.ring();
        let mut chosen: SmallVec<[u32; CHOSEN]> = SmallVec::new();
        let add = |id: u32, chosen: &mut SmallVec<[u32; CHOSEN]>| {
            if id != me && !chosen.contains(&id) {
                chosen.push(id);
            }
        };
        let after = ring
            .range((Bound::Excluded(at), Bound::Unbounded))
            .chain(ring.range(..at));
        for &(_, id) in after.filter(|e| e.1 != me).take(2) {
            add(id, &mut chosen);
        }
        let before = ring
            .range(..at)
            .rev()
            .chain(ring.range((Bound::Excluded(at), Bound::Unbounded)).rev());
        for &(_, id) in before.filter(|e| e.1 != me).take(2) {
            add(id, &mut chosen);
        }
        for i in 0..CHORDS {
            let c = chord_position(&self.ring_key, me, i);
            let first = ring.range((c, 0)..).chain(ring.iter()).find(|e| e.1 != me);
            if let Some(&(_, id)) = first {
                add(id, &mut chosen);
            }
        }
        for &old in &self.chosen {
            if !chosen.contains(&old)
                && let Some(p) = self.peers.get_mut(&old)
            {
                p.chosen = false;
                p.outstanding = false;
                p.missed = 0;
                p.confirming = false;
            }
        }
        let mut kept: SmallVec<[u32; CHOSEN]> = SmallVec::new();
        for &id in &chosen {
            if let Some(p) = self.peer(id) {
                // A new neighbour is probed at the next tick, not when its turn comes: after a heal or a
                // join this is what spreads refutations and starts anti-entropy quickly.
                if !p.chosen {
                    p.urgent = true;
                }
                p.chosen = true;
                kept.push(id);
            }
        }
        self.chosen = kept;
    }

    /// The probe tick (§7.2): count a miss for every chosen neighbour whose last probe is unanswered (it
    /// is re-probed, and suspected after `suspect_after` misses, or marked Down at once if another proxy
    /// already suspects it), then probe the next neighbour in turn and every urgent one.
    pub(super) fn probe_tick(&mut self, now: Instant) {
        let recent = self.reverse_window();
        // Forget peers with nothing left to do.
        self.peers.retain(|_, p| {
            p.chosen
                || p.probed_me.is_some_and(|t| now < t + recent)
                || !p.flood.is_empty()
                || !p.ae.is_empty()
        });
        if self.left_at.is_some() || self.chosen.is_empty() {
            return;
        }
        let turn = self.chosen[self.rr % self.chosen.len()];
        self.rr = self.rr.wrapping_add(1);
        for i in 0..self.chosen.len() {
            let id = self.chosen[i];
            let status = self.table.get(id).map(|m| m.record.status);
            let mut verdict = None;
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if p.outstanding {
                p.missed = p.missed.saturating_add(1);
                if status == Some(MemberStatus::Suspect) && p.confirming && p.missed >= CONFIRM_MISSES {
                    verdict = Some(MemberStatus::Down);
                } else if status == Some(MemberStatus::Alive) && p.missed >= self.cfg.suspect_after {
                    verdict = Some(MemberStatus::Suspect);
                }
            }
            if !(id == turn || p.outstanding || p.urgent) {
                continue;
            }
            p.urgent = false;
            p.outstanding = true;
            p.probe_at = (p.probe_at + 1) % PROBE_RING;
            let nonce = self.next_nonce();
            if let Some(p) = self.peers.get_mut(&id) {
                p.probes[p.probe_at] = (nonce, None);
            }
            if let Some(v) = verdict {
                self.verdict(now, id, v);
            }
            self.push_out(Out::Probe { to: id, nonce });
        }
    }

    /// Marks chosen neighbour `id` Suspect (its own misses) or Down (a confirmed suspicion), and floods it.
    fn verdict(&mut self, now: Instant, id: u32, status: MemberStatus) {
        let Some(m) = self.table.get(id) else { return };
        let mut r = m.record;
        r.status = status;
        if status == MemberStatus::Down {
            self.counters.downs += 1;
            self.counters.confirmations += 1;
        } else {
            self.counters.suspects += 1;
        }
        self.apply_local(now, r);
    }

    /// Another proxy reports chosen neighbour `id` Suspect (§7.2): unless the suspicion is ours, confirm it
    /// — at once if our own probes to it have missed `CONFIRM_MISSES` ticks, else with the probes sent from
    /// the next tick on.
    pub(super) fn suspicion_reported(&mut self, now: Instant, id: u32) {
        if self
            .table
            .get(id)
            .is_none_or(|m| m.record.status != MemberStatus::Suspect)
        {
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else { return };
        if !p.chosen || p.confirming || p.missed >= self.cfg.suspect_after {
            // Not our neighbour, already confirming, or the suspicion is ours (its echo is no confirmation).
            return;
        }
        p.confirming = true;
        if p.missed >= CONFIRM_MISSES {
            self.verdict(now, id, MemberStatus::Down);
        } else {
            p.urgent = true;
        }
    }

    /// Every `ae_interval`, probe one Down tombstone: if it is alive again (a healed partition), the
    /// answer makes both sides exchange records and the owner refute (§7.2).
    pub(super) fn reconnect_probe(&mut self) {
        if self.left_at.is_some() || self.tombstones.is_empty() {
            return;
        }
        let i = (self.rng.next_u64() % self.tombstones.len() as u64) as usize;
        let id = self.tombstones[i].1;
        if self
            .table
            .get(id)
            .is_some_and(|m| m.record.status == MemberStatus::Down)
        {
            let nonce = self.next_nonce();
            self.push_out(Out::Probe { to: id, nonce });
        }
    }

    /// A member held Down is talking to us: the partition that cut it off has probably healed, so probe
    /// up to `CHOSEN` more Down tombstones now rather than one per `ae_interval` (at most one burst per
    /// `ae_interval`). Each answered probe makes both ends refute, so the heal spreads geometrically (§7.2).
    fn reconnect_burst(&mut self, now: Instant) {
        if self.last_burst.is_some_and(|t| now < t + self.cfg.ae_interval) {
            return;
        }
        self.last_burst = Some(now);
        for _ in 0..CHOSEN {
            self.reconnect_probe();
        }
    }

    /// A fresh probe nonce: a keyed PRF of a counter (SPEC.md §8.1). Nonces travel in plaintext, so they
    /// must not be outputs of the seeded generator (a SplitMix64 output gives its state, hence every later
    /// choice, away). Never 0: an ack with nonce 0 answers nothing.
    fn next_nonce(&mut self) -> u64 {
        self.nonces = self.nonces.wrapping_add(1);
        crate::secrets::prf(&self.nonce_key, 1, self.nonces).max(1)
    }

    pub(super) fn on_probe(&mut self, now: Instant, from: SocketAddr, sender: u32, p: &Probe) {
        self.counters.probes_received += 1;
        self.push_out(Out::Ack {
            addr: from,
            nonce: p.nonce,
        });
        if self.table.get(sender).is_none() {
            return;
        }
        if let Some(peer) = self.peer(sender) {
            peer.probed_me = Some(now);
        }
        self.after_exchange(now, from, sender, p);
    }

    pub(super) fn on_ack(&mut self, now: Instant, from: SocketAddr, sender: u32, p: &Probe) {
        let mut rtt = None;
        if let Some(peer) = self.peers.get_mut(&sender)
            && peer.outstanding
            && let Some(slot) = peer.probes.iter_mut().find(|(n, _)| *n == p.nonce && *n != 0)
        {
            peer.outstanding = false;
            peer.missed = 0;
            peer.confirming = false;
            rtt = slot.1.map(|t| now - t);
            // Each nonce answers once.
            slot.0 = 0;
            self.counters.acks += 1;
        } else {
            self.counters.acks_unmatched += 1;
        }
        if let Some(rtt) = rtt
            && let Some(peer) = self.peers.get_mut(&sender)
        {
            // Minimum filter (Ledlie et al., NSDI 2007): queueing only ever adds delay, so the smallest of
            // the last few samples is the best estimate of the path's RTT; jitter then barely moves the
            // coordinate (§7.5).
            peer.rtt_at = (peer.rtt_at + 1) % RTT_WINDOW;
            peer.rtts[peer.rtt_at] = rtt.max(Duration::from_micros(1));
            let filtered = peer
                .rtts
                .iter()
                .copied()
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(rtt);
            self.coord_sample(now, sender, &p.coord, filtered);
        }
        self.after_exchange(now, from, sender, p);
    }

    /// Common to Probe and ProbeAck from a member: correct a stale view of the sender, compare digests.
    pub(super) fn after_exchange(&mut self, now: Instant, from: SocketAddr, sender: u32, p: &Probe) {
        let Some(m) = self.table.get(sender) else { return };
        // It is talking, yet we hold it Suspect or Down at a version it has not superseded: tell it, so it
        // refutes (§7.2). This is also how a healed partition finds its way back.
        if matches!(m.record.status, MemberStatus::Suspect | MemberStatus::Down)
            && (p.incarnation, p.version) <= (m.record.incarnation, m.record.version)
        {
            let down = m.record.status == MemberStatus::Down;
            self.push_out(Out::Tell {
                addr: from,
                ids: [sender, 0],
            });
            if down {
                self.reconnect_burst(now);
            }
        }
        let mine = self.table.digest();
        let ae_interval = self.cfg.ae_interval;
        let Some(peer) = self.peer(sender) else { return };
        if p.digest == mine {
            peer.mismatches = 0;
            return;
        }
        peer.mismatches = peer.mismatches.saturating_add(1);
        // Neighbours are probed in turn, so the next exchange with this one could be a cycle away: probe
        // it at the next tick to see whether the difference persists (it costs nothing while tables agree).
        peer.urgent |= peer.mismatches == 1 && peer.chosen;
        if peer.mismatches >= 2 && peer.ae_last.is_none_or(|t| now >= t + ae_interval) {
            peer.mismatches = 0;
            peer.ae_last = Some(now);
            self.counters.ae_sessions += 1;
            self.push_ae(sender, AeJob::Digest { depth: 0, prefix: 0 });
        }
    }

    /// Vivaldi update from a probe RTT, and a re-flood of the own record if it moved enough (§7.5).
    pub(super) fn coord_sample(&mut self, now: Instant, sender: u32, remote: &[u8; 16], rtt: Duration) {
        let Ok(rc) = Coord::from_bytes(remote) else { return };
        if self.coord.update(&rc, rtt, u64::from(sender)).is_err() {
            return;
        }
        // The first floods come quickly (1 s, 2 s, 4 s, … apart, during the first `coord_flood_interval` after
        // start) so that proximity works soon after a proxy starts, when its coordinate moves most; then at
        // most once per `coord_flood_interval` or per
        // `members × coord_flood_spacing`, whichever is longer, so that the whole overlay re-floods at most
        // one record per `coord_flood_spacing` and the records each proxy receives do not grow with n (§7.5).
        let startup = Duration::from_secs(1u64 << self.counters.coord_floods.min(16));
        let interval = if now < self.started + self.cfg.coord_flood_interval {
            startup.min(self.cfg.coord_flood_interval)
        } else {
            let members = u32::try_from(self.table.ring().len()).unwrap_or(u32::MAX);
            self.cfg
                .coord_flood_interval
                .max(self.cfg.coord_flood_spacing.saturating_mul(members))
        };
        if self.left_at.is_some() {
            return;
        }
        let held = self.last_coord_flood.is_some_and(|t| now < t + interval);
        let (a, b) = (self.coord.position(), self.published.position());
        let moved = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
            + (self.coord.height() - self.published.height()).abs();
        let nearest = self
            .chosen
            .iter()
            .filter_map(|&id| self.table.get(id))
            .map(|m| self.coord.distance_ms(&m.coord()))
            .fold(f64::INFINITY, f64::min);
        if nearest.is_finite() && moved > 0.25 * nearest {
            if held {
                self.counters.coord_floods_deferred += 1;
                return;
            }
            self.last_coord_flood = Some(now);
            self.published = self.coord;
            self.counters.coord_floods += 1;
            let mut r = self.me;
            r.coord = self.coord.to_bytes();
            r.version = r.version.saturating_add(1);
            if supersedes(&r, &self.me) {
                self.set_me(now, r);
            }
        }
    }

    pub(super) fn probe_body(&self, nonce: u64) -> Probe {
        Probe {
            nonce,
            incarnation: self.me.incarnation,
            version: self.me.version,
            digest: self.table.digest(),
            coord: self.coord.to_bytes(),
        }
    }
}
