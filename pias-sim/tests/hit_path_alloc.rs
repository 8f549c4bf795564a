//! The core's hit paths allocate nothing: an IAP cache hit (`handle_host` → data frame to the JAP) and a
//! JAP NAT hit (`handle_overlay` → translated packet to the target), counted by a global allocator that
//! tallies the allocations of the calling thread while a flag is up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use pias_proto::IpProtocol;
use pias_proto::auth::MasterKey;
use pias_proto::build::udp_packet;
use pias_sim::{Sim, SimConfig};
use pias_state::proxy::{HEADROOM, PacketBuf, Verdict};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(|n| n.get())
}

#[test]
fn iap_hit_and_nat_hit_allocate_nothing() {
    // The counter itself works: a Vec allocates.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);

    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x11; 32]));
    sim.add_proxy((0.0, 0.0), |_| {});
    sim.add_proxy((10.0, 0.0), |_| {});
    sim.run_for(Duration::from_secs(4));
    let group = Sim::group(1, 5300, IpProtocol::Udp);
    let client = sim.add_client("10.1.0.10".parse().unwrap(), (-1.0, 0.0));
    sim.add_target("t1", "10.2.0.1:5300".parse().unwrap(), group, (11.0, 0.0));
    sim.run_for(Duration::from_secs(2));
    // Warm the IAP's cache and the JAP's NAT binding for this flow.
    sim.send_udp(client, 40000, group, 1, b"warm");
    sim.run_for(Duration::from_millis(200));

    let mut pkt = vec![0u8; 256];
    let n = udp_packet(
        "10.1.0.10:40000".parse().unwrap(),
        SocketAddr::new(group.ip, group.port),
        &[7u8; 64],
        &mut pkt,
    )
    .unwrap();
    let now = sim.now();
    let mut buf = vec![0u8; 2048];

    // The IAP hit: every call encapsulates to the JAP.
    let mut frame = Vec::with_capacity(2048);
    let iap = sim.proxy_mut(0).unwrap();
    let mut hits = 0;
    let allocs = allocations(|| {
        for _ in 0..1000 {
            buf[HEADROOM..HEADROOM + n].copy_from_slice(&pkt[..n]);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
            if matches!(iap.handle_host(now, &mut pb), Verdict::Overlay(_)) {
                hits += 1;
                frame.clear();
                frame.extend_from_slice(pb.bytes());
            }
        }
    });
    assert_eq!(hits, 1000, "the client packet must hit the IAP cache");
    assert_eq!(allocs, 0, "the IAP hit path allocated");

    // The JAP hit: every call verifies the tag, decapsulates and translates.
    let from = Sim::overlay_addr(0);
    let jap = sim.proxy_mut(1).unwrap();
    let mut hits = 0;
    let allocs = allocations(|| {
        for _ in 0..1000 {
            buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + frame.len());
            if jap.handle_overlay(now, from, &mut pb) == Verdict::Host {
                hits += 1;
            }
        }
    });
    assert_eq!(hits, 1000, "the frame must hit the JAP's NAT binding");
    assert_eq!(allocs, 0, "the JAP NAT hit path allocated");
}
