//! RAP consistent hashing: which proxies are the rendezvous points (RAPs) of a group.
//!
//! Every proxy knows every live proxy, and every proxy builds the same [`Ring`] from that set and the shared
//! ring key, so all of them agree on a group's RAPs without asking anyone. When one proxy joins or leaves
//! among `n`, only about `k/n` of the groups see their RAP set change.
//!
//! # Rule (SPEC.md, RAP ring)
//!
//! Hashes are SipHash-2-4 under the 128-bit ring key (`k0`, `k1`), over the exact bytes shown (no length
//! prefix), taken as a `u64`:
//!
//! - each live proxy `p` contributes `V` virtual points (default [`DEFAULT_VNODES`] = 16), for `i` in
//!   `0..V`: `point(p, i) = SipHash-2-4(key, b"pias-ring" ‖ p as u32 big-endian ‖ i as u16 big-endian)`
//!   (15 bytes);
//! - a group `g` sits at `gpoint(g) = SipHash-2-4(key, b"pias-group" ‖ g.to_bytes())` (30 bytes; the
//!   20-byte canonical transport-address encoding);
//! - the points are ordered by (value, proxy id): equal values put the lower proxy id first;
//! - the group's RAPs are the first `k` (default [`DEFAULT_K`] = 3) *distinct* proxies met walking the
//!   ring clockwise from the first point whose value is `>= gpoint(g)`, wrapping past the largest point to
//!   the smallest; fewer than `k` if fewer proxies are live. The order of the result is that walk order
//!   (the first is the "primary" RAP).
//!
//! # Bounds
//!
//! - `k` is capped at [`MAX_RAPS`] (8), so a lookup fills a caller-owned `SmallVec<[ProxyId; 8]>` without
//!   ever allocating.
//! - The ring holds at most [`MAX_POINTS`] points (2^22, about 50 MB; 262 144 proxies at 16 points each);
//!   [`Ring::insert`] refuses a proxy beyond that.
//! - [`ProxyId::NONE`] (0) is never a member.
//!
//! # Cost
//!
//! Points are two parallel sorted vectors (`u64` values, `u32` owners): 12 bytes a point, about 19 MB at
//! 10^5 proxies × 16 points, plus a radix index on the values' top bits (about one `u32` per 16 points,
//! 0.5 MB there). A lookup is one index probe, a binary search within a bucket of ~16 points and a short
//! walk, no allocation. An insert or a remove is one linear pass over the vectors (no re-sort);
//! [`Ring::rebuild`] sorts from scratch.

use pias_proto::auth::SipKey;
use pias_proto::{ProxyId, TransportAddr};
use siphasher::sip::SipHasher24;
use smallvec::SmallVec;

/// Virtual points per proxy unless configured otherwise.
pub const DEFAULT_VNODES: u16 = 16;
/// RAPs per group unless configured otherwise.
pub const DEFAULT_K: usize = 3;
/// The largest `k` a lookup honours (the inline capacity of [`Raps`]).
pub const MAX_RAPS: usize = 8;
/// The most points a ring holds.
pub const MAX_POINTS: usize = 1 << 22;

/// A group's RAPs, in walk order. Inline: never allocates for `k <= MAX_RAPS`.
pub type Raps = SmallVec<[ProxyId; MAX_RAPS]>;

const RING_TAG: &[u8; 9] = b"pias-ring";
const GROUP_TAG: &[u8; 10] = b"pias-group";

/// Why [`Ring::insert`] refused a proxy. The ring is unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// [`ProxyId::NONE`] cannot be a member. The ring is unchanged.
    #[error("proxy id 0 is reserved and cannot join the ring")]
    ReservedId,
    /// The ring already holds [`MAX_POINTS`] points (or would exceed it). The ring is unchanged.
    #[error("RAP ring full ({max_points} points)")]
    Full { max_points: usize },
}

