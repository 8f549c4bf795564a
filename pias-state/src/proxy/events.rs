//! What the proxy tells its driver: the [`Verdict`] on each packet handed in (and the [`DropReason`] when
//! dropped), and the queued [`Event`]s a fast path builds its state from, with the [`Delivery`] of a NAT
//! binding; also how events are queued (bounded, losses counted) and replayed ([`Proxy::state_events`]).

use core::net::SocketAddr;
use std::collections::VecDeque;

use pias_proto::{FlowKey, ProxyId, TransportAddr};

use crate::iap::CacheChange;
use crate::nat::{BindingId, NatEvent, RemoveReason};

use super::{AnnounceReason, Proxy};

/// Where a packet handed to [`Proxy::handle_overlay`] or [`Proxy::handle_host`] goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `PacketBuf::bytes()` as a UDP datagram from the overlay socket to this address.
    Overlay(SocketAddr),
    /// Write `PacketBuf::bytes()` (an IP packet) to the host side.
    Host,
    /// The proxy took the input (a control message, a registration); nothing to forward.
    Consumed,
    /// The input was dropped; the reason is counted.
    Drop(DropReason),
}

/// Why an input was dropped. Each has a counter (SPEC.md §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed,
    WrongVni,
    /// A data frame whose tag is wrong or under an epoch this proxy holds no key for (SPEC.md §4.1): forged,
    /// altered on the way, or from a proxy two key epochs away.
    BadTag,
    /// A TO_TARGET frame refused: not from a tunnel-mode target's exact overlay address, or its inner packet
    /// is not from a group that target serves or is addressed into the overlay's own space (SPEC.md §11.6).
    TunnelReplyRefused,
    BadMac,
    /// A control message whose timestamp is outside the skew window or before this proxy started (§8.2).
    Stale,
    Rejected,
    DataFromStranger,
    HopsExhausted,
    NoJap,
    NoTarget,
    NoBinding,
    PortsExhausted,
    NoRoute,
    TooBig,
    Unsupported,
    /// The receive buffer had too little headroom in front of the packet for the overlay header: a
    /// driver's buffer layout problem (see [`HEADROOM`](super::HEADROOM)), not a bad packet.
    NoHeadroom,
    /// A client packet's source is martian: loopback, this-network, link-local, multicast, reserved or
    /// IPv4-mapped (SPEC.md §8.5).
    MartianSource,
    /// A client packet's source is in the overlay's own address space (SPEC.md §8.5): spoofed, or its reply
    /// would re-enter the overlay.
    OverlaySource,
    /// A reply's destination (the client) is martian or in the overlay's space: writing it to the host
    /// would send it back into the overlay or nowhere (SPEC.md §8.5).
    BadDestination,
    /// The target chosen for a client packet is in the overlay's space: delivering to it would re-enter
    /// the overlay (SPEC.md §8.5).
    OverlayTarget,
}

/// What happened, for drivers, metrics and logs.
///
/// A fast path (XDP) is a cache of the core's decisions built from these events alone: each carries, or
/// names where to read without deciding anything, what the fast path installs — a cache entry and its JAPs'
/// overlay addresses ([`Proxy::cache_entry`], [`Proxy::jap_addr`]), a binding and how the core delivers its
/// packets ([`Delivery`]). A fast path that missed events ([`Proxy::events_lost`] moved) rebuilds itself
/// from [`Proxy::state_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A proxy's data frames are accepted from `addr` (it became usable, or changed address). When a member
    /// named by cached groups changes address, a [`Event::CacheInstalled`] follows for each of them.
    MemberUp { id: ProxyId, addr: SocketAddr },
    /// A proxy is suspected: no data goes to it until it refutes (its frames are still accepted).
    MemberSuspect { id: ProxyId },
    /// A proxy is down or left.
    MemberDown { id: ProxyId },
    /// The IAP cache entry of a group was installed or changed, or a JAP it names changed address (read it
    /// with [`Proxy::cache_entry`], the JAPs' addresses with [`Proxy::jap_addr`]).
    CacheInstalled { group: TransportAddr },
    /// The IAP cache entry of a group was removed.
    CacheRemoved { group: TransportAddr },
    /// A NAT binding exists: client packets keyed `forward` are delivered as `delivery` says (for NAT,
    /// rewritten to `reverse.reversed()`); the target's replies keyed `reverse` become `forward.reversed()`.
    NatCreated {
        id: BindingId,
        forward: FlowKey,
        reverse: FlowKey,
        delivery: Delivery,
    },
    /// A NAT binding is gone from both indexes.
    NatRemoved {
        id: BindingId,
        forward: FlowKey,
        reverse: FlowKey,
        reason: RemoveReason,
    },
    /// The load this JAP reports (new flows per second, per-mille of `capacity_flows_per_s`) moved past its
    /// hysteresis band, so every group is re-reported with it (SPEC.md §9.6). Only with a capacity set.
    LoadChanged { flows_per_s: u32, load_per_mille: u16 },
    /// A target registered with this proxy.
    TargetUp {
        group: TransportAddr,
        service: TransportAddr,
    },
    /// A target of this proxy is gone (expired or deregistered).
    TargetDown {
        group: TransportAddr,
        service: TransportAddr,
    },
    /// Whether to announce the anycast prefixes and registration addresses changed (SPEC.md §7.7): the
    /// driver adds (`up`) or withdraws their routes; the NAT pool's stay. [`Proxy::announce`] says the same.
    AnnounceChanged { up: bool, reason: AnnounceReason },
    /// The passive watch saw a target's new flows go unanswered and gives it no new flows for a back-off
    /// (SPEC.md §10.4); it stays registered.
    TargetSuspected {
        group: TransportAddr,
        service: TransportAddr,
    },
}

