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
fn a_leave_drains_for_drain_time_and_the_timer_says_when() {
    let mut p = Proxy::new(cfg(), Instant::ZERO).unwrap();
    let drain = p.config().membership.drain_time;
    let t0 = Instant::from_secs(1);
    assert!(!p.is_drained(t0));
    p.leave(t0);
    let end = t0 + drain;
    assert!(p.poll_timeout().is_some_and(|t| t <= end));
    // Walk the timers: the drain's end is among them, and the proxy is drained exactly from then on.
    let mut now = t0;
    while let Some(t) = p.poll_timeout().filter(|&t| t <= end) {
        assert!(!p.is_drained(now));
        now = t.max(now);
        p.handle_timeout(now);
        if now == end {
            break;
        }
    }
    assert_eq!(now, end, "the drain's end is a deadline");
    assert!(p.is_drained(end));
    // Past it, the timer no longer points back at it.
    assert!(p.poll_timeout().is_none_or(|t| t > end));
    // A second leave changes nothing.
    p.leave(end);
    assert!(p.is_drained(end));
}
