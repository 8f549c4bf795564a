//! The registration handshake (SPEC.md §10.2, §8.3): cookies and group keys, Register / Challenge /
//! RegisterAck, Refresh and Deregister, and the replies written back to the agents.

use super::*;

/// The address bytes a cookie and the tables hash: family, then 16 bytes (IPv4 in the first 4).
fn ip_bytes(ip: IpAddr) -> [u8; 17] {
    let mut b = [0u8; 17];
    match ip {
        IpAddr::V4(a) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&a.octets());
        }
    }
    b
}

impl Registry {
    /// Queues a reply to the request being handled. A reply larger than its request is never sent (SPEC.md
    /// §8.4: none is by construction; this keeps it so whatever the message sizes become).
    fn push_reply(&mut self, local: SocketAddr, to: SocketAddr, key: &MacKey, body: ReplyBody) {
        if body.wire_len() > self.request_len {
            self.counters.replies_oversize += 1;
        } else if self.replies.len() >= self.cfg.reply_queue {
            self.counters.replies_dropped += 1;
        } else {
            self.replies.push_back(Reply {
                local,
                to,
                key: key.clone(),
                body,
            });
        }
    }

    /// Queues a reply to a request whose source is not verified (a Challenge, or Gone for no registration):
    /// only while the source prefix has reply tokens (SPEC.md §8.4).
    fn push_unverified_reply(
        &mut self,
        now: Instant,
        local: SocketAddr,
        to: SocketAddr,
        key: &MacKey,
        body: ReplyBody,
    ) {
        if self.reply_allowed(now, to.ip()) {
            self.push_reply(local, to, key, body);
        }
    }

    fn ack(&self, group: TransportAddr, service: TransportAddr, status: RegAckStatus) -> ReplyBody {
        ReplyBody::Ack(RegisterAck {
            group,
            service,
            status,
            jap: self.jap,
            refresh_ms: self.cfg.refresh_ms,
            hold_ms: self.cfg.hold_ms,
        })
    }

    // ----- cookies and keys -----

    fn epoch(&self, now: Instant) -> u64 {
        now.as_millis() / u64::from(self.cfg.cookie_period_ms.max(1))
    }

    fn cookie(&self, epoch: u64, from: SocketAddr, group: &TransportAddr) -> [u8; COOKIE_LEN] {
        self.cookie_key.tag_parts(&[
            &epoch.to_be_bytes(),
            &ip_bytes(from.ip()),
            &from.port().to_be_bytes(),
            &group.to_bytes(),
        ])
    }

    pub(super) fn cookie_ok(
        &self,
        now: Instant,
        from: SocketAddr,
        group: &TransportAddr,
        cookie: &[u8; COOKIE_LEN],
    ) -> bool {
        let e = self.epoch(now);
        let cur = ct_eq(&self.cookie(e, from, group), cookie);
        let prev = e > 0 && ct_eq(&self.cookie(e - 1, from, group), cookie);
        cur | prev
    }

    /// The group's key: from the cache (touching it), or derived (not cached until a MAC verifies).
    fn group_key(&mut self, group: &TransportAddr) -> (MacKey, bool) {
        if let Some(k) = self.keys.get_mut(group) {
            self.counters.key_cache_hits += 1;
            return (k.clone(), true);
        }
        self.counters.keys_derived += 1;
        (self.master.group_key(group), false)
    }

    // ----- input -----

