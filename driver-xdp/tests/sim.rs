//! The program against real proxies: a simulated overlay (pias-sim) runs the core until the IAP has a cache
//! entry and the JAP a NAT binding; MapSync mirrors the proxies' state into two programs (one acting as the
//! IAP, one as the JAP); then the same packets go through the proxies (`handle_host`/`handle_overlay`) and
//! through the programs (`BPF_PROG_TEST_RUN`), and the outputs must be byte-identical. Needs root.

#[macro_use]
mod common;

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use driver_xdp::maps::{CFG_ENABLED, counter};
use driver_xdp::{Hook, RunResult, Sizes, XdpFastPath, verdict};
use pias_proto::auth::MasterKey;
use pias_proto::build::{Segment, tcp_segment, udp_packet};
use pias_proto::packet::IpPacket;
use pias_proto::tcp::TcpFlags;
use pias_proto::tunnel::{DATA_HEADER_LEN, DataHeader, DataKeys, INITIAL_HOPS};
use pias_proto::{IpProtocol, ProxyId, TransportAddr};
use pias_sim::{Sim, SimConfig};
use pias_state::policy::{GroupMatch, GroupPolicy};
use pias_state::proxy::{HEADROOM, PacketBuf, Proxy, Verdict};
use pias_state::registry::TargetOptions;

fn rig_for(hook: Hook, proxy: &Proxy, now: pias_state::time::Instant) -> XdpFastPath {
    XdpFastPath::detached(
        proxy,
        Sizes {
            groups: 256,
            nat: 1024,
            members: 64,
        },
        hook,
        CFG_ENABLED,
        now,
    )
    .unwrap_or_else(|e| {
        panic!(
            "loading the {} program failed: {e} (this test needs root)",
            hook.name()
        )
    })
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xbb];
    f.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(ip);
    f
}

fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 1600];
    let n = udp_packet(src, dst, payload, &mut b).unwrap();
    b.truncate(n);
    b
}

/// Runs `pkt` through the proxy's host side; the verdict and the bytes it left in the buffer.
fn host(p: &mut Proxy, now: pias_state::time::Instant, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + pkt.len() + 64];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
    let v = p.handle_host(now, &mut pb);
    (v, pb.bytes().to_vec())
}

fn overlay(
    p: &mut Proxy,
    now: pias_state::time::Instant,
    from: SocketAddr,
    frame: &[u8],
) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + frame.len() + 64];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + frame.len());
    let v = p.handle_overlay(now, from, &mut pb);
    (v, pb.bytes().to_vec())
}

fn tx(r: &RunResult) -> &[u8] {
    assert_eq!(r.verdict, verdict::TX, "a hit");
    &r.frame[14..]
}

