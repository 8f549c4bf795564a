//! `XdpFastPath`: what a user-space driver (tokio or mio) holds to run with `driver = "xdp"`.
//!
//! The driver keeps its slow path (TUN and overlay socket) exactly as it is — everything the program passes
//! reaches it unchanged — and adds three calls:
//! 1. [`XdpFastPath::on_event`] for every event it drains from `Proxy::poll_event`;
//! 2. [`XdpFastPath::on_tick`] about once a second: returns the bindings' activity, which the driver feeds to
//!    the core (`Proxy::touch_nat`) so that expiry stays the core's decision — a binding the core no longer
//!    has is evicted from the maps ([`XdpFastPath::evict`]);
//! 3. [`XdpFastPath::for_each_counter`] next to the proxy's own counters in the metrics.
//!
//! Dropping it detaches the program from every interface; nothing is pinned in bpffs.

use aya::programs::XdpMode;
use pias_state::proxy::Proxy;
use pias_state::time::Instant;

use crate::loader::{Hook, Sizes, XdpError, XdpProgram, is_veth};
use crate::maps::{CFG_ENABLED, CFG_FIB, CFG_PEER, COUNTER_NAMES, Config};
use crate::sync::{Activity, MapSync, ktime_now};

/// The program attached for one proxy, and its map sync.
#[derive(Debug)]
pub struct XdpFastPath {
    prog: XdpProgram,
    sync: MapSync,
    modes: Vec<(String, XdpMode)>,
    /// `Proxy::events_lost` when the maps were last complete.
    events_lost: u64,
}

impl XdpFastPath {
    /// Loads the program for `proxy`, fills its maps from the proxy's state, and attaches it to each of
    /// `interfaces` at `hook` (XDP: native mode, else generic with a log line; TC: ingress). Hits are routed
    /// with `bpf_fib_lookup`, which needs IP forwarding on (a proxy host has it for its TUN anyway). On the
    /// TC hook with only veths, frames sent back out of their interface enter the peer directly.
    pub fn start(
        proxy: &Proxy,
        interfaces: &[&str],
        sizes: Sizes,
        hook: Hook,
        now: Instant,
    ) -> Result<Self, XdpError> {
        let mut flags = CFG_ENABLED | CFG_FIB;
        if hook == Hook::Tc && !interfaces.is_empty() && interfaces.iter().all(|i| is_veth(i)) {
            flags |= CFG_PEER;
        }
        let mut me = Self::detached(proxy, sizes, hook, flags, now)?;
        for i in interfaces {
            let mode = me.prog.attach(i)?;
            me.modes.push((i.to_string(), mode));
        }
        Ok(me)
    }

    /// Loaded and synced but attached nowhere (`flags` as [`Config::flags`]): for tests and benchmarks with
    /// `BPF_PROG_TEST_RUN` ([`XdpFastPath::program`]).
    pub fn detached(
        proxy: &Proxy,
        sizes: Sizes,
        hook: Hook,
        flags: u8,
        now: Instant,
    ) -> Result<Self, XdpError> {
        let (prog, maps) = XdpProgram::load_hook(sizes, hook)?;
        let mut sync = MapSync::new(maps);
        sync.maps_mut()
            .config
            .set(0, Config::for_proxy(proxy, flags), 0)?;
        sync.resync(proxy, now, ktime_now());
        Ok(XdpFastPath {
            prog,
            sync,
            modes: Vec::new(),
            events_lost: proxy.events_lost(),
        })
    }

    /// The interfaces attached and the mode each got.
    pub fn modes(&self) -> &[(String, XdpMode)] {
        &self.modes
    }

    pub fn program(&self) -> &XdpProgram {
        &self.prog
    }

    pub fn sync(&self) -> &MapSync {
        &self.sync
    }

    /// Mirrors one of the proxy's events into the maps.
    pub fn on_event(&mut self, proxy: &Proxy, ev: &pias_state::proxy::Event, now: Instant) {
        self.sync.apply(proxy, ev, now, ktime_now());
    }

    /// Periodic work: a full resync if the proxy lost events (any of its queues) since the last tick, TCP
    /// bindings the core saw established opened to the fast path, and the activity the driver must feed
    /// back to the core (a binding it no longer has goes to [`XdpFastPath::evict`]).
    pub fn on_tick(&mut self, proxy: &Proxy, now: Instant) -> Vec<Activity> {
        let lost = proxy.events_lost();
        if lost != self.events_lost {
            self.events_lost = lost;
            self.sync.resync(proxy, now, ktime_now());
        }
        self.sync.upgrade_tcp(proxy.nat());
        self.sync.poll_activity()
    }

    /// Removes the entries of a binding the core no longer has (`Proxy::touch_nat` returned false): its
    /// removal event was lost.
    pub fn evict(&mut self, id: pias_state::nat::BindingId) {
        self.sync.evict(id);
    }

    /// The program's counters (summed over CPUs) and MapSync's, for the metrics endpoint.
    pub fn for_each_counter(&self, mut f: impl FnMut(&'static str, u64)) {
        if let Ok(c) = self.sync.maps().counters() {
            for (name, v) in COUNTER_NAMES.iter().zip(c) {
                f(name, v);
            }
        }
        let s = self.sync.counters();
        f("xdp_sync_groups_installed", s.groups_installed);
        f("xdp_sync_groups_removed", s.groups_removed);
        f("xdp_sync_nat_installed", s.nat_installed);
        f("xdp_sync_nat_removed", s.nat_removed);
        f("xdp_sync_nat_slow_only", s.nat_slow_only);
        f("xdp_sync_nat_gone", s.nat_gone);
        f("xdp_sync_map_full", s.map_full);
        f("xdp_sync_map_errors", s.map_errors);
    }
}

/// The hook the user-space drivers call (`driver_common::FastPath`): activity is fed back with
/// `Proxy::touch_nat`, so expiry stays the core's decision; a binding it no longer has leaves the maps.
impl driver_common::FastPath for XdpFastPath {
    fn on_event(&mut self, proxy: &Proxy, ev: &pias_state::proxy::Event, now: Instant) {
        XdpFastPath::on_event(self, proxy, ev, now);
    }

    fn on_tick(&mut self, proxy: &mut Proxy, now: Instant) {
        for a in XdpFastPath::on_tick(self, proxy, now) {
            if !proxy.touch_nat(a.id, a.dir, a.packets, a.bytes, now) {
                self.evict(a.id);
            }
        }
    }

    fn for_each_counter(&self, f: &mut dyn FnMut(&'static str, u64)) {
        XdpFastPath::for_each_counter(self, f);
    }
}