    /// Handles the UDP payload of a datagram that reached the registration address `local` from `from`.
    ///
    /// On `Ok` the message was acted on and a reply queued (Challenge, RegisterAck Ok, or Gone for a
    /// Deregister). On `Err` nothing changed but counters, except that [`RegistryError::Full`],
    /// [`RegistryError::UnknownRegistration`] and [`RegistryError::Draining`] queue a Full, Gone or Draining
    /// answer (and a Draining answer to a Refresh consumes its sequence number).
    pub fn handle_target_packet(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        payload: &[u8],
    ) -> Result<(), RegistryError> {
        self.counters.received += 1;
        let r = self.handle_inner(now, local, from, payload);
        if let Err(e) = r {
            let c = &mut self.counters;
            match e {
                RegistryError::Malformed(_) => c.malformed += 1,
                RegistryError::NotTargetMessage => c.not_target_message += 1,
                RegistryError::AddressFamily => c.address_family += 1,
                RegistryError::BadMac => c.bad_mac += 1,
                RegistryError::BadCookie => c.bad_cookie += 1,
                RegistryError::Replay => c.replay += 1,
                RegistryError::UnknownRegistration => c.unknown_registration += 1,
                RegistryError::Full => {} // counted where the bound is known
                RegistryError::Draining => c.refused_draining += 1,
            }
        }
        r
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        payload: &[u8],
    ) -> Result<(), RegistryError> {
        self.request_len = payload.len();
        let pkt = ControlPacket::new_checked(payload).map_err(RegistryError::Malformed)?;
        let msg = pkt.message().map_err(RegistryError::Malformed)?;
        let group = match msg {
            Message::Register(m) => m.group,
            Message::Refresh(m) | Message::Deregister(m) => m.group,
            _ => return Err(RegistryError::NotTargetMessage),
        };
        if local.is_ipv4() != from.is_ipv4() {
            return Err(RegistryError::AddressFamily);
        }
        let (key, cached) = self.group_key(&group);
        pkt.verify(&key, pias_proto::control::Binding::Target)
            .map_err(|_| RegistryError::BadMac)?;
        if !cached && self.keys.insert(group, key.clone()).is_some() {
            self.counters.keys_evicted += 1;
        }
        let seq = pkt.header().seq;
        match msg {
            Message::Register(m) => self.on_register(now, local, from, seq, &m, &key),
            Message::Refresh(m) => self.on_refresh(now, local, from, seq, &m, &key),
            Message::Deregister(m) => self.on_deregister(now, local, from, seq, &m, &key),
            _ => Err(RegistryError::NotTargetMessage),
        }
    }

    fn on_register(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        m: &Register,
        key: &MacKey,
    ) -> Result<(), RegistryError> {
        if m.cookie == [0; COOKIE_LEN] {
            let cookie = self.cookie(self.epoch(now), from, &m.group);
            self.counters.challenges += 1;
            self.push_unverified_reply(
                now,
                local,
                from,
                key,
                ReplyBody::Challenge(Challenge {
                    group: m.group,
                    cookie,
                }),
            );
            return Ok(());
        }
        if !self.cookie_ok(now, from, &m.group, &m.cookie) {
            return Err(RegistryError::BadCookie);
        }
        if self.draining {
            // Checked after the cookie, so the answer goes only to a source that proved it receives there.
            let ack = self.ack(m.group, m.service, RegAckStatus::Draining);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Draining);
        }

        if let Some(slot) = self.find_reg(&m.group, &m.service) {
            return self.reregister(now, local, from, seq, m, key, slot);
        }

        // A new registration: the tombstone of an earlier one (if any) must not have seen this number.
        let pair = (m.group, m.service);
        let mut window = ReplayWindow::default();
        if let Some(t) = self.tombstones.peek(&pair)
            && t.until > now
        {
            window = t.window;
        }
        if !window.check(seq) {
            self.counters.tombstone_replay += 1;
            return Err(RegistryError::Replay);
        }

