//! Each scale experiment, in a small version, run twice with the same seed: the outputs (CSV, SVG,
//! Markdown) are identical byte for byte. Wall-clock timings live in separate files and are not compared.

use pias_sim::experiments::{
    ChurnParams, FlashParams, MemberTableParams, MembershipParams, Output, StretchParams, churn, flash,
    member_table, membership, stretch,
};

fn twice(f: impl Fn() -> Output) {
    let a = f();
    let b = f();
    assert!(!a.files.is_empty());
    assert_eq!(a.files.len(), b.files.len());
    for ((na, fa), (nb, fb)) in a.files.iter().zip(&b.files) {
        assert_eq!(na, nb);
        assert!(fa == fb, "{na} differs between two runs with the same seed");
    }
}

fn quiet(_: &str) {}

#[test]
fn stretch_is_deterministic() {
    twice(|| stretch(&StretchParams::small(), &mut quiet).unwrap());
}

#[test]
fn membership_is_deterministic() {
    twice(|| membership(&MembershipParams::small(), &mut quiet).unwrap());
}

#[test]
fn member_table_is_deterministic() {
    twice(|| member_table(&MemberTableParams::small(), &mut quiet).unwrap());
}

#[test]
fn churn_is_deterministic() {
    twice(|| churn(&ChurnParams::small(), &mut quiet).unwrap());
}

#[test]
fn flash_is_deterministic() {
    twice(|| flash(&FlashParams::small(), &mut quiet).unwrap());
}

#[test]
fn different_seeds_give_different_worlds() {
    let a = stretch(&StretchParams::small(), &mut quiet).unwrap();
    let b = stretch(
        &StretchParams {
            seed: 2,
            ..StretchParams::small()
        },
        &mut quiet,
    )
    .unwrap();
    assert_ne!(a.files[0].1, b.files[0].1);
}

#[test]
fn scenario_parameters_parse_and_reject_unknown_keys() {
    let mut p = MembershipParams::default();
    p.set("sizes", "[10, 20]").unwrap();
    p.set("steady_s", "2.5").unwrap();
    assert_eq!(p.sizes, vec![10, 20]);
    assert_eq!(p.steady_s, 2.5);
    let e = p.set("nope", "1").unwrap_err();
    assert!(e.contains("sizes"), "{e}");
    assert!(pias_sim::experiments::run_named("bogus", &[], &mut quiet).is_err());
}
