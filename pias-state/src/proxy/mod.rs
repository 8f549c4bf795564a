//! `Proxy`: one PIAS proxy playing every role (IAP, RAP, JAP) at once, as a sans-IO state machine.
//!
//! # Inputs
//! - [`Proxy::handle_overlay`]: a UDP datagram received on the overlay socket (a Geneve data or control frame
//!   from another proxy, or a tunnel-mode target's reply);
//! - [`Proxy::handle_host`]: an IP packet read from the host side (the TUN into which the anycast prefixes,
//!   the registration addresses and the NAT pool are routed): a client's packet to a group, a target's reply
//!   to the NAT pool, or a target agent's message to the registration address;
//! - [`Proxy::handle_timeout`]: time has passed.
//!
//! The two packet handlers work *in place* on a [`PacketBuf`] and return a [`Verdict`] saying where the
//! (possibly rewritten) packet goes now — that is the forwarding fast path, with no copy and no allocation.
//! Everything else the proxy wants to send is queued and drained with [`Proxy::poll_transmit`].
//!
//! # Drain order
//! After any `handle_*` call, and whenever the timer fires:
//! 1. send what [`Proxy::poll_transmit`] writes until it returns `None`;
//! 2. consume [`Proxy::poll_event`] until `None` (cache and NAT changes for XDP maps, member and target
//!    news for logs);
//! 3. re-arm the one timer on [`Proxy::poll_timeout`] — after [`Proxy::leave`], stop instead once
//!    [`Proxy::is_drained`].
//!
//! Calling `handle_timeout` early or twice is harmless. Dropping events (not draining) costs only the
//! events: they are counted (`events_dropped`), never the proxy's state.
//!
//! # Layout
//! This module holds the [`Proxy`] and its entry points; the rest is split by concept: `config`
//! ([`ProxyConfig`] and its validation), `events` ([`Verdict`], [`DropReason`], [`Event`], [`Delivery`]),
//! `counters` ([`ProxyCounters`], [`GAUGES`]), `overlay` (frames from other proxies, the control outbox),
//! `host` (packets from the TUN), and one file per role: `ingress` (IAP), `rendezvous` (RAP), `delivery`
//! (JAP). `reports` is the JAP's reports to RAPs, `buf` the in-place [`PacketBuf`].

mod announce;
mod buf;
mod config;
mod counters;
mod delivery;
mod events;
mod host;
mod ingress;
mod load;
mod overlay;
mod rendezvous;
mod reports;

#[cfg(test)]
mod tests;

pub use announce::{Announce, AnnounceConfig, AnnounceMode, AnnounceReason, ISOLATION_PEERS};
pub use buf::{HEADROOM, PacketBuf};
pub use config::{ConfigError, ConfigPart, ProxyConfig, SubConfigError};
pub use counters::{GAUGES, ProxyCounters};
pub use events::{Delivery, DropReason, Event, Verdict};

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::VecDeque;

use pias_proto::auth::SipKey;
use pias_proto::control::{DeliveryMode, MemberStatus, ProxyRecord};
use pias_proto::geneve::UDP_PORT as OVERLAY_PORT;
use pias_proto::{FlowKey, ProxyId, TransportAddr};

use pias_proto::tunnel::DataKeys;

use crate::filter::{OverlaySpace, Refusal};
use crate::flowhash::flow_hash;
use crate::iap::{CacheChange, IapCache};
use crate::lru::LruMap;
use crate::membership::{MemberEvent, Membership};
use crate::nat::{Direction, NatTable};
use crate::rap::{RapTable, Topology};
use crate::registry::{Registry, RegistryEvent};
use crate::ring::Ring;
use crate::seal::{Dest, Sealer, Transmit};
use crate::secrets::Secrets;
use crate::time::Instant;
use announce::Announcer;
use overlay::Out;
use reports::Reporter;
pub use reports::{ReportConfig, ReporterCounters};