        let group_exists = self.group(&m.group).is_some();
        let group_full = self
            .group(&m.group)
            .is_some_and(|g| g.members.len() >= self.cfg.max_targets_per_group);
        if self.live as usize >= self.cfg.max_registrations
            || (!group_exists && self.groups.len() >= self.cfg.max_registrations)
        {
            self.counters.refused_full += 1;
            let ack = self.ack(m.group, m.service, RegAckStatus::Full);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Full);
        }
        if group_full {
            self.counters.refused_group_full += 1;
            let ack = self.ack(m.group, m.service, RegAckStatus::Full);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Full);
        }

        window.commit(seq);
        self.tombstones.remove(&pair);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.regs.push(None);
                (self.regs.len() - 1) as u32
            }
        };
        if let Some(e) = self.regs.get_mut(slot as usize) {
            *e = Some(Reg {
                group: m.group,
                service: m.service,
                mode: m.mode,
                weight: m.weight.max(1),
                source: from,
                local,
                window,
                last_refresh: now,
                prev: NIL,
                next: NIL,
            });
        }
        self.live += 1;
        self.push_tail(slot);
        let h = self.hash_pair(&m.group, &m.service);
        let regs = &self.regs;
        let (k0, k1) = self.sip;
        self.index.insert_unique(h, slot, |&i| {
            let mut hh = SipHasher13::new_with_keys(k0, k1);
            if let Some(r) = regs.get(i as usize).and_then(|r| r.as_ref()) {
                hh.write(&r.group.to_bytes());
                hh.write(&r.service.to_bytes());
            }
            hh.finish()
        });
        self.add_member(&m.group, slot, m.mode);
        self.counters.registered += 1;
        self.push_event(RegistryEvent::TargetUp {
            slot,
            group: m.group,
            service: m.service,
            mode: m.mode,
        });
        let ack = self.ack(m.group, m.service, RegAckStatus::Ok);
        self.push_reply(local, from, key, ack);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn reregister(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        m: &Register,
        key: &MacKey,
        slot: u32,
    ) -> Result<(), RegistryError> {
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.as_mut()) else {
            return Err(RegistryError::UnknownRegistration);
        };
        if !r.window.commit(seq) {
            return Err(RegistryError::Replay);
        }
        let replaced = r.source != from || r.mode != m.mode || r.local != local;
        let old_mode = r.mode;
        let weight_changed = r.weight != m.weight.max(1);
        r.source = from;
        r.local = local;
        r.mode = m.mode;
        r.weight = m.weight.max(1);
        self.touch(slot, now);
        self.counters.reregistered += 1;
        if let Some(g) = self.group_mut(&m.group) {
            if old_mode != m.mode {
                if old_mode == DeliveryMode::Tunnel {
                    g.tunnel = g.tunnel.saturating_sub(1);
                }
                if m.mode == DeliveryMode::Tunnel {
                    g.tunnel += 1;
                }
            }
            if weight_changed {
                g.table_stale = true;
            }
        }
        if replaced {
            self.counters.replaced += 1;
            self.push_event(RegistryEvent::TargetDown {
                slot,
                group: m.group,
                service: m.service,
                reason: DownReason::Replaced,
            });
            self.push_event(RegistryEvent::TargetUp {
                slot,
                group: m.group,
                service: m.service,
                mode: m.mode,
            });
        }
        self.check_report(&m.group);
        let ack = self.ack(m.group, m.service, RegAckStatus::Ok);
        self.push_reply(local, from, key, ack);
        Ok(())
    }

    /// The registration for `op` if it exists and `from` is its source.
    fn own_reg(&self, op: &TargetOp, from: SocketAddr) -> Option<u32> {
        let slot = self.find_reg(&op.group, &op.service)?;
        let r = self.regs.get(slot as usize)?.as_ref()?;
        (r.source == from).then_some(slot)
    }

    /// A Refresh or Deregister that is not from a registration's own source. For a registration held by
    /// another source it is a replay from a forged address (or a target whose address changed, which its
    /// registration's expiry after `hold_ms` then answers): no reply. For no registration at all: Gone, so
    /// a target this JAP forgot registers again at once — rate-limited, since the source is not verified.
    fn answer_unknown(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        op: &TargetOp,
        key: &MacKey,
    ) {
        if self.find_reg(&op.group, &op.service).is_some() {
            self.counters.other_source += 1;
            return;
        }
        let gone = self.ack(op.group, op.service, RegAckStatus::Gone);
        self.push_unverified_reply(now, local, from, key, gone);
    }

    fn on_refresh(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        op: &TargetOp,
        key: &MacKey,
    ) -> Result<(), RegistryError> {
        let Some(slot) = self.own_reg(op, from) else {
            self.answer_unknown(now, local, from, op, key);
            return Err(RegistryError::UnknownRegistration);
        };
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.as_mut()) else {
            return Err(RegistryError::UnknownRegistration);
        };
        if !r.window.commit(seq) {
            return Err(RegistryError::Replay);
        }
        if self.draining {
            let ack = self.ack(op.group, op.service, RegAckStatus::Draining);
            self.push_reply(local, from, key, ack);
            return Err(RegistryError::Draining);
        }
        self.touch(slot, now);
        self.counters.refreshed += 1;
        let ack = self.ack(op.group, op.service, RegAckStatus::Ok);
        self.push_reply(local, from, key, ack);
        Ok(())
    }

    fn on_deregister(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        seq: u64,
        op: &TargetOp,
        key: &MacKey,
    ) -> Result<(), RegistryError> {
        let Some(slot) = self.own_reg(op, from) else {
            self.answer_unknown(now, local, from, op, key);
            return Err(RegistryError::UnknownRegistration);
        };
        let gone = self.ack(op.group, op.service, RegAckStatus::Gone);
        let Some(r) = self.regs.get_mut(slot as usize).and_then(|r| r.as_mut()) else {
            return Err(RegistryError::UnknownRegistration);
        };
        if !r.window.commit(seq) {
            return Err(RegistryError::Replay);
        }
        // The window now holds `seq`; the tombstone keeps it.
        self.remove(slot, now, DownReason::Deregistered);
        self.counters.deregistered += 1;
        self.push_reply(local, from, key, gone);
        Ok(())
    }
    // ----- output -----

    /// Writes the next queued reply into `buf` as a complete IP + UDP packet from the registration address to
    /// the agent ([`Dest::Host`]). A reply that does not fit `buf` is dropped (counted).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(reply) = self.replies.pop_front() {
            match self.emit_reply(&reply, buf) {
                Some(len) => {
                    self.counters.replies_sent += 1;
                    return Some(Transmit {
                        dest: Dest::Host,
                        len,
                    });
                }
                None => self.counters.replies_dropped += 1,
            }
        }
        None
    }

    fn emit_reply(&mut self, reply: &Reply, buf: &mut [u8]) -> Option<usize> {
        let msg = reply.body.message();
        let ip_len = match reply.local.ip() {
            IpAddr::V4(_) => pias_proto::ipv4::HEADER_LEN,
            IpAddr::V6(_) => pias_proto::ipv6::HEADER_LEN,
        };
        let udp_len = pias_proto::udp::HEADER_LEN + msg.buffer_len();
        let total = ip_len + udp_len;
        if buf.len() < total {
            return None;
        }
        let mut probe = self.seq;
        let hdr = ControlHeader {
            sender: ProxyId::NONE,
            seq: probe.next_seq(),
            time_ms: 0,
        };
        let (src, dst) = (reply.local.ip(), reply.to.ip());
        msg.emit(
            hdr,
            &reply.key,
            pias_proto::control::Binding::Target,
            &mut buf[ip_len + pias_proto::udp::HEADER_LEN..total],
        )
        .ok()?;
        UdpRepr {
            src_port: reply.local.port(),
            dst_port: reply.to.port(),
            payload_len: msg.buffer_len(),
        }
        .emit(&mut buf[ip_len..total], &src, &dst, |_| ())
        .ok()?;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: IpProtocol::Udp,
                payload_len: udp_len,
                ttl: REPLY_TTL,
                tos: 0,
                ident: hdr.seq as u16,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(&mut buf[..ip_len])
            .ok()?,
            (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: REPLY_TTL,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut buf[..ip_len])
            .ok()?,
            _ => return None,
        }
        self.seq = probe;
        Some(total)
    }
}
