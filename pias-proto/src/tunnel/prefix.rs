//! SipHash-1-3's internal state, for taggers that start from a precomputed prefix (SPEC.md §8.1).
//!
//! Every data frame of one inner family and VNI starts with the same 8 bytes (the Geneve header), and
//! every frame one proxy encapsulates with the same flags, hops and epoch with the same 16. SipHash
//! compresses its message 8 bytes at a time, so the state after those words can be computed once per key
//! and the per-frame work starts from it: one compression round fewer per word, the same tag. The XDP
//! program does this (driver-xdp's `pias_tag_key`, filled from [`TagState`] when the keys are loaded),
//! where each round is about 28 BPF instructions on the hit path.

use crate::auth::SipKey;

/// SipHash-1-3's state `v0..v3` after keying and zero or more whole 8-byte message words. Its `Debug`
/// output hides the state (it is as secret as the key it came from).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TagState {
    v: [u64; 4],
    /// Message bytes compressed so far (SipHash's last block holds the message length).
    len: usize,
}

impl core::fmt::Debug for TagState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TagState(after {} bytes)", self.len)
    }
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

impl TagState {
    /// The state after keying with `key`, no message compressed.
    pub fn new(key: &SipKey) -> Self {
        TagState {
            v: [
                key.k0 ^ 0x736f_6d65_7073_6575,
                key.k1 ^ 0x646f_7261_6e64_6f6d,
                key.k0 ^ 0x6c79_6765_6e65_7261,
                key.k1 ^ 0x7465_6462_7974_6573,
            ],
            len: 0,
        }
    }

    /// Compresses the next 8 message bytes, `word` being them read little-endian (one SipRound).
    pub fn compress(&mut self, word: u64) {
        self.v[3] ^= word;
        sip_round(&mut self.v);
        self.v[0] ^= word;
        self.len += 8;
    }

    /// Compresses the whole 8-byte words at the start of `bytes` (a trailing part shorter than a word is
    /// ignored) and returns the state after them.
    pub fn after(mut self, bytes: &[u8]) -> Self {
        for w in bytes.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.compress(u64::from_le_bytes(b));
        }
        self
    }

    /// The state words `v0..v3`, for an implementation (the XDP program) that continues from them.
    pub fn words(&self) -> [u64; 4] {
        self.v
    }

    /// Message bytes compressed so far.
    pub fn compressed_len(&self) -> usize {
        self.len
    }

    /// The hash of the message whose first [`TagState::compressed_len`] bytes made this state and whose
    /// remaining bytes are `rest`: equal to `SipHasher13::hash` of the whole message.
    pub fn finish(mut self, rest: &[u8]) -> u64 {
        let total = self.len + rest.len();
        let mut words = rest.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.compress(u64::from_le_bytes(b));
        }
        let mut last = [0u8; 8];
        let tail = words.remainder();
        last[..tail.len()].copy_from_slice(tail);
        let b = u64::from_le_bytes(last) | ((total as u64 & 0xff) << 56);
        self.v[3] ^= b;
        sip_round(&mut self.v);
        self.v[0] ^= b;
        self.v[2] ^= 0xff;
        sip_round(&mut self.v);
        sip_round(&mut self.v);
        sip_round(&mut self.v);
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use siphasher::sip::SipHasher13;

    proptest! {
        /// Any prefix of whole words, then the rest: SipHasher13 of the whole message, every length.
        #[test]
        fn equals_siphasher(k0: u64, k1: u64, msg in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..40) {
            let key = SipKey { k0, k1 };
            let words = (cut.min(msg.len() / 8)) * 8;
            let s = TagState::new(&key).after(&msg[..words]);
            prop_assert_eq!(s.compressed_len(), words);
            prop_assert_eq!(s.finish(&msg[words..]), SipHasher13::new_with_keys(k0, k1).hash(&msg));
        }
    }

    #[test]
    fn debug_hides_the_state() {
        let s = TagState::new(&SipKey {
            k0: 0x1234_5678,
            k1: 1,
        });
        assert_eq!(format!("{s:?}"), "TagState(after 0 bytes)");
    }
}
