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
