//! The JAP's table of registered targets (SPEC.md §10): registration with a cookie exchange, refresh,
//! deregistration, liveness, the per-group counts the JAP reports to RAPs (§9.1) and the per-flow target
//! choice (§9.5, §13.3).
//!
//! # Inputs and outputs
//!
//! - [`Registry::handle_target_packet`]: the UDP payload of a datagram that reached a registration address
//!   (`local`, port 6082) from a target agent (`from`). Every reply is queued and comes out of
//!   [`Registry::poll_transmit`] as a complete IPv4 or IPv6 + UDP packet from `local` to `from`, for the host
//!   side ([`Dest::Host`]).
//! - [`Registry::handle_timeout`] removes targets that sent no refresh for `hold_ms`.
//! - [`Registry::choose_target`] picks a target for a new flow.
//! - [`Registry::drain`]: the proxy is leaving (SPEC.md §7.6). From then on a Register with a cookie and a
//!   Refresh are answered Draining and register or refresh nothing, so every agent registers again through
//!   anycast (which, once this proxy withdrew its routes, leads elsewhere) within one `refresh_ms` instead
//!   of noticing the dead JAP `hold_ms` after it stopped. Registrations already here no longer expire: their
//!   targets are alive (registering elsewhere, unrefreshed here by design), and until the proxy floods Left
//!   RAPs still send it flows for them; expiring them would report the group empty before its targets
//!   reached another JAP.
//!
//! # Drain order
//!
//! After every `handle_*` call: `while let Some(t) = reg.poll_transmit(buf) {..}`, then
//! `while let Some(ev) = reg.poll_event() {..}` (NAT and XDP sync), then
//! `while let Some(r) = reg.poll_report() { send; reg.commit_report(..) }`, then re-arm the timer on
//! [`Registry::poll_timeout`].
//!
//! # Security (SPEC.md §8.3, §10.2)
//!
//! A message is acted on only after its MAC verifies under the key of the group it names. Group keys are
//! derived on demand and cached in a bounded LRU map, but a key enters the cache only after a message under
//! it verified, so unauthenticated input cannot churn the cache. Register needs a cookie bound to the source
//! address and at most two epochs old; Register for an existing registration, Refresh and Deregister need a
//! sequence number fresh for the registration's replay window. When a registration ends its window is kept
//! as a *tombstone* for two cookie periods (the life of any cookie it could have used), so a recorded
//! Register cannot resurrect a deregistered target. Refused inputs change nothing but counters; Full and
//! Gone answers are replies, not state.
//!
//! # Bounds
//!
//! Registrations (`max_registrations`, then Full), targets per group (`max_targets_per_group`, then Full),
//! groups (`max_registrations`, then Full), derived keys (`max_derived_keys`, LRU), tombstones
//! (`max_tombstones`, oldest evicted), reply queue (`reply_queue`, newest dropped), event queue
//! (`event_queue`; expiry waits for room, other events are dropped when full). Each drop is counted.

mod table;
#[cfg(test)]
mod tests;

pub use table::{MAX_TABLE_MEMBERS, SIZES as TABLE_SIZES};

use core::hash::{Hash, Hasher};
use core::net::{IpAddr, SocketAddr};
use std::collections::VecDeque;

use hashbrown::HashTable;
use pias_proto::auth::{MacKey, MasterKey, SipKey, ct_eq};
use pias_proto::control::{
    COOKIE_LEN, Challenge, ControlHeader, ControlPacket, DeliveryMode, Message, RegAckStatus, Register,
    RegisterAck, TargetOp,
};
use pias_proto::ipv4::Ipv4Repr;
use pias_proto::ipv6::Ipv6Repr;
use pias_proto::udp::UdpRepr;
use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr, WireError};
use siphasher::sip::SipHasher13;

use crate::hysteresis::{DEFAULT_BAND_PERCENT, Hysteresis};
use crate::lru::LruMap;
use crate::replay::{ReplayWindow, SeqCounter};
use crate::seal::{Dest, Transmit};
use crate::time::Instant;
use table::{Scratch, TargetTable};

const NIL: u32 = u32::MAX;
/// Report flag: the JAP has tunnel-mode targets for the group (SPEC.md §9.1).
pub const FLAG_TUNNEL: u8 = 0x01;
/// The most targets [`Registry::choose_target`] returns for `replicate`.
pub const MAX_REPLICAS: usize = 4;
/// TTL / hop limit of replies.
const REPLY_TTL: u8 = 64;

/// Configuration. Defaults from SPEC.md §14.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Interval at which targets refresh (sent to them in every RegisterAck).
    pub refresh_ms: u32,
    /// A target with no refresh for this long is removed (sent to them in every RegisterAck).
    pub hold_ms: u32,
    /// Cookie epoch length; cookies of the current and the previous epoch are accepted.
    pub cookie_period_ms: u32,
    /// Registrations per JAP; a new one beyond is answered Full.
    pub max_registrations: usize,
    /// Targets per group at this JAP (at most [`MAX_TABLE_MEMBERS`]); a new one beyond is answered Full.
    pub max_targets_per_group: usize,
    /// Derived group keys kept (least recently used evicted).
    pub max_derived_keys: usize,
    /// Ended registrations whose replay window is remembered for two cookie periods (oldest evicted).
    pub max_tombstones: usize,
    /// Hysteresis band of the reported counts, percent (SPEC.md §9.1).
    pub band_percent: u8,
    /// Replies waiting for [`Registry::poll_transmit`]; more are dropped (counted).
    pub reply_queue: usize,
    /// Events waiting for [`Registry::poll_event`].
    pub event_queue: usize,
    /// Registrations expired per [`Registry::handle_timeout`] call at most.
    pub expiry_budget: usize,
    /// This proxy's incarnation (SPEC.md §3): the high half of reply sequence numbers.
    pub incarnation: u32,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            refresh_ms: 200,
            hold_ms: 700,
            cookie_period_ms: 30_000,
            max_registrations: 65_536,
            max_targets_per_group: MAX_TABLE_MEMBERS,
            max_derived_keys: 4096,
            max_tombstones: 16_384,
            band_percent: DEFAULT_BAND_PERCENT,
            reply_queue: 1024,
            event_queue: 4096,
            expiry_budget: 1024,
            incarnation: 0,
        }
    }
}

