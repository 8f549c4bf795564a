//! `Proxy`: one PIAS proxy playing every role (IAP, RAP, JAP) at once, as a sans-IO state machine.
//!
//! # Inputs
//! - [`Proxy::handle_overlay`]: a UDP datagram received on the overlay socket (a Geneve data or control frame
//!   from another proxy, or a tunnel-mode target's reply);
//! - [`Proxy::handle_host`]: an IP packet read from the host side (the TUN into which the anycast prefixes,
//!   the registration addresses and the NAT pool are routed): a client's packet to a group, a target's reply
//!   to the NAT pool, or a target agent's message to the registration address;
//! - [`Proxy::handle_timeout`]: time has passed.
//!
//! The two packet handlers work *in place* on a [`PacketBuf`] and return a [`Verdict`] saying where the
//! (possibly rewritten) packet goes now — that is the forwarding fast path, with no copy and no allocation.
//! Everything else the proxy wants to send is queued and drained with [`Proxy::poll_transmit`].
//!
//! # Drain order
//! After any `handle_*` call, and whenever the timer fires:
//! 1. send what [`Proxy::poll_transmit`] writes until it returns `None`;
//! 2. consume [`Proxy::poll_event`] until `None` (cache and NAT changes for XDP maps, member and target
//!    news for logs);
//! 3. re-arm the one timer on [`Proxy::poll_timeout`] — after [`Proxy::leave`], stop instead once
//!    [`Proxy::is_drained`].
//!
//! Calling `handle_timeout` early or twice is harmless. Dropping events (not draining) costs only the
//! events: they are counted (`events_dropped`), never the proxy's state.

mod buf;
mod reports;

#[cfg(test)]
mod tests;

pub use buf::{HEADROOM, PacketBuf};

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::VecDeque;

use pias_proto::auth::{MasterKey, SipKey};
use pias_proto::control::{
    Answer, AnswerEntry, ControlPacket, DeliveryMode, Invalidate, MAX_ANSWER_ENTRIES, MemberStatus, Message,
    ProxyRecord, REGISTRATION_PORT, ReportAck, Resolve,
};
use pias_proto::geneve::UDP_PORT as OVERLAY_PORT;
use pias_proto::packet::{IpPacket, emit_packet_too_big};
use pias_proto::tunnel::{DATA_HEADER_LEN, DataHeader, Frame, INITIAL_HOPS, flags};
use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr};

use crate::flowhash::{MAX_JAPS, MaglevTable, flow_hash};
use crate::iap::{CacheChange, IapCache, IapConfig, Route};
use crate::lru::LruMap;
use crate::membership::{MemberEvent, Membership, MembershipConfig};
use crate::nat::{BindingId, Direction, NatConfig, NatEvent, NatTable, RemoveReason, TcpFlags};
use crate::policy::PolicyTable;
use crate::rap::{RapConfig, RapTable, Topology};
use crate::registry::{Registry, RegistryConfig, RegistryEvent};
use crate::ring::Ring;
use crate::seal::{Dest, Sealer, Transmit};
use crate::time::Instant;
use reports::Reporter;
pub use reports::{ReportConfig, ReporterCounters};

/// Everything a proxy is configured with. [`ProxyConfig::new`] fills SPEC.md §14's defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub id: ProxyId,
    /// This proxy's overlay address (unicast IP and UDP port, normally 6081).
    pub overlay_addr: SocketAddr,
    /// The overlay id, carried in every frame's VNI.
    pub vni: u32,
    pub master_key: MasterKey,
    /// Larger than any incarnation this proxy used before (drivers pass wall-clock seconds at start).
    pub incarnation: u32,
    /// The seed of every random choice the proxy makes.
    pub seed: u64,
    /// Registration anycast addresses (targets send to these, port 6082).
    pub registration_addrs: Vec<IpAddr>,
    /// MTU of the path between proxies.
    pub overlay_mtu: u16,
    /// RAPs per group (`k`).
    pub rap_replicas: usize,
    /// Ring points per proxy.
    pub ring_vnodes: u16,
    pub membership: MembershipConfig,
    pub iap: IapConfig,
    pub rap: RapConfig,
    pub registry: RegistryConfig,
    pub nat: NatConfig,
    pub reports: ReportConfig,
    pub policies: PolicyTable,
    pub answer_interval: Duration,
    pub invalidate_interval: Duration,
    /// ICMP errors the proxy may generate per second.
    pub icmp_rate: u32,
    /// Bound of the event queue.
    pub event_capacity: usize,
    /// Bound of the queue of control messages waiting for `poll_transmit`.
    pub outbox_capacity: usize,
}

impl ProxyConfig {
    /// A configuration with SPEC.md's defaults for everything but identity, keys and addresses.
    pub fn new(
        id: ProxyId,
        overlay_addr: SocketAddr,
        master_key: MasterKey,
        nat_pool: Vec<IpAddr>,
        registration_addrs: Vec<IpAddr>,
    ) -> Self {
        ProxyConfig {
            id,
            overlay_addr,
            vni: 1,
            master_key,
            incarnation: 1,
            seed: u64::from(id.0),
            registration_addrs,
            overlay_mtu: 1500,
            rap_replicas: crate::ring::DEFAULT_K,
            ring_vnodes: crate::ring::DEFAULT_VNODES,
            membership: MembershipConfig::default(),
            iap: IapConfig::default(),
            rap: RapConfig::default(),
            registry: RegistryConfig::default(),
            nat: NatConfig::with_pool(nat_pool),
            reports: ReportConfig::default(),
            policies: PolicyTable::default(),
            answer_interval: Duration::from_millis(100),
            invalidate_interval: Duration::from_secs(1),
            icmp_rate: 100,
            event_capacity: 4096,
            outbox_capacity: 4096,
        }
    }

    /// The largest client packet the overlay carries without fragmentation (SPEC.md §12).
    pub fn inner_mtu(&self) -> usize {
        let outer_ip = if self.overlay_addr.is_ipv4() { 20 } else { 40 };
        usize::from(self.overlay_mtu).saturating_sub(outer_ip + 8 + DATA_HEADER_LEN)
    }

    /// Checks the whole configuration — this struct's own fields and every sub-configuration's, through the
    /// sub-configuration's own validator — and reports the first bad field: which part it is in, its name
    /// there, and the fix. This is the one validation path: [`Proxy::new`] runs it, and front ends (the CLI's
    /// TOML) only translate the field into their own key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigPart::Proxy as P;
        if !self.id.is_some() {
            return Err(ConfigError::field(
                P,
                "id",
                "must not be 0: give every proxy a unique non-zero id",
            ));
        }
        if self.overlay_addr.ip().is_unspecified() || self.overlay_addr.port() == 0 {
            return Err(ConfigError::field(
                P,
                "overlay_addr",
                "must be a concrete unicast address and port (peers send to it)",
            ));
        }
        if self.vni > 0x00ff_ffff {
            return Err(ConfigError::field(P, "vni", "must fit in 24 bits (0..=16777215)"));
        }
        if self.overlay_mtu < 1280 {
            return Err(ConfigError::field(
                P,
                "overlay_mtu",
                "must be at least 1280 (the IPv6 minimum MTU)",
            ));
        }
        if self.rap_replicas == 0 || self.rap_replicas > crate::ring::MAX_RAPS {
            return Err(ConfigError::field(
                P,
                "rap_replicas",
                "must be between 1 and 8 (3 is the default)",
            ));
        }
        if self.ring_vnodes == 0 {
            return Err(ConfigError::field(
                P,
                "ring_vnodes",
                "must be at least 1 (16 is the default)",
            ));
        }
        if self.event_capacity == 0 {
            return Err(ConfigError::field(
                P,
                "event_capacity",
                "must be at least 1 (default 4096)",
            ));
        }
        if self.outbox_capacity == 0 {
            return Err(ConfigError::field(
                P,
                "outbox_capacity",
                "must be at least 1 (default 4096)",
            ));
        }
        self.membership.validate().map_err(ConfigError::from)?;
        if let Some(i) = self.membership.seeds.iter().position(|s| *s == self.overlay_addr) {
            return Err(ConfigError::field(
                ConfigPart::Membership,
                "seeds",
                "is this proxy's own overlay address: list other proxies only",
            )
            .at(i));
        }
        self.iap.validate()?;
        self.rap.validate()?;
        self.reports.validate()?;
        if self.rap.report_expiry <= self.reports.refresh {
            return Err(ConfigError::field(
                ConfigPart::Rap,
                "report_expiry",
                "must exceed the reports' refresh (default 3 × 30 s = 90 s)",
            ));
        }
        self.registry.validate().map_err(ConfigError::from)?;
        self.nat.validate().map_err(|e| {
            // A duplicate is reported at its second occurrence.
            let i = e
                .pool_address()
                .and_then(|a| self.nat.pool.iter().rposition(|p| *p == a));
            let e = ConfigError::from(e);
            match i {
                Some(i) => e.at(i),
                None => e,
            }
        })?;
        if self.nat.max_entries == 0 {
            // The NAT table alone accepts 0 (every create is refused); a proxy would deliver nothing.
            return Err(ConfigError::field(
                ConfigPart::Nat,
                "max_entries",
                "must be at least 1 (default 1000000)",
            ));
        }
        self.policies.validate()?;
        Ok(())
    }
}