/// The consistent-hashing ring of live proxies. See the module documentation for the rule.
#[derive(Clone)]
pub struct Ring {
    key: SipKey,
    vnodes: u16,
    /// Point values, ascending; ties broken by `owners` ascending.
    points: Vec<u64>,
    /// `owners[i]` is the proxy id (`ProxyId.0`) that contributed `points[i]`.
    owners: Vec<u32>,
    /// Number of member proxies.
    members: usize,
    /// Radix index: `index[b]` is the first position whose value's top `index_bits` bits are `>= b`
    /// (`2^index_bits + 1` entries). Narrows the binary search to a dozen points, so a lookup at 10^5
    /// proxies touches a few cache lines instead of ~20 scattered ones.
    index: Vec<u32>,
    index_bits: u32,
}

impl core::fmt::Debug for Ring {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ring")
            .field("vnodes", &self.vnodes)
            .field("members", &self.members)
            .field("points", &self.points.len())
            .finish_non_exhaustive()
    }
}

/// `point(p, i)`: the value of proxy `p`'s `i`-th virtual point under `key`.
pub fn proxy_point(key: &SipKey, id: ProxyId, i: u16) -> u64 {
    let mut b = [0u8; 15];
    b[..9].copy_from_slice(RING_TAG);
    b[9..13].copy_from_slice(&id.0.to_be_bytes());
    b[13..15].copy_from_slice(&i.to_be_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b)
}

/// `gpoint(g)`: where group `g` sits on the ring under `key`.
pub fn group_point(key: &SipKey, group: &TransportAddr) -> u64 {
    let mut b = [0u8; 30];
    b[..10].copy_from_slice(GROUP_TAG);
    b[10..30].copy_from_slice(&group.to_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b)
}

impl Ring {
    /// An empty ring under `key` where each proxy contributes `vnodes` points (`0` is taken as `1`).
    pub fn new(key: SipKey, vnodes: u16) -> Self {
        let mut r = Ring {
            key,
            vnodes: vnodes.max(1),
            points: Vec::new(),
            owners: Vec::new(),
            members: 0,
            index: Vec::new(),
            index_bits: 0,
        };
        r.reindex();
        r
    }

    /// Virtual points per proxy.
    pub fn vnodes(&self) -> u16 {
        self.vnodes
    }

    /// Number of member proxies.
    pub fn len(&self) -> usize {
        self.members
    }