/// A configuration value that cannot work: the field and how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("registry.{field}: {fix}")]
pub struct RegistryConfigError {
    pub field: &'static str,
    pub fix: &'static str,
}

impl RegistryConfig {
    /// Checks every field; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), RegistryConfigError> {
        let e = |field, fix| Err(RegistryConfigError { field, fix });
        if self.refresh_ms == 0 {
            return e("refresh_ms", "must be at least 1 (default 200)");
        }
        if self.hold_ms <= self.refresh_ms {
            return e(
                "hold_ms",
                "must exceed refresh_ms, 3 refresh intervals or more (default 700)",
            );
        }
        if self.cookie_period_ms < 1000 {
            return e(
                "cookie_period_ms",
                "must be at least 1000 so a cookie outlives a round trip (default 30000)",
            );
        }
        if self.max_registrations == 0 || self.max_registrations > (u32::MAX / 2) as usize {
            return e("max_registrations", "must be between 1 and 2^31 (default 65536)");
        }
        if self.max_targets_per_group == 0 || self.max_targets_per_group > MAX_TABLE_MEMBERS {
            return e(
                "max_targets_per_group",
                "must be between 1 and 4095 (default 4095)",
            );
        }
        if self.max_derived_keys == 0 {
            return e("max_derived_keys", "must be at least 1 (default 4096)");
        }
        if self.max_tombstones == 0 {
            return e("max_tombstones", "must be at least 1 (default 16384)");
        }
        if self.reply_queue == 0 {
            return e("reply_queue", "must be at least 1 (default 1024)");
        }
        if self.event_queue == 0 {
            return e("event_queue", "must be at least 1 (default 4096)");
        }
        if self.expiry_budget == 0 {
            return e("expiry_budget", "must be at least 1 (default 1024)");
        }
        Ok(())
    }
}

/// Why a target message was refused. Unless stated, nothing changed but the counter of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The bytes are not a control message (framing, version, type or body).
    #[error("malformed target message: {0}")]
    Malformed(WireError),
    /// A control message that a target does not send (proxy-to-proxy types, Challenge, RegisterAck).
    #[error("not a message a target sends")]
    NotTargetMessage,
    /// `local` and `from` are not of one address family, so no reply could be sent.
    #[error("local and source address families differ")]
    AddressFamily,
    /// The MAC did not verify under the named group's key.
    #[error("bad MAC")]
    BadMac,
    /// A Register with a cookie that is not this source's for the current or previous epoch.
    #[error("bad or stale cookie")]
    BadCookie,
    /// A sequence number already seen (or too old) for this registration.
    #[error("replayed sequence number")]
    Replay,
    /// Refresh or Deregister for no registration from this source: answered Gone.
    #[error("no such registration from this source (answered Gone)")]
    UnknownRegistration,
    /// A new registration beyond a bound: answered Full.
    #[error("registrations full (answered Full)")]
    Full,
    /// Register or Refresh while this proxy is leaving: answered Draining, nothing registered or refreshed.
    #[error("this proxy is leaving (answered Draining)")]
    Draining,
}

counters! {
    /// Counters (SPEC.md §15); every refusal and every drop has one.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct RegistryCounters("reg_") {
        received,
        malformed,
        not_target_message,
        address_family,
        bad_mac,
        bad_cookie,
        replay,
        /// Refresh/Deregister for an unknown registration or from another source (answered Gone).
        unknown_registration,
        /// New registrations refused because `max_registrations` (or the group bound) was reached.
        refused_full,
        /// New registrations refused because the group had `max_targets_per_group` targets.
        refused_group_full,
        /// Registers and Refreshes answered Draining because this proxy is leaving.
        refused_draining,
        challenges,
        registered,
        /// Registers for an existing registration (weight, mode or source updated).
        reregistered,
        replaced,
        refreshed,
        deregistered,
        expired,
        replies_sent,
        /// Replies dropped: queue full, or the caller's buffer too small.
        replies_dropped,
        events_dropped,
        keys_derived,
        key_cache_hits,
        keys_evicted,
        tombstones_evicted,
        /// Register refused because a tombstone showed its sequence number was already used.
        tombstone_replay,
        /// `choose_target` for a group with no live target.
        no_target,
        /// `choose_target` where the options excluded every target (exclude_sender with only the sender).
        no_eligible_target,
        tables_built,
        reports_committed,
    }
}

/// Why a target stopped being live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownReason {
    /// No refresh for `hold_ms`.
    Expired,
    /// The agent deregistered.
    Deregistered,
    /// A new Register for the same (group, service) came from another source or with another mode; a
    /// `TargetUp` for the new registration follows.
    Replaced,
}

/// What changed, for the NAT (drop a dead target's bindings) and the XDP map sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryEvent {
    TargetUp {
        slot: u32,
        group: TransportAddr,
        service: TransportAddr,
        mode: DeliveryMode,
    },
    TargetDown {
        slot: u32,
        group: TransportAddr,
        service: TransportAddr,
        reason: DownReason,
    },
}

