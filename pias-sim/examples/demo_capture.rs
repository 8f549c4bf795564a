//! Runs a small PIAS overlay in the simulator and writes what crossed it as a pcap file, with the master
//! key beside it, so `pias decode` can show the protocol at work: membership probes, a target's
//! registration, the JAP's report to the group's RAPs, and a client's first packet taking the 4-segment path
//! (IAP → RAP → JAP) while later ones take 3 (IAP → JAP).
//!
//! `cargo run -p pias-sim --example demo_capture -- OUT.pcap` writes OUT.pcap and OUT.key.

use std::net::SocketAddr;
use std::time::Duration;

use pias_proto::IpProtocol;
use pias_proto::auth::MasterKey;
use pias_proto::build::udp_packet;
use pias_proto::pcap::PcapWriter;
use pias_sim::{Sim, SimConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "pias-demo.pcap".to_string());
    let master = MasterKey::from_bytes(*b"pias demo key - never use it! ..");
    let mut sim = Sim::new(SimConfig::default(), master.clone());
    for i in 0..5 {
        sim.add_proxy((10.0 * i as f64, 0.0), |_| {});
    }
    sim.run_for(Duration::from_secs(5));
    // A group whose first RAP is neither the client's IAP (p1) nor the target's JAP (p5).
    let p1 = sim.proxy(0).ok_or("proxy 1 did not start")?;
    let group = (1..200u16)
        .map(|port| Sim::group(1, 5000 + port, IpProtocol::Udp))
        .find(|g| matches!(p1.raps_of(g).first(), Some(r) if r.0 == 2 || r.0 == 3))
        .ok_or("no suitable group")?;
    let client = sim.add_client("10.1.0.10".parse()?, (-1.0, 1.0));
    sim.capture_overlay(true);
    sim.add_target(
        "t1",
        SocketAddr::new("10.2.0.1".parse()?, group.port),
        group,
        (41.0, 1.0),
    );
    sim.run_for(Duration::from_millis(600));
    for id in 1..=3 {
        sim.send_udp(client, 40000, group, id, b"hello");
        sim.run_for(Duration::from_millis(200));
    }
    let mut w = PcapWriter::new();
    let mut buf = vec![0u8; 2048];
    for c in sim.captured() {
        let n = udp_packet(c.from, c.to, &c.bytes, &mut buf)?;
        w.push(c.at.as_micros(), &buf[..n]);
    }
    std::fs::write(&out, w.bytes())?;
    let key = format!("{}.key", out.trim_end_matches(".pcap"));
    std::fs::write(&key, master.to_hex() + "\n")?;
    println!(
        "wrote {} overlay datagrams to {out} (master key in {key}); group {group}",
        sim.captured().len()
    );
    println!("replies the client got: {}", sim.received(client).len());
    Ok(())
}