fn programs_mirror_real_proxies_byte_for_byte(hook: Hook) {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x5a; 32]));
    for i in 0..5 {
        sim.add_proxy((10.0 * i as f64, 0.0), |_| {});
    }
    sim.run_for(Duration::from_secs(5));
    let group = Sim::group(1, 5353, IpProtocol::Udp);
    let client_ip: IpAddr = "10.1.0.10".parse().unwrap();
    let client = sim.add_client(client_ip, (-1.0, 1.0));
    let target = SocketAddr::new("10.2.0.1".parse().unwrap(), 5353);
    sim.add_target("t1", target, group, (41.0, 1.0));
    sim.run_for(Duration::from_secs(2));
    for (i, sport) in [40000u16, 40001, 40002, 40003].into_iter().enumerate() {
        sim.send_udp(client, sport, group, i as u64, b"q");
        sim.run_for(Duration::from_millis(300));
    }
    let now = sim.now();
    let iap_i = sim.iap_of(client).expect("the client has an IAP");
    let iap_entry = sim
        .proxy(iap_i)
        .unwrap()
        .cache_entry(&group)
        .expect("the IAP cached the group");
    let jap_id = iap_entry.japs().next().unwrap().0;
    let jap_i = sim.proxy_index(jap_id).unwrap();
    assert_ne!(iap_i, jap_i, "the JAP is another proxy");

    // The IAP: every flow of the group, through the proxy and through the program.
    let iap_fp = rig_for(hook, sim.proxy(iap_i).unwrap(), now);
    let gaddr = SocketAddr::new(group.ip, group.port);
    for sport in 41000..41064u16 {
        let pkt = udp(SocketAddr::new(client_ip, sport), gaddr, b"flow payload");
        let (v, want) = host(sim.proxy_mut(iap_i).unwrap(), now, &pkt);
        let r = iap_fp.program().test_run(&eth(&pkt), 1).unwrap();
        match v {
            Verdict::Overlay(to) => {
                let out = tx(&r);
                let outer = IpPacket::new_checked(out).unwrap();
                outer.verify_checksums().unwrap();
                let f = outer.flow().unwrap();
                assert_eq!(SocketAddr::new(f.dst, f.dst_port), to, "the core's JAP");
                assert_eq!(
                    SocketAddr::new(f.src, f.src_port),
                    sim.proxy(iap_i).unwrap().config().overlay_addr
                );
                assert_eq!(&out[28..], &want[..], "the core's data frame");
            }
            other => panic!("the core did not send to a JAP: {other:?}"),
        }
    }
    assert_eq!(
        iap_fp.sync().maps().counters().unwrap()[counter("xdp_iap_hit")],
        64
    );

    // The JAP: the flows that have bindings, as data frames from the IAP, and the target's replies.
    let jap_fp = rig_for(hook, sim.proxy(jap_i).unwrap(), now);
    let iap_addr = sim.proxy(iap_i).unwrap().config().overlay_addr;
    let jap_addr = sim.proxy(jap_i).unwrap().config().overlay_addr;
    let bindings: Vec<_> = sim.proxy(jap_i).unwrap().nat().iter().collect();
    assert!(!bindings.is_empty());
    for b in bindings {
        let f = b.forward;
        let pkt = udp(
            SocketAddr::new(f.src, f.src_port),
            SocketAddr::new(f.dst, f.dst_port),
            b"again",
        );
        let h = DataHeader {
            vni: sim.proxy(jap_i).unwrap().config().vni,
            flags: 0,
            hops: INITIAL_HOPS,
            epoch: 0,
            ingress: ProxyId(iap_i as u32 + 1),
        };
        let keys = DataKeys::new(&sim.proxy(jap_i).unwrap().config().master_key, 0);
        let mut frame = vec![0u8; pkt.len() + DATA_HEADER_LEN];
        h.encapsulate_tagged(keys.current(), &pkt, &mut frame).unwrap();
        let (v, want) = overlay(sim.proxy_mut(jap_i).unwrap(), now, iap_addr, &frame);
        assert_eq!(v, Verdict::Host);
        let r = jap_fp
            .program()
            .test_run(&eth(&udp(iap_addr, jap_addr, &frame)), 1)
            .unwrap();
        assert_eq!(tx(&r), &want[..], "the core's NAT rewrite");

        let rv = b.reverse;
        let reply = udp(
            SocketAddr::new(rv.src, rv.src_port),
            SocketAddr::new(rv.dst, rv.dst_port),
            b"answer",
        );
        let (v, want) = host(sim.proxy_mut(jap_i).unwrap(), now, &reply);
        assert_eq!(v, Verdict::Host);
        let r = jap_fp.program().test_run(&eth(&reply), 1).unwrap();
        let out = tx(&r);
        assert_eq!(out, &want[..], "the core's reverse rewrite");
        let back = IpPacket::new_checked(out).unwrap().flow().unwrap();
        assert_eq!(SocketAddr::new(back.src, back.src_port), gaddr);
        assert_eq!(back.dst, client_ip);
    }
    let c = jap_fp.sync().maps().counters().unwrap();
    assert!(c[counter("xdp_jap_forward_hit")] >= 1);
    assert_eq!(
        c[counter("xdp_jap_forward_hit")],
        c[counter("xdp_jap_reverse_hit")]
    );
}

