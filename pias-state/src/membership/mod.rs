//! Membership (SPEC.md §7): who is in the overlay, who is alive, and their coordinates.
//!
//! Every proxy keeps every proxy's 48-byte record. Changes are flooded over a sparse neighbour graph
//! (2 successors, 2 predecessors, 4 hashed chords, plus reverse neighbours); neighbours probe each other
//! every `probe_interval` to detect failures and to sample RTTs for Vivaldi coordinates; the table digest
//! rides on every probe, and two consecutive mismatches start an anti-entropy descent of the 16-ary digest
//! tree that repairs whatever flooding lost (joins, partitions, loss).
//!
//! # Driving it
//!
//! Sans-IO, like every machine of this crate. For each received control frame whose MAC verified, call
//! [`Membership::accept`] (replay window and sender check; it commits the sequence number), and if it
//! returns `Ok`, [`Membership::handle`]. Call [`Membership::handle_timeout`] at [`Membership::poll_timeout`]
//! (early or repeated calls are harmless). After any of these, drain [`Membership::poll_transmit`] (one
//! frame per call, `None` when nothing is due) and [`Membership::poll_event`].
//!
//! # Bounds
//!
//! The member table holds at most `max_members` records (new ids refused, counted); stranger replay
//! windows, peers, per-peer flood and anti-entropy queues, the outbox and the event queue are bounded and
//! count what they drop. Steady-state traffic per proxy is a constant: a probe and an ack per chosen
//! neighbour per `probe_interval`, whatever the overlay's size.

mod config;
mod table;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use core::net::SocketAddr;
use core::ops::Bound;
use core::time::Duration;

use pias_proto::ProxyId;
use pias_proto::auth::SipKey;
use pias_proto::control::{
    DIGEST_FANOUT, Digest, MemberStatus, Message, Probe, ProxyRecord, Pull, Records, kind,
};
use smallvec::SmallVec;

use crate::coords::Coord;
use crate::replay::ReplayWindow;
use crate::seal::{Dest, Sealer, Transmit};
use crate::time::Instant;

pub use config::{ConfigError, MembershipConfig};
pub use table::{Member, supersedes};

use table::{HashMap, Keyed, Table, chord_position, node_of, ring_position, usable_status};

/// Chosen neighbours: 2 successors, 2 predecessors, 4 chords (SPEC.md §7.2).
const CHOSEN: usize = 8;
const CHORDS: u16 = 4;
/// A child with at most this many records is transferred rather than descended (SPEC.md §7.4).
const AE_LEAF: u32 = Records::MAX as u32;

/// Why a control message was refused by [`Membership::accept`]. In every case nothing changed (the
/// sequence number was not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// The sequence number was seen already or is older than the window (§8.2).
    #[error("replayed or too old sequence number")]
    Replay,
    /// A message other than Join or Probe from an id not in the member table (§8.3).
    #[error("sender is not a member")]
    UnknownSender,
    /// A message other than Join from a member whose record says Left (§8.3).
    #[error("sender has left")]
    LeftSender,
    /// Sender id 0, or this proxy's own id.
    #[error("reserved or own sender id")]
    BadSender,
}

/// Probes per neighbour whose acks are still accepted: an ack up to this many probe intervals late counts.
const PROBE_RING: usize = 4;

/// A joined proxy re-checks its seeds every `SEED_CHECK_RETRIES × join_retry` (10 s by default).
const SEED_CHECK_RETRIES: u32 = 10;

/// A change of a member's standing, for the proxy's other machines (ring, caches, `pias ctl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member became Alive (new, rejoined or restarted): usable for data.
    Up { id: ProxyId, addr: SocketAddr },
    /// A member is suspected: stop sending it data (§7.2).
    Suspect { id: ProxyId },
    /// A suspected member refuted: usable again.
    Alive { id: ProxyId },
    /// A member was marked Down.
    Down { id: ProxyId },
    /// A member left gracefully.
    Left { id: ProxyId },
    /// A usable member's overlay address changed.
    AddrChanged { id: ProxyId, addr: SocketAddr },
    /// A tombstone expired and the record was deleted.
    Removed { id: ProxyId },
}