/// A PIAS proxy. See the module documentation for the drain order.
#[derive(Debug)]
pub struct Proxy {
    cfg: ProxyConfig,
    me: ProxyId,
    sealer: Sealer,
    flow_key: SipKey,
    /// The data-frame tag keys (current and previous epoch, SPEC.md §4.1).
    data_keys: DataKeys,
    membership: Membership,
    ring: Ring,
    iap: IapCache,
    rap: RapTable,
    registry: Registry,
    nat: NatTable,
    reporter: Reporter,
    /// New flows per second as JAP, against `capacity_flows_per_s` (SPEC.md §9.6).
    load: load::LoadMeter,
    outbox: VecDeque<Out>,
    /// IP packets the proxy generated for the host side (ICMP errors), bounded.
    host_out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    answer_limit: LruMap<(ProxyId, TransportAddr), Instant>,
    invalidate_limit: LruMap<(ProxyId, TransportAddr), Instant>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    rap_sweep_at: Instant,
    /// While leaving and Left is not flooded yet: the latest time to flood it (SPEC.md §7.6).
    left_by: Option<Instant>,
    /// After [`Proxy::leave`]: when the drain ends and the proxy may stop (SPEC.md §7.6).
    drain_end: Option<Instant>,
    /// `handle_timeout` saw the drain's end: it leaves `poll_timeout` (the driver should stop, but a timer
    /// that stays in the past would spin one that does not).
    drain_seen: bool,
    counters: ProxyCounters,
    /// Live tunnel-mode registrations by target address: frames from these addresses are accepted (§11.6),
    /// and the JAP checks a binding's delivery mode only while any exist (the NAT-only fast path skips it).
    tunnel_targets: std::collections::BTreeMap<IpAddr, u32>,
    /// The overlay's address space, from the configuration (SPEC.md §8.5): client sources, reply
    /// destinations and targets in it are refused.
    space: OverlaySpace,
    /// Whether the anycast prefixes are announced now (SPEC.md §7.7).
    announcer: Announcer,
}

/// The proxy's view of membership for RAP selection.
struct Topo<'a> {
    me: ProxyId,
    m: &'a Membership,
}

impl Topology for Topo<'_> {
    fn usable(&self, id: ProxyId) -> bool {
        id == self.me || self.m.is_usable(id)
    }

    fn distance_ms(&self, a: ProxyId, b: ProxyId) -> Option<f64> {
        let coord = |id: ProxyId| {
            if id == self.me {
                Some(self.m.my_coord())
            } else {
                self.m.get(id).map(|m| m.coord())
            }
        };
        Some(coord(a)?.distance_ms(&coord(b)?))
    }
}

const RAP_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const RAP_SWEEP_BUDGET: usize = 1024;
const HOST_OUT_CAPACITY: usize = 256;

impl Proxy {
    /// A proxy starting at `now`. It joins the overlay through `cfg.membership.seeds`. `secrets` key its
    /// cookies, hash tables and probe nonces (a driver draws them from the OS; simulations and tests use
    /// [`Secrets::from_seed_for_tests`]); `cfg.seed` drives only choices that need no secrecy (SPEC.md §8.1).
    pub fn new(cfg: ProxyConfig, secrets: &Secrets, now: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let me = cfg.id;
        let ring_key = cfg.master_key.ring_key();
        let flow_key = cfg.master_key.flow_key();
        let clock = crate::replay::Freshness::new(
            cfg.wall_origin_ms,
            u64::try_from(cfg.replay_skew.as_millis()).unwrap_or(u64::MAX),
            now,
        );
        let sealer = Sealer::new(me, cfg.vni, cfg.master_key.overlay_key(), cfg.incarnation, clock);
        let mut rng = crate::rng::SplitMix::new(cfg.seed);
        let own = ProxyRecord {
            id: me,
            incarnation: cfg.incarnation,
            version: 1,
            status: MemberStatus::Alive,
            addr: cfg.overlay_addr,
            coord: crate::coords::Coord::new().to_bytes(),
        };
        let membership = Membership::new(
            cfg.membership.clone(),
            own,
            ring_key,
            secrets.nonce_key(),
            rng.next_u64(),
            now,
        );
        let mut ring = Ring::new(ring_key, cfg.ring_vnodes);
        let _ = ring.insert(me);
        // `validate` ran both validators; what is left is the NAT's preallocation failing.
        let registry = Registry::new(
            cfg.registry.clone(),
            cfg.master_key.clone(),
            me,
            secrets,
            rng.next_u64(),
        )?;
        let nat = NatTable::new(cfg.nat.clone(), secrets.table_key("nat"))?;
        Ok(Proxy {
            me,
            flow_key,
            data_keys: DataKeys::new(&cfg.master_key, cfg.data_key_epoch),
            iap: IapCache::new(cfg.iap, flow_key, secrets.table_key("iap cache")),
            rap: RapTable::new(cfg.rap, secrets.table_key("rap groups")),
            reporter: Reporter::new(cfg.reports, me, now),
            load: load::LoadMeter::new(cfg.capacity_flows_per_s, now),
            answer_limit: LruMap::new(4096, secrets.table_key("answer limit")),
            invalidate_limit: LruMap::new(4096, secrets.table_key("invalidate limit")),
            icmp_tokens: cfg.icmp_rate,
            icmp_refill: now,
            rap_sweep_at: now + RAP_SWEEP_INTERVAL,
            left_by: None,
            drain_end: None,
            drain_seen: false,
            outbox: VecDeque::with_capacity(cfg.outbox_capacity.min(65_536)),
            host_out: VecDeque::with_capacity(HOST_OUT_CAPACITY),
            events: VecDeque::with_capacity(cfg.event_capacity.min(65_536)),
            counters: ProxyCounters::default(),
            tunnel_targets: std::collections::BTreeMap::new(),
            space: cfg.overlay_space(),
            announcer: Announcer::new(cfg.announce),
            sealer,
            membership,
            ring,
            registry,
            nat,
            cfg,
        })
    }

