//! Single-proxy tests: configuration errors, garbage input, and a proxy that is IAP, RAP and JAP at once.
//! Multi-proxy scenarios run in the `pias-sim` crate.

use super::*;
use pias_proto::build::udp_packet;

fn cfg() -> ProxyConfig {
    ProxyConfig::new(
        ProxyId(1),
        "10.0.0.1:6081".parse().unwrap(),
        MasterKey::from_bytes([3; 32]),
        vec!["10.200.0.1".parse().unwrap()],
        vec!["10.99.255.1".parse().unwrap()],
    )
}

#[test]
fn config_errors_name_the_field() {
    let mut c = cfg();
    c.id = ProxyId(0);
    assert_eq!(c.validate().unwrap_err().field, "id");
    let mut c = cfg();
    c.overlay_mtu = 1000;
    let e = Proxy::new(c, Instant::ZERO).unwrap_err();
    assert_eq!(e.field, "overlay_mtu");
    assert!(e.to_string().contains("1280"));
    let mut c = cfg();
    c.vni = 1 << 24;
    assert_eq!(c.validate().unwrap_err().field, "vni");
}

/// `ProxyConfig::validate` runs every sub-configuration's checks: one bad value per part is reported with
/// the part, the field, a fix, and (for sub-configurations with their own error type) that error as source.
#[test]
fn validate_runs_every_sub_check() {
    use std::error::Error as _;
    type Tweak = fn(&mut ProxyConfig);
    let cases: &[(Tweak, ConfigPart, &str, Option<usize>, &str)] = &[
        (
            |c| c.overlay_addr = "0.0.0.0:6081".parse().unwrap(),
            ConfigPart::Proxy,
            "overlay_addr",
            None,
            "overlay_addr",
        ),
        (
            |c| c.outbox_capacity = 0,
            ConfigPart::Proxy,
            "outbox_capacity",
            None,
            "outbox_capacity",
        ),
        (
            |c| c.membership.suspect_after = 0,
            ConfigPart::Membership,
            "suspect_after",
            None,
            "membership.suspect_after",
        ),
        (
            |c| c.membership.seeds = vec!["10.0.0.2:6081".parse().unwrap(), c.overlay_addr],
            ConfigPart::Membership,
            "seeds",
            Some(1),
            "membership.seeds[1]",
        ),
        (
            |c| c.iap.cache_entries = 0,
            ConfigPart::Iap,
            "cache_entries",
            None,
            "iap.cache_entries",
        ),
        (
            |c| c.rap.negative_ttl = Duration::ZERO,
            ConfigPart::Rap,
            "negative_ttl",
            None,
            "rap.negative_ttl",
        ),
        (
            |c| c.rap.report_expiry = c.reports.refresh,
            ConfigPart::Rap,
            "report_expiry",
            None,
            "rap.report_expiry",
        ),
        (
            |c| c.reports.rto = Duration::ZERO,
            ConfigPart::Reports,
            "rto",
            None,
            "reports.rto",
        ),
        (
            |c| c.registry.hold_ms = c.registry.refresh_ms,
            ConfigPart::Registry,
            "hold_ms",
            None,
            "registry.hold_ms",
        ),
        (
            |c| c.nat.max_entries = u32::MAX,
            ConfigPart::Nat,
            "max_entries",
            None,
            "nat.max_entries",
        ),
        (
            |c| c.nat.max_entries = 0,
            ConfigPart::Nat,
            "max_entries",
            None,
            "nat.max_entries",
        ),
        (
            |c| c.nat.udp_timeout = Duration::ZERO,
            ConfigPart::Nat,
            "udp_timeout",
            None,
            "nat.udp_timeout",
        ),
        (
            |c| c.nat.pool.push(c.nat.pool[0]),
            ConfigPart::Nat,
            "pool",
            Some(1),
            "nat.pool[1]",
        ),
        (
            |c| c.policies.default.target.replicate = 5,
            ConfigPart::Policies,
            "replicate",
            None,
            "policies.default.replicate",
        ),
        (
            |c| {
                let m = crate::policy::GroupMatch {
                    prefix: "10.99.0.0".parse().unwrap(),
                    len: 24,
                    port: None,
                    proto: None,
                };
                let mut p = crate::policy::GroupPolicy::default();
                p.target.scope_prefix = Some(33);
                c.policies.rules = vec![(m, crate::policy::GroupPolicy::default()), (m, p)];
            },
            ConfigPart::Policies,
            "scope_prefix",
            Some(1),
            "policies.rules[1].scope_prefix",
        ),
    ];
    for (tweak, part, field, index, path) in cases {
        let mut c = cfg();
        tweak(&mut c);
        let e = c.validate().unwrap_err();
        assert_eq!((e.part, e.field, e.index), (*part, *field, *index), "{e}");
        assert_eq!(e.path(), *path);
        assert!(e.to_string().contains(path) && !e.fix.is_empty(), "{e}");
        // Proxy::new reports the same error instead of a summary of its own.
        assert_eq!(Proxy::new(c, Instant::ZERO).unwrap_err(), e);
    }
    assert!(cfg().validate().is_ok());
    // Sub-configurations with their own error type keep it as the source.
    let mut c = cfg();
    c.membership.suspect_after = 0;
    let e = c.validate().unwrap_err();
    assert!(matches!(e.source, Some(SubConfigError::Membership(_))));
    assert!(e.source().is_some());
    let mut c = cfg();
    c.registry.hold_ms = 1;
    assert!(matches!(
        c.validate().unwrap_err().source,
        Some(SubConfigError::Registry(crate::registry::RegistryConfigError {
            field: "hold_ms",
            ..
        }))
    ));
    let mut c = cfg();
    c.nat.udp_timeout = Duration::ZERO;
    assert!(matches!(
        c.validate().unwrap_err().source,
        Some(SubConfigError::Nat(
            crate::nat::NatConfigError::ZeroTimeout { .. }
        ))
    ));
    // The proxy's own checks have none.
    let mut c = cfg();
    c.nat.max_entries = 0;
    assert!(c.validate().unwrap_err().source.is_none());
}