/// A count report that is due for a group (SPEC.md §9.1): send it to the group's RAPs, then
/// [`Registry::commit_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupReport {
    pub group: TransportAddr,
    pub count: u32,
    /// [`FLAG_TUNNEL`] when the group has tunnel-mode targets here.
    pub flags: u8,
}

/// A live registration, as state dumps show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetInfo {
    /// Registration index (stable while the registration lives; the id in the group's table is `slot + 1`).
    pub slot: u32,
    pub group: TransportAddr,
    pub service: TransportAddr,
    pub mode: DeliveryMode,
    pub weight: u16,
    /// The agent's source address (replies go there; refreshes must come from there).
    pub source: SocketAddr,
    /// The registration address it registered through.
    pub local: SocketAddr,
    pub last_refresh: Instant,
}

/// A group with state here, as state dumps show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: TransportAddr,
    /// Live targets.
    pub count: u32,
    /// Live tunnel-mode targets.
    pub tunnel: u32,
    /// The count last committed as reported.
    pub reported: Option<u32>,
}

/// Options for a new flow's target (SPEC.md §9.5). `Default` is plain weighted per-flow choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetOptions {
    /// Never choose a target whose address is the flow's source address.
    pub exclude_sender: bool,
    /// Prefer targets whose address shares this many leading bits with the client's.
    pub scope_prefix: Option<u8>,
    /// Choose with the seeded generator instead of the flow hash.
    pub random: bool,
    /// For UDP flows: this many distinct targets (2 to [`MAX_REPLICAS`]; 0 and 1 mean one).
    pub replicate: u8,
}

/// One chosen target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRef {
    pub slot: u32,
    pub service: TransportAddr,
    pub mode: DeliveryMode,
}

/// The targets chosen for a flow: one, or up to [`MAX_REPLICAS`] distinct ones for `replicate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetChoice {
    targets: [Option<TargetRef>; MAX_REPLICAS],
}

impl TargetChoice {
    fn one(t: TargetRef) -> Self {
        TargetChoice {
            targets: [Some(t), None, None, None],
        }
    }

    /// The primary target (the flow's choice without `replicate`).
    pub fn first(&self) -> TargetRef {
        match self.targets[0] {
            Some(t) => t,
            None => unreachable_target(),
        }
    }

    /// All chosen targets, primary first.
    pub fn iter(&self) -> impl Iterator<Item = &TargetRef> + '_ {
        self.targets.iter().flatten()
    }

    /// How many targets were chosen (at least 1).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.targets.iter().flatten().count()
    }
}

/// A `TargetChoice` always holds its first entry; this keeps `first` total without a panic path.
#[cold]
fn unreachable_target() -> TargetRef {
    TargetRef {
        slot: NIL,
        service: TransportAddr::new(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), 0, IpProtocol::Udp),
        mode: DeliveryMode::Nat,
    }
}

#[derive(Debug, Clone)]
struct Reg {
    group: TransportAddr,
    service: TransportAddr,
    mode: DeliveryMode,
    weight: u16,
    source: SocketAddr,
    local: SocketAddr,
    window: ReplayWindow,
    last_refresh: Instant,
    /// Liveness list, oldest refresh first.
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone)]
struct GroupState {
    group: TransportAddr,
    /// Registration indexes, ascending.
    members: Vec<u32>,
    tunnel: u32,
    hyst: Hysteresis,
    reported_flags: u8,
    queued: bool,
    table: TargetTable,
    table_stale: bool,
}

impl GroupState {
    fn count(&self) -> u32 {
        self.members.len() as u32
    }
    fn flags(&self) -> u8 {
        if self.tunnel > 0 { FLAG_TUNNEL } else { 0 }
    }
    fn report_due(&self) -> bool {
        self.hyst.due(self.count()) || (self.hyst.reported.is_some() && self.flags() != self.reported_flags)
    }
}

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    window: ReplayWindow,
    until: Instant,
}

#[derive(Debug, Clone)]
enum ReplyBody {
    Challenge(Challenge),
    Ack(RegisterAck),
}

#[derive(Debug, Clone)]
struct Reply {
    local: SocketAddr,
    to: SocketAddr,
    key: MacKey,
    body: ReplyBody,
}

/// The JAP's registered targets. See the module documentation for inputs, outputs and drain order.
#[derive(Debug)]
pub struct Registry {
    cfg: RegistryConfig,
    master: MasterKey,
    jap: ProxyId,
    cookie_key: MacKey,
    flow_key: SipKey,
    sip: (u64, u64),
    rng: crate::rng::SplitMix,
    seq: SeqCounter,

    regs: Vec<Option<Reg>>,
    free: Vec<u32>,
    live: u32,
    head: u32,
    tail: u32,
    /// (group, service) → registration index.
    index: HashTable<u32>,
    groups: HashTable<GroupState>,
    keys: LruMap<TransportAddr, MacKey>,
    tombstones: LruMap<(TransportAddr, TransportAddr), Tombstone>,
    scratch: Scratch,
    weights: Vec<(u32, u32)>,

    replies: VecDeque<Reply>,
    events: VecDeque<RegistryEvent>,
    reports: VecDeque<TransportAddr>,
    counters: RegistryCounters,
    /// Set by [`Registry::drain`]; never cleared (a proxy that left restarts with a new incarnation).
    draining: bool,
}

fn mix(h: u64, slot: u32) -> u64 {
    crate::rng::mix(
        h ^ u64::from(slot)
            .wrapping_add(1)
            .wrapping_mul(0xd6e8_feb8_6659_fd93),
    )
}

