//! The core's configuration errors in this file's terms: which TOML key sets the field the core names.

use super::*;

/// The config-file key of a field the core's validation names (`ConfigError::part` and `field`). Fields no
/// key sets (built-in bounds) keep the core's name, which then reads `registry.max_tombstones`.
pub(super) fn toml_key(e: &CoreConfigError) -> String {
    use ConfigPart as P;
    let indexed = |key: &str| match e.index {
        Some(i) => format!("{key}[{i}]"),
        None => key.to_owned(),
    };
    let key = match (e.part, e.field) {
        (P::Proxy, "id") => "proxy.id",
        (P::Proxy, "overlay_addr") => "proxy.overlay",
        (P::Proxy, "vni") => "proxy.vni",
        (P::Proxy, "overlay_mtu") => "proxy.overlay_mtu",
        (P::Proxy, "registration_addrs") => return indexed("proxy.registration"),
        (P::Proxy, "anycast_prefixes") => return indexed("proxy.anycast_prefixes"),
        (P::Proxy, "overlay_prefixes") => return indexed("proxy.overlay_prefixes"),
        (P::Proxy, "icmp_rate") => "timers.icmp_rate",
        (P::Proxy, "answer_interval") => "timers.answer_interval_ms",
        (P::Proxy, "invalidate_interval") => "timers.invalidate_interval_ms",
        (P::Proxy, "announce_hold_down") => "timers.announce_hold_down_ms",
        (P::Proxy, "capacity_flows_per_s") => "limits.capacity_flows_per_s",
        (P::Proxy, "replay_skew") => "timers.replay_skew_ms",
        (P::Membership, "seeds") => return indexed("proxy.seeds"),
        (P::Membership, "max_members") => "limits.members",
        (P::Membership, "suspect_after") => "timers.suspect_after",
        (
            P::Membership,
            f @ ("probe_interval" | "suspect_timeout" | "flood_interval" | "ae_interval" | "join_retry"
            | "drain_time" | "tombstone_time"),
        ) => return format!("timers.{f}_ms"),
        (P::Iap, "cache_entries") => "limits.iap_cache_entries",
        (P::Iap, f @ ("stale_grace" | "resolve_retry")) => return format!("timers.{f}_ms"),
        (P::Iap, "max_ttl") => "timers.max_answer_ttl_ms",
        (P::Iap, "drain_hold") => "timers.drain_hold_ms",
        (P::Rap, "max_groups") => "limits.rap_groups",
        (P::Rap, "max_japs_per_group") => "limits.japs_per_group",
        (P::Rap, "max_groups_per_jap") => "limits.rap_groups_per_jap",
        (P::Rap, f @ ("report_expiry" | "cache_ttl" | "negative_ttl")) => return format!("timers.{f}_ms"),
        (P::Reports, f @ ("delay" | "rto" | "refresh")) => return format!("timers.report_{f}_ms"),
        (P::Registry, "max_registrations") => "limits.registrations",
        (P::Registry, "max_targets_per_group") => "limits.targets_per_group",
        (P::Registry, f @ ("refresh_ms" | "hold_ms" | "cookie_period_ms")) => return format!("timers.{f}"),
        (P::Nat, "pool") => return indexed("proxy.nat_pool"),
        (
            P::Nat,
            f @ ("port_min" | "port_max" | "max_entries" | "new_per_prefix" | "prefix_len_v4"
            | "prefix_len_v6"),
        ) => return format!("nat.{f}"),
        (
            P::Nat,
            f @ ("udp_timeout"
            | "icmp_timeout"
            | "tcp_established_timeout"
            | "tcp_transitory_timeout"
            | "tcp_closed_timeout"
            | "udp_transitory_timeout"
            | "tcp_half_open_timeout"),
        ) => return format!("nat.{f}_s"),
        (P::Policies, f) => {
            return match e.index {
                Some(i) => format!("policy[{i}].{f}"),
                None => format!("default_policy.{f}"),
            };
        }
        _ => return e.path(),
    };
    key.to_owned()
}
