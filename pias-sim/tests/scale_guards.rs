//! CI guards for the membership scale properties (SPEC.md §7.8): a small run of the membership
//! experiment with real proxies on the transit-stub topology, with asserted bounds, so that a regression in
//! any of them fails `cargo test`. The full-size figures are in docs/scale/membership.md; these bounds are
//! the targets, which the small world meets with the same margin as the large ones.
//!
//! Runs in the debug profile (as scripts/test-all.sh does) in well under a minute.

use pias_sim::experiments::{MembershipParams, membership};

/// The experiment's CSV as (column, value) pairs of its one row.
fn row(p: &MembershipParams) -> Vec<(String, f64)> {
    let o = membership(p, &mut |_| {}).expect("the experiment runs");
    let csv = &o
        .files
        .iter()
        .find(|(name, _)| name == "membership.csv")
        .expect("membership.csv")
        .1;
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().expect("header").split(',').collect();
    let vals: Vec<f64> = lines
        .next()
        .expect("one row")
        .split(',')
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    head.into_iter().map(String::from).zip(vals).collect()
}

fn get(r: &[(String, f64)], k: &str) -> f64 {
    r.iter()
        .find(|(c, _)| c == k)
        .unwrap_or_else(|| panic!("no column {k}"))
        .1
}

fn small(seed: u64) -> MembershipParams {
    MembershipParams {
        seed,
        sizes: vec![80],
        // Past the coordinates' start-up phase (60 s, SPEC.md §7.5): the steady state.
        settle_s: 70.0,
        steady_s: 5.0,
        churn_s: 0.0,
        partition_s: 6.0,
        jitter_settle_s: 10.0,
        ..MembershipParams::default()
    }
}

#[test]
fn membership_scale_bounds_hold() {
    for seed in [1, 2] {
        let r = row(&small(seed));
        eprintln!("seed {seed}: {r:?}");
        let at_rest = get(&r, "steady_bytes_per_proxy_s");
        assert!(
            at_rest <= 1000.0,
            "seed {seed}: {at_rest} bytes/s per proxy at rest"
        );
        assert_eq!(
            get(&r, "steady_suspects_per_proxy_s"),
            0.0,
            "seed {seed}: false suspicion at rest"
        );
        let crash = get(&r, "crash_converge_s");
        assert!(crash <= 2.0, "seed {seed}: crash known by all after {crash} s");
        let heal = get(&r, "heal_converge_s");
        assert!(heal <= 2.0, "seed {seed}: partition healed after {heal} s");
        for phase in ["jitter", "tail"] {
            // At most one coordinate re-flood per coord_flood_spacing (10 s) in the whole overlay.
            let recs = get(&r, &format!("{phase}_records_per_proxy_s"));
            assert!(
                recs <= 0.1,
                "seed {seed}: {recs} records/s per proxy under {phase} jitter"
            );
            let bytes = get(&r, &format!("{phase}_bytes_per_proxy_s"));
            assert!(
                bytes <= 1000.0,
                "seed {seed}: {bytes} bytes/s per proxy under {phase} jitter"
            );
            let suspects = get(&r, &format!("{phase}_suspects_per_proxy_s"));
            assert_eq!(suspects, 0.0, "seed {seed}: false suspicion under {phase} jitter");
        }
    }
}
