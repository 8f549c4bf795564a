//! Ingress and egress filtering (SPEC.md §8.5) on a lone proxy: client sources in the overlay's space or
//! martian are dropped at the IAP and again at the JAP, replies never go back into the overlay, and targets
//! in the overlay's space get nothing. The one-packet loop (`G:7 → G:7` to a UDP echo group) ends at once.

use super::*;
use crate::filter::{IpPrefix, OverlaySpace};

const GROUP: &str = "10.99.0.7:7";
const ECHO: &str = "10.2.0.1:7";

fn pre(s: &str) -> IpPrefix {
    let (a, l) = s.split_once('/').unwrap();
    IpPrefix::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

/// A lone proxy serving the lab's echo group, with the lab's overlay space: anycast `10.99.0.0/24`, its
/// registration address `10.99.255.1`, its pool `10.200.0.1`, and the other proxies' pools `10.98.0.0/16`.
fn echo_proxy() -> (Lone, TransportAddr) {
    let mut l = Lone::new(|c| {
        c.anycast_prefixes = vec![pre("10.99.0.0/24"), pre("fd99::/64")];
        c.overlay_prefixes = vec![pre("10.98.0.0/16")];
    });
    let g = group_at(GROUP, IpProtocol::Udp);
    l.register(g, ECHO.parse().unwrap(), DeliveryMode::Nat);
    l.drain_events();
    (l, g)
}

/// What the UDP echo target does with a packet the JAP delivered: sends it back to its source.
fn echo(pkt: &[u8]) -> Vec<u8> {
    let ip = IpPacket::new_checked(pkt).unwrap();
    let f = ip.flow().unwrap();
    let mut out = vec![0u8; 512];
    let n = udp_packet(
        SocketAddr::new(f.dst, f.dst_port),
        SocketAddr::new(f.src, f.src_port),
        &ip.l4_bytes()[8..],
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

/// Runs the loop: the client's packet, then as long as the proxy writes packets to the host, the echo
/// target's answer to each delivery and the kernel routing each reply whose destination is routed into the
/// TUN back into it. Returns how many packets reached the target.
fn run_loop(l: &mut Lone, first: Vec<u8>, space: &OverlaySpace) -> usize {
    let mut at_target = 0;
    let mut next = Some(first);
    for _ in 0..20 {
        let Some(pkt) = next.take() else { break };
        let (v, out, _) = l.client(pkt.len(), &pkt);
        if v != Verdict::Host {
            break;
        }
        let dst = IpPacket::new_checked(&out[..]).unwrap().dst_addr();
        if dst == ECHO.parse::<SocketAddr>().unwrap().ip() {
            at_target += 1;
            next = Some(echo(&out));
        } else if space.contains(dst) {
            // A reply to an address routed into the TUN: the kernel hands it back to the proxy.
            next = Some(out);
        }
    }
    at_target
}

fn udp_from(from: &str, to: &str) -> Vec<u8> {
    let mut pkt = vec![0u8; 256];
    let n = udp_packet(from.parse().unwrap(), to.parse().unwrap(), b"x", &mut pkt).unwrap();
    pkt.truncate(n);
    pkt
}

#[test]
fn overlay_and_martian_sources_are_dropped_at_the_iap() {
    let (mut l, g) = echo_proxy();
    let cases = [
        ("10.99.0.7:7", DropReason::OverlaySource),
        ("10.99.0.200:5000", DropReason::OverlaySource),
        ("10.99.255.1:6082", DropReason::OverlaySource),
        ("10.200.0.1:1024", DropReason::OverlaySource),
        ("10.98.3.1:1024", DropReason::OverlaySource),
        ("127.0.0.1:5000", DropReason::MartianSource),
        ("0.0.0.0:5000", DropReason::MartianSource),
        ("169.254.0.9:5000", DropReason::MartianSource),
        ("224.0.0.251:5353", DropReason::MartianSource),
        ("255.255.255.255:5000", DropReason::MartianSource),
    ];
    for (from, why) in cases {
        let (v, _, ev) = l.udp(from, &g);
        assert_eq!(v, Verdict::Drop(why), "{from}");
        assert!(ev.is_empty(), "{from}: a refused packet changes nothing");
    }
    for (from, to) in [
        ("[::1]:5000", "[fd99::7]:7"),
        ("[fe80::1]:5000", "[fd99::7]:7"),
        ("[ff02::1]:5000", "[fd99::7]:7"),
        ("[::ffff:10.1.0.1]:5000", "[fd99::7]:7"),
        ("[::]:5000", "[fd99::7]:7"),
    ] {
        let pkt = udp_from(from, to);
        assert_eq!(
            l.client(pkt.len(), &pkt).0,
            Verdict::Drop(DropReason::MartianSource),
            "{from}"
        );
    }
    let (v, _, _) = l.udp("[fd99::1]:5000", &group_at("[fd99::7]:7", IpProtocol::Udp));
    assert_eq!(v, Verdict::Drop(DropReason::OverlaySource));
    let c = *l.p.counters();
    assert_eq!(c.drop_overlay_source, 6);
    assert_eq!(c.drop_martian_source, 10);
    assert_eq!((c.jap_delivered, c.iap_to_jap, c.iap_to_rap), (0, 0, 0));
    assert_eq!(l.p.nat().len(), 0);
    assert_eq!(l.p.iap().len(), 0, "no resolution for a refused packet");
    // Every counter is exported.
    let names: Vec<_> = Proxy::counter_names().collect();
    for n in [
        "drop_martian_source",
        "drop_overlay_source",
        "drop_bad_destination",
        "drop_overlay_target",
    ] {
        assert!(names.contains(&n), "{n}");
    }
}

#[test]
fn private_and_global_clients_are_served() {
    let (mut l, g) = echo_proxy();
    for from in [
        "10.1.5.2:5000",
        "10.97.0.1:5000",
        "172.16.3.4:5000",
        "192.168.1.1:5000",
        "100.64.0.1:5000",
        "8.8.8.8:5000",
    ] {
        let (v, out, _) = l.udp(from, &g);
        assert_eq!(v, Verdict::Host, "{from}");
        assert_eq!(dst_of(&out), ECHO.parse().unwrap());
    }
    assert_eq!(l.p.counters().jap_delivered, 6);
}

#[test]
fn the_one_packet_loop_ends_before_the_target() {
    let (mut l, _) = echo_proxy();
    let space = l.p.overlay_space().clone();
    // The spoofed packet G:7 → G:7 never reaches the echo target.
    assert_eq!(run_loop(&mut l, udp_from(GROUP, GROUP), &space), 0);
    assert_eq!(l.p.counters().drop_overlay_source, 1);
    assert_eq!(l.p.nat().len(), 0);
    // A legitimate client's exchange still makes one round trip: one delivery, one reply to the client.
    assert_eq!(run_loop(&mut l, udp_from("10.1.0.1:5000", GROUP), &space), 1);
    assert_eq!(l.p.counters().jap_replies, 1);
}

#[test]
fn without_the_ingress_filter_the_jap_still_ends_the_loop() {
    // An IAP that knows less of the overlay's space (here: this proxy before its space is set) lets
    // G:7 → G:7 in; the JAP's egress filter refuses the reply, so the target sees one datagram only.
    let (mut l, _) = echo_proxy();
    let space = l.p.overlay_space().clone();
    // The loop as the issue describes it, with no filter at all: it only stops at the test's bound.
    l.p.space = OverlaySpace::default();
    let mut blind = Lone {
        p: Proxy::new(
            l.p.config().clone(),
            &crate::secrets::Secrets::from_seed_for_tests(1),
            Instant::ZERO,
        )
        .unwrap(),
        now: l.now,
    };
    blind.p.space = OverlaySpace::default();
    let g = group_at(GROUP, IpProtocol::Udp);
    blind.register(g, ECHO.parse().unwrap(), DeliveryMode::Nat);
    assert!(
        run_loop(&mut blind, udp_from(GROUP, GROUP), &space) >= 10,
        "the unfiltered loop"
    );

    // The IAP lets it in and the JAP creates the binding; then the filter is back (a JAP that knows).
    let (v, out, _) = l.client(udp_from(GROUP, GROUP).len(), &udp_from(GROUP, GROUP));
    assert_eq!(v, Verdict::Host);
    l.p.space = space;
    let reply = echo(&out);
    let (v, _, _) = l.client(reply.len(), &reply);
    assert_eq!(v, Verdict::Drop(DropReason::BadDestination));
    assert_eq!(l.p.counters().drop_bad_destination, 1);
    assert_eq!(l.p.counters().jap_replies, 0);
}

#[test]
fn the_jap_refuses_a_client_source_its_iap_let_through() {
    // A data frame's client packet (as the JAP gets it from another IAP) is checked again.
    let (mut l, _) = echo_proxy();
    for (from, why) in [
        (GROUP, DropReason::OverlaySource),
        ("10.98.2.1:9", DropReason::OverlaySource),
        ("127.0.0.1:9", DropReason::MartianSource),
    ] {
        let pkt = udp_from(from, GROUP);
        let mut raw = vec![0u8; HEADROOM + pkt.len()];
        raw[HEADROOM..].copy_from_slice(&pkt);
        let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + pkt.len());
        assert_eq!(
            l.p.jap_deliver(l.now, ProxyId(9), &mut b, false),
            Verdict::Drop(why),
            "{from}"
        );
    }
    assert_eq!(l.p.nat().len(), 0);
}

#[test]
fn a_target_in_the_overlay_space_gets_nothing() {
    let (mut l, _) = echo_proxy();
    // A registration naming another proxy's pool address as its service (the key holder's mistake or
    // attack): the JAP would write the packet back into the overlay.
    let g = group_at("10.99.0.9:9", IpProtocol::Udp);
    l.register(g, "10.98.5.1:9".parse().unwrap(), DeliveryMode::Nat);
    l.drain_events();
    let (v, _, _) = l.udp("10.1.0.1:5000", &g);
    assert_eq!(v, Verdict::Drop(DropReason::OverlayTarget));
    assert_eq!(l.p.counters().drop_overlay_target, 1);
    assert_eq!(l.p.nat().len(), 0);
}

#[test]
fn overlay_space_is_what_the_proxy_knows() {
    let mut c = cfg();
    c.anycast_prefixes = vec![pre("10.99.0.0/24")];
    c.overlay_prefixes = vec![pre("10.98.0.0/16"), pre("10.99.0.0/24")];
    let s = c.overlay_space();
    assert_eq!(
        s.prefixes(),
        &[
            pre("10.99.0.0/24"),
            pre("10.99.255.1/32"),
            pre("10.200.0.1/32"),
            pre("10.98.0.0/16")
        ]
    );
    assert_eq!(
        Proxy::new(c, &crate::secrets::Secrets::from_seed_for_tests(1), Instant::ZERO)
            .unwrap()
            .overlay_space(),
        &s
    );
}

#[test]
fn overlay_prefix_lists_are_validated() {
    type Tweak = fn(&mut ProxyConfig);
    let cases: &[(Tweak, &str, usize)] = &[
        (
            |c| c.anycast_prefixes = vec![pre("10.99.0.0/24"), pre("0.0.0.0/0")],
            "anycast_prefixes",
            1,
        ),
        (|c| c.overlay_prefixes = vec![pre("::/4")], "overlay_prefixes", 0),
        (
            |c| c.overlay_prefixes = vec![pre("127.0.0.0/8")],
            "overlay_prefixes",
            0,
        ),
        (
            |c| c.overlay_prefixes = vec![pre("fe80::/64")],
            "overlay_prefixes",
            0,
        ),
        (
            |c| {
                c.overlay_prefixes = vec![IpPrefix {
                    addr: "10.0.0.0".parse().unwrap(),
                    len: 40,
                }]
            },
            "overlay_prefixes",
            0,
        ),
    ];
    for (tweak, field, i) in cases {
        let mut c = cfg();
        tweak(&mut c);
        let e = c.validate().unwrap_err();
        assert_eq!(
            (e.part, e.field, e.index),
            (ConfigPart::Proxy, *field, Some(*i)),
            "{e}"
        );
    }
    let mut c = cfg();
    c.overlay_prefixes = (0..=crate::filter::MAX_PREFIXES as u32)
        .map(|i| IpPrefix::host(core::net::Ipv4Addr::from(0x0a00_0000 + i).into()))
        .collect();
    assert_eq!(c.validate().unwrap_err().field, "overlay_prefixes");
    c.overlay_prefixes.pop();
    assert!(c.validate().is_ok());
}

#[test]
fn a_tunnel_targets_reply_to_the_overlay_space_is_not_written() {
    let (mut l, _) = echo_proxy();
    let g = group_at("10.99.0.2:7000", IpProtocol::Udp);
    l.register(g, "10.2.0.7:7000".parse().unwrap(), DeliveryMode::Tunnel);
    l.drain_events();
    let from: SocketAddr = "10.2.0.7:6081".parse().unwrap();
    for (client, want) in [
        ("10.1.0.1:5000", Verdict::Host),
        ("10.99.0.2:7000", Verdict::Drop(DropReason::BadDestination)),
        ("10.98.4.1:5000", Verdict::Drop(DropReason::BadDestination)),
        ("127.0.0.1:5000", Verdict::Drop(DropReason::BadDestination)),
    ] {
        let pkt = udp_from("10.99.0.2:7000", client);
        let mut raw = vec![0u8; HEADROOM + pkt.len()];
        raw[HEADROOM..].copy_from_slice(&pkt);
        let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + pkt.len());
        assert_eq!(l.p.tunnel_reply(from, &mut b, 0), want, "{client}");
    }
}
