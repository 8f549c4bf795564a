//! The NAT's configuration: pool, port range, bound, timeouts and budgets, and the errors that refuse one.

use core::net::{IpAddr, Ipv6Addr};
use core::time::Duration;

use super::*;

/// The NAT's configuration. Build it with [`NatConfig::with_pool`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// The NAT source addresses (IPv4 and/or IPv6), at most [`MAX_POOL_ADDRS`].
    pub pool: Vec<IpAddr>,
    /// Lowest pool port (and ICMP identifier). Default 1024.
    pub port_min: u16,
    /// Highest pool port. Default 65535.
    pub port_max: u16,
    /// Hard bound on live bindings, at most [`MAX_ENTRIES_LIMIT`]. Default 1,000,000.
    pub max_entries: u32,
    /// Idle timeout of assured UDP (replied, and active 2 s after creation). Default 120 s (RFC 4787 REQ-5;
    /// conntrack's `udp_timeout_stream`).
    pub udp_timeout: Duration,
    /// Idle timeout of UDP not yet assured (unreplied, or a one-shot exchange). Default 30 s (conntrack's
    /// `udp_timeout`): a spoofed new flow holds its port a quarter as long.
    pub udp_transitory_timeout: Duration,
    /// ICMP echo idle timeout. Default 60 s.
    pub icmp_timeout: Duration,
    /// TCP established idle timeout. Default 7440 s (RFC 5382).
    pub tcp_established_timeout: Duration,
    /// TCP transitory (answered but not established, or FIN both ways) idle timeout. Default 240 s (RFC 5382).
    pub tcp_transitory_timeout: Duration,
    /// TCP half-open (nothing seen from the target yet) idle timeout. Default 30 s: each SYN retransmission
    /// refreshes it, and a spoofed SYN towards a silent target holds its port no longer.
    pub tcp_half_open_timeout: Duration,
    /// TCP idle timeout after a RST. Default 10 s.
    pub tcp_closed_timeout: Duration,
    /// A hit moves a binding to the tail of its expiry list only if its last move is at least this old
    /// (otherwise it only updates its last-seen time, one write to a line already in cache). So
    /// `handle_timeout` may expire a binding up to this much after its deadline and eviction picks the earliest
    /// deadline within this much; lookups still miss exactly at the deadline. Zero keeps exact order. Default
    /// 1 s, at most 3600 s.
    pub touch_granularity: Duration,
    /// Most bindings one `handle_timeout` call expires. Default 1024.
    pub expiry_budget: u32,
    /// Most slab slots one `handle_timeout` call visits for target sweeps. Default 4096.
    pub sweep_budget: u32,
    /// Capacity of the event queue. Default 4096.
    pub event_capacity: u32,
    /// Most new (not yet assured or established) bindings at once from one client prefix; more are refused
    /// (`nat_prefix_refused`). Default 4096 (a /24 opening 136 one-shot flows per second for ever).
    pub new_per_prefix: u32,
    /// Length of an IPv4 client prefix for `new_per_prefix`. Default 24.
    pub prefix_len_v4: u8,
    /// Length of an IPv6 client prefix for `new_per_prefix`. Default 56 (a typical end site).
    pub prefix_len_v6: u8,
}

impl NatConfig {
    /// The defaults, with the given pool.
    pub fn with_pool(pool: Vec<IpAddr>) -> NatConfig {
        NatConfig {
            pool,
            port_min: 1024,
            port_max: 65535,
            max_entries: 1_000_000,
            udp_timeout: Duration::from_secs(120),
            udp_transitory_timeout: Duration::from_secs(30),
            icmp_timeout: Duration::from_secs(60),
            tcp_established_timeout: Duration::from_secs(7440),
            tcp_transitory_timeout: Duration::from_secs(240),
            tcp_half_open_timeout: Duration::from_secs(30),
            tcp_closed_timeout: Duration::from_secs(10),
            touch_granularity: Duration::from_secs(1),
            expiry_budget: 1024,
            sweep_budget: 4096,
            event_capacity: 4096,
            new_per_prefix: 4096,
            prefix_len_v4: 24,
            prefix_len_v6: 56,
        }
    }

