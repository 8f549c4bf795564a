//! The binding slab and its two keyed indexes: canonical key bytes, SipHash, lookups, the per-class expiry
//! lists, and removal of a slot. Internals of [`NatTable`]; nothing here is public.

use super::*;
use crate::keyhash::TableKey;

pub(super) fn ip_bytes(ip: &IpAddr) -> ([u8; 16], bool) {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, false)
        }
        IpAddr::V6(a) => (a.octets(), true),
    }
}

pub(super) fn bytes_ip(b: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Keyed hash of a 5-tuple ([`crate::keyhash`]: a per-table secret key, a few multiplies). An IPv4 tuple is
/// two words: both addresses, then protocol, family and ports; an IPv6 one adds the addresses' other halves.
#[inline]
pub(super) fn tuple_hash(
    k: TableKey,
    proto: u8,
    v6: bool,
    a: &[u8; 16],
    ap: u16,
    b: &[u8; 16],
    bp: u16,
) -> u64 {
    let word = |x: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&x[..8]);
        u64::from_le_bytes(w)
    };
    let meta = u64::from(proto) | u64::from(v6) << 8 | u64::from(ap) << 16 | u64::from(bp) << 32;
    if !v6 {
        let lo = |x: &[u8; 16]| u64::from(u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
        return k.hash2(lo(a) | lo(b) << 32, meta);
    }
    let mut h = k.hasher();
    h.word(word(&a[..8]));
    h.word(word(&a[8..]));
    h.word(word(&b[..8]));
    h.word(word(&b[8..]));
    h.word(meta);
    h.finish()
}

pub(super) fn fwd_hash(k: TableKey, e: &Entry) -> u64 {
    tuple_hash(k, e.proto, e.v6, &e.client, e.client_port, &e.group, e.group_port)
}

pub(super) fn rev_hash(k: TableKey, pool_ips: &[[u8; 16]], e: &Entry) -> u64 {
    let pool = pool_ips.get(usize::from(e.pool_idx)).copied().unwrap_or([0; 16]);
    tuple_hash(k, e.proto, e.v6, &e.target, e.target_port, &pool, e.pool_port)
}

/// Port class of a protocol: TCP 0, UDP 1, ICMP echo 2.
pub(super) fn port_class(p: IpProtocol) -> Option<usize> {
    match p {
        IpProtocol::Tcp => Some(0),
        IpProtocol::Udp => Some(1),
        IpProtocol::Icmp | IpProtocol::Icmpv6 => Some(2),
        IpProtocol::Other(_) => None,
    }
}

/// A key split into canonical bytes; `None` if its two addresses differ in family.
pub(super) struct RawKey {
    pub(super) proto: u8,
    pub(super) v6: bool,
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) src_port: u16,
    pub(super) dst_port: u16,
}

impl RawKey {
    #[inline]
    pub(super) fn new(key: &FlowKey) -> Option<RawKey> {
        let (src, v6) = ip_bytes(&key.src);
        let (dst, v6d) = ip_bytes(&key.dst);
        (v6 == v6d).then_some(RawKey {
            proto: key.proto.number(),
            v6,
            src,
            dst,
            src_port: key.src_port,
            dst_port: key.dst_port,
        })
    }

    #[inline]
    pub(super) fn hash(&self, k: TableKey) -> u64 {
        tuple_hash(
            k,
            self.proto,
            self.v6,
            &self.src,
            self.src_port,
            &self.dst,
            self.dst_port,
        )
    }
}

