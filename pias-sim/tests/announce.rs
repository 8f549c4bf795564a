//! The health-gated announcement (SPEC.md §7.7) in a five-proxy overlay: a proxy cut off from every other
//! member withdraws within its hold-down and returns after its hold-up once the cut heals; a proxy that
//! still reaches some member (either side of a larger split) keeps announcing, and so do the survivors of a
//! crash.

use core::time::Duration;

use pias_proto::auth::MasterKey;
use pias_sim::{Sim, SimConfig};
use pias_state::proxy::AnnounceReason;

fn five() -> Sim {
    let mut sim = Sim::new(SimConfig::default(), MasterKey::from_bytes([0x5a; 32]));
    for i in 0..5 {
        sim.add_proxy((10.0 * i as f64, 0.0), |_| {});
    }
    sim.run_for(Duration::from_secs(5));
    for i in 0..5 {
        let a = sim.proxy(i).unwrap().announce();
        assert!(a.up && a.reason == AnnounceReason::Healthy, "p{} {a:?}", i + 1);
    }
    sim
}

fn up(sim: &Sim, i: usize) -> bool {
    sim.proxy(i).unwrap().announce().up
}

#[test]
fn a_cut_off_proxy_withdraws_and_the_rest_stay() {
    let mut sim = five();
    let hold = sim.proxy(0).unwrap().config().announce;
    sim.partition(&[0], &[1, 2, 3, 4]);
    let took = sim
        .run_until(Duration::from_secs(10), |s| !up(s, 0))
        .expect("p1 withdraws");
    assert!(
        took <= hold.hold_down + Duration::from_millis(300),
        "withdrawn after {took:?}"
    );
    assert_eq!(sim.proxy(0).unwrap().announce().reason, AnnounceReason::Isolated);
    sim.run_for(Duration::from_secs(20));
    assert!(!up(&sim, 0), "stays withdrawn while cut off (no flapping)");
    for i in 1..5 {
        assert!(up(&sim, i), "p{} still reaches the others: announced", i + 1);
    }
    sim.heal();
    let back = sim
        .run_until(Duration::from_secs(30), |s| up(s, 0))
        .expect("p1 announces again after the heal");
    assert!(
        back >= hold.hold_up,
        "announced {back:?} after the heal, before the hold-up"
    );
    eprintln!("withdrawn {took:?} after the cut, announced {back:?} after the heal");
    assert_eq!(sim.proxy(0).unwrap().counters().announce_withdrawals, 1);
}

#[test]
fn both_sides_of_a_split_that_still_reach_a_member_stay_announced() {
    let mut sim = five();
    sim.partition(&[0, 1], &[2, 3, 4]);
    sim.run_for(Duration::from_secs(15));
    for i in 0..5 {
        assert!(up(&sim, i), "p{}: {:?}", i + 1, sim.proxy(i).unwrap().announce());
    }
}

#[test]
fn the_survivors_of_a_crash_stay_announced() {
    let mut sim = five();
    sim.crash_proxy(2);
    sim.run_for(Duration::from_secs(15));
    for i in [0, 1, 3, 4] {
        assert!(up(&sim, i), "p{}: {:?}", i + 1, sim.proxy(i).unwrap().announce());
        assert_eq!(sim.proxy(i).unwrap().counters().announce_withdrawals, 0);
    }
}