/// The part of [`ProxyConfig`] a field is in: the struct itself or one of its sub-configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigPart {
    /// A field of [`ProxyConfig`] itself.
    Proxy,
    Membership,
    Iap,
    Rap,
    Registry,
    Nat,
    Reports,
    Policies,
}

impl ConfigPart {
    /// The part's field name in [`ProxyConfig`] (`proxy` for the struct itself).
    pub fn name(self) -> &'static str {
        match self {
            ConfigPart::Proxy => "proxy",
            ConfigPart::Membership => "membership",
            ConfigPart::Iap => "iap",
            ConfigPart::Rap => "rap",
            ConfigPart::Registry => "registry",
            ConfigPart::Nat => "nat",
            ConfigPart::Reports => "reports",
            ConfigPart::Policies => "policies",
        }
    }
}

/// A sub-configuration's own validation error, kept as the [`ConfigError`]'s source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubConfigError {
    #[error(transparent)]
    Membership(crate::membership::ConfigError),
    #[error(transparent)]
    Registry(crate::registry::RegistryConfigError),
    #[error(transparent)]
    Nat(crate::nat::NatConfigError),
}

/// A configuration error: the part of [`ProxyConfig`], the field in it (and the element, for a list), and
/// what to do about it. Errors of sub-configurations with their own validator keep that error as the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config field `{}`: {fix}", self.path())]
pub struct ConfigError {
    pub part: ConfigPart,
    /// The field's name in its part (`max_entries` of `nat`, `scope_prefix` of a policy).
    pub field: &'static str,
    /// For a list: which element (the pool address, the seed, the policy rule; a policy error without one
    /// is about the default policy).
    pub index: Option<usize>,
    pub fix: String,
    #[source]
    pub source: Option<SubConfigError>,
}

impl ConfigError {
    /// An error found by a check without an error type of its own.
    pub fn field(part: ConfigPart, field: &'static str, fix: impl Into<String>) -> Self {
        ConfigError {
            part,
            field,
            index: None,
            fix: fix.into(),
            source: None,
        }
    }

    /// The same error about element `i` of a list field.
    pub fn at(mut self, i: usize) -> Self {
        self.index = Some(i);
        self
    }

    /// `part.field` or `part.field[i]`, with the names of [`ProxyConfig`]'s fields (`id`, `nat.max_entries`,
    /// `policies.rules[2].replicate`).
    pub fn path(&self) -> String {
        let part = match self.part {
            ConfigPart::Proxy => String::new(),
            p => format!("{}.", p.name()),
        };
        match (self.part, self.index) {
            (ConfigPart::Policies, Some(i)) => format!("policies.rules[{i}].{}", self.field),
            (ConfigPart::Policies, None) => format!("policies.default.{}", self.field),
            (_, Some(i)) => format!("{part}{}[{i}]", self.field),
            (_, None) => format!("{part}{}", self.field),
        }
    }
}

impl From<crate::membership::ConfigError> for ConfigError {
    fn from(e: crate::membership::ConfigError) -> Self {
        ConfigError {
            part: ConfigPart::Membership,
            field: e.field,
            index: None,
            fix: format!("{}; {}", e.problem, e.fix),
            source: Some(SubConfigError::Membership(e)),
        }
    }
}

impl From<crate::registry::RegistryConfigError> for ConfigError {
    fn from(e: crate::registry::RegistryConfigError) -> Self {
        ConfigError {
            part: ConfigPart::Registry,
            field: e.field,
            index: None,
            fix: e.fix.to_owned(),
            source: Some(SubConfigError::Registry(e)),
        }
    }
}

impl From<crate::nat::NatConfigError> for ConfigError {
    fn from(e: crate::nat::NatConfigError) -> Self {
        ConfigError {
            part: ConfigPart::Nat,
            field: e.field(),
            index: None,
            fix: e.fix(),
            source: Some(SubConfigError::Nat(e)),
        }
    }
}

/// Where a packet handed to [`Proxy::handle_overlay`] or [`Proxy::handle_host`] goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `PacketBuf::bytes()` as a UDP datagram from the overlay socket to this address.
    Overlay(SocketAddr),
    /// Write `PacketBuf::bytes()` (an IP packet) to the host side.
    Host,
    /// The proxy took the input (a control message, a registration); nothing to forward.
    Consumed,
    /// The input was dropped; the reason is counted.
    Drop(DropReason),
}

/// Why an input was dropped. Each has a counter (SPEC.md §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed,
    WrongVni,
    BadMac,
    Rejected,
    DataFromStranger,
    HopsExhausted,
    NoJap,
    NoTarget,
    NoBinding,
    PortsExhausted,
    NoRoute,
    TooBig,
    Unsupported,
    /// The receive buffer had too little headroom in front of the packet for the overlay header: a
    /// driver's buffer layout problem (see [`HEADROOM`]), not a bad packet.
    NoHeadroom,
}

/// What happened, for drivers, metrics and logs.
///
/// A fast path (XDP) is a cache of the core's decisions built from these events alone: each carries, or
/// names where to read without deciding anything, what the fast path installs — a cache entry and its JAPs'
/// overlay addresses ([`Proxy::cache_entry`], [`Proxy::jap_addr`]), a binding and how the core delivers its
/// packets ([`Delivery`]). A fast path that missed events ([`Proxy::events_lost`] moved) rebuilds itself
/// from [`Proxy::state_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A proxy's data frames are accepted from `addr` (it became usable, or changed address). When a member
    /// named by cached groups changes address, a [`Event::CacheInstalled`] follows for each of them.
    MemberUp { id: ProxyId, addr: SocketAddr },
    /// A proxy is suspected: no data goes to it until it refutes (its frames are still accepted).
    MemberSuspect { id: ProxyId },
    /// A proxy is down or left.
    MemberDown { id: ProxyId },
    /// The IAP cache entry of a group was installed or changed, or a JAP it names changed address (read it
    /// with [`Proxy::cache_entry`], the JAPs' addresses with [`Proxy::jap_addr`]).
    CacheInstalled { group: TransportAddr },
    /// The IAP cache entry of a group was removed.
    CacheRemoved { group: TransportAddr },
    /// A NAT binding exists: client packets keyed `forward` are delivered as `delivery` says (for NAT,
    /// rewritten to `reverse.reversed()`); the target's replies keyed `reverse` become `forward.reversed()`.
    NatCreated {
        id: BindingId,
        forward: FlowKey,
        reverse: FlowKey,
        delivery: Delivery,
    },
    /// A NAT binding is gone from both indexes.
    NatRemoved {
        id: BindingId,
        forward: FlowKey,
        reverse: FlowKey,
        reason: RemoveReason,
    },
    /// A target registered with this proxy.
    TargetUp {
        group: TransportAddr,
        service: TransportAddr,
    },
    /// A target of this proxy is gone (expired or deregistered).
    TargetDown {
        group: TransportAddr,
        service: TransportAddr,
    },
}

