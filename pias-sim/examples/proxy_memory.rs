//! Heap bytes one `Proxy` allocates at start with the default configuration and with the small
//! configuration the scale experiments use (`pias_sim::experiments::small_proxy_config`).
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use pias_proto::ProxyId;
use pias_proto::auth::MasterKey;
use pias_sim::Sim;
use pias_state::Instant;
use pias_state::proxy::{Proxy, ProxyConfig};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn measure(name: &str, tune: impl FnOnce(&mut ProxyConfig)) {
    let mut cfg = ProxyConfig::new(
        ProxyId(1),
        Sim::overlay_addr(0),
        MasterKey::from_bytes([1; 32]),
        Sim::pool(0).to_vec(),
        vec![],
    );
    tune(&mut cfg);
    let before = LIVE.load(Ordering::Relaxed);
    let p = Proxy::new(
        cfg,
        &pias_state::secrets::Secrets::from_seed_for_tests(1),
        Instant::from_secs(1),
    )
    .unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    println!("{name}: {:.2} MB", (after - before) as f64 / 1e6);
    drop(p);
}

fn main() {
    measure("default ProxyConfig", |_| {});
    measure("sim ProxyConfig", pias_sim::experiments::small_proxy_config);
    if std::env::args().any(|a| a == "--parts") {
        let s = pias_sim::experiments::small_proxy_config;
        measure("  iap 16", |c| {
            s(c);
            c.iap.cache_entries = 16
        });
        measure("  nat 16", |c| {
            s(c);
            c.nat.max_entries = 16
        });
        measure("  rap 16", |c| {
            s(c);
            c.rap.max_groups = 16
        });
        measure("  registry 16", |c| {
            s(c);
            c.registry.max_registrations = 16;
            c.registry.max_derived_keys = 16;
            c.registry.max_tombstones = 16;
            c.registry.event_queue = 16;
            c.registry.reply_queue = 16;
        });
        measure("  membership queues 16", |c| {
            s(c);
            c.membership.stranger_windows = 16;
            c.membership.event_queue = 16;
            c.membership.out_queue = 16;
        });
        measure("  all 16", |c| {
            s(c);
            c.iap.cache_entries = 16;
            c.nat.max_entries = 16;
            c.rap.max_groups = 16;
            c.registry.max_registrations = 16;
            c.registry.max_derived_keys = 16;
            c.registry.max_tombstones = 16;
            c.registry.event_queue = 16;
            c.registry.reply_queue = 16;
            c.membership.stranger_windows = 16;
            c.membership.event_queue = 16;
            c.membership.out_queue = 16;
            c.event_capacity = 16;
            c.outbox_capacity = 16;
            c.nat.port_min = 60000;
        });
        measure("  events/outbox 16", |c| {
            s(c);
            c.event_capacity = 16;
            c.outbox_capacity = 16;
        });
    }
}
