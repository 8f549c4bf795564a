//! Hot-path hashing costs: the per-flow hash, the Maglev pick, and RAP lookups at 10^3..10^5 proxies,
//! against two baselines (an empty `black_box` and a std `HashMap` lookup) measured in the same run.
#![allow(missing_docs, unreachable_pub)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pias_proto::auth::SipKey;
use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr};
use pias_state::flowhash::{MaglevTable, flow_hash};
use pias_state::ring::{DEFAULT_K, DEFAULT_VNODES, Raps, Ring};

const KEY: SipKey = SipKey {
    k0: 0x0123_4567_89ab_cdef,
    k1: 0xfedc_ba98_7654_3210,
};

fn groups(n: u32) -> Vec<TransportAddr> {
    (0..n)
        .map(|i| {
            TransportAddr::new(
                IpAddr::V4(Ipv4Addr::from(0xc633_6400 ^ i.wrapping_mul(2_654_435_761))),
                (i % 1000) as u16,
                IpProtocol::Udp,
            )
        })
        .collect()
}

fn baselines(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.bench_function("black_box", |b| b.iter(|| black_box(7u64)));
    let map: HashMap<u64, u32> = (0..10_000u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i as u32))
        .collect();
    let mut i = 0u64;
    g.bench_function("hashmap_get_10k", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            black_box(map.get(&black_box(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))))
        })
    });
    g.finish();
}

fn flows(c: &mut Criterion) {
    let v4 = FlowKey {
        proto: IpProtocol::Tcp,
        src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        src_port: 49_152,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        dst_port: 443,
    };
    let v6 = FlowKey {
        proto: IpProtocol::Udp,
        src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)),
        src_port: 49_152,
        dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53)),
        dst_port: 53,
    };
    let mut g = c.benchmark_group("flowhash");
    g.bench_function("flow_hash_v4", |b| {
        b.iter(|| flow_hash(black_box(&KEY), black_box(&v4)))
    });
    g.bench_function("flow_hash_v6", |b| {
        b.iter(|| flow_hash(black_box(&KEY), black_box(&v6)))
    });
    let japs: Vec<(ProxyId, u32)> = (1..=8).map(|i| (ProxyId(i * 37), i)).collect();
    let table = MaglevTable::build(&KEY, &japs);
    let mut h = 0u64;
    g.bench_function("maglev_pick", |b| {
        b.iter(|| {
            h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
            table.pick(black_box(h))
        })
    });
    g.bench_function("flow_hash_then_pick_v4", |b| {
        b.iter(|| table.pick(flow_hash(black_box(&KEY), black_box(&v4))))
    });
    g.bench_function("maglev_build_8", |b| {
        b.iter(|| MaglevTable::build(black_box(&KEY), black_box(&japs)))
    });
    g.finish();
}

fn rings(c: &mut Criterion) {
    let gs = groups(4096);
    let mut g = c.benchmark_group("ring_raps");
    for n in [1_000u32, 10_000, 100_000] {
        let mut ring = Ring::new(KEY, DEFAULT_VNODES);
        let _ = ring.rebuild((1..=n).map(ProxyId));
        if n == 100_000 {
            println!(
                "Ring at {n} proxies x {DEFAULT_VNODES} vnodes: {} points, memory_bytes = {} ({:.1} MiB)",
                ring.points(),
                ring.memory_bytes(),
                ring.memory_bytes() as f64 / (1024.0 * 1024.0)
            );
        }
        let mut out = Raps::new();
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &ring, |b, ring| {
            b.iter(|| {
                i = (i + 1) & 4095;
                ring.raps(black_box(&gs[i]), DEFAULT_K, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();

    let mut ring = Ring::new(KEY, DEFAULT_VNODES);
    let _ = ring.rebuild((1..=100_000u32).map(ProxyId));
    let mut g = c.benchmark_group("ring_churn_100k");
    g.sample_size(10);
    g.bench_function("insert_then_remove", |b| {
        b.iter(|| {
            let _ = ring.insert(ProxyId(200_000));
            ring.remove(ProxyId(200_000))
        })
    });
    g.finish();
}

criterion_group!(benches, baselines, flows, rings);
criterion_main!(benches);