fn tunnel_mode_frames_match_the_proxy(hook: Hook) {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x5a; 32]));
    for i in 0..5 {
        sim.add_proxy((10.0 * i as f64, 0.0), |_| {});
    }
    sim.run_for(Duration::from_secs(5));
    let group = Sim::group(2, 7000, IpProtocol::Udp);
    let client_ip: IpAddr = "10.1.0.10".parse().unwrap();
    let client = sim.add_client(client_ip, (-1.0, 1.0));
    let service = SocketAddr::new("10.2.0.7".parse().unwrap(), 7000);
    sim.add_target_with("tun", service, group, (41.0, 1.0), |a| {
        a.mode = pias_proto::control::DeliveryMode::Tunnel;
    });
    sim.run_for(Duration::from_secs(2));
    for (i, sport) in [40000u16, 40001].into_iter().enumerate() {
        sim.send_udp(client, sport, group, i as u64, b"t");
        sim.run_for(Duration::from_millis(300));
    }
    let now = sim.now();
    let iap_i = sim.iap_of(client).unwrap();
    let jap_id = sim
        .proxy(iap_i)
        .unwrap()
        .cache_entry(&group)
        .unwrap()
        .japs()
        .next()
        .unwrap()
        .0;
    let jap_i = sim.proxy_index(jap_id).unwrap();
    let fp = rig_for(hook, sim.proxy(jap_i).unwrap(), now);
    let iap_addr = sim.proxy(iap_i).unwrap().config().overlay_addr;
    let jap_addr = sim.proxy(jap_i).unwrap().config().overlay_addr;
    let bindings: Vec<_> = sim.proxy(jap_i).unwrap().nat().iter().collect();
    assert_eq!(bindings.len(), 2);
    for b in bindings {
        let f = b.forward;
        let pkt = udp(
            SocketAddr::new(f.src, f.src_port),
            SocketAddr::new(f.dst, f.dst_port),
            b"to the tunnel",
        );
        let h = DataHeader {
            vni: sim.proxy(jap_i).unwrap().config().vni,
            flags: 0,
            hops: INITIAL_HOPS,
            epoch: 0,
            ingress: ProxyId(iap_i as u32 + 1),
        };
        let keys = DataKeys::new(&sim.proxy(jap_i).unwrap().config().master_key, 0);
        let mut frame = vec![0u8; pkt.len() + DATA_HEADER_LEN];
        h.encapsulate_tagged(keys.current(), &pkt, &mut frame).unwrap();
        let (v, want) = overlay(sim.proxy_mut(jap_i).unwrap(), now, iap_addr, &frame);
        assert_eq!(v, Verdict::Overlay(SocketAddr::new(service.ip(), 6081)));
        let r = fp
            .program()
            .test_run(&eth(&udp(iap_addr, jap_addr, &frame)), 1)
            .unwrap();
        let out = tx(&r);
        let outer = IpPacket::new_checked(out).unwrap();
        outer.verify_checksums().unwrap();
        let of = outer.flow().unwrap();
        assert_eq!(SocketAddr::new(of.src, of.src_port), jap_addr);
        assert_eq!(
            SocketAddr::new(of.dst, of.dst_port),
            SocketAddr::new(service.ip(), 6081)
        );
        assert_eq!(&out[28..], &want[..], "the core's TO_TARGET frame");
    }
    let c = fp.sync().maps().counters().unwrap();
    assert_eq!(c[counter("xdp_jap_tunnel_hit")], 2);
}

/// `replicate` 2 for the groups at port 5300, TCP and UDP.
fn replicate_5300(c: &mut pias_state::proxy::ProxyConfig) {
    c.policies.rules.push((
        GroupMatch {
            prefix: "0.0.0.0".parse().unwrap(),
            len: 0,
            port: Some(5300),
            proto: None,
        },
        GroupPolicy {
            target: TargetOptions {
                replicate: 2,
                ..TargetOptions::default()
            },
            ..GroupPolicy::default()
        },
    ));
}

fn tcp(src: SocketAddr, dst: SocketAddr, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 1600];
    let seg = Segment {
        flags,
        seq: 1000,
        ack: 2000,
        mss: None,
    };
    let n = tcp_segment(src, dst, seg, payload, &mut b).unwrap();
    b.truncate(n);
    b
}

