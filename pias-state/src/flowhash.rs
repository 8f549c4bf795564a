//! Per-flow JAP choice that every IAP agrees on, in integers only, so an XDP program can replicate it.
//!
//! An IAP that knows a group's JAP set (ids and weights) picks a JAP for each flow as
//! `table.pick(flow_hash(key, flow))`. Two IAPs with the same JAP set and the same flow key build the same
//! table and so pick the same JAP: a TCP connection survives a change of IAP (a routing flap). The table is
//! a Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
//! NSDI 2016): when a JAP leaves, its slots move and few others do.
//!
//! # Rule (SPEC.md, flow hash and JAP table)
//!
//! **Flow hash.** `flow_hash = SipHash-1-3(flow key, layout)` as a `u64`, SipHash over exactly these 37 bytes
//! (no length prefix):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 1 | IP protocol number |
//! | 1 | 16 | source address: IPv6 as is; IPv4 as its 4 bytes followed by 12 zero bytes |
//! | 17 | 2 | source port, big-endian (ICMP echo: the identifier) |
//! | 19 | 16 | destination address, same encoding as the source |
//! | 35 | 2 | destination port, big-endian |
//!
//! (There is no family byte: IPv4 `a.b.c.d` and IPv6 `a.b.c.d::`-style addresses with the same 16 bytes
//! hash alike; harmless, the hash only spreads flows.)
//!
//! **Table.** `M` = [`M`] = 251 slots (prime). Input: up to [`MAX_JAPS`] = 16 entries `(ProxyId, weight u32)`.
//!
//! 1. Normalise: drop [`ProxyId::NONE`]; one entry per id (a repeated id keeps its largest weight); sort by
//!    id ascending; keep the 16 lowest ids. JAP `j` is the `j`-th entry of that list (its *index*).
//! 2. If every weight is zero, every weight counts as 1. Otherwise a zero-weight JAP keeps its index but
//!    gets no slot.
//! 3. For each JAP `j` with id `p`: `offset_j = SipHash-2-4(key, b"pias-maglev-o" ‖ p u32 BE) mod M`,
//!    `skip_j = SipHash-2-4(key, b"pias-maglev-s" ‖ p u32 BE) mod (M − 1) + 1`. Its preference list is
//!    `(offset_j + t · skip_j) mod M` for `t = 0, 1, …` (a permutation of all slots, `M` being prime).
//!    "Claim" means: advance along the preference list to the next slot that is still empty, and take it.
//! 4. Credits: `credit_j = 0`, `W = max_j weight_j`. Repeat rounds until all `M` slots are taken; in each
//!    round, for `j` in index order: if `weight_j > 0`, `credit_j += weight_j`, then while
//!    `credit_j >= W` and a slot is empty: claim, `credit_j -= W`. (A JAP of maximum weight claims once per
//!    round; JAP `j` claims `weight_j / W` per round on average, at most one per round.)
//! 5. `pick(h) = slots[h mod M]`, the index of a JAP in the id-sorted list. With equal weights this is
//!    exactly Maglev's population algorithm.
//!
//! The result depends only on the set of (id, weight) pairs and the key, never on the input order.
//! Everything is integer arithmetic; building costs `O(M · n)` SipHash-free steps plus `2n` SipHashes.

use pias_proto::auth::SipKey;
use pias_proto::{FlowKey, ProxyId};
use siphasher::sip::{SipHasher13, SipHasher24};

use core::net::IpAddr;

/// Slots in a [`MaglevTable`] (prime).
pub const M: usize = 251;
/// The most JAPs a table holds.
pub const MAX_JAPS: usize = 16;
/// Bytes of the canonical flow layout that [`flow_hash`] hashes.
pub const FLOW_BYTES: usize = 37;

const EMPTY: u8 = u8::MAX;

fn put_ip(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            out[4..16].fill(0);
        }
        IpAddr::V6(a) => out[..16].copy_from_slice(&a.octets()),
    }
}

/// The canonical 37-byte layout of a flow (the input of [`flow_hash`]; see the module documentation).
#[inline]
pub fn flow_bytes(flow: &FlowKey) -> [u8; FLOW_BYTES] {
    let mut b = [0u8; FLOW_BYTES];
    b[0] = flow.proto.number();
    put_ip(&mut b[1..17], flow.src);
    b[17..19].copy_from_slice(&flow.src_port.to_be_bytes());
    put_ip(&mut b[19..35], flow.dst);
    b[35..37].copy_from_slice(&flow.dst_port.to_be_bytes());
    b
}

