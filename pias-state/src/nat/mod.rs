//! The JAP's NAT table: bindings between client flows and target flows, with port allocation and timeouts.
//!
//! # What it does (normative)
//!
//! A client's packet reaches the JAP as flow `C = (client ip:port → group ip:port, proto)`. The caller picks a
//! target `T`; [`NatTable::create`] allocates a NAT source `P` (a pool address and port) and returns the
//! [`Translation`] to apply: source → `P`, destination → `T`. The forward key is `C`; the translated flow is
//! `P → T`. The target's reply arrives as `T → P`; [`NatTable::lookup_reverse`] by that key returns the rewrite
//! source → group ip:port, destination → client ip:port. The address family never changes: a v4 group binds a
//! v4 target and a v4 pool address. For ICMP echo (`Icmp`/`Icmpv6`) the identifier is the port on both sides:
//! the caller puts it in both ports of the key, and the target "port" of a binding is its pool identifier.
//!
//! - **Port allocation.** A pool `(address, port, protocol class)` is used by at most one live binding (the
//!   classes are TCP, UDP and ICMP echo), which makes the reverse key unique and the NAT a bijection. The pool
//!   address is picked by a keyed hash of the client address (so one client keeps one pool address while it
//!   has free ports — "paired" pooling, RFC 4787 REQ-2), then the next addresses of the family in turn. The
//!   port starts at a keyed pseudo-random point of the range and takes the first free port after it (RFC 6056
//!   spirit), through a two-level bitmap ([`ports`]): O(1), at most 18 word tests per address, exact (it fails
//!   only when no port of the family and class is free), deterministic for a given key. Failure is
//!   [`NatError::PortsExhausted`], counted in [`NatCounters::port_exhausted`].
//! - **Timeouts** (idle, refreshed by every hit; defaults in [`NatConfig::with_pool`]; SPEC.md §11.3): UDP
//!   starts *transitory* (30 s) and becomes *assured* (120 s, RFC 4787 REQ-5) once it has seen a reply and a
//!   packet [`UDP_ASSURE_AFTER_S`] after its creation (conntrack's stream rule); ICMP 60 s; TCP starts
//!   *half-open* (30 s) until a segment from the target is seen, then transitory (240 s) until ACKs were seen
//!   both ways, then established (7440 s, RFC 5382); FIN both ways → transitory; RST → closed (10 s). TCP state
//!   comes from [`NatTable::observe_tcp`] (see [`tcp`] for the table). A binding is live until
//!   `last_seen + timeout(class)`; a lookup of a binding past that instant expires it on the spot (and misses),
//!   whether or not `handle_timeout` ran; `handle_timeout` removes it at most `touch_granularity` (default 1 s)
//!   after that instant (see Layout).
//! - **Bound and early drop** (SPEC.md §11.4). At most `max_entries` bindings. Assured UDP and established
//!   TCP are *protected* ([`TimeoutClass::is_transitory`]): a new flow never removes one. Creating a binding in
//!   a full table first removes a due binding (an expiry), else the oldest transitory one (the least recently
//!   moved head of the transitory lists: an early drop, [`NatCounters::early_drop`]), else refuses with
//!   [`NatError::Full`]. When the ports of the flow's family and protocol are all in use, the oldest
//!   transitory binding of that family and port class is dropped the same way (at most [`EARLY_DROP_SCAN`]
//!   nodes looked at per list), else [`NatError::PortsExhausted`]. So a flood of spoofed new flows recycles
//!   its own bindings and those of other one-shot flows, and never breaks an established one.
//! - **Per-prefix cap.** A client prefix (/24, /56 by default) holds at most `new_per_prefix` bindings that
//!   are not yet protected; more are refused ([`NatError::PrefixCap`]). The counts live in a seeded count-min
//!   sketch (two rows of [`PREFIX_BUCKETS`] counters): bounded, allocation-free, never an under-count.
//! - **Expiry.** [`NatTable::poll_timeout`] is the earliest deadline (it may lie in the past when the last
//!   [`NatTable::handle_timeout`] ran out of budget: then call it again). `handle_timeout(now)` removes at most
//!   `expiry_budget` due bindings per call, and no more than the event queue has room for, so no expiry event is
//!   ever dropped. Early or repeated calls are harmless.
//! - **Events.** Every binding created or removed produces a [`NatEvent`] to drain with
//!   [`NatTable::poll_event`] (drivers mirror them into XDP maps). The queue holds `event_capacity` events;
//!   drain it after every `handle_*`/`create`/`lookup_*` call. Events that do not fit are dropped and counted
//!   in [`NatCounters::events_dropped`] (only creation, lookup-time expiry and eviction can overflow it).
//! - **Dead targets.** [`NatTable::remove_where_target`] starts a background sweep that removes every binding
//!   of a target, visiting at most `sweep_budget` slots per `handle_timeout`; meanwhile lookups of that target's
//!   bindings miss (and remove them) and `create` towards it fails with [`NatError::TargetDraining`].
//!
//! # Layout and cost
//!
//! Bindings live in a slab preallocated to `max_entries` (128 bytes each, u32 indices, a free list). Five
//! intrusive doubly linked lists, one per [`TimeoutClass`], keep each class in the order its bindings were last
//! moved to the tail; since a class has one timeout, its head is its next expiry. A hit moves a binding to the
//! tail only when its last move is `touch_granularity` old or more (otherwise it just records `last_seen`):
//! unlinking touches two neighbours at random places in memory, which would double the cost of a hit, and a
//! busy flow needs it at most once a second. The list is then in last-seen order to within that granularity,
//! which is all the lateness it can cause. Two `hashbrown::HashTable<u32>` indexes (forward key → slot,
//! reverse key → slot) store only the slot and re-hash from the slab, under SipHash-1-3 with a secret key so
//! that nobody can choose colliding flows. They are sized for a load of at most one half, so that deletions
//! leave no tombstones in practice and the tables never grow after construction. Lookups, touches, creation
//! and removal allocate nothing. At 10^6 bindings the whole table takes about 150 MB ([`NatTable::memory_bytes`]).
//!
//! # Drain order
//!
//! After any call: `while let Some(ev) = nat.poll_event() { … }`, then re-arm the timer on `poll_timeout()`.

