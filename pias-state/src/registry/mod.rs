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
//! Gone answers are replies, not state. Replies to requests whose source is not verified yet (Challenge, Gone)
//! are never larger than the request and are rate-limited per source prefix (`limit.rs`, §8.4); a Refresh or
//! Deregister for a registration held by another source is not answered at all (a spoofed replay).
//!
//! # Bounds
//!
//! Registrations (`max_registrations`, then Full), targets per group (`max_targets_per_group`, then Full),
//! groups (`max_registrations`, then Full), derived keys (`max_derived_keys`, LRU), tombstones
//! (`max_tombstones`, oldest evicted), reply queue (`reply_queue`, newest dropped), event queue
//! (`event_queue`; expiry waits for room, other events are dropped when full). Each drop is counted.
//!
//! # Modules
//!
//! `config.rs`: the configuration and its validation; `handshake.rs`: cookies, keys, Register / Refresh /
//! Deregister and the replies; `limit.rs`: the per-prefix rate limit of unverified replies; `liveness.rs`: the liveness list, membership, tombstones and expiry;
//! `reports.rs`: the per-group counts for the RAPs; `choice.rs`: how the JAP chooses a target for a flow;
//! `table.rs`: the weighted slot table that choice and the XDP sync share; `watch.rs`: the passive watch of
//! targets whose new flows go unanswered (§10.4).

mod choice;
mod config;
mod handshake;
mod limit;
mod liveness;
mod reports;
mod table;
#[cfg(test)]
mod tests;
mod watch;

pub use config::{RegistryConfig, RegistryConfigError};
pub use table::{MAX_TABLE_MEMBERS, SIZES as TABLE_SIZES};
pub use watch::{WATCH_PREFIXES, WatchConfig};

use core::hash::{Hash, Hasher};
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
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
        /// Refresh/Deregister for an unknown registration (answered Gone, rate-limited) or from another source
        /// than the registration's (not answered: a spoofed replay, SPEC.md §8.4).
        unknown_registration,
        /// Of `unknown_registration`: the registration exists with another source, so nothing was answered.
        other_source,
        /// Challenges and Gone answers not sent because their source prefix had no reply tokens left.
        replies_rate_limited,
        /// Replies not sent because they would have been larger than their request (a bug if ever non-zero).
        replies_oversize,
        /// Prefixes evicted from the full reply-limit table (`reply_limit_prefixes`).
        reply_limit_evicted,
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
        /// Targets the passive watch found unanswering and took out of the choice for a back-off (§10.4).
        target_suspected,
        /// New flows sent to another target than their choice because it was suspect.
        suspect_avoided,
        /// New flows sent to a suspect target anyway, every qualifying target being suspect.
        suspect_ignored,
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
    /// The passive watch took a target out of the choice for new flows for a back-off (SPEC.md §10.4).
    TargetSuspected {
        slot: u32,
        group: TransportAddr,
        service: TransportAddr,
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

impl ReplyBody {
    fn message(&self) -> Message<'static> {
        match *self {
            ReplyBody::Challenge(c) => Message::Challenge(c),
            ReplyBody::Ack(a) => Message::RegisterAck(a),
        }
    }

    /// The UDP payload length of the reply (header, body and MAC).
    fn wire_len(&self) -> usize {
        self.message().buffer_len()
    }
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
    /// Reply tokens of the source prefixes unverified requests came from (SPEC.md §8.4).
    reply_limit: LruMap<limit::Prefix, limit::Bucket>,
    scratch: Scratch,
    weights: Vec<(u32, u32)>,
    /// The passive watch, per registration index (grown on first use; `watch.rs`).
    watch: Vec<watch::Watch>,

    replies: VecDeque<Reply>,
    events: VecDeque<RegistryEvent>,
    reports: VecDeque<TransportAddr>,
    counters: RegistryCounters,
    /// UDP payload length of the request being handled: no reply may be longer (SPEC.md §8.4).
    request_len: usize,
    /// Set by [`Registry::drain`]; never cleared (a proxy that left restarts with a new incarnation).
    draining: bool,
}

impl Registry {
    /// A registry for proxy `jap_id`. The cookie key and the hash-table keys come from `secrets` (drawn by
    /// the driver from the OS, SPEC.md §8.1); `seed` drives only the `random` target choice, which needs no
    /// secrecy.
    pub fn new(
        cfg: RegistryConfig,
        master: MasterKey,
        jap_id: ProxyId,
        secrets: &crate::secrets::Secrets,
        seed: u64,
    ) -> Result<Self, RegistryConfigError> {
        cfg.validate()?;
        let k = secrets.table_key("registry index");
        let sip = (k.k0, k.k1);
        let rng = crate::rng::SplitMix::new(seed);
        Ok(Registry {
            cookie_key: MacKey::cookie_key(secrets.cookie()),
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
            keys: LruMap::new(cfg.max_derived_keys, secrets.table_key("registry group keys")),
            tombstones: LruMap::new(cfg.max_tombstones, secrets.table_key("registry tombstones")),
            reply_limit: LruMap::new(
                cfg.reply_limit_prefixes,
                secrets.table_key("registry reply limit"),
            ),
            scratch: Scratch::default(),
            weights: Vec::new(),
            watch: Vec::new(),
            replies: VecDeque::with_capacity(cfg.reply_queue),
            events: VecDeque::with_capacity(cfg.event_queue.min(65_536)),
            reports: VecDeque::new(),
            counters: RegistryCounters::default(),
            request_len: 0,
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

    // ----- queues -----

    fn push_event(&mut self, ev: RegistryEvent) {
        if self.events.len() >= self.cfg.event_queue {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    /// The proxy is leaving: answer Register (once the cookie checks) and Refresh with Draining from now on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The next event (target up or down).
    pub fn poll_event(&mut self) -> Option<RegistryEvent> {
        self.events.pop_front()
    }
}
