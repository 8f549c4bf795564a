//! Creating a binding: checks, the per-prefix cap on new bindings, the pool address (paired by a keyed hash of
//! the client) and port (bitmap from a keyed pseudo-random start; early drop of a transitory binding of the same family and
//! protocol when none is free), room in a full table (a due binding, else the oldest transitory one; never a
//! protected one), a slab slot, and both index entries.

use super::*;

impl NatTable {
    /// Creates a binding for the client flow `key` towards `target` (ip, port; ignored port for ICMP echo),
    /// with a caller-chosen `tag`, and returns the forward rewrite. When ports or entries run out, first
    /// removes a due binding or drops the oldest transitory one early ([`RemoveReason::Evicted`]); it never
    /// removes an assured or established binding for a new flow and refuses instead. Emits
    /// [`NatEvent::Created`].
    pub fn create(
        &mut self,
        key: &FlowKey,
        target: (IpAddr, u16),
        tag: u32,
        now: Instant,
    ) -> Result<Translation, NatError> {
        self.advance(now);
        let r = self.create_inner(key, target, tag);
        match r {
            Err(NatError::PortsExhausted) => self.counters.port_exhausted += 1,
            Err(NatError::Full) => self.counters.refused_full += 1,
            Err(NatError::PrefixCap) => self.counters.prefix_refused += 1,
            Err(_) => self.counters.create_rejected += 1,
            Ok(_) => self.counters.created += 1,
        }
        r
    }

    fn create_inner(
        &mut self,
        key: &FlowKey,
        target: (IpAddr, u16),
        tag: u32,
    ) -> Result<Translation, NatError> {
        let class = port_class(key.proto).ok_or(NatError::UnsupportedProtocol(key.proto))?;
        let k = RawKey::new(key).ok_or(NatError::FamilyMismatch)?;
        let (tip, tv6) = ip_bytes(&target.0);
        if tv6 != k.v6 {
            return Err(NatError::FamilyMismatch);
        }
        if self.cfg.max_entries == 0 {
            return Err(NatError::NoCapacity);
        }
        if let Some(i) = self.find_fwd(&k) {
            if self.deadline(i) > self.now {
                return Err(NatError::AlreadyExists(BindingId {
                    slot: i,
                    generation: self.slab[i as usize].generation,
                }));
            }
            self.expire(i);
        }
        if self.is_draining(target.0, target.1) {
            return Err(NatError::TargetDraining);
        }
        // The per-prefix cap on new bindings: one source prefix (a spoofer's, say) cannot take every port.
        let slots = self.prefix_slots(&k.src, k.v6);
        if self.prefix_counts[slots[0]].min(self.prefix_counts[slots[1]]) >= self.cfg.new_per_prefix {
            return Err(NatError::PrefixCap);
        }
        // Pool address: keyed hash of the client, then the next ones of the family.
        let fam = if k.v6 { &self.v6_pool } else { &self.v4_pool };
        if fam.is_empty() {
            return Err(NatError::NoPoolAddress);
        }
        let mut got = self.allocate_port(&k, class);
        if got.is_none()
            && let Some(v) = self.early_drop_victim(Some((k.v6, class)))
        {
            self.drop_early(v);
            got = self.allocate_port(&k, class);
        }
        let (pool_idx, pool_port) = got.ok_or(NatError::PortsExhausted)?;
        // A slot: free list, fresh slab slot, or a due / the oldest transitory binding's.
        if self.len >= self.cfg.max_entries {
            match self.earliest() {
                Some((v, deadline)) if deadline <= self.now => self.expire(v),
                _ => match self.early_drop_victim(None) {
                    Some(v) => self.drop_early(v),
                    None => {
                        self.pool_ports[usize::from(pool_idx)][class].release(pool_port);
                        return Err(NatError::Full);
                    }
                },
            }
        }
        let i = if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.slab[i as usize].next;
            i
        } else {
            self.slab.push(Entry {
                client: [0; 16],
                group: [0; 16],
                target: [0; 16],
                last_seen: 0,
                fwd_packets: 0,
                fwd_bytes: 0,
                rev_packets: 0,
                rev_bytes: 0,
                tag: 0,
                prev: NIL,
                next: NIL,
                generation: 0,
                created_s: 0,
                lag: 0,
                client_port: 0,
                group_port: 0,
                target_port: 0,
                pool_port: 0,
                pool_idx: 0,
                proto: 0,
                v6: false,
                tcp: Seen::default(),
                class: FREE,
                flags: 0,
            });
            (self.slab.len() - 1) as u32
        };
        let icmp = class == 2;
        let tclass = match key.proto {
            IpProtocol::Tcp => TimeoutClass::TcpHalfOpen,
            IpProtocol::Udp => TimeoutClass::UdpTransitory,
            _ => TimeoutClass::Icmp,
        } as u8;
        let e = &mut self.slab[i as usize];
        let generation = e.generation;
        *e = Entry {
            client: k.src,
            group: k.dst,
            target: tip,
            last_seen: self.now,
            fwd_packets: 0,
            fwd_bytes: 0,
            rev_packets: 0,
            rev_bytes: 0,
            tag,
            prev: NIL,
            next: NIL,
            generation,
            created_s: u32::try_from(self.now / 1_000_000).unwrap_or(u32::MAX),
            lag: 0,
            client_port: k.src_port,
            group_port: k.dst_port,
            target_port: if icmp { pool_port } else { target.1 },
            pool_port,
            pool_idx,
            proto: k.proto,
            v6: k.v6,
            tcp: Seen::default(),
            class: FREE,
            flags: FRESH,
        };
        for s in slots {
            self.prefix_counts[s] = self.prefix_counts[s].saturating_add(1);
        }
        let e = &self.slab[i as usize];
        let sip = self.index_key;
        let (slab, pool_ips) = (&self.slab, &self.pool_ips);
        self.fwd
            .insert_unique(fwd_hash(sip, e), i, |&x| fwd_hash(sip, &slab[x as usize]));
        self.rev.insert_unique(rev_hash(sip, pool_ips, e), i, |&x| {
            rev_hash(sip, pool_ips, &slab[x as usize])
        });
        self.link_tail(i, tclass);
        self.len += 1;
        let id = BindingId { slot: i, generation };
        let (forward, reverse) = self.keys(i);
        self.push_event(NatEvent::Created {
            id,
            forward,
            reverse,
            tag,
        });
        Ok(Translation {
            id,
            tag,
            src: reverse.dst,
            src_port: reverse.dst_port,
            dst: reverse.src,
            dst_port: reverse.src_port,
        })
    }
}

