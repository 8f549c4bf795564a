//! The hosts at the network's edge: clients (which record what they receive) and targets (a UDP echo service,
//! a minimal TCP responder and a real `TargetAgent`), their creation, faults, sending, and host input/output.

use super::*;

impl Sim {
    /// Adds a client host.
    pub fn add_client(&mut self, ip: IpAddr, pos: (f64, f64)) -> HostId {
        self.push_host(Host {
            name: format!("c{}", self.hosts.len()),
            ip,
            pos,
            at: None,
            pinned_iap: None,
            route: Cell::new(None),
            kind: HostKind::Client,
            received: Vec::new(),
        })
    }

    /// Adds a client host attached to a node of the topology.
    pub fn add_client_at(&mut self, ip: IpAddr, at: Attach) -> HostId {
        let h = self.add_client(ip, (0.0, 0.0));
        self.hosts[h.0].at = Some(at);
        h
    }

    /// Like [`Sim::add_target_with`], attached to a node of the topology.
    pub fn add_target_at(
        &mut self,
        name: &str,
        service: SocketAddr,
        group: TransportAddr,
        at: Attach,
        tune: impl FnOnce(&mut AgentConfig),
    ) -> HostId {
        let h = self.add_target_with(name, service, group, (0.0, 0.0), tune);
        self.hosts[h.0].at = Some(at);
        h
    }

    fn push_host(&mut self, host: Host) -> HostId {
        let h = self.hosts.len();
        self.by_host_ip.entry(host.ip).or_insert(h);
        self.hosts.push(host);
        self.agent_armed.push(None);
        HostId(h)
    }

    /// Number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Adds a target serving `group` at `service` with a registering agent.
    pub fn add_target(
        &mut self,
        name: &str,
        service: SocketAddr,
        group: TransportAddr,
        pos: (f64, f64),
    ) -> HostId {
        self.add_target_with(name, service, group, pos, |_| {})
    }

    /// Like [`Sim::add_target`], with a chance to change the agent's configuration.
    pub fn add_target_with(
        &mut self,
        name: &str,
        service: SocketAddr,
        group: TransportAddr,
        pos: (f64, f64),
        tune: impl FnOnce(&mut AgentConfig),
    ) -> HostId {
        let reg = if service.is_ipv4() {
            IpAddr::V4(REGISTRATION_V4)
        } else {
            IpAddr::V6(REGISTRATION_V6)
        };
        let svc = TransportAddr::new(service.ip(), service.port(), group.proto);
        let mut acfg = AgentConfig::new(
            group,
            svc,
            DeliveryMode::Nat,
            SocketAddr::new(reg, REGISTRATION_PORT),
            self.master.group_key(&group),
            1,
            self.cfg.seed ^ self.hosts.len() as u64,
        );
        tune(&mut acfg);
        let agent = TargetAgent::new(acfg).ok().map(Box::new);
        self.push_host(Host {
            name: name.to_string(),
            ip: service.ip(),
            pos,
            at: None,
            pinned_iap: None,
            route: Cell::new(None),
            kind: HostKind::Target {
                service,
                agent,
                alive: true,
            },
            received: Vec::new(),
        })
    }

    /// The agent of a target host.
    pub fn agent(&self, h: HostId) -> Option<&TargetAgent> {
        match &self.hosts.get(h.0)?.kind {
            HostKind::Target { agent, .. } => agent.as_deref(),
            HostKind::Client => None,
        }
    }

    /// What a client received so far.
    pub fn received(&self, h: HostId) -> &[Received] {
        self.hosts.get(h.0).map(|x| &x.received[..]).unwrap_or(&[])
    }

    /// Pins a host's anycast route to proxy `i` (a routing change); `None` returns to nearest-proxy routing.
    pub fn pin_iap(&mut self, h: HostId, i: Option<usize>) {
        if let Some(host) = self.hosts.get_mut(h.0) {
            host.pinned_iap = i;
        }
    }