/// How the JAP delivers the client packets of a NAT binding. Decided in one place (the proxy's `delivery`),
/// which the JAP applies to every packet and [`Event::NatCreated`] carries to a fast path, so that the two
/// cannot differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Rewritten by the binding (SPEC.md §11.1), replies rewritten back.
    Nat,
    /// Rewritten like [`Delivery::Nat`], and copied to the group's other chosen targets (`replicate`, UDP
    /// only, SPEC.md §9.5): a fast path that cannot copy leaves these packets to the core.
    Replicate,
    /// Sent unchanged in a TO_TARGET data frame to this address, the target's IP at the overlay port
    /// (tunnel mode, SPEC.md §11.6); its replies come back to the core.
    Tunnel(SocketAddr),
}

counters! {
    /// Counters of the proxy's own decisions (the sub-machines have theirs; [`Proxy::for_each_counter`] walks all).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ProxyCounters("") {
        overlay_in,
        host_in,
        control_in,
        data_in,
        /// Data frames this proxy sent as IAP straight to a JAP (3-segment path).
        iap_to_jap,
        /// Data frames this proxy sent as IAP to a RAP (first packets, 4-segment path).
        iap_to_rap,
        /// Frames this proxy relayed as RAP to a JAP.
        rap_relayed,
        /// Packets this proxy delivered as JAP to a target, by NAT or tunnel.
        jap_delivered,
        /// Target replies this proxy sent back to clients.
        jap_replies,
        answers_sent,
        answers_rate_limited,
        invalidations_sent,
        icmp_too_big_sent,
        icmp_rate_limited,
        mss_clamped,
        replicas_sent,
        replicas_dropped,
        events_dropped,
        outbox_dropped,
        drop_malformed,
        drop_wrong_vni,
        drop_bad_mac,
        drop_rejected,
        drop_data_from_stranger,
        drop_hops_exhausted,
        drop_no_jap,
        drop_no_target,
        drop_no_binding,
        drop_ports_exhausted,
        drop_no_route,
        drop_too_big,
        drop_unsupported,
        drop_no_headroom,
    }
}

/// A control message waiting to be sealed and sent.
#[derive(Debug, Clone, Copy)]
enum Out {
    Answer {
        to: ProxyId,
        answer: Answer,
    },
    ReportAck {
        to: ProxyId,
        seq: u64,
    },
    Resolve {
        to: ProxyId,
        group: TransportAddr,
    },
    Invalidate {
        to: ProxyId,
        group: TransportAddr,
        reason: u8,
    },
}

/// A PIAS proxy. See the module documentation for the drain order.
#[derive(Debug)]
pub struct Proxy {
    cfg: ProxyConfig,
    me: ProxyId,
    sealer: Sealer,
    flow_key: SipKey,
    membership: Membership,
    ring: Ring,
    iap: IapCache,
    rap: RapTable,
    registry: Registry,
    nat: NatTable,
    reporter: Reporter,
    outbox: VecDeque<Out>,
    /// IP packets the proxy generated for the host side (ICMP errors), bounded.
    host_out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    answer_limit: LruMap<(ProxyId, TransportAddr), Instant>,
    invalidate_limit: LruMap<(ProxyId, TransportAddr), Instant>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    rap_sweep_at: Instant,
    /// While leaving and Left is not flooded yet: the latest time to flood it (SPEC.md §7.6).
    left_by: Option<Instant>,
    /// After [`Proxy::leave`]: when the drain ends and the proxy may stop (SPEC.md §7.6).
    drain_end: Option<Instant>,
    /// `handle_timeout` saw the drain's end: it leaves `poll_timeout` (the driver should stop, but a timer
    /// that stays in the past would spin one that does not).
    drain_seen: bool,
    counters: ProxyCounters,
    /// Live tunnel-mode registrations by target address: frames from these addresses are accepted (§11.6),
    /// and the JAP checks a binding's delivery mode only while any exist (the NAT-only fast path skips it).
    tunnel_targets: std::collections::BTreeMap<IpAddr, u32>,
}

/// The proxy's view of membership for RAP selection.
struct Topo<'a> {
    me: ProxyId,
    m: &'a Membership,
}

impl Topology for Topo<'_> {
    fn usable(&self, id: ProxyId) -> bool {
        id == self.me || self.m.is_usable(id)
    }

    fn distance_ms(&self, a: ProxyId, b: ProxyId) -> Option<f64> {
        let coord = |id: ProxyId| {
            if id == self.me {
                Some(self.m.my_coord())
            } else {
                self.m.get(id).map(|m| m.coord())
            }
        };
        Some(coord(a)?.distance_ms(&coord(b)?))
    }
}

const RAP_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const RAP_SWEEP_BUDGET: usize = 1024;
const HOST_OUT_CAPACITY: usize = 256;

impl Proxy {
    /// A proxy starting at `now`. It joins the overlay through `cfg.membership.seeds`.
    pub fn new(cfg: ProxyConfig, now: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let me = cfg.id;
        let ring_key = cfg.master_key.ring_key();
        let flow_key = cfg.master_key.flow_key();
        let sealer = Sealer::new(me, cfg.vni, cfg.master_key.overlay_key(), cfg.incarnation);
        let mut rng = crate::rng::SplitMix::new(cfg.seed);
        let own = ProxyRecord {
            id: me,
            incarnation: cfg.incarnation,
            version: 1,
            status: MemberStatus::Alive,
            addr: cfg.overlay_addr,
            coord: crate::coords::Coord::new().to_bytes(),
        };
        let membership = Membership::new(cfg.membership.clone(), own, ring_key, rng.next_u64(), now);
        let mut ring = Ring::new(ring_key, cfg.ring_vnodes);
        let _ = ring.insert(me);
        let mut cookie_secret = [0u8; 32];
        for chunk in cookie_secret.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        // `validate` ran both validators; what is left is the NAT's preallocation failing.
        let registry = Registry::new(
            cfg.registry.clone(),
            cfg.master_key.clone(),
            me,
            cookie_secret,
            rng.next_u64(),
        )?;
        let nat = NatTable::new(cfg.nat.clone(), rng.next_u64())?;
        Ok(Proxy {
            me,
            flow_key,
            iap: IapCache::new(cfg.iap, flow_key, rng.next_u64()),
            rap: RapTable::new(cfg.rap, rng.next_u64()),
            reporter: Reporter::new(cfg.reports, me, now),
            answer_limit: LruMap::new(4096, rng.next_u64()),
            invalidate_limit: LruMap::new(4096, rng.next_u64()),
            icmp_tokens: cfg.icmp_rate,
            icmp_refill: now,
            rap_sweep_at: now + RAP_SWEEP_INTERVAL,
            left_by: None,
            drain_end: None,
            drain_seen: false,
            outbox: VecDeque::with_capacity(cfg.outbox_capacity.min(65_536)),
            host_out: VecDeque::with_capacity(HOST_OUT_CAPACITY),
            events: VecDeque::with_capacity(cfg.event_capacity.min(65_536)),
            counters: ProxyCounters::default(),
            tunnel_targets: std::collections::BTreeMap::new(),
            sealer,
            membership,
            ring,
            registry,
            nat,
            cfg,
        })
    }

    // ----- getters -----