/// The program fed only by the JAP's events (attached before the flows began): bindings the core delivers
/// by NAT are served byte for byte like the core — a TCP flow of a `replicate` group included, once the core
/// saw it established — and the UDP flows the core replicates are left to it.
fn events_drive_the_program_as_the_core_delivers(hook: Hook) {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x5a; 32]));
    for i in 0..5 {
        sim.add_proxy((10.0 * i as f64, 0.0), replicate_5300);
    }
    sim.run_for(Duration::from_secs(5));
    let nat = Sim::group(3, 5353, IpProtocol::Udp);
    let rep_udp = Sim::group(4, 5300, IpProtocol::Udp);
    let rep_tcp = Sim::group(5, 5300, IpProtocol::Tcp);
    let mut agents = vec![];
    for (i, (g, ip)) in [
        (nat, "10.2.0.1"),
        (rep_udp, "10.2.0.2"),
        (rep_udp, "10.2.0.3"),
        (rep_tcp, "10.2.0.4"),
        (rep_tcp, "10.2.0.5"),
    ]
    .into_iter()
    .enumerate()
    {
        let service = SocketAddr::new(ip.parse().unwrap(), g.port);
        agents.push(sim.add_target(&format!("t{i}"), service, g, (41.0, 1.0)));
    }
    sim.run_for(Duration::from_secs(2));
    let jap_id = sim.agent(agents[0]).unwrap().jap().expect("registered");
    for a in &agents {
        assert_eq!(sim.agent(*a).unwrap().jap(), Some(jap_id), "one JAP for all");
    }
    let jap_i = sim.proxy_index(jap_id).unwrap();
    let iap_i = (jap_i + 1) % 5;
    let iap_addr = Sim::overlay_addr(iap_i);
    let jap_addr = Sim::overlay_addr(jap_i);
    let now = sim.now();
    let mut fp = rig_for(hook, sim.proxy(jap_i).unwrap(), now);
    assert_eq!(fp.sync().counters().nat_installed, 0, "no flow yet");
    let vni = sim.proxy(jap_i).unwrap().config().vni;
    let keys = DataKeys::new(&sim.proxy(jap_i).unwrap().config().master_key, 0);
    let frame = |pkt: &[u8]| {
        let h = DataHeader {
            vni,
            flags: 0,
            hops: INITIAL_HOPS,
            epoch: 0,
            ingress: ProxyId(iap_i as u32 + 1),
        };
        let mut f = vec![0u8; pkt.len() + DATA_HEADER_LEN];
        h.encapsulate_tagged(keys.current(), pkt, &mut f).unwrap();
        f
    };
    // A packet through the core (its events applied to the program, as a driver does).
    let core = |sim: &mut Sim, fp: &mut XdpFastPath, from_iap: bool, pkt: &[u8]| {
        let (v, out) = if from_iap {
            overlay(sim.proxy_mut(jap_i).unwrap(), now, iap_addr, &frame(pkt))
        } else {
            host(sim.proxy_mut(jap_i).unwrap(), now, pkt)
        };
        assert_eq!(v, Verdict::Host);
        let p = sim.proxy_mut(jap_i).unwrap();
        let events: Vec<_> = core::iter::from_fn(|| p.poll_event()).collect();
        for ev in &events {
            fp.on_event(sim.proxy(jap_i).unwrap(), ev, now);
        }
        out
    };
    let client = SocketAddr::new("10.1.0.10".parse().unwrap(), 40000);
    let to = |g: TransportAddr| SocketAddr::new(g.ip, g.port);
    let from_iap = |fp: &XdpFastPath, pkt: &[u8]| {
        fp.program()
            .test_run(&eth(&udp(iap_addr, jap_addr, &frame(pkt))), 1)
            .unwrap()
    };

    // NAT: the first packet is the core's, the next the program's, identical.
    let q = udp(client, to(nat), b"q");
    core(&mut sim, &mut fp, true, &q);
    let want = core(&mut sim, &mut fp, true, &q);
    assert_eq!(tx(&from_iap(&fp, &q)), &want[..], "the core's NAT rewrite");

    // replicate, UDP: the core copies each packet; the program leaves them to it.
    let q = udp(client, to(rep_udp), b"q");
    core(&mut sim, &mut fp, true, &q);
    assert_eq!(fp.sync().counters().nat_slow_only, 1);
    let sent = sim.proxy(jap_i).unwrap().counters().replicas_sent;
    core(&mut sim, &mut fp, true, &q);
    assert_eq!(sim.proxy(jap_i).unwrap().counters().replicas_sent, sent + 1);
    assert_eq!(from_iap(&fp, &q).verdict, verdict::PASS);

    // replicate, TCP: plain NAT for the core, so for the program once established.
    let syn = tcp(client, to(rep_tcp), TcpFlags::SYN, b"");
    core(&mut sim, &mut fp, true, &syn);
    let b = sim
        .proxy(jap_i)
        .unwrap()
        .nat()
        .iter()
        .find(|b| b.forward.proto == IpProtocol::Tcp)
        .unwrap();
    let target = SocketAddr::new(b.reverse.src, b.reverse.src_port);
    let pool = SocketAddr::new(b.reverse.dst, b.reverse.dst_port);
    core(
        &mut sim,
        &mut fp,
        false,
        &tcp(target, pool, TcpFlags::SYN | TcpFlags::ACK, b""),
    );
    let data = tcp(client, to(rep_tcp), TcpFlags::ACK | TcpFlags::PSH, b"get");
    core(&mut sim, &mut fp, true, &data);
    assert_eq!(
        from_iap(&fp, &data).verdict,
        verdict::PASS,
        "not established in the maps yet"
    );
    fp.on_tick(sim.proxy(jap_i).unwrap(), now);
    let want = core(&mut sim, &mut fp, true, &data);
    assert_eq!(tx(&from_iap(&fp, &data)), &want[..], "the core's NAT rewrite");
    let reply = tcp(target, pool, TcpFlags::ACK | TcpFlags::PSH, b"200");
    let want = core(&mut sim, &mut fp, false, &reply);
    let r = fp.program().test_run(&eth(&reply), 1).unwrap();
    assert_eq!(tx(&r), &want[..], "the core's reverse rewrite");
    assert_eq!(fp.sync().counters().nat_installed, 2);
}

on_each_hook!(
    programs_mirror_real_proxies_byte_for_byte,
    tunnel_mode_frames_match_the_proxy,
    events_drive_the_program_as_the_core_delivers
);
