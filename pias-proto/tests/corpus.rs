//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz entry points.
//!
//! This is how CI exercises every fuzz target on every change without a fuzzing toolchain: each seed and
//! each saved crash reproducer goes through the same property checks as under libFuzzer
//! (`pias_proto::fuzzing`). A target whose corpus directory is missing or empty fails the test, and so does
//! a `fuzz/fuzz_targets/*.rs` file calling `pias_proto::fuzzing` that is not in its `TARGETS`, or a corpus
//! directory without a target, so the list of targets, the fuzz crate and the corpus cannot drift apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pias_proto::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn names_in(dir: &Path, strip_rs: bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| !n.starts_with('.'))
        .map(|n| match (strip_rs, n.strip_suffix(".rs")) {
            (true, Some(stem)) => stem.to_owned(),
            _ => n,
        })
        .collect()
}

#[test]
fn every_corpus_file_passes_its_target() {
    let root = fuzz_dir().join("corpus");
    let mut total = 0;
    for (name, check) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {} for target {name}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus directory {} is empty", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            // Name the file if the oracle panics, so the failure is reproducible by hand.
            eprintln!("replaying {}", f.display());
            check(&data);
        }
        total += files.len();
    }
    eprintln!("replayed {total} corpus files through {} targets", TARGETS.len());
}

/// The fuzz crate also holds other crates' targets (`state_*`, which `pias_state::fuzzing` owns and its
/// own corpus test replays); this test claims the files that call `pias_proto::fuzzing`.
#[test]
fn targets_corpus_and_fuzz_crate_agree() {
    let dir = fuzz_dir();
    let targets: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let files = names_in(&dir.join("fuzz_targets"), true);
    let ours: BTreeSet<String> = files
        .iter()
        .filter(|stem| {
            let path = dir.join("fuzz_targets").join(format!("{stem}.rs"));
            let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            src.contains("pias_proto::fuzzing::")
        })
        .cloned()
        .collect();
    assert_eq!(
        ours, targets,
        "fuzz/fuzz_targets/*.rs calling pias_proto::fuzzing differ from pias_proto::fuzzing::TARGETS"
    );
    for t in &targets {
        let src =
            std::fs::read_to_string(dir.join("fuzz_targets").join(format!("{t}.rs"))).unwrap_or_default();
        assert!(
            src.contains(&format!("pias_proto::fuzzing::{t}(")),
            "fuzz/fuzz_targets/{t}.rs does not call pias_proto::fuzzing::{t}"
        );
    }
    // No orphaned corpus: every corpus directory belongs to some fuzz target.
    let orphans: Vec<_> = names_in(&dir.join("corpus"), false)
        .into_iter()
        .filter(|d| !files.contains(d))
        .collect();
    assert!(
        orphans.is_empty(),
        "corpus directories without a fuzz target: {orphans:?}"
    );
}
