//! Overlay input and output: the checks a received frame passes (VNI, the data tag, data only from members
//! or tunnel targets) and the dispatch of data frames to the RAP or JAP role and of control messages to their
//! machines; the outbox of control messages to seal; the data header put in front of a forwarded packet.

use core::net::SocketAddr;

use pias_proto::auth::SipKey;
use pias_proto::control::{Answer, ControlPacket, Invalidate, Message, ReportAck, Resolve};
use pias_proto::geneve::UDP_PORT as OVERLAY_PORT;
use pias_proto::tunnel::{DATA_HEADER_LEN, DataHeader, Frame, flags, write_tag};
use pias_proto::{ProxyId, TransportAddr};

use crate::seal::{Dest, OpenError, Transmit};
use crate::time::Instant;

use super::{DropReason, PacketBuf, Proxy, Verdict};

impl Proxy {
    pub(super) fn overlay_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        pkt: &mut PacketBuf<'_>,
    ) -> Verdict {
        // One parse classifies the frame and, for data, gives the header and where the client packet starts.
        let data = match Frame::parse(pkt.bytes()) {
            Ok(Frame::Control(g)) => {
                if g.vni() != self.cfg.vni {
                    return Verdict::Drop(DropReason::WrongVni);
                }
                None
            }
            Ok(Frame::Data(d)) => {
                // A tunnel-mode target holds no data key: its TO_TARGET replies are judged by where they come
                // from and what they carry instead (`tunnel_reply`, SPEC.md §11.6). Every other data frame
                // must carry the overlay's tag before anything else is looked at (SPEC.md §4.1).
                let from_target =
                    d.flags() & flags::TO_TARGET != 0 && self.tunnel_targets.contains_key(&from.ip());
                if from_target && from.port() != OVERLAY_PORT {
                    // A target sends from its overlay port only: another port of its IP is refused as a
                    // reply, and counted as such.
                    return Verdict::Drop(DropReason::TunnelReplyRefused);
                }
                if d.vni() == self.cfg.vni && !from_target && d.verify_tag(&self.data_keys).is_err() {
                    return Verdict::Drop(DropReason::BadTag);
                }
                Some((d.header(), d.inner_offset(), from_target))
            }
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        let Some((hdr, inner_off, from_target)) = data else {
            self.counters.control_in += 1;
            let payload = &pkt.bytes()[pias_proto::geneve::HEADER_LEN..];
            return self.control(now, from, payload);
        };
        if hdr.vni != self.cfg.vni {
            return Verdict::Drop(DropReason::WrongVni);
        }
        self.counters.data_in += 1;
        if from_target {
            return self.tunnel_reply(from, pkt, inner_off);
        }
        // A correct tag, and, as a second layer, the overlay address of a live member (SPEC.md §4.1). This
        // proxy never sends data frames to itself, so its own address is no member's.
        let member = self.membership.id_by_addr(from).is_some_and(|id| id != self.me);
        if !member {
            return Verdict::Drop(DropReason::DataFromStranger);
        }
        if hdr.flags & flags::TO_RAP != 0 {
            // A handed-off frame must not go back to the JAP that handed it off (SPEC.md §9.5).
            let exclude = (hdr.flags & flags::HANDOFF != 0)
                .then(|| self.membership.id_by_addr(from))
                .flatten();
            return self.rap_relay(now, hdr, pkt, inner_off, exclude);
        }
        if hdr.flags & flags::TO_TARGET != 0 {
            // TO_TARGET frames go to targets, not proxies: from a member they are misdirected.
            return Verdict::Drop(DropReason::Unsupported);
        }
        pkt.strip_front(inner_off);
        self.jap_deliver(now, hdr.ingress, pkt, hdr.flags & flags::HANDOFF != 0)
    }

    fn control(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Verdict {
        let Ok(cp) = ControlPacket::new_checked(payload) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // MAC bound to this receiver and VNI, then a fresh timestamp, then the sequence window (§8.2).
        let hdr = match self.sealer.open(now, self.cfg.overlay_addr, &cp) {
            Ok(h) => h,
            Err(OpenError::BadMac) => return Verdict::Drop(DropReason::BadMac),
            Err(OpenError::Stale(_)) => return Verdict::Drop(DropReason::Stale),
        };
        if self.membership.accept(hdr.sender, hdr.seq, cp.kind()).is_err() {
            return Verdict::Drop(DropReason::Rejected);
        }
        let Ok(msg) = cp.message() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let sender = hdr.sender;
        match msg {
            Message::Probe(_)
            | Message::ProbeAck(_)
            | Message::Records(_)
            | Message::Digest(_)
            | Message::Pull(_)
            | Message::Join(_) => {
                self.membership.handle(now, from, sender, &msg);
            }
            Message::Report(list) => {
                self.rap.note_report_message();
                for e in list.iter() {
                    self.rap.handle_report(now, sender, &e);
                }
                self.push_out(Out::ReportAck {
                    to: sender,
                    seq: hdr.seq,
                });
            }
            Message::ReportAck(a) => self.reporter.handle_ack(a.acked_seq),
            Message::Resolve(r) => {
                self.answer(now, sender, &r.group, true);
            }
            Message::Answer(a) => {
                let m = &self.membership;
                let me = self.me;
                if let Some(c) = self.iap.accept_answer(now, &a, |id| id == me || m.is_usable(id)) {
                    self.push_cache_event(c);
                }
            }
            Message::Invalidate(inv) => {
                // Draining: the JAP keeps its flows but wants no new ones (SPEC.md §9.6); any other reason
                // (and unknown ones, conservatively) removes it from the entry (§9.4).
                let c = if inv.reason == Invalidate::REASON_DRAINING {
                    self.iap.drain(now, &inv.group, sender)
                } else {
                    self.iap.invalidate(&inv.group, sender)
                };
                if let Some(c) = c {
                    self.push_cache_event(c);
                }
            }
            _ => return Verdict::Drop(DropReason::Unsupported),
        }
        Verdict::Consumed
    }

    pub(super) fn push_out(&mut self, o: Out) {
        if self.outbox.len() >= self.cfg.outbox_capacity {
            self.counters.outbox_dropped += 1;
            return;
        }
        self.outbox.push_back(o);
    }

    pub(super) fn seal_out(&mut self, now: Instant, out: Out, buf: &mut [u8]) -> Option<Transmit> {
        let (to, msg) = match out {
            Out::Answer { to, answer } => (to, Message::Answer(answer)),
            Out::ReportAck { to, seq } => (to, Message::ReportAck(ReportAck { acked_seq: seq })),
            Out::Resolve { to, group } => (to, Message::Resolve(Resolve { group })),
            Out::Invalidate { to, group, reason } => (to, Message::Invalidate(Invalidate { group, reason })),
        };
        let addr = self.addr_of(to)?;
        let len = self.sealer.seal(now, addr, &msg, buf)?;
        Some(Transmit {
            dest: Dest::Overlay(addr),
            len,
        })
    }
}

/// A control message waiting to be sealed and sent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Out {
    Answer {
        to: ProxyId,
        answer: Answer,
    },
    ReportAck {
        to: ProxyId,
        seq: u64,
    },
    Resolve {
        to: ProxyId,
        group: TransportAddr,
    },
    Invalidate {
        to: ProxyId,
        group: TransportAddr,
        reason: u8,
    },
}

/// Prepends a data header in the headroom and tags the frame under `key` (the key of `h.epoch`). Fails with
/// `NoHeadroom` when the buffer has no room in front of the packet, and `Malformed` when the packet is not
/// IPv4 or IPv6.
pub(super) fn encapsulate(pkt: &mut PacketBuf<'_>, h: &DataHeader, key: &SipKey) -> Result<(), DropReason> {
    let version = pkt.bytes().first().map(|b| b >> 4).unwrap_or(0);
    let head = pkt.prepend(DATA_HEADER_LEN).ok_or(DropReason::NoHeadroom)?;
    h.emit(version, head).map_err(|_| DropReason::Malformed)?;
    write_tag(key, pkt.bytes_mut()).map_err(|_| DropReason::Malformed)
}

/// Replaces a received frame's header (of `inner_off` bytes) by a fresh, tagged data header.
pub(super) fn rewrite_header(pkt: &mut PacketBuf<'_>, inner_off: usize, h: &DataHeader, key: &SipKey) {
    pkt.strip_front(inner_off);
    let _ = encapsulate(pkt, h, key);
}