mod config;
mod create;
mod expiry;
pub mod ports;
mod table;
pub mod tcp;

#[cfg(test)]
mod tests;

use core::hash::Hasher;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::VecDeque;

use hashbrown::HashTable;
use pias_proto::{FlowKey, IpProtocol};
use siphasher::sip::SipHasher13;

use crate::time::Instant;
pub use config::{NatConfig, NatConfigError};
use ports::PortBitmap;
use table::{RawKey, bytes_ip, fwd_hash, ip_bytes, port_class, rev_hash};
use tcp::Seen;
pub use tcp::{TcpFlags, TcpState};

/// No slot.
const NIL: u32 = u32::MAX;
/// The `class` of a free slab slot.
const FREE: u8 = u8::MAX;
/// Largest accepted `max_entries`.
pub const MAX_ENTRIES_LIMIT: u32 = 1 << 28;
/// Largest accepted pool (each address costs 3 × 8.3 KB of port bitmaps).
pub const MAX_POOL_ADDRS: usize = 256;
/// Most target sweeps in progress at once.
pub const MAX_PENDING_SWEEPS: usize = 16;
/// A replied UDP binding still active this many seconds after its creation is assured (conntrack's 2 s
/// "stream" rule), measured in whole seconds, so between 1 and 2 s in fact.
pub const UDP_ASSURE_AFTER_S: u32 = 2;
/// Most list nodes early drop visits per class when it looks for a binding of one family and protocol.
pub const EARLY_DROP_SCAN: usize = 64;
/// Counters per row of the per-prefix count-min sketch (two rows).
pub const PREFIX_BUCKETS: usize = 1 << 15;
/// [`Entry::flags`]: the binding is new (not yet assured or established) and counted in its client prefix.
const FRESH: u8 = 1;

