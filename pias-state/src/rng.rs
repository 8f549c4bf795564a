//! The core's only source of randomness: a seeded SplitMix64 generator.
//!
//! The core never reads an OS random source; every non-secret random choice comes from a generator seeded by
//! the configuration, so the same seed and inputs replay the same run. SplitMix64 (Steele, Lea, Flood 2014) is
//! fast, has a full 2^64 period and is what seeding other generators usually uses. It is for choices that
//! need no secrecy only: its output gives its state away, so secrets (cookie key, hash-table keys, probe
//! nonces) come from [`crate::secrets::Secrets`], which the driver draws from the OS (SPEC.md §8.1).

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 as a stateless 64-bit mixer: the output of a generator in state `z`. Callers that derive one
/// value from another (a seed from a hash, a direction from a seed) use this instead of a private copy, so
/// the workspace has one SplitMix.
pub const fn mix(z: u64) -> u64 {
    let mut z = z.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix {
    state: u64,
}

impl SplitMix {
    pub const fn new(seed: u64) -> Self {
        SplitMix { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = mix(self.state);
        self.state = self.state.wrapping_add(GAMMA);
        out
    }

    /// A uniform number in `0..n` (`0` when `n` is 0), by Lemire's multiply-shift (bias below 2^-32 for the
    /// small `n` the core uses).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform number in `[0, 1)` (53 bits).
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence_and_range() {
        // Reference values of SplitMix64 seeded with 0.
        let mut r = SplitMix::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut r = SplitMix::new(42);
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
        // The stateless form is the generator's output for that state.
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit_f64())));
    }

    /// The core has no OS randomness: no std hash map or set (their `RandomState` is seeded by the OS, so
    /// iteration order differs between runs), no random crates. Keyed `hashbrown` tables are fine.
    #[test]
    fn no_os_random_state_in_the_core() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20);
        // Split so this file does not match itself.
        let banned = [
            concat!("Random", "State"),
            concat!("std::collections::", "HashMap"),
            concat!("std::collections::", "HashSet"),
            concat!("getrandom", "::"),
            concat!("rand", "::"),
        ];
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                let std_import = line.contains("use std::collections::{")
                    && (line.contains("HashMap") || line.contains("HashSet"));
                assert!(
                    !std_import && !banned.iter().any(|b| line.contains(b)),
                    "{}: {line}",
                    f.display()
                );
            }
        }
    }
}
