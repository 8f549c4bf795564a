//! The proxy's counters ([`ProxyCounters`]), the walk over every counter of it and its parts
//! ([`Proxy::for_each_counter`]) and the gauges ([`GAUGES`]): what `/metrics` and `pias ctl counters` show.

use super::{DropReason, Proxy, ReporterCounters, Verdict};

counters! {
    /// Counters of the proxy's own decisions (the sub-machines have theirs; [`Proxy::for_each_counter`] walks all).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ProxyCounters("") {
        overlay_in,
        host_in,
        control_in,
        data_in,
        /// Data frames this proxy sent as IAP straight to a JAP (3-segment path).
        iap_to_jap,
        /// Data frames this proxy sent as IAP to a RAP (first packets, 4-segment path).
        iap_to_rap,
        /// Frames this proxy relayed as RAP to a JAP.
        rap_relayed,
        /// Packets this proxy delivered as JAP to a target, by NAT or tunnel.
        jap_delivered,
        /// Target replies this proxy sent back to clients.
        jap_replies,
        answers_sent,
        answers_rate_limited,
        invalidations_sent,
        /// Of `invalidations_sent`, those with reason draining: this JAP was over its capacity (SPEC.md §9.6).
        drain_invalidations_sent,
        /// New flows this JAP took while over its capacity (served all the same).
        jap_over_capacity,
        /// Packets this JAP handed to another JAP of the group: its only targets were the client
        /// (`exclude_sender`, SPEC.md §9.5).
        jap_handoffs,
        /// Handed-off packets this proxy relayed as RAP to another JAP.
        rap_handoffs,
        icmp_too_big_sent,
        icmp_rate_limited,
        mss_clamped,
        replicas_sent,
        replicas_dropped,
        events_dropped,
        outbox_dropped,
        drop_malformed,
        drop_wrong_vni,
        /// Data frames with a wrong tag (forged, altered, or an unknown key epoch), SPEC.md §4.1.
        drop_bad_tag,
        /// TO_TARGET frames refused (wrong source, or an inner packet a tunnel target may not send).
        drop_tunnel_reply_refused,
        drop_bad_mac,
        /// Control messages refused for their timestamp (SPEC.md §8.2).
        drop_stale,
        drop_rejected,
        drop_data_from_stranger,
        drop_hops_exhausted,
        drop_no_jap,
        drop_no_target,
        drop_no_binding,
        drop_ports_exhausted,
        drop_no_route,
        drop_too_big,
        drop_unsupported,
        drop_no_headroom,
        /// Client packets whose source is martian (SPEC.md §8.5).
        drop_martian_source,
        /// Client packets whose source is in the overlay's address space (SPEC.md §8.5).
        drop_overlay_source,
        /// Replies not written to the host: their destination is martian or in the overlay's space.
        drop_bad_destination,
        /// Client packets not delivered: the chosen target is in the overlay's address space.
        drop_overlay_target,
        /// Times the proxy stopped announcing its anycast prefixes (SPEC.md §7.7), for any reason.
        announce_withdrawals,
    }
}

impl Proxy {
    /// Walks every counter of the proxy and its parts as `(name, value)` (names are Prometheus-ready), then
    /// the table sizes named in [`GAUGES`]. Every field of every counters struct is walked: the structs are
    /// defined with `counters!`, which generates their walk from the same list as their fields.
    pub fn for_each_counter(&self, mut f: impl FnMut(&'static str, u64)) {
        let f: &mut dyn FnMut(&'static str, u64) = &mut f;
        self.counters.for_each(f);
        self.iap.counters().for_each(f);
        self.rap.counters().for_each(f);
        let n = self.nat.counters();
        n.for_each(f);
        f("nat_expired", n.expired_total());
        self.reporter.counters().for_each(f);
        self.membership.counters().for_each(f);
        self.registry.counters().for_each(f);
        f("iap_entries", self.iap.len() as u64);
        f("rap_groups", self.rap.len() as u64);
        f("nat_bindings", self.nat.len() as u64);
        f("members", self.membership.len() as u64);
        f("registrations", self.registry.len() as u64);
        f("announced", u64::from(self.announce().up));
        // For alerting: members usable now (Alive, this proxy included; `members` counts tombstones too), and
        // the NAT table's bound (`nat_bindings / nat_capacity` is how near exhaustion it is).
        f("members_alive", self.membership.usable().count() as u64);
        f("nat_capacity", u64::from(self.cfg.nat.max_entries));
    }

    /// Every name [`Proxy::for_each_counter`] walks, in its order, from the counters definitions alone (no
    /// proxy needed): what a metrics test compares the rendered output with.
    pub fn counter_names() -> impl Iterator<Item = &'static str> {
        [
            ProxyCounters::NAMES,
            crate::iap::IapCounters::NAMES,
            crate::rap::RapCounters::NAMES,
            crate::nat::NatCounters::NAMES,
            &["nat_expired"],
            ReporterCounters::NAMES,
            crate::membership::MembershipCounters::NAMES,
            crate::registry::RegistryCounters::NAMES,
            GAUGES,
        ]
        .into_iter()
        .flatten()
        .copied()
    }

    pub(super) fn count_verdict(&mut self, v: Verdict) -> Verdict {
        if let Verdict::Drop(r) = v {
            let c = &mut self.counters;
            match r {
                DropReason::Malformed => c.drop_malformed += 1,
                DropReason::WrongVni => c.drop_wrong_vni += 1,
                DropReason::BadTag => c.drop_bad_tag += 1,
                DropReason::TunnelReplyRefused => c.drop_tunnel_reply_refused += 1,
                DropReason::BadMac => c.drop_bad_mac += 1,
                DropReason::Stale => c.drop_stale += 1,
                DropReason::Rejected => c.drop_rejected += 1,
                DropReason::DataFromStranger => c.drop_data_from_stranger += 1,
                DropReason::HopsExhausted => c.drop_hops_exhausted += 1,
                DropReason::NoJap => c.drop_no_jap += 1,
                DropReason::NoTarget => c.drop_no_target += 1,
                DropReason::NoBinding => c.drop_no_binding += 1,
                DropReason::PortsExhausted => c.drop_ports_exhausted += 1,
                DropReason::NoRoute => c.drop_no_route += 1,
                DropReason::TooBig => c.drop_too_big += 1,
                DropReason::Unsupported => c.drop_unsupported += 1,
                DropReason::NoHeadroom => c.drop_no_headroom += 1,
                DropReason::MartianSource => c.drop_martian_source += 1,
                DropReason::OverlaySource => c.drop_overlay_source += 1,
                DropReason::BadDestination => c.drop_bad_destination += 1,
                DropReason::OverlayTarget => c.drop_overlay_target += 1,
            }
        }
        v
    }
}

/// Names [`Proxy::for_each_counter`] walks that are current sizes, not running totals (Prometheus gauges).
pub const GAUGES: &[&str] = &[
    "iap_entries",
    "rap_groups",
    "nat_bindings",
    "members",
    "registrations",
    "announced",
    "members_alive",
    "nat_capacity",
];