/// Which way a packet goes through a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → target (looked up by the forward key).
    Forward,
    /// Target → client (looked up by the reverse key).
    Reverse,
}

/// The idle-timeout classes; each has one configured timeout and one expiry list.
///
/// [`Udp`](Self::Udp) and [`TcpEstablished`](Self::TcpEstablished) are *protected*: early drop never removes
/// them to make room for a new flow. Every other class is *transitory* and may be dropped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeoutClass {
    /// Assured UDP: replied, and still active [`UDP_ASSURE_AFTER_S`] after creation.
    Udp = 0,
    Icmp = 1,
    TcpEstablished = 2,
    /// TCP answered by the target but not established, or closing (FIN both ways).
    TcpTransitory = 3,
    /// After a RST.
    TcpClosed = 4,
    /// UDP not (yet) assured: unreplied, or a one-shot exchange.
    UdpTransitory = 5,
    /// TCP with nothing seen from the target yet (SYN sent, or created by a mid-flow segment).
    TcpHalfOpen = 6,
}

impl TimeoutClass {
    /// Number of classes.
    pub const COUNT: usize = 7;
    /// All classes, in index order.
    pub const ALL: [TimeoutClass; 7] = [
        TimeoutClass::Udp,
        TimeoutClass::Icmp,
        TimeoutClass::TcpEstablished,
        TimeoutClass::TcpTransitory,
        TimeoutClass::TcpClosed,
        TimeoutClass::UdpTransitory,
        TimeoutClass::TcpHalfOpen,
    ];

    fn from_index(i: u8) -> TimeoutClass {
        match i {
            0 => TimeoutClass::Udp,
            1 => TimeoutClass::Icmp,
            2 => TimeoutClass::TcpEstablished,
            3 => TimeoutClass::TcpTransitory,
            4 => TimeoutClass::TcpClosed,
            5 => TimeoutClass::UdpTransitory,
            _ => TimeoutClass::TcpHalfOpen,
        }
    }

    /// Whether early drop may remove a binding of this class to make room for a new flow.
    pub fn is_transitory(self) -> bool {
        !matches!(self, TimeoutClass::Udp | TimeoutClass::TcpEstablished)
    }
}

/// Why `create` refused; in every case the table is unchanged (except that an expired binding with the same
/// forward key, if any, was removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// Only TCP, UDP and ICMP echo are translated.
    #[error("protocol {0} is not translated")]
    UnsupportedProtocol(IpProtocol),
    /// Client, group and target addresses are not all of one family.
    #[error("address families of client, group and target differ")]
    FamilyMismatch,
    /// The pool has no address of the flow's family.
    #[error("no pool address of this family")]
    NoPoolAddress,
    /// Every pool port of the family and protocol is in use by protected bindings, or by transitory ones
    /// early drop did not find (counted in `port_exhausted`).
    #[error("pool ports exhausted")]
    PortsExhausted,
    /// The table is full of protected (assured UDP, established TCP) bindings (counted in `refused_full`).
    #[error("the table is full of established bindings")]
    Full,
    /// The client's prefix has `new_per_prefix` new bindings already (counted in `prefix_refused`).
    #[error("too many new bindings from the client's prefix")]
    PrefixCap,
    /// A live binding already has this forward key.
    #[error("a binding for this flow exists")]
    AlreadyExists(BindingId),
    /// `max_entries` is 0.
    #[error("the table has no capacity (max_entries = 0)")]
    NoCapacity,
    /// The target is being swept by `remove_where_target`.
    #[error("the target's bindings are being removed")]
    TargetDraining,
}

/// Why a binding was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoveReason {
    /// Idle past its class's timeout.
    Timeout(TimeoutClass),
    /// A transitory binding dropped early, before its timeout, to make room (entries or ports) for a new flow.
    Evicted,
    /// Removed by [`NatTable::remove`].
    Removed,
    /// Removed by a [`NatTable::remove_where_target`] sweep.
    TargetRemoved,
}