    /// Whether the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// Number of points on the ring (`len() * vnodes()`).
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// Heap and inline bytes the ring holds (allocated capacity, not only the used part).
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.points.capacity() * core::mem::size_of::<u64>()
            + self.owners.capacity() * core::mem::size_of::<u32>()
            + self.index.capacity() * core::mem::size_of::<u32>()
    }

    /// Whether `id` is a member. `O(log n)`: looks for its point 0.
    pub fn contains(&self, id: ProxyId) -> bool {
        if !id.is_some() {
            return false;
        }
        let p = proxy_point(&self.key, id, 0);
        let at = self.lower_bound(p, id.0);
        at < self.points.len() && self.points[at] == p && self.owners[at] == id.0
    }

    /// Adds proxy `id`. `Ok(true)` if it joined, `Ok(false)` if it was already a member (no change).
    ///
    /// One linear merge pass over the ring; no re-sort.
    pub fn insert(&mut self, id: ProxyId) -> Result<bool, RingError> {
        if !id.is_some() {
            return Err(RingError::ReservedId);
        }
        if self.contains(id) {
            return Ok(false);
        }
        let add = usize::from(self.vnodes);
        if self.points.len() + add > MAX_POINTS {
            return Err(RingError::Full {
                max_points: MAX_POINTS,
            });
        }
        let mut new: SmallVec<[(u64, u32); 32]> = (0..self.vnodes)
            .map(|i| (proxy_point(&self.key, id, i), id.0))
            .collect();
        new.sort_unstable();

        let old = self.points.len();
        self.points.resize(old + add, 0);
        self.owners.resize(old + add, 0);
        // Merge from the back so that every element moves at most once.
        let (mut i, mut j, mut w) = (old, add, old + add);
        while j > 0 {
            w -= 1;
            if i > 0 && (self.points[i - 1], self.owners[i - 1]) > new[j - 1] {
                i -= 1;
                self.points[w] = self.points[i];
                self.owners[w] = self.owners[i];
            } else {
                j -= 1;
                self.points[w] = new[j].0;
                self.owners[w] = new[j].1;
            }
        }
        self.members += 1;
        self.reindex();
        Ok(true)
    }

    /// Removes proxy `id`. Returns whether it was a member. One linear pass; no re-sort.
    pub fn remove(&mut self, id: ProxyId) -> bool {
        if !self.contains(id) {
            return false;
        }
        let mut w = 0;
        for r in 0..self.points.len() {
            if self.owners[r] != id.0 {
                self.points[w] = self.points[r];
                self.owners[w] = self.owners[r];
                w += 1;
            }
        }
        self.points.truncate(w);
        self.owners.truncate(w);
        self.members -= 1;
        self.reindex();
        true
    }

    /// Replaces the membership by `ids` (duplicates and [`ProxyId::NONE`] ignored) with one sort.
    ///
    /// If the set would exceed [`MAX_POINTS`], the lowest ids are kept up to the bound and
    /// `Err(Full)` reports that some were left out.
    pub fn rebuild<I: IntoIterator<Item = ProxyId>>(&mut self, ids: I) -> Result<(), RingError> {
        let mut set: Vec<u32> = ids.into_iter().filter(|p| p.is_some()).map(|p| p.0).collect();
        set.sort_unstable();
        set.dedup();
        let max_members = MAX_POINTS / usize::from(self.vnodes);
        let full = set.len() > max_members;
        set.truncate(max_members);

        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(set.len() * usize::from(self.vnodes));
        for &p in &set {
            for i in 0..self.vnodes {
                pairs.push((proxy_point(&self.key, ProxyId(p), i), p));
            }
        }
        pairs.sort_unstable();
        self.points = pairs.iter().map(|&(v, _)| v).collect();
        self.owners = pairs.iter().map(|&(_, o)| o).collect();
        self.members = set.len();
        self.reindex();
        if full {
            Err(RingError::Full {
                max_points: MAX_POINTS,
            })
        } else {
            Ok(())
        }
    }

    /// The member proxies, ascending (allocates; for diagnostics and tests).
    pub fn members(&self) -> Vec<ProxyId> {
        let mut v: Vec<u32> = self.owners.clone();
        v.sort_unstable();
        v.dedup();
        v.into_iter().map(ProxyId).collect()
    }

    /// Fills `out` with the RAPs of `group`: the first `min(k, MAX_RAPS, len())` distinct proxies walking
    /// clockwise from the group's point. `out` is cleared first. No allocation.
    pub fn raps(&self, group: &TransportAddr, k: usize, out: &mut Raps) {
        self.raps_at(group_point(&self.key, group), k, out);
    }

    /// [`Ring::raps`] for a precomputed group point (see [`group_point`]).
    pub fn raps_at(&self, gpoint: u64, k: usize, out: &mut Raps) {
        out.clear();
        let k = k.min(MAX_RAPS).min(self.members);
        let n = self.points.len();
        if k == 0 || n == 0 {
            return;
        }
        let start = self.search(gpoint);
        for step in 0..n {
            let mut idx = start + step;
            if idx >= n {
                idx -= n;
            }
            let owner = ProxyId(self.owners[idx]);
            if !out.contains(&owner) {
                out.push(owner);
                if out.len() == k {
                    break;
                }
            }
        }
    }

    /// Whether `id` is one of the first `k` RAPs of `group`. No allocation.
    pub fn is_rap(&self, group: &TransportAddr, id: ProxyId, k: usize) -> bool {
        let mut out = Raps::new();
        self.raps(group, k, &mut out);
        out.contains(&id)
    }

    /// Rebuilds the radix index: about 16 points a bucket, at most 2^20 buckets. One pass.
    fn reindex(&mut self) {
        let want = (self.points.len() / 16).max(1);
        let bits = (usize::BITS - want.leading_zeros() - 1).min(20);
        let buckets = 1usize << bits;
        self.index_bits = bits;
        self.index.clear();
        self.index.resize(buckets + 1, 0);
        let mut b = 0usize;
        for (i, &v) in self.points.iter().enumerate() {
            let top = self.bucket_of(v);
            while b <= top {
                self.index[b] = i as u32;
                b += 1;
            }
        }
        for slot in &mut self.index[b..] {
            *slot = self.points.len() as u32;
        }
    }

    fn bucket_of(&self, v: u64) -> usize {
        if self.index_bits == 0 {
            0
        } else {
            (v >> (64 - self.index_bits)) as usize
        }
    }

    /// The first position whose value is `>= v` (`points.len()` if none).
    fn search(&self, v: u64) -> usize {
        let b = self.bucket_of(v);
        let (lo, hi) = match (self.index.get(b), self.index.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.points.len()),
        };
        match self.points.get(lo..hi) {
            Some(run) => lo + run.partition_point(|&x| x < v),
            None => self.points.partition_point(|&x| x < v),
        }
    }

    /// The first index whose (value, owner) is `>= (v, owner)`.
    fn lower_bound(&self, v: u64, owner: u32) -> usize {
        let at = self.search(v);
        let mut i = at;
        while i < self.points.len() && self.points[i] == v && self.owners[i] < owner {
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr};
    use pias_proto::IpProtocol;
    use proptest::prelude::*;

    const KEY: SipKey = SipKey {
        k0: 0x0706_0504_0302_0100,
        k1: 0x0f0e_0d0c_0b0a_0908,
    };

    fn group(n: u32) -> TransportAddr {
        TransportAddr::new(
            IpAddr::V4(Ipv4Addr::from(n)),
            (n % 65_536) as u16,
            IpProtocol::Udp,
        )
    }

    fn ring(ids: impl IntoIterator<Item = u32>) -> Ring {
        let mut r = Ring::new(KEY, DEFAULT_VNODES);
        for id in ids {
            r.insert(ProxyId(id)).unwrap();
        }
        r
    }

    fn lookup(r: &Ring, g: &TransportAddr, k: usize) -> Raps {
        let mut out = Raps::new();
        r.raps(g, k, &mut out);
        out
    }

    /// Fraction of `groups` whose RAP set (as a set) differs between two rings.
    fn changed_fraction(a: &Ring, b: &Ring, groups: u32, salt: u32, k: usize) -> f64 {
        let mut changed = 0u32;
        for g in 0..groups {
            let g = group(g.wrapping_mul(2_654_435_761).wrapping_add(salt));
            let mut x = lookup(a, &g, k);
            let mut y = lookup(b, &g, k);
            x.sort_unstable();
            y.sort_unstable();
            if x != y {
                changed += 1;
            }
        }
        f64::from(changed) / f64::from(groups)
    }

    #[test]
    fn golden_points() {
        // Pinned so that any change of the rule is a visible test failure (and SPEC vectors can be copied).
        let mut b = Vec::new();
        b.extend_from_slice(b"pias-ring");
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&3u16.to_be_bytes());
        assert_eq!(
            proxy_point(&KEY, ProxyId(7), 3),
            SipHasher24::new_with_keys(KEY.k0, KEY.k1).hash(&b)
        );
        let g = group(0xc000_0235);
        let mut b = b"pias-group".to_vec();
        b.extend_from_slice(&g.to_bytes());
        assert_eq!(
            group_point(&KEY, &g),
            SipHasher24::new_with_keys(KEY.k0, KEY.k1).hash(&b)
        );
        // SipHash-2-4 reference vector (key 00..0f, empty input) to be sure the key halves are wired right.
        assert_eq!(
            SipHasher24::new_with_keys(KEY.k0, KEY.k1).hash(&[]),
            0x726f_db47_dd0e_0e31
        );
    }

    #[test]
    fn small_rings() {
        let mut r = Ring::new(KEY, 4);
        assert!(lookup(&r, &group(1), 3).is_empty());
        assert_eq!(r.insert(ProxyId::NONE), Err(RingError::ReservedId));
        assert_eq!(r.insert(ProxyId(5)), Ok(true));
        assert_eq!(r.insert(ProxyId(5)), Ok(false));
        assert_eq!(r.len(), 1);
        assert_eq!(r.points(), 4);
        assert_eq!(lookup(&r, &group(1), 3).as_slice(), &[ProxyId(5)]);
        r.insert(ProxyId(9)).unwrap();
        let l = lookup(&r, &group(1), 3);
        assert_eq!(l.len(), 2);
        assert!(r.is_rap(&group(1), ProxyId(9), 3));
        assert!(!r.is_rap(&group(1), ProxyId(10), 3));
        assert!(r.remove(ProxyId(5)));
        assert!(!r.remove(ProxyId(5)));
        assert_eq!(lookup(&r, &group(1), 3).as_slice(), &[ProxyId(9)]);
        assert_eq!(lookup(&r, &group(1), 0).as_slice(), &[]);
        assert!(r.remove(ProxyId(9)));
        assert!(r.is_empty());
        assert_eq!(r.points(), 0);
        assert_eq!(Ring::new(KEY, 0).vnodes(), 1);
    }

    #[test]
    fn ties_put_lower_id_first() {
        // Forge a tie: two owners on the same value; the walk from that value meets the lower id first.
        let mut r = ring([3, 4]);
        r.points = vec![10, 10, 20];
        r.owners = vec![3, 4, 3];
        r.reindex();
        let mut out = Raps::new();
        r.raps_at(10, 1, &mut out);
        assert_eq!(out.as_slice(), &[ProxyId(3)]);
        r.raps_at(11, 2, &mut out);
        assert_eq!(out.as_slice(), &[ProxyId(3), ProxyId(4)]);
        r.raps_at(21, 2, &mut out); // wraps
        assert_eq!(out.as_slice(), &[ProxyId(3), ProxyId(4)]);
    }

    #[test]
    fn index_matches_binary_search() {
        let mut r = Ring::new(KEY, DEFAULT_VNODES);
        r.rebuild((1..=5000).map(ProxyId)).unwrap();
        assert_eq!(r.index_bits, 12);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000usize {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let probe = if i % 2 == 0 {
                x
            } else {
                r.points[i % r.points.len()]
            };
            assert_eq!(r.search(probe), r.points.partition_point(|&v| v < probe));
        }
        for v in [0, 1, u64::MAX, u64::MAX - 1, 1 << 63] {
            assert_eq!(r.search(v), r.points.partition_point(|&p| p < v));
        }
        // Incremental changes keep it right.
        r.insert(ProxyId(9999)).unwrap();
        r.remove(ProxyId(17));
        for &v in r.points.iter().step_by(97) {
            assert_eq!(r.search(v), r.points.partition_point(|&p| p < v));
        }
    }

    #[test]
    fn k_is_capped() {
        let r = ring(1..=20);
        assert_eq!(lookup(&r, &group(42), 100).len(), MAX_RAPS);
        assert!(!lookup(&r, &group(42), 100).spilled());
    }

    #[test]
    fn churn_fraction_measured() {
        // n = 200, one proxy joins and one leaves; expect about k/n = 1.5 %.
        let a = ring(1..=200);
        let mut joined = a.clone();
        joined.insert(ProxyId(1000)).unwrap();
        let mut left = a.clone();
        left.remove(ProxyId(77));
        let fj = changed_fraction(&a, &joined, 20_000, 0, DEFAULT_K);
        let fl = changed_fraction(&a, &left, 20_000, 0, DEFAULT_K);
        let bound = 2.5 * 3.0 / 200.0;
        assert!(fj <= bound && fl <= bound, "join {fj} leave {fl}");
        assert!(fj > 0.0 && fl > 0.0);
    }

    #[test]
    fn load_is_spread() {
        // Primary-RAP counts over 20k groups at n = 100: none above 3x the mean.
        let r = ring(1..=100);
        let mut count = [0u32; 101];
        for g in 0..20_000 {
            count[lookup(&r, &group(g * 7919), 1)[0].0 as usize] += 1;
        }
        let max = count.iter().copied().max().unwrap();
        assert!(max < 600, "max primary load {max} (mean 200)");
    }

    #[test]
    fn rebuild_matches_incremental() {
        let a = ring([5, 1, 9, 33, 2]);
        let mut b = Ring::new(KEY, DEFAULT_VNODES);
        b.rebuild([
            ProxyId(9),
            ProxyId(2),
            ProxyId(0),
            ProxyId(33),
            ProxyId(1),
            ProxyId(5),
            ProxyId(9),
        ])
        .unwrap();
        assert_eq!(a.points, b.points);
        assert_eq!(a.owners, b.owners);
        assert_eq!(b.len(), 5);
        assert_eq!(
            b.members(),
            vec![ProxyId(1), ProxyId(2), ProxyId(5), ProxyId(9), ProxyId(33)]
        );
    }

    #[test]
    fn bounded() {
        let mut r = Ring::new(KEY, u16::MAX);
        let max = MAX_POINTS / usize::from(u16::MAX);
        assert_eq!(
            r.rebuild((1..=max as u32 + 3).map(ProxyId)),
            Err(RingError::Full {
                max_points: MAX_POINTS
            })
        );
        assert_eq!(r.len(), max);
        assert_eq!(
            r.insert(ProxyId(100_000)),
            Err(RingError::Full {
                max_points: MAX_POINTS
            })
        );
        assert_eq!(r.len(), max);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn join_or_leave_moves_about_k_over_n(seed in any::<u32>(), k in 1usize..=4, leave in any::<bool>()) {
            let n = 200u32;
            let base = ring((0..n).map(|i| i.wrapping_mul(0x9e37_79b9) ^ seed).filter(|&x| x != 0));
            let n = base.len();
            let mut other = base.clone();
            if leave {
                let victim = base.members()[seed as usize % n];
                other.remove(victim);
            } else {
                let mut id = seed | 1;
                while base.contains(ProxyId(id)) { id = id.wrapping_add(2); }
                other.insert(ProxyId(id)).unwrap();
            }
            let f = changed_fraction(&base, &other, 20_000, seed, k);
            prop_assert!(f <= 2.5 * k as f64 / n as f64, "fraction {} > 2.5*{}/{}", f, k, n);
        }

        #[test]
        fn raps_distinct_and_members(ids in proptest::collection::vec(1u32..500, 0..40), g: u32, k in 0usize..12) {
            let r = ring(ids.iter().copied());
            let out = lookup(&r, &group(g), k);
            prop_assert_eq!(out.len(), k.min(MAX_RAPS).min(r.len()));
            for (i, p) in out.iter().enumerate() {
                prop_assert!(r.contains(*p));
                prop_assert!(!out[..i].contains(p));
            }
            // The radix index agrees with a plain binary search.
            let gp = group_point(&KEY, &group(g));
            prop_assert_eq!(r.search(gp), r.points.partition_point(|&v| v < gp));
            prop_assert_eq!(r.search(0), 0);
            prop_assert_eq!(r.search(u64::MAX), r.points.partition_point(|&v| v < u64::MAX));
            // Deterministic, and prefix-consistent: the first k-1 RAPs are the RAPs for k-1.
            prop_assert_eq!(&out, &lookup(&r, &group(g), k));
            if k > 0 {
                let fewer = lookup(&r, &group(g), k - 1);
                prop_assert_eq!(&out[..fewer.len()], fewer.as_slice());
            }
        }

        #[test]
        fn insertion_order_does_not_matter(
            ids in proptest::collection::vec(1u32..1000, 1..40),
            removes in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            groups in proptest::collection::vec(any::<u32>(), 1..20),
        ) {
            let mut a = ring(ids.iter().copied());
            let mut b = ring(ids.iter().rev().copied());
            let mut c = Ring::new(KEY, DEFAULT_VNODES);
            for ix in &removes {
                let victim = ProxyId(ids[ix.index(ids.len())]);
                a.remove(victim);
                b.remove(victim);
            }
            c.rebuild(a.members()).unwrap();
            prop_assert_eq!(&a.points, &b.points);
            prop_assert_eq!(&a.owners, &b.owners);
            prop_assert_eq!(&a.points, &c.points);
            prop_assert_eq!(&a.owners, &c.owners);
            for g in groups {
                prop_assert_eq!(lookup(&a, &group(g), 3), lookup(&c, &group(g), 3));
            }
        }
    }
}
