//! Per-packet cost of the proxy's forwarding paths, measured on real `Proxy` instances that a simulated
//! overlay brought to a steady state (membership converged, target registered, caches and NAT warm):
//! - IAP cache hit: a client packet in, a data frame to the JAP out (`handle_host`, encapsulation in place);
//! - JAP NAT hit: that data frame in, the translated packet to the target out (`handle_overlay`);
//! - JAP reply: the target's reply in, the packet to the client out (reverse NAT).
//!
//! Baseline in the same run: copying the packet into the work buffer and parsing its flow (work any
//! forwarder does), so BENCHMARKS.md can state each path as a ratio.
#![allow(missing_docs, unreachable_pub)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pias_proto::IpProtocol;
use pias_proto::auth::MasterKey;
use pias_proto::build::udp_packet;
use pias_proto::packet::IpPacket;
use pias_sim::{Sim, SimConfig};
use pias_state::proxy::{HEADROOM, PacketBuf, Verdict};

fn setup() -> (Sim, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x11; 32]));
    sim.add_proxy((0.0, 0.0), |_| {});
    sim.add_proxy((10.0, 0.0), |_| {});
    sim.run_for(Duration::from_secs(4));
    let group = Sim::group(1, 5300, IpProtocol::Udp);
    let client = sim.add_client("10.1.0.10".parse().unwrap(), (-1.0, 0.0));
    sim.add_target("t1", "10.2.0.1:5300".parse().unwrap(), group, (11.0, 0.0));
    sim.run_for(Duration::from_secs(2));
    // Warm the IAP cache and the JAP's NAT binding with one real exchange.
    sim.send_udp(client, 40000, group, 1, b"warm");
    sim.run_for(Duration::from_millis(200));
    sim.send_udp(client, 40000, group, 2, b"warm");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        sim.received(client).len(),
        2,
        "the warm-up exchange must complete"
    );
    let mut pkt = vec![0u8; 256];
    let n = udp_packet(
        "10.1.0.10:40000".parse().unwrap(),
        SocketAddr::new(group.ip, group.port),
        &[7u8; 64],
        &mut pkt,
    )
    .unwrap();
    pkt.truncate(n);
    // The frame p1 makes of it (what p2 receives), and the target's reply (what p2's TUN gives it).
    let now = sim.now();
    let mut buf = vec![0u8; 2048];
    buf[HEADROOM..HEADROOM + n].copy_from_slice(&pkt);
    let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
    let v = sim.proxy_mut(0).unwrap().handle_host(now, &mut pb);
    assert!(
        matches!(v, Verdict::Overlay(_)),
        "IAP hit must encapsulate: {v:?}"
    );
    let frame = pb.bytes().to_vec();
    let mut b2 = vec![0u8; 2048];
    b2[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
    let mut pb = PacketBuf::new(&mut b2, HEADROOM, HEADROOM + frame.len());
    let v = sim
        .proxy_mut(1)
        .unwrap()
        .handle_overlay(now, Sim::overlay_addr(0), &mut pb);
    assert_eq!(v, Verdict::Host, "JAP hit must translate");
    let to_target = IpPacket::new_checked(pb.bytes().to_vec()).unwrap();
    let f = to_target.flow().unwrap();
    let mut reply = vec![0u8; 256];
    let m = udp_packet(
        SocketAddr::new(f.dst, f.dst_port),
        SocketAddr::new(f.src, f.src_port),
        &[8u8; 64],
        &mut reply,
    )
    .unwrap();
    reply.truncate(m);
    (sim, pkt, frame, reply)
}

fn datapath(c: &mut Criterion) {
    let (mut sim, pkt, frame, reply) = setup();
    let now = sim.now();
    let p1_addr = Sim::overlay_addr(0);
    let mut buf = vec![0u8; 2048];
    let mut g = c.benchmark_group("datapath");
    g.bench_function("baseline_copy_parse_flow", |b| {
        b.iter(|| {
            buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
            let p = IpPacket::new_checked(&buf[HEADROOM..HEADROOM + pkt.len()]).unwrap();
            black_box(p.flow())
        })
    });
    g.bench_function("iap_cache_hit_encap", |b| {
        let p = sim.proxy_mut(0).unwrap();
        b.iter(|| {
            buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
            black_box(p.handle_host(now, &mut pb))
        })
    });
    g.bench_function("jap_nat_hit_decap_rewrite", |b| {
        let p = sim.proxy_mut(1).unwrap();
        b.iter(|| {
            buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + frame.len());
            black_box(p.handle_overlay(now, p1_addr, &mut pb))
        })
    });
    g.bench_function("jap_reply_reverse_nat", |b| {
        let p = sim.proxy_mut(1).unwrap();
        b.iter(|| {
            buf[HEADROOM..HEADROOM + reply.len()].copy_from_slice(&reply);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + reply.len());
            black_box(p.handle_host(now, &mut pb))
        })
    });
    g.finish();
}

criterion_group!(benches, datapath);
criterion_main!(benches);
