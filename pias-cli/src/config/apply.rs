//! The `[timers]`, `[nat]`, `[limits]` and policy tables, translated into the core's `ProxyConfig`.

use super::*;

pub(super) fn apply_timers(t: &RawTimers, cfg: &mut ProxyConfig) {
    let m = &mut cfg.membership;
    let set = |d: &mut Duration, v: Option<u64>| {
        if let Some(v) = v {
            *d = ms(v);
        }
    };
    set(&mut m.probe_interval, t.probe_interval_ms);
    set(&mut m.suspect_timeout, t.suspect_timeout_ms);
    set(&mut m.flood_interval, t.flood_interval_ms);
    set(&mut m.ae_interval, t.ae_interval_ms);
    set(&mut m.join_retry, t.join_retry_ms);
    set(&mut m.drain_time, t.drain_time_ms);
    set(&mut m.tombstone_time, t.tombstone_time_ms);
    set(&mut cfg.replay_skew, t.replay_skew_ms);
    set(&mut cfg.iap.max_ttl, t.max_answer_ttl_ms);
    if let Some(v) = t.suspect_after {
        m.suspect_after = v;
    }
    set(&mut cfg.reports.delay, t.report_delay_ms);
    set(&mut cfg.reports.rto, t.report_rto_ms);
    set(&mut cfg.reports.refresh, t.report_refresh_ms);
    set(&mut cfg.rap.report_expiry, t.report_expiry_ms);
    set(&mut cfg.rap.cache_ttl, t.cache_ttl_ms);
    set(&mut cfg.rap.negative_ttl, t.negative_ttl_ms);
    set(&mut cfg.iap.stale_grace, t.stale_grace_ms);
    set(&mut cfg.iap.resolve_retry, t.resolve_retry_ms);
    set(&mut cfg.answer_interval, t.answer_interval_ms);
    set(&mut cfg.invalidate_interval, t.invalidate_interval_ms);
    set(&mut cfg.iap.drain_hold, t.drain_hold_ms);
    set(&mut cfg.announce.hold_down, t.announce_hold_down_ms);
    set(&mut cfg.announce.hold_up, t.announce_hold_up_ms);
    if let Some(v) = t.refresh_ms {
        cfg.registry.refresh_ms = v;
    }
    if let Some(v) = t.hold_ms {
        cfg.registry.hold_ms = v;
    }
    if let Some(v) = t.cookie_period_ms {
        cfg.registry.cookie_period_ms = v;
    }
    if let Some(v) = t.icmp_rate {
        cfg.icmp_rate = v;
    }
}

pub(super) fn apply_nat(n: &RawNat, cfg: &mut ProxyConfig) {
    let c = &mut cfg.nat;
    if let Some(v) = n.port_min {
        c.port_min = v;
    }
    if let Some(v) = n.port_max {
        c.port_max = v;
    }
    if let Some(v) = n.max_entries {
        c.max_entries = v;
    }
    for (slot, v) in [
        (&mut c.udp_timeout, n.udp_timeout_s),
        (&mut c.icmp_timeout, n.icmp_timeout_s),
        (&mut c.tcp_established_timeout, n.tcp_established_timeout_s),
        (&mut c.tcp_transitory_timeout, n.tcp_transitory_timeout_s),
        (&mut c.tcp_closed_timeout, n.tcp_closed_timeout_s),
        (&mut c.udp_transitory_timeout, n.udp_transitory_timeout_s),
        (&mut c.tcp_half_open_timeout, n.tcp_half_open_timeout_s),
    ] {
        if let Some(v) = v {
            *slot = Duration::from_secs(v);
        }
    }
}

pub(super) fn apply_nat_limits(n: &RawNat, cfg: &mut ProxyConfig) {
    let c = &mut cfg.nat;
    if let Some(v) = n.new_per_prefix {
        c.new_per_prefix = v;
    }
    if let Some(v) = n.prefix_len_v4 {
        c.prefix_len_v4 = v;
    }
    if let Some(v) = n.prefix_len_v6 {
        c.prefix_len_v6 = v;
    }
}

pub(super) fn apply_limits(l: &RawLimits, cfg: &mut ProxyConfig) {
    if let Some(v) = l.members {
        cfg.membership.max_members = v;
    }
    if let Some(v) = l.iap_cache_entries {
        cfg.iap.cache_entries = v;
    }
    if let Some(v) = l.rap_groups {
        cfg.rap.max_groups = v;
    }
    if let Some(v) = l.japs_per_group {
        cfg.rap.max_japs_per_group = v;
    }
    if let Some(v) = l.rap_groups_per_jap {
        cfg.rap.max_groups_per_jap = v;
    }
    if let Some(v) = l.registrations {
        cfg.registry.max_registrations = v;
    }
    if let Some(v) = l.targets_per_group {
        cfg.registry.max_targets_per_group = v;
    }
    if let Some(v) = l.capacity_flows_per_s {
        cfg.capacity_flows_per_s = Some(v);
    }
}

/// One `[[policy]]` (with `rule`) or `[default_policy]` (without).
pub(super) fn policy(
    at: &str,
    p: &RawPolicy,
    rule: bool,
) -> Result<(Option<GroupMatch>, GroupPolicy), ConfigError> {
    let rap = match p.rap.as_deref() {
        None => RapPolicy::default(),
        Some(s) => s.parse().map_err(|e: &str| ConfigError {
            field: format!("{at}.rap"),
            fix: format!("{s:?}: {e}"),
        })?,
    };
    let replicate = p.replicate.unwrap_or(0);
    let target = TargetOptions {
        exclude_sender: p.exclude_sender.unwrap_or(false),
        scope_prefix: p.scope_prefix,
        random: p.random.unwrap_or(false),
        replicate,
    };
    let gp = GroupPolicy { rap, target };
    if !rule {
        if p.group.is_some() || p.port.is_some() || p.proto.is_some() {
            return err(
                format!("{at}.group"),
                "the default policy matches every group: move group/port/proto to a [[policy]]",
            );
        }
        return Ok((None, gp));
    }
    let Some(g) = &p.group else {
        return err(
            format!("{at}.group"),
            "missing: the group prefix this rule covers, e.g. \"10.99.0.0/24\"",
        );
    };
    let pre: Prefix = g.parse().map_err(|e: String| ConfigError {
        field: format!("{at}.group"),
        fix: e,
    })?;
    let proto = match p.proto.as_deref() {
        None => None,
        Some("udp") => Some(IpProtocol::Udp),
        Some("tcp") => Some(IpProtocol::Tcp),
        Some(s) => return err(format!("{at}.proto"), format!("{s:?}: use \"udp\" or \"tcp\"")),
    };
    Ok((
        Some(GroupMatch {
            prefix: pre.addr,
            len: pre.len,
            port: p.port,
            proto,
        }),
        gp,
    ))
}
