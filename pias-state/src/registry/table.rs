//! The per-group target table: weighted Maglev over a group's registrations (SPEC.md §13.3), sized to the
//! number of targets.
//!
//! The procedure is exactly the one of [`crate::flowhash::MaglevTable`] (ids sorted ascending, SipHash-2-4
//! offsets and skips under the flow hash key, credit rounds), with member ids `registration index + 1` and
//! registration weights, but the table size `M` grows with the number of targets (a JAP may hold thousands of
//! targets of one group, while `MaglevTable` holds 16): `M` is the first of [`SIZES`] that is at least
//! `15 × n` (about 15 slots per target or more, as 251 slots give 16 targets). For `n ≤ 16` that is 251 and the table is slot for slot the `MaglevTable` of the same set (a test
//! pins this), so XDP can use one lookup routine for both.
//!
//! Building allocates only when a group outgrows its table's capacity; picking never allocates.

use pias_proto::auth::SipKey;
use siphasher::sip::SipHasher24;

/// Table sizes (primes), smallest first. A group of `n` targets uses the first size `≥ 15 n`.
pub const SIZES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];
/// The most targets one table holds (a bound under `65521 / 15`).
pub const MAX_TABLE_MEMBERS: usize = 4095;

/// Table size for `n` members.
pub(crate) fn size_for(n: usize) -> u32 {
    let want = (n as u64).saturating_mul(15);
    for s in SIZES {
        if u64::from(s) >= want {
            return s;
        }
    }
    SIZES[SIZES.len() - 1]
}

fn maglev_hash(key: &SipKey, tag: &[u8; 13], id: u32) -> u64 {
    let mut b = [0u8; 17];
    b[..13].copy_from_slice(tag);
    b[13..].copy_from_slice(&id.to_be_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b)
}

/// Scratch space for building, kept by the registry so rebuilds do not allocate.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    pos: Vec<u32>,
    skip: Vec<u32>,
    credit: Vec<u64>,
}

/// A built table. `slots[h mod m]` is an index into `members` (sorted registration indexes).
#[derive(Debug, Default, Clone)]
pub(crate) struct TargetTable {
    /// Registration indexes, ascending.
    pub(crate) members: Vec<u32>,
    pub(crate) slots: Vec<u16>,
    pub(crate) m: u32,
}

impl TargetTable {
    /// Rebuilds for `set` (registration index, weight), which must be sorted by index, deduplicated and hold at
    /// most [`MAX_TABLE_MEMBERS`] entries (extra entries are ignored).
    pub(crate) fn rebuild(&mut self, key: &SipKey, set: &[(u32, u32)], scratch: &mut Scratch) {
        let set = &set[..set.len().min(MAX_TABLE_MEMBERS)];
        let n = set.len();
        self.members.clear();
        self.members.extend(set.iter().map(|e| e.0));
        self.slots.clear();
        if n == 0 {
            self.m = 0;
            return;
        }
        let m = size_for(n);
        self.m = m;
        const EMPTY: u16 = u16::MAX;
        self.slots.resize(m as usize, EMPTY);

        let all_zero = set.iter().all(|e| e.1 == 0);
        let weight = |j: usize| -> u64 { if all_zero { 1 } else { u64::from(set[j].1) } };
        let wmax = (0..n).map(weight).max().unwrap_or(1).max(1);

        scratch.pos.clear();
        scratch.skip.clear();
        scratch.credit.clear();
        let mm = u64::from(m);
        for e in set {
            let id = e.0.saturating_add(1);
            scratch
                .pos
                .push((maglev_hash(key, b"pias-maglev-o", id) % mm) as u32);
            scratch
                .skip
                .push((maglev_hash(key, b"pias-maglev-s", id) % (mm - 1) + 1) as u32);
            scratch.credit.push(0);
        }

        let mut filled = 0u32;
        'rounds: for _round in 0..m {
            for j in 0..n {
                let w = weight(j);
                if w == 0 {
                    continue;
                }
                scratch.credit[j] += w;
                while scratch.credit[j] >= wmax {
                    if filled == m {
                        break 'rounds;
                    }
                    for _ in 0..m {
                        let s = scratch.pos[j];
                        scratch.pos[j] = ((u64::from(s) + u64::from(scratch.skip[j])) % mm) as u32;
                        if let Some(slot) = self.slots.get_mut(s as usize)
                            && *slot == EMPTY
                        {
                            *slot = j as u16;
                            filled += 1;
                            break;
                        }
                    }
                    scratch.credit[j] -= wmax;
                }
            }
            if filled == m {
                break;
            }
        }
    }

    /// The registration index for a hash, `None` if the table is empty.
    #[inline]
    pub(crate) fn pick(&self, h: u64) -> Option<u32> {
        if self.m == 0 {
            return None;
        }
        let s = self.slots.get((h % u64::from(self.m)) as usize)?;
        self.members.get(usize::from(*s)).copied()
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.members.capacity() * 4 + self.slots.capacity() * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowhash::MaglevTable;
    use pias_proto::ProxyId;
    use pias_proto::auth::MasterKey;

    #[test]
    fn matches_maglev_table_up_to_16() {
        let key = MasterKey::from_bytes([3; 32]).flow_key();
        let mut scratch = Scratch::default();
        for n in 1..=16u32 {
            let set: Vec<(u32, u32)> = (0..n).map(|i| (i * 7 + 3, 1 + (i % 3) * 5)).collect();
            let mut t = TargetTable::default();
            t.rebuild(&key, &set, &mut scratch);
            assert_eq!(t.m, 251);
            let japs: Vec<(ProxyId, u32)> = set.iter().map(|&(i, w)| (ProxyId(i + 1), w)).collect();
            let mt = MaglevTable::build(&key, &japs);
            for h in 0..251u64 {
                assert_eq!(t.pick(h).map(|i| ProxyId(i + 1)), mt.pick_id(h), "n {n} slot {h}");
            }
        }
    }

    #[test]
    fn large_tables_are_balanced_and_full() {
        let key = MasterKey::from_bytes([4; 32]).flow_key();
        let mut scratch = Scratch::default();
        let set: Vec<(u32, u32)> = (0..1000u32).map(|i| (i, 1)).collect();
        let mut t = TargetTable::default();
        t.rebuild(&key, &set, &mut scratch);
        assert_eq!(t.m, 16381);
        let mut counts = vec![0u32; 1000];
        for s in &t.slots {
            counts[usize::from(*s)] += 1;
        }
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*lo >= 15 && *hi <= 17, "{lo}..{hi}");
        assert_eq!(size_for(4095), 65521);
        assert_eq!(size_for(0), 251);
    }
}
