//! The member table: every record this proxy knows, with the indexes membership needs kept in step.
//!
//! One slab (`Vec<Member>`) holds the records; beside it, kept consistent by every mutation:
//! - `index`: id → slab position;
//! - `by_addr`: overlay address → id, for usable members (Alive or Suspect), for data-frame acceptance;
//! - `ring`: usable members ordered by `ring_position` (SPEC.md §7.2), for the neighbour graph;
//! - the anti-entropy tree (SPEC.md §7.4): XOR of record hashes and counts for the root and the first three
//!   levels (1 + 16 + 256 + 4096 nodes), updated incrementally, plus per-level-3 bucket lists of ids from
//!   which deeper nodes are computed by a scan (about n / 4096 records each).
//!
//! Only usable records (Alive or Suspect) contribute to the digest tree; tombstones (Down, Left) are listed
//! in the buckets so anti-entropy still sends them, but they do not change the digest (SPEC.md §7.4).

use std::collections::BTreeSet;

use core::net::SocketAddr;

use pias_proto::ProxyId;
use pias_proto::auth::SipKey;
use pias_proto::control::{DIGEST_FANOUT, MemberStatus, ProxyRecord};
use siphasher::sip::{SipHasher13, SipHasher24};

use crate::coords::Coord;
use crate::replay::ReplayWindow;
use crate::time::Instant;

/// Hash maps of the module: SipHash-1-3 under a key derived from the ring key, so table layout is
/// deterministic for a given key yet not predictable by anyone without it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyed(u64, u64);

impl Keyed {
    pub(crate) fn new(key: &SipKey) -> Self {
        Keyed(key.k0 ^ 0x6d65_6d62_6572_7368, key.k1.rotate_left(17))
    }
}

