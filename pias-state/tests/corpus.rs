//! Replays the committed corpus of every state-level fuzz target (`fuzz/corpus/state_*`) through its entry
//! point, so CI exercises the stateful fuzz targets on every change; and checks that the fuzz crate's
//! `state_*` targets and `pias_state::fuzzing::TARGETS` agree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pias_state::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_state_corpus_file_passes_its_target() {
    for (name, check) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus directory {} is empty", dir.display());
        for f in &files {
            eprintln!("replaying {}", f.display());
            check(&std::fs::read(f).expect("corpus file"));
        }
    }
}

#[test]
fn state_targets_agree_with_the_fuzz_crate() {
    let ours: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_string()).collect();
    let files: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz_targets")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_string)
        })
        .filter(|n| n.starts_with("state_"))
        .collect();
    assert_eq!(files, ours);
}
