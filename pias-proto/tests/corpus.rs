//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz entry points.
//!
//! This is how CI exercises every fuzz target on every change without a fuzzing toolchain: each seed and
//! each saved crash reproducer goes through the same property checks as under libFuzzer
//! (`pias_proto::fuzzing`). A target whose corpus directory is missing or empty fails the test, and so does
//! a corpus directory or a `fuzz/fuzz_targets/*.rs` file that no target claims, so the list of targets,
//! the fuzz crate and the corpus cannot drift apart.

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

#[test]
fn targets_corpus_and_fuzz_crate_agree() {
    let targets: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        names_in(&fuzz_dir().join("corpus"), false),
        targets,
        "fuzz/corpus/ directories differ from pias_proto::fuzzing::TARGETS"
    );
    assert_eq!(
        names_in(&fuzz_dir().join("fuzz_targets"), true),
        targets,
        "fuzz/fuzz_targets/*.rs differ from pias_proto::fuzzing::TARGETS"
    );
}
