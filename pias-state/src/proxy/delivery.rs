//! The JAP role (SPEC.md §11): delivering a client packet to a target (choosing one and creating the NAT
//! binding for a new flow), how a binding's packets are delivered ([`Delivery`]: NAT, replicated, tunnel),
//! the target's replies back to the client, and invalidating an IAP's cache when no target is left.

use core::net::{IpAddr, SocketAddr};

use pias_proto::control::{DeliveryMode, Invalidate, ReportEntry};
use pias_proto::geneve::UDP_PORT as OVERLAY_PORT;
use pias_proto::packet::IpPacket;
use pias_proto::tunnel::{DataHeader, flags};
use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr};

use crate::flowhash::flow_hash;
use crate::nat::{Direction, TcpFlags};
use crate::time::Instant;

use super::ingress::mss_limit;
use super::overlay::{Out, encapsulate};
use super::{Delivery, DropReason, Event, HOST_OUT_CAPACITY, PacketBuf, Proxy, Verdict};

impl Proxy {
    /// Delivers a client packet (already stripped of its overlay header) to a target of this JAP.
    /// `handed_off`: the frame was handed off by another JAP (HANDOFF), so it is not handed off again.
    pub(super) fn jap_deliver(
        &mut self,
        now: Instant,
        ingress: ProxyId,
        pkt: &mut PacketBuf<'_>,
        handed_off: bool,
    ) -> Verdict {
        let len = pkt.len() as u32;
        let Ok(mut ip) = IpPacket::new_checked(pkt.bytes_mut()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // One read of the flow serves the filter and the lookup (`None` for an ICMP error or a portless packet).
        let flow = ip.flow();
        // The IAP filtered the source already; an IAP configured with less of the overlay's space (or a
        // stale one) must not make this JAP send replies back into the overlay (SPEC.md §8.5).
        if let Err(r) = self.check_client(flow.map_or_else(|| ip.src_addr(), |f| f.src)) {
            return Verdict::Drop(r);
        }
        // ICMP errors from the client about a reply: translate by the quoted flow (SPEC.md §11.5).
        if ip.is_icmp_error() {
            let Ok(quoted) = ip.icmp_error_inner_flow() else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let Some(tr) = self.nat.lookup_forward(&quoted.reversed(), len, now) else {
                return Verdict::Drop(DropReason::NoBinding);
            };
            if !translate_icmp_error(&mut ip, &tr) {
                return Verdict::Drop(DropReason::Malformed);
            }
            self.counters.jap_delivered += 1;
            return Verdict::Host;
        }
        let Some(flow) = flow else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let group = flow.dst_ta();
        let tcp = ip.tcp_flags().map(|f| TcpFlags(f.bits() as u8));
        let mut created = false;
        let tr = match self.nat.lookup_forward(&flow, len, now) {
            Some(tr) => tr,
            None => {
                let opts = self.cfg.policies.lookup(&group).target;
                let fh = flow_hash(&self.flow_key, &flow);
                let Some(choice) = self.registry.choose_target_at(now, &group, &flow, fh, &opts) else {
                    // Targets here, but none the policy allows for this client (exclude_sender: the client
                    // is the only one): another JAP of the group may have one (SPEC.md §9.5).
                    if self.registry.group_count(&group) > 0 {
                        if handed_off {
                            return Verdict::Drop(DropReason::NoTarget);
                        }
                        return self.hand_off(now, ingress, &group, fh, pkt);
                    }
                    self.invalidate(now, ingress, &group, Invalidate::REASON_NO_TARGETS);
                    return Verdict::Drop(DropReason::NoTarget);
                };
                let t = choice.first();
                // A target inside the overlay's space (a registration naming a group or pool address)
                // would send the packet straight back into the overlay (SPEC.md §8.5).
                if self.space.contains(t.service.ip) {
                    return Verdict::Drop(DropReason::OverlayTarget);
                }
                match self
                    .nat
                    .create(&flow, (t.service.ip, t.service.port), t.slot, now)
                {
                    Ok(tr) => {
                        created = true;
                        self.note_new_flow(now, ingress, &group);
                        tr
                    }
                    Err(_) => return Verdict::Drop(DropReason::PortsExhausted),
                }
            }
        };
        if let Some(f) = tcp {
            self.nat.observe_tcp(tr.id, f, Direction::Forward, now);
        }
        let delivery = self.delivery(tr.tag, &flow, tr.dst);
        // The passive watch (SPEC.md §10.4) counts new flows whose replies come back through this NAT: UDP,
        // and TCP by its SYN (a binding made by a mid-flow segment proves nothing either way).
        let opening = tcp.is_none_or(|f| f.0 & (TcpFlags::SYN.0 | TcpFlags::ACK.0) == TcpFlags::SYN.0);
        if created && opening && !matches!(delivery, Delivery::Tunnel(_)) {
            self.registry.watch_flow(tr.tag, flow.src, flow.proto, now);
        }
        // A tunnel-mode target gets the client's packet unchanged, in a data frame (SPEC.md §11.6); the
        // binding still pins the flow to it.
        if let Delivery::Tunnel(to) = delivery {
            let h = DataHeader {
                vni: self.cfg.vni,
                flags: flags::TO_TARGET,
                hops: 0,
                epoch: self.data_keys.wire_epoch(),
                ingress: self.me,
            };
            self.counters.jap_delivered += 1;
            return match encapsulate(pkt, &h, self.data_keys.current()) {
                Ok(()) => Verdict::Overlay(to),
                Err(r) => Verdict::Drop(r),
            };
        }
        if ip.set_src_dst(tr.src, tr.src_port, tr.dst, tr.dst_port).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        if delivery == Delivery::Replicate {
            let opts = self.cfg.policies.lookup(&group).target;
            self.replicate(&group, &flow, &opts, (tr.dst, tr.dst_port), pkt.bytes());
        }
        self.counters.jap_delivered += 1;
        Verdict::Host
    }

    /// How this JAP delivers the client packets of a binding: `tag` is its registration (the NAT tag),
    /// `forward` its client flow, `target` the address it pins the flow to. The one place this is decided:
    /// [`Proxy::jap_deliver`] applies it to each packet, [`Event::NatCreated`] carries it to a fast path.
    ///
    /// Tunnel mode only while the registration is a tunnel-mode target at the binding's address (a
    /// registration slot reused by another target does not redirect an old binding); `replicate` copies UDP
    /// packets only (SPEC.md §9.5: a TCP flow of such a group is plain NAT). The registry is consulted only
    /// while tunnel-mode registrations exist, which keeps the NAT-only hit path to the policy lookup.
    pub(super) fn delivery(&self, tag: u32, forward: &FlowKey, target: IpAddr) -> Delivery {
        if !self.tunnel_targets.is_empty()
            && let Some(t) = self.registry.target(tag)
            && t.mode == DeliveryMode::Tunnel
            && t.service.ip == target
        {
            return Delivery::Tunnel(SocketAddr::new(target, OVERLAY_PORT));
        }
        if forward.proto == IpProtocol::Udp
            && self.cfg.policies.lookup(&forward.dst_ta()).target.replicate > 1
        {
            return Delivery::Replicate;
        }
        Delivery::Nat
    }

    /// `replicate` (SPEC.md §9.5): copies of a UDP packet, already translated for its primary target, go to
    /// the other chosen targets too, from the same pool endpoint. Replies only come back from the primary
    /// (the binding's target); a replica's reply finds no binding and is dropped, counted. The copies are
    /// queued for `poll_transmit` (bounded); this is the one data path that allocates, and only when the
    /// operator asked for replication.
    fn replicate(
        &mut self,
        group: &TransportAddr,
        flow: &FlowKey,
        opts: &crate::registry::TargetOptions,
        primary: (IpAddr, u16),
        translated: &[u8],
    ) {
        let fh = flow_hash(&self.flow_key, flow);
        let Some(choice) = self.registry.choose_target(group, flow, fh, opts) else {
            return;
        };
        for t in choice.iter() {
            if (t.service.ip, t.service.port) == primary || t.mode != DeliveryMode::Nat {
                continue;
            }
            if self.host_out.len() >= HOST_OUT_CAPACITY {
                self.counters.replicas_dropped += 1;
                continue;
            }
            let mut copy = translated.to_vec();
            if let Ok(mut ip) = IpPacket::new_checked(&mut copy[..])
                && ip.set_dst(t.service.ip, t.service.port).is_ok()
            {
                self.host_out.push_back(copy);
                self.counters.replicas_sent += 1;
            }
        }
    }

    /// A tunnel-mode target's reply in a TO_TARGET frame, already known to come from a tunnel-mode target's
    /// overlay address (its IP, port 6081): forwarded to the client unchanged if its source is a group that
    /// target is registered for (a target cannot speak for another group) and its destination lies outside
    /// the overlay's own space (SPEC.md §11.6). A target holds no data key, so the frame has no tag to check;
    /// the destination check keeps a spoofed "reply" from being routed back into the overlay (a G → G packet
    /// would loop between the TUN, the IAP and an echoing target for ever).
    pub(super) fn tunnel_reply(
        &mut self,
        from: SocketAddr,
        pkt: &mut PacketBuf<'_>,
        inner_off: usize,
    ) -> Verdict {
        let Ok(ip) = IpPacket::new_checked(&pkt.bytes()[inner_off..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Some(flow) = ip.flow() else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let group = flow.src_ta();
        // Egress filtering (SPEC.md §8.5), as for a NAT reply: the client may not be in the overlay's space.
        if self.check_client(flow.dst).is_err() {
            return Verdict::Drop(DropReason::BadDestination);
        }
        let ok = self
            .registry
            .targets(&group)
            .any(|t| t.mode == DeliveryMode::Tunnel && t.service.ip == from.ip());
        if !ok || self.in_overlay_space(&flow) {
            return Verdict::Drop(DropReason::TunnelReplyRefused);
        }
        pkt.strip_front(inner_off);
        self.counters.jap_replies += 1;
        Verdict::Host
    }

    /// Whether a packet's destination is one of the overlay's own addresses beyond the configured overlay
    /// space that the egress filter checks first (§8.5: anycast prefixes, registration addresses, NAT pools):
    /// the packet's own source IP (the group's address, and every group sharing it), this proxy's overlay
    /// address, or a group this proxy serves or has cached.
    fn in_overlay_space(&self, flow: &FlowKey) -> bool {
        let dst = flow.dst;
        let dst_ta = flow.dst_ta();
        dst == flow.src
            || dst == self.cfg.overlay_addr.ip()
            || self.registry.group_count(&dst_ta) > 0
            || self.iap.get(&dst_ta).is_some()
    }

    /// A new flow got its binding here: it counts towards the load (SPEC.md §9.6). Over capacity, the JAP
    /// still serves the flow — shedding never drops a packet — but asks the IAP it came from to send the
    /// group's new flows elsewhere. The IAPs asked are exactly those still sending new flows, so no list
    /// of IAPs is kept beyond the bounded rate limiter.
    fn note_new_flow(&mut self, now: Instant, ingress: ProxyId, group: &TransportAddr) {
        self.load.note_new_flow(now);
        if self.load.over() {
            self.counters.jap_over_capacity += 1;
            if self.reporter.load() < ReportEntry::LOAD_FULL {
                self.load.report_soon(now);
            }
            self.invalidate(now, ingress, group, Invalidate::REASON_DRAINING);
        }
    }

    /// Sends Invalidate(`reason`) for `group` to the IAP `ingress`, at most one per IAP and group per
    /// `invalidate_interval` (SPEC.md §9.4); when this proxy is the IAP, applies it directly.
    fn invalidate(&mut self, now: Instant, ingress: ProxyId, group: &TransportAddr, reason: u8) {
        if ingress == self.me {
            let change = if reason == Invalidate::REASON_DRAINING {
                self.iap.drain(now, group, self.me)
            } else {
                self.iap.invalidate(group, self.me)
            };
            if change.is_some() {
                self.push_event(Event::CacheRemoved { group: *group });
            }
            return;
        }
        let key = (ingress, *group);
        if self
            .invalidate_limit
            .peek(&key)
            .is_some_and(|t| now.saturating_since(*t) < self.cfg.invalidate_interval)
        {
            return;
        }
        self.invalidate_limit.insert(key, now);
        self.counters.invalidations_sent += 1;
        if reason == Invalidate::REASON_DRAINING {
            self.counters.drain_invalidations_sent += 1;
        }
        self.push_out(Out::Invalidate {
            to: ingress,
            group: *group,
            reason,
        });
    }

    /// A target's reply to the NAT pool: translate back and send to the client from the group address.
    pub(super) fn jap_reply(&mut self, now: Instant, pkt: &mut PacketBuf<'_>) -> Verdict {
        let len = pkt.len() as u32;
        let inner_mtu = self.cfg.inner_mtu();
        let Ok(mut ip) = IpPacket::new_checked(pkt.bytes_mut()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if ip.is_icmp_error() {
            let Ok(quoted) = ip.icmp_error_inner_flow() else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let Some(tr) = self.nat.lookup_reverse(&quoted.reversed(), len, now) else {
                return Verdict::Drop(DropReason::NoBinding);
            };
            if self.check_client(tr.dst).is_err() {
                return Verdict::Drop(DropReason::BadDestination);
            }
            if !translate_icmp_error(&mut ip, &tr) {
                return Verdict::Drop(DropReason::Malformed);
            }
            self.counters.jap_replies += 1;
            return Verdict::Host;
        }
        let Some(flow) = ip.flow() else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let Some(tr) = self.nat.lookup_reverse(&flow, len, now) else {
            return Verdict::Drop(DropReason::NoBinding);
        };
        // The passive watch: a binding's first reply shows the service answers — unless it is a RST, which
        // the target's host sends for a dead service (an ICMP error, above, is no answer either).
        if !ip.tcp_flags().is_some_and(|f| f.rst()) && self.nat.first_reply(tr.id) {
            self.registry.watch_answered(tr.tag);
        }
        // Egress filtering (SPEC.md §8.5): a reply to an address in the overlay's space (say `G:7 → G:7`
        // after reverse translation) would be routed back into the TUN and loop; never write it.
        if self.check_client(tr.dst).is_err() {
            return Verdict::Drop(DropReason::BadDestination);
        }
        if let Some(f) = ip.tcp_flags() {
            self.nat
                .observe_tcp(tr.id, TcpFlags(f.bits() as u8), Direction::Reverse, now);
            // The client's segments travel the overlay: tell it the smaller MSS (SPEC.md §12).
            if f.syn() && ip.clamp_mss(mss_limit(inner_mtu, flow.src.is_ipv6())) {
                self.counters.mss_clamped += 1;
            }
        }
        if ip.set_src_dst(tr.src, tr.src_port, tr.dst, tr.dst_port).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters.jap_replies += 1;
        Verdict::Host
    }
}

/// Applies a binding's translation to an ICMP error about that flow (SPEC.md §11.5): the outer packet takes
/// the translation's addresses, the quoted packet — which travelled the other way — the reverse. Used in
/// both directions: client errors towards a target and target errors towards a client.
fn translate_icmp_error(ip: &mut IpPacket<&mut [u8]>, tr: &crate::nat::Translation) -> bool {
    ip.set_src_addr(tr.src).is_ok()
        && ip.set_dst_addr(tr.dst).is_ok()
        && ip.set_icmp_inner_src(tr.dst, tr.dst_port).is_ok()
        && ip.set_icmp_inner_dst(tr.src, tr.src_port).is_ok()
}