/// The flow's hash: SipHash-1-3 under `key` over [`flow_bytes`]. No allocation.
#[inline]
pub fn flow_hash(key: &SipKey, flow: &FlowKey) -> u64 {
    SipHasher13::new_with_keys(key.k0, key.k1).hash(&flow_bytes(flow))
}

fn maglev_hash(key: &SipKey, tag: &[u8; 13], id: ProxyId) -> u64 {
    let mut b = [0u8; 17];
    b[..13].copy_from_slice(tag);
    b[13..].copy_from_slice(&id.0.to_be_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b)
}

/// A JAP's Maglev permutation: `(offset, skip)` with `offset < M` and `1 <= skip < M`.
pub fn permutation(key: &SipKey, id: ProxyId) -> (usize, usize) {
    let m = M as u64;
    let offset = maglev_hash(key, b"pias-maglev-o", id) % m;
    let skip = maglev_hash(key, b"pias-maglev-s", id) % (m - 1) + 1;
    (offset as usize, skip as usize)
}

/// A Maglev lookup table over a weighted JAP set. See the module documentation for the rule.
///
/// `Copy` and 336 bytes: the slot array is what a BPF map holds next to the id list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MaglevTable {
    /// `slots[s]` is an index into `ids` (`EMPTY` only when the table is empty).
    slots: [u8; M],
    /// The JAPs, ascending by id; only `..len` is meaningful.
    ids: [ProxyId; MAX_JAPS],
    len: u8,
}

impl core::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MaglevTable")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

impl Default for MaglevTable {
    fn default() -> Self {
        MaglevTable {
            slots: [EMPTY; M],
            ids: [ProxyId::NONE; MAX_JAPS],
            len: 0,
        }
    }
}