    /// Kills a target host: its service and agent stop without deregistering.
    pub fn kill_target(&mut self, h: HostId) {
        if let Some(Host {
            kind: HostKind::Target { alive, .. },
            ..
        }) = self.hosts.get_mut(h.0)
        {
            *alive = false;
            self.arm_agent(h.0);
        }
    }

    /// Brings a killed target back: its service answers again and a fresh agent (higher incarnation)
    /// registers it.
    pub fn revive_target(&mut self, h: HostId) {
        let Some(Host {
            kind: HostKind::Target { agent, alive, .. },
            ..
        }) = self.hosts.get_mut(h.0)
        else {
            return;
        };
        if *alive {
            return;
        }
        if let Some(a) = agent.as_ref() {
            let mut cfg = a.config().clone();
            cfg.incarnation += 1;
            *agent = TargetAgent::new(cfg).ok().map(Box::new);
        }
        *alive = true;
        self.drain_agent(h.0);
    }

    /// Hangs a target's service (`true`: it receives and never answers, its agent keeps refreshing, as a
    /// service that checks nothing) or lets it answer again.
    pub fn hang_service(&mut self, h: HostId, hung: bool) {
        if hung {
            self.hung.insert(h.0);
        } else {
            self.hung.remove(&h.0);
        }
    }

    /// Whether a target host is alive.
    pub fn target_alive(&self, h: HostId) -> bool {
        matches!(
            self.hosts.get(h.0),
            Some(Host {
                kind: HostKind::Target { alive: true, .. },
                ..
            })
        )
    }

    /// A client sends a UDP datagram whose payload starts with the 8-byte `id`.
    pub fn send_udp(&mut self, h: HostId, sport: u16, group: TransportAddr, id: u64, extra: &[u8]) {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(extra);
        let Some(host) = self.hosts.get(h.0) else { return };
        let src = SocketAddr::new(host.ip, sport);
        let mut buf = vec![0u8; 2048];
        let Ok(n) = udp_packet(src, SocketAddr::new(group.ip, group.port), &payload, &mut buf) else {
            return;
        };
        buf.truncate(n);
        self.client_send(h, id, buf);
    }

    /// A client sends a TCP segment (payload starts with the 8-byte `id` when non-empty).
    pub fn send_tcp(&mut self, h: HostId, sport: u16, group: TransportAddr, seg: Segment, id: u64) {
        let Some(host) = self.hosts.get(h.0) else { return };
        let src = SocketAddr::new(host.ip, sport);
        let payload = id.to_be_bytes();
        let mut buf = vec![0u8; 2048];
        let body: &[u8] = if seg.flags.syn() { &[] } else { &payload };
        let Ok(n) = tcp_segment(src, SocketAddr::new(group.ip, group.port), seg, body, &mut buf) else {
            return;
        };
        buf.truncate(n);
        self.client_send(h, id, buf);
    }

    /// A client sends a raw IP packet.
    pub fn send_raw(&mut self, h: HostId, bytes: Vec<u8>) {
        self.client_send(h, 0, bytes);
    }

    fn client_send(&mut self, h: HostId, id: u64, bytes: Vec<u8>) {
        let Some(iap) = self.iap_of(h) else {
            self.unroutable += 1;
            return;
        };
        let at = self.now + self.host_proxy_latency(h, iap);
        self.trace_push((
            id,
            Hop::ClientToProxy {
                proxy: self.proxies[iap].id,
            },
        ));
        self.schedule(at, Delivery::HostToProxy { to: iap, bytes });
    }