/// How the JAP delivers the client packets of a NAT binding. Decided in one place (the proxy's `delivery`),
/// which the JAP applies to every packet and [`Event::NatCreated`] carries to a fast path, so that the two
/// cannot differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Rewritten by the binding (SPEC.md §11.1), replies rewritten back.
    Nat,
    /// Rewritten like [`Delivery::Nat`], and copied to the group's other chosen targets (`replicate`, UDP
    /// only, SPEC.md §9.5): a fast path that cannot copy leaves these packets to the core.
    Replicate,
    /// Sent unchanged in a TO_TARGET data frame to this address, the target's IP at the overlay port
    /// (tunnel mode, SPEC.md §11.6); its replies come back to the core.
    Tunnel(SocketAddr),
}

impl Proxy {
    /// Events lost anywhere on their way to [`Proxy::poll_event`]: in the proxy's queue or in any
    /// sub-machine's (membership, registry, NAT; cache changes go through the proxy's). It only grows; a fast
    /// path that sees it move since it last looked may hold stale entries and rebuilds from
    /// [`Proxy::state_events`].
    pub fn events_lost(&self) -> u64 {
        self.counters.events_dropped
            + self.membership.counters().events_dropped
            + self.registry.counters().events_dropped
            + self.nat.counters().events_dropped
    }

    /// The events that build a fast path's state from nothing, as if it had seen every event since the
    /// start: each member whose data frames are accepted ([`Event::MemberUp`], then [`Event::MemberSuspect`]
    /// if it is suspected), each IAP cache entry ([`Event::CacheInstalled`]), each NAT binding
    /// ([`Event::NatCreated`] with its delivery).
    pub fn state_events(&self) -> impl Iterator<Item = Event> + '_ {
        let m = &self.membership;
        let members = m
            .ring_members()
            .filter(move |id| *id != self.me)
            .filter_map(move |id| {
                let addr = m.get(id)?.addr();
                let suspect = (!m.is_usable(id)).then_some(Event::MemberSuspect { id });
                Some([Some(Event::MemberUp { id, addr }), suspect])
            })
            .flatten()
            .flatten();
        // A group with a draining JAP stays with the core until the drain ends (SPEC.md §9.6).
        let groups = self
            .iap
            .iter()
            .filter(|(group, _)| !self.iap.draining(group))
            .map(|(group, _)| Event::CacheInstalled { group: *group });
        let bindings = self.nat.iter().map(move |b| Event::NatCreated {
            id: b.id,
            forward: b.forward,
            reverse: b.reverse,
            delivery: self.delivery(b.tag, &b.forward, b.reverse.src),
        });
        members.chain(groups).chain(bindings)
    }

    pub(super) fn push_event(&mut self, e: Event) {
        queue_event(
            &mut self.events,
            self.cfg.event_capacity,
            &mut self.counters.events_dropped,
            e,
        );
    }

    /// A NAT binding's event, a created one with the delivery the JAP applies to its packets.
    pub(super) fn push_nat_event(&mut self, ev: NatEvent) {
        let e = match ev {
            NatEvent::Created {
                id,
                forward,
                reverse,
                tag,
            } => Event::NatCreated {
                id,
                forward,
                reverse,
                delivery: self.delivery(tag, &forward, reverse.src),
            },
            NatEvent::Removed {
                id,
                forward,
                reverse,
                reason,
                ..
            } => Event::NatRemoved {
                id,
                forward,
                reverse,
                reason,
            },
        };
        self.push_event(e);
    }

    /// A member changed address: every cached group naming it is re-announced, so that a fast path takes
    /// the new address ([`Proxy::jap_addr`]) without keeping its own index. Only a usable member's address
    /// changes this way (any other member is in no entry: Suspect and Down remove it everywhere, answers
    /// install only usable JAPs). O(entries), on a rare event.
    pub(super) fn push_cache_events_naming(&mut self, jap: ProxyId) {
        let Proxy {
            iap,
            events,
            cfg,
            counters,
            ..
        } = self;
        for group in iap.groups_naming(jap) {
            // A group with a draining JAP stays with the core (SPEC.md §9.6).
            let e = if iap.draining(&group) {
                Event::CacheRemoved { group }
            } else {
                Event::CacheInstalled { group }
            };
            queue_event(events, cfg.event_capacity, &mut counters.events_dropped, e);
        }
    }

    pub(super) fn push_cache_event(&mut self, c: CacheChange) {
        match c {
            // While a JAP of the group drains, only the core tells established flows from new ones: a fast
            // path must not hold the entry (SPEC.md §9.6).
            CacheChange::Installed(group) if self.iap.draining(&group) => {
                self.push_event(Event::CacheRemoved { group })
            }
            CacheChange::Installed(group) => self.push_event(Event::CacheInstalled { group }),
            CacheChange::Removed(group) => self.push_event(Event::CacheRemoved { group }),
        }
    }
}

/// Queues an event in a bounded queue; a full queue drops it, counted (`events_dropped`).
fn queue_event(events: &mut VecDeque<Event>, capacity: usize, dropped: &mut u64, e: Event) {
    if events.len() >= capacity {
        *dropped += 1;
        return;
    }
    events.push_back(e);
}