impl MaglevTable {
    /// Builds the table for the JAP set `japs` under the flow key. Any input is accepted (see the rule for
    /// how it is normalised); no allocation.
    pub fn build(key: &SipKey, japs: &[(ProxyId, u32)]) -> Self {
        // 1. Normalise into a sorted, deduplicated, bounded list (insertion into a fixed array).
        let mut set = [(ProxyId::NONE, 0u32); MAX_JAPS];
        let mut n = 0usize;
        for &(id, w) in japs {
            if !id.is_some() {
                continue;
            }
            let pos = set[..n].partition_point(|e| e.0 < id);
            if pos < n && set[pos].0 == id {
                set[pos].1 = set[pos].1.max(w);
                continue;
            }
            if pos == MAX_JAPS {
                continue; // larger than the 16 lowest ids
            }
            let end = if n < MAX_JAPS { n } else { MAX_JAPS - 1 };
            set.copy_within(pos..end, pos + 1);
            set[pos] = (id, w);
            n = (n + 1).min(MAX_JAPS);
        }

        let mut table = MaglevTable {
            len: n as u8,
            ..MaglevTable::default()
        };
        for (j, e) in set[..n].iter().enumerate() {
            table.ids[j] = e.0;
        }
        if n == 0 {
            return table;
        }

        // 2. Weights.
        let mut weight = [0u64; MAX_JAPS];
        for j in 0..n {
            weight[j] = u64::from(set[j].1);
        }
        if weight[..n].iter().all(|&w| w == 0) {
            weight[..n].fill(1);
        }
        let wmax = weight[..n].iter().copied().max().unwrap_or(1).max(1);

        // 3. Permutations: `pos[j]` is the next preference to try, `skip[j]` the stride.
        let mut pos = [0usize; MAX_JAPS];
        let mut skip = [1usize; MAX_JAPS];
        for j in 0..n {
            (pos[j], skip[j]) = permutation(key, set[j].0);
        }

        // 4. Credit rounds. The heaviest JAP claims every round, so at most M rounds.
        let mut credit = [0u64; MAX_JAPS];
        let mut filled = 0usize;
        'rounds: for _round in 0..M {
            for j in 0..n {
                if weight[j] == 0 {
                    continue;
                }
                credit[j] += weight[j];
                while credit[j] >= wmax {
                    if filled == M {
                        break 'rounds;
                    }
                    // The preference list is a permutation, so an empty slot is met within M steps.
                    for _ in 0..M {
                        let s = pos[j];
                        pos[j] = (pos[j] + skip[j]) % M;
                        if table.slots[s] == EMPTY {
                            table.slots[s] = j as u8;
                            filled += 1;
                            break;
                        }
                    }
                    credit[j] -= wmax;
                }
            }
            if filled == M {
                break;
            }
        }
        table
    }

    /// Number of JAPs (including zero-weight ones, which hold no slot).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the table has no JAP (then [`MaglevTable::pick`] answers `None`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The JAPs, ascending by id: what [`MaglevTable::pick`]'s index refers to.
    pub fn ids(&self) -> &[ProxyId] {
        &self.ids[..self.len()]
    }

    /// The slot array (each entry an index into [`MaglevTable::ids`]); what a BPF map mirrors.
    pub fn slots(&self) -> &[u8; M] {
        &self.slots
    }

    /// The index (into [`MaglevTable::ids`]) of the JAP for a flow hash: `slots[h mod M]`. `None` if empty.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        Some(usize::from(self.slots[(flow_hash % M as u64) as usize]))
    }

    /// The JAP for a flow hash. `None` if the table is empty.
    #[inline]
    pub fn pick_id(&self, flow_hash: u64) -> Option<ProxyId> {
        self.pick(flow_hash).and_then(|j| self.ids.get(j).copied())
    }

    /// [`MaglevTable::pick_id`] with the flow hash computed only when it matters: a table of one JAP gives
    /// that JAP every slot (a lone zero weight counts as 1), so its pick is the same for every hash, and the
    /// flow hash — a SipHash, the largest per-packet cost of an IAP hit after the data tag — is skipped.
    #[inline]
    pub fn pick_id_lazy(&self, flow_hash: impl FnOnce() -> u64) -> Option<ProxyId> {
        if self.len == 1 {
            return Some(self.ids[0]);
        }
        self.pick_id(flow_hash())
    }

    /// Slots held by each JAP, by index (for tests and diagnostics).
    pub fn counts(&self) -> [u16; MAX_JAPS] {
        let mut c = [0u16; MAX_JAPS];
        if self.len == 0 {
            return c;
        }
        for &s in &self.slots {
            if let Some(x) = c.get_mut(usize::from(s)) {
                *x += 1;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use pias_proto::IpProtocol;
    use proptest::prelude::*;

    const KEY: SipKey = SipKey {
        k0: 0x0706_0504_0302_0100,
        k1: 0x0f0e_0d0c_0b0a_0908,
    };

    /// The lazy pick agrees with the eager one, and asks for the hash exactly when there is a choice.
    #[test]
    fn lazy_pick_agrees_and_hashes_only_for_a_choice() {
        for set in [
            &[(ProxyId(7), 0u32)][..],
            &[(ProxyId(7), 5)],
            &[(ProxyId(3), 1), (ProxyId(9), 1)],
            &[(ProxyId(3), 1), (ProxyId(9), 0), (ProxyId(12), 4)],
        ] {
            let t = MaglevTable::build(&KEY, set);
            for h in (0..2000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                let mut asked = false;
                let lazy = t.pick_id_lazy(|| {
                    asked = true;
                    h
                });
                assert_eq!(lazy, t.pick_id(h), "{set:?} {h}");
                assert_eq!(asked, set.len() > 1, "{set:?}");
            }
        }
        assert_eq!(MaglevTable::build(&KEY, &[]).pick_id_lazy(|| 1), None);
    }

    fn v4flow(s: u32, sp: u16) -> FlowKey {
        FlowKey {
            proto: IpProtocol::Tcp,
            src: IpAddr::V4(Ipv4Addr::from(s)),
            src_port: sp,
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dst_port: 443,
        }
    }

    fn slot_ids(t: &MaglevTable) -> [ProxyId; M] {
        let mut out = [ProxyId::NONE; M];
        for (s, o) in out.iter_mut().enumerate() {
            *o = t.pick_id(s as u64).unwrap_or(ProxyId::NONE);
        }
        out
    }

    #[test]
    fn layout_is_canonical() {
        let f = v4flow(0x0a00_0001, 0x1234);
        let b = flow_bytes(&f);
        let mut want = [0u8; FLOW_BYTES];
        want[0] = 6;
        want[1..5].copy_from_slice(&[10, 0, 0, 1]);
        want[17..19].copy_from_slice(&[0x12, 0x34]);
        want[19..23].copy_from_slice(&[192, 0, 2, 1]);
        want[35..37].copy_from_slice(&[0x01, 0xbb]);
        assert_eq!(b, want);
        assert_eq!(
            flow_hash(&KEY, &f),
            SipHasher13::new_with_keys(KEY.k0, KEY.k1).hash(&want)
        );
        // Through the Hasher trait (write once, no length prefix) the value is the same.
        let mut h = SipHasher13::new_with_keys(KEY.k0, KEY.k1);
        core::hash::Hasher::write(&mut h, &want);
        assert_eq!(core::hash::Hasher::finish(&h), flow_hash(&KEY, &f));

        let f6 = FlowKey {
            proto: IpProtocol::Udp,
            src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            src_port: 53,
            dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
            dst_port: 5353,
        };
        let b = flow_bytes(&f6);
        assert_eq!(b[0], 17);
        assert_eq!(
            &b[1..17],
            &Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets()
        );
        assert_eq!(b[34], 1);
        assert_ne!(flow_hash(&KEY, &f6), flow_hash(&KEY, &f6.reversed()));
    }

    #[test]
    fn empty_and_degenerate_sets() {
        let t = MaglevTable::build(&KEY, &[]);
        assert!(t.is_empty());
        assert_eq!(t.pick(7), None);
        assert_eq!(t.pick_id(7), None);
        let t = MaglevTable::build(&KEY, &[(ProxyId::NONE, 5)]);
        assert!(t.is_empty());
        // One JAP owns everything.
        let t = MaglevTable::build(&KEY, &[(ProxyId(4), 1)]);
        assert!(t.slots().iter().all(|&s| s == 0));
        // All zero → equal.
        let t = MaglevTable::build(&KEY, &[(ProxyId(4), 0), (ProxyId(2), 0)]);
        let c = t.counts();
        assert!(c[0].abs_diff(c[1]) <= 1, "{c:?}");
        // One zero among positives → no slot, but keeps its index.
        let t = MaglevTable::build(&KEY, &[(ProxyId(4), 0), (ProxyId(2), 3), (ProxyId(9), 3)]);
        assert_eq!(t.ids(), &[ProxyId(2), ProxyId(4), ProxyId(9)]);
        assert_eq!(t.counts()[1], 0);
        assert_eq!(u32::from(t.counts()[0]) + u32::from(t.counts()[2]), M as u32);
        // Extreme weights.
        let t = MaglevTable::build(&KEY, &[(ProxyId(1), u32::MAX), (ProxyId(2), 1)]);
        assert_eq!(t.counts()[0], M as u16);
        // Duplicates keep the largest weight; more than 16 keep the 16 lowest ids.
        let a = MaglevTable::build(&KEY, &[(ProxyId(3), 1), (ProxyId(5), 2), (ProxyId(3), 2)]);
        let b = MaglevTable::build(&KEY, &[(ProxyId(3), 2), (ProxyId(5), 2)]);
        assert_eq!(a, b);
        let many: Vec<(ProxyId, u32)> = (1..=40).rev().map(|i| (ProxyId(i), 1)).collect();
        let t = MaglevTable::build(&KEY, &many);
        assert_eq!(t.ids(), (1..=16).map(ProxyId).collect::<Vec<_>>().as_slice());
    }

    #[test]
    fn permutations_cover_all_slots() {
        for id in 1..50 {
            let (o, s) = permutation(&KEY, ProxyId(id));
            assert!(o < M && (1..M).contains(&s));
            let mut seen = [false; M];
            for t in 0..M {
                seen[(o + t * s) % M] = true;
            }
            assert!(seen.iter().all(|&x| x));
        }
    }

    #[test]
    fn equal_weights_match_plain_maglev() {
        // With equal weights the credit scheme is Maglev's round robin: counts differ by at most one.
        let japs: Vec<(ProxyId, u32)> = (1..=7).map(|i| (ProxyId(i * 11), 5)).collect();
        let t = MaglevTable::build(&KEY, &japs);
        let c = &t.counts()[..7];
        let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
        assert!(hi - lo <= 1, "{c:?}");
    }

    /// Removing one of 8 equal JAPs: how many slots of *other* JAPs move. Measured over 2000 random sets
    /// (20 000-set run: median 11 = 4.4 % of M, 99th percentile 27 = 11 %, worst 59 = 23.5 %; a 251-slot
    /// table is small for 8 JAPs, the paper's tables are ~100× the backend count). Asserted: mean <= 8 %
    /// of M, 99th percentile <= 15 %, every set <= 30 %.
    #[test]
    fn removal_disruption_measured() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let trials = 2000usize;
        let mut moved_all = Vec::with_capacity(trials);
        for _ in 0..trials {
            let mut japs: Vec<(ProxyId, u32)> = Vec::new();
            while japs.len() < 8 {
                let id = ProxyId((next() % 100_000) as u32 + 1);
                if !japs.iter().any(|e| e.0 == id) {
                    japs.push((id, 1));
                }
            }
            let full = slot_ids(&MaglevTable::build(&KEY, &japs));
            let victim = japs.remove((next() % 8) as usize).0;
            let after = slot_ids(&MaglevTable::build(&KEY, &japs));
            moved_all.push(
                (0..M)
                    .filter(|&s| full[s] != victim && full[s] != after[s])
                    .count(),
            );
        }
        moved_all.sort_unstable();
        let mean = moved_all.iter().sum::<usize>() as f64 / trials as f64;
        let (median, p99, worst) = (
            moved_all[trials / 2],
            moved_all[trials * 99 / 100],
            moved_all[trials - 1],
        );
        eprintln!(
            "maglev n=8 remove one, other slots moved of {M}: mean {mean:.1} median {median} p99 {p99} worst {worst}"
        );
        assert!(mean <= 0.08 * M as f64, "mean {mean}");
        assert!(p99 * 100 <= 15 * M, "p99 {p99}");
        assert!(worst * 100 <= 30 * M, "worst {worst}");
    }

    fn japs_strategy() -> impl Strategy<Value = Vec<(ProxyId, u32)>> {
        proptest::collection::btree_map(1u32..10_000, 0u32..1000, 1..=MAX_JAPS)
            .prop_map(|m| m.into_iter().map(|(k, v)| (ProxyId(k), v)).collect())
    }

    proptest! {
        #[test]
        fn slots_proportional_to_weight(japs in japs_strategy()) {
            let t = MaglevTable::build(&KEY, &japs);
            let n = japs.len();
            let mut w: Vec<u64> = japs.iter().map(|e| u64::from(e.1)).collect();
            if w.iter().all(|&x| x == 0) { w.fill(1); }
            let total: u64 = w.iter().sum();
            let c = t.counts();
            prop_assert_eq!(c.iter().map(|&x| u32::from(x)).sum::<u32>(), M as u32);
            for j in 0..n {
                let want = M as f64 * w[j] as f64 / total as f64;
                // Derived bound (see rule step 4): after R full rounds JAP j holds floor(R·w/W) ± 1, and
                // R·W_sum/W is within n of M, so |slots − M·w/Σw| <= 1 + n·w/Σw (+ 1 for the last round).
                let tol = 2.0 + n as f64 * w[j] as f64 / total as f64;
                prop_assert!((f64::from(c[j]) - want).abs() <= tol, "jap {} got {} want {:.1} tol {:.1}", j, c[j], want, tol);
                if w[j] == 0 { prop_assert_eq!(c[j], 0); }
            }
        }

        #[test]
        fn build_order_does_not_matter(japs in japs_strategy(), rot in 0usize..16) {
            let a = MaglevTable::build(&KEY, &japs);
            let mut shuffled = japs.clone();
            shuffled.reverse();
            let r = rot % shuffled.len();
            shuffled.rotate_left(r);
            prop_assert_eq!(a, MaglevTable::build(&KEY, &shuffled));
        }

        #[test]
        fn removal_moves_few_others(japs in proptest::collection::btree_set(1u32..100_000, 8..=8), gone in 0usize..8) {
            let japs: Vec<(ProxyId, u32)> = japs.into_iter().map(|k| (ProxyId(k), 1)).collect();
            let full = slot_ids(&MaglevTable::build(&KEY, &japs));
            let mut less = japs.clone();
            let victim = less.remove(gone).0;
            let after = slot_ids(&MaglevTable::build(&KEY, &less));
            for s in 0..M {
                if full[s] == victim { prop_assert_ne!(after[s], victim); }
            }
            let moved = (0..M).filter(|&s| full[s] != victim && full[s] != after[s]).count();
            // Rare sets move up to ~24 % (see `removal_disruption_measured`); 30 % is the sanity bound.
            prop_assert!(moved * 100 <= 30 * M, "moved {}", moved);
        }

        #[test]
        fn flow_hash_never_panics(p: u8, a: [u8; 16], b: u32, sp: u16, dp: u16) {
            let f = FlowKey {
                proto: IpProtocol::from(p),
                src: IpAddr::V6(Ipv6Addr::from(a)),
                src_port: sp,
                dst: IpAddr::V4(Ipv4Addr::from(b)),
                dst_port: dp,
            };
            let h = flow_hash(&KEY, &f);
            let t = MaglevTable::build(&KEY, &[(ProxyId(1), 1), (ProxyId(2), 2)]);
            prop_assert!(t.pick(h).unwrap() < 2);
        }
    }
}