/// The address bytes a cookie and the tables hash: family, then 16 bytes (IPv4 in the first 4).
fn ip_bytes(ip: IpAddr) -> [u8; 17] {
    let mut b = [0u8; 17];
    match ip {
        IpAddr::V4(a) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&a.octets());
        }
    }
    b
}

/// Whether `a` and `b` share their first `bits` bits (same family only).
fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            let n = u32::from(bits.min(32));
            let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            u32::from(x) & mask == u32::from(y) & mask
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            let n = u32::from(bits.min(128));
            let mask = if n == 0 { 0 } else { u128::MAX << (128 - n) };
            u128::from(x) & mask == u128::from(y) & mask
        }
        _ => false,
    }
}

/// Weighted rendezvous score of a target for a hash (higher wins): `w / -ln(u)` with `u` uniform in (0, 1).
fn hrw_score(h: u64, slot: u32, weight: u16) -> f64 {
    let u = ((mix(h, slot) >> 11) | 1) as f64 / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

impl Registry {
    /// A registry for proxy `jap_id`. `cookie_secret` comes from the proxy's seeded generator (SPEC.md §8.1),
    /// `seed` keys the hash tables and the `random` target choice.
    pub fn new(
        cfg: RegistryConfig,
        master: MasterKey,
        jap_id: ProxyId,
        cookie_secret: [u8; 32],
        seed: u64,
    ) -> Result<Self, RegistryConfigError> {
        cfg.validate()?;
        let mut s = crate::rng::SplitMix::new(seed);
        let sip = (s.next_u64(), s.next_u64());
        let rng = crate::rng::SplitMix::new(s.next_u64());
        let key_seed = s.next_u64();
        let tomb_seed = s.next_u64();
        Ok(Registry {
            cookie_key: MacKey::cookie_key(&cookie_secret),
            flow_key: master.flow_key(),
            master,
            jap: jap_id,
            sip,
            rng,
            seq: SeqCounter::new(cfg.incarnation),
            regs: Vec::new(),
            free: Vec::new(),
            live: 0,
            head: NIL,
            tail: NIL,
            index: HashTable::new(),
            groups: HashTable::new(),
            keys: LruMap::new(cfg.max_derived_keys, key_seed),
            tombstones: LruMap::new(cfg.max_tombstones, tomb_seed),
            scratch: Scratch::default(),
            weights: Vec::new(),
            replies: VecDeque::with_capacity(cfg.reply_queue),
            events: VecDeque::with_capacity(cfg.event_queue.min(65_536)),
            reports: VecDeque::new(),
            counters: RegistryCounters::default(),
            draining: false,
            cfg,
        })
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// Counters.
    pub fn counters(&self) -> &RegistryCounters {
        &self.counters
    }

    /// Whether [`Registry::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Live registrations.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// Whether there is no live registration.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Derived group keys currently cached.
    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    /// Live targets of a group here.
    pub fn group_count(&self, group: &TransportAddr) -> u32 {
        self.group(group).map_or(0, GroupState::count)
    }

    /// Groups with state here (live targets, or a report of zero not yet committed).
    pub fn groups(&self) -> impl Iterator<Item = GroupInfo> + '_ {
        self.groups.iter().map(|g| GroupInfo {
            group: g.group,
            count: g.count(),
            tunnel: g.tunnel,
            reported: g.hyst.reported,
        })
    }

    /// The live targets of a group.
    pub fn targets(&self, group: &TransportAddr) -> impl Iterator<Item = TargetInfo> + '_ {
        let members = self.group(group).map(|g| g.members.as_slice()).unwrap_or(&[]);
        members.iter().filter_map(|&s| self.info(s))
    }

    /// Every live registration (state dumps).
    pub fn iter(&self) -> impl Iterator<Item = TargetInfo> + '_ {
        (0..self.regs.len() as u32).filter_map(|s| self.info(s))
    }

    /// Bytes held by the registry's tables.
    pub fn memory_bytes(&self) -> usize {
        use core::mem::size_of;
        let groups: usize = self
            .groups
            .iter()
            .map(|g| g.members.capacity() * 4 + g.table.memory_bytes())
            .sum();
        self.regs.capacity() * size_of::<Option<Reg>>()
            + self.free.capacity() * 4
            + self.index.capacity() * (4 + 1)
            + self.groups.capacity() * (size_of::<GroupState>() + 1)
            + groups
            + self.keys.memory_bytes()
            + self.tombstones.memory_bytes()
            + self.replies.capacity() * size_of::<Reply>()
            + self.events.capacity() * size_of::<RegistryEvent>()
            + self.reports.capacity() * size_of::<TransportAddr>()
            + self.weights.capacity() * 8
    }

    /// The live registration in `slot` (the NAT binding's tag names it).
    pub fn target(&self, slot: u32) -> Option<TargetInfo> {
        self.info(slot)
    }

    fn info(&self, slot: u32) -> Option<TargetInfo> {
        let r = self.regs.get(slot as usize)?.as_ref()?;
        Some(TargetInfo {
            slot,
            group: r.group,
            service: r.service,
            mode: r.mode,
            weight: r.weight,
            source: r.source,
            local: r.local,
            last_refresh: r.last_refresh,
        })
    }

    // ----- hashing helpers -----

    fn hash_pair(&self, group: &TransportAddr, service: &TransportAddr) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.sip.0, self.sip.1);
        h.write(&group.to_bytes());
        h.write(&service.to_bytes());
        h.finish()
    }

    fn hash_group(&self, group: &TransportAddr) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.sip.1, self.sip.0);
        group.hash(&mut h);
        h.finish()
    }

    fn find_reg(&self, group: &TransportAddr, service: &TransportAddr) -> Option<u32> {
        let h = self.hash_pair(group, service);
        let regs = &self.regs;
        self.index
            .find(h, |&i| {
                regs.get(i as usize)
                    .and_then(|r| r.as_ref())
                    .is_some_and(|r| r.group == *group && r.service == *service)
            })
            .copied()
    }

    fn group(&self, group: &TransportAddr) -> Option<&GroupState> {
        self.groups.find(self.hash_group(group), |g| g.group == *group)
    }

    fn group_mut(&mut self, group: &TransportAddr) -> Option<&mut GroupState> {
        let h = self.hash_group(group);
        self.groups.find_mut(h, |g| g.group == *group)
    }

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

    fn push_tail(&mut self, i: u32) {
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

    fn touch(&mut self, i: u32, now: Instant) {
        if let Some(r) = self.regs.get_mut(i as usize).and_then(|r| r.as_mut()) {
            r.last_refresh = r.last_refresh.max(now);
        }
        if self.tail != i {
            self.unlink(i);
            self.push_tail(i);
        }
    }

    // ----- queues -----

    fn push_event(&mut self, ev: RegistryEvent) {
        if self.events.len() >= self.cfg.event_queue {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    fn push_reply(&mut self, local: SocketAddr, to: SocketAddr, key: &MacKey, body: ReplyBody) {
        if self.replies.len() >= self.cfg.reply_queue {
            self.counters.replies_dropped += 1;
        } else {
            self.replies.push_back(Reply {
                local,
                to,
                key: key.clone(),
                body,
            });
        }
    }

    fn ack(&self, group: TransportAddr, service: TransportAddr, status: RegAckStatus) -> ReplyBody {
        ReplyBody::Ack(RegisterAck {
            group,
            service,
            status,
            jap: self.jap,
            refresh_ms: self.cfg.refresh_ms,
            hold_ms: self.cfg.hold_ms,
        })
    }

    /// Queues the group for a report if one is due and it is not queued yet.
    fn check_report(&mut self, group: &TransportAddr) {
        let mut push = false;
        if let Some(g) = self.group_mut(group)
            && !g.queued
            && g.report_due()
        {
            g.queued = true;
            push = true;
        }
        if push {
            self.reports.push_back(*group);
        }
    }

    // ----- cookies and keys -----

    fn epoch(&self, now: Instant) -> u64 {
        now.as_millis() / u64::from(self.cfg.cookie_period_ms.max(1))
    }

    fn cookie(&self, epoch: u64, from: SocketAddr, group: &TransportAddr) -> [u8; COOKIE_LEN] {
        self.cookie_key.tag_parts(&[
            &epoch.to_be_bytes(),
            &ip_bytes(from.ip()),
            &from.port().to_be_bytes(),
            &group.to_bytes(),
        ])
    }

    fn cookie_ok(
        &self,
        now: Instant,
        from: SocketAddr,
        group: &TransportAddr,
        cookie: &[u8; COOKIE_LEN],
    ) -> bool {
        let e = self.epoch(now);
        let cur = ct_eq(&self.cookie(e, from, group), cookie);
        let prev = e > 0 && ct_eq(&self.cookie(e - 1, from, group), cookie);
        cur | prev
    }

    /// The group's key: from the cache (touching it), or derived (not cached until a MAC verifies).
    fn group_key(&mut self, group: &TransportAddr) -> (MacKey, bool) {
        if let Some(k) = self.keys.get_mut(group) {
            self.counters.key_cache_hits += 1;
            return (k.clone(), true);
        }
        self.counters.keys_derived += 1;
        (self.master.group_key(group), false)
    }

    // ----- input -----

    /// The proxy is leaving: answer Register (once the cookie checks) and Refresh with Draining from now on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Handles the UDP payload of a datagram that reached the registration address `local` from `from`.
    ///
    /// On `Ok` the message was acted on and a reply queued (Challenge, RegisterAck Ok, or Gone for a
    /// Deregister). On `Err` nothing changed but counters, except that [`RegistryError::Full`],
    /// [`RegistryError::UnknownRegistration`] and [`RegistryError::Draining`] queue a Full, Gone or Draining
    /// answer (and a Draining answer to a Refresh consumes its sequence number).
    pub fn handle_target_packet(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        payload: &[u8],
    ) -> Result<(), RegistryError> {
        self.counters.received += 1;
        let r = self.handle_inner(now, local, from, payload);
        if let Err(e) = r {
            let c = &mut self.counters;
            match e {
                RegistryError::Malformed(_) => c.malformed += 1,
                RegistryError::NotTargetMessage => c.not_target_message += 1,
                RegistryError::AddressFamily => c.address_family += 1,
                RegistryError::BadMac => c.bad_mac += 1,
                RegistryError::BadCookie => c.bad_cookie += 1,
                RegistryError::Replay => c.replay += 1,
                RegistryError::UnknownRegistration => c.unknown_registration += 1,
                RegistryError::Full => {} // counted where the bound is known
                RegistryError::Draining => c.refused_draining += 1,
            }
        }
        r
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        payload: &[u8],
    ) -> Result<(), RegistryError> {
        let pkt = ControlPacket::new_checked(payload).map_err(RegistryError::Malformed)?;
        let msg = pkt.message().map_err(RegistryError::Malformed)?;
        let group = match msg {
            Message::Register(m) => m.group,
            Message::Refresh(m) | Message::Deregister(m) => m.group,
            _ => return Err(RegistryError::NotTargetMessage),
        };
        if local.is_ipv4() != from.is_ipv4() {
            return Err(RegistryError::AddressFamily);
        }
        let (key, cached) = self.group_key(&group);
        pkt.verify(&key).map_err(|_| RegistryError::BadMac)?;
        if !cached && self.keys.insert(group, key.clone()).is_some() {
            self.counters.keys_evicted += 1;
        }
        let seq = pkt.header().seq;
        match msg {
            Message::Register(m) => self.on_register(now, local, from, seq, &m, &key),
            Message::Refresh(m) => self.on_refresh(now, local, from, seq, &m, &key),
            Message::Deregister(m) => self.on_deregister(now, local, from, seq, &m, &key),
            _ => Err(RegistryError::NotTargetMessage),
        }
    }

    fn on_register(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        m: &Register,
        key: &MacKey,
    ) -> Result<(), RegistryError> {
        if m.cookie == [0; COOKIE_LEN] {
            let cookie = self.cookie(self.epoch(now), from, &m.group);
            self.counters.challenges += 1;
            self.push_reply(
                local,
                from,
                key,
                ReplyBody::Challenge(Challenge {
                    group: m.group,
                    cookie,
                }),
            );
            return Ok(());
        }
        if !self.cookie_ok(now, from, &m.group, &m.cookie) {
            return Err(RegistryError::BadCookie);
        }
        if self.draining {
            // Checked after the cookie, so the answer goes only to a source that proved it receives there.
            let ack = self.ack(m.group, m.service, RegAckStatus::Draining);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Draining);
        }

        if let Some(slot) = self.find_reg(&m.group, &m.service) {
            return self.reregister(now, local, from, seq, m, key, slot);
        }

        // A new registration: the tombstone of an earlier one (if any) must not have seen this number.
        let pair = (m.group, m.service);
        let mut window = ReplayWindow::default();
        if let Some(t) = self.tombstones.peek(&pair)
            && t.until > now
        {
            window = t.window;
        }
        if !window.check(seq) {
            self.counters.tombstone_replay += 1;
            return Err(RegistryError::Replay);
        }

        let group_exists = self.group(&m.group).is_some();
        let group_full = self
            .group(&m.group)
            .is_some_and(|g| g.members.len() >= self.cfg.max_targets_per_group);
        if self.live as usize >= self.cfg.max_registrations
            || (!group_exists && self.groups.len() >= self.cfg.max_registrations)
        {
            self.counters.refused_full += 1;
            let ack = self.ack(m.group, m.service, RegAckStatus::Full);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Full);
        }
        if group_full {
            self.counters.refused_group_full += 1;
            let ack = self.ack(m.group, m.service, RegAckStatus::Full);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Full);
        }

        window.commit(seq);
        self.tombstones.remove(&pair);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.regs.push(None);
                (self.regs.len() - 1) as u32
            }
        };
        if let Some(e) = self.regs.get_mut(slot as usize) {
            *e = Some(Reg {
                group: m.group,
                service: m.service,
                mode: m.mode,
                weight: m.weight.max(1),
                source: from,
                local,
                window,
                last_refresh: now,
                prev: NIL,
                next: NIL,
            });
        }
        self.live += 1;
        self.push_tail(slot);
        let h = self.hash_pair(&m.group, &m.service);
        let regs = &self.regs;
        let (k0, k1) = self.sip;
        self.index.insert_unique(h, slot, |&i| {
            let mut hh = SipHasher13::new_with_keys(k0, k1);
            if let Some(r) = regs.get(i as usize).and_then(|r| r.as_ref()) {
                hh.write(&r.group.to_bytes());
                hh.write(&r.service.to_bytes());
            }
            hh.finish()
        });
        self.add_member(&m.group, slot, m.mode);
        self.counters.registered += 1;
        self.push_event(RegistryEvent::TargetUp {
            slot,
            group: m.group,
            service: m.service,
            mode: m.mode,
        });
        let ack = self.ack(m.group, m.service, RegAckStatus::Ok);
        self.push_reply(local, from, key, ack);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn reregister(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        m: &Register,
        key: &MacKey,
        slot: u32,
    ) -> Result<(), RegistryError> {
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.as_mut()) else {
            return Err(RegistryError::UnknownRegistration);
        };
        if !r.window.commit(seq) {
            return Err(RegistryError::Replay);
        }
        let replaced = r.source != from || r.mode != m.mode || r.local != local;
        let old_mode = r.mode;
        let weight_changed = r.weight != m.weight.max(1);
        r.source = from;
        r.local = local;
        r.mode = m.mode;
        r.weight = m.weight.max(1);
        self.touch(slot, now);
        self.counters.reregistered += 1;
        if let Some(g) = self.group_mut(&m.group) {
            if old_mode != m.mode {
                if old_mode == DeliveryMode::Tunnel {
                    g.tunnel = g.tunnel.saturating_sub(1);
                }
                if m.mode == DeliveryMode::Tunnel {
                    g.tunnel += 1;
                }
            }
            if weight_changed {
                g.table_stale = true;
            }
        }
        if replaced {
            self.counters.replaced += 1;
            self.push_event(RegistryEvent::TargetDown {
                slot,
                group: m.group,
                service: m.service,
                reason: DownReason::Replaced,
            });
            self.push_event(RegistryEvent::TargetUp {
                slot,
                group: m.group,
                service: m.service,
                mode: m.mode,
            });
        }
        self.check_report(&m.group);
        let ack = self.ack(m.group, m.service, RegAckStatus::Ok);
        self.push_reply(local, from, key, ack);
        Ok(())
    }

    /// The registration for `op` if it exists and `from` is its source.
    fn own_reg(&self, op: &TargetOp, from: SocketAddr) -> Option<u32> {
        let slot = self.find_reg(&op.group, &op.service)?;
        let r = self.regs.get(slot as usize)?.as_ref()?;
        (r.source == from).then_some(slot)
    }

    fn on_refresh(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        op: &TargetOp,
        key: &MacKey,
    ) -> Result<(), RegistryError> {
        let Some(slot) = self.own_reg(op, from) else {
            let ack = self.ack(op.group, op.service, RegAckStatus::Gone);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::UnknownRegistration);
        };
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.as_mut()) else {
            return Err(RegistryError::UnknownRegistration);
        };
        if !r.window.commit(seq) {
            return Err(RegistryError::Replay);
        }
        if self.draining {
            let ack = self.ack(op.group, op.service, RegAckStatus::Draining);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Draining);
        }
        self.touch(slot, now);
        self.counters.refreshed += 1;
        let ack = self.ack(op.group, op.service, RegAckStatus::Ok);
        self.push_reply(local, from, key, ack);
        Ok(())
    }

    fn on_deregister(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        op: &TargetOp,
        key: &MacKey,
    ) -> Result<(), RegistryError> {
        let gone = self.ack(op.group, op.service, RegAckStatus::Gone);
        let Some(slot) = self.own_reg(op, from) else {
            self.push_reply(local, from, key, gone);
            return Err(RegistryError::UnknownRegistration);
        };
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.as_mut()) else {
            return Err(RegistryError::UnknownRegistration);
        };
        if !r.window.commit(seq) {
            return Err(RegistryError::Replay);
        }
        // The window now holds `seq`; the tombstone keeps it.
        self.remove(slot, now, DownReason::Deregistered);
        self.counters.deregistered += 1;
        self.push_reply(local, from, key, gone);
        Ok(())
    }

    fn add_member(&mut self, group: &TransportAddr, slot: u32, mode: DeliveryMode) {
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
        self.check_report(group);
    }

    /// Removes a live registration, leaving a tombstone with its replay window.
    fn remove(&mut self, slot: u32, now: Instant, reason: DownReason) {
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
    fn drop_group_if_idle(&mut self, group: &TransportAddr) {
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

    // ----- output -----

    /// Writes the next queued reply into `buf` as a complete IP + UDP packet from the registration address to
    /// the agent ([`Dest::Host`]). A reply that does not fit `buf` is dropped (counted).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(reply) = self.replies.pop_front() {
            match self.emit_reply(&reply, buf) {
                Some(len) => {
                    self.counters.replies_sent += 1;
                    return Some(Transmit {
                        dest: Dest::Host,
                        len,
                    });
                }
                None => self.counters.replies_dropped += 1,
            }
        }
        None
    }

    fn emit_reply(&mut self, reply: &Reply, buf: &mut [u8]) -> Option<usize> {
        let msg = match reply.body {
            ReplyBody::Challenge(c) => Message::Challenge(c),
            ReplyBody::Ack(a) => Message::RegisterAck(a),
        };
        let ip_len = match reply.local.ip() {
            IpAddr::V4(_) => pias_proto::ipv4::HEADER_LEN,
            IpAddr::V6(_) => pias_proto::ipv6::HEADER_LEN,
        };
        let udp_len = pias_proto::udp::HEADER_LEN + msg.buffer_len();
        let total = ip_len + udp_len;
        if buf.len() < total {
            return None;
        }
        let mut probe = self.seq;
        let hdr = ControlHeader {
            sender: ProxyId::NONE,
            seq: probe.next_seq(),
        };
        let (src, dst) = (reply.local.ip(), reply.to.ip());
        msg.emit(
            hdr,
            &reply.key,
            &mut buf[ip_len + pias_proto::udp::HEADER_LEN..total],
        )
        .ok()?;
        UdpRepr {
            src_port: reply.local.port(),
            dst_port: reply.to.port(),
            payload_len: msg.buffer_len(),
        }
        .emit(&mut buf[ip_len..total], &src, &dst, |_| ())
        .ok()?;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: IpProtocol::Udp,
                payload_len: udp_len,
                ttl: REPLY_TTL,
                tos: 0,
                ident: hdr.seq as u16,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(&mut buf[..ip_len])
            .ok()?,
            (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: REPLY_TTL,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut buf[..ip_len])
            .ok()?,
            _ => return None,
        }
        self.seq = probe;
        Some(total)
    }

    /// The next event (target up or down).
    pub fn poll_event(&mut self) -> Option<RegistryEvent> {
        self.events.pop_front()
    }

    /// The next group whose count report is due (SPEC.md §9.1). Send it to the group's RAPs, then call
    /// [`Registry::commit_report`] with the same values; a report not committed is offered again at the
    /// group's next change.
    pub fn poll_report(&mut self) -> Option<GroupReport> {
        while let Some(group) = self.reports.pop_front() {
            let Some(g) = self.group_mut(&group) else { continue };
            g.queued = false;
            if g.report_due() {
                return Some(GroupReport {
                    group,
                    count: g.count(),
                    flags: g.flags(),
                });
            }
            self.drop_group_if_idle(&group);
        }
        None
    }

    /// Records that `count` and `flags` were reported for `group` (the commit of emit-then-commit).
    pub fn commit_report(&mut self, group: &TransportAddr, count: u32, flags: u8) {
        let Some(g) = self.group_mut(group) else { return };
        g.hyst.commit(count);
        g.reported_flags = flags;
        self.counters.reports_committed += 1;
        self.check_report(group);
        self.drop_group_if_idle(group);
    }

    /// Every group's last committed report, for the periodic full re-send (`report_refresh`).
    pub fn reported(&self) -> impl Iterator<Item = GroupReport> + '_ {
        self.groups.iter().filter_map(|g| {
            g.hyst.reported.map(|count| GroupReport {
                group: g.group,
                count,
                flags: g.reported_flags,
            })
        })
    }

    /// One group's last committed report (`None` if it never committed one): a keyed lookup, so re-reporting
    /// after a ring change costs one probe per moved group, not a walk of every group.
    pub fn reported_of(&self, group: &TransportAddr) -> Option<GroupReport> {
        let g = self.group(group)?;
        g.hyst.reported.map(|count| GroupReport {
            group: g.group,
            count,
            flags: g.reported_flags,
        })
    }

    // ----- target choice -----

    /// Rebuilds the group's slot table if its target set changed since the last build.
    fn fresh_table(&mut self, gh: u64, group: &TransportAddr) -> Option<&GroupState> {
        let g = self.groups.find_mut(gh, |g| g.group == *group)?;
        if g.table_stale {
            self.weights.clear();
            for &s in &g.members {
                let w = self
                    .regs
                    .get(s as usize)
                    .and_then(|r| r.as_ref())
                    .map_or(1, |r| r.weight);
                self.weights.push((s, u32::from(w)));
            }
            g.table.rebuild(&self.flow_key, &self.weights, &mut self.scratch);
            g.table_stale = false;
            self.counters.tables_built += 1;
        }
        Some(g)
    }

    /// The group's slot table (SPEC.md §13.3) for the XDP map sync: the registration indexes, ascending, and
    /// the slots (each an index into them); a flow's target is `members[slots[flow_hash mod slots.len()]]`.
    /// Rebuilt first if the target set changed. `None` if the group has no state here.
    pub fn slot_table(&mut self, group: &TransportAddr) -> Option<(&[u32], &[u16])> {
        let gh = self.hash_group(group);
        let g = self.fresh_table(gh, group)?;
        Some((&g.table.members, &g.table.slots))
    }

    /// Picks the target(s) for a new flow of `group` (SPEC.md §9.5). `flow_hash` is the flow's hash
    /// (§13.2). `None` if the group has no live target here (counted `no_target`) or the options exclude
    /// every target (counted `no_eligible_target`).
    ///
    /// Default: the group's weighted slot table (§13.3), rebuilt on the first choice after its target set
    /// changed (not per packet). With `exclude_sender` or `scope_prefix`, the table's choice is kept when it
    /// qualifies, otherwise the qualifying target of highest weighted rendezvous score for the flow is chosen
    /// (consistent per flow, weights respected). `random` replaces the flow hash with the seeded generator.
    /// `replicate` adds the next distinct qualifying targets by rendezvous score. Allocation-free except
    /// for the table rebuild after a change.
    pub fn choose_target(
        &mut self,
        group: &TransportAddr,
        flow: &FlowKey,
        flow_hash: u64,
        opts: &TargetOptions,
    ) -> Option<TargetChoice> {
        let h = if opts.random {
            self.rng.next_u64()
        } else {
            flow_hash
        };
        let gh = self.hash_group(group);
        if self.group(group).is_none_or(|g| g.members.is_empty()) {
            self.counters.no_target += 1;
            return None;
        }
        self.fresh_table(gh, group)?;
        let g = self.groups.find(gh, |g| g.group == *group)?;
        let regs = &self.regs;
        let reg = |s: u32| regs.get(s as usize).and_then(|r| r.as_ref());
        let is_sender = |s: u32| opts.exclude_sender && reg(s).is_some_and(|r| r.service.ip == flow.src);
        let in_scope = |s: u32, bits: u8| reg(s).is_some_and(|r| same_prefix(r.service.ip, flow.src, bits));
        // Scope applies only if some non-excluded target is in it.
        let scope = opts
            .scope_prefix
            .filter(|&bits| g.members.iter().any(|&s| !is_sender(s) && in_scope(s, bits)));
        let eligible = |s: u32| !is_sender(s) && scope.is_none_or(|bits| in_scope(s, bits));
        let to_ref = |s: u32| {
            reg(s).map(|r| TargetRef {
                slot: s,
                service: r.service,
                mode: r.mode,
            })
        };

        let primary = match g.table.pick(h).filter(|&s| eligible(s)) {
            Some(s) => Some(s),
            None => best_hrw(&g.members, h, regs, &eligible, &[]),
        };
        let Some(primary) = primary.and_then(to_ref) else {
            self.counters.no_eligible_target += 1;
            return None;
        };
        let mut choice = TargetChoice::one(primary);
        let r = usize::from(opts.replicate).min(MAX_REPLICAS);
        if r >= 2 && flow.proto == IpProtocol::Udp {
            let mut taken = [NIL; MAX_REPLICAS];
            taken[0] = primary.slot;
            for i in 1..r {
                let Some(next) = best_hrw(&g.members, h, regs, &eligible, &taken[..i]).and_then(to_ref)
                else {
                    break;
                };
                taken[i] = next.slot;
                choice.targets[i] = Some(next);
            }
        }
        Some(choice)
    }
}

/// The eligible member not in `taken` with the highest weighted rendezvous score for `h`.
fn best_hrw(
    members: &[u32],
    h: u64,
    regs: &[Option<Reg>],
    eligible: &impl Fn(u32) -> bool,
    taken: &[u32],
) -> Option<u32> {
    let mut best: Option<(f64, u32)> = None;
    for &s in members {
        if taken.contains(&s) || !eligible(s) {
            continue;
        }
        let w = regs
            .get(s as usize)
            .and_then(|r| r.as_ref())
            .map_or(1, |r| r.weight);
        let score = hrw_score(h, s, w);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, s));
        }
    }
    best.map(|(_, s)| s)
}