    pub fn id(&self) -> ProxyId {
        self.me
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn iap(&self) -> &IapCache {
        &self.iap
    }

    pub fn rap(&self) -> &RapTable {
        &self.rap
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn nat(&self) -> &NatTable {
        &self.nat
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Counters of the JAP's reports to RAPs.
    pub fn report_counters(&self) -> &ReporterCounters {
        self.reporter.counters()
    }

    /// The IAP cache entry of a group (for XDP map sync after `CacheInstalled`).
    pub fn cache_entry(&self, group: &TransportAddr) -> Option<&crate::iap::CacheEntry> {
        self.iap.get(group)
    }

    /// The overlay address the IAP sends a JAP's data frames to (this proxy's own for itself); `None` for a
    /// proxy it does not know. What a fast path writes for the JAPs of a cache entry.
    pub fn jap_addr(&self, id: ProxyId) -> Option<SocketAddr> {
        self.addr_of(id)
    }

    /// The flow hash every proxy computes for `flow` (SPEC.md §13.2).
    pub fn flow_hash(&self, flow: &FlowKey) -> u64 {
        flow_hash(&self.flow_key, flow)
    }

    /// The RAPs of a group, in order.
    pub fn raps_of(&self, group: &TransportAddr) -> crate::ring::Raps {
        let mut raps = crate::ring::Raps::new();
        self.ring.raps(group, self.cfg.rap_replicas, &mut raps);
        raps
    }

    // ----- input -----

    /// Handles a datagram received on the overlay socket from `from`. See [`Verdict`].
    pub fn handle_overlay(&mut self, now: Instant, from: SocketAddr, pkt: &mut PacketBuf<'_>) -> Verdict {
        self.counters.overlay_in += 1;
        let v = self.overlay_inner(now, from, pkt);
        self.settle(now, v);
        self.count_verdict(v)
    }

    /// Handles an IP packet read from the host side. See [`Verdict`].
    pub fn handle_host(&mut self, now: Instant, pkt: &mut PacketBuf<'_>) -> Verdict {
        self.counters.host_in += 1;
        let v = self.host_inner(now, pkt);
        self.settle(now, v);
        self.count_verdict(v)
    }

    /// Handles the passing of time. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        self.registry.handle_timeout(now);
        self.nat.handle_timeout(now);
        if now >= self.rap_sweep_at {
            let topo = Topo {
                me: self.me,
                m: &self.membership,
            };
            self.rap.sweep(now, RAP_SWEEP_BUDGET, &topo);
            self.rap_sweep_at = now + RAP_SWEEP_INTERVAL;
        }
        self.drain_seen |= self.is_drained(now);
        self.after_input(now);
    }

    /// Activity a fast path (XDP) saw on a NAT binding it served without the core: refreshes the binding's
    /// idle timer and counters, so expiry stays the core's decision. `false` if the binding is gone.
    pub fn touch_nat(
        &mut self,
        id: crate::nat::BindingId,
        dir: Direction,
        packets: u64,
        bytes: u64,
        now: Instant,
    ) -> bool {
        self.nat.touch(id, dir, packets, bytes, now)
    }

    /// Events lost anywhere on their way to [`Proxy::poll_event`]: in the proxy's queue or in any
    /// sub-machine's (membership, registry, NAT; cache changes go through the proxy's). It only grows; a fast
    /// path that sees it move since it last looked may hold stale entries and rebuilds from
    /// [`Proxy::state_events`].
    pub fn events_lost(&self) -> u64 {
        self.counters.events_dropped
            + self.membership.counters().events_dropped
            + self.registry.counters().events_dropped
            + self.nat.counters().events_dropped
    }

    /// The events that build a fast path's state from nothing, as if it had seen every event since the
    /// start: each member whose data frames are accepted ([`Event::MemberUp`], then [`Event::MemberSuspect`]
    /// if it is suspected), each IAP cache entry ([`Event::CacheInstalled`]), each NAT binding
    /// ([`Event::NatCreated`] with its delivery).
    pub fn state_events(&self) -> impl Iterator<Item = Event> + '_ {
        let m = &self.membership;
        let members = m
            .ring_members()
            .filter(move |id| *id != self.me)
            .filter_map(move |id| {
                let addr = m.get(id)?.addr();
                let suspect = (!m.is_usable(id)).then_some(Event::MemberSuspect { id });
                Some([Some(Event::MemberUp { id, addr }), suspect])
            })
            .flatten()
            .flatten();
        let groups = self
            .iap
            .iter()
            .map(|(group, _)| Event::CacheInstalled { group: *group });
        let bindings = self.nat.iter().map(move |b| Event::NatCreated {
            id: b.id,
            forward: b.forward,
            reverse: b.reverse,
            delivery: self.delivery(b.tag, &b.forward, b.reverse.src),
        });
        members.chain(groups).chain(bindings)
    }

    /// Starts a graceful leave (SPEC.md §7.6). First the proxy answers its targets' Refreshes and Registers
    /// with Draining, so they register again elsewhere (through anycast: the driver withdraws this proxy's
    /// routes now), while it stays their JAP with the registrations it holds (they no longer expire). Status
    /// Left — which takes it out of every RAP's and IAP's choice at once — is flooded at half the
    /// `drain_time` (at once if it holds no registration): flooded at once, it would leave a group whose
    /// targets were all here with no JAP until they registered elsewhere, and IAPs asking meanwhile would
    /// cache that empty answer for `negative_ttl`. It keeps forwarding for `drain_time` after this call:
    /// [`Proxy::poll_timeout`] includes the drain's end, and from then on [`Proxy::is_drained`] says the
    /// driver may stop. A second call changes nothing.
    pub fn leave(&mut self, now: Instant) {
        if self.registry.is_draining() {
            return;
        }
        self.registry.drain();
        self.left_by = Some(now + self.cfg.membership.drain_time / 2);
        self.drain_end = Some(now + self.cfg.membership.drain_time);
        self.after_input(now);
    }

    /// Whether [`Proxy::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.registry.is_draining()
    }

    /// Whether a graceful leave has drained: `drain_time` has passed since [`Proxy::leave`], and the driver
    /// may stop (dropping the TUN withdraws what routes are left). Always `false` before `leave`.
    pub fn is_drained(&self, now: Instant) -> bool {
        self.drain_end.is_some_and(|t| now >= t)
    }

    // ----- output -----

