//! The RAP role (SPEC.md §9.2): answering a group's JAP set to an IAP (rate-limited) and relaying first
//! packets to the JAP the IAP will pick for their flow.

use pias_proto::auth::SipKey;
use pias_proto::control::{Answer, AnswerEntry, MAX_ANSWER_ENTRIES};
use pias_proto::packet::IpPacket;
use pias_proto::tunnel::{DataHeader, flags};
use pias_proto::{FlowKey, ProxyId, TransportAddr};

use crate::flowhash::{MAX_JAPS, MaglevTable, flow_hash};
use crate::time::Instant;

use super::host::packet_flow;
use super::overlay::{Out, encapsulate, rewrite_header};
use super::{DropReason, PacketBuf, Proxy, Topo, Verdict};

impl Proxy {
    /// As RAP: selects the JAP set for `iap` and, if allowed by the rate limit (or `force`), queues the
    /// Answer (or installs it directly when the IAP is this proxy). Returns the set.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        iap: ProxyId,
        group: &TransportAddr,
        force: bool,
    ) -> ([AnswerEntry; MAX_ANSWER_ENTRIES], usize) {
        let mut out = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        let policy = self.cfg.policies.lookup(group).rap;
        let topo = Topo {
            me: self.me,
            m: &self.membership,
        };
        let n = self.rap.select(now, group, iap, policy, &topo, &mut out);
        let answer = Answer::new(*group, self.rap.ttl_ms(n), &out[..n]);
        if iap == self.me {
            let m = &self.membership;
            let me = self.me;
            let c = self.iap.install(now, &answer, |id| id == me || m.is_usable(id));
            self.push_cache_event(c);
            return (out, n);
        }
        let key = (iap, *group);
        let limited = self
            .answer_limit
            .peek(&key)
            .is_some_and(|t| now.saturating_since(*t) < self.cfg.answer_interval);
        if limited && !force {
            self.counters.answers_rate_limited += 1;
        } else {
            self.answer_limit.insert(key, now);
            self.counters.answers_sent += 1;
            self.push_out(Out::Answer { to: iap, answer });
        }
        (out, n)
    }

    /// As RAP: relays a frame to the JAP the IAP will pick for its flow (SPEC.md §9.2), or, for a frame a
    /// JAP handed off (HANDOFF, `exclude` its sender), to the JAP it would pick among the others (§9.5).
    pub(super) fn rap_relay(
        &mut self,
        now: Instant,
        hdr: DataHeader,
        pkt: &mut PacketBuf<'_>,
        inner_off: usize,
        exclude: Option<ProxyId>,
    ) -> Verdict {
        if hdr.hops == 0 {
            return Verdict::Drop(DropReason::HopsExhausted);
        }
        let Some((flow, group)) = client_flow(&pkt.bytes()[inner_off..]) else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let handoff = hdr.flags & flags::HANDOFF != 0;
        let want = hdr.flags & flags::WANT_ANSWER != 0 && !handoff;
        let (set, n) = if handoff {
            self.select_for(now, hdr.ingress, &group, exclude)
        } else {
            self.answer_for_relay(now, hdr.ingress, &group, want)
        };
        let Some(jap) = pick(&self.flow_key, &set[..n], flow_hash(&self.flow_key, &flow)) else {
            return Verdict::Drop(DropReason::NoJap);
        };
        self.counters.rap_relayed += 1;
        if handoff {
            self.counters.rap_handoffs += 1;
        }
        if jap == self.me {
            pkt.strip_front(inner_off);
            return self.jap_deliver(now, hdr.ingress, pkt, handoff);
        }
        let Some(addr) = self.addr_of(jap) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let relayed = DataHeader {
            vni: hdr.vni,
            flags: flags::VIA_RAP | (hdr.flags & flags::HANDOFF),
            hops: hdr.hops - 1,
            epoch: self.data_keys.wire_epoch(),
            ingress: hdr.ingress,
        };
        rewrite_header(pkt, inner_off, &relayed, self.data_keys.current());
        Verdict::Overlay(addr)
    }

    fn answer_for_relay(
        &mut self,
        now: Instant,
        iap: ProxyId,
        group: &TransportAddr,
        want: bool,
    ) -> ([AnswerEntry; MAX_ANSWER_ENTRIES], usize) {
        if want {
            return self.answer(now, iap, group, false);
        }
        self.select_for(now, iap, group, None)
    }

    /// The JAP set this RAP would answer `iap`, without `exclude`; no Answer is sent.
    fn select_for(
        &mut self,
        now: Instant,
        iap: ProxyId,
        group: &TransportAddr,
        exclude: Option<ProxyId>,
    ) -> ([AnswerEntry; MAX_ANSWER_ENTRIES], usize) {
        let mut out = [AnswerEntry::default(); MAX_ANSWER_ENTRIES];
        let policy = self.cfg.policies.lookup(group).rap;
        let topo = Topo {
            me: self.me,
            m: &self.membership,
        };
        let n = self
            .rap
            .select_excluding(now, group, iap, policy, &topo, exclude, &mut out);
        (out, n)
    }
}

impl Proxy {
    /// As JAP: this JAP has targets for the group but none the group's policy allows for this client (the
    /// sender is its only target, `exclude_sender`). The packet goes to the group's RAP with TO_RAP and
    /// HANDOFF, which relays it to another JAP of the group; when this proxy is that RAP, it picks the other
    /// JAP itself (SPEC.md §9.5). No Invalidate: the JAP serves the group's other clients.
    pub(super) fn hand_off(
        &mut self,
        now: Instant,
        ingress: ProxyId,
        group: &TransportAddr,
        fh: u64,
        pkt: &mut PacketBuf<'_>,
    ) -> Verdict {
        let Some(rap) = self.pick_rap(group) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        self.counters.jap_handoffs += 1;
        let (to, fl, hops) = if rap == self.me {
            let (set, n) = self.select_for(now, ingress, group, Some(self.me));
            let Some(jap) = pick(&self.flow_key, &set[..n], fh) else {
                return Verdict::Drop(DropReason::NoJap);
            };
            self.counters.rap_relayed += 1;
            self.counters.rap_handoffs += 1;
            (jap, flags::VIA_RAP | flags::HANDOFF, 0)
        } else {
            (rap, flags::TO_RAP | flags::HANDOFF, 1)
        };
        let Some(addr) = self.addr_of(to) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let h = DataHeader {
            vni: self.cfg.vni,
            flags: fl,
            hops,
            epoch: self.data_keys.wire_epoch(),
            ingress,
        };
        encapsulate(pkt, &h, self.data_keys.current()).map_or_else(Verdict::Drop, |()| Verdict::Overlay(addr))
    }
}

/// The flow a client packet belongs to and its group. For an ICMP error from a client, the quoted packet
/// (a reply from the group) names the flow, reversed.
fn client_flow(bytes: &[u8]) -> Option<(FlowKey, TransportAddr)> {
    let ip = IpPacket::new_checked(bytes).ok()?;
    let flow = packet_flow(&ip)?;
    Some((flow, flow.dst_ta()))
}

/// The JAP for a flow from a JAP set, by the slot table every IAP builds (SPEC.md §13.3).
pub(super) fn pick(key: &SipKey, set: &[AnswerEntry], fh: u64) -> Option<ProxyId> {
    let mut list = [(ProxyId::NONE, 0u32); MAX_JAPS];
    let n = set.len().min(MAX_JAPS);
    for (l, e) in list.iter_mut().zip(set) {
        *l = (e.jap, e.weight);
    }
    MaglevTable::build(key, &list[..n]).pick_id(fh)
}