impl core::hash::BuildHasher for Keyed {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V, Keyed>;

/// The hasher of the id and address indexes: a keyed multiply-xorshift. Keys enter these tables only from
/// authenticated records (overlay MAC), so no outsider chooses what is stored (a spoofed source address only
/// costs one lookup); the key still keeps the layout unpredictable. It is several times cheaper than
/// SipHash, and the data path reads both indexes on every forwarded packet (a JAP's address at the IAP, the
/// sender check at the JAP).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdKeyed(u64);

impl core::hash::BuildHasher for IdKeyed {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

/// See [`IdKeyed`]. Only `write_u32` is used (the index is keyed by `u32`); other writes fold bytes in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl core::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        let z = self.0;
        (z ^ (z >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (z >> 32)
    }
}

/// Levels of the tree kept incrementally (root = level 0, buckets = level 3).
pub(crate) const KEPT_LEVELS: u8 = 3;
/// Number of level-3 buckets.
pub(crate) const BUCKETS: usize = 1 << (4 * KEPT_LEVELS as usize);
const LEVEL_OFFSET: [usize; 4] = [0, 1, 17, 273];
const TREE_NODES: usize = 1 + 16 + 256 + 4096;

/// `ring_position(id) = SipHash-2-4(ring key, "pias-nbr" ‖ id)`.
pub(crate) fn ring_position(key: &SipKey, id: u32) -> u64 {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(b"pias-nbr");
    b[8..].copy_from_slice(&id.to_be_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b)
}

/// `SipHash-2-4(ring key, "pias-chord" ‖ p ‖ i)`, `i` 2-byte big-endian.
pub(crate) fn chord_position(key: &SipKey, id: u32, i: u16) -> u64 {
    let mut b = [0u8; 16];
    b[..10].copy_from_slice(b"pias-chord");
    b[10..14].copy_from_slice(&id.to_be_bytes());
    b[14..].copy_from_slice(&i.to_be_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b)
}

/// Bucket key: `SipHash-2-4(ring key, "pias-ae" ‖ id) mod 2^32`.
pub(crate) fn bucket_key(key: &SipKey, id: u32) -> u32 {
    let mut b = [0u8; 11];
    b[..7].copy_from_slice(b"pias-ae");
    b[7..].copy_from_slice(&id.to_be_bytes());
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&b) as u32
}

/// Record hash: `SipHash-2-4(ring key, the record's 48 bytes)`.
pub(crate) fn record_hash(key: &SipKey, r: &ProxyRecord) -> u64 {
    SipHasher24::new_with_keys(key.k0, key.k1).hash(&r.to_bytes())
}

/// The node at `depth` containing bucket key `k` (its prefix).
pub(crate) fn node_of(k: u32, depth: u8) -> u32 {
    if depth == 0 {
        0
    } else {
        let shift = 32u32.saturating_sub(4 * u32::from(depth.min(8)));
        k >> shift
    }
}

/// Whether `a` supersedes `b` (SPEC.md §7.1).
pub fn supersedes(a: &ProxyRecord, b: &ProxyRecord) -> bool {
    (a.incarnation, a.version, a.status) > (b.incarnation, b.version, b.status)
}

/// Alive or Suspect: in the ring, in the digest, reachable for data frames.
pub(crate) fn usable_status(s: MemberStatus) -> bool {
    matches!(s, MemberStatus::Alive | MemberStatus::Suspect)
}

/// One known proxy.
#[derive(Debug, Clone)]
pub struct Member {
    pub(crate) record: ProxyRecord,
    pub(crate) window: ReplayWindow,
    pub(crate) hash: u64,
    pub(crate) key: u32,
    pub(crate) pos: u64,
    /// When the status last changed here (start of a suspicion or of a tombstone).
    pub(crate) since: Instant,
}

impl Member {
    /// The record as this proxy holds it.
    pub fn record(&self) -> &ProxyRecord {
        &self.record
    }
    pub fn id(&self) -> ProxyId {
        self.record.id
    }
    pub fn status(&self) -> MemberStatus {
        self.record.status
    }
    pub fn addr(&self) -> SocketAddr {
        self.record.addr
    }
    /// The member's coordinate; a record whose coordinate does not decode reads as a new node's.
    pub fn coord(&self) -> Coord {
        Coord::from_bytes(&self.record.coord).unwrap_or_default()
    }
    /// When its status last changed in this table.
    pub fn since(&self) -> Instant {
        self.since
    }
}

/// The table is at its bound; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

#[derive(Debug)]
pub(crate) struct Table {
    key: SipKey,
    max: usize,
    members: Vec<Member>,
    index: hashbrown::HashMap<u32, u32, IdKeyed>,
    by_addr: hashbrown::HashMap<SocketAddr, u32, IdKeyed>,
    ring: BTreeSet<(u64, u32)>,
    /// Per tree node: XOR of record hashes (usable records only).
    hash: Vec<u64>,
    /// Per tree node: number of usable records.
    count: Vec<u32>,
    /// Per level-3 bucket: ids of every record (tombstones too).
    buckets: Vec<Vec<u32>>,
}

impl Table {
    pub(crate) fn new(key: SipKey, max: usize) -> Self {
        Table {
            key,
            max,
            members: Vec::new(),
            index: hashbrown::HashMap::with_hasher(IdKeyed(key.k0 ^ key.k1.rotate_left(29))),
            by_addr: hashbrown::HashMap::with_hasher(IdKeyed(key.k1 ^ key.k0.rotate_left(31))),
            ring: BTreeSet::new(),
            hash: vec![0; TREE_NODES],
            count: vec![0; TREE_NODES],
            buckets: vec![Vec::new(); BUCKETS],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Member> {
        let i = *self.index.get(&id)?;
        self.members.get(i as usize)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Member> {
        let i = *self.index.get(&id)?;
        self.members.get_mut(i as usize)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    pub(crate) fn id_by_addr(&self, a: &SocketAddr) -> Option<u32> {
        self.by_addr.get(a).copied()
    }

    pub(crate) fn ring(&self) -> &BTreeSet<(u64, u32)> {
        &self.ring
    }

    /// The root hash: the table digest.
    pub(crate) fn digest(&self) -> u64 {
        self.hash[0]
    }

    fn contribute(&mut self, m_key: u32, m_hash: u64, add: bool) {
        for level in 0..=KEPT_LEVELS {
            let i = LEVEL_OFFSET[level as usize] + node_of(m_key, level) as usize;
            self.hash[i] ^= m_hash;
            self.count[i] = if add {
                self.count[i].saturating_add(1)
            } else {
                self.count[i].saturating_sub(1)
            };
        }
    }

    fn attach(&mut self, slot: usize) {
        let m = &self.members[slot];
        let (id, key, hash, pos, addr, usable) = (
            m.record.id.0,
            m.key,
            m.hash,
            m.pos,
            m.record.addr,
            usable_status(m.record.status),
        );
        if usable {
            self.contribute(key, hash, true);
            self.ring.insert((pos, id));
            self.by_addr.insert(addr, id);
        }
    }

    fn detach(&mut self, slot: usize) {
        let m = &self.members[slot];
        let (id, key, hash, pos, addr, usable) = (
            m.record.id.0,
            m.key,
            m.hash,
            m.pos,
            m.record.addr,
            usable_status(m.record.status),
        );
        if usable {
            self.contribute(key, hash, false);
            self.ring.remove(&(pos, id));
            if self.by_addr.get(&addr) == Some(&id) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Inserts a record for an id not in the table, with `window` as its replay window.
    pub(crate) fn insert(&mut self, r: ProxyRecord, window: ReplayWindow, now: Instant) -> Result<(), Full> {
        if self.members.len() >= self.max || self.index.contains_key(&r.id.0) {
            return Err(Full);
        }
        let id = r.id.0;
        let key = bucket_key(&self.key, id);
        let m = Member {
            record: r,
            window,
            hash: record_hash(&self.key, &r),
            key,
            pos: ring_position(&self.key, id),
            since: now,
        };
        let slot = self.members.len();
        self.members.push(m);
        self.index.insert(id, slot as u32);
        self.buckets[node_of(key, KEPT_LEVELS) as usize].push(id);
        self.attach(slot);
        Ok(())
    }

    /// Replaces the record of a present id (its replay window is kept). Returns the old record.
    pub(crate) fn replace(&mut self, r: ProxyRecord, now: Instant) -> Option<ProxyRecord> {
        let slot = *self.index.get(&r.id.0)? as usize;
        let hash = record_hash(&self.key, &r);
        let m = &self.members[slot];
        let old = m.record;
        // Common case (a version bump of a usable member at the same address): only the digest changes.
        let in_place = usable_status(old.status) && usable_status(r.status) && old.addr == r.addr;
        if in_place {
            let (key, old_hash) = (m.key, m.hash);
            self.contribute(key, old_hash, false);
            self.contribute(key, hash, true);
        } else {
            self.detach(slot);
        }
        let m = &mut self.members[slot];
        // A new status, or the same status at a new version, restarts the suspicion or tombstone clock.
        if old.status != r.status || (old.incarnation, old.version) != (r.incarnation, r.version) {
            m.since = now;
        }
        m.record = r;
        m.hash = hash;
        if !in_place {
            self.attach(slot);
        }
        Some(old)
    }

    /// Deletes an id. Returns its member entry.
    pub(crate) fn remove(&mut self, id: u32) -> Option<Member> {
        let slot = *self.index.get(&id)? as usize;
        self.detach(slot);
        self.index.remove(&id);
        let b = &mut self.buckets[node_of(self.members[slot].key, KEPT_LEVELS) as usize];
        if let Some(p) = b.iter().position(|&x| x == id) {
            b.swap_remove(p);
        }
        let m = self.members.swap_remove(slot);
        if let Some(moved) = self.members.get(slot) {
            self.index.insert(moved.record.id.0, slot as u32);
        }
        Some(m)
    }

    /// Children (hash, count) of tree node `(depth, prefix)` in this table.
    pub(crate) fn children(&self, depth: u8, prefix: u32) -> ([u64; DIGEST_FANOUT], [u32; DIGEST_FANOUT]) {
        let mut h = [0u64; DIGEST_FANOUT];
        let mut c = [0u32; DIGEST_FANOUT];
        if depth < KEPT_LEVELS {
            let base = LEVEL_OFFSET[depth as usize + 1] + (prefix as usize) * DIGEST_FANOUT;
            if let (Some(hs), Some(cs)) = (
                self.hash.get(base..base + DIGEST_FANOUT),
                self.count.get(base..base + DIGEST_FANOUT),
            ) {
                h.copy_from_slice(hs);
                c.copy_from_slice(cs);
            }
        } else {
            let bucket = (prefix >> (4 * u32::from(depth - KEPT_LEVELS).min(7))) as usize;
            for &id in self.buckets.get(bucket).map(Vec::as_slice).unwrap_or(&[]) {
                let Some(m) = self.get(id) else { continue };
                if usable_status(m.record.status) && node_of(m.key, depth) == prefix {
                    let ch = (node_of(m.key, depth + 1) & 0xf) as usize;
                    h[ch] ^= m.hash;
                    c[ch] = c[ch].saturating_add(1);
                }
            }
        }
        (h, c)
    }

    /// The range of buckets under node `(depth, prefix)`.
    pub(crate) fn bucket_range(depth: u8, prefix: u32) -> (usize, usize) {
        if depth <= KEPT_LEVELS {
            let shift = 4 * u32::from(KEPT_LEVELS - depth);
            let lo = (prefix as usize) << shift;
            (lo.min(BUCKETS), ((prefix as usize + 1) << shift).min(BUCKETS))
        } else {
            let b = (prefix >> (4 * u32::from(depth - KEPT_LEVELS).min(7))) as usize;
            (b.min(BUCKETS), (b + 1).min(BUCKETS))
        }
    }

    /// Ids in bucket `b`.
    pub(crate) fn bucket(&self, b: usize) -> &[u32] {
        self.buckets.get(b).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Approximate heap bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        use core::mem::size_of;
        let map = |cap: usize, entry: usize| cap * (entry + 1) * 8 / 7;
        self.members.capacity() * size_of::<Member>()
            + map(self.index.capacity(), size_of::<(u32, u32)>())
            + map(self.by_addr.capacity(), size_of::<(SocketAddr, u32)>())
            // B-tree: about 11 entries per 192-byte leaf when full, ~2/3 full on average.
            + self.ring.len() * (size_of::<(u64, u32)>() + 8) * 3 / 2
            + TREE_NODES * (size_of::<u64>() + size_of::<u32>())
            + self.buckets.iter().map(|b| b.capacity() * 4 + size_of::<Vec<u32>>()).sum::<usize>()
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut h = 0u64;
        let mut n = 0u32;
        for m in &self.members {
            assert_eq!(
                self.index
                    .get(&m.record.id.0)
                    .copied()
                    .map(|i| &self.members[i as usize].record),
                Some(&m.record)
            );
            if usable_status(m.record.status) {
                h ^= m.hash;
                n += 1;
                assert!(self.ring.contains(&(m.pos, m.record.id.0)));
            }
            assert_eq!(m.hash, record_hash(&self.key, &m.record));
        }
        assert_eq!(self.hash[0], h);
        assert_eq!(self.count[0], n);
        assert_eq!(self.ring.len(), n as usize);
        assert_eq!(
            self.buckets.iter().map(Vec::len).sum::<usize>(),
            self.members.len()
        );
    }
}
