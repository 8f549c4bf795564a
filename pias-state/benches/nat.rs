//! NAT table benchmarks, with a `std::collections::HashMap<FlowKey, u32>` lookup in the same run as the baseline
//! (same keys, same access order) so results read as ratios.
//!
//! Keys are visited in a shuffled order, so at 10^6 entries most lookups miss the CPU caches, as real traffic
//! does. Run: `cargo bench -p pias-state --bench nat -- --warm-up-time 1 --measurement-time 3`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pias_proto::{FlowKey, IpProtocol};
use pias_state::Instant;
use pias_state::nat::{NatConfig, NatTable};

fn key(i: u32) -> FlowKey {
    FlowKey {
        proto: IpProtocol::Udp,
        src: IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (i >> 6))),
        src_port: 1024 + (i & 63) as u16,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)),
        dst_port: 53,
    }
}

fn shuffled(n: u32, seed: u64) -> Vec<FlowKey> {
    let mut keys: Vec<FlowKey> = (0..n).map(key).collect();
    let mut s = seed;
    for i in (1..keys.len()).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        keys.swap(i, (s >> 33) as usize % (i + 1));
    }
    keys
}

fn table(n: u32, touch_granularity: Duration) -> NatTable {
    let pool = (1..=24)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    let mut cfg = NatConfig::with_pool(pool);
    cfg.max_entries = n;
    cfg.touch_granularity = touch_granularity;
    let mut t = NatTable::new(cfg, pias_state::secrets::table_key_for_tests(1)).unwrap();
    let target = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1));
    for i in 0..n {
        t.create(&key(i), (target, 53), i, Instant::ZERO).unwrap();
        while t.poll_event().is_some() {}
    }
    t
}

fn bench(c: &mut Criterion) {
    let now = Instant::from_secs(1);
    let mut g = c.benchmark_group("nat");
    for n in [1_000u32, 100_000, 1_000_000] {
        let keys = shuffled(n, 7);
        let base: HashMap<FlowKey, u32> = (0..n).map(|i| (key(i), i)).collect();
        let mut j = 0usize;
        g.bench_function(BenchmarkId::new("hashmap_get_baseline", n), |b| {
            b.iter(|| {
                j = if j + 1 == keys.len() { 0 } else { j + 1 };
                black_box(base.get(black_box(&keys[j])))
            })
        });
        drop(base);
        if n == 100_000 {
            // Exact LRU order: every hit relinks the binding (touching two random neighbours).
            let mut t = table(n, Duration::ZERO);
            g.bench_function(BenchmarkId::new("lookup_forward_hit_exact_order", n), |b| {
                b.iter(|| {
                    j = if j + 1 == keys.len() { 0 } else { j + 1 };
                    black_box(t.lookup_forward(black_box(&keys[j]), 100, now))
                })
            });
        }
        let mut t = table(n, Duration::from_secs(1));
        if n == 1_000_000 {
            println!(
                "nat: memory_bytes at {} entries = {} ({:.1} MB)",
                t.len(),
                t.memory_bytes(),
                t.memory_bytes() as f64 / 1e6
            );
        }
        g.bench_function(BenchmarkId::new("lookup_forward_hit", n), |b| {
            b.iter(|| {
                j = if j + 1 == keys.len() { 0 } else { j + 1 };
                black_box(t.lookup_forward(black_box(&keys[j]), 100, now))
            })
        });
        let rev: Vec<FlowKey> = keys.iter().map(|k| t.get_forward(k).unwrap().reverse).collect();
        g.bench_function(BenchmarkId::new("lookup_reverse_hit", n), |b| {
            b.iter(|| {
                j = if j + 1 == rev.len() { 0 } else { j + 1 };
                black_box(t.lookup_reverse(black_box(&rev[j]), 100, now))
            })
        });
        drop(rev);
        let mut miss = keys.clone();
        for k in &mut miss {
            k.dst_port = 54;
        }
        g.bench_function(BenchmarkId::new("lookup_forward_miss", n), |b| {
            b.iter(|| {
                j = if j + 1 == miss.len() { 0 } else { j + 1 };
                black_box(t.lookup_forward(black_box(&miss[j]), 100, now))
            })
        });
        // Creation in a full table: every create evicts the oldest binding (and frees its port).
        let target = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1));
        let mut next = n;
        g.bench_function(BenchmarkId::new("create_at_bound_evicting", n), |b| {
            b.iter(|| {
                let r = t.create(black_box(&key(next)), (target, 53), 0, now);
                next = next.wrapping_add(1);
                while t.poll_event().is_some() {}
                black_box(r)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