impl NatTable {
    #[inline]
    pub(super) fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now.as_micros());
    }

    #[inline]
    pub(super) fn find_fwd(&self, k: &RawKey) -> Option<u32> {
        let slab = &self.slab;
        self.fwd
            .find(k.hash(self.index_key), |&i| {
                let e = &slab[i as usize];
                e.client_port == k.src_port
                    && e.group_port == k.dst_port
                    && e.proto == k.proto
                    && e.v6 == k.v6
                    && e.client == k.src
                    && e.group == k.dst
            })
            .copied()
    }

    #[inline]
    pub(super) fn find_rev(&self, k: &RawKey) -> Option<u32> {
        let (slab, pool_ips) = (&self.slab, &self.pool_ips);
        self.rev
            .find(k.hash(self.index_key), |&i| {
                let e = &slab[i as usize];
                e.target_port == k.src_port
                    && e.pool_port == k.dst_port
                    && e.proto == k.proto
                    && e.v6 == k.v6
                    && e.target == k.src
                    && pool_ips.get(usize::from(e.pool_idx)) == Some(&k.dst)
            })
            .copied()
    }

    pub(super) fn live(&self, id: BindingId) -> Option<u32> {
        let e = self.slab.get(id.slot as usize)?;
        (e.class != FREE && e.generation == id.generation).then_some(id.slot)
    }

    #[inline]
    pub(super) fn touch_slot(&mut self, i: u32, dir: Direction, packets: u64, bytes: u64) {
        let e = &mut self.slab[i as usize];
        match dir {
            Direction::Forward => {
                e.fwd_packets = e.fwd_packets.saturating_add(packets);
                e.fwd_bytes = e.fwd_bytes.saturating_add(bytes);
            }
            Direction::Reverse => {
                e.rev_packets = e.rev_packets.saturating_add(packets);
                e.rev_bytes = e.rev_bytes.saturating_add(bytes);
            }
        }
        let lag = u64::from(e.lag) + self.now.saturating_sub(e.last_seen);
        e.last_seen = self.now;
        let class = e.class;
        // conntrack's UDP "stream" rule: replied and still active a moment after creation means a real
        // exchange, not a one-shot query or a spoofed probe; it becomes assured (protected, longer timeout).
        if class == TimeoutClass::UdpTransitory as u8
            && e.rev_packets > 0
            && self.now / 1_000_000 >= u64::from(e.created_s) + u64::from(UDP_ASSURE_AFTER_S)
        {
            self.unlink(i);
            self.link_tail(i, TimeoutClass::Udp as u8);
            self.unfresh(i);
            self.counters.assured += 1;
            return;
        }
        if self.tails[usize::from(class)] == i {
            e.lag = 0;
        } else if lag < self.granularity {
            e.lag = lag as u32;
        } else {
            self.unlink(i);
            self.link_tail(i, class);
        }
    }

    /// The two sketch counters of the client prefix of `addr` (its first `prefix_len_v4`/`v6` bits).
    pub(super) fn prefix_slots(&self, addr: &[u8; 16], v6: bool) -> [usize; 2] {
        let bits = u32::from(if v6 {
            self.cfg.prefix_len_v6
        } else {
            self.cfg.prefix_len_v4
        });
        let mut p = *addr;
        for (j, b) in p.iter_mut().enumerate() {
            let lo = j as u32 * 8;
            if lo >= bits {
                *b = 0;
            } else if bits - lo < 8 {
                *b &= 0xffu8 << (8 - (bits - lo));
            }
        }
        let mut h = SipHasher13::new_with_keys(self.prefix_key.0, self.prefix_key.1);
        h.write_u8(u8::from(v6));
        h.write(&p);
        let x = h.finish();
        [
            (x as usize) % PREFIX_BUCKETS,
            PREFIX_BUCKETS + ((x >> 32) as usize) % PREFIX_BUCKETS,
        ]
    }

    /// Clears the [`FRESH`] mark of slot `i` (promoted or removed) and uncounts it from its prefix.
    pub(super) fn unfresh(&mut self, i: u32) {
        let e = &mut self.slab[i as usize];
        if e.flags & FRESH == 0 {
            return;
        }
        e.flags &= !FRESH;
        let (client, v6) = (e.client, e.v6);
        for s in self.prefix_slots(&client, v6) {
            self.prefix_counts[s] = self.prefix_counts[s].saturating_sub(1);
        }
    }

    pub(super) fn unlink(&mut self, i: u32) {
        let (prev, next, class) = {
            let e = &self.slab[i as usize];
            (e.prev, e.next, usize::from(e.class))
        };
        if class >= TimeoutClass::COUNT {
            return;
        }
        if prev == NIL {
            self.heads[class] = next;
        } else {
            self.slab[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[class] = prev;
        } else {
            self.slab[next as usize].prev = prev;
        }
        let e = &mut self.slab[i as usize];
        e.prev = NIL;
        e.next = NIL;
    }

    pub(super) fn link_tail(&mut self, i: u32, class: u8) {
        let c = usize::from(class);
        let tail = self.tails[c];
        {
            let e = &mut self.slab[i as usize];
            e.class = class;
            e.lag = 0;
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.heads[c] = i;
        } else {
            self.slab[tail as usize].next = i;
        }
        self.tails[c] = i;
    }

    pub(super) fn keys(&self, i: u32) -> (FlowKey, FlowKey) {
        let e = &self.slab[i as usize];
        let proto = IpProtocol::from(e.proto);
        let forward = FlowKey {
            proto,
            src: bytes_ip(&e.client, e.v6),
            src_port: e.client_port,
            dst: bytes_ip(&e.group, e.v6),
            dst_port: e.group_port,
        };
        let pool = self
            .pool_ips
            .get(usize::from(e.pool_idx))
            .copied()
            .unwrap_or([0; 16]);
        let reverse = FlowKey {
            proto,
            src: bytes_ip(&e.target, e.v6),
            src_port: e.target_port,
            dst: bytes_ip(&pool, e.v6),
            dst_port: e.pool_port,
        };
        (forward, reverse)
    }

    pub(super) fn binding(&self, i: u32) -> Binding {
        let e = &self.slab[i as usize];
        let (forward, reverse) = self.keys(i);
        Binding {
            id: BindingId {
                slot: i,
                generation: e.generation,
            },
            forward,
            reverse,
            tag: e.tag,
            class: TimeoutClass::from_index(e.class),
            tcp: (e.proto == IpProtocol::TCP).then(|| e.tcp.state()),
            created: Instant::from_secs(u64::from(e.created_s)),
            last_seen: Instant::from_micros(e.last_seen),
            expires: Instant::from_micros(self.deadline(i)),
            forward_packets: e.fwd_packets,
            forward_bytes: e.fwd_bytes,
            reverse_packets: e.rev_packets,
            reverse_bytes: e.rev_bytes,
        }
    }

    pub(super) fn push_event(&mut self, ev: NatEvent) {
        if self.events.len() < self.cfg.event_capacity as usize {
            self.events.push_back(ev);
        } else {
            self.counters.events_dropped += 1;
        }
    }

    /// Removes live slot `i` from both indexes and its list, frees its port, counts and reports it.
    pub(super) fn remove_slot(&mut self, i: u32, reason: RemoveReason) {
        let e = self.slab[i as usize];
        if e.class == FREE {
            return;
        }
        let sip = self.index_key;
        if let Ok(o) = self.fwd.find_entry(fwd_hash(sip, &e), |&x| x == i) {
            o.remove();
        }
        if let Ok(o) = self
            .rev
            .find_entry(rev_hash(sip, &self.pool_ips, &e), |&x| x == i)
        {
            o.remove();
        }
        let (forward, reverse) = self.keys(i);
        self.unfresh(i);
        self.unlink(i);
        if let Some(class) = port_class(IpProtocol::from(e.proto))
            && let Some(b) = self.pool_ports.get_mut(usize::from(e.pool_idx))
        {
            b[class].release(e.pool_port);
        }
        let s = &mut self.slab[i as usize];
        s.class = FREE;
        s.generation = s.generation.wrapping_add(1);
        s.next = self.free_head;
        self.free_head = i;
        self.len -= 1;
        match reason {
            RemoveReason::Timeout(c) => *self.counters.expired_mut(c) += 1,
            RemoveReason::Evicted => self.counters.early_drop += 1,
            RemoveReason::Removed => self.counters.removed += 1,
            RemoveReason::TargetRemoved => self.counters.removed_target += 1,
        }
        self.push_event(NatEvent::Removed {
            id: BindingId {
                slot: i,
                generation: e.generation,
            },
            forward,
            reverse,
            tag: e.tag,
            reason,
        });
    }
}