    /// `n` distinct addresses of the IPv6 prefix `prefix/len` for a pool (`len` at most 120), spread over the
    /// prefix by a keyed hash of `seed`, never the all-zero host part (the subnet-router anycast address).
    /// A proxy given a whole prefix routes it all to itself and translates from these: `n` × the port range
    /// endpoints per protocol. Deterministic for a seed; `None` if `len` is above 120 or `n` is 0.
    pub fn addresses_in_prefix(prefix: Ipv6Addr, len: u8, n: usize, seed: u64) -> Option<Vec<IpAddr>> {
        if len > 120 || n == 0 {
            return None;
        }
        let host_mask = u128::MAX >> len;
        let net = u128::from(prefix) & !host_mask;
        let mut out: Vec<IpAddr> = Vec::with_capacity(n);
        let mut i = 0u64;
        while out.len() < n && i < 16 * n as u64 {
            let h = (u128::from(crate::rng::mix(seed ^ i)) << 64) | u128::from(crate::rng::mix(!seed ^ i));
            i += 1;
            let host = h & host_mask;
            let a = IpAddr::V6(Ipv6Addr::from(net | host));
            if host != 0 && !out.contains(&a) {
                out.push(a);
            }
        }
        Some(out)
    }

    /// The timeout of `class`.
    pub fn timeout(&self, class: TimeoutClass) -> Duration {
        match class {
            TimeoutClass::Udp => self.udp_timeout,
            TimeoutClass::Icmp => self.icmp_timeout,
            TimeoutClass::TcpEstablished => self.tcp_established_timeout,
            TimeoutClass::TcpTransitory => self.tcp_transitory_timeout,
            TimeoutClass::TcpClosed => self.tcp_closed_timeout,
            TimeoutClass::UdpTransitory => self.udp_transitory_timeout,
            TimeoutClass::TcpHalfOpen => self.tcp_half_open_timeout,
        }
    }

    /// Checks every field; [`ProxyConfig::validate`](crate::proxy::ProxyConfig::validate) calls it too.
    pub fn validate(&self) -> Result<(), NatConfigError> {
        if self.pool.is_empty() {
            return Err(NatConfigError::EmptyPool);
        }
        if self.pool.len() > MAX_POOL_ADDRS {
            return Err(NatConfigError::PoolTooLarge(self.pool.len()));
        }
        for (i, a) in self.pool.iter().enumerate() {
            if a.is_unspecified() || a.is_multicast() {
                return Err(NatConfigError::BadPoolAddress(*a));
            }
            if self.pool[..i].contains(a) {
                return Err(NatConfigError::DuplicatePoolAddress(*a));
            }
        }
        if self.port_min == 0 || self.port_min > self.port_max {
            return Err(NatConfigError::PortRange {
                min: self.port_min,
                max: self.port_max,
            });
        }
        if self.max_entries > MAX_ENTRIES_LIMIT {
            return Err(NatConfigError::MaxEntriesTooLarge(self.max_entries));
        }
        for (field, d) in [
            ("nat.udp_timeout", self.udp_timeout),
            ("nat.icmp_timeout", self.icmp_timeout),
            ("nat.tcp_established_timeout", self.tcp_established_timeout),
            ("nat.tcp_transitory_timeout", self.tcp_transitory_timeout),
            ("nat.tcp_closed_timeout", self.tcp_closed_timeout),
            ("nat.udp_transitory_timeout", self.udp_transitory_timeout),
            ("nat.tcp_half_open_timeout", self.tcp_half_open_timeout),
        ] {
            if d.is_zero() {
                return Err(NatConfigError::ZeroTimeout { field });
            }
        }
        if self.touch_granularity > Duration::from_secs(3600) {
            return Err(NatConfigError::TouchGranularity(self.touch_granularity));
        }
        for (field, v) in [
            ("nat.expiry_budget", self.expiry_budget),
            ("nat.sweep_budget", self.sweep_budget),
            ("nat.event_capacity", self.event_capacity),
            ("nat.new_per_prefix", self.new_per_prefix),
        ] {
            if v == 0 {
                return Err(NatConfigError::ZeroBudget { field });
            }
        }
        if self.prefix_len_v4 > 32 {
            return Err(NatConfigError::PrefixLen {
                field: "nat.prefix_len_v4",
                len: self.prefix_len_v4,
                max: 32,
            });
        }
        if self.prefix_len_v6 > 128 {
            return Err(NatConfigError::PrefixLen {
                field: "nat.prefix_len_v6",
                len: self.prefix_len_v6,
                max: 128,
            });
        }
        Ok(())
    }
}

