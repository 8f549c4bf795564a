//! Instruction count of the IAP hit path (argument `iap`, the default) or the JAP NAT hit path (`jap`), for `valgrind --tool=callgrind` (counts instructions, not time,
//! so the figure is repeatable on a busy machine). Sets up two proxies and a target in the simulator,
//! then calls `handle_host` N times with the same client packet (a cache hit that encapsulates to the JAP).
//!
//! ```text
//! cargo build --release -p pias-sim --example hot_iap
//! valgrind --tool=callgrind target/release/examples/hot_iap 0        # setup only
//! valgrind --tool=callgrind target/release/examples/hot_iap 200000   # setup + 200k hits
//! valgrind --tool=callgrind target/release/examples/hot_iap 200000 jap  # the JAP's NAT hit instead
//! ```
//! (difference of the two totals) / 200000 = instructions per packet.
use pias_proto::IpProtocol;
use pias_proto::auth::MasterKey;
use pias_proto::build::udp_packet;
use pias_sim::{Sim, SimConfig};
use pias_state::proxy::{HEADROOM, PacketBuf, Verdict};
use std::net::SocketAddr;
use std::time::Duration;
fn main() {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x11; 32]));
    sim.add_proxy((0.0, 0.0), |_| {});
    sim.add_proxy((10.0, 0.0), |_| {});
    sim.run_for(Duration::from_secs(4));
    let group = Sim::group(1, 5300, IpProtocol::Udp);
    let client = sim.add_client("10.1.0.10".parse().unwrap(), (-1.0, 0.0));
    sim.add_target("t1", "10.2.0.1:5300".parse().unwrap(), group, (11.0, 0.0));
    sim.run_for(Duration::from_secs(2));
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
    let iters: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let jap = std::env::args().nth(2).is_some_and(|s| s == "jap");
    // The frame the IAP makes of the packet: what the JAP receives.
    buf[HEADROOM..HEADROOM + n].copy_from_slice(&pkt[..n]);
    let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
    let _ = sim.proxy_mut(0).map(|p| p.handle_host(now, &mut pb));
    let frame = pb.bytes().to_vec();
    let mut k = 0u64;
    if jap {
        let from = Sim::overlay_addr(0);
        let Some(p) = sim.proxy_mut(1) else { return };
        for _ in 0..iters {
            buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + frame.len());
            if p.handle_overlay(now, from, &mut pb) == Verdict::Host {
                k += 1;
            }
        }
    } else {
        let Some(p) = sim.proxy_mut(0) else { return };
        for _ in 0..iters {
            buf[HEADROOM..HEADROOM + n].copy_from_slice(&pkt[..n]);
            let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
            if matches!(p.handle_host(now, &mut pb), Verdict::Overlay(_)) {
                k += 1;
            }
        }
    }
    println!("{k}");
}