    fn arm_agent(&mut self, h: usize) {
        let t = match &self.hosts[h].kind {
            HostKind::Target {
                agent: Some(a),
                alive: true,
                ..
            } => a.poll_timeout(),
            _ => None,
        };
        if t != self.agent_armed[h] {
            self.agent_armed[h] = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, 1, h)));
            }
        }
    }

    pub(crate) fn start_agents(&mut self) {
        for i in 0..self.hosts.len() {
            self.drain_agent(i);
        }
    }

    /// A packet a host sends into the network: to the pool owner, or by anycast.
    fn host_output(&mut self, h: HostId, bytes: Vec<u8>) {
        let Ok(ip) = IpPacket::new_checked(&bytes[..]) else {
            return;
        };
        let dst = ip.dst_addr();
        let owner = self.by_pool.get(&dst).copied();
        let to = match owner {
            Some(i) if self.proxies[i].proxy.is_some() => Some(i),
            Some(_) => None,
            None => self.iap_of(h),
        };
        let Some(to) = to else {
            self.unroutable += 1;
            return;
        };
        let at = self.now + self.host_proxy_latency(h, to);
        self.schedule(at, Delivery::HostToProxy { to, bytes });
    }

    pub(crate) fn host_input(&mut self, h: HostId, bytes: Vec<u8>) {
        let now = self.now;
        let Ok(ip) = IpPacket::new_checked(&bytes[..]) else {
            return;
        };
        let Some(flow) = ip.flow() else { return };
        let name = self.hosts[h.0].name.clone();
        let hung = self.hung.contains(&h.0);
        let host = &mut self.hosts[h.0];
        match &mut host.kind {
            HostKind::Client => {
                let l4 = ip.l4_bytes();
                let (payload, tcp_flags, mss) = match flow.proto {
                    IpProtocol::Udp => (l4.get(8..).unwrap_or(&[]).to_vec(), 0, None),
                    IpProtocol::Tcp => {
                        let off = usize::from(l4.get(12).copied().unwrap_or(0x50) >> 4) * 4;
                        let f = ip.tcp_flags().map(|f| f.bits()).unwrap_or(0);
                        (l4.get(off..).unwrap_or(&[]).to_vec(), f, tcp_mss(l4))
                    }
                    _ => (Vec::new(), 0, None),
                };
                host.received.push(Received {
                    at: now,
                    from: SocketAddr::new(flow.src, flow.src_port),
                    proto: flow.proto,
                    payload,
                    tcp_flags,
                    mss,
                });
            }
            HostKind::Target {
                service,
                agent,
                alive,
            } => {
                if !*alive || hung && flow.dst_port != AGENT_PORT {
                    return;
                }
                if flow.dst_port == OVERLAY_PORT && flow.proto == IpProtocol::Udp {
                    // A tunnel-mode target: de-encapsulate, answer from the group address, send the answer
                    // back through the JAP in a TO_TARGET frame.
                    let payload = ip.l4_bytes().get(8..).unwrap_or(&[]);
                    let Ok(d) = DataFrame::new_checked(payload) else {
                        return;
                    };
                    let Ok(inner) = IpPacket::new_checked(d.inner()) else {
                        return;
                    };
                    let Some(cf) = inner.flow() else { return };
                    host.received.push(Received {
                        at: now,
                        from: SocketAddr::new(cf.src, cf.src_port),
                        proto: cf.proto,
                        payload: inner.l4_bytes().get(8..).unwrap_or(&[]).to_vec(),
                        tcp_flags: 0,
                        mss: None,
                    });
                    let mut reply = inner.l4_bytes().get(8..).unwrap_or(&[]).to_vec();
                    reply.extend_from_slice(b"@");
                    reply.extend_from_slice(name.as_bytes());
                    let mut pkt = vec![0u8; 2048];
                    let group = SocketAddr::new(cf.dst, cf.dst_port);
                    let Ok(n) = udp_packet(group, SocketAddr::new(cf.src, cf.src_port), &reply, &mut pkt)
                    else {
                        return;
                    };
                    let dh = DataHeader {
                        vni: d.vni(),
                        flags: flags::TO_TARGET,
                        hops: 0,
                        // A target holds no data key: zero epoch, zero tag (SPEC.md §11.6).
                        epoch: 0,
                        ingress: ProxyId::NONE,
                    };
                    let mut frame = vec![0u8; n + 64];
                    let Ok(m) = dh.encapsulate(&pkt[..n], &mut frame) else {
                        return;
                    };
                    frame.truncate(m);
                    let me = SocketAddr::new(service.ip(), OVERLAY_PORT);
                    let jap = SocketAddr::new(flow.src, flow.src_port);
                    if let Some(to) = self.by_overlay.get(&jap).copied() {
                        let at = now + self.host_proxy_latency(h, to);
                        self.schedule(
                            at,
                            Delivery::Overlay {
                                to,
                                from: me,
                                bytes: frame,
                            },
                        );
                    }
                    return;
                }
                if flow.dst_port == AGENT_PORT && flow.proto == IpProtocol::Udp {
                    if let Some(a) = agent.as_mut() {
                        let payload = ip.l4_bytes().get(8..).unwrap_or(&[]);
                        let _ = a.handle_datagram(now, SocketAddr::new(flow.src, flow.src_port), payload);
                    }
                    self.drain_agent(h.0);
                    return;
                }
                if flow.dst_port != service.port() {
                    // The target acting as a client of some group: record what it receives.
                    let payload = match flow.proto {
                        IpProtocol::Udp => ip.l4_bytes().get(8..).unwrap_or(&[]).to_vec(),
                        _ => Vec::new(),
                    };
                    host.received.push(Received {
                        at: now,
                        from: SocketAddr::new(flow.src, flow.src_port),
                        proto: flow.proto,
                        payload,
                        tcp_flags: 0,
                        mss: None,
                    });
                    return;
                }
                let me = *service;
                let peer = SocketAddr::new(flow.src, flow.src_port);
                let mut out = vec![0u8; 2048];
                let n = match flow.proto {
                    IpProtocol::Udp => {
                        // Echo, prefixed with our name so the client can tell who served it.
                        let mut reply = ip.l4_bytes().get(8..).unwrap_or(&[]).to_vec();
                        reply.extend_from_slice(b"@");
                        reply.extend_from_slice(name.as_bytes());
                        udp_packet(me, peer, &reply, &mut out).ok()
                    }
                    IpProtocol::Tcp => {
                        let f = ip.tcp_flags().unwrap_or(TcpFlags::empty());
                        let seg = if f.syn() {
                            Segment {
                                flags: TcpFlags::from_bits_truncate(0x12),
                                seq: 100,
                                ack: 1,
                                mss: Some(1460),
                            }
                        } else {
                            Segment {
                                flags: TcpFlags::ACK,
                                seq: 101,
                                ack: 2,
                                mss: None,
                            }
                        };
                        let body = if f.syn() {
                            Vec::new()
                        } else {
                            [ip.l4_bytes().get(20..28).unwrap_or(&[]), name.as_bytes()].concat()
                        };
                        tcp_segment(me, peer, seg, &body, &mut out).ok()
                    }
                    _ => None,
                };
                if let Some(n) = n {
                    out.truncate(n);
                    self.host_output(h, out);
                }
            }
        }
    }

    pub(crate) fn drain_agent(&mut self, h: usize) {
        if !matches!(
            self.hosts[h].kind,
            HostKind::Target {
                agent: Some(_),
                alive: true,
                ..
            }
        ) {
            self.arm_agent(h);
            return;
        }
        let now = self.now;
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::new();
        if let HostKind::Target {
            agent: Some(a),
            alive: true,
            service,
        } = &mut self.hosts[h].kind
        {
            let src = SocketAddr::new(service.ip(), AGENT_PORT);
            let reg = a.config().registration;
            while let Some(n) = a.poll_transmit(now, &mut buf) {
                let mut pkt = vec![0u8; 2048];
                if let Ok(m) = udp_packet(src, reg, &buf[..n], &mut pkt) {
                    pkt.truncate(m);
                    out.push(pkt);
                }
            }
            while a.poll_event().is_some() {}
        }
        for pkt in out {
            self.host_output(HostId(h), pkt);
        }
        self.arm_agent(h);
    }
}

fn tcp_mss(l4: &[u8]) -> Option<u16> {
    let off = usize::from(*l4.get(12)? >> 4) * 4;
    let mut opts = l4.get(20..off)?;
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return None,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?);
                if kind == 2 && len == 4 {
                    return Some(u16::from_be_bytes([*opts.get(2)?, *opts.get(3)?]));
                }
                opts = opts.get(len.max(2)..)?;
            }
        }
    }
    None
}
