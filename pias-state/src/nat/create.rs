//! Creating a binding: checks, the pool address (paired by a keyed hash of the client) and port (bitmap from a
//! keyed pseudo-random start), room in a full table (the earliest deadline goes), a slab slot, and both index entries.

use super::*;

impl NatTable {
    /// Creates a binding for the client flow `key` towards `target` (ip, port; ignored port for ICMP echo),
    /// with a caller-chosen `tag`, and returns the forward rewrite. In a full table, first removes the binding
    /// with the earliest deadline (evicted, or expired if due). Emits [`NatEvent::Created`].
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
        // Pool address: keyed hash of the client, then the next ones of the family.
        let fam = if k.v6 { &self.v6_pool } else { &self.v4_pool };
        if fam.is_empty() {
            return Err(NatError::NoPoolAddress);
        }
        let mut h = SipHasher13::new_with_keys(self.sip.1, self.sip.0);
        h.write(&k.src);
        let first = (h.finish() % fam.len() as u64) as usize;
        let span = u32::from(self.cfg.port_max - self.cfg.port_min) + 1;
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
        let mut got = None;
        for j in 0..fam.len() {
            let pi = fam[(first + j) % fam.len()];
            let bm = &mut self.pool_ports[usize::from(pi)][class];
            if bm.free() > 0
                && let Some(p) = bm.allocate(start)
            {
                got = Some((pi, p));
                break;
            }
        }
        let (pool_idx, pool_port) = got.ok_or(NatError::PortsExhausted)?;
        // A slot: free list, fresh slab slot, or the earliest deadline.
        if self.len >= self.cfg.max_entries {
            let victim = self.earliest();
            if let Some((v, deadline)) = victim {
                if deadline <= self.now {
                    self.expire(v);
                } else {
                    self.remove_slot(v, RemoveReason::Evicted);
                }
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
            });
            (self.slab.len() - 1) as u32
        };
        let icmp = class == 2;
        let tclass = match key.proto {
            IpProtocol::Tcp => TimeoutClass::TcpTransitory,
            IpProtocol::Udp => TimeoutClass::Udp,
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
        };
        let e = &self.slab[i as usize];
        let sip = self.sip;
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