    /// Writes the next queued datagram or packet into `buf`; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(p) = self.host_out.front() {
            if p.len() <= buf.len() {
                let n = p.len();
                buf[..n].copy_from_slice(p);
                self.host_out.pop_front();
                return Some(Transmit {
                    dest: Dest::Host,
                    len: n,
                });
            }
            // Too small a buffer: leave it queued (the caller's buffer should be >= 1500 + headroom).
            return None;
        }
        if let Some(t) = self.registry.poll_transmit(buf) {
            return Some(t);
        }
        while let Some(out) = self.outbox.pop_front() {
            if let Some(t) = self.seal_out(out, buf) {
                return Some(t);
            }
        }
        if let Some(t) = self
            .reporter
            .poll_transmit(now, &mut self.sealer, &self.membership, buf)
        {
            return Some(t);
        }
        self.membership.poll_transmit(now, &mut self.sealer, buf)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Proxy::handle_timeout`] should next be called (or, while leaving, the drain ends: see
    /// [`Proxy::is_drained`]); `None` means never (nothing scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.membership.poll_timeout(),
            self.registry.poll_timeout(),
            self.nat.poll_timeout(),
            self.reporter.poll_timeout(),
            Some(self.rap_sweep_at),
            self.left_by,
            self.drain_end.filter(|_| !self.drain_seen),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Walks every counter of the proxy and its parts as `(name, value)` (names are Prometheus-ready), then
    /// the table sizes named in [`GAUGES`]. Every field of every counters struct is walked: the structs are
    /// defined with `counters!`, which generates their walk from the same list as their fields.
    pub fn for_each_counter(&self, mut f: impl FnMut(&'static str, u64)) {
        let f: &mut dyn FnMut(&'static str, u64) = &mut f;
        self.counters.for_each(f);
        self.iap.counters().for_each(f);
        self.rap.counters().for_each(f);
        let n = self.nat.counters();
        n.for_each(f);
        f("nat_expired", n.expired_total());
        self.reporter.counters().for_each(f);
        self.membership.counters().for_each(f);
        self.registry.counters().for_each(f);
        f("iap_entries", self.iap.len() as u64);
        f("rap_groups", self.rap.len() as u64);
        f("nat_bindings", self.nat.len() as u64);
        f("members", self.membership.len() as u64);
        f("registrations", self.registry.len() as u64);
    }

    /// Every name [`Proxy::for_each_counter`] walks, in its order, from the counters definitions alone (no
    /// proxy needed): what a metrics test compares the rendered output with.
    pub fn counter_names() -> impl Iterator<Item = &'static str> {
        [
            ProxyCounters::NAMES,
            crate::iap::IapCounters::NAMES,
            crate::rap::RapCounters::NAMES,
            crate::nat::NatCounters::NAMES,
            &["nat_expired"],
            ReporterCounters::NAMES,
            crate::membership::MembershipCounters::NAMES,
            crate::registry::RegistryCounters::NAMES,
            GAUGES,
        ]
        .into_iter()
        .flatten()
        .copied()
    }

    // ----- internals -----

    fn count_verdict(&mut self, v: Verdict) -> Verdict {
        if let Verdict::Drop(r) = v {
            let c = &mut self.counters;
            match r {
                DropReason::Malformed => c.drop_malformed += 1,
                DropReason::WrongVni => c.drop_wrong_vni += 1,
                DropReason::BadMac => c.drop_bad_mac += 1,
                DropReason::Rejected => c.drop_rejected += 1,
                DropReason::DataFromStranger => c.drop_data_from_stranger += 1,
                DropReason::HopsExhausted => c.drop_hops_exhausted += 1,
                DropReason::NoJap => c.drop_no_jap += 1,
                DropReason::NoTarget => c.drop_no_target += 1,
                DropReason::NoBinding => c.drop_no_binding += 1,
                DropReason::PortsExhausted => c.drop_ports_exhausted += 1,
                DropReason::NoRoute => c.drop_no_route += 1,
                DropReason::TooBig => c.drop_too_big += 1,
                DropReason::Unsupported => c.drop_unsupported += 1,
                DropReason::NoHeadroom => c.drop_no_headroom += 1,
            }
        }
        v
    }

    fn push_event(&mut self, e: Event) {
        queue_event(
            &mut self.events,
            self.cfg.event_capacity,
            &mut self.counters.events_dropped,
            e,
        );
    }

    /// A NAT binding's event, a created one with the delivery the JAP applies to its packets.
    fn push_nat_event(&mut self, ev: NatEvent) {
        let e = match ev {
            NatEvent::Created {
                id,
                forward,
                reverse,
                tag,
            } => Event::NatCreated {
                id,
                forward,
                reverse,
                delivery: self.delivery(tag, &forward, reverse.src),
            },
            NatEvent::Removed {
                id,
                forward,
                reverse,
                reason,
                ..
            } => Event::NatRemoved {
                id,
                forward,
                reverse,
                reason,
            },
        };
        self.push_event(e);
    }

    /// A member changed address: every cached group naming it is re-announced, so that a fast path takes
    /// the new address ([`Proxy::jap_addr`]) without keeping its own index. Only a usable member's address
    /// changes this way (any other member is in no entry: Suspect and Down remove it everywhere, answers
    /// install only usable JAPs). O(entries), on a rare event.
    fn push_cache_events_naming(&mut self, jap: ProxyId) {
        let Proxy {
            iap,
            events,
            cfg,
            counters,
            ..
        } = self;
        for group in iap.groups_naming(jap) {
            queue_event(
                events,
                cfg.event_capacity,
                &mut counters.events_dropped,
                Event::CacheInstalled { group },
            );
        }
    }

    fn push_out(&mut self, o: Out) {
        if self.outbox.len() >= self.cfg.outbox_capacity {
            self.counters.outbox_dropped += 1;
            return;
        }
        self.outbox.push_back(o);
    }

    fn addr_of(&self, id: ProxyId) -> Option<SocketAddr> {
        if id == self.me {
            return Some(self.cfg.overlay_addr);
        }
        self.membership.get(id).map(|m| m.addr())
    }

    fn seal_out(&mut self, out: Out, buf: &mut [u8]) -> Option<Transmit> {
        let (to, msg) = match out {
            Out::Answer { to, answer } => (to, Message::Answer(answer)),
            Out::ReportAck { to, seq } => (to, Message::ReportAck(ReportAck { acked_seq: seq })),
            Out::Resolve { to, group } => (to, Message::Resolve(Resolve { group })),
            Out::Invalidate { to, group, reason } => (to, Message::Invalidate(Invalidate { group, reason })),
        };
        let addr = self.addr_of(to)?;
        let len = self.sealer.seal(&msg, buf)?;
        Some(Transmit {
            dest: Dest::Overlay(addr),
            len,
        })
    }

    /// After a packet: a forwarded packet can only have created NAT bindings, so the fast path drains just
    /// those events; anything else (control, registrations, drops) runs the full settling.
    fn settle(&mut self, now: Instant, v: Verdict) {
        match v {
            Verdict::Overlay(_) | Verdict::Host => {
                while let Some(ev) = self.nat.poll_event() {
                    self.push_nat_event(ev);
                }
            }
            Verdict::Consumed | Verdict::Drop(_) => self.after_input(now),
        }
    }

    /// Applies what the sub-machines decided during an input: membership changes move the ring and the
    /// caches, registry changes move NAT bindings and reports.
    fn after_input(&mut self, now: Instant) {
        if let Some(t) = self.left_by
            && (now >= t || self.registry.is_empty())
        {
            self.left_by = None;
            self.membership.leave(now);
        }
        while let Some(ev) = self.membership.poll_event() {
            match ev {
                MemberEvent::Up { id, addr } => {
                    let _ = self.ring.insert(id);
                    self.push_event(Event::MemberUp { id, addr });
                }
                MemberEvent::AddrChanged { id, addr } => {
                    let _ = self.ring.insert(id);
                    self.push_event(Event::MemberUp { id, addr });
                    self.push_cache_events_naming(id);
                }
                MemberEvent::Alive { id } => {
                    let _ = self.ring.insert(id);
                    if let Some(addr) = self.membership.get(id).map(|m| m.addr()) {
                        self.push_event(Event::MemberUp { id, addr });
                    }
                }
                MemberEvent::Removed { .. } => continue,
                MemberEvent::Suspect { id } => {
                    self.drop_jap_everywhere(id);
                    self.push_event(Event::MemberSuspect { id });
                }
                MemberEvent::Down { id } | MemberEvent::Left { id } => {
                    self.ring.remove(id);
                    self.drop_jap_everywhere(id);
                    self.push_event(Event::MemberDown { id });
                }
            }
            self.reporter.ring_changed();
        }
        while let Some(ev) = self.registry.poll_event() {
            match ev {
                RegistryEvent::TargetUp {
                    group, service, mode, ..
                } => {
                    if mode == DeliveryMode::Tunnel {
                        *self.tunnel_targets.entry(service.ip).or_default() += 1;
                    }
                    self.push_event(Event::TargetUp { group, service });
                }
                RegistryEvent::TargetDown { group, service, .. } => {
                    if let Some(n) = self.tunnel_targets.get_mut(&service.ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.tunnel_targets.remove(&service.ip);
                        }
                    }
                    self.nat.remove_where_target(service.ip, Some(service.port));
                    self.push_event(Event::TargetDown { group, service });
                }
            }
        }
        while let Some(ev) = self.nat.poll_event() {
            self.push_nat_event(ev);
        }
        self.reporter
            .collect(now, &mut self.registry, &self.ring, self.cfg.rap_replicas);
        // Reports addressed to ourselves (we are one of the group's RAPs) are applied directly.
        for (jap, entry) in self.reporter.take_local() {
            self.rap.handle_report(now, jap, &entry);
        }
    }

    fn drop_jap_everywhere(&mut self, id: ProxyId) {
        let mut changes: smallvec::SmallVec<[CacheChange; 8]> = smallvec::SmallVec::new();
        let mut overflow = false;
        self.iap.remove_jap(id, |c| {
            if changes.len() < changes.inline_size() {
                changes.push(c);
            } else {
                overflow = true;
            }
        });
        for c in changes {
            self.push_cache_event(c);
        }
        if overflow {
            self.counters.events_dropped += 1;
        }
    }

    fn push_cache_event(&mut self, c: CacheChange) {
        match c {
            CacheChange::Installed(group) => self.push_event(Event::CacheInstalled { group }),
            CacheChange::Removed(group) => self.push_event(Event::CacheRemoved { group }),
        }
    }

    // ----- overlay input -----

    fn overlay_inner(&mut self, now: Instant, from: SocketAddr, pkt: &mut PacketBuf<'_>) -> Verdict {
        // One parse classifies the frame and, for data, gives the header and where the client packet starts.
        let data = match Frame::parse(pkt.bytes()) {
            Ok(Frame::Control(g)) => {
                if g.vni() != self.cfg.vni {
                    return Verdict::Drop(DropReason::WrongVni);
                }
                None
            }
            Ok(Frame::Data(d)) => Some((d.header(), d.inner_offset())),
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        let Some((hdr, inner_off)) = data else {
            self.counters.control_in += 1;
            let payload = &pkt.bytes()[pias_proto::geneve::HEADER_LEN..];
            return self.control(now, from, payload);
        };
        if hdr.vni != self.cfg.vni {
            return Verdict::Drop(DropReason::WrongVni);
        }
        self.counters.data_in += 1;
        // Data frames only from the overlay address of a live member (SPEC.md §4.1), or a tunnel-mode
        // target's reply from a registered target address (§11.6).
        let member = self.membership.id_by_addr(from).is_some() || from == self.cfg.overlay_addr;
        let target_reply = hdr.flags & flags::TO_TARGET != 0 && self.tunnel_targets.contains_key(&from.ip());
        if target_reply {
            return self.tunnel_reply(from, pkt, inner_off);
        }
        if !member {
            return Verdict::Drop(DropReason::DataFromStranger);
        }
        if hdr.flags & flags::TO_RAP != 0 {
            return self.rap_relay(now, hdr, pkt, inner_off);
        }
        if hdr.flags & flags::TO_TARGET != 0 {
            // TO_TARGET frames go to targets, not proxies: from a member they are misdirected.
            return Verdict::Drop(DropReason::Unsupported);
        }
        pkt.strip_front(inner_off);
        self.jap_deliver(now, hdr.ingress, pkt)
    }

    fn control(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Verdict {
        let Ok(cp) = ControlPacket::new_checked(payload) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if cp.verify(self.sealer.key()).is_err() {
            return Verdict::Drop(DropReason::BadMac);
        }
        let hdr = cp.header();
        if self.membership.accept(hdr.sender, hdr.seq, cp.kind()).is_err() {
            return Verdict::Drop(DropReason::Rejected);
        }
        let Ok(msg) = cp.message() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let sender = hdr.sender;
        match msg {
            Message::Probe(_)
            | Message::ProbeAck(_)
            | Message::Records(_)
            | Message::Digest(_)
            | Message::Pull(_)
            | Message::Join(_) => {
                self.membership.handle(now, from, sender, &msg);
            }
            Message::Report(list) => {
                self.rap.note_report_message();
                for e in list.iter() {
                    self.rap.handle_report(now, sender, &e);
                }
                self.push_out(Out::ReportAck {
                    to: sender,
                    seq: hdr.seq,
                });
            }
            Message::ReportAck(a) => self.reporter.handle_ack(a.acked_seq),
            Message::Resolve(r) => {
                self.answer(now, sender, &r.group, true);
            }
            Message::Answer(a) => {
                let m = &self.membership;
                let me = self.me;
                let c = self.iap.install(now, &a, |id| id == me || m.is_usable(id));
                self.push_cache_event(c);
            }
            Message::Invalidate(inv) => {
                if let Some(c) = self.iap.invalidate(&inv.group, sender) {
                    self.push_cache_event(c);
                }
            }
            _ => return Verdict::Drop(DropReason::Unsupported),
        }
        Verdict::Consumed
    }

    /// As RAP: selects the JAP set for `iap` and, if allowed by the rate limit (or `force`), queues the
    /// Answer (or installs it directly when the IAP is this proxy). Returns the set.
    fn answer(
        &mut self,
        now: Instant,
        iap: ProxyId,
        group: &TransportAddr,
        force: bool,
    ) -> ([AnswerEntry; MAX_ANSWER_ENTRIES], usize) {
        let mut out = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        let policy = self.cfg.policies.lookup(group).rap;
        let topo = Topo {
            me: self.me,
            m: &self.membership,
        };
        let n = self.rap.select(now, group, iap, policy, &topo, &mut out);
        let answer = Answer::new(*group, self.rap.ttl_ms(n), &out[..n]);
        if iap == self.me {
            let m = &self.membership;
            let me = self.me;
            let c = self.iap.install(now, &answer, |id| id == me || m.is_usable(id));
            self.push_cache_event(c);
            return (out, n);
        }
        let key = (iap, *group);
        let limited = self
            .answer_limit
            .peek(&key)
            .is_some_and(|t| now.saturating_since(*t) < self.cfg.answer_interval);
        if limited && !force {
            self.counters.answers_rate_limited += 1;
        } else {
            self.answer_limit.insert(key, now);
            self.counters.answers_sent += 1;
            self.push_out(Out::Answer { to: iap, answer });
        }
        (out, n)
    }

    /// As RAP: relays a frame to the JAP the IAP will pick for its flow (SPEC.md §9.2).
    fn rap_relay(
        &mut self,
        now: Instant,
        hdr: DataHeader,
        pkt: &mut PacketBuf<'_>,
        inner_off: usize,
    ) -> Verdict {
        if hdr.hops == 0 {
            return Verdict::Drop(DropReason::HopsExhausted);
        }
        let Some((flow, group)) = client_flow(&pkt.bytes()[inner_off..]) else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let want = hdr.flags & flags::WANT_ANSWER != 0;
        let (set, n) = self.answer_for_relay(now, hdr.ingress, &group, want);
        let Some(jap) = pick(&self.flow_key, &set[..n], flow_hash(&self.flow_key, &flow)) else {
            return Verdict::Drop(DropReason::NoJap);
        };
        self.counters.rap_relayed += 1;
        if jap == self.me {
            pkt.strip_front(inner_off);
            return self.jap_deliver(now, hdr.ingress, pkt);
        }
        let Some(addr) = self.addr_of(jap) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let relayed = DataHeader {
            vni: hdr.vni,
            flags: flags::VIA_RAP,
            hops: hdr.hops - 1,
            ingress: hdr.ingress,
        };
        rewrite_header(pkt, inner_off, &relayed);
        Verdict::Overlay(addr)
    }

    fn answer_for_relay(
        &mut self,
        now: Instant,
        iap: ProxyId,
        group: &TransportAddr,
        want: bool,
    ) -> ([AnswerEntry; MAX_ANSWER_ENTRIES], usize) {
        if want {
            return self.answer(now, iap, group, false);
        }
        let mut out = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        let policy = self.cfg.policies.lookup(group).rap;
        let topo = Topo {
            me: self.me,
            m: &self.membership,
        };
        let n = self.rap.select(now, group, iap, policy, &topo, &mut out);
        (out, n)
    }

    // ----- JAP delivery -----

    /// Delivers a client packet (already stripped of its overlay header) to a target of this JAP.
    fn jap_deliver(&mut self, now: Instant, ingress: ProxyId, pkt: &mut PacketBuf<'_>) -> Verdict {
        let len = pkt.len() as u32;
        let Ok(mut ip) = IpPacket::new_checked(pkt.bytes_mut()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // ICMP errors from the client about a reply: translate by the quoted flow (SPEC.md §11.5).
        if ip.is_icmp_error() {
            let Ok(quoted) = ip.icmp_error_inner_flow() else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let Some(tr) = self.nat.lookup_forward(&quoted.reversed(), len, now) else {
                return Verdict::Drop(DropReason::NoBinding);
            };
            if !translate_icmp_error(&mut ip, &tr) {
                return Verdict::Drop(DropReason::Malformed);
            }
            self.counters.jap_delivered += 1;
            return Verdict::Host;
        }
        let Some(flow) = ip.flow() else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let group = flow.dst_ta();
        let tcp = ip.tcp_flags().map(|f| TcpFlags(f.bits() as u8));
        let tr = match self.nat.lookup_forward(&flow, len, now) {
            Some(tr) => tr,
            None => {
                let opts = self.cfg.policies.lookup(&group).target;
                let fh = flow_hash(&self.flow_key, &flow);
                let Some(choice) = self.registry.choose_target(&group, &flow, fh, &opts) else {
                    self.invalidate(now, ingress, &group);
                    return Verdict::Drop(DropReason::NoTarget);
                };
                let t = choice.first();
                match self
                    .nat
                    .create(&flow, (t.service.ip, t.service.port), t.slot, now)
                {
                    Ok(tr) => tr,
                    Err(_) => return Verdict::Drop(DropReason::PortsExhausted),
                }
            }
        };
        if let Some(f) = tcp {
            self.nat.observe_tcp(tr.id, f, Direction::Forward, now);
        }
        let delivery = self.delivery(tr.tag, &flow, tr.dst);
        // A tunnel-mode target gets the client's packet unchanged, in a data frame (SPEC.md §11.6); the
        // binding still pins the flow to it.
        if let Delivery::Tunnel(to) = delivery {
            let h = DataHeader {
                vni: self.cfg.vni,
                flags: flags::TO_TARGET,
                hops: 0,
                ingress: self.me,
            };
            self.counters.jap_delivered += 1;
            return match encapsulate(pkt, &h) {
                Ok(()) => Verdict::Overlay(to),
                Err(r) => Verdict::Drop(r),
            };
        }
        if ip.set_src_dst(tr.src, tr.src_port, tr.dst, tr.dst_port).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        if delivery == Delivery::Replicate {
            let opts = self.cfg.policies.lookup(&group).target;
            self.replicate(&group, &flow, &opts, (tr.dst, tr.dst_port), pkt.bytes());
        }
        self.counters.jap_delivered += 1;
        Verdict::Host
    }

    /// How this JAP delivers the client packets of a binding: `tag` is its registration (the NAT tag),
    /// `forward` its client flow, `target` the address it pins the flow to. The one place this is decided:
    /// [`Proxy::jap_deliver`] applies it to each packet, [`Event::NatCreated`] carries it to a fast path.
    ///
    /// Tunnel mode only while the registration is a tunnel-mode target at the binding's address (a
    /// registration slot reused by another target does not redirect an old binding); `replicate` copies UDP
    /// packets only (SPEC.md §9.5: a TCP flow of such a group is plain NAT). The registry is consulted only
    /// while tunnel-mode registrations exist, which keeps the NAT-only hit path to the policy lookup.
    fn delivery(&self, tag: u32, forward: &FlowKey, target: IpAddr) -> Delivery {
        if !self.tunnel_targets.is_empty()
            && let Some(t) = self.registry.target(tag)
            && t.mode == DeliveryMode::Tunnel
            && t.service.ip == target
        {
            return Delivery::Tunnel(SocketAddr::new(target, OVERLAY_PORT));
        }
        if forward.proto == IpProtocol::Udp
            && self.cfg.policies.lookup(&forward.dst_ta()).target.replicate > 1
        {
            return Delivery::Replicate;
        }
        Delivery::Nat
    }

    /// `replicate` (SPEC.md §9.5): copies of a UDP packet, already translated for its primary target, go to
    /// the other chosen targets too, from the same pool endpoint. Replies only come back from the primary
    /// (the binding's target); a replica's reply finds no binding and is dropped, counted. The copies are
    /// queued for `poll_transmit` (bounded); this is the one data path that allocates, and only when the
    /// operator asked for replication.
    fn replicate(
        &mut self,
        group: &TransportAddr,
        flow: &FlowKey,
        opts: &crate::registry::TargetOptions,
        primary: (IpAddr, u16),
        translated: &[u8],
    ) {
        let fh = flow_hash(&self.flow_key, flow);
        let Some(choice) = self.registry.choose_target(group, flow, fh, opts) else {
            return;
        };
        for t in choice.iter() {
            if (t.service.ip, t.service.port) == primary || t.mode != DeliveryMode::Nat {
                continue;
            }
            if self.host_out.len() >= HOST_OUT_CAPACITY {
                self.counters.replicas_dropped += 1;
                continue;
            }
            let mut copy = translated.to_vec();
            if let Ok(mut ip) = IpPacket::new_checked(&mut copy[..])
                && ip.set_dst(t.service.ip, t.service.port).is_ok()
            {
                self.host_out.push_back(copy);
                self.counters.replicas_sent += 1;
            }
        }
    }

    /// A tunnel-mode target's reply in a TO_TARGET frame: forwarded to the client unchanged if its source
    /// is a group the sending target is registered for (a target cannot speak for another group).
    fn tunnel_reply(&mut self, from: SocketAddr, pkt: &mut PacketBuf<'_>, inner_off: usize) -> Verdict {
        let Ok(ip) = IpPacket::new_checked(&pkt.bytes()[inner_off..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Some(flow) = ip.flow() else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let group = flow.src_ta();
        let ok = self
            .registry
            .targets(&group)
            .any(|t| t.mode == DeliveryMode::Tunnel && t.service.ip == from.ip());
        if !ok {
            return Verdict::Drop(DropReason::Rejected);
        }
        pkt.strip_front(inner_off);
        self.counters.jap_replies += 1;
        Verdict::Host
    }

    fn invalidate(&mut self, now: Instant, ingress: ProxyId, group: &TransportAddr) {
        if ingress == self.me {
            if self.iap.invalidate(group, self.me).is_some() {
                self.push_event(Event::CacheRemoved { group: *group });
            }
            return;
        }
        let key = (ingress, *group);
        if self
            .invalidate_limit
            .peek(&key)
            .is_some_and(|t| now.saturating_since(*t) < self.cfg.invalidate_interval)
        {
            return;
        }
        self.invalidate_limit.insert(key, now);
        self.counters.invalidations_sent += 1;
        self.push_out(Out::Invalidate {
            to: ingress,
            group: *group,
            reason: Invalidate::REASON_NO_TARGETS,
        });
    }

    // ----- host input -----

    fn host_inner(&mut self, now: Instant, pkt: &mut PacketBuf<'_>) -> Verdict {
        // One parse decides the path and gives the IAP everything its hit path needs.
        let (dst, flow, syn) = {
            let Ok(ip) = IpPacket::new_checked(pkt.bytes()) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let flow = packet_flow(&ip);
            let dst = match (&flow, ip.is_icmp_error()) {
                (Some(f), false) => f.dst,
                _ => ip.dst_addr(),
            };
            (dst, flow, ip.tcp_flags().is_some_and(|f| f.syn()))
        };
        if let Some(f) = flow
            && f.proto == IpProtocol::Udp
            && f.dst_port == REGISTRATION_PORT
            && self.cfg.registration_addrs.contains(&dst)
        {
            let local = SocketAddr::new(dst, REGISTRATION_PORT);
            let from = SocketAddr::new(f.src, f.src_port);
            let Ok(ip) = IpPacket::new_checked(pkt.bytes()) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let payload = ip.l4_bytes().get(8..).unwrap_or(&[]);
            return match self.registry.handle_target_packet(now, local, from, payload) {
                Ok(()) => Verdict::Consumed,
                Err(_) => Verdict::Drop(DropReason::Rejected),
            };
        }
        if self.cfg.nat.pool.contains(&dst) {
            return self.jap_reply(now, pkt);
        }
        let Some(flow) = flow else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        self.iap_ingress(now, pkt, flow, syn)
    }

    /// A target's reply to the NAT pool: translate back and send to the client from the group address.
    fn jap_reply(&mut self, now: Instant, pkt: &mut PacketBuf<'_>) -> Verdict {
        let len = pkt.len() as u32;
        let inner_mtu = self.cfg.inner_mtu();
        let Ok(mut ip) = IpPacket::new_checked(pkt.bytes_mut()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if ip.is_icmp_error() {
            let Ok(quoted) = ip.icmp_error_inner_flow() else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let Some(tr) = self.nat.lookup_reverse(&quoted.reversed(), len, now) else {
                return Verdict::Drop(DropReason::NoBinding);
            };
            if !translate_icmp_error(&mut ip, &tr) {
                return Verdict::Drop(DropReason::Malformed);
            }
            self.counters.jap_replies += 1;
            return Verdict::Host;
        }
        let Some(flow) = ip.flow() else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let Some(tr) = self.nat.lookup_reverse(&flow, len, now) else {
            return Verdict::Drop(DropReason::NoBinding);
        };
        if let Some(f) = ip.tcp_flags() {
            self.nat
                .observe_tcp(tr.id, TcpFlags(f.bits() as u8), Direction::Reverse, now);
            // The client's segments travel the overlay: tell it the smaller MSS (SPEC.md §12).
            if f.syn() && ip.clamp_mss(mss_limit(inner_mtu, flow.src.is_ipv6())) {
                self.counters.mss_clamped += 1;
            }
        }
        if ip.set_src_dst(tr.src, tr.src_port, tr.dst, tr.dst_port).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters.jap_replies += 1;
        Verdict::Host
    }

    /// A client's packet to a group: the IAP's job.
    fn iap_ingress(&mut self, now: Instant, pkt: &mut PacketBuf<'_>, flow: FlowKey, syn: bool) -> Verdict {
        let inner_mtu = self.cfg.inner_mtu();
        let group = flow.dst_ta();
        if pkt.len() > inner_mtu && !may_fragment(pkt.bytes()) {
            self.too_big(now, pkt.bytes(), &group, inner_mtu);
            return Verdict::Drop(DropReason::TooBig);
        }
        if syn
            && let Ok(mut ip) = IpPacket::new_checked(pkt.bytes_mut())
            && ip.clamp_mss(mss_limit(inner_mtu, flow.src.is_ipv6()))
        {
            self.counters.mss_clamped += 1;
        }
        let fh = flow_hash(&self.flow_key, &flow);
        match self.iap.route(now, &group, fh) {
            Route::Jap { jap, resolve } => {
                if resolve && let Some(rap) = self.pick_rap(&group) {
                    if rap == self.me {
                        self.answer(now, self.me, &group, true);
                    } else {
                        self.push_out(Out::Resolve { to: rap, group });
                    }
                }
                self.counters.iap_to_jap += 1;
                if jap == self.me {
                    return self.jap_deliver(now, self.me, pkt);
                }
                let Some(addr) = self.addr_of(jap) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let h = DataHeader {
                    vni: self.cfg.vni,
                    flags: 0,
                    hops: INITIAL_HOPS,
                    ingress: self.me,
                };
                encapsulate(pkt, &h).map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr))
            }
            Route::ViaRap { want_answer } => {
                let Some(rap) = self.pick_rap(&group) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                self.counters.iap_to_rap += 1;
                if rap == self.me {
                    // We are the RAP: answer ourselves and relay directly.
                    let (set, n) = self.answer(now, self.me, &group, true);
                    let Some(jap) = pick(&self.flow_key, &set[..n], fh) else {
                        return Verdict::Drop(DropReason::NoJap);
                    };
                    self.counters.rap_relayed += 1;
                    if jap == self.me {
                        return self.jap_deliver(now, self.me, pkt);
                    }
                    let Some(addr) = self.addr_of(jap) else {
                        return Verdict::Drop(DropReason::NoRoute);
                    };
                    let h = DataHeader {
                        vni: self.cfg.vni,
                        flags: flags::VIA_RAP,
                        hops: INITIAL_HOPS - 1,
                        ingress: self.me,
                    };
                    return encapsulate(pkt, &h).map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr));
                }
                let Some(addr) = self.addr_of(rap) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let fl = flags::TO_RAP | if want_answer { flags::WANT_ANSWER } else { 0 };
                let h = DataHeader {
                    vni: self.cfg.vni,
                    flags: fl,
                    hops: INITIAL_HOPS,
                    ingress: self.me,
                };
                encapsulate(pkt, &h).map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr))
            }
            Route::NoJap => Verdict::Drop(DropReason::NoJap),
        }
    }

    /// The first Alive RAP of the group, else the first usable one.
    fn pick_rap(&self, group: &TransportAddr) -> Option<ProxyId> {
        let raps = self.raps_of(group);
        raps.iter()
            .copied()
            .find(|&r| r == self.me || self.membership.is_usable(r))
            .or_else(|| raps.first().copied())
    }

    fn too_big(&mut self, now: Instant, offending: &[u8], group: &TransportAddr, mtu: usize) {
        let elapsed = now.saturating_since(self.icmp_refill);
        if elapsed >= Duration::from_secs(1) {
            self.icmp_tokens = self.cfg.icmp_rate;
            self.icmp_refill = now;
        }
        if self.icmp_tokens == 0 || self.host_out.len() >= HOST_OUT_CAPACITY {
            self.counters.icmp_rate_limited += 1;
            return;
        }
        let Ok(ip) = IpPacket::new_checked(offending) else {
            return;
        };
        let mut out = vec![0u8; 1280];
        if let Ok(n) = emit_packet_too_big(&ip, group.ip, mtu as u32, &mut out) {
            out.truncate(n);
            self.icmp_tokens -= 1;
            self.counters.icmp_too_big_sent += 1;
            self.host_out.push_back(out);
        }
    }
}

/// The flow a client packet belongs to and its group. For an ICMP error from a client, the quoted packet
/// (a reply from the group) names the flow, reversed.
fn client_flow(bytes: &[u8]) -> Option<(FlowKey, TransportAddr)> {
    let ip = IpPacket::new_checked(bytes).ok()?;
    let flow = packet_flow(&ip)?;
    Some((flow, flow.dst_ta()))
}

fn packet_flow<T: AsRef<[u8]>>(ip: &IpPacket<T>) -> Option<FlowKey> {
    let flow = if ip.is_icmp_error() {
        ip.icmp_error_inner_flow().ok()?.reversed()
    } else {
        ip.flow()?
    };
    if !flow.proto.has_ports() && !matches!(flow.proto, IpProtocol::Icmp | IpProtocol::Icmpv6) {
        return None;
    }
    Some(flow)
}

/// Applies a binding's translation to an ICMP error about that flow (SPEC.md §11.5): the outer packet takes
/// the translation's addresses, the quoted packet — which travelled the other way — the reverse. Used in
/// both directions: client errors towards a target and target errors towards a client.
fn translate_icmp_error(ip: &mut IpPacket<&mut [u8]>, tr: &crate::nat::Translation) -> bool {
    ip.set_src_addr(tr.src).is_ok()
        && ip.set_dst_addr(tr.dst).is_ok()
        && ip.set_icmp_inner_src(tr.dst, tr.dst_port).is_ok()
        && ip.set_icmp_inner_dst(tr.src, tr.src_port).is_ok()
}

/// Whether an oversize packet may still be sent (IPv4 without DF: the outer datagram may be fragmented).
/// Reads the version nibble and the DF bit of a packet already checked by `IpPacket::new_checked`.
fn may_fragment(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b >> 4 == 4) && bytes.get(6).is_some_and(|f| f & 0x40 == 0)
}

/// The MSS that keeps a full segment within the overlay's inner MTU.
fn mss_limit(inner_mtu: usize, v6: bool) -> u16 {
    let hdr = if v6 { 60 } else { 40 };
    u16::try_from(inner_mtu.saturating_sub(hdr)).unwrap_or(u16::MAX)
}

/// The JAP for a flow from a JAP set, by the slot table every IAP builds (SPEC.md §13.3).
fn pick(key: &SipKey, set: &[AnswerEntry], fh: u64) -> Option<ProxyId> {
    let mut list = [(ProxyId::NONE, 0u32); MAX_JAPS];
    let n = set.len().min(MAX_JAPS);
    for (l, e) in list.iter_mut().zip(set) {
        *l = (e.jap, e.weight);
    }
    MaglevTable::build(key, &list[..n]).pick_id(fh)
}

/// Queues an event in a bounded queue; a full queue drops it, counted (`events_dropped`).
fn queue_event(events: &mut VecDeque<Event>, capacity: usize, dropped: &mut u64, e: Event) {
    if events.len() >= capacity {
        *dropped += 1;
        return;
    }
    events.push_back(e);
}

/// Prepends a data header in the headroom. Fails with `NoHeadroom` when the buffer has no room in front of
/// the packet, and `Malformed` when the packet is not IPv4 or IPv6.
fn encapsulate(pkt: &mut PacketBuf<'_>, h: &DataHeader) -> Result<(), DropReason> {
    let version = pkt.bytes().first().map(|b| b >> 4).unwrap_or(0);
    let head = pkt.prepend(DATA_HEADER_LEN).ok_or(DropReason::NoHeadroom)?;
    h.emit(version, head).map_err(|_| DropReason::Malformed)
}

/// Replaces a received frame's header (of `inner_off` bytes) by a fresh data header.
fn rewrite_header(pkt: &mut PacketBuf<'_>, inner_off: usize, h: &DataHeader) {
    pkt.strip_front(inner_off);
    let _ = encapsulate(pkt, h);
}

/// Names [`Proxy::for_each_counter`] walks that are current sizes, not running totals (Prometheus gauges).
pub const GAUGES: &[&str] = &[
    "iap_entries",
    "rap_groups",
    "nat_bindings",
    "members",
    "registrations",
];

/// Default overlay port, re-exported for drivers.
pub const DEFAULT_OVERLAY_PORT: u16 = OVERLAY_PORT;
