//! `MapSync`: applies the core's events to the maps, so that the program's hits are exactly the core's
//! decisions, and feeds the program's activity back to the core.
//!
//! MapSync decides nothing: every event carries, or names where to read, what it writes
//! (`pias_state::proxy::Event`); all it adds is what the program can serve. Contracts:
//! - A group entry mirrors `Proxy::cache_entry(group)` when it is resolved: the JAPs sorted by id (the slot
//!   table's indexes) with the overlay addresses the core sends to (`Proxy::jap_addr`), the 251 slots, and a
//!   deadline at the entry's expiry (after it the program passes packets to the core, which re-resolves).
//!   Negative and pending entries are absent. The core re-announces an entry when a JAP's address changes.
//! - NAT entries exist for TCP and UDP bindings the core delivers by NAT or to an IPv4 tunnel-mode target
//!   (the event's [`Delivery`]); a TCP binding serves only data segments, and only once the core saw it
//!   established ([`MapSync::refresh`]). Bindings whose packets the core replicates stay with it.
//! - A binding the core no longer has when its activity is fed back is removed from the maps (counted
//!   [`SyncCounters::nat_gone`]); lost events (`Proxy::events_lost`) call for a [`MapSync::resync`].
//! - Maps are bounded; an insert into a full map leaves that entry to the slow path and is counted
//!   ([`SyncCounters::map_full`]) — never a silent drop.

use std::collections::{HashMap as StdMap, HashSet};
use std::net::SocketAddr;

use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr};
use pias_state::iap::CacheEntry;
use pias_state::nat::{BindingId, Direction, NatEvent, NatTable, TcpState};
use pias_state::proxy::{Delivery, Event, Proxy};
use pias_state::time::Instant;

use crate::loader::Maps;
use crate::maps::{Flow, Group, Jap, MAX_JAPS, NAT_TCP_FAST, NAT_TUNNEL, Nat, SLOTS, SockAddr, Ta};

/// MapSync's own counters (they join the program's in the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounters {
    pub groups_installed: u64,
    pub groups_removed: u64,
    pub nat_installed: u64,
    pub nat_removed: u64,
    /// Bindings the program cannot serve, left to the slow path (replicated, IPv6 tunnel targets, ICMP).
    pub nat_slow_only: u64,
    /// Bindings removed because the core no longer had them when their activity was fed back (a removal
    /// the sync never saw).
    pub nat_gone: u64,
    /// Entries that did not fit a full map: served by the slow path instead.
    pub map_full: u64,
    /// Other map update errors (also leave the entry to the slow path).
    pub map_errors: u64,
}

/// Activity of one binding seen by the program since the last [`MapSync::poll_activity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub id: BindingId,
    pub dir: Direction,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    forward: FlowKey,
    reverse: FlowKey,
    tcp: bool,
    fast: bool,
    /// Tunnel mode: where the core sends the frames; only the forward entry exists.
    tunnel: Option<core::net::SocketAddrV4>,
    seen: [(u64, u64); 2],
}

/// Mirrors the core's decisions into the maps. See the module documentation.
#[derive(Debug)]
pub struct MapSync {
    maps: Maps,
    /// Groups with an entry in the map.
    groups: HashSet<TransportAddr>,
    bindings: StdMap<BindingId, Binding>,
    members: StdMap<ProxyId, SocketAddr>,
    counters: SyncCounters,
}