/// A handle on one binding: slot and generation, so a stale handle is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingId {
    pub slot: u32,
    pub generation: u32,
}

/// The addresses to write into a packet, and the binding it went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    pub id: BindingId,
    /// The binding's caller-chosen tag (the proxy's: the target's registration), so that a hit needs no
    /// second lookup to know how to deliver.
    pub tag: u32,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

/// What a driver mirrors into its fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatEvent {
    /// A binding exists: packets keyed `forward` become `reverse.reversed()`, packets keyed `reverse` become
    /// `forward.reversed()`.
    Created {
        id: BindingId,
        forward: FlowKey,
        reverse: FlowKey,
        tag: u32,
    },
    /// A binding is gone from both indexes.
    Removed {
        id: BindingId,
        forward: FlowKey,
        reverse: FlowKey,
        tag: u32,
        reason: RemoveReason,
    },
}

counters! {
    /// Counters; `created == len + expired total + early_drop + removed + removed_target` always holds.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct NatCounters("nat_") {
        created,
        /// Expiries of [`TimeoutClass::Udp`] (assured) bindings.
        expired_udp,
        expired_icmp,
        expired_tcp_established,
        expired_tcp_transitory,
        expired_tcp_closed,
        expired_udp_transitory,
        expired_tcp_half_open,
        /// Transitory bindings removed before their timeout to make room for a new flow.
        early_drop,
        removed,
        removed_target,
        port_exhausted,
        /// `create` refused: the table was full of protected bindings.
        refused_full,
        /// `create` refused: the client's prefix was at its cap of new bindings.
        prefix_refused,
        /// Bindings that became protected (UDP assured, TCP established) while new.
        assured,
        /// `create` calls refused for any other reason.
        create_rejected,
        forward_hits,
        forward_misses,
        reverse_hits,
        reverse_misses,
        events_dropped,
        /// Target sweeps refused because [`MAX_PENDING_SWEEPS`] were in progress.
        sweeps_refused,
    }
}

impl NatCounters {
    /// Expiries of one [`TimeoutClass`].
    pub fn expired(&self, class: TimeoutClass) -> u64 {
        match class {
            TimeoutClass::Udp => self.expired_udp,
            TimeoutClass::Icmp => self.expired_icmp,
            TimeoutClass::TcpEstablished => self.expired_tcp_established,
            TimeoutClass::TcpTransitory => self.expired_tcp_transitory,
            TimeoutClass::TcpClosed => self.expired_tcp_closed,
            TimeoutClass::UdpTransitory => self.expired_udp_transitory,
            TimeoutClass::TcpHalfOpen => self.expired_tcp_half_open,
        }
    }

    fn expired_mut(&mut self, class: TimeoutClass) -> &mut u64 {
        match class {
            TimeoutClass::Udp => &mut self.expired_udp,
            TimeoutClass::Icmp => &mut self.expired_icmp,
            TimeoutClass::TcpEstablished => &mut self.expired_tcp_established,
            TimeoutClass::TcpTransitory => &mut self.expired_tcp_transitory,
            TimeoutClass::TcpClosed => &mut self.expired_tcp_closed,
            TimeoutClass::UdpTransitory => &mut self.expired_udp_transitory,
            TimeoutClass::TcpHalfOpen => &mut self.expired_tcp_half_open,
        }
    }

    /// All expiries.
    pub fn expired_total(&self) -> u64 {
        TimeoutClass::ALL.iter().map(|&c| self.expired(c)).sum()
    }
}

/// A binding as the state dump shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub id: BindingId,
    /// Client → group.
    pub forward: FlowKey,
    /// Target → pool.
    pub reverse: FlowKey,
    pub tag: u32,
    pub class: TimeoutClass,
    /// `None` unless TCP.
    pub tcp: Option<TcpState>,
    pub created: Instant,
    pub last_seen: Instant,
    pub expires: Instant,
    pub forward_packets: u64,
    pub forward_bytes: u64,
    pub reverse_packets: u64,
    pub reverse_bytes: u64,
}