counters! {
    /// Counters (SPEC.md §15); plain totals since start.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct MembershipCounters("member_") {
        probes_sent,
        probes_received,
        acks_sent,
        acks,
        /// ProbeAcks whose nonce matched no outstanding probe (late, duplicated, or a reconnect probe's).
        acks_unmatched,
        suspects,
        downs,
        refutations,
        /// Records received (in Records and Join messages).
        records_in,
        /// Records received that were new or superseding.
        records_applied,
        /// Records received that did not supersede the stored one.
        records_stale,
        /// Records sent.
        records_out,
        /// Records messages sent by flooding.
        floods,
        /// Record ids dropped from a full flood queue.
        flood_dropped,
        ae_sessions,
        ae_digests_sent,
        ae_pulls_sent,
        /// Records messages sent for anti-entropy (answers to Digest and Pull, and Join answers).
        ae_records_sent,
        /// Anti-entropy work dropped from a full per-peer queue.
        ae_dropped,
        joins_sent,
        /// Joins a joined proxy sent to seeds it did not see as members (island repair, §7.6).
        seed_rejoins,
        /// Records messages from strangers ignored (after joining, without the sender's own record).
        stranger_records_ignored,
        joins_received,
        /// Join whose record is not the sender's.
        bad_joins,
        replays,
        unknown_sender,
        left_sender,
        bad_sender,
        /// New ids refused because the table was full.
        table_full,
        /// Down or Left records for ids not in the table (ignored, §7.6).
        tombstones_ignored,
        tombstones_expired,
        events_dropped,
        out_dropped,
        peers_full,
        strangers_evicted,
        timers_dropped,
        /// Re-floods of the own record for a coordinate change.
        coord_floods,
        /// Frames handed to the driver.
        frames_sent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// A probe to a member (address from the table at send time).
    Probe {
        to: u32,
        nonce: u64,
    },
    Ack {
        addr: SocketAddr,
        nonce: u64,
    },
    Join {
        addr: SocketAddr,
    },
    /// The current records of `ids` (0 = none), sent directly to `addr`.
    Tell {
        addr: SocketAddr,
        ids: [u32; 2],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AeJob {
    Digest {
        depth: u8,
        prefix: u32,
    },
    Pull {
        depth: u8,
        prefix: u32,
    },
    /// Records under a node, from bucket `bucket`, position `off` on.
    Records {
        depth: u8,
        prefix: u32,
        bucket: u32,
        off: u32,
    },
}

#[derive(Debug)]
struct Peer {
    chosen: bool,
    /// Last Probe received from it (reverse neighbour while recent).
    probed_me: Option<Instant>,
    /// The last few probes' nonces and send times: an ack for any of them answers (a round trip may be
    /// longer than the probe interval, §7.2).
    probes: [(u64, Option<Instant>); PROBE_RING],
    probe_at: usize,
    outstanding: bool,
    missed: u32,
    mismatches: u8,
    ae_last: Option<Instant>,
    flood: VecDeque<u32>,
    ae: VecDeque<AeJob>,
    in_ae_ring: bool,
    in_flush: bool,
}

impl Peer {
    fn new() -> Self {
        Peer {
            chosen: false,
            probed_me: None,
            probes: [(0, None); PROBE_RING],
            probe_at: 0,
            outstanding: false,
            missed: 0,
            mismatches: 0,
            ae_last: None,
            flood: VecDeque::new(),
            ae: VecDeque::new(),
            in_ae_ring: false,
            in_flush: false,
        }
    }
}

/// Replay windows of senders that are not members (yet), least recently used evicted (§8.2).
#[derive(Debug)]
struct Strangers {
    cap: usize,
    clock: u64,
    map: HashMap<u32, (ReplayWindow, u64)>,
}

impl Strangers {
    fn commit(&mut self, id: u32, seq: u64, evicted: &mut u64) -> bool {
        self.clock += 1;
        if let Some((w, t)) = self.map.get_mut(&id) {
            *t = self.clock;
            return w.commit(seq);
        }
        let mut w = ReplayWindow::default();
        if !w.commit(seq) {
            return false;
        }
        if self.map.len() >= self.cap {
            // Bounded scan (cap entries), only when a new stranger arrives at a full table.
            if let Some(old) = self.map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                self.map.remove(&old);
                *evicted += 1;
            }
        }
        self.map.insert(id, (w, self.clock));
        true
    }
}

/// The membership state machine of one proxy. See the module documentation for the driving order.
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    ring_key: SipKey,
    me: ProxyRecord,
    table: Table,
    strangers: Strangers,
    peers: HashMap<u32, Peer>,
    chosen: SmallVec<[u32; CHOSEN]>,
    nbr_dirty: bool,
    out: VecDeque<Out>,
    flush: Vec<u32>,
    flood_due: bool,
    ae_ring: VecDeque<u32>,
    ae_left: usize,
    events: VecDeque<MemberEvent>,
    suspicions: VecDeque<(Instant, u32)>,
    tombstones: VecDeque<(Instant, u32)>,
    next_probe: Instant,
    next_tick: Option<Instant>,
    next_join: Option<Instant>,
    /// When a joined proxy next checks that its seeds are members (§7.6).
    next_seed_check: Instant,
    next_reconnect: Instant,
    left_at: Option<Instant>,
    coord: Coord,
    published: Coord,
    last_coord_flood: Option<Instant>,
    rng: crate::rng::SplitMix,
    counters: MembershipCounters,
}

