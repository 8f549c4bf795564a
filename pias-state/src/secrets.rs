//! The proxy's local secrets: what an attacker must not predict, drawn by the driver (SPEC.md §8.1).
//!
//! The core never reads an OS random source, so it takes its secrets as an input: the driver fills
//! [`Secrets`] from the OS (`getrandom`) at start, and the simulator and tests derive them from their seed
//! with [`Secrets::from_seed_for_tests`]. The configured `seed` drives only choices that need no secrecy
//! (probe phase, `random` target choice, back-off jitter); it never derives a secret, because a 64-bit seed
//! (the lab used the proxy index) is guessable and SplitMix64's outputs give its state away.
//!
//! Three independent 256-bit secrets, each used for one purpose so that exposing what one keys (a probe
//! nonce is on the wire in plaintext) says nothing about the others:
//! - `cookie`: keys the registry's stateless cookies (§11.3); knowing it lets anyone forge a Challenge answer.
//! - `tables`: the root of every hash-table key (LRU maps, NAT indices and port choice, registry indices):
//!   a predictable key lets spoofed traffic collide in one bucket or predict NAT ports.
//! - `nonce`: keys membership probe nonces, a PRF of a counter, so a nonce reveals no generator state.
use pias_proto::auth::SipKey;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// Length of each secret in bytes (256 bits).
pub const SECRET_LEN: usize = 32;
/// Bytes a driver draws from the OS for [`Secrets::from_bytes`].
pub const SECRETS_LEN: usize = 3 * SECRET_LEN;

/// The proxy's local secrets. Its `Debug` output never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    cookie: [u8; SECRET_LEN],
    tables: [u8; SECRET_LEN],
    nonce: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Secrets from `SECRETS_LEN` bytes of the OS random source (what drivers call at start).
    pub fn from_bytes(b: &[u8; SECRETS_LEN]) -> Self {
        let part = |i: usize| {
            let mut s = [0u8; SECRET_LEN];
            s.copy_from_slice(&b[i * SECRET_LEN..(i + 1) * SECRET_LEN]);
            s
        };
        Secrets {
            cookie: part(0),
            tables: part(1),
            nonce: part(2),
        }
    }

    /// Reproducible secrets for simulations and tests, derived from `seed` with a public function: anyone
    /// who knows the seed knows them. Never used by a driver.
    pub fn from_seed_for_tests(seed: u64) -> Self {
        let mut b = [0u8; SECRETS_LEN];
        let mut x = blake3::Hasher::new_derive_key("PIAS v1 test secrets from seed");
        x.update(&seed.to_le_bytes());
        x.finalize_xof().fill(&mut b);
        Secrets::from_bytes(&b)
    }

    /// The registry's cookie secret.
    pub fn cookie(&self) -> &[u8; SECRET_LEN] {
        &self.cookie
    }

    /// The SipHash key of the hash table named `label` (each table its own, so one table's key is no
    /// help against another).
    pub fn table_key(&self, label: &str) -> SipKey {
        sip_of(&self.tables, label)
    }

    /// The key of membership probe nonces.
    pub fn nonce_key(&self) -> SipKey {
        sip_of(&self.nonce, "membership probe nonce")
    }
}

fn sip_of(secret: &[u8; SECRET_LEN], label: &str) -> SipKey {
    let h = blake3::keyed_hash(secret, label.as_bytes());
    let b = h.as_bytes();
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&b[..8]);
    k1.copy_from_slice(&b[8..16]);
    SipKey {
        k0: u64::from_le_bytes(k0),
        k1: u64::from_le_bytes(k1),
    }
}

/// A pseudo-random function of `n` under `key` (SipHash-1-3): what the core uses instead of a generator
/// where outputs are visible to others, since one output says nothing about the next without the key.
pub fn prf(key: &SipKey, domain: u8, n: u64) -> u64 {
    let mut h = SipHasher13::new_with_keys(key.k0, key.k1);
    h.write_u8(domain);
    h.write_u64(n);
    h.finish()
}

/// A table key for unit tests of one table (derived from `seed` through [`Secrets::from_seed_for_tests`]).
pub fn table_key_for_tests(seed: u64) -> SipKey {
    Secrets::from_seed_for_tests(seed).table_key("test")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_independent_and_labels_separate() {
        let mut b = [0u8; SECRETS_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        let s = Secrets::from_bytes(&b);
        assert_eq!(s.cookie()[0], 0);
        assert_eq!(s.tables[0], 32);
        assert_eq!(s.nonce[0], 64);
        assert_ne!(s.table_key("a"), s.table_key("b"));
        assert_ne!(s.table_key("membership probe nonce"), s.nonce_key());
        // Changing only the cookie secret changes no table key.
        let mut b2 = b;
        b2[0] ^= 1;
        let s2 = Secrets::from_bytes(&b2);
        assert_eq!(s.table_key("a"), s2.table_key("a"));
        assert_ne!(s.cookie(), s2.cookie());
    }

    #[test]
    fn test_secrets_are_reproducible_and_seed_dependent() {
        assert_eq!(Secrets::from_seed_for_tests(1), Secrets::from_seed_for_tests(1));
        assert_ne!(Secrets::from_seed_for_tests(1), Secrets::from_seed_for_tests(2));
        assert_eq!(format!("{:?}", Secrets::from_seed_for_tests(1)), "Secrets(..)");
    }

    #[test]
    fn prf_outputs_do_not_follow_from_each_other() {
        // A SplitMix64 output is its state mixed: the next one follows. The PRF's next output under an
        // unknown key does not follow from the previous: two keys agreeing on output 0 differ on output 1.
        let k1 = table_key_for_tests(1);
        let k2 = table_key_for_tests(2);
        assert_ne!(prf(&k1, 0, 0), prf(&k2, 0, 0));
        assert_ne!(prf(&k1, 0, 1), prf(&k1, 0, 0));
        assert_ne!(prf(&k1, 0, 1), prf(&k1, 1, 1));
    }
}
