//! The keyed hash of the core's lookup tables (the IAP cache and the other [`crate::lru::LruMap`]s, the NAT
//! table's two indexes): a folded multiply over 64-bit words under a per-table secret key.
//!
//! Why not SipHash: these lookups run on every data packet, and SipHash-1-3 costs about 100–200
//! instructions for a 14–20-byte key (one SipRound per word plus three to finalise, and the streaming
//! hasher's buffering on top), the largest single cost of the hit paths after the data tag. A folded multiply
//! (`(a × b) mod 2^64 ⊕ (a × b) div 2^64`, the construction of aHash's fallback and of foldhash) mixes a word in
//! four or five instructions.
//!
//! Why this still stops hash flooding: the keys are attacker-chosen (clients pick their addresses and ports
//! and the groups they send to), so a table's hash must not be predictable from outside. Every table draws
//! its own 128-bit key from the proxy's secrets (SPEC.md §8.1), the key enters every word's multiply (the
//! accumulator starts from it and each word is mixed with it), and no hash value ever leaves the process:
//! without the key, an attacker cannot compute which keys share a bucket. This is not a PRF — SipHash stays
//! where the output is a wire value or must be unpredictable as such (flow hash, tags, MACs, port choice).

use core::hash::Hasher;

/// `(a × b)` as a 128-bit product, its two halves folded together.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// A table's secret key: `k0` seeds the accumulator; two odd multipliers derived from `k1` mix the words
/// and finish (odd: never zero, whatever the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableKey {
    k0: u64,
    m: u64,
    fin: u64,
}

impl TableKey {
    /// A table key from 128 secret bits (a [`pias_proto::auth::SipKey`]'s two halves).
    pub fn new(k0: u64, k1: u64) -> Self {
        TableKey {
            k0,
            m: (k1 ^ C0) | 1,
            // Rotated, so that the bit the `| 1` hides in `m` still counts here.
            fin: (k1.rotate_left(32) ^ C1) | 1,
        }
    }

    /// A hasher for one key.
    #[inline]
    pub fn hasher(&self) -> KeyHasher {
        KeyHasher {
            acc: self.k0,
            m: self.m,
            fin: self.fin,
        }
    }

    /// The hash of two words (a 16-byte key in one call: an IPv4 NAT tuple).
    #[inline]
    pub fn hash2(&self, a: u64, b: u64) -> u64 {
        let mut h = self.hasher();
        h.word(a);
        h.word(b);
        h.finish()
    }
}

/// The streaming side of [`TableKey`]: every write is folded into the accumulator word by word; byte
/// strings carry their length in their last word, so writes of different lengths do not alias.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    acc: u64,
    m: u64,
    fin: u64,
}

/// Constants (digits of π, as foldhash uses them) that keep a zero key from giving small multipliers.
const C0: u64 = 0x243f_6a88_85a3_08d3;
const C1: u64 = 0x1319_8a2e_0370_7344;

impl KeyHasher {
    /// Mixes one 64-bit word.
    #[inline(always)]
    pub fn word(&mut self, w: u64) {
        self.acc = fold_mul(self.acc ^ w, self.m);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        // The tail (0–7 bytes) and the length share the last word: "ab" + "c" and "a" + "bc" differ.
        let r = chunks.remainder();
        let mut w = [0u8; 8];
        w[..r.len()].copy_from_slice(r);
        let tail = u64::from_le_bytes(w) & 0x00ff_ffff_ffff_ffff;
        self.word(tail ^ ((bytes.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.word(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.word(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.word(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.word(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.word(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more multiply under a key-derived constant, then a rotation: hashbrown takes the bucket from
        // the low bits and the control byte from the top seven, and both must depend on every input bit.
        fold_mul(self.acc, self.fin).rotate_left(23)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hash;

    fn h<T: Hash + ?Sized>(k: &TableKey, v: &T) -> u64 {
        let mut s = k.hasher();
        v.hash(&mut s);
        s.finish()
    }

    #[test]
    fn depends_on_key_and_input() {
        let a = TableKey::new(1, 2);
        let b = TableKey::new(1, 3);
        let c = TableKey::new(2, 2);
        assert_ne!(h(&a, &7u32), h(&b, &7u32));
        assert_ne!(h(&a, &7u32), h(&c, &7u32));
        assert_ne!(h(&a, &7u32), h(&a, &8u32));
        assert_eq!(h(&a, &7u32), h(&a, &7u32));
        // Zero keys and zero words still mix.
        let z = TableKey::new(0, 0);
        assert_ne!(h(&z, &0u64), h(&z, &1u64));
        assert_ne!(z.hash2(0, 0), z.hash2(0, 1));
        assert_ne!(z.hash2(0, 1), z.hash2(1, 0));
        // A key whose multiplier would be zero without the forced low bit still mixes.
        let c = TableKey::new(3, C0);
        assert_ne!(c.hash2(1, 2), c.hash2(1, 3));
        assert_ne!(c.hash2(1, 2), c.hash2(4, 2));
    }

    #[test]
    fn byte_strings_carry_their_length() {
        let k = TableKey::new(5, 6);
        let two = |x: &[u8], y: &[u8]| {
            let mut s = k.hasher();
            s.write(x);
            s.write(y);
            s.finish()
        };
        assert_ne!(two(b"ab", b"c"), two(b"a", b"bc"));
        assert_ne!(two(b"", b"\0"), two(b"\0", b""));
        assert_ne!(two(&[0u8; 8], b""), two(&[0u8; 7], b"\0"));
    }

    /// Keys that differ in one bit land in well-spread buckets and control bytes: over 4 096 IPv4 tuples
    /// that differ only in the client port, no bucket of a 4 096-bucket table holds more than a handful.
    #[test]
    fn sequential_keys_spread() {
        let k = TableKey::new(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        let mut buckets = vec![0u32; 4096];
        let mut top = [0u32; 128];
        for port in 0..4096u64 {
            let x = k.hash2(0x0a01_000a_0a02_0001, port << 16 | 17);
            buckets[(x & 4095) as usize] += 1;
            top[(x >> 57) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n <= 8), "{:?}", buckets.iter().max());
        assert!(top.iter().all(|&n| (8..=64).contains(&n)), "{top:?}");
    }
}
