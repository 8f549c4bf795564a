//! Per-group selection policies (SPEC.md §9.5), from the operator's configuration.
//!
//! Every proxy holds the same table, so the RAPs of a group agree on how to pick JAPs and every JAP on how to
//! pick targets. Rules are tried in order; the first whose prefix, port and protocol match the group wins,
//! else the default applies. Lookup walks a short list and allocates nothing.

use core::net::IpAddr;

use pias_proto::{IpProtocol, TransportAddr};

use crate::rap::RapPolicy;
use crate::registry::TargetOptions;

/// How one group's JAPs and targets are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupPolicy {
    pub rap: RapPolicy,
    pub target: TargetOptions,
}

impl GroupPolicy {
    /// Checks the options; `rule` is the match of a rule (`None`: the default policy).
    fn validate(&self, rule: Option<&GroupMatch>) -> Result<(), crate::proxy::ConfigError> {
        use crate::proxy::{ConfigError, ConfigPart::Policies};
        if usize::from(self.target.replicate) > crate::registry::MAX_REPLICAS {
            return Err(ConfigError::field(
                Policies,
                "replicate",
                "must be 0..=4 (0 or 1: one target)",
            ));
        }
        let max = match rule {
            Some(m) if m.prefix.is_ipv4() => 32,
            _ => 128,
        };
        if self.target.scope_prefix.is_some_and(|n| n > max) {
            let fix = if max == 32 {
                "must be 0..=32 for an IPv4 group"
            } else {
                "must be 0..=128"
            };
            return Err(ConfigError::field(Policies, "scope_prefix", fix));
        }
        if let Some(m) = rule
            && m.len > if m.prefix.is_ipv4() { 32 } else { 128 }
        {
            return Err(ConfigError::field(
                Policies,
                "prefix",
                "the prefix length must be 0..=32 (IPv4) or 0..=128 (IPv6)",
            ));
        }
        Ok(())
    }
}

/// Which groups a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMatch {
    /// Group addresses inside `prefix/len`.
    pub prefix: IpAddr,
    pub len: u8,
    /// Only this port, if set.
    pub port: Option<u16>,
    /// Only this protocol, if set.
    pub proto: Option<IpProtocol>,
}

impl GroupMatch {
    /// Whether `g` is covered.
    pub fn matches(&self, g: &TransportAddr) -> bool {
        if self.port.is_some_and(|p| p != g.port) || self.proto.is_some_and(|p| p != g.proto) {
            return false;
        }
        prefix_match(self.prefix, self.len, g.ip)
    }
}

/// Whether `addr` lies in `prefix/len` (families must agree; `len` beyond the address width matches exactly).
pub fn prefix_match(prefix: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (prefix, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(p) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            (u128::from(p) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

/// The ordered rule list with a default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyTable {
    pub rules: Vec<(GroupMatch, GroupPolicy)>,
    pub default: GroupPolicy,
}

impl PolicyTable {
    /// Checks every rule and the default; the error's index is the rule's (none: the default).
    pub fn validate(&self) -> Result<(), crate::proxy::ConfigError> {
        let rules = self.rules.iter().map(|(m, p)| (Some(m), p));
        for (i, (m, p)) in rules.chain([(None, &self.default)]).enumerate() {
            let at = |e: crate::proxy::ConfigError| if m.is_some() { e.at(i) } else { e };
            p.validate(m).map_err(at)?;
        }
        Ok(())
    }

    /// The policy of a group.
    pub fn lookup(&self, g: &TransportAddr) -> GroupPolicy {
        self.rules
            .iter()
            .find(|(m, _)| m.matches(g))
            .map(|(_, p)| *p)
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins() {
        let dns = GroupPolicy {
            rap: RapPolicy::Load,
            ..GroupPolicy::default()
        };
        let web = GroupPolicy {
            rap: RapPolicy::Affinity,
            ..GroupPolicy::default()
        };
        let t = PolicyTable {
            rules: vec![
                (
                    GroupMatch {
                        prefix: "10.9.0.0".parse().unwrap(),
                        len: 16,
                        port: Some(53),
                        proto: None,
                    },
                    dns,
                ),
                (
                    GroupMatch {
                        prefix: "10.9.1.0".parse().unwrap(),
                        len: 24,
                        port: None,
                        proto: Some(IpProtocol::Tcp),
                    },
                    web,
                ),
            ],
            default: GroupPolicy::default(),
        };
        let g = |ip: &str, port, proto| TransportAddr::new(ip.parse().unwrap(), port, proto);
        assert_eq!(t.lookup(&g("10.9.1.1", 53, IpProtocol::Tcp)).rap, RapPolicy::Load);
        assert_eq!(
            t.lookup(&g("10.9.1.1", 80, IpProtocol::Tcp)).rap,
            RapPolicy::Affinity
        );
        assert_eq!(
            t.lookup(&g("10.9.1.1", 80, IpProtocol::Udp)).rap,
            RapPolicy::Proximity
        );
        assert_eq!(
            t.lookup(&g("fd00::1", 53, IpProtocol::Udp)).rap,
            RapPolicy::Proximity
        );
        assert!(prefix_match("::".parse().unwrap(), 0, "fd00::1".parse().unwrap()));
        assert!(!prefix_match(
            "10.0.0.0".parse().unwrap(),
            8,
            "11.0.0.1".parse().unwrap()
        ));
    }
}
