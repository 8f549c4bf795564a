//! Pool port allocation: a two-level bitmap per (pool address, protocol class).
//!
//! One bit per port (set = free) in 1024 words, and a 16-word summary with one bit per word (set = that word has
//! a free port). Allocation starts at a caller-chosen (keyed pseudo-random) port and takes the first free port at or
//! after it, wrapping around: at most one word test plus 17 summary-word tests, so it is O(1), never scans
//! unboundedly, and finds a free port whenever one exists. Ports outside the configured range are simply never
//! set free. Memory: 8,320 bytes per bitmap.

/// Words in the bitmap: 65,536 ports / 64.
const WORDS: usize = 1024;
/// Words in the summary: 1024 words / 64.
const SUMMARY: usize = WORDS / 64;

/// The free ports of one (pool address, protocol class).
#[derive(Debug, Clone)]
pub(crate) struct PortBitmap {
    /// Bit `p % 64` of word `p / 64` is set when port `p` is free.
    words: Box<[u64]>,
    /// Bit `w % 64` of word `w / 64` is set when `words[w] != 0`.
    summary: [u64; SUMMARY],
    /// Number of free ports.
    free: u32,
}

impl PortBitmap {
    /// Bytes of heap and inline memory one bitmap takes.
    pub(crate) const BYTES: usize = WORDS * 8 + core::mem::size_of::<PortBitmap>();

    /// A bitmap with every port of `lo..=hi` free.
    pub(crate) fn new(lo: u16, hi: u16) -> PortBitmap {
        let mut b = PortBitmap {
            words: vec![0u64; WORDS].into_boxed_slice(),
            summary: [0; SUMMARY],
            free: 0,
        };
        for p in lo..=hi {
            b.release(p);
        }
        b
    }

    /// Number of free ports.
    pub(crate) fn free(&self) -> u32 {
        self.free
    }

    /// Takes the first free port at or after `start` (wrapping), or `None` when every port is taken.
    pub(crate) fn allocate(&mut self, start: u16) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let w = usize::from(start >> 6);
        let here = self.words[w] & (!0u64 << (start & 63));
        let (word, bits) = if here != 0 {
            (w, here)
        } else {
            // The next word after `w` (cyclically) with a free port; the last round revisits `w`'s summary word
            // in full, so the ports below `start` in word `w` are found too.
            let s = (w + 1) % WORDS;
            let mut found = None;
            for i in 0..=SUMMARY {
                let sidx = (s / 64 + i) % SUMMARY;
                let mask = if i == 0 { !0u64 << (s % 64) } else { !0u64 };
                let m = self.summary[sidx] & mask;
                if m != 0 {
                    found = Some(sidx * 64 + m.trailing_zeros() as usize);
                    break;
                }
            }
            let word = found?;
            (word, self.words[word])
        };
        if bits == 0 {
            return None; // Unreachable while the summary is right; refuse rather than panic.
        }
        let bit = bits.trailing_zeros();
        let port = (word as u32 * 64 + bit) as u16;
        self.take(port);
        Some(port)
    }

    /// Whether `port` is free.
    #[cfg(test)]
    pub(crate) fn is_free(&self, port: u16) -> bool {
        self.words[usize::from(port >> 6)] & (1u64 << (port & 63)) != 0
    }

    fn take(&mut self, port: u16) {
        let w = usize::from(port >> 6);
        let bit = 1u64 << (port & 63);
        if self.words[w] & bit == 0 {
            return;
        }
        self.words[w] &= !bit;
        self.free -= 1;
        if self.words[w] == 0 {
            self.summary[w / 64] &= !(1u64 << (w % 64));
        }
    }

    /// Marks `port` free again. Releasing a free port does nothing.
    pub(crate) fn release(&mut self, port: u16) {
        let w = usize::from(port >> 6);
        let bit = 1u64 << (port & 63);
        if self.words[w] & bit != 0 {
            return;
        }
        self.words[w] |= bit;
        self.free += 1;
        self.summary[w / 64] |= 1u64 << (w % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn allocates_every_port_of_the_range_once_then_fails() {
        let mut b = PortBitmap::new(1000, 1200);
        let mut seen = BTreeSet::new();
        for i in 0..201u16 {
            let p = b.allocate(i.wrapping_mul(7919)).unwrap();
            assert!((1000..=1200).contains(&p), "{p}");
            assert!(seen.insert(p));
        }
        assert_eq!(b.free(), 0);
        assert_eq!(b.allocate(1100), None);
        b.release(1111);
        assert_eq!(b.allocate(5), Some(1111));
    }

    #[test]
    fn wraps_to_ports_below_start_in_the_same_word() {
        let mut b = PortBitmap::new(64, 127);
        for p in 65..=127 {
            b.take(p);
        }
        assert_eq!(b.allocate(100), Some(64));
        let mut full = PortBitmap::new(0, 65535);
        assert_eq!(full.free(), 65536);
        assert_eq!(full.allocate(65535), Some(65535));
        assert_eq!(full.allocate(65535), Some(0));
    }

    proptest! {
        #[test]
        fn matches_a_set(lo in 0u16..2000, len in 0u16..300, ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 0..400)) {
            let hi = lo.saturating_add(len);
            let mut b = PortBitmap::new(lo, hi);
            let mut free: BTreeSet<u16> = (lo..=hi).collect();
            for (alloc, x) in ops {
                if alloc {
                    let got = b.allocate(x);
                    // First free at or after x, wrapping.
                    let want = free.range(x..).next().or_else(|| free.iter().next()).copied();
                    prop_assert_eq!(got, want);
                    if let Some(p) = got { free.remove(&p); }
                } else {
                    let p = lo + x % (len + 1);
                    b.release(p);
                    free.insert(p);
                }
                prop_assert_eq!(b.free() as usize, free.len());
                for p in lo..=hi { prop_assert_eq!(b.is_free(p), free.contains(&p)); }
            }
        }
    }
}
