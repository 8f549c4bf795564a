//! Per-packet hot path of the NAT: parse, read the flow, rewrite both addresses and ports.
//!
//! Baseline: the same field writes followed by a full checksum recomputation of the same packet, so the
//! report reads as a ratio (incremental RFC 1624 update vs. recomputing RFC 1071 over the whole segment).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use pias_proto::ipv4::Ipv4Packet;
use pias_proto::ipv6::Ipv6Packet;
use pias_proto::packet::IpPacket;
use pias_proto::tcp::TcpPacket;

fn tcp_packet(v6: bool, payload: usize) -> Vec<u8> {
    let b = if v6 {
        PacketBuilder::ipv6(
            [0xfd, 0, 2, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
        )
    } else {
        PacketBuilder::ipv4([10, 250, 0, 2], [192, 0, 2, 1], 64)
    };
    let mut out = Vec::new();
    b.tcp(40000, 443, 1, 1000)
        .ack(5)
        .write(&mut out, &vec![0x61; payload])
        .unwrap();
    out
}

fn nat_targets(v6: bool) -> [(IpAddr, u16, IpAddr, u16); 2] {
    if v6 {
        let a: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0xaa, 0, 0, 0, 0, 7).into();
        let b: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0xbb, 0, 0, 0, 0, 9).into();
        let c: IpAddr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 2).into();
        let d: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into();
        [(a, 61000, b, 8443), (c, 40000, d, 443)]
    } else {
        let a: IpAddr = Ipv4Addr::new(198, 51, 100, 7).into();
        let b: IpAddr = Ipv4Addr::new(203, 0, 113, 200).into();
        let c: IpAddr = Ipv4Addr::new(10, 250, 0, 2).into();
        let d: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        [(a, 61000, b, 8443), (c, 40000, d, 443)]
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_rewrite");
    for (v6, payload) in [(false, 0), (false, 1400), (true, 0), (true, 1400)] {
        let name = format!("{}/{}B", if v6 { "v6" } else { "v4" }, payload);
        let mut buf = tcp_packet(v6, payload);
        let targets = nat_targets(v6);

        g.bench_function(BenchmarkId::new("flow", &name), |b| {
            b.iter(|| IpPacket::new_checked(black_box(&buf[..])).unwrap().flow())
        });
        // Alternate between two targets so that every iteration really changes the packet.
        let mut i = 0;
        g.bench_function(BenchmarkId::new("incremental", &name), |b| {
            b.iter(|| {
                let (s, sp, d, dp) = targets[i & 1];
                i += 1;
                let mut p = IpPacket::new_checked(black_box(&mut buf[..])).unwrap();
                let f = p.flow();
                p.set_src_dst(s, sp, d, dp).unwrap();
                f
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("incremental_set_src_then_set_dst", &name), |b| {
            b.iter(|| {
                let (s, sp, d, dp) = targets[i & 1];
                i += 1;
                let mut p = IpPacket::new_checked(black_box(&mut buf[..])).unwrap();
                let f = p.flow();
                p.set_src(s, sp).unwrap();
                p.set_dst(d, dp).unwrap();
                f
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("baseline_full_recompute", &name), |b| {
            b.iter(|| {
                let (s, sp, d, dp) = targets[i & 1];
                i += 1;
                let p = IpPacket::new_checked(black_box(&mut buf[..])).unwrap();
                let f = p.flow();
                let hl = p.ip_header_len();
                // The same field writes without checksum work, then both checksums from scratch.
                let b = p.into_inner();
                match (s, d) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        let mut ip = Ipv4Packet::new_unchecked(&mut *b);
                        ip.set_src_addr(s);
                        ip.set_dst_addr(d);
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        let mut ip = Ipv6Packet::new_unchecked(&mut *b);
                        ip.set_src_addr(s);
                        ip.set_dst_addr(d);
                    }
                    _ => unreachable!(),
                }
                let mut t = TcpPacket::new_unchecked(&mut b[hl..]);
                t.set_src_port(sp);
                t.set_dst_port(dp);
                IpPacket::new_checked(&mut *b).unwrap().recompute_checksums();
                f
            })
        });
        assert!(
            IpPacket::new_checked(&buf[..])
                .unwrap()
                .verify_checksums()
                .is_ok()
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