impl Membership {
    /// A proxy's membership with only its own record. `me` carries the id, overlay address and incarnation;
    /// it is stored Alive with version at least 1. Call [`MembershipConfig::validate`] first: an invalid
    /// configuration is not rejected here, only clamped into something that cannot panic.
    pub fn new(cfg: MembershipConfig, me: ProxyRecord, ring_key: SipKey, seed: u64, now: Instant) -> Self {
        let mut me = me;
        me.status = MemberStatus::Alive;
        me.version = me.version.max(1);
        let coord = Coord::from_bytes(&me.coord).unwrap_or_default();
        me.coord = coord.to_bytes();
        let mut table = Table::new(ring_key, cfg.max_members.max(1));
        // Cannot fail: the table is empty and its bound is at least 1.
        let _ = table.insert(me, ReplayWindow::default(), now);
        let mut rng = crate::rng::SplitMix::new(seed);
        let probe_interval = cfg.probe_interval.max(Duration::from_millis(1));
        // Spread probe ticks of proxies started together.
        let phase = Duration::from_micros(rng.next_u64() % (probe_interval.as_micros() as u64).max(1));
        let joining = cfg.seeds.iter().any(|s| *s != me.addr);
        Membership {
            strangers: Strangers {
                cap: cfg.stranger_windows.max(1),
                clock: 0,
                map: HashMap::with_hasher(Keyed::new(&ring_key)),
            },
            ae_left: cfg.ae_budget,
            next_probe: now + phase,
            next_tick: None,
            next_join: joining.then_some(now),
            next_seed_check: now,
            next_reconnect: now + cfg.ae_interval,
            cfg,
            ring_key,
            me,
            table,
            peers: HashMap::with_hasher(Keyed::new(&ring_key)),
            chosen: SmallVec::new(),
            nbr_dirty: true,
            out: VecDeque::new(),
            flush: Vec::new(),
            flood_due: false,
            ae_ring: VecDeque::new(),
            events: VecDeque::new(),
            suspicions: VecDeque::new(),
            tombstones: VecDeque::new(),
            left_at: None,
            coord,
            published: coord,
            last_coord_flood: None,
            rng,
            counters: MembershipCounters::default(),
        }
    }

    // ----- getters -----

    /// This proxy's own record as it currently floods it.
    pub fn me(&self) -> &ProxyRecord {
        &self.me
    }

    /// This proxy's current coordinate (may be ahead of the one in its record, §7.5).
    pub fn my_coord(&self) -> Coord {
        self.coord
    }

    pub fn get(&self, id: ProxyId) -> Option<&Member> {
        self.table.get(id.0)
    }

    /// Alive (Suspect is not usable for data, §7.2).
    pub fn is_usable(&self, id: ProxyId) -> bool {
        self.table
            .get(id.0)
            .is_some_and(|m| m.record.status == MemberStatus::Alive)
    }

    /// The member whose overlay address is `addr`, if Alive or Suspect (data-frame acceptance, §4.1).
    pub fn id_by_addr(&self, addr: SocketAddr) -> Option<ProxyId> {
        self.table.id_by_addr(&addr).map(ProxyId)
    }