#[test]
fn garbage_is_counted_and_changes_nothing() {
    let mut p = Proxy::new(cfg(), Instant::ZERO).unwrap();
    let now = Instant::from_secs(1);
    let mut raw = [0u8; 512];
    for len in [0usize, 1, 7, 8, 20, 60, 200] {
        for fill in [0u8, 0xff, 0x45, 0x60] {
            raw[HEADROOM..HEADROOM + len].fill(fill);
            let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + len);
            assert!(matches!(
                p.handle_overlay(now, "10.0.0.9:6081".parse().unwrap(), &mut b),
                Verdict::Drop(_)
            ));
            let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + len);
            assert!(matches!(p.handle_host(now, &mut b), Verdict::Drop(_)));
        }
    }
    assert!(p.counters().drop_malformed > 0);
    assert_eq!(p.iap().len(), 0);
    assert_eq!(p.nat().len(), 0);
}

#[test]
fn a_lone_proxy_serves_a_group_as_iap_rap_and_jap() {
    // With one proxy every role is local: a client packet to a group without targets is dropped (no JAP),
    // and the answer is cached negatively.
    let mut p = Proxy::new(cfg(), Instant::ZERO).unwrap();
    let now = Instant::from_secs(1);
    let mut raw = [0u8; 512];
    let n = udp_packet(
        "10.1.0.1:5000".parse().unwrap(),
        "10.99.0.1:53".parse().unwrap(),
        b"q",
        &mut raw[HEADROOM..],
    )
    .unwrap();
    let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + n);
    assert_eq!(p.handle_host(now, &mut b), Verdict::Drop(DropReason::NoJap));
    let g = TransportAddr::new("10.99.0.1".parse().unwrap(), 53, IpProtocol::Udp);
    assert!(p.cache_entry(&g).is_some_and(|e| e.is_negative()));
    assert!(matches!(p.poll_event(), Some(Event::CacheInstalled { .. })));
}

#[test]
fn every_counter_is_walked_once_under_a_prometheus_safe_name() {
    let p = Proxy::new(cfg(), Instant::ZERO).unwrap();
    let mut walked = Vec::new();
    p.for_each_counter(|n, _| walked.push(n));
    // The walk is exactly what the definitions list: a counter added to a struct is exported.
    assert_eq!(walked, Proxy::counter_names().collect::<Vec<_>>());
    let fields = ProxyCounters::NAMES.len()
        + crate::iap::IapCounters::NAMES.len()
        + crate::rap::RapCounters::NAMES.len()
        + crate::nat::NatCounters::NAMES.len()
        + ReporterCounters::NAMES.len()
        + crate::membership::MembershipCounters::NAMES.len()
        + crate::registry::RegistryCounters::NAMES.len();
    // Plus the NAT expiry total and the gauges.
    assert_eq!(walked.len(), fields + 1 + GAUGES.len());
    let mut sorted = walked.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), walked.len(), "two counters share a name");
    for n in &walked {
        assert!(crate::counters::prometheus_safe(n), "{n}");
    }
    // Names operators and the lab tests read stay as they were.
    for n in [
        "reg_bad_mac",
        "drop_no_target",
        "iap_to_rap",
        "rap_relayed",
        "reports_sent",
        "member_acks",
        "nat_expired",
        "nat_created",
    ] {
        assert!(walked.contains(&n), "{n}");
    }
    // The target agent's counters follow the same rules.
    for n in crate::agent::AgentCounters::NAMES {
        assert!(
            crate::counters::prometheus_safe(n) && n.starts_with("agent_"),
            "{n}"
        );
    }
}

#[test]
fn a_buffer_without_headroom_is_not_counted_as_malformed() {
    let mut raw = [0u8; 512];
    let n = udp_packet(
        "10.1.0.1:5000".parse().unwrap(),
        "10.99.0.1:53".parse().unwrap(),
        b"q",
        &mut raw,
    )
    .unwrap();
    let h = DataHeader {
        vni: 1,
        flags: 0,
        hops: INITIAL_HOPS,
        ingress: ProxyId(1),
    };
    let mut b = PacketBuf::new(&mut raw, 0, n);
    assert_eq!(encapsulate(&mut b, &h), Err(DropReason::NoHeadroom));
    let mut p = Proxy::new(cfg(), Instant::ZERO).unwrap();
    p.count_verdict(Verdict::Drop(DropReason::NoHeadroom));
    assert_eq!(p.counters().drop_no_headroom, 1);
    assert_eq!(p.counters().drop_malformed, 0);
}