/// A configuration the NAT refuses; each variant names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatConfigError {
    #[error("nat.pool is empty: list at least one IPv4 or IPv6 address routed to this proxy")]
    EmptyPool,
    #[error("nat.pool has {0} addresses: use at most 256")]
    PoolTooLarge(usize),
    #[error("nat.pool contains {0}: use unicast, specified addresses only")]
    BadPoolAddress(IpAddr),
    #[error("nat.pool lists {0} twice: remove the duplicate")]
    DuplicatePoolAddress(IpAddr),
    #[error("nat.port_min = {min}, nat.port_max = {max}: need 1 <= port_min <= port_max")]
    PortRange { min: u16, max: u16 },
    #[error("nat.max_entries = {0} exceeds 268435456: lower it")]
    MaxEntriesTooLarge(u32),
    #[error("{field} is zero: give a positive duration")]
    ZeroTimeout { field: &'static str },
    #[error("nat.touch_granularity = {0:?} exceeds 3600 s: lower it (1 s is plenty)")]
    TouchGranularity(Duration),
    #[error("{field} is zero: give a positive count")]
    ZeroBudget { field: &'static str },
    #[error("nat.max_entries = {0}: not enough memory to preallocate the table; lower it")]
    OutOfMemory(u32),
    #[error("{field} = {len} exceeds {max}: give a prefix length of the family")]
    PrefixLen { field: &'static str, len: u8, max: u8 },
}

impl NatConfigError {
    /// The [`NatConfig`] field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            NatConfigError::EmptyPool
            | NatConfigError::PoolTooLarge(_)
            | NatConfigError::BadPoolAddress(_)
            | NatConfigError::DuplicatePoolAddress(_) => "pool",
            NatConfigError::PortRange { .. } => "port_min",
            NatConfigError::MaxEntriesTooLarge(_) | NatConfigError::OutOfMemory(_) => "max_entries",
            NatConfigError::ZeroTimeout { field }
            | NatConfigError::ZeroBudget { field }
            | NatConfigError::PrefixLen { field, .. } => field.strip_prefix("nat.").unwrap_or(field),
            NatConfigError::TouchGranularity(_) => "touch_granularity",
        }
    }

    /// What to do about it, without the field's name (a front end names the field its own way).
    pub fn fix(&self) -> String {
        match self {
            NatConfigError::EmptyPool => {
                "is empty: list at least one IPv4 or IPv6 address routed to this proxy".to_owned()
            }
            NatConfigError::PoolTooLarge(n) => format!("has {n} addresses: use at most {MAX_POOL_ADDRS}"),
            NatConfigError::BadPoolAddress(a) => {
                format!("{a} is not a unicast address: use this proxy's own unicast addresses")
            }
            NatConfigError::DuplicatePoolAddress(a) => format!("{a} is listed twice: remove the duplicate"),
            NatConfigError::PortRange { min, max } => {
                format!(
                    "port_min = {min}, port_max = {max}: need 1 <= port_min <= port_max (default 1024..=65535)"
                )
            }
            NatConfigError::MaxEntriesTooLarge(n) => {
                format!("{n} exceeds {MAX_ENTRIES_LIMIT}: lower it (default 1000000)")
            }
            NatConfigError::ZeroTimeout { .. } => "is zero: give a positive duration".to_owned(),
            NatConfigError::TouchGranularity(d) => format!("{d:?} exceeds 3600 s: lower it (1 s is plenty)"),
            NatConfigError::ZeroBudget { .. } => "is zero: give a positive count".to_owned(),
            NatConfigError::OutOfMemory(n) => {
                format!("{n}: not enough memory to preallocate the table; lower it")
            }
            NatConfigError::PrefixLen { len, max, .. } => {
                format!("{len} exceeds {max}: give a prefix length of the family")
            }
        }
    }

    /// The pool address the error is about, if any.
    pub fn pool_address(&self) -> Option<IpAddr> {
        match self {
            NatConfigError::BadPoolAddress(a) | NatConfigError::DuplicatePoolAddress(a) => Some(*a),
            _ => None,
        }
    }
}