    /// Alive members, this proxy included.
    pub fn usable(&self) -> impl Iterator<Item = ProxyId> + '_ {
        self.table
            .iter()
            .filter(|m| m.record.status == MemberStatus::Alive)
            .map(|m| m.record.id)
    }

    /// Alive or Suspect members, this proxy included: the RAP ring's members (§13.1).
    pub fn ring_members(&self) -> impl Iterator<Item = ProxyId> + '_ {
        self.table.ring().iter().map(|&(_, id)| ProxyId(id))
    }

    /// The chosen neighbours (§7.2).
    pub fn neighbours(&self) -> impl Iterator<Item = ProxyId> + '_ {
        self.chosen.iter().map(|&id| ProxyId(id))
    }

    /// Every record, tombstones included (for `pias ctl` dumps).
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.table.iter()
    }

    /// The table digest (root of the anti-entropy tree, §7.4).
    pub fn digest(&self) -> u64 {
        self.table.digest()
    }

    /// Records in the table, own and tombstones included.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Never true: the own record is always there.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Whether a Records message has arrived since start (or no seed was configured).
    pub fn joined(&self) -> bool {
        self.next_join.is_none()
    }

    /// Whether a graceful leave has finished its `drain_time` (the driver may stop).
    pub fn drained(&self, now: Instant) -> bool {
        self.left_at.is_some_and(|t| now >= t + self.cfg.drain_time)
    }

    pub fn counters(&self) -> &MembershipCounters {
        &self.counters
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        use core::mem::size_of;
        let peers: usize = self
            .peers
            .values()
            .map(|p| {
                p.flood.capacity() * 4 + p.ae.capacity() * size_of::<AeJob>() + size_of::<(u32, Peer)>() + 1
            })
            .sum();
        self.table.memory_bytes()
            + peers
            + self.strangers.map.capacity() * (size_of::<(u32, (ReplayWindow, u64))>() + 1)
            + (self.suspicions.capacity() + self.tombstones.capacity()) * size_of::<(Instant, u32)>()
            + self.out.capacity() * size_of::<Out>()
            + self.events.capacity() * size_of::<MemberEvent>()
            + self.flush.capacity() * 4
            + self.ae_ring.capacity() * 4
    }

    // ----- input -----

    /// Replay and sender check of a control message whose MAC verified (SPEC.md §8.2, §8.3). Join and
    /// Probe are accepted from any sender id (stranger windows); Records also from any sender until this
    /// proxy has joined; every other type only from members not Left. Commits the sequence number on `Ok`.
    pub fn accept(&mut self, sender: ProxyId, seq: u64, kind: u8) -> Result<(), Reject> {
        let r = self.accept_inner(sender, seq, kind);
        match r {
            Err(Reject::Replay) => self.counters.replays += 1,
            Err(Reject::UnknownSender) => self.counters.unknown_sender += 1,
            Err(Reject::LeftSender) => self.counters.left_sender += 1,
            Err(Reject::BadSender) => self.counters.bad_sender += 1,
            Ok(()) => {}
        }
        r
    }

    fn accept_inner(&mut self, sender: ProxyId, seq: u64, kind: u8) -> Result<(), Reject> {
        if !sender.is_some() || sender == self.me.id {
            return Err(Reject::BadSender);
        }
        if let Some(m) = self.table.get_mut(sender.0) {
            if m.record.status == MemberStatus::Left && kind != kind::JOIN {
                return Err(Reject::LeftSender);
            }
            return if m.window.commit(seq) {
                Ok(())
            } else {
                Err(Reject::Replay)
            };
        }
        // Records from a stranger pass here; `handle` applies them only while joining or when they carry
        // the sender's own record (a seed answering our Join: how an island merges, §7.6).
        let stranger_ok = kind == kind::JOIN || kind == kind::PROBE || kind == kind::RECORDS;
        if !stranger_ok {
            return Err(Reject::UnknownSender);
        }
        if self
            .strangers
            .commit(sender.0, seq, &mut self.counters.strangers_evicted)
        {
            Ok(())
        } else {
            Err(Reject::Replay)
        }
    }

    /// Handles an accepted membership message from `sender` at UDP source `from`. Other message types are
    /// ignored.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, sender: ProxyId, msg: &Message<'_>) {
        if !sender.is_some() || sender == self.me.id {
            return;
        }
        match msg {
            Message::Probe(p) => self.on_probe(now, from, sender.0, p),
            Message::ProbeAck(p) => self.on_ack(now, from, sender.0, p),
            Message::Records(rs) => {
                let stranger = self.table.get(sender.0).is_none();
                if stranger && self.joined() && !rs.iter().any(|r| r.id == sender) {
                    self.counters.stranger_records_ignored += 1;
                    return;
                }
                for r in rs.iter() {
                    self.counters.records_in += 1;
                    self.apply(now, r, Some(sender.0));
                }
                if self.next_join.take().is_some() {
                    // Joined: the seed's answer arrived.
                }
            }
            Message::Digest(d) => self.on_digest(now, sender.0, d),
            Message::Pull(p) => {
                self.push_ae(
                    sender.0,
                    AeJob::Records {
                        depth: p.depth,
                        prefix: p.prefix,
                        bucket: 0,
                        off: 0,
                    },
                );
            }
            Message::Join(r) => self.on_join(now, from, sender.0, r),
            _ => {}
        }
        self.refresh_neighbours();
    }

    // ----- timers -----

    /// The earliest instant at which [`Membership::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_probe.min(self.next_reconnect);
        for x in [
            self.next_tick,
            self.next_join,
            self.joined().then_some(self.next_seed_check),
            self.suspicions.front().map(|e| e.0),
            self.tombstones.front().map(|e| e.0),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(x);
        }
        Some(t)
    }

    /// Runs every timer due at `now`. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_probe {
            self.next_probe = advance(self.next_probe, self.cfg.probe_interval, now);
            self.probe_tick(now);
        }
        if let Some(t) = self.next_join
            && now >= t
        {
            self.next_join = Some(now + self.cfg.join_retry);
            for i in 0..self.cfg.seeds.len() {
                let addr = self.cfg.seeds[i];
                if addr != self.me.addr {
                    self.push_out(Out::Join { addr });
                }
            }
        }
        if self.joined() && now >= self.next_seed_check {
            // A joined proxy keeps asking the seeds it does not see as members: if it joined through a seed
            // that was itself still joining, this is how its island finds the rest of the overlay (§7.6).
            self.next_seed_check = now + self.cfg.join_retry * SEED_CHECK_RETRIES;
            for i in 0..self.cfg.seeds.len() {
                let addr = self.cfg.seeds[i];
                if addr != self.me.addr && self.id_by_addr(addr).is_none() {
                    self.counters.seed_rejoins += 1;
                    self.push_out(Out::Join { addr });
                }
            }
        }
        if now >= self.next_reconnect {
            self.next_reconnect = advance(self.next_reconnect, self.cfg.ae_interval, now);
            self.reconnect_probe();
        }
        while let Some(&(t, id)) = self.suspicions.front() {
            if t > now {
                break;
            }
            self.suspicions.pop_front();
            if let Some(m) = self.table.get(id)
                && m.record.status == MemberStatus::Suspect
                && m.since + self.cfg.suspect_timeout <= now
            {
                let mut r = m.record;
                r.status = MemberStatus::Down;
                self.counters.downs += 1;
                self.apply_local(now, r);
            }
        }
        while let Some(&(t, id)) = self.tombstones.front() {
            if t > now {
                break;
            }
            self.tombstones.pop_front();
            if id != self.me.id.0
                && let Some(m) = self.table.get(id)
                && !usable_status(m.record.status)
                && m.since + self.cfg.tombstone_time <= now
            {
                self.table.remove(id);
                self.peers.remove(&id);
                self.counters.tombstones_expired += 1;
                self.event(MemberEvent::Removed { id: ProxyId(id) });
            }
        }
        if let Some(t) = self.next_tick
            && now >= t
        {
            self.next_tick = None;
            self.ae_left = self.cfg.ae_budget;
            self.flood_due = true;
            self.flush.clear();
            for (&id, p) in self.peers.iter_mut() {
                p.in_flush = !p.flood.is_empty();
                if p.in_flush {
                    self.flush.push(id);
                }
            }
        }
        self.refresh_neighbours();
    }

    // ----- output -----

    /// The next frame to send, written into `buf` (at least 1208 bytes: Geneve header and the largest
    /// control message). One frame per call; work per call is bounded. If `buf` is too small, `None` and
    /// nothing is consumed.
    pub fn poll_transmit(&mut self, now: Instant, sealer: &mut Sealer, buf: &mut [u8]) -> Option<Transmit> {
        let mut scratch = [self.me; Records::MAX];
        // 1. Probes, acks, joins, direct records.
        while let Some(&item) = self.out.front() {
            match self.emit_out(now, item, sealer, buf, &mut scratch) {
                Step::Sent(t) => {
                    self.out.pop_front();
                    return Some(self.sent(t));
                }
                Step::Skip => {
                    self.out.pop_front();
                }
                Step::Blocked => return None,
            }
        }
        // 2. Flooding, at the tick.
        if self.flood_due {
            while let Some(&pid) = self.flush.last() {
                match self.emit_flood(pid, sealer, buf, &mut scratch) {
                    Step::Sent(t) => return Some(self.sent(t)),
                    Step::Skip => {
                        self.flush.pop();
                        if let Some(p) = self.peers.get_mut(&pid) {
                            p.in_flush = false;
                        }
                    }
                    Step::Blocked => return None,
                }
            }
            self.flood_due = false;
        }
        // 3. Anti-entropy, paced: at most `ae_budget` messages per tick, round robin over peers.
        let mut tries = 256usize;
        while self.ae_left > 0 && !self.ae_ring.is_empty() {
            if tries == 0 {
                // Bounded work per call: come back at the next tick.
                self.arm_tick(now);
                return None;
            }
            tries -= 1;
            let Some(pid) = self.ae_ring.pop_front() else {
                break;
            };
            match self.emit_ae(pid, sealer, buf, &mut scratch) {
                Step::Sent(t) => {
                    self.ae_left -= 1;
                    self.requeue_ae(pid);
                    return Some(self.sent(t));
                }
                Step::Skip => self.requeue_ae(pid),
                Step::Blocked => {
                    self.ae_ring.push_front(pid);
                    return None;
                }
            }
        }
        if !self.ae_ring.is_empty() {
            self.arm_tick(now);
        }
        None
    }

    /// The next member event, if any.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    // ----- mutators -----

    /// Leaves gracefully: own status Left (version + 1), flooded; probes stop, answers continue. The driver
    /// stops after [`Membership::drained`].
    pub fn leave(&mut self, now: Instant) {
        if self.left_at.is_some() {
            return;
        }
        self.left_at = Some(now);
        self.next_join = None;
        let mut r = self.me;
        r.status = MemberStatus::Left;
        r.version = r.version.saturating_add(1);
        self.set_me(now, r);
    }

    // ----- internals: records -----

    /// Applies a received record with the precedence rule (§7.1); `from` is the member it came from.
    fn apply(&mut self, now: Instant, r: ProxyRecord, from: Option<u32>) {
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
    fn apply_local(&mut self, now: Instant, r: ProxyRecord) {
        if let Some(old) = self.table.replace(r, now) {
            self.changed(now, Some(old), r);
            self.flood(now, r.id.0, None);
        }
    }

    /// A record about this proxy: refute anything that supersedes the own record (§7.1).
    fn about_me(&mut self, now: Instant, r: ProxyRecord, from: Option<u32>) {
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

    fn set_me(&mut self, now: Instant, r: ProxyRecord) {
        self.me = r;
        self.table.replace(r, now);
        self.flood(now, r.id.0, None);
    }

    /// Bookkeeping after a record changed from `old` to `new`: events, timers, neighbour graph.
    fn changed(&mut self, now: Instant, old: Option<ProxyRecord>, new: ProxyRecord) {
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
        let ev = match (old_status, new.status) {
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

    fn event(&mut self, e: MemberEvent) {
        if self.events.len() >= self.cfg.event_queue {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(e);
        }
    }

    /// Queues record `id` for every neighbour (chosen and reverse) except `except` (§7.3).
    fn flood(&mut self, now: Instant, id: u32, except: Option<u32>) {
        let recent = self.cfg.probe_interval.saturating_mul(3);
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

    fn arm_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.cfg.flood_interval);
        }
    }

    // ----- internals: neighbours and probes -----

    fn peer(&mut self, id: u32) -> Option<&mut Peer> {
        peer_entry(
            &mut self.peers,
            self.cfg.max_peers,
            &mut self.counters.peers_full,
            id,
        )
    }

    /// Recomputes the chosen neighbours if membership changed (§7.2): O(log n).
    fn refresh_neighbours(&mut self) {
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
            }
        }
        let mut kept: SmallVec<[u32; CHOSEN]> = SmallVec::new();
        for &id in &chosen {
            if let Some(p) = self.peer(id) {
                p.chosen = true;
                kept.push(id);
            }
        }
        self.chosen = kept;
    }

    fn probe_tick(&mut self, now: Instant) {
        let recent = self.cfg.probe_interval.saturating_mul(3);
        // Forget peers with nothing left to do.
        self.peers.retain(|_, p| {
            p.chosen
                || p.probed_me.is_some_and(|t| now < t + recent)
                || !p.flood.is_empty()
                || !p.ae.is_empty()
        });
        if self.left_at.is_some() {
            return;
        }
        for i in 0..self.chosen.len() {
            let id = self.chosen[i];
            let nonce = self.rng.next_u64();
            let mut suspect = false;
            if let Some(p) = self.peers.get_mut(&id) {
                if p.outstanding {
                    p.missed = p.missed.saturating_add(1);
                    suspect = p.missed >= self.cfg.suspect_after;
                }
                p.outstanding = true;
                p.probe_at = (p.probe_at + 1) % PROBE_RING;
                p.probes[p.probe_at] = (nonce, None);
            }
            if suspect
                && let Some(m) = self.table.get(id)
                && m.record.status == MemberStatus::Alive
            {
                let mut r = m.record;
                r.status = MemberStatus::Suspect;
                self.counters.suspects += 1;
                self.apply_local(now, r);
            }
            self.push_out(Out::Probe { to: id, nonce });
        }
    }

    /// Every `ae_interval`, probe one Down tombstone: if it is alive again (a healed partition), the
    /// answer makes both sides exchange records and the owner refute (§7.2).
    fn reconnect_probe(&mut self) {
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
            let nonce = self.rng.next_u64();
            self.push_out(Out::Probe { to: id, nonce });
        }
    }

    fn on_probe(&mut self, now: Instant, from: SocketAddr, sender: u32, p: &Probe) {
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

    fn on_ack(&mut self, now: Instant, from: SocketAddr, sender: u32, p: &Probe) {
        let mut rtt = None;
        if let Some(peer) = self.peers.get_mut(&sender)
            && peer.outstanding
            && let Some(slot) = peer.probes.iter_mut().find(|(n, _)| *n == p.nonce && *n != 0)
        {
            peer.outstanding = false;
            peer.missed = 0;
            rtt = slot.1.map(|t| now - t);
            // Each nonce answers once.
            slot.0 = 0;
            self.counters.acks += 1;
        } else {
            self.counters.acks_unmatched += 1;
        }
        if let Some(rtt) = rtt {
            self.coord_sample(now, sender, &p.coord, rtt);
        }
        self.after_exchange(now, from, sender, p);
    }

    /// Common to Probe and ProbeAck from a member: correct a stale view of the sender, compare digests.
    fn after_exchange(&mut self, now: Instant, from: SocketAddr, sender: u32, p: &Probe) {
        let Some(m) = self.table.get(sender) else { return };
        // It is talking, yet we hold it Suspect or Down at a version it has not superseded: tell it, so it
        // refutes (§7.2). This is also how a healed partition finds its way back.
        if matches!(m.record.status, MemberStatus::Suspect | MemberStatus::Down)
            && (p.incarnation, p.version) <= (m.record.incarnation, m.record.version)
        {
            self.push_out(Out::Tell {
                addr: from,
                ids: [sender, 0],
            });
        }
        let mine = self.table.digest();
        let ae_interval = self.cfg.ae_interval;
        let Some(peer) = self.peer(sender) else { return };
        if p.digest == mine {
            peer.mismatches = 0;
            return;
        }
        peer.mismatches = peer.mismatches.saturating_add(1);
        if peer.mismatches >= 2 && peer.ae_last.is_none_or(|t| now >= t + ae_interval) {
            peer.mismatches = 0;
            peer.ae_last = Some(now);
            self.counters.ae_sessions += 1;
            self.push_ae(sender, AeJob::Digest { depth: 0, prefix: 0 });
        }
    }

    /// Vivaldi update from a probe RTT, and a re-flood of the own record if it moved enough (§7.5).
    fn coord_sample(&mut self, now: Instant, sender: u32, remote: &[u8; 16], rtt: Duration) {
        let Ok(rc) = Coord::from_bytes(remote) else { return };
        if self.coord.update(&rc, rtt, u64::from(sender)).is_err() {
            return;
        }
        // The first floods come quickly (1 s, 2 s, 4 s, … apart) so that proximity works soon after a proxy
        // starts, when its coordinate moves most; then at most once per `coord_flood_interval` (§7.5).
        let interval = Duration::from_secs(1u64 << self.counters.coord_floods.min(16))
            .min(self.cfg.coord_flood_interval);
        if self.left_at.is_some() || self.last_coord_flood.is_some_and(|t| now < t + interval) {
            return;
        }
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

    // ----- internals: join and anti-entropy -----

    fn on_join(&mut self, now: Instant, from: SocketAddr, sender: u32, r: &ProxyRecord) {
        if r.id.0 != sender {
            self.counters.bad_joins += 1;
            return;
        }
        self.counters.joins_received += 1;
        self.counters.records_in += 1;
        self.apply(now, *r, Some(sender));
        // Our own record first, so the joiner knows us and accepts the anti-entropy that follows.
        self.push_out(Out::Tell {
            addr: from,
            ids: [self.me.id.0, 0],
        });
        let ae_interval = self.cfg.ae_interval;
        if self.table.get(sender).is_some()
            && let Some(p) = self.peer(sender)
            && p.ae_last.is_none_or(|t| now >= t + ae_interval)
        {
            p.ae_last = Some(now);
            self.counters.ae_sessions += 1;
            self.push_ae(sender, AeJob::Digest { depth: 0, prefix: 0 });
        }
    }

    fn on_digest(&mut self, _now: Instant, sender: u32, d: &Digest) {
        let (hashes, counts) = self.table.children(d.depth, d.prefix);
        if d.depth >= Digest::MAX_DEPTH {
            if hashes != d.hashes || counts.map(sat16) != d.counts {
                self.push_ae(
                    sender,
                    AeJob::Records {
                        depth: d.depth,
                        prefix: d.prefix,
                        bucket: 0,
                        off: 0,
                    },
                );
                self.push_ae(
                    sender,
                    AeJob::Pull {
                        depth: d.depth,
                        prefix: d.prefix,
                    },
                );
            }
            return;
        }
        for c in 0..DIGEST_FANOUT {
            if hashes[c] == d.hashes[c] && sat16(counts[c]) == d.counts[c] {
                continue;
            }
            let depth = d.depth + 1;
            let prefix = d.prefix.wrapping_mul(16) | c as u32;
            if counts[c] <= AE_LEAF || u32::from(d.counts[c]) <= AE_LEAF {
                self.push_ae(
                    sender,
                    AeJob::Records {
                        depth,
                        prefix,
                        bucket: 0,
                        off: 0,
                    },
                );
                self.push_ae(sender, AeJob::Pull { depth, prefix });
            } else {
                self.push_ae(sender, AeJob::Digest { depth, prefix });
            }
        }
    }

    fn push_ae(&mut self, to: u32, job: AeJob) {
        if self.table.get(to).is_none() {
            return;
        }
        let cap = self.cfg.ae_pending;
        let Some(p) = peer_entry(
            &mut self.peers,
            self.cfg.max_peers,
            &mut self.counters.peers_full,
            to,
        ) else {
            return;
        };
        if p.ae.len() >= cap {
            p.ae.pop_front();
            self.counters.ae_dropped += 1;
        }
        p.ae.push_back(job);
        if !p.in_ae_ring {
            p.in_ae_ring = true;
            self.ae_ring.push_back(to);
        }
    }

    fn requeue_ae(&mut self, pid: u32) {
        if let Some(p) = self.peers.get_mut(&pid) {
            if p.ae.is_empty() {
                p.in_ae_ring = false;
            } else {
                self.ae_ring.push_back(pid);
            }
        }
    }

    fn push_out(&mut self, o: Out) {
        if self.out.len() >= self.cfg.out_queue {
            self.counters.out_dropped += 1;
        } else {
            self.out.push_back(o);
        }
    }

    // ----- internals: emitting -----

    fn sent(&mut self, t: Transmit) -> Transmit {
        self.counters.frames_sent += 1;
        t
    }

    fn probe_body(&self, nonce: u64) -> Probe {
        Probe {
            nonce,
            incarnation: self.me.incarnation,
            version: self.me.version,
            digest: self.table.digest(),
            coord: self.coord.to_bytes(),
        }
    }

    fn emit_out(
        &mut self,
        now: Instant,
        item: Out,
        sealer: &mut Sealer,
        buf: &mut [u8],
        scratch: &mut [ProxyRecord; Records::MAX],
    ) -> Step {
        match item {
            Out::Probe { to, nonce } => {
                let Some(addr) = self.table.get(to).map(|m| m.record.addr) else {
                    return Step::Skip;
                };
                let msg = Message::Probe(self.probe_body(nonce));
                let Some(len) = sealer.seal(&msg, buf) else {
                    return Step::Blocked;
                };
                if let Some(p) = self.peers.get_mut(&to)
                    && let Some(slot) = p.probes.iter_mut().find(|(n, _)| *n == nonce)
                {
                    slot.1 = Some(now);
                }
                self.counters.probes_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            Out::Ack { addr, nonce } => {
                let msg = Message::ProbeAck(self.probe_body(nonce));
                let Some(len) = sealer.seal(&msg, buf) else {
                    return Step::Blocked;
                };
                self.counters.acks_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            Out::Join { addr } => {
                let msg = Message::Join(self.me);
                let Some(len) = sealer.seal(&msg, buf) else {
                    return Step::Blocked;
                };
                self.counters.joins_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            Out::Tell { addr, ids } => {
                let mut n = 0;
                for id in ids {
                    if let Some(m) = self.table.get(id) {
                        scratch[n] = m.record;
                        n += 1;
                    }
                }
                if n == 0 {
                    return Step::Skip;
                }
                let msg = Message::Records(Records::Slice(&scratch[..n]));
                let Some(len) = sealer.seal(&msg, buf) else {
                    return Step::Blocked;
                };
                self.counters.records_out += n as u64;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
        }
    }

    fn emit_flood(
        &mut self,
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
        let Some(len) = sealer.seal(&msg, buf) else {
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

    fn emit_ae(
        &mut self,
        pid: u32,
        sealer: &mut Sealer,
        buf: &mut [u8],
        scratch: &mut [ProxyRecord; Records::MAX],
    ) -> Step {
        let Some(addr) = self.table.get(pid).map(|m| m.record.addr) else {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.ae.clear();
            }
            return Step::Skip;
        };
        let Some(p) = self.peers.get(&pid) else {
            return Step::Skip;
        };
        let Some(&job) = p.ae.front() else {
            return Step::Skip;
        };
        match job {
            AeJob::Digest { depth, prefix } => {
                let (hashes, counts) = self.table.children(depth, prefix);
                let msg = Message::Digest(Digest {
                    depth,
                    prefix,
                    hashes,
                    counts: counts.map(sat16),
                });
                let Some(len) = sealer.seal(&msg, buf) else {
                    return Step::Blocked;
                };
                self.pop_ae(pid, 1, None);
                self.counters.ae_digests_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            AeJob::Pull { depth, prefix } => {
                let Some(len) = sealer.seal(&Message::Pull(Pull { depth, prefix }), buf) else {
                    return Step::Blocked;
                };
                self.pop_ae(pid, 1, None);
                self.counters.ae_pulls_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            AeJob::Records { .. } => {
                // Fill one message from this and the following record jobs (emit, then commit).
                let mut n = 0;
                let mut done = 0;
                let mut partial = None;
                for &j in &p.ae {
                    let AeJob::Records {
                        depth,
                        prefix,
                        bucket,
                        off,
                    } = j
                    else {
                        break;
                    };
                    let (exhausted, b, o) = self.fill(depth, prefix, bucket, off, scratch, &mut n);
                    if exhausted {
                        done += 1;
                    } else {
                        partial = Some(AeJob::Records {
                            depth,
                            prefix,
                            bucket: b,
                            off: o,
                        });
                        break;
                    }
                }
                if n == 0 {
                    self.pop_ae(pid, done, partial);
                    return Step::Skip;
                }
                let msg = Message::Records(Records::Slice(&scratch[..n]));
                let Some(len) = sealer.seal(&msg, buf) else {
                    return Step::Blocked;
                };
                self.pop_ae(pid, done, partial);
                self.counters.ae_records_sent += 1;
                self.counters.records_out += n as u64;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
        }
    }

    fn pop_ae(&mut self, pid: u32, done: usize, partial: Option<AeJob>) {
        if let Some(p) = self.peers.get_mut(&pid) {
            p.ae.drain(..done.min(p.ae.len()));
            if let (Some(j), Some(front)) = (partial, p.ae.front_mut()) {
                *front = j;
            }
        }
    }

    /// Copies records under node `(depth, prefix)` from cursor `(bucket, off)` into `scratch[n..]`.
    /// Returns whether the node is exhausted and the cursor to resume from. At most 4096 buckets visited.
    fn fill(
        &self,
        depth: u8,
        prefix: u32,
        bucket: u32,
        off: u32,
        scratch: &mut [ProxyRecord; Records::MAX],
        n: &mut usize,
    ) -> (bool, u32, u32) {
        let (lo, hi) = Table::bucket_range(depth, prefix);
        let (mut b, mut o) = if (bucket as usize) < lo {
            (lo, 0usize)
        } else {
            (bucket as usize, off as usize)
        };
        while b < hi {
            let ids = self.table.bucket(b);
            while o < ids.len() {
                if *n == Records::MAX {
                    return (false, b as u32, o as u32);
                }
                let id = ids[o];
                o += 1;
                if let Some(m) = self.table.get(id)
                    && (depth <= table::KEPT_LEVELS || node_of(m.key, depth) == prefix)
                {
                    scratch[*n] = m.record;
                    *n += 1;
                }
            }
            b += 1;
            o = 0;
        }
        (true, b as u32, 0)
    }

    /// Test and bench support: inserts or supersedes a record as if received from nobody in particular.
    #[doc(hidden)]
    pub fn apply_record_for_test(&mut self, now: Instant, r: ProxyRecord) {
        self.apply(now, r, None);
        self.refresh_neighbours();
    }
}

/// The peer entry of `id`, created if there is room (else counted in `full`).
fn peer_entry<'a>(
    peers: &'a mut HashMap<u32, Peer>,
    max: usize,
    full: &mut u64,
    id: u32,
) -> Option<&'a mut Peer> {
    if !peers.contains_key(&id) {
        if peers.len() >= max {
            *full += 1;
            return None;
        }
        peers.insert(id, Peer::new());
    }
    peers.get_mut(&id)
}

enum Step {
    Sent(Transmit),
    Skip,
    Blocked,
}

fn sat16(c: u32) -> u16 {
    c.min(u32::from(u16::MAX)) as u16
}

/// The next deadline of a periodic timer: one period on, or a period from `now` if it fell behind.
fn advance(at: Instant, period: Duration, now: Instant) -> Instant {
    let next = at + period;
    if next <= now { now + period } else { next }
}
