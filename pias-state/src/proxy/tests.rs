//! Single-proxy tests: configuration errors, garbage input, and a proxy that is IAP, RAP and JAP at once.
//! Multi-proxy scenarios run in the `pias-sim` crate.

use super::overlay::encapsulate;
use super::*;
use pias_proto::IpProtocol;
use pias_proto::auth::MasterKey;
use pias_proto::build::udp_packet;
use pias_proto::control::{Answer, AnswerEntry, Message};
use pias_proto::packet::IpPacket;
use pias_proto::tunnel::{DataHeader, INITIAL_HOPS};

/// Ingress and egress filtering (SPEC.md §8.5).
mod filter;

/// The health-gated announcement (SPEC.md §7.7).
mod announce;

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
    let e = Proxy::new(c, &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap_err();
    assert_eq!(e.field, "overlay_mtu");
    assert!(e.to_string().contains("1280"));
    let mut c = cfg();
    c.vni = 1 << 24;
    assert_eq!(c.validate().unwrap_err().field, "vni");
    // A skew as long as the tombstone time would let a departed proxy's Join outlive its tombstone.
    for skew in [Duration::ZERO, cfg().membership.tombstone_time] {
        let mut c = cfg();
        c.replay_skew = skew;
        assert_eq!(c.validate().unwrap_err().field, "replay_skew");
    }
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
            |c| c.capacity_flows_per_s = Some(0),
            ConfigPart::Proxy,
            "capacity_flows_per_s",
            None,
            "capacity_flows_per_s",
        ),
        (
            |c| c.iap.max_drain_flows = 0,
            ConfigPart::Iap,
            "max_drain_flows",
            None,
            "iap.max_drain_flows",
        ),
        (
            |c| c.rap.max_load = 999,
            ConfigPart::Rap,
            "max_load",
            None,
            "rap.max_load",
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
        assert_eq!(
            Proxy::new(c, &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap_err(),
            e
        );
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
    let mut p = Proxy::new(cfg(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
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
    let mut p = Proxy::new(cfg(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
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
    let mut p = Proxy::new(cfg(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
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

// ----- what a fast path is told: the JAP's delivery, cache re-announcements, lost events -----

use crate::agent::{AgentConfig, AgentState, TargetAgent};
use crate::policy::{GroupMatch, GroupPolicy};
use pias_proto::build::{Segment, tcp_segment};
use pias_proto::control::Records;

const REGISTRATION: &str = "10.99.255.1:6082";

fn group_at(s: &str, proto: IpProtocol) -> TransportAddr {
    let a: SocketAddr = s.parse().unwrap();
    TransportAddr::new(a.ip(), a.port(), proto)
}

/// A lone proxy (IAP, RAP and JAP at once) whose targets register through its host side.
struct Lone {
    p: Proxy,
    now: Instant,
}

impl Lone {
    fn new(tune: impl FnOnce(&mut ProxyConfig)) -> Lone {
        let mut c = cfg();
        tune(&mut c);
        Lone {
            p: Proxy::new(c, &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap(),
            now: Instant::from_secs(1),
        }
    }

    /// Runs a target agent against the proxy until it is registered; returns its registration slot.
    fn register(&mut self, group: TransportAddr, service: SocketAddr, mode: DeliveryMode) -> u32 {
        let reg: SocketAddr = REGISTRATION.parse().unwrap();
        let key = MasterKey::from_bytes([3; 32]).group_key(&group);
        let svc = TransportAddr::new(service.ip(), service.port(), group.proto);
        let mut agent = TargetAgent::new(AgentConfig::new(group, svc, mode, reg, key, 1, 9)).unwrap();
        let me = SocketAddr::new(service.ip(), 40_000);
        let mut buf = [0u8; 1600];
        let mut pkt = [0u8; 1600];
        for _ in 0..2000 {
            self.now += Duration::from_millis(1);
            agent.handle_timeout(self.now);
            self.p.handle_timeout(self.now);
            while let Some(n) = agent.poll_transmit(self.now, &mut buf) {
                let len = udp_packet(me, reg, &buf[..n], &mut pkt[HEADROOM..]).unwrap();
                let mut b = PacketBuf::new(&mut pkt, HEADROOM, HEADROOM + len);
                assert_eq!(self.p.handle_host(self.now, &mut b), Verdict::Consumed);
            }
            while let Some(t) = self.p.poll_transmit(self.now, &mut buf) {
                assert_eq!(t.dest, Dest::Host);
                let ip = IpPacket::new_checked(&buf[..t.len]).unwrap();
                let f = ip.flow().unwrap();
                if SocketAddr::new(f.dst, f.dst_port) == me {
                    let payload = ip.l4_bytes()[8..].to_vec();
                    agent
                        .handle_datagram(self.now, SocketAddr::new(f.src, f.src_port), &payload)
                        .unwrap();
                }
            }
            if matches!(agent.state(), AgentState::Registered { .. }) {
                return self
                    .p
                    .registry()
                    .targets(&group)
                    .find(|t| t.service == svc)
                    .unwrap()
                    .slot;
            }
        }
        panic!("the target did not register");
    }

    /// A client packet through the host side: the verdict, the bytes it left, and the events it caused.
    fn client(&mut self, pkt_len: usize, pkt: &[u8]) -> (Verdict, Vec<u8>, Vec<Event>) {
        let mut raw = vec![0u8; HEADROOM + pkt_len + 64];
        raw[HEADROOM..HEADROOM + pkt_len].copy_from_slice(&pkt[..pkt_len]);
        let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + pkt_len);
        let v = self.p.handle_host(self.now, &mut b);
        let out = b.bytes().to_vec();
        (v, out, core::iter::from_fn(|| self.p.poll_event()).collect())
    }

    fn udp(&mut self, from: &str, group: &TransportAddr) -> (Verdict, Vec<u8>, Vec<Event>) {
        let mut pkt = [0u8; 256];
        let dst = SocketAddr::new(group.ip, group.port);
        let n = udp_packet(from.parse().unwrap(), dst, b"q", &mut pkt).unwrap();
        self.client(n, &pkt)
    }

    fn drain_events(&mut self) {
        while self.p.poll_event().is_some() {}
    }
}

/// The deliveries the events announced for new bindings.
fn created(events: &[Event]) -> Vec<Delivery> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NatCreated { delivery, .. } => Some(*delivery),
            _ => None,
        })
        .collect()
}

fn dst_of(bytes: &[u8]) -> SocketAddr {
    let f = IpPacket::new_checked(bytes).unwrap().flow().unwrap();
    SocketAddr::new(f.dst, f.dst_port)
}

fn replicate_udp_and_tcp(p: &mut ProxyConfig) {
    p.policies.rules.push((
        GroupMatch {
            prefix: "10.99.1.0".parse().unwrap(),
            len: 24,
            port: None,
            proto: None,
        },
        GroupPolicy {
            target: crate::registry::TargetOptions {
                replicate: 2,
                ..Default::default()
            },
            ..GroupPolicy::default()
        },
    ));
}

#[test]
fn a_new_binding_announces_the_delivery_its_packets_get() {
    let mut l = Lone::new(replicate_udp_and_tcp);
    let nat = group_at("10.99.0.1:53", IpProtocol::Udp);
    let tunnel = group_at("10.99.0.2:7000", IpProtocol::Udp);
    let rep_udp = group_at("10.99.1.1:53", IpProtocol::Udp);
    let rep_tcp = group_at("10.99.1.2:80", IpProtocol::Tcp);
    l.register(nat, "10.2.0.1:53".parse().unwrap(), DeliveryMode::Nat);
    l.register(tunnel, "10.2.0.7:7000".parse().unwrap(), DeliveryMode::Tunnel);
    for t in ["10.2.0.2:53", "10.2.0.3:53"] {
        l.register(rep_udp, t.parse().unwrap(), DeliveryMode::Nat);
    }
    for t in ["10.2.0.2:80", "10.2.0.3:80"] {
        l.register(rep_tcp, t.parse().unwrap(), DeliveryMode::Nat);
    }
    l.drain_events();

    // NAT: rewritten to the target.
    let (v, out, ev) = l.udp("10.1.0.1:5000", &nat);
    assert_eq!(v, Verdict::Host);
    assert_eq!(dst_of(&out), "10.2.0.1:53".parse().unwrap());
    assert_eq!(created(&ev), [Delivery::Nat]);

    // Tunnel mode: unchanged, in a frame to the target's address at the overlay port.
    let (v, _, ev) = l.udp("10.1.0.1:5001", &tunnel);
    let to: SocketAddr = "10.2.0.7:6081".parse().unwrap();
    assert_eq!(v, Verdict::Overlay(to));
    assert_eq!(created(&ev), [Delivery::Tunnel(to)]);

    // replicate, UDP: rewritten for the primary, a copy for the other target.
    let (v, _, ev) = l.udp("10.1.0.1:5002", &rep_udp);
    assert_eq!(v, Verdict::Host);
    assert_eq!(l.p.counters().replicas_sent, 1);
    assert_eq!(created(&ev), [Delivery::Replicate]);

    // replicate, TCP: plain NAT (SPEC.md §9.5: UDP only), so a fast path may serve it.
    let mut pkt = [0u8; 256];
    let seg = Segment {
        flags: pias_proto::tcp::TcpFlags::SYN,
        seq: 1,
        ack: 0,
        mss: None,
    };
    let dst = SocketAddr::new(rep_tcp.ip, rep_tcp.port);
    let n = tcp_segment("10.1.0.1:5003".parse().unwrap(), dst, seg, b"", &mut pkt).unwrap();
    let (v, out, ev) = l.client(n, &pkt);
    assert_eq!(v, Verdict::Host);
    assert_eq!(dst_of(&out).port(), 80);
    assert_eq!(l.p.counters().replicas_sent, 1, "no copy of a TCP segment");
    assert_eq!(created(&ev), [Delivery::Nat]);

    // A rebuild from state announces the same deliveries.
    let mut rebuilt: Vec<Delivery> = created(&l.p.state_events().collect::<Vec<_>>());
    rebuilt.sort_by_key(|d| format!("{d:?}"));
    let mut want = vec![
        Delivery::Nat,
        Delivery::Tunnel(to),
        Delivery::Replicate,
        Delivery::Nat,
    ];
    want.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(rebuilt, want);
}

#[test]
fn tunnel_delivery_needs_the_registration_at_the_bindings_address() {
    // A binding whose tag names a tunnel-mode registration at another address (the slot was reused by
    // another target) is the NAT binding it was created as: the JAP never redirects it.
    let mut l = Lone::new(|_| {});
    let tunnel = group_at("10.99.0.2:7000", IpProtocol::Udp);
    let slot = l.register(tunnel, "10.2.0.7:7000".parse().unwrap(), DeliveryMode::Tunnel);
    let flow = FlowKey {
        src: "10.1.0.1".parse().unwrap(),
        dst: tunnel.ip,
        src_port: 5000,
        dst_port: tunnel.port,
        proto: IpProtocol::Udp,
    };
    assert_eq!(
        l.p.delivery(slot, &flow, "10.2.0.7".parse().unwrap()),
        Delivery::Tunnel("10.2.0.7:6081".parse().unwrap())
    );
    assert_eq!(
        l.p.delivery(slot, &flow, "10.2.0.8".parse().unwrap()),
        Delivery::Nat
    );
    assert_eq!(
        l.p.delivery(slot + 1, &flow, "10.2.0.7".parse().unwrap()),
        Delivery::Nat,
        "no such registration"
    );
}

#[test]
fn a_jap_changing_address_re_announces_the_groups_naming_it() {
    let mut l = Lone::new(|_| {});
    let key = MasterKey::from_bytes([3; 32]);
    let mut two = Sealer::new(
        ProxyId(2),
        1,
        key.overlay_key(),
        1,
        crate::replay::Freshness::new(0, 30_000, Instant::ZERO),
    );
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.0.0.2:6081".parse().unwrap(),
        "10.0.0.22:6081".parse().unwrap(),
    );
    let rec = |addr: SocketAddr, version: u32| ProxyRecord {
        id: ProxyId(2),
        incarnation: 1,
        version,
        status: MemberStatus::Alive,
        addr,
        coord: crate::coords::Coord::new().to_bytes(),
    };
    let mut send = |l: &mut Lone, msg: Message<'_>, from: SocketAddr| {
        let mut raw = [0u8; 1600];
        let n = two
            .seal(
                l.now,
                "10.0.0.1:6081".parse().unwrap(),
                &msg,
                &mut raw[HEADROOM..],
            )
            .unwrap();
        let mut pb = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + n);
        assert_eq!(l.p.handle_overlay(l.now, from, &mut pb), Verdict::Consumed);
        core::iter::from_fn(|| l.p.poll_event()).collect::<Vec<_>>()
    };
    let ev = send(&mut l, Message::Records(Records::Slice(&[rec(a, 1)])), a);
    assert!(ev.contains(&Event::MemberUp {
        id: ProxyId(2),
        addr: a
    }));
    // Proxy 2 answers for two groups, one naming it, one naming only this proxy.
    let g2 = group_at("10.99.0.1:53", IpProtocol::Udp);
    let g1 = group_at("10.99.0.3:53", IpProtocol::Udp);
    for (g, jap) in [(g2, 2), (g1, 1)] {
        let answer = Answer::new(
            g,
            30_000,
            &[AnswerEntry {
                jap: ProxyId(jap),
                weight: 1,
            }],
        );
        // Unsolicited: ignored, counted.
        let before = l.p.iap().counters().answers_ignored;
        assert_eq!(send(&mut l, Message::Answer(answer), a), []);
        assert!(l.p.cache_entry(&g).is_none());
        assert_eq!(l.p.iap().counters().answers_ignored, before + 1);
        // The IAP asked (a client packet missed): only then is an Answer taken (SPEC.md §9.3).
        l.p.iap.route(l.now, &g, 0, false);
        let ev = send(&mut l, Message::Answer(answer), a);
        assert_eq!(ev, [Event::CacheInstalled { group: g }]);
    }
    assert_eq!(l.p.jap_addr(ProxyId(2)), Some(a));
    // It moves: the member's news, then the entry naming it again, with the address to write.
    let ev = send(&mut l, Message::Records(Records::Slice(&[rec(b, 2)])), a);
    assert_eq!(
        ev,
        [
            Event::MemberUp {
                id: ProxyId(2),
                addr: b
            },
            Event::CacheInstalled { group: g2 }
        ]
    );
    assert_eq!(l.p.jap_addr(ProxyId(2)), Some(b));
}

#[test]
fn events_lost_counts_every_queue() {
    // A full NAT table with a one-event queue: the next flow's binding evicts the first, and the NAT's
    // queue keeps only the removal. The proxy's own queue lost nothing, yet a fast path must rebuild.
    let mut l = Lone::new(|c| {
        c.nat.max_entries = 1;
        c.nat.event_capacity = 1;
    });
    let g = group_at("10.99.0.1:53", IpProtocol::Udp);
    l.register(g, "10.2.0.1:53".parse().unwrap(), DeliveryMode::Nat);
    l.drain_events();
    let (_, _, ev) = l.udp("10.1.0.1:5000", &g);
    assert_eq!(created(&ev), [Delivery::Nat]);
    assert_eq!(l.p.events_lost(), 0);
    let (v, _, ev) = l.udp("10.1.0.1:5001", &g);
    assert_eq!(v, Verdict::Host);
    assert!(matches!(ev[..], [Event::NatRemoved { .. }]), "{ev:?}");
    assert_eq!(l.p.counters().events_dropped, 0);
    assert_eq!(l.p.events_lost(), 1);
    // The rebuild names the binding the lost event announced.
    let b = l.p.nat().iter().next().unwrap();
    assert!(
        l.p.state_events()
            .any(|e| matches!(e, Event::NatCreated { id, .. } if id == b.id))
    );
    // The proxy's own queue counts too.
    let mut l = Lone::new(|c| c.event_capacity = 1);
    l.register(g, "10.2.0.1:53".parse().unwrap(), DeliveryMode::Nat);
    assert_eq!(l.p.events_lost(), 0, "TargetUp fits");
    let mut pkt = [0u8; 256];
    let n = udp_packet(
        "10.1.0.1:5000".parse().unwrap(),
        "10.99.0.1:53".parse().unwrap(),
        b"q",
        &mut pkt,
    )
    .unwrap();
    let mut raw = vec![0u8; HEADROOM + n];
    raw[HEADROOM..].copy_from_slice(&pkt[..n]);
    let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + n);
    assert_eq!(l.p.handle_host(l.now, &mut b), Verdict::Host);
    assert!(
        l.p.events_lost() > 0,
        "the binding's NatCreated found the queue full"
    );
    assert_eq!(l.p.events_lost(), l.p.counters().events_dropped);
}

#[test]
fn every_counter_is_walked_once_under_a_prometheus_safe_name() {
    let p = Proxy::new(cfg(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
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
        epoch: 0,
        ingress: ProxyId(1),
    };
    let mut b = PacketBuf::new(&mut raw, 0, n);
    let key = MasterKey::from_bytes([3; 32]).data_key(0);
    assert_eq!(encapsulate(&mut b, &h, &key), Err(DropReason::NoHeadroom));
    let mut p = Proxy::new(cfg(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
    p.count_verdict(Verdict::Drop(DropReason::NoHeadroom));
    assert_eq!(p.counters().drop_no_headroom, 1);
    assert_eq!(p.counters().drop_malformed, 0);
}

/// A data frame as a peer would send it: `inner` under a header tagged with `key` (`None`: untagged).
fn data_frame(h: &DataHeader, key: Option<&pias_proto::auth::SipKey>, inner: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; pias_proto::tunnel::DATA_HEADER_LEN + inner.len()];
    match key {
        Some(k) => h.encapsulate_tagged(k, inner, &mut f).unwrap(),
        None => h.encapsulate(inner, &mut f).unwrap(),
    };
    f
}

impl Lone {
    fn overlay(&mut self, from: &str, frame: &[u8]) -> Verdict {
        let mut raw = vec![0u8; HEADROOM + frame.len()];
        raw[HEADROOM..].copy_from_slice(frame);
        let mut b = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + frame.len());
        self.p.handle_overlay(self.now, from.parse().unwrap(), &mut b)
    }
}

#[test]
fn data_frames_pass_the_tag_check_before_anything_else() {
    let mut l = Lone::new(|c| c.data_key_epoch = 7);
    let master = MasterKey::from_bytes([3; 32]);
    let mut inner = [0u8; 256];
    let n = udp_packet(
        "10.1.0.1:5000".parse().unwrap(),
        "10.99.0.1:53".parse().unwrap(),
        b"q",
        &mut inner,
    )
    .unwrap();
    let h = |epoch| DataHeader {
        vni: 1,
        flags: 0,
        hops: INITIAL_HOPS,
        epoch,
        ingress: ProxyId(2),
    };
    // Untagged, wrongly keyed, two epochs back: dropped as bad tags, whoever the sender claims to be.
    for (e, key) in [
        (7, None),
        (7, Some(MasterKey::from_bytes([4; 32]).data_key(7))),
        (5, Some(master.data_key(5))),
        (6, Some(master.data_key(7))),
    ] {
        let f = data_frame(&h(e), key.as_ref(), &inner[..n]);
        assert_eq!(l.overlay("10.0.0.2:6081", &f), Verdict::Drop(DropReason::BadTag));
    }
    assert_eq!(l.p.counters().drop_bad_tag, 4);
    // Current and previous epoch pass the tag; the sender check still applies, and this proxy's own
    // address is no member's.
    for (e, key) in [(7, master.data_key(7)), (6, master.data_key(6))] {
        let f = data_frame(&h(e), Some(&key), &inner[..n]);
        for from in ["10.0.0.2:6081", "10.0.0.1:6081"] {
            assert_eq!(l.overlay(from, &f), Verdict::Drop(DropReason::DataFromStranger));
        }
    }
    // What the proxy sends verifies under its own keys (tunnel delivery of a registered group).
    let tunnel = group_at("10.99.0.2:7000", IpProtocol::Udp);
    l.register(tunnel, "10.2.0.7:7000".parse().unwrap(), DeliveryMode::Tunnel);
    let (v, out, _) = l.udp("10.1.0.1:5001", &tunnel);
    assert!(matches!(v, Verdict::Overlay(_)));
    let d = pias_proto::tunnel::DataFrame::new_checked(&out[..]).unwrap();
    assert_eq!(d.epoch(), 7);
    assert!(
        d.verify_tag(&pias_proto::tunnel::DataKeys::new(&master, 7))
            .is_ok()
    );
}

#[test]
fn tunnel_replies_come_from_the_target_and_stay_out_of_the_overlay() {
    let mut l = Lone::new(|_| {});
    let tunnel = group_at("10.99.0.2:7000", IpProtocol::Udp);
    let other = group_at("10.99.0.3:7000", IpProtocol::Udp);
    l.register(tunnel, "10.2.0.7:7000".parse().unwrap(), DeliveryMode::Tunnel);
    l.register(other, "10.2.0.8:7000".parse().unwrap(), DeliveryMode::Tunnel);
    let reply = |src: &str, dst: &str| {
        let mut inner = [0u8; 256];
        let n = udp_packet(src.parse().unwrap(), dst.parse().unwrap(), b"r", &mut inner).unwrap();
        let h = DataHeader {
            vni: 1,
            flags: pias_proto::tunnel::flags::TO_TARGET,
            hops: 0,
            epoch: 0,
            ingress: ProxyId::NONE,
        };
        data_frame(&h, None, &inner[..n])
    };
    let refused = Verdict::Drop(DropReason::TunnelReplyRefused);
    let ok = reply("10.99.0.2:7000", "10.1.0.1:5000");
    assert_eq!(l.overlay("10.2.0.7:6081", &ok), Verdict::Host);
    // Another port of the target's IP, another target, another group.
    assert_eq!(l.overlay("10.2.0.7:5555", &ok), refused);
    assert_eq!(l.overlay("10.2.0.8:6081", &ok), refused);
    let f = reply("10.99.0.3:7000", "10.1.0.1:5000");
    assert_eq!(l.overlay("10.2.0.7:6081", &f), refused);
    // Into the overlay's own space: the group itself (the G → G loop), another group, the NAT pool, the
    // registration address, this proxy.
    for dst in [
        "10.99.0.2:7000",
        "10.99.0.2:9",
        "10.99.0.3:7000",
        "10.200.0.1:40000",
        "10.99.255.1:6082",
        "10.0.0.1:6081",
    ] {
        let f = reply("10.99.0.2:7000", dst);
        // The egress filter (§8.5) refuses the configured overlay space first; the rest is refused here.
        let v = l.overlay("10.2.0.7:6081", &f);
        assert!(
            v == refused || v == Verdict::Drop(DropReason::BadDestination),
            "to {dst}: {v:?}"
        );
    }
    // A stranger's untagged TO_TARGET frame is a bad tag; counted through the usual path.
    assert_eq!(l.overlay("10.9.9.9:6081", &ok), Verdict::Drop(DropReason::BadTag));
    let c = l.p.counters();
    assert!(c.drop_tunnel_reply_refused + c.drop_bad_destination >= 9);
}

/// Replay defences at one receiver (SPEC.md §8.2): the MAC binds the receiver and VNI, timestamps bound a
/// message's age, and neither a restart nor an expired tombstone re-opens what was recorded earlier.
mod replay_defences {
    use super::*;
    use crate::replay::Freshness;
    use crate::seal::Sealer;
    use pias_proto::control::{MemberStatus, ProxyRecord, Records};

    const ORIGIN: u64 = 1_700_000_000_000;
    const ME: &str = "10.0.0.1:6081";
    const TWO: &str = "10.0.0.2:6081";

    fn config() -> ProxyConfig {
        let mut c = cfg();
        c.wall_origin_ms = ORIGIN;
        c
    }

    /// Proxy 2's sealer, sharing the wall clock.
    fn two() -> Sealer {
        Sealer::new(
            ProxyId(2),
            1,
            MasterKey::from_bytes([3; 32]).overlay_key(),
            1,
            Freshness::new(ORIGIN, 30_000, Instant::ZERO),
        )
    }

    fn record(version: u32, status: MemberStatus) -> ProxyRecord {
        ProxyRecord {
            id: ProxyId(2),
            incarnation: 1,
            version,
            status,
            addr: TWO.parse().unwrap(),
            coord: crate::coords::Coord::new().to_bytes(),
        }
    }

    fn seal(s: &mut Sealer, at: Instant, to: &str, msg: &Message<'_>) -> Vec<u8> {
        let mut b = vec![0u8; 1600];
        let n = s.seal(at, to.parse().unwrap(), msg, &mut b).unwrap();
        b.truncate(n);
        b
    }

    fn feed(p: &mut Proxy, now: Instant, frame: &[u8]) -> Verdict {
        let mut raw = vec![0u8; HEADROOM + frame.len()];
        raw[HEADROOM..].copy_from_slice(frame);
        let end = raw.len();
        let mut pb = PacketBuf::new(&mut raw, HEADROOM, end);
        let v = p.handle_overlay(now, TWO.parse().unwrap(), &mut pb);
        let mut out = [0u8; 2048];
        while p.poll_transmit(now, &mut out).is_some() {}
        while p.poll_event().is_some() {}
        v
    }

    #[test]
    fn a_frame_for_another_receiver_or_vni_is_refused() {
        let now = Instant::from_secs(10);
        let mut p = Proxy::new(config(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
        let mut s = two();
        let join = Message::Join(record(1, MemberStatus::Alive));
        // Recorded on its way to proxy 9: refused here, nothing learnt.
        assert_eq!(
            feed(&mut p, now, &seal(&mut s, now, "10.0.0.9:6081", &join)),
            Verdict::Drop(DropReason::BadMac)
        );
        // Sealed for this address under another VNI.
        let mut other_vni = Sealer::new(
            ProxyId(2),
            2,
            MasterKey::from_bytes([3; 32]).overlay_key(),
            1,
            Freshness::new(ORIGIN, 30_000, Instant::ZERO),
        );
        let mut f = seal(&mut other_vni, now, ME, &join);
        f[4..7].copy_from_slice(&[0, 0, 1]); // the Geneve VNI says 1: only the MAC knows better
        assert_eq!(feed(&mut p, now, &f), Verdict::Drop(DropReason::BadMac));
        assert!(p.membership().get(ProxyId(2)).is_none());
        assert_eq!(p.counters().drop_bad_mac, 2);
        // Sealed for this proxy: accepted once, then a replay.
        let ok = seal(&mut s, now, ME, &join);
        assert_eq!(feed(&mut p, now, &ok), Verdict::Consumed);
        assert!(p.membership().get(ProxyId(2)).is_some());
        assert_eq!(feed(&mut p, now, &ok), Verdict::Drop(DropReason::Rejected));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let now = Instant::from_secs(100);
        let mut p = Proxy::new(config(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
        let mut s = two();
        let join = Message::Join(record(1, MemberStatus::Alive));
        for at in [Instant::from_secs(69), Instant::from_secs(131)] {
            assert_eq!(
                feed(&mut p, now, &seal(&mut s, at, ME, &join)),
                Verdict::Drop(DropReason::Stale),
                "{at:?}"
            );
        }
        assert_eq!(p.counters().drop_stale, 2);
        assert!(p.membership().get(ProxyId(2)).is_none());
        // Within the skew either way: accepted.
        assert_eq!(
            feed(&mut p, now, &seal(&mut s, Instant::from_secs(71), ME, &join)),
            Verdict::Consumed
        );
    }

    /// A restarted receiver has lost its windows: what was sent to its previous life is refused by time.
    #[test]
    fn a_receiver_restart_does_not_reopen_old_frames() {
        let mut s = two();
        let t0 = Instant::from_secs(10);
        let mut p = Proxy::new(config(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
        let join = seal(&mut s, t0, ME, &Message::Join(record(1, MemberStatus::Alive)));
        let left = seal(
            &mut s,
            t0,
            ME,
            &Message::Records(Records::Slice(&[record(2, MemberStatus::Left)])),
        );
        assert_eq!(feed(&mut p, t0, &join), Verdict::Consumed);
        assert_eq!(feed(&mut p, t0, &left), Verdict::Consumed);
        // Restart 1 s later, well inside the skew.
        let t1 = Instant::from_secs(11);
        let mut p = Proxy::new(config(), &Secrets::from_seed_for_tests(1), t1).unwrap();
        assert_eq!(feed(&mut p, t1, &join), Verdict::Drop(DropReason::Stale));
        assert!(p.membership().get(ProxyId(2)).is_none());
        assert_eq!(
            feed(
                &mut p,
                t1,
                &seal(&mut s, t1, ME, &Message::Join(record(1, MemberStatus::Alive)))
            ),
            Verdict::Consumed,
            "a Join sealed after the restart is accepted"
        );
    }

    /// A departed proxy's recorded Join, replayed after its tombstone expired, is stale: it does not bring
    /// the proxy back as Alive.
    #[test]
    fn a_departed_proxys_join_after_tombstone_expiry_is_refused() {
        let mut s = two();
        let t0 = Instant::from_secs(10);
        let mut p = Proxy::new(config(), &Secrets::from_seed_for_tests(1), Instant::ZERO).unwrap();
        let join = seal(&mut s, t0, ME, &Message::Join(record(1, MemberStatus::Alive)));
        assert_eq!(feed(&mut p, t0, &join), Verdict::Consumed);
        let left = seal(
            &mut s,
            t0,
            ME,
            &Message::Records(Records::Slice(&[record(2, MemberStatus::Left)])),
        );
        assert_eq!(feed(&mut p, t0, &left), Verdict::Consumed);
        assert_eq!(
            p.membership().get(ProxyId(2)).unwrap().record.status,
            MemberStatus::Left
        );
        // Past the tombstone time: the record and its window are gone.
        let mut now = t0;
        let end = t0 + p.config().membership.tombstone_time + Duration::from_secs(5);
        while now < end {
            now += Duration::from_secs(1);
            p.handle_timeout(now);
            let mut out = [0u8; 2048];
            while p.poll_transmit(now, &mut out).is_some() {}
        }
        assert!(p.membership().get(ProxyId(2)).is_none(), "tombstone expired");
        assert_eq!(feed(&mut p, now, &join), Verdict::Drop(DropReason::Stale));
        assert!(p.membership().get(ProxyId(2)).is_none());
    }
}

/// SPEC.md §9.6 on one proxy (its own IAP, RAP and JAP): over its capacity it keeps serving, drains its own
/// IAP entry (which leaves the fast path), and reports its load at once; without a capacity nothing changes.
#[test]
fn a_jap_over_capacity_serves_drains_and_reports_its_load() {
    let g = group_at("10.99.0.1:53", IpProtocol::Udp);
    for cap in [None, Some(2)] {
        let mut l = Lone::new(|c| c.capacity_flows_per_s = cap);
        l.register(g, "10.2.0.1:53".parse().unwrap(), DeliveryMode::Nat);
        l.p.handle_timeout(l.now);
        l.drain_events();
        let mut events = Vec::new();
        for port in 5000..5004 {
            let (v, _, ev) = l.udp(&format!("10.1.0.1:{port}"), &g);
            assert_eq!(v, Verdict::Host, "every new flow is served");
            events.extend(ev);
        }
        let over = l.p.counters().jap_over_capacity;
        if cap.is_none() {
            assert_eq!(over, 0);
            assert!(!l.p.iap().draining(&g));
            continue;
        }
        assert_eq!(over, 2, "flows 3 and 4 are over a capacity of 2");
        assert!(l.p.iap().draining(&g));
        assert_eq!(l.p.iap().counters().drains, 2);
        assert_eq!(l.p.counters().invalidations_sent, 0, "its own IAP: no message");
        assert!(events.contains(&Event::CacheRemoved { group: g }), "{events:?}");
        assert!(
            !l.p.state_events()
                .any(|e| e == Event::CacheInstalled { group: g }),
            "a draining group stays out of a rebuilt fast path"
        );
        // The report is due now, not at the window's end.
        assert!(l.p.poll_timeout().is_some_and(|t| t <= l.now));
        l.p.handle_timeout(l.now);
        let ev: Vec<Event> = core::iter::from_fn(|| l.p.poll_event()).collect();
        assert!(
            ev.contains(&Event::LoadChanged {
                flows_per_s: 4,
                load_per_mille: 2000
            }),
            "{ev:?}"
        );
        // Its own RAP table (it is the group's only RAP) hears it.
        let japs = l.p.rap().japs(&g);
        assert!(
            !japs.is_empty() && japs.iter().all(|j| j.load == 2000),
            "{japs:?}"
        );
    }
}