impl NatTable {
    /// A free pool port of the family of `k` and port class `class`: the client's paired address first.
    fn allocate_port(&mut self, k: &RawKey, class: usize) -> Option<(u16, u16)> {
        let fam = if k.v6 { &self.v6_pool } else { &self.v4_pool };
        if fam.is_empty() {
            return None;
        }
        let mut h = SipHasher13::new_with_keys(self.sip.1, self.sip.0);
        h.write(&k.src);
        let first = (h.finish() % fam.len() as u64) as usize;
        let span = u32::from(self.cfg.port_max - self.cfg.port_min) + 1;
        // A keyed PRF of a counter under the table secret (§8.1): unpredictable from outside (RFC 6056
        // §3.3.2 style), unlike a generator whose state shows in its outputs.
        let draw = crate::secrets::prf(
            &pias_proto::auth::SipKey {
                k0: self.sip.0,
                k1: self.sip.1,
            },
            2,
            self.port_draws,
        );
        self.port_draws = self.port_draws.wrapping_add(1);
        let start = self.cfg.port_min + (draw % u64::from(span)) as u16;
        for j in 0..fam.len() {
            let pi = fam[(first + j) % fam.len()];
            let bm = &mut self.pool_ports[usize::from(pi)][class];
            if bm.free() > 0
                && let Some(p) = bm.allocate(start)
            {
                return Some((pi, p));
            }
        }
        None
    }

    /// The transitory binding early drop takes: the least recently moved head of the transitory classes
    /// (their lists are in last-seen order to within `touch_granularity`). With `want = (v6, port class)`, only
    /// a binding of that family and protocol, whose port the new flow could use: each matching list is then
    /// walked from its head for at most [`EARLY_DROP_SCAN`] nodes. `None` when every candidate is protected.
    pub(super) fn early_drop_victim(&self, want: Option<(bool, usize)>) -> Option<u32> {
        let mut best: Option<(u32, u64)> = None;
        for c in TimeoutClass::ALL {
            if !c.is_transitory() {
                continue;
            }
            let mut i = self.heads[c as usize];
            let mut left = if want.is_some() { EARLY_DROP_SCAN } else { 1 };
            while i != NIL && left > 0 {
                let e = &self.slab[i as usize];
                let fits = want.is_none_or(|(v6, class)| {
                    e.v6 == v6 && port_class(IpProtocol::from(e.proto)) == Some(class)
                });
                if fits {
                    let moved = e.last_seen - u64::from(e.lag);
                    if best.is_none_or(|(_, m)| moved < m) {
                        best = Some((i, moved));
                    }
                    break;
                }
                i = e.next;
                left -= 1;
            }
        }
        best.map(|(i, _)| i)
    }

    /// Removes transitory slot `i` for a new flow: an expiry if it is due, else an early drop.
    pub(super) fn drop_early(&mut self, i: u32) {
        if self.deadline(i) <= self.now {
            self.expire(i);
        } else {
            self.remove_slot(i, RemoveReason::Evicted);
        }
    }
}
