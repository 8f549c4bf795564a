//! The network between nodes: latency from positions or the topology, the seeded generator for loss,
//! duplication and jitter (reordering), partitions, anycast routing, the delivery queue, and overlay delivery
//! between proxies.

use super::*;

fn latency(a: (f64, f64), b: (f64, f64)) -> Duration {
    let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    Duration::from_micros(100 + (d * 1000.0) as u64)
}

impl Sim {
    fn place_latency(&self, a: ((f64, f64), Option<Attach>), b: ((f64, f64), Option<Attach>)) -> Duration {
        match (&self.topology, a.1, b.1) {
            (Some(t), Some(x), Some(y)) => {
                let ms = t.latency_ms(x.node as usize, y.node as usize);
                Duration::from_micros(u64::from(x.access_us) + u64::from(y.access_us) + (ms * 1000.0) as u64)
            }
            _ => latency(a.0, b.0),
        }
    }

    fn proxy_place(&self, i: usize) -> ((f64, f64), Option<Attach>) {
        (self.proxies[i].pos, self.proxies[i].at)
    }

    fn host_place(&self, h: usize) -> ((f64, f64), Option<Attach>) {
        (self.hosts[h].pos, self.hosts[h].at)
    }

    /// One-way latency between proxies `a` and `b`.
    pub fn proxy_latency(&self, a: usize, b: usize) -> Duration {
        self.place_latency(self.proxy_place(a), self.proxy_place(b))
    }

    /// One-way latency between a host and proxy `p`.
    pub fn host_proxy_latency(&self, h: HostId, p: usize) -> Duration {
        self.place_latency(self.host_place(h.0), self.proxy_place(p))
    }

    /// One-way latency between two hosts (the direct Internet path).
    pub fn host_latency(&self, a: HostId, b: HostId) -> Duration {
        self.place_latency(self.host_place(a.0), self.host_place(b.0))
    }