/// One slab slot: 128 bytes, aligned to a cache line so that a hit reads exactly two lines. Addresses are 16
/// bytes (IPv4 in the first four, the rest zero).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Entry {
    client: [u8; 16],
    group: [u8; 16],
    target: [u8; 16],
    last_seen: u64,
    fwd_packets: u64,
    fwd_bytes: u64,
    rev_packets: u64,
    rev_bytes: u64,
    tag: u32,
    prev: u32,
    /// Next in the class list, or next free slot.
    next: u32,
    generation: u32,
    /// Seconds since the origin at creation.
    created_s: u32,
    /// `last_seen` minus the instant the binding was last (re)linked at its list's tail, in µs; always below
    /// `touch_granularity`.
    lag: u32,
    client_port: u16,
    group_port: u16,
    target_port: u16,
    pool_port: u16,
    pool_idx: u16,
    proto: u8,
    v6: bool,
    tcp: Seen,
    /// [`TimeoutClass`] index, or [`FREE`].
    class: u8,
    /// [`FRESH`].
    flags: u8,
}

const _: () = assert!(core::mem::size_of::<Entry>() == 128);

/// A target sweep in progress.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    ip: [u8; 16],
    v6: bool,
    port: Option<u16>,
    /// Slots still to visit.
    left: u32,
}

/// Keyed hasher state.
#[derive(Debug, Clone, Copy)]
struct SipKey(u64, u64);

/// The JAP NAT table. See the [module docs](self) for the contract.
///
/// Methods: getters (`len`, `get`, `iter`, `counters`, `memory_bytes`, …); per-packet `lookup_forward`,
/// `lookup_reverse`, `observe_tcp`, `touch`; mutators `create`, `remove`, `remove_where_target`;
/// `handle_timeout`; and the polls `poll_event` (drain after every call) and `poll_timeout`.
#[derive(Debug)]
pub struct NatTable {
    cfg: NatConfig,
    timeouts: [u64; TimeoutClass::COUNT],
    /// `touch_granularity` in µs.
    granularity: u64,
    slab: Vec<Entry>,
    free_head: u32,
    heads: [u32; TimeoutClass::COUNT],
    tails: [u32; TimeoutClass::COUNT],
    fwd: HashTable<u32>,
    rev: HashTable<u32>,
    len: u32,
    pool_ips: Vec<[u8; 16]>,
    /// Per pool address: TCP, UDP, ICMP bitmaps.
    pool_ports: Vec<[PortBitmap; 3]>,
    v4_pool: Vec<u16>,
    v6_pool: Vec<u16>,
    /// The pool's IPv4 and IPv6 addresses as integers, sorted: [`NatTable::is_pool_address`] in O(log n) for
    /// a pool taken from a prefix, and one or two integer compares for the usual small pool (every host
    /// packet asks; comparing `IpAddr`s is several times dearer).
    pool_sorted_v4: Vec<u32>,
    pool_sorted_v6: Vec<u128>,
    sip: SipKey,
    /// The key of the two indexes' hash ([`crate::keyhash`]), derived from `sip`.
    index_key: crate::keyhash::TableKey,
    /// Port starts drawn so far: the input of the keyed port PRF (RFC 6056 §3.3.2, with a secret key).
    port_draws: u64,
    now: u64,
    events: VecDeque<NatEvent>,
    sweeps: Vec<Sweep>,
    sweep_cursor: u32,
    /// Count-min sketch of new bindings per client prefix: two rows of [`PREFIX_BUCKETS`] counters.
    prefix_counts: Box<[u32]>,
    prefix_key: SipKey,
    counters: NatCounters,
}

