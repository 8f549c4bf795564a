//! Membership (SPEC.md §7): who is in the overlay, who is alive, and their coordinates.
//!
//! Every proxy keeps every proxy's 48-byte record. Changes are flooded over a sparse neighbour graph
//! (2 successors, 2 predecessors, 4 hashed chords, plus reverse neighbours); each proxy probes one chosen
//! neighbour per `probe_interval`, in turn, to detect failures and to sample RTTs for Vivaldi coordinates;
//! a silent neighbour is re-probed every tick, suspected after `suspect_after` misses, and marked Down as
//! soon as another of its monitors confirms the suspicion with an unanswered probe of its own; the table digest
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
//! count what they drop. Steady-state traffic per proxy is a constant: one probe sent and, on average, one
//! received per `probe_interval` (the chosen neighbours in turn), each answered by an ack, whatever the
//! overlay's size; coordinate re-floods are rate-limited so that their total stays constant too.
//!
//! # Layout
//!
//! This module holds the types, the entry points (`accept`, `handle`, `handle_timeout`, `poll_*`) and the
//! getters; each concept has its own file: `records` (precedence, refutation, change bookkeeping), `flood`,
//! `probes` (neighbour graph, probes and acks, coordinate samples), `anti_entropy`, `join` (join and
//! leave), `outbox` (queued direct messages and their sealing), `table` (the member table and digest
//! tree), `config`.

mod anti_entropy;
mod config;
mod flood;
mod join;
mod outbox;
mod probes;
mod records;
mod table;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use core::net::SocketAddr;
use core::time::Duration;

use pias_proto::ProxyId;
use pias_proto::auth::SipKey;
use pias_proto::control::{MemberStatus, Message, ProxyRecord, Records, kind};
use smallvec::SmallVec;

use crate::coords::Coord;
use crate::replay::ReplayWindow;
use crate::seal::{Sealer, Transmit};
use crate::time::Instant;

pub use config::{ConfigError, MembershipConfig};
pub use table::{Member, supersedes};

use table::{HashMap, Keyed, Table, usable_status};

use anti_entropy::AeJob;
use outbox::{Out, Step};

/// Chosen neighbours: 2 successors, 2 predecessors, 4 chords (SPEC.md §7.2).
const CHOSEN: usize = 8;
const CHORDS: u16 = 4;

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

/// Probes per neighbour whose acks are still accepted: an ack up to this many probes late counts.
const PROBE_RING: usize = 4;

/// RTT samples kept per neighbour; the coordinate update uses their minimum (§7.5).
const RTT_WINDOW: usize = 4;

/// A proxy that probed this one within `REVERSE_CYCLES` probe cycles (`CHOSEN × probe_interval` each) is a
/// reverse neighbour (§7.2): each prober reaches a given neighbour once per cycle.
const REVERSE_CYCLES: u32 = 3;

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
        /// Down verdicts reached by confirming another proxy's suspicion with an own unanswered probe.
        confirmations,
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
        /// Coordinate re-floods that moved enough but were held back by the rate limit (§7.5).
        coord_floods_deferred,
        /// Frames handed to the driver.
        frames_sent,
    }
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
    /// Probe it at the next tick whatever the round robin says: newly chosen, a digest to re-check, or a
    /// suspicion to confirm (§7.2).
    urgent: bool,
    /// Another proxy reported it Suspect while it is our chosen neighbour: one unanswered probe of ours
    /// confirms the suspicion (§7.2).
    confirming: bool,
    /// The last RTT samples (zero: none), for the minimum filter of §7.5.
    rtts: [Duration; RTT_WINDOW],
    rtt_at: usize,
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
            urgent: false,
            confirming: false,
            rtts: [Duration::ZERO; RTT_WINDOW],
            rtt_at: 0,
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
    /// Round-robin position in `chosen`: one neighbour is probed per tick (§7.2).
    rr: usize,
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
    /// The last burst of reconnect probes (§7.2).
    last_burst: Option<Instant>,
    left_at: Option<Instant>,
    /// When this machine was created (the coordinate's start-up phase, §7.5).
    started: Instant,
    coord: Coord,
    published: Coord,
    last_coord_flood: Option<Instant>,
    rng: crate::rng::SplitMix,
    /// Key of probe nonces (a secret, SPEC.md §8.1) and how many were drawn.
    nonce_key: SipKey,
    nonces: u64,
    counters: MembershipCounters,
}

impl Membership {
    /// A proxy's membership with only its own record. `me` carries the id, overlay address and incarnation;
    /// it is stored Alive with version at least 1. Call [`MembershipConfig::validate`] first: an invalid
    /// configuration is not rejected here, only clamped into something that cannot panic. `nonce_key` keys
    /// probe nonces (secret, from [`crate::secrets::Secrets::nonce_key`]); `seed` drives the choices that
    /// need no secrecy (probe phase, which tombstone to re-probe).
    pub fn new(
        cfg: MembershipConfig,
        me: ProxyRecord,
        ring_key: SipKey,
        nonce_key: SipKey,
        seed: u64,
        now: Instant,
    ) -> Self {
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
        // Spread the reconnect probes too: proxies started together would otherwise all probe their
        // tombstones at the same instants, and a healed partition would wait for the next such instant.
        let ae_interval = cfg.ae_interval.max(Duration::from_millis(1));
        let reconnect_phase = Duration::from_micros(rng.next_u64() % (ae_interval.as_micros() as u64).max(1));
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
            next_reconnect: now + reconnect_phase,
            last_burst: None,
            cfg,
            ring_key,
            me,
            table,
            peers: HashMap::with_hasher(Keyed::new(&ring_key)),
            chosen: SmallVec::new(),
            rr: 0,
            nbr_dirty: true,
            out: VecDeque::new(),
            flush: Vec::new(),
            flood_due: false,
            ae_ring: VecDeque::new(),
            events: VecDeque::new(),
            suspicions: VecDeque::new(),
            tombstones: VecDeque::new(),
            left_at: None,
            started: now,
            coord,
            published: coord,
            last_coord_flood: None,
            rng,
            nonce_key,
            nonces: 0,
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
                    if r.status == MemberStatus::Suspect && r.id != sender {
                        self.suspicion_reported(now, r.id.0);
                    }
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
                match self.emit_flood(now, pid, sealer, buf, &mut scratch) {
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
            match self.emit_ae(now, pid, sealer, buf, &mut scratch) {
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

/// The next deadline of a periodic timer: one period on, or a period from `now` if it fell behind.
fn advance(at: Instant, period: Duration, now: Instant) -> Instant {
    let next = at + period;
    if next <= now { now + period } else { next }
}