    fn rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.unit_f64() <= p
    }

    /// Cuts the overlay between two sets of proxy indexes (both ways) until [`Sim::heal`].
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        self.partition = Some((a.iter().copied().collect(), b.iter().copied().collect()));
    }

    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn cut(&self, x: usize, y: usize) -> bool {
        match &self.partition {
            Some((a, b)) => (a.contains(&x) && b.contains(&y)) || (b.contains(&x) && a.contains(&y)),
            None => false,
        }
    }

    /// The proxy a host's anycast packets reach: its pinned IAP if it announces the prefix, else the nearest
    /// proxy that does.
    pub fn iap_of(&self, h: HostId) -> Option<usize> {
        let host = self.hosts.get(h.0)?;
        if let Some(i) = host.pinned_iap
            && self.announces(i)
        {
            return Some(i);
        }
        if let Some((e, i)) = host.route.get()
            && e == self.epoch
        {
            return Some(i);
        }
        let r = self.anycast_route(h.0)?;
        host.route.set(Some((self.epoch, r)));
        Some(r)
    }

    /// Nearest running proxy by the network's routing; a host picked for a policy detour gets one of the
    /// next three instead.
    fn anycast_route(&self, h: usize) -> Option<usize> {
        let place = self.host_place(h);
        let mut best: [(Duration, usize); 4] = [(Duration::MAX, usize::MAX); 4];
        for i in 0..self.proxies.len() {
            if !self.announces(i) {
                continue;
            }
            let k = (self.place_latency(place, self.proxy_place(i)), i);
            if k < best[3] {
                best[3] = k;
                best.sort_unstable();
            }
        }
        if best[0].1 == usize::MAX {
            return None;
        }
        if self.detour > 0.0 {
            let x = pias_state::rng::mix(self.cfg.seed ^ pias_state::rng::mix(h as u64) ^ 0x00de_7041);
            if ((x >> 11) as f64 / (1u64 << 53) as f64) < self.detour {
                let alts: Vec<usize> = best[1..]
                    .iter()
                    .filter(|b| b.1 != usize::MAX)
                    .map(|b| b.1)
                    .collect();
                if !alts.is_empty() {
                    return Some(alts[(x % alts.len() as u64) as usize]);
                }
            }
        }
        Some(best[0].1)
    }

    pub(crate) fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(d);
                s
            }
            None => {
                self.slots.push(Some(d));
                self.slots.len() - 1
            }
        };
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Delivers raw bytes to proxy `to`'s overlay socket as if sent from `from` (forged or garbage input).
    pub fn inject_overlay(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>) {
        let at = self.now + Duration::from_micros(100);
        self.schedule(at, Delivery::Overlay { to, from, bytes });
    }

    pub(crate) fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Overlay { to, from, mut bytes } => {
                let n = bytes.len();
                let mut buf = vec![0u8; HEADROOM + n + 64];
                buf[HEADROOM..HEADROOM + n].copy_from_slice(&bytes);
                bytes.clear();
                let Some(p) = self.proxies.get_mut(to).and_then(|p| p.proxy.as_mut()) else {
                    return;
                };
                let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
                let v = p.handle_overlay(now, from, &mut pb);
                let out = pb.bytes().to_vec();
                self.verdict(to, v, out);
                self.drain_proxy(to);
            }
            Delivery::HostToProxy { to, bytes } => {
                let n = bytes.len();
                let mut buf = vec![0u8; HEADROOM + n + 64];
                buf[HEADROOM..HEADROOM + n].copy_from_slice(&bytes);
                let Some(p) = self.proxies.get_mut(to).and_then(|p| p.proxy.as_mut()) else {
                    return;
                };
                let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
                let v = p.handle_host(now, &mut pb);
                let out = pb.bytes().to_vec();
                self.verdict(to, v, out);
                self.drain_proxy(to);
            }
            Delivery::ToHost { to, bytes } => self.host_input(to, bytes),
        }
    }

    fn verdict(&mut self, from: usize, v: Verdict, bytes: Vec<u8>) {
        match v {
            Verdict::Overlay(addr) => self.send_overlay(from, addr, bytes),
            Verdict::Host => self.route_from_proxy(from, bytes),
            Verdict::Consumed | Verdict::Drop(_) => {}
        }
    }

    pub(crate) fn send_overlay(&mut self, from: usize, addr: SocketAddr, bytes: Vec<u8>) {
        self.overlay_sent[from] += 1;
        self.overlay_bytes[from] += bytes.len() as u64;
        let Some(to) = self.by_overlay.get(&addr).copied() else {
            // Not a proxy: a tunnel-mode target's overlay port (SPEC.md §11.6).
            if let Some(h) = self.by_host_ip.get(&addr.ip()).copied() {
                if let Ok(d) = DataFrame::new_checked(&bytes[..])
                    && let Ok(ip) = IpPacket::new_checked(d.inner())
                    && let Some(id) = payload_id(&ip)
                {
                    let proxy = self.proxies[from].id;
                    self.trace_push((
                        id,
                        Hop::ProxyToTarget {
                            proxy,
                            target: HostId(h),
                        },
                    ));
                }
                let mut pkt = vec![0u8; bytes.len() + 64];
                if let Ok(n) = udp_packet(self.proxies[from].cfg.overlay_addr, addr, &bytes, &mut pkt) {
                    pkt.truncate(n);
                    let at = self.now + self.host_proxy_latency(HostId(h), from);
                    self.schedule(
                        at,
                        Delivery::ToHost {
                            to: HostId(h),
                            bytes: pkt,
                        },
                    );
                }
                return;
            }
            self.unroutable += 1;
            return;
        };
        if let Ok(d) = DataFrame::new_checked(&bytes[..])
            && let Ok(ip) = IpPacket::new_checked(d.inner())
            && let Some(id) = payload_id(&ip)
        {
            let f = d.header().flags & (flags::VIA_RAP | flags::TO_RAP);
            self.trace_push((
                id,
                Hop::Overlay {
                    from: self.proxies[from].id,
                    to: self.proxies[to].id,
                    flags: f,
                },
            ));
        }
        if self.cut(from, to) || self.chance(self.cfg.loss) {
            return;
        }
        let copies = if self.chance(self.cfg.duplicate) { 2 } else { 1 };
        let src = self.proxies[from].cfg.overlay_addr;
        let now = self.now;
        if let Some(c) = self.capture.as_mut() {
            c.push(Captured {
                at: now,
                from: src,
                to: addr,
                bytes: bytes.clone(),
            });
        }
        for _ in 0..copies {
            let jitter = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(self.rand() % (self.cfg.jitter.as_micros() as u64 + 1))
            };
            let mut lat = self.proxy_latency(from, to);
            if self.cfg.jitter_model != Jitter::None {
                let u = self.rng.unit_f64();
                lat = self.cfg.jitter_model.apply(lat, u);
            }
            let at = self.now + lat + jitter;
            self.schedule(
                at,
                Delivery::Overlay {
                    to,
                    from: src,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    /// A packet a proxy wrote to its host side: the kernel routes it by destination address.
    pub(crate) fn route_from_proxy(&mut self, from: usize, bytes: Vec<u8>) {
        let Ok(ip) = IpPacket::new_checked(&bytes[..]) else {
            return;
        };
        let dst = ip.dst_addr();
        if let Some(h) = self.by_host_ip.get(&dst).copied() {
            if let Some(id) = payload_id(&ip)
                && matches!(self.hosts[h].kind, HostKind::Target { .. })
            {
                self.trace_push((
                    id,
                    Hop::ProxyToTarget {
                        proxy: self.proxies[from].id,
                        target: HostId(h),
                    },
                ));
            }
            let at = self.now + self.host_proxy_latency(HostId(h), from);
            self.schedule(at, Delivery::ToHost { to: HostId(h), bytes });
            return;
        }
        self.unroutable += 1;
    }
}