impl NatTable {
    /// A table for `cfg`, with its hash key and port choice keyed by `key` (secret, SPEC.md §8.1: neither the
    /// index buckets nor the next port can be predicted from outside). Preallocates everything: about 150
    /// bytes per `max_entries`.
    pub fn new(cfg: NatConfig, key: pias_proto::auth::SipKey) -> Result<NatTable, NatConfigError> {
        cfg.validate()?;
        let sip = SipKey(key.k0, key.k1);
        let n = cfg.max_entries as usize;
        let oom = NatConfigError::OutOfMemory(cfg.max_entries);
        let mut slab = Vec::new();
        slab.try_reserve_exact(n).map_err(|_| oom.clone())?;
        // 1.75 × n items: hashbrown then picks a power of two of at least 2n buckets, so the load stays at most
        // one half (no tombstone build-up, never a resize) — and for n = 10^6 that is 2^21 buckets, the same
        // as a plain `with_capacity(n)`.
        let cap = n.saturating_mul(7) / 4;
        let mut fwd = HashTable::new();
        fwd.try_reserve(cap, |_: &u32| 0).map_err(|_| oom.clone())?;
        let mut rev = HashTable::new();
        rev.try_reserve(cap, |_: &u32| 0).map_err(|_| oom.clone())?;
        let mut events = VecDeque::new();
        events
            .try_reserve_exact(cfg.event_capacity as usize)
            .map_err(|_| oom)?;
        let mut pool_ips = Vec::with_capacity(cfg.pool.len());
        let mut pool_ports = Vec::with_capacity(cfg.pool.len());
        let (mut v4_pool, mut v6_pool) = (Vec::new(), Vec::new());
        for (i, a) in cfg.pool.iter().enumerate() {
            let (b, v6) = ip_bytes(a);
            pool_ips.push(b);
            let bm = PortBitmap::new(cfg.port_min, cfg.port_max);
            pool_ports.push([bm.clone(), bm.clone(), bm]);
            if v6 { &mut v6_pool } else { &mut v4_pool }.push(i as u16);
        }
        let timeouts =
            TimeoutClass::ALL.map(|c| u64::try_from(cfg.timeout(c).as_micros()).unwrap_or(u64::MAX));
        // Derived from the index key rather than drawn from `rng`, so that port choices for a seed stay as
        // they were.
        let prefix_key = SipKey(
            crate::rng::mix(sip.0 ^ 0x7072_6566_6978_3031),
            crate::rng::mix(sip.1 ^ 0x7072_6566_6978_3032),
        );
        // Derived like `prefix_key`: the indexes' hash and the port PRF never share a key.
        let index_key = crate::keyhash::TableKey::new(
            crate::rng::mix(sip.0 ^ 0x6e61_7469_6478_3031),
            crate::rng::mix(sip.1 ^ 0x6e61_7469_6478_3032),
        );
        Ok(NatTable {
            timeouts,
            granularity: cfg.touch_granularity.as_micros() as u64,
            slab,
            free_head: NIL,
            heads: [NIL; TimeoutClass::COUNT],
            tails: [NIL; TimeoutClass::COUNT],
            fwd,
            rev,
            len: 0,
            pool_ips,
            pool_ports,
            v4_pool,
            v6_pool,
            pool_sorted_v4: {
                let mut v: Vec<u32> = (cfg.pool.iter())
                    .filter_map(|a| match a {
                        IpAddr::V4(a) => Some(a.to_bits()),
                        IpAddr::V6(_) => None,
                    })
                    .collect();
                v.sort_unstable();
                v
            },
            pool_sorted_v6: {
                let mut v: Vec<u128> = (cfg.pool.iter())
                    .filter_map(|a| match a {
                        IpAddr::V6(a) => Some(a.to_bits()),
                        IpAddr::V4(_) => None,
                    })
                    .collect();
                v.sort_unstable();
                v
            },
            sip,
            index_key,
            port_draws: 0,
            now: 0,
            events,
            sweeps: Vec::with_capacity(MAX_PENDING_SWEEPS),
            sweep_cursor: 0,
            prefix_counts: vec![0u32; 2 * PREFIX_BUCKETS].into_boxed_slice(),
            prefix_key,
            counters: NatCounters::default(),
            cfg,
        })
    }