fn is_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`.
pub fn ktime_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

impl MapSync {
    pub fn new(maps: Maps) -> MapSync {
        MapSync {
            maps,
            groups: HashSet::new(),
            bindings: StdMap::new(),
            members: StdMap::new(),
            counters: SyncCounters::default(),
        }
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    fn note_err(&mut self, e: &aya::maps::MapError) {
        if is_full(e) {
            self.counters.map_full += 1;
        } else {
            self.counters.map_errors += 1;
        }
    }

    /// Applies one of the proxy's events. `now` is the core's clock, `ktime` the same instant on
    /// `CLOCK_MONOTONIC` (see [`ktime_now`]).
    pub fn apply(&mut self, proxy: &Proxy, ev: &Event, now: Instant, ktime: u64) {
        match *ev {
            Event::CacheInstalled { group } => self.install_group(
                &group,
                proxy.cache_entry(&group),
                proxy.id(),
                |id| proxy.jap_addr(id),
                now,
                ktime,
            ),
            Event::CacheRemoved { group } => self.remove_group(&group),
            Event::NatCreated {
                id,
                forward,
                reverse,
                delivery,
            } => self.install_binding(id, forward, reverse, delivery),
            Event::NatRemoved {
                id, forward, reverse, ..
            } => self.remove_binding(id, &forward, &reverse),
            Event::MemberUp { id, addr } => self.member_up(id, addr),
            Event::MemberSuspect { .. } => {} // its frames are still accepted (SPEC.md §4.1): stays
            Event::MemberDown { id } => self.member_down(id),
            Event::TargetUp { .. }
            | Event::TargetDown { .. }
            | Event::TargetSuspected { .. }
            | Event::LoadChanged { .. } => {}
            // The routes into the TUN steer what reaches the program; the loop moves them (SPEC.md §7.7).
            Event::AnnounceChanged { .. } => {}
        }
    }

    /// Rebuilds every map from the proxy's state (at start, when the program is attached to a running
    /// proxy, or after the proxy lost events: `Proxy::events_lost`). Every entry is removed, then what the
    /// core has is installed as [`MapSync::apply`] would from the events (`Proxy::state_events`).
    pub fn resync(&mut self, proxy: &Proxy, now: Instant, ktime: u64) {
        let groups: Vec<TransportAddr> = self.groups.iter().copied().collect();
        for g in groups {
            self.remove_group(&g);
        }
        for (_, b) in std::mem::take(&mut self.bindings) {
            self.remove_entries(&b.forward, &b.reverse);
        }
        let members: Vec<ProxyId> = self.members.keys().copied().collect();
        for id in members {
            self.member_down(id);
        }
        self.install_filter(proxy.overlay_space());
        for ev in proxy.state_events() {
            self.apply(proxy, &ev, now, ktime);
        }
        self.upgrade_tcp(proxy.nat());
    }

    /// Writes the source filter (SPEC.md §8.5): the martian ranges and the core's overlay space. The space
    /// is fixed for a proxy's life, so entries are only ever added (rewriting one is harmless).
    pub fn install_filter(&mut self, space: &pias_state::filter::OverlaySpace) {
        for (addr, len, why) in crate::maps::filter_entries(space) {
            if let Err(e) = self
                .maps
                .filter
                .insert(&crate::maps::filter_key(addr, len), why, 0)
            {
                self.note_err(&e);
            }
        }
    }

    /// Installs (or replaces) a group's entry from the core's cache entry; removes it when the entry is not
    /// resolved. `addr_of` names each JAP's overlay address (`me` is marked local: the slow path delivers).
    pub fn install_group(
        &mut self,
        group: &TransportAddr,
        entry: Option<&CacheEntry>,
        me: ProxyId,
        addr_of: impl Fn(ProxyId) -> Option<SocketAddr>,
        now: Instant,
        ktime: u64,
    ) {
        let Some((e, table)) = entry.and_then(|e| e.table().map(|t| (e, t))) else {
            self.remove_group(group);
            return;
        };
        let mut g = Group {
            deadline_ns: ktime
                .saturating_add(e.expires().saturating_since(now).as_nanos() as u64)
                .max(1),
            ..Group::default()
        };
        let ids = table.ids();
        g.n_japs = ids.len().min(MAX_JAPS) as u8;
        for (j, id) in ids.iter().take(MAX_JAPS).enumerate() {
            // An unknown address leaves family 0: the program passes that JAP's flows to the core.
            if let Some(a) = addr_of(*id) {
                g.japs[j] = Jap::at(a, *id == me);
            } else if *id == me {
                g.japs[j].flags = crate::maps::JAP_LOCAL;
            }
        }
        g.slots[..SLOTS].copy_from_slice(table.slots());
        match self.maps.groups.insert(Ta::from(group), g, 0) {
            Ok(()) => {
                self.counters.groups_installed += 1;
                self.groups.insert(*group);
            }
            Err(e) => {
                self.note_err(&e);
                self.remove_group(group);
            }
        }
    }

    pub fn remove_group(&mut self, group: &TransportAddr) {
        if self.groups.remove(group) {
            self.counters.groups_removed += 1;
        }
        let _ = self.maps.groups.remove(&Ta::from(group));
    }

    /// Mirrors a NAT table's event (for a table driven without a `Proxy`); `d` is how its owner delivers a
    /// created binding's packets.
    pub fn apply_nat(&mut self, ev: &NatEvent, d: Delivery) {
        match *ev {
            NatEvent::Created {
                id, forward, reverse, ..
            } => self.install_binding(id, forward, reverse, d),
            NatEvent::Removed {
                id, forward, reverse, ..
            } => self.remove_binding(id, &forward, &reverse),
        }
    }

    /// Installs a binding the core delivers as `d`, if the program can serve it: TCP and UDP (not ICMP), by
    /// NAT or to an IPv4 tunnel-mode target — not replicated (the program sends one packet for one).
    pub fn install_binding(&mut self, id: BindingId, forward: FlowKey, reverse: FlowKey, d: Delivery) {
        let tcp = forward.proto == IpProtocol::Tcp;
        let tunnel = match d {
            Delivery::Nat => None,
            Delivery::Tunnel(SocketAddr::V4(a)) => Some(a),
            Delivery::Replicate | Delivery::Tunnel(SocketAddr::V6(_)) => {
                self.counters.nat_slow_only += 1;
                return;
            }
        };
        if !(tcp || forward.proto == IpProtocol::Udp) {
            self.counters.nat_slow_only += 1;
            return;
        }
        let b = Binding {
            forward,
            reverse,
            tcp,
            fast: !tcp,
            tunnel,
            seen: [(0, 0); 2],
        };
        if self.write_binding(&b) {
            self.counters.nat_installed += 1;
            self.bindings.insert(id, b);
        }
    }

    /// Removes a binding's entries (those of its keys, whether installed or not).
    pub fn remove_binding(&mut self, id: BindingId, forward: &FlowKey, reverse: &FlowKey) {
        if self.bindings.remove(&id).is_some() {
            self.counters.nat_removed += 1;
        }
        self.remove_entries(forward, reverse);
    }

    /// Removes a binding the core no longer has (`Proxy::touch_nat` or `NatTable::touch` said so): its
    /// removal was never seen, so its entries would otherwise stay. Counted [`SyncCounters::nat_gone`].
    pub fn evict(&mut self, id: BindingId) {
        if let Some(b) = self.bindings.remove(&id) {
            self.counters.nat_gone += 1;
            self.remove_entries(&b.forward, &b.reverse);
        }
    }

    fn remove_entries(&mut self, forward: &FlowKey, reverse: &FlowKey) {
        let _ = self.maps.nat_fwd.remove(&Flow::from(forward));
        let _ = self.maps.nat_rev.remove(&Flow::from(reverse));
    }

    fn write_binding(&mut self, b: &Binding) -> bool {
        let flags = if b.fast { NAT_TCP_FAST } else { 0 };
        if let Some(t) = b.tunnel {
            let to = FlowKey {
                dst: core::net::IpAddr::V4(*t.ip()),
                dst_port: t.port(),
                ..b.forward
            };
            let v = Nat::to_flow(&to, flags | NAT_TUNNEL);
            return match self.maps.nat_fwd.insert(Flow::from(&b.forward), v, 0) {
                Ok(()) => true,
                Err(e) => {
                    self.note_err(&e);
                    false
                }
            };
        }
        // Forward: client → group becomes pool → target; reverse: target → pool becomes group → client.
        let fwd = Nat::to_flow(&b.reverse.reversed(), flags);
        let rev = Nat::to_flow(&b.forward.reversed(), flags);
        if let Err(e) = self.maps.nat_fwd.insert(Flow::from(&b.forward), fwd, 0) {
            self.note_err(&e);
            return false;
        }
        if let Err(e) = self.maps.nat_rev.insert(Flow::from(&b.reverse), rev, 0) {
            self.note_err(&e);
            let _ = self.maps.nat_fwd.remove(&Flow::from(&b.forward));
            return false;
        }
        true
    }

    pub fn member_up(&mut self, id: ProxyId, addr: SocketAddr) {
        if let Some(old) = self.members.insert(id, addr)
            && old != addr
        {
            let _ = self.maps.members.remove(&SockAddr::from(old));
        }
        if let Err(e) = self.maps.members.insert(SockAddr::from(addr), id.0, 0) {
            self.note_err(&e);
        }
    }

    pub fn member_down(&mut self, id: ProxyId) {
        if let Some(a) = self.members.remove(&id) {
            let _ = self.maps.members.remove(&SockAddr::from(a));
        }
    }

    /// Reads what the program counted per binding since the last call, for `NatTable::touch` (expiry stays
    /// the core's decision). Bounded by the number of bindings.
    pub fn poll_activity(&mut self) -> Vec<Activity> {
        let mut out = Vec::new();
        for (id, b) in self.bindings.iter_mut() {
            for (i, (map, key, dir)) in [
                (&self.maps.nat_fwd, b.forward, Direction::Forward),
                (&self.maps.nat_rev, b.reverse, Direction::Reverse),
            ]
            .into_iter()
            .enumerate()
            {
                if let Ok(v) = map.get(&Flow::from(&key), 0) {
                    let (p0, b0) = b.seen[i];
                    if v.packets > p0 {
                        out.push(Activity {
                            id: *id,
                            dir,
                            packets: v.packets - p0,
                            bytes: v.bytes.saturating_sub(b0),
                        });
                        b.seen[i] = (v.packets, v.bytes);
                    }
                }
            }
        }
        out
    }

    /// Feeds activity to a NAT table (a binding it no longer has is evicted) and lets TCP bindings the core
    /// saw established take the fast path.
    pub fn refresh(&mut self, nat: &mut NatTable, now: Instant) {
        for a in self.poll_activity() {
            if !nat.touch(a.id, a.dir, a.packets, a.bytes, now) {
                self.evict(a.id);
            }
        }
        self.upgrade_tcp(nat);
    }

    /// Sets the fast flag of TCP bindings that are established in `nat` (and clears it otherwise).
    pub fn upgrade_tcp(&mut self, nat: &NatTable) {
        let ids: Vec<BindingId> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.tcp)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let est = nat.get(id).is_some_and(|x| x.tcp == Some(TcpState::Established));
            let Some(b) = self.bindings.get_mut(&id) else {
                continue;
            };
            if b.fast != est {
                b.fast = est;
                let b = *b;
                for (map, key) in [
                    (&mut self.maps.nat_fwd, b.forward),
                    (&mut self.maps.nat_rev, b.reverse),
                ] {
                    let k = Flow::from(&key);
                    if let Ok(mut v) = map.get(&k, 0) {
                        v.flags = if est {
                            v.flags | NAT_TCP_FAST
                        } else {
                            v.flags & !NAT_TCP_FAST
                        };
                        let _ = map.insert(k, v, 0);
                    }
                }
            }
        }
    }
}
