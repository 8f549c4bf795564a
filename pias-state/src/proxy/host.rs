//! Host input: an IP packet from the TUN is a target agent's message to the registration address, a
//! target's reply to the NAT pool (JAP), or a client's packet to a group (IAP).

use core::net::SocketAddr;

use pias_proto::control::REGISTRATION_PORT;
use pias_proto::packet::IpPacket;
use pias_proto::{FlowKey, IpProtocol};

use crate::time::Instant;

use super::{DropReason, PacketBuf, Proxy, Verdict};

impl Proxy {
    pub(super) fn host_inner(&mut self, now: Instant, pkt: &mut PacketBuf<'_>) -> Verdict {
        // One parse decides the path and gives the IAP everything its hit path needs.
        let (src, dst, flow, syn) = {
            let Ok(ip) = IpPacket::new_checked(pkt.bytes()) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let flow = packet_flow(&ip);
            let dst = match (&flow, ip.is_icmp_error()) {
                (Some(f), false) => f.dst,
                _ => ip.dst_addr(),
            };
            (ip.src_addr(), dst, flow, ip.tcp_flags().is_some_and(|f| f.syn()))
        };
        if let Some(f) = flow
            && f.proto == IpProtocol::Udp
            && f.dst_port == REGISTRATION_PORT
            && self.cfg.registration_addrs.contains(&dst)
        {
            let local = SocketAddr::new(dst, REGISTRATION_PORT);
            let from = SocketAddr::new(f.src, f.src_port);
            let Ok(ip) = IpPacket::new_checked(pkt.bytes()) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            let payload = ip.l4_bytes().get(8..).unwrap_or(&[]);
            return match self.registry.handle_target_packet(now, local, from, payload) {
                Ok(()) => Verdict::Consumed,
                Err(_) => Verdict::Drop(DropReason::Rejected),
            };
        }
        if self.nat.is_pool_address(dst) {
            return self.jap_reply(now, pkt);
        }
        // Ingress filtering (SPEC.md §8.5): a client source in the overlay's space or martian is spoofed or
        // would bring the reply back into the overlay (the one-packet loop G:7 → G:7).
        if let Err(r) = self.check_client(src) {
            return Verdict::Drop(r);
        }
        let Some(flow) = flow else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        self.iap_ingress(now, pkt, flow, syn)
    }
}

pub(super) fn packet_flow<T: AsRef<[u8]>>(ip: &IpPacket<T>) -> Option<FlowKey> {
    let flow = if ip.is_icmp_error() {
        ip.icmp_error_inner_flow().ok()?.reversed()
    } else {
        ip.flow()?
    };
    if !flow.proto.has_ports() && !matches!(flow.proto, IpProtocol::Icmp | IpProtocol::Icmpv6) {
        return None;
    }
    Some(flow)
}
