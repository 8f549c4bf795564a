//! The proxy's configuration: [`ProxyConfig`] with SPEC.md §14's defaults, and its validation, whose
//! [`ConfigError`] names the field to fix (also inside the membership, registry and NAT parts).

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use pias_proto::ProxyId;
use pias_proto::auth::MasterKey;
use pias_proto::tunnel::DATA_HEADER_LEN;

use crate::filter::{IpPrefix, MAX_PREFIXES, OverlaySpace};
use crate::iap::IapConfig;
use crate::membership::MembershipConfig;
use crate::nat::NatConfig;
use crate::policy::PolicyTable;
use crate::rap::RapConfig;
use crate::registry::RegistryConfig;

use super::{AnnounceConfig, ReportConfig};

/// Everything a proxy is configured with. [`ProxyConfig::new`] fills SPEC.md §14's defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub id: ProxyId,
    /// This proxy's overlay address (unicast IP and UDP port, normally 6081).
    pub overlay_addr: SocketAddr,
    /// The overlay id, carried in every frame's VNI.
    pub vni: u32,
    pub master_key: MasterKey,
    /// The data-tag key epoch (SPEC.md §8.1): frames are tagged under this epoch's key and accepted under it
    /// or the previous one. Operators raise it on every proxy to rotate the data key.
    pub data_key_epoch: u32,
    /// Larger than any incarnation this proxy used before (drivers pass wall-clock seconds at start).
    pub incarnation: u32,
    /// The seed of the random choices that need no secrecy (probe phase, `random` target choice): it makes
    /// simulations reproducible and never derives a secret (those are [`crate::secrets::Secrets`], §8.1).
    pub seed: u64,
    /// The wall-clock time (Unix milliseconds) of the core's `Instant::ZERO`: the core reads no clock, so
    /// the driver tells it what its origin was (wall time = `wall_origin_ms` + `now`). Control messages are
    /// stamped with it and checked against it (SPEC.md §8.2).
    pub wall_origin_ms: u64,
    /// How far a received control message's timestamp may be from this proxy's wall clock (SPEC.md §8.2):
    /// the longest a replay into a forgotten window stays possible, and the clock disagreement tolerated.
    pub replay_skew: Duration,
    /// Registration anycast addresses (targets send to these, port 6082).
    pub registration_addrs: Vec<IpAddr>,
    /// The anycast prefixes this proxy serves (routed into its TUN): part of the overlay's own space, which
    /// client sources and reply destinations may not be in (SPEC.md §8.5). Empty by default (a front end
    /// that routes prefixes fills it).
    pub anycast_prefixes: Vec<IpPrefix>,
    /// The rest of the overlay's address space this proxy cannot know by itself: other proxies' NAT pools
    /// and any other overlay prefix (SPEC.md §8.5). Operator-given; empty by default.
    pub overlay_prefixes: Vec<IpPrefix>,
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
    /// New flows per second this proxy takes as JAP before it sheds (SPEC.md §9.6): above it, it asks the
    /// IAPs sending it new flows to send them elsewhere (Invalidate, draining) and reports itself full to
    /// the RAPs. `None` (the default): no capacity, no shedding, load reported as 0.
    pub capacity_flows_per_s: Option<u32>,
    /// ICMP errors the proxy may generate per second.
    pub icmp_rate: u32,
    /// Bound of the event queue.
    pub event_capacity: usize,
    /// Bound of the queue of control messages waiting for `poll_transmit`.
    pub outbox_capacity: usize,
    /// The health-gated announcement's timers (SPEC.md §7.7).
    pub announce: AnnounceConfig,
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
            data_key_epoch: 0,
            incarnation: 1,
            seed: u64::from(id.0),
            wall_origin_ms: 0,
            replay_skew: Duration::from_secs(30),
            registration_addrs,
            anycast_prefixes: Vec::new(),
            overlay_prefixes: Vec::new(),
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
            capacity_flows_per_s: None,
            icmp_rate: 100,
            event_capacity: 4096,
            outbox_capacity: 4096,
            announce: AnnounceConfig::default(),
        }
    }

    /// The largest client packet the overlay carries without fragmentation (SPEC.md §12).
    pub fn inner_mtu(&self) -> usize {
        let outer_ip = if self.overlay_addr.is_ipv4() { 20 } else { 40 };
        usize::from(self.overlay_mtu).saturating_sub(outer_ip + 8 + DATA_HEADER_LEN)
    }

    /// The overlay's address space as this proxy knows it (SPEC.md §8.5): its anycast prefixes,
    /// registration addresses and NAT pool, and the operator's `overlay_prefixes`.
    pub fn overlay_space(&self) -> OverlaySpace {
        OverlaySpace::new(
            self.anycast_prefixes
                .iter()
                .copied()
                .chain(self.registration_addrs.iter().map(|a| IpPrefix::host(*a)))
                .chain(self.nat.pool.iter().map(|a| IpPrefix::host(*a)))
                .chain(self.overlay_prefixes.iter().copied()),
        )
    }

    /// Checks the whole configuration — this struct's own fields and every sub-configuration's, through the
    /// sub-configuration's own validator — and reports the first bad field: which part it is in, its name
    /// there, and the fix. This is the one validation path: [`Proxy::new`](super::Proxy::new) runs it, and
    /// front ends (the CLI's TOML) only translate the field into their own key.
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
        if self.capacity_flows_per_s == Some(0) {
            return Err(ConfigError::field(
                P,
                "capacity_flows_per_s",
                "must be at least 1 new flow per second, or unset for no capacity (the default)",
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
        for (field, list) in [
            ("anycast_prefixes", &self.anycast_prefixes),
            ("overlay_prefixes", &self.overlay_prefixes),
        ] {
            validate_prefixes(field, list)?;
        }
        self.membership.validate().map_err(ConfigError::from)?;
        // A healthy proxy's round trips come every probe interval; a hold-down within a few of them would
        // withdraw it for ordinary probe losses.
        if self.announce.hold_down < self.membership.probe_interval * (self.membership.suspect_after + 1) {
            return Err(ConfigError::field(
                P,
                "announce_hold_down",
                "must be at least (suspect_after + 1) probe intervals (default 2 s)",
            ));
        }
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
        if self.rap.cache_ttl > self.iap.max_ttl {
            return Err(ConfigError::field(
                ConfigPart::Rap,
                "cache_ttl",
                "must not exceed iap.max_ttl (default 300 s): IAPs cap what an Answer's TTL may say",
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
        // After the membership's own checks, so a bad tombstone_time is reported as itself.
        if self.replay_skew.is_zero() || self.replay_skew >= self.membership.tombstone_time {
            return Err(ConfigError::field(
                P,
                "replay_skew",
                "must be above 0 and below membership.tombstone_time (30 s is the default): a Join replayed \
                 after its sender's tombstone expired must be stale",
            ));
        }
        Ok(())
    }
}
/// A list of overlay prefixes: bounded, each a real prefix of its family, none so wide that every client
/// would be refused, and none martian (the martian ranges are refused anyway; listing one is a mistake).
fn validate_prefixes(field: &'static str, list: &[IpPrefix]) -> Result<(), ConfigError> {
    if list.len() > MAX_PREFIXES {
        return Err(ConfigError::field(
            ConfigPart::Proxy,
            field,
            format!("at most {MAX_PREFIXES} prefixes"),
        ));
    }
    for (i, p) in list.iter().enumerate() {
        let max = if p.addr.is_ipv4() { 32 } else { 128 };
        if p.len > max {
            return Err(ConfigError::field(
                ConfigPart::Proxy,
                field,
                format!("{}/{} is longer than the address (at most /{max})", p.addr, p.len),
            )
            .at(i));
        }
        if p.len < 8 {
            return Err(ConfigError::field(
                ConfigPart::Proxy,
                field,
                format!("{p} is shorter than /8: it would refuse most of the Internet's clients"),
            )
            .at(i));
        }
        if crate::filter::is_martian(p.network()) {
            return Err(ConfigError::field(
                ConfigPart::Proxy,
                field,
                format!(
                    "{p} is a loopback, link-local, multicast or reserved range: list overlay addresses only"
                ),
            )
            .at(i));
        }
    }
    Ok(())
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
