//! Target policies across JAPs (SPEC.md §9.5): a group member alone at its JAP that sends to its own group
//! (`exclude_sender`, the paper's P2P and game cases) is served by a member at another JAP — the JAP hands
//! the flow to the group's RAP, which relays it to the next JAP by the policy's order.
//!
//! Five proxies on a line 10 ms apart (p1 … p5); member m1 next to p1 (its IAP and, by proximity, its JAP),
//! member m5 next to p5; policy `proximity` with `exclude_sender`.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use pias_proto::auth::MasterKey;
use pias_proto::{IpProtocol, TransportAddr};
use pias_sim::{HostId, Sim, SimConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn replies_from(sim: &Sim, h: HostId, id: u64) -> Vec<String> {
    sim.received(h)
        .iter()
        .filter(|r| r.payload.len() >= 8 && u64::from_be_bytes(r.payload[..8].try_into().unwrap()) == id)
        .map(|r| String::from_utf8_lossy(&r.payload[8..]).into_owned())
        .collect()
}

fn world() -> (Sim, TransportAddr, HostId, HostId) {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x5a; 32]));
    for i in 0..5 {
        sim.add_proxy((10.0 * i as f64, 0.0), |c| {
            c.policies.default.target.exclude_sender = true;
        });
    }
    sim.run_for(Duration::from_secs(10));
    let group = Sim::group(4, 27015, IpProtocol::Udp);
    let m1 = sim.add_target(
        "m1",
        SocketAddr::new(ip("10.2.0.1"), group.port),
        group,
        (1.0, 1.0),
    );
    let m5 = sim.add_target(
        "m5",
        SocketAddr::new(ip("10.2.0.5"), group.port),
        group,
        (41.0, 1.0),
    );
    sim.run_for(Duration::from_secs(2));
    (sim, group, m1, m5)
}

#[test]
fn a_member_alone_at_its_jap_is_served_by_a_member_at_another_jap() {
    let (mut sim, group, m1, m5) = world();
    for k in 0..20u64 {
        sim.send_udp(m1, 40_000 + k as u16, group, 100 + k, b"m1");
        sim.send_udp(m5, 40_000 + k as u16, group, 200 + k, b"m5");
        sim.run_for(Duration::from_millis(150));
    }
    sim.run_for(Duration::from_millis(300));
    for k in 0..20u64 {
        assert_eq!(replies_from(&sim, m1, 100 + k), vec!["m1@m5"], "m1's packet {k}");
        assert_eq!(replies_from(&sim, m5, 200 + k), vec!["m5@m1"], "m5's packet {k}");
    }
    let (p1, p5) = (sim.proxy(0).unwrap(), sim.proxy(4).unwrap());
    // The JAPs handed the flows off instead of dropping them and invalidating their IAPs.
    assert!(p1.counters().jap_handoffs >= 20, "{:?}", p1.counters());
    assert!(p5.counters().jap_handoffs >= 20, "{:?}", p5.counters());
    for i in 0..5 {
        let p = sim.proxy(i).unwrap();
        assert_eq!(p.counters().drop_no_target, 0, "p{}", i + 1);
        assert_eq!(p.counters().invalidations_sent, 0, "p{}", i + 1);
        assert_eq!(p.iap().counters().invalidations, 0, "p{}", i + 1);
    }
    let relayed: u64 = (0..5)
        .map(|i| sim.proxy(i).unwrap().counters().rap_handoffs)
        .sum();
    assert!(relayed >= 40, "{relayed}");
    // p1 still serves the group's other clients with m1.
    let c = sim.add_client(ip("10.1.0.10"), (-1.0, 1.0));
    sim.send_udp(c, 41_000, group, 300, b"c");
    sim.run_for(Duration::from_millis(500));
    assert_eq!(replies_from(&sim, c, 300), vec!["c@m1"]);
}

/// Alone in the group, a member has no one to be served by: the handed-off packet is dropped at the RAP
/// (no other JAP), counted, and never handed off twice.
#[test]
fn a_lone_member_is_not_served_and_nothing_loops() {
    let (mut sim, group, m1, m5) = world();
    sim.kill_target(m5);
    sim.run_for(Duration::from_secs(3));
    for k in 0..10u64 {
        sim.send_udp(m1, 42_000 + k as u16, group, 400 + k, b"m1");
        sim.run_for(Duration::from_millis(150));
    }
    sim.run_for(Duration::from_millis(300));
    for k in 0..10u64 {
        assert!(replies_from(&sim, m1, 400 + k).is_empty());
    }
    let handoffs: u64 = (0..5)
        .map(|i| sim.proxy(i).unwrap().counters().jap_handoffs)
        .sum();
    let no_jap: u64 = (0..5).map(|i| sim.proxy(i).unwrap().counters().drop_no_jap).sum();
    assert!(handoffs >= 10, "{handoffs}");
    assert!(no_jap >= 10, "the RAP finds no other JAP: {no_jap}");
    let relayed: u64 = (0..5)
        .map(|i| sim.proxy(i).unwrap().counters().rap_handoffs)
        .sum();
    assert_eq!(relayed, 0);
}
