//! The IAP role: a client's packet to a group goes to its JAP (cache hit) or through a RAP (miss); packets
//! too big for the overlay get an ICMP Packet Too Big, and TCP SYNs a clamped MSS (SPEC.md §12).

use core::time::Duration;

use pias_proto::packet::{IpPacket, emit_packet_too_big};
use pias_proto::tunnel::{DataHeader, INITIAL_HOPS, flags};
use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr};

use crate::flowhash::flow_hash;
use crate::iap::Route;
use crate::time::Instant;

use super::overlay::{Out, encapsulate};
use super::rendezvous::pick;
use super::{DropReason, HOST_OUT_CAPACITY, PacketBuf, Proxy, Verdict};

impl Proxy {
    /// A client's packet to a group: the IAP's job.
    pub(super) fn iap_ingress(
        &mut self,
        now: Instant,
        pkt: &mut PacketBuf<'_>,
        flow: FlowKey,
        syn: bool,
    ) -> Verdict {
        let inner_mtu = self.cfg.inner_mtu();
        let group = flow.dst_ta();
        if pkt.len() > inner_mtu && !may_fragment(pkt.bytes()) {
            self.too_big(now, pkt.bytes(), &group, inner_mtu);
            return Verdict::Drop(DropReason::TooBig);
        }
        if syn
            && let Ok(mut ip) = IpPacket::new_checked(pkt.bytes_mut())
            && ip.clamp_mss(mss_limit(inner_mtu, flow.src.is_ipv6()))
        {
            self.counters.mss_clamped += 1;
        }
        // A TCP segment without SYN cannot start a flow: it keeps its JAP while that one drains (§9.6).
        let established = flow.proto == IpProtocol::Tcp && !syn;
        // The flow hash is computed only when a choice needs it (a JAP set of several, a drain, or a RAP's
        // pick).
        let key = self.flow_key;
        let fh = move || flow_hash(&key, &flow);
        match self.iap.route_lazy(now, &group, fh, established) {
            Route::Jap { jap, resolve } => {
                if resolve && let Some(rap) = self.pick_rap(&group) {
                    if rap == self.me {
                        self.answer(now, self.me, &group, true);
                    } else {
                        self.push_out(Out::Resolve { to: rap, group });
                    }
                }
                self.counters.iap_to_jap += 1;
                if jap == self.me {
                    return self.jap_deliver(now, self.me, pkt, false);
                }
                let Some(addr) = self.addr_of(jap) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let h = DataHeader {
                    vni: self.cfg.vni,
                    flags: 0,
                    hops: INITIAL_HOPS,
                    epoch: self.data_keys.wire_epoch(),
                    ingress: self.me,
                };
                encapsulate(pkt, &h, self.data_keys.current())
                    .map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr))
            }
            Route::ViaRap { want_answer } => {
                let Some(rap) = self.pick_rap(&group) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                self.counters.iap_to_rap += 1;
                if rap == self.me {
                    // We are the RAP: answer ourselves and relay directly.
                    let (set, n) = self.answer(now, self.me, &group, true);
                    let Some(jap) = pick(&self.flow_key, &set[..n], fh()) else {
                        return Verdict::Drop(DropReason::NoJap);
                    };
                    self.counters.rap_relayed += 1;
                    if jap == self.me {
                        return self.jap_deliver(now, self.me, pkt, false);
                    }
                    let Some(addr) = self.addr_of(jap) else {
                        return Verdict::Drop(DropReason::NoRoute);
                    };
                    let h = DataHeader {
                        vni: self.cfg.vni,
                        flags: flags::VIA_RAP,
                        hops: INITIAL_HOPS - 1,
                        epoch: self.data_keys.wire_epoch(),
                        ingress: self.me,
                    };
                    return encapsulate(pkt, &h, self.data_keys.current())
                        .map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr));
                }
                let Some(addr) = self.addr_of(rap) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let fl = flags::TO_RAP | if want_answer { flags::WANT_ANSWER } else { 0 };
                let h = DataHeader {
                    vni: self.cfg.vni,
                    flags: fl,
                    hops: INITIAL_HOPS,
                    epoch: self.data_keys.wire_epoch(),
                    ingress: self.me,
                };
                encapsulate(pkt, &h, self.data_keys.current())
                    .map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr))
            }
            Route::NoJap => Verdict::Drop(DropReason::NoJap),
        }
    }

    /// The first Alive RAP of the group, else the first usable one.
    pub(super) fn pick_rap(&self, group: &TransportAddr) -> Option<ProxyId> {
        let raps = self.raps_of(group);
        raps.iter()
            .copied()
            .find(|&r| r == self.me || self.membership.is_usable(r))
            .or_else(|| raps.first().copied())
    }

    fn too_big(&mut self, now: Instant, offending: &[u8], group: &TransportAddr, mtu: usize) {
        let elapsed = now.saturating_since(self.icmp_refill);
        if elapsed >= Duration::from_secs(1) {
            self.icmp_tokens = self.cfg.icmp_rate;
            self.icmp_refill = now;
        }
        if self.icmp_tokens == 0 || self.host_out.len() >= HOST_OUT_CAPACITY {
            self.counters.icmp_rate_limited += 1;
            return;
        }
        let Ok(ip) = IpPacket::new_checked(offending) else {
            return;
        };
        let mut out = vec![0u8; 1280];
        if let Ok(n) = emit_packet_too_big(&ip, group.ip, mtu as u32, &mut out) {
            out.truncate(n);
            self.icmp_tokens -= 1;
            self.counters.icmp_too_big_sent += 1;
            self.host_out.push_back(out);
        }
    }
}

/// Whether an oversize packet may still be sent (IPv4 without DF: the outer datagram may be fragmented).
/// Reads the version nibble and the DF bit of a packet already checked by `IpPacket::new_checked`.
fn may_fragment(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b >> 4 == 4) && bytes.get(6).is_some_and(|f| f & 0x40 == 0)
}

/// The MSS that keeps a full segment within the overlay's inner MTU.
pub(super) fn mss_limit(inner_mtu: usize, v6: bool) -> u16 {
    let hdr = if v6 { 60 } else { 40 };
    u16::try_from(inner_mtu.saturating_sub(hdr)).unwrap_or(u16::MAX)
}