    // ----- getters -----

    pub fn id(&self) -> ProxyId {
        self.me
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }

    /// The overlay's address space client sources are checked against (SPEC.md §8.5): what a fast path
    /// installs to filter client packets the same way.
    pub fn overlay_space(&self) -> &OverlaySpace {
        &self.space
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn iap(&self) -> &IapCache {
        &self.iap
    }

    pub fn rap(&self) -> &RapTable {
        &self.rap
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn nat(&self) -> &NatTable {
        &self.nat
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Counters of the JAP's reports to RAPs.
    pub fn report_counters(&self) -> &ReporterCounters {
        self.reporter.counters()
    }

    /// The IAP cache entry of a group (for XDP map sync after `CacheInstalled`).
    pub fn cache_entry(&self, group: &TransportAddr) -> Option<&crate::iap::CacheEntry> {
        self.iap.get(group)
    }

    /// The overlay address the IAP sends a JAP's data frames to (this proxy's own for itself); `None` for a
    /// proxy it does not know. What a fast path writes for the JAPs of a cache entry.
    pub fn jap_addr(&self, id: ProxyId) -> Option<SocketAddr> {
        self.addr_of(id)
    }

    /// The flow hash every proxy computes for `flow` (SPEC.md §13.2).
    pub fn flow_hash(&self, flow: &FlowKey) -> u64 {
        flow_hash(&self.flow_key, flow)
    }

    /// The RAPs of a group, in order.
    pub fn raps_of(&self, group: &TransportAddr) -> crate::ring::Raps {
        let mut raps = crate::ring::Raps::new();
        self.ring.raps(group, self.cfg.rap_replicas, &mut raps);
        raps
    }

    // ----- input -----

    /// Handles a datagram received on the overlay socket from `from`. See [`Verdict`].
    pub fn handle_overlay(&mut self, now: Instant, from: SocketAddr, pkt: &mut PacketBuf<'_>) -> Verdict {
        self.counters.overlay_in += 1;
        let v = self.overlay_inner(now, from, pkt);
        self.settle(now, v);
        self.count_verdict(v)
    }

    /// Handles an IP packet read from the host side. See [`Verdict`].
    pub fn handle_host(&mut self, now: Instant, pkt: &mut PacketBuf<'_>) -> Verdict {
        self.counters.host_in += 1;
        let v = self.host_inner(now, pkt);
        self.settle(now, v);
        self.count_verdict(v)
    }

    /// Handles the passing of time. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        self.registry.handle_timeout(now);
        self.nat.handle_timeout(now);
        if now >= self.rap_sweep_at {
            let topo = Topo {
                me: self.me,
                m: &self.membership,
            };
            self.rap.sweep(now, RAP_SWEEP_BUDGET, &topo);
            self.rap_sweep_at = now + RAP_SWEEP_INTERVAL;
        }
        self.load.roll(now);
        self.load.reported();
        if self.reporter.set_load(self.load.per_mille()) {
            self.push_event(Event::LoadChanged {
                flows_per_s: self.load.flows_per_s(),
                load_per_mille: self.reporter.load(),
            });
        }
        let mut ended: smallvec::SmallVec<[CacheChange; 8]> = smallvec::SmallVec::new();
        self.iap.expire_drains(now, |c| ended.push(c));
        for c in ended {
            self.push_cache_event(c);
        }
        self.drain_seen |= self.is_drained(now);
        self.after_input(now);
    }

    /// Activity a fast path (XDP) saw on a NAT binding it served without the core: refreshes the binding's
    /// idle timer and counters, so expiry stays the core's decision. `false` if the binding is gone.
    pub fn touch_nat(
        &mut self,
        id: crate::nat::BindingId,
        dir: Direction,
        packets: u64,
        bytes: u64,
        now: Instant,
    ) -> bool {
        self.nat.touch(id, dir, packets, bytes, now)
    }

    /// Starts a graceful leave (SPEC.md §7.6). First the proxy answers its targets' Refreshes and Registers
    /// with Draining, so they register again elsewhere (through anycast: [`Event::AnnounceChanged`] tells the
    /// driver to withdraw this proxy's routes now, SPEC.md §7.7), while it stays their JAP with the registrations it holds (they no longer expire). Status
    /// Left — which takes it out of every RAP's and IAP's choice at once — is flooded at half the
    /// `drain_time` (at once if it holds no registration): flooded at once, it would leave a group whose
    /// targets were all here with no JAP until they registered elsewhere, and IAPs asking meanwhile would
    /// cache that empty answer for `negative_ttl`. It keeps forwarding for `drain_time` after this call:
    /// [`Proxy::poll_timeout`] includes the drain's end, and from then on [`Proxy::is_drained`] says the
    /// driver may stop. A second call changes nothing.
    pub fn leave(&mut self, now: Instant) {
        if self.registry.is_draining() {
            return;
        }
        self.registry.drain();
        self.left_by = Some(now + self.cfg.membership.drain_time / 2);
        self.drain_end = Some(now + self.cfg.membership.drain_time);
        self.after_input(now);
    }

    /// Whether [`Proxy::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.registry.is_draining()
    }

    /// Whether a graceful leave has drained: `drain_time` has passed since [`Proxy::leave`], and the driver
    /// may stop (dropping the TUN withdraws what routes are left). Always `false` before `leave`.
    pub fn is_drained(&self, now: Instant) -> bool {
        self.drain_end.is_some_and(|t| now >= t)
    }

    // ----- output -----

    /// Writes the next queued datagram or packet into `buf`; `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(p) = self.host_out.front() {
            if p.len() <= buf.len() {
                let n = p.len();
                buf[..n].copy_from_slice(p);
                self.host_out.pop_front();
                return Some(Transmit {
                    dest: Dest::Host,
                    len: n,
                });
            }
            // Too small a buffer: leave it queued (the caller's buffer should be >= 1500 + headroom).
            return None;
        }
        if let Some(t) = self.registry.poll_transmit(buf) {
            return Some(t);
        }
        while let Some(out) = self.outbox.pop_front() {
            if let Some(t) = self.seal_out(now, out, buf) {
                return Some(t);
            }
        }
        if let Some(t) = self
            .reporter
            .poll_transmit(now, &mut self.sealer, &self.membership, buf)
        {
            return Some(t);
        }
        self.membership.poll_transmit(now, &mut self.sealer, buf)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Proxy::handle_timeout`] should next be called (or, while leaving, the drain ends: see
    /// [`Proxy::is_drained`]); `None` means never (nothing scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.membership.poll_timeout(),
            self.registry.poll_timeout(),
            self.nat.poll_timeout(),
            self.reporter.poll_timeout(),
            self.load.poll_timeout(),
            self.iap.next_drain_end(),
            Some(self.rap_sweep_at),
            self.left_by,
            self.drain_end.filter(|_| !self.drain_seen),
            self.announcer.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- internals -----

    fn addr_of(&self, id: ProxyId) -> Option<SocketAddr> {
        if id == self.me {
            return Some(self.cfg.overlay_addr);
        }
        self.membership.get(id).map(|m| m.addr())
    }

    /// After a packet: a forwarded packet can only have created NAT bindings, so the fast path drains just
    /// those events; anything else (control, registrations, drops) runs the full settling.
    fn settle(&mut self, now: Instant, v: Verdict) {
        match v {
            Verdict::Overlay(_) | Verdict::Host => {
                while let Some(ev) = self.nat.poll_event() {
                    self.push_nat_event(ev);
                }
            }
            Verdict::Consumed | Verdict::Drop(_) => self.after_input(now),
        }
    }

    /// Applies what the sub-machines decided during an input: membership changes move the ring and the
    /// caches, registry changes move NAT bindings and reports.
    fn after_input(&mut self, now: Instant) {
        if let Some(t) = self.left_by
            && (now >= t || self.registry.is_empty())
        {
            self.left_by = None;
            self.membership.leave(now);
        }
        while let Some(ev) = self.membership.poll_event() {
            self.announcer.membership_changed();
            match ev {
                MemberEvent::Up { id, addr } => {
                    let _ = self.ring.insert(id);
                    self.reporter.member_up(id);
                    self.push_event(Event::MemberUp { id, addr });
                }
                MemberEvent::AddrChanged { id, addr } => {
                    let _ = self.ring.insert(id);
                    self.push_event(Event::MemberUp { id, addr });
                    self.push_cache_events_naming(id);
                }
                MemberEvent::Alive { id } => {
                    let _ = self.ring.insert(id);
                    if let Some(addr) = self.membership.get(id).map(|m| m.addr()) {
                        self.push_event(Event::MemberUp { id, addr });
                    }
                }
                MemberEvent::Removed { .. } => continue,
                MemberEvent::Suspect { id } => {
                    self.drop_jap_everywhere(id);
                    self.push_event(Event::MemberSuspect { id });
                }
                MemberEvent::Down { id } | MemberEvent::Left { id } => {
                    self.ring.remove(id);
                    self.drop_jap_everywhere(id);
                    self.push_event(Event::MemberDown { id });
                }
            }
            self.reporter.ring_changed();
        }
        while let Some(ev) = self.registry.poll_event() {
            match ev {
                RegistryEvent::TargetUp {
                    group, service, mode, ..
                } => {
                    if mode == DeliveryMode::Tunnel {
                        *self.tunnel_targets.entry(service.ip).or_default() += 1;
                    }
                    self.push_event(Event::TargetUp { group, service });
                }
                RegistryEvent::TargetDown { group, service, .. } => {
                    if let Some(n) = self.tunnel_targets.get_mut(&service.ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.tunnel_targets.remove(&service.ip);
                        }
                    }
                    self.nat.remove_where_target(service.ip, Some(service.port));
                    self.push_event(Event::TargetDown { group, service });
                }
                RegistryEvent::TargetSuspected { group, service, .. } => {
                    self.push_event(Event::TargetSuspected { group, service });
                }
            }
        }
        while let Some(ev) = self.nat.poll_event() {
            self.push_nat_event(ev);
        }
        self.reporter
            .collect(now, &mut self.registry, &self.ring, self.cfg.rap_replicas);
        // Reports addressed to ourselves (we are one of the group's RAPs) are applied directly.
        for (jap, entry) in self.reporter.take_local() {
            self.rap.handle_report(now, jap, &entry);
        }
        self.update_announce(now);
    }

    /// Whether a client address (a client packet's source, a reply's destination) is acceptable
    /// (SPEC.md §8.5); `Err` is the drop reason for a client source.
    pub(super) fn check_client(&self, a: IpAddr) -> Result<(), DropReason> {
        self.space.check(a).map_err(|r| match r {
            Refusal::Martian => DropReason::MartianSource,
            Refusal::Overlay => DropReason::OverlaySource,
        })
    }

    fn drop_jap_everywhere(&mut self, id: ProxyId) {
        let mut changes: smallvec::SmallVec<[CacheChange; 8]> = smallvec::SmallVec::new();
        let mut overflow = false;
        self.iap.remove_jap(id, |c| {
            if changes.len() < changes.inline_size() {
                changes.push(c);
            } else {
                overflow = true;
            }
        });
        for c in changes {
            self.push_cache_event(c);
        }
        if overflow {
            self.counters.events_dropped += 1;
        }
    }
}

/// Default overlay port, re-exported for drivers.
pub const DEFAULT_OVERLAY_PORT: u16 = OVERLAY_PORT;