    // ---- getters ----

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    /// Live bindings.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no binding is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The counters.
    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    /// Bytes of memory the table holds (slab, both indexes, port bitmaps, event queue), all preallocated.
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of::<NatTable>()
            + self.slab.capacity() * core::mem::size_of::<Entry>()
            + self.fwd.allocation_size()
            + self.rev.allocation_size()
            + self.pool_ips.capacity() * 16
            + self.pool_ports.capacity() * 3 * PortBitmap::BYTES
            + self.events.capacity() * core::mem::size_of::<NatEvent>()
            + self.pool_sorted_v4.capacity() * core::mem::size_of::<u32>()
            + self.pool_sorted_v6.capacity() * core::mem::size_of::<u128>()
            + self.sweeps.capacity() * core::mem::size_of::<Sweep>()
            + self.prefix_counts.len() * 4
    }

    /// The number of new (not yet assured or established) bindings counted for `client`'s prefix: an upper
    /// bound of the true count (a count-min sketch; exact unless another prefix shares both counters).
    pub fn new_in_prefix(&self, client: IpAddr) -> u32 {
        let (b, v6) = ip_bytes(&client);
        let [x, y] = self.prefix_slots(&b, v6);
        self.prefix_counts[x].min(self.prefix_counts[y])
    }

    /// Whether `ip` is one of the pool's addresses (a binary search: a pool taken from an IPv6 prefix has
    /// dozens, and every packet from the host side asks).
    #[inline]
    pub fn is_pool_address(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.pool_sorted_v4.binary_search(&a.to_bits()).is_ok(),
            IpAddr::V6(a) => self.pool_sorted_v6.binary_search(&a.to_bits()).is_ok(),
        }
    }

    /// The binding `id` names, if it is still live (not looking at its deadline).
    pub fn get(&self, id: BindingId) -> Option<Binding> {
        self.live(id).map(|i| self.binding(i))
    }

    /// The binding of a forward (client → group) key, without touching it.
    pub fn get_forward(&self, key: &FlowKey) -> Option<Binding> {
        let k = RawKey::new(key)?;
        self.find_fwd(&k).map(|i| self.binding(i))
    }

    /// The binding of a reverse (target → pool) key, without touching it.
    pub fn get_reverse(&self, key: &FlowKey) -> Option<Binding> {
        let k = RawKey::new(key)?;
        self.find_rev(&k).map(|i| self.binding(i))
    }

    /// Every live binding, in slot order (for a state dump).
    pub fn iter(&self) -> impl Iterator<Item = Binding> + '_ {
        (0..self.slab.len() as u32)
            .filter(|&i| self.slab[i as usize].class != FREE)
            .map(|i| self.binding(i))
    }

    /// Whether a sweep of `remove_where_target` for this target (or all its ports) is in progress.
    pub fn is_draining(&self, ip: IpAddr, port: u16) -> bool {
        let (b, v6) = ip_bytes(&ip);
        self.sweeps
            .iter()
            .any(|s| s.ip == b && s.v6 == v6 && s.port.is_none_or(|p| p == port))
    }

    // ---- per-packet ----

    /// Looks up a client's packet (key client → group), counts it (`packet_len` bytes), refreshes the binding's
    /// idle timer, and returns the rewrite to the target. A binding past its deadline expires here and misses.
    #[inline]
    pub fn lookup_forward(&mut self, key: &FlowKey, packet_len: u32, now: Instant) -> Option<Translation> {
        self.advance(now);
        let Some(i) = RawKey::new(key)
            .and_then(|k| self.find_fwd(&k))
            .and_then(|i| self.check_live(i))
        else {
            self.counters.forward_misses += 1;
            return None;
        };
        self.counters.forward_hits += 1;
        self.touch_slot(i, Direction::Forward, 1, u64::from(packet_len));
        let e = &self.slab[i as usize];
        Some(Translation {
            id: BindingId {
                slot: i,
                generation: e.generation,
            },
            tag: e.tag,
            src: bytes_ip(&self.pool_ips[usize::from(e.pool_idx)], e.v6),
            src_port: e.pool_port,
            dst: bytes_ip(&e.target, e.v6),
            dst_port: e.target_port,
        })
    }

    /// Looks up a target's reply (key target → pool), counts and touches like [`lookup_forward`](Self::lookup_forward),
    /// and returns the rewrite back to the client (source = the group).
    #[inline]
    pub fn lookup_reverse(&mut self, key: &FlowKey, packet_len: u32, now: Instant) -> Option<Translation> {
        self.advance(now);
        let Some(i) = RawKey::new(key)
            .and_then(|k| self.find_rev(&k))
            .and_then(|i| self.check_live(i))
        else {
            self.counters.reverse_misses += 1;
            return None;
        };
        self.counters.reverse_hits += 1;
        self.touch_slot(i, Direction::Reverse, 1, u64::from(packet_len));
        let e = &self.slab[i as usize];
        Some(Translation {
            id: BindingId {
                slot: i,
                generation: e.generation,
            },
            tag: e.tag,
            src: bytes_ip(&e.group, e.v6),
            src_port: e.group_port,
            dst: bytes_ip(&e.client, e.v6),
            dst_port: e.client_port,
        })
    }

    /// Whether the binding `id` has seen exactly one packet from its target: asked right after the
    /// [`NatTable::lookup_reverse`] that returned `id`, whether that packet was the binding's first reply
    /// (the hook of the registry's passive watch, SPEC.md §10.4). `false` for a stale `id`.
    pub fn first_reply(&self, id: BindingId) -> bool {
        self.live(id)
            .is_some_and(|i| self.slab[i as usize].rev_packets == 1)
    }

    /// Feeds one TCP segment's flags (after a lookup returned `id`) to the binding's state machine; moves it to
    /// the matching timeout class and refreshes its timer. Returns the new state, or `None` if `id` is stale or
    /// not TCP. Like a lookup, it expires a binding past its deadline (or of a target being swept) on the spot.
    pub fn observe_tcp(
        &mut self,
        id: BindingId,
        flags: TcpFlags,
        dir: Direction,
        now: Instant,
    ) -> Option<TcpState> {
        self.advance(now);
        let i = self.live(id)?;
        let i = self.check_live(i)?;
        let e = &mut self.slab[i as usize];
        if e.proto != IpProtocol::TCP {
            return None;
        }
        e.tcp = e.tcp.observe(flags, dir);
        let state = e.tcp.state();
        let class = state.timeout_class() as u8;
        if class == e.class {
            self.touch_slot(i, dir, 0, 0);
        } else {
            e.last_seen = self.now;
            self.unlink(i);
            self.link_tail(i, class);
            if class == TimeoutClass::TcpEstablished as u8 {
                self.unfresh(i);
            }
        }
        Some(state)
    }

    /// Records activity seen elsewhere (the XDP fast path): `packets` and `bytes` in direction `dir`, and a
    /// refresh of the idle timer to `now`. Returns false if `id` is stale (or the binding was past its
    /// deadline, and is now removed).
    pub fn touch(&mut self, id: BindingId, dir: Direction, packets: u64, bytes: u64, now: Instant) -> bool {
        self.advance(now);
        match self.live(id).and_then(|i| self.check_live(i)) {
            Some(i) => {
                self.touch_slot(i, dir, packets, bytes);
                true
            }
            None => false,
        }
    }

    // ---- mutators ----

    /// Removes the binding of a forward key. Returns whether there was one.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        match RawKey::new(key).and_then(|k| self.find_fwd(&k)) {
            Some(i) => {
                self.remove_slot(i, RemoveReason::Removed);
                true
            }
            None => false,
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<NatEvent> {
        self.events.pop_front()
    }
}
