//! Membership at 10^5 members: applying one superseding record (table replace, incremental digest tree,
//! ring index, flood queues), against a baseline measured in the same run (a `hashbrown` insert of the
//! same 48-byte record into a 10^5-entry map). Also prints the table's memory at 10^5.
#![allow(missing_docs, unreachable_pub)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use pias_proto::ProxyId;
use pias_proto::auth::SipKey;
use pias_proto::control::{MemberStatus, ProxyRecord};
use pias_state::Instant;
use pias_state::membership::{Membership, MembershipConfig};

const KEY: SipKey = SipKey {
    k0: 0x0123_4567_89ab_cdef,
    k1: 0xfedc_ba98_7654_3210,
};
const N: u32 = 100_000;

fn rec(id: u32, version: u32) -> ProxyRecord {
    ProxyRecord {
        id: ProxyId(id),
        incarnation: 1,
        version,
        status: MemberStatus::Alive,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | id)), 6081),
        coord: [0; 16],
    }
}

fn membership(c: &mut Criterion) {
    let mut m = Membership::new(
        MembershipConfig::default(),
        rec(1, 1),
        KEY,
        pias_state::secrets::Secrets::from_seed_for_tests(7).nonce_key(),
        7,
        Instant::ZERO,
    );
    for id in 2..=N {
        m.apply_record_for_test(Instant::ZERO, rec(id, 1));
    }
    println!(
        "membership at {} members: memory_bytes = {} ({:.1} MB)",
        m.len(),
        m.memory_bytes(),
        m.memory_bytes() as f64 / 1e6
    );
    let mut g = c.benchmark_group("membership_1e5");
    let mut id = 1u32;
    let mut version = 1u32;
    g.bench_function("apply_superseding_record", |b| {
        b.iter(|| {
            id = if id >= N { 2 } else { id + 1 };
            if id == 2 {
                version += 1;
            }
            m.apply_record_for_test(Instant::ZERO, black_box(rec(id, version)));
        })
    });
    while m.poll_event().is_some() {}

    let mut map: std::collections::HashMap<u32, ProxyRecord> = (2..=N).map(|i| (i, rec(i, 1))).collect();
    let mut id = 1u32;
    g.bench_function("baseline_std_hashmap_insert_record", |b| {
        b.iter(|| {
            id = if id >= N { 2 } else { id + 1 };
            map.insert(id, black_box(rec(id, 2)));
        })
    });
    g.finish();
}

criterion_group!(benches, membership);
criterion_main!(benches);
