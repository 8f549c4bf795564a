//! A deterministic discrete-event network for PIAS.
//!
//! It drives the real [`Proxy`] and [`TargetAgent`] state machines with real encoded packets: every overlay
//! datagram is a Geneve frame the proxies wrote, every client and target packet a real IP packet. What it
//! models instead of a kernel:
//! - **Positions and latency**: every node sits on a plane; one-way latency is the distance in milliseconds
//!   (plus 0.1 ms). Overlay datagrams may be lost, duplicated and delayed by a random jitter (which reorders
//!   them), all from one seeded generator.
//! - **Anycast**: a host's packets to an anycast address reach the nearest live proxy (routing converges
//!   instantly unless a host is pinned to an IAP with [`Sim::pin_iap`], which models a routing flap).
//! - **Hosts**: clients (record what they receive) and targets (a UDP echo service that prefixes its name,
//!   a minimal TCP responder, and a real `TargetAgent`).
//! - **Faults**: proxy crashes and restarts, target kills, partitions between sets of proxies.
//!
//! - **Topologies** (optional, [`Sim::set_topology`]): a GT-ITM-style transit-stub graph or a latency matrix
//!   from a file ([`topology`]); proxies and hosts added with [`Sim::add_proxy_at`], [`Sim::add_client_at`] and
//!   [`Sim::add_target_at`] attach to its nodes and their latency is the graph's shortest path plus their access
//!   links. Anycast then reaches the nearest proxy by the topology's routing, or, for a chosen fraction of hosts
//!   ([`Sim::set_anycast_detour`]), a policy-induced non-nearest one.
//!
//! Timers live in a heap keyed by (deadline, node) with lazy invalidation, so a step costs O(log n) in the
//! number of proxies, and overlay, pool and host addresses are found by hash: thousands of proxies run.
//! The scale experiments of `pias sim` are in [`experiments`].
//!
//! Same seed, same calls: same run, bit for bit (a test checks it).

pub mod experiments;
mod fabric;
mod hosts;
pub mod topology;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use pias_proto::auth::MasterKey;
use pias_proto::build::{Segment, tcp_segment, udp_packet};
use pias_proto::control::{DeliveryMode, REGISTRATION_PORT};
use pias_proto::geneve::UDP_PORT as OVERLAY_PORT;
use pias_proto::packet::IpPacket;
use pias_proto::tcp::TcpFlags;
use pias_proto::tunnel::{DataFrame, DataHeader, flags};
use pias_proto::{IpProtocol, ProxyId, TransportAddr};
use pias_state::Instant;
use pias_state::agent::{AgentConfig, TargetAgent};
use pias_state::proxy::{Event, HEADROOM, PacketBuf, Proxy, ProxyConfig, Verdict};
use pias_state::seal::Dest;
pub use topology::{Attach, Topology};

/// The anycast prefix groups live in (IPv4).
pub const ANYCAST_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 0);
/// The registration anycast address (IPv4).
pub const REGISTRATION_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 255, 1);
/// The registration anycast address (IPv6).
pub const REGISTRATION_V6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0xffff);
/// The UDP port target agents send from.
pub const AGENT_PORT: u16 = 7000;

/// Link and fault model.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub seed: u64,
    /// Probability that an overlay datagram is lost.
    pub loss: f64,
    /// Probability that an overlay datagram is delivered twice.
    pub duplicate: f64,
    /// Extra uniform random delay per overlay datagram, up to this (reorders datagrams).
    pub jitter: Duration,
    /// Per-datagram delay jitter proportional to the path's latency (real-world RTT noise; see [`Jitter`]).
    pub jitter_model: Jitter,
}

/// Per-datagram latency jitter, relative to the path's one-way latency, drawn from the seeded generator
/// (deterministic for a seed). Real round-trip times are noisy (queueing, scheduling); this is what makes
/// network coordinates move at rest.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// Latency exactly as the topology gives it.
    #[default]
    None,
    /// Latency × (1 + u), u uniform in [-frac, +frac] (frac clamped to 0..=0.9).
    Uniform { frac: f64 },
    /// Latency × (1 + frac × (X − 1)), X Pareto with scale 1 and shape `alpha` (> 1): most datagrams see a
    /// little extra delay, a few see many times the latency (heavy tail; the extra delay is capped at 1 s).
    Pareto { frac: f64, alpha: f64 },
}

impl Jitter {
    /// Parses `none`, `uniform:FRAC` or `pareto:FRAC:ALPHA` (as in scenario files).
    pub fn parse(s: &str) -> Result<Jitter, String> {
        let parts: Vec<&str> = s.trim().split(':').map(str::trim).collect();
        let num = |x: &str| -> Result<f64, String> {
            x.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("jitter: `{x}` is not a non-negative number"))
        };
        match parts.as_slice() {
            ["none"] | [""] => Ok(Jitter::None),
            ["uniform", f] => Ok(Jitter::Uniform { frac: num(f)? }),
            ["pareto", f, a] => {
                let alpha = num(a)?;
                if alpha <= 1.0 {
                    return Err("jitter: pareto alpha must be above 1".into());
                }
                Ok(Jitter::Pareto { frac: num(f)?, alpha })
            }
            _ => Err(format!(
                "jitter: `{s}` is not none, uniform:FRAC or pareto:FRAC:ALPHA"
            )),
        }
    }

    /// The jittered latency for base latency `d`, using uniform draw `u` in [0, 1).
    pub fn apply(self, d: Duration, u: f64) -> Duration {
        let base = d.as_secs_f64();
        let t = match self {
            Jitter::None => return d,
            Jitter::Uniform { frac } => base * (1.0 + frac.min(0.9) * (2.0 * u - 1.0)),
            Jitter::Pareto { frac, alpha } => {
                // Inverse CDF: X = (1 − u)^(−1/α) ≥ 1.
                let x = (1.0 - u).max(1e-12).powf(-1.0 / alpha);
                base + (frac * (x - 1.0) * base).min(1.0)
            }
        };
        Duration::from_secs_f64(t.max(0.0))
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            loss: 0.0,
            duplicate: 0.0,
            jitter: Duration::ZERO,
            jitter_model: Jitter::None,
        }
    }
}

/// A host's identity in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

/// Where a packet was seen, for path assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A client sent it to its IAP.
    ClientToProxy { proxy: ProxyId },
    /// An overlay data frame between proxies, with its flags.
    Overlay { from: ProxyId, to: ProxyId, flags: u8 },
    /// A proxy delivered it to a target host.
    ProxyToTarget { proxy: ProxyId, target: HostId },
}

/// An overlay datagram the network carried (see [`Sim::capture_overlay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// The UDP payload: a Geneve frame.
    pub bytes: Vec<u8>,
}

/// A packet a client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub at: Instant,
    pub from: SocketAddr,
    pub proto: IpProtocol,
    pub payload: Vec<u8>,
    pub tcp_flags: u16,
    pub mss: Option<u16>,
}

/// What a proxy's membership said about another proxy (see [`Sim::watch_members`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberNews {
    Up,
    Suspect,
    Down,
}

/// One membership event of one proxy, logged while [`Sim::watch_members`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberNote {
    pub at: Instant,
    /// Index of the proxy that emitted it.
    pub by: usize,
    /// The proxy it is about.
    pub about: ProxyId,
    pub news: MemberNews,
}

#[derive(Debug)]
struct SimProxy {
    id: ProxyId,
    pos: (f64, f64),
    at: Option<Attach>,
    cfg: ProxyConfig,
    proxy: Option<Proxy>,
    incarnation: u32,
    /// Its anycast routes are withdrawn ([`Sim::withdraw_proxy`]); cleared by a restart.
    withdrawn: bool,
}

#[derive(Debug)]
enum HostKind {
    Client,
    Target {
        service: SocketAddr,
        agent: Option<Box<TargetAgent>>,
        alive: bool,
    },
}

#[derive(Debug)]
struct Host {
    name: String,
    ip: IpAddr,
    pos: (f64, f64),
    at: Option<Attach>,
    pinned_iap: Option<usize>,
    /// Anycast route cache: (routing epoch, proxy).
    route: Cell<Option<(u64, usize)>>,
    kind: HostKind,
    received: Vec<Received>,
}

#[derive(Debug)]
enum Delivery {
    Overlay {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    HostToProxy {
        to: usize,
        bytes: Vec<u8>,
    },
    ToHost {
        to: HostId,
        bytes: Vec<u8>,
    },
}

/// The simulation.
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    now: Instant,
    rng: pias_state::rng::SplitMix,
    seq: u64,
    master: MasterKey,
    proxies: Vec<SimProxy>,
    hosts: Vec<Host>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    slots: Vec<Option<Delivery>>,
    free_slots: Vec<usize>,
    partition: Option<(BTreeSet<usize>, BTreeSet<usize>)>,
    trace: Vec<(u64, Hop)>,
    /// Overlay datagrams sent, per proxy index (for load measurements).
    pub overlay_sent: Vec<u64>,
    /// Packets the network could not deliver (no route).
    pub unroutable: u64,
    /// Overlay bytes sent (UDP payload), per proxy index.
    pub overlay_bytes: Vec<u64>,
    capture: Option<Vec<Captured>>,
    topology: Option<Arc<Topology>>,
    by_overlay: HashMap<SocketAddr, usize>,
    /// Target hosts whose service hangs (receives, never answers) while their agent runs.
    hung: std::collections::BTreeSet<usize>,
    by_pool: HashMap<IpAddr, usize>,
    by_host_ip: HashMap<IpAddr, usize>,
    /// Timer heap: (deadline, kind 0 = proxy / 1 = agent, index); an entry is live while it equals the armed
    /// deadline of its node.
    timers: BinaryHeap<Reverse<(Instant, u8, usize)>>,
    proxy_armed: Vec<Option<Instant>>,
    agent_armed: Vec<Option<Instant>>,
    timers_dirty: bool,
    /// Bumped whenever the set of running proxies changes (anycast routes are recomputed).
    epoch: u64,
    detour: f64,
    tracing: bool,
    member_log: Option<Vec<MemberNote>>,
}

/// A simulated proxy's secrets: derived from its seed and incarnation (a restarted proxy draws new ones, as
/// a driver does), so a run is reproducible; never how a driver gets them (SPEC.md §8.1).
fn sim_secrets(cfg: &pias_state::proxy::ProxyConfig) -> pias_state::secrets::Secrets {
    pias_state::secrets::Secrets::from_seed_for_tests(cfg.seed ^ (u64::from(cfg.incarnation) << 48))
}

/// The 8-byte id at the start of a UDP payload, which tests use to follow a packet.
fn payload_id(ip: &IpPacket<&[u8]>) -> Option<u64> {
    let l4 = ip.l4_bytes();
    let p = l4.get(
        if ip.l4_protocol() == IpProtocol::Udp {
            8
        } else {
            20
        }..,
    )?;
    let b: [u8; 8] = p.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

impl Sim {
    /// An empty network. `master` is the operator key every proxy and agent derives from.
    pub fn new(cfg: SimConfig, master: MasterKey) -> Self {
        Sim {
            cfg,
            now: Instant::from_secs(1),
            rng: pias_state::rng::SplitMix::new(cfg.seed ^ 0x5349_4d00_0000_0001),
            seq: 0,
            master,
            proxies: Vec::new(),
            hosts: Vec::new(),
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            partition: None,
            trace: Vec::new(),
            overlay_sent: Vec::new(),
            unroutable: 0,
            overlay_bytes: Vec::new(),
            capture: None,
            topology: None,
            by_overlay: HashMap::new(),
            hung: std::collections::BTreeSet::new(),
            by_pool: HashMap::new(),
            by_host_ip: HashMap::new(),
            timers: BinaryHeap::new(),
            proxy_armed: Vec::new(),
            agent_armed: Vec::new(),
            timers_dirty: false,
            epoch: 0,
            detour: 0.0,
            tracing: true,
            member_log: None,
        }
    }

    /// Uses `topo` for the latency between nodes added with [`Sim::add_proxy_at`], [`Sim::add_client_at`]
    /// and [`Sim::add_target_at`] (nodes added by position keep the plane).
    pub fn set_topology(&mut self, topo: Topology) {
        self.topology = Some(Arc::new(topo));
        self.epoch += 1;
    }

    /// The topology, if one is set.
    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_deref()
    }

    /// A fraction of hosts (chosen by a hash of the seed and the host) whose anycast route goes, by routing
    /// policy, to one of the 2nd to 4th nearest proxies instead of the nearest.
    pub fn set_anycast_detour(&mut self, fraction: f64) {
        self.detour = fraction.clamp(0.0, 1.0);
        self.epoch += 1;
    }

    /// Turns the per-packet path trace ([`Sim::path`]) on or off (off saves memory in long runs).
    /// Changes the latency jitter model from now on (datagrams already in flight keep their delay).
    pub fn set_jitter(&mut self, j: Jitter) {
        self.cfg.jitter_model = j;
    }

    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Logs every proxy's member events (Up, Suspect, Down) from now on (`true`), or stops (`false`).
    pub fn watch_members(&mut self, on: bool) {
        self.member_log = if on { Some(Vec::new()) } else { None };
    }

    /// Takes the member events logged since the last call.
    pub fn take_member_log(&mut self) -> Vec<MemberNote> {
        self.member_log.as_mut().map(core::mem::take).unwrap_or_default()
    }

    /// The index of the proxy with this id.
    pub fn proxy_index(&self, id: ProxyId) -> Option<usize> {
        let i = (id.0 as usize).checked_sub(1)?;
        (i < self.proxies.len()).then_some(i)
    }

    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The overlay address of proxy `i` (index from 0; its id is `i + 1`).
    pub fn overlay_addr(i: usize) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)),
            6081,
        )
    }

    /// The NAT pool of proxy `i`: one IPv4 and one IPv6 address.
    pub fn pool(i: usize) -> [IpAddr; 2] {
        [
            IpAddr::V4(Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, i as u16 + 1)),
        ]
    }

    /// A group address in the anycast prefix.
    pub fn group(n: u8, port: u16, proto: IpProtocol) -> TransportAddr {
        TransportAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, n)), port, proto)
    }

    /// An IPv6 group address.
    pub fn group_v6(n: u16, port: u16, proto: IpProtocol) -> TransportAddr {
        TransportAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, n)),
            port,
            proto,
        )
    }

    /// Adds a proxy at `pos`; `tune` may change its configuration. Proxy 0 is every proxy's seed.
    pub fn add_proxy(&mut self, pos: (f64, f64), tune: impl FnOnce(&mut ProxyConfig)) -> usize {
        self.add_proxy_placed(pos, None, tune)
    }

    /// Adds a proxy attached to a node of the topology (see [`Sim::set_topology`]).
    pub fn add_proxy_at(&mut self, at: Attach, tune: impl FnOnce(&mut ProxyConfig)) -> usize {
        self.add_proxy_placed((0.0, 0.0), Some(at), tune)
    }

    fn add_proxy_placed(
        &mut self,
        pos: (f64, f64),
        at: Option<Attach>,
        tune: impl FnOnce(&mut ProxyConfig),
    ) -> usize {
        let i = self.proxies.len();
        let id = ProxyId(i as u32 + 1);
        let mut cfg = ProxyConfig::new(
            id,
            Self::overlay_addr(i),
            self.master.clone(),
            Self::pool(i).to_vec(),
            vec![IpAddr::V4(REGISTRATION_V4), IpAddr::V6(REGISTRATION_V6)],
        );
        cfg.seed = self.cfg.seed.wrapping_mul(1000).wrapping_add(i as u64);
        if i > 0 {
            cfg.membership.seeds = vec![Self::overlay_addr(0)];
        }
        tune(&mut cfg);
        let incarnation = 1;
        cfg.incarnation = incarnation;
        let proxy = Proxy::new(cfg.clone(), &sim_secrets(&cfg), self.now).ok();
        self.by_overlay.entry(cfg.overlay_addr).or_insert(i);
        for a in &cfg.nat.pool {
            self.by_pool.entry(*a).or_insert(i);
        }
        self.proxies.push(SimProxy {
            id,
            pos,
            at,
            cfg,
            proxy,
            incarnation,
            withdrawn: false,
        });
        self.overlay_sent.push(0);
        self.overlay_bytes.push(0);
        self.proxy_armed.push(None);
        self.epoch += 1;
        self.arm_proxy(i);
        i
    }

    fn arm_proxy(&mut self, i: usize) {
        let t = self.proxies[i].proxy.as_ref().and_then(|p| p.poll_timeout());
        if t != self.proxy_armed[i] {
            self.proxy_armed[i] = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, 0, i)));
            }
        }
    }

    /// The proxy at index `i`, if running.
    pub fn proxy(&self, i: usize) -> Option<&Proxy> {
        self.proxies.get(i).and_then(|p| p.proxy.as_ref())
    }

    /// The proxy at index `i`, mutable (benchmarks drive it directly).
    pub fn proxy_mut(&mut self, i: usize) -> Option<&mut Proxy> {
        self.timers_dirty = true;
        self.proxies.get_mut(i).and_then(|p| p.proxy.as_mut())
    }

    /// Records every overlay datagram the network carries from now on (`true`), or stops (`false`).
    pub fn capture_overlay(&mut self, on: bool) {
        self.capture = if on { Some(Vec::new()) } else { None };
    }

    /// The overlay datagrams captured since [`Sim::capture_overlay`].
    pub fn captured(&self) -> &[Captured] {
        self.capture.as_deref().unwrap_or(&[])
    }

    /// Number of proxies (running or not).
    pub fn proxy_count(&self) -> usize {
        self.proxies.len()
    }

    /// The hops a packet with this payload id took.
    pub fn path(&self, id: u64) -> Vec<Hop> {
        self.trace
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, h)| *h)
            .collect()
    }

    /// Crashes proxy `i`: it stops at once, its state is lost, routing withdraws its anycast routes.
    pub fn crash_proxy(&mut self, i: usize) {
        if let Some(p) = self.proxies.get_mut(i) {
            p.proxy = None;
            self.epoch += 1;
            self.arm_proxy(i);
        }
    }

    /// Starts a graceful leave of proxy `i` (SPEC.md §7.6): the core floods Left and answers its targets
    /// Draining. Its driver withdraws its anycast routes at the same moment, but routing takes time to
    /// converge: call [`Sim::withdraw_proxy`] when the network should stop leading anycast packets to it.
    /// The driver stops it `drain_time` later: call [`Sim::crash_proxy`] then.
    pub fn leave_proxy(&mut self, i: usize) {
        let now = self.now;
        if let Some(p) = self.proxies.get_mut(i).and_then(|p| p.proxy.as_mut()) {
            p.leave(now);
            self.drain_proxy(i);
            self.arm_proxy(i);
        }
    }

    /// Routing no longer leads anycast packets to proxy `i` (its pool addresses still do).
    pub fn withdraw_proxy(&mut self, i: usize) {
        if let Some(p) = self.proxies.get_mut(i) {
            p.withdrawn = true;
            self.epoch += 1;
        }
    }

    /// Whether proxy `i` runs and announces the anycast prefix.
    fn announces(&self, i: usize) -> bool {
        self.proxies
            .get(i)
            .is_some_and(|p| p.proxy.is_some() && !p.withdrawn)
    }

    /// Restarts a crashed proxy with a higher incarnation.
    pub fn restart_proxy(&mut self, i: usize) {
        let now = self.now;
        if let Some(p) = self.proxies.get_mut(i) {
            p.incarnation += 1;
            p.withdrawn = false;
            p.cfg.incarnation = p.incarnation;
            p.proxy = Proxy::new(p.cfg.clone(), &sim_secrets(&p.cfg), now).ok();
            self.epoch += 1;
            self.arm_proxy(i);
        }
    }

    fn trace_push(&mut self, t: (u64, Hop)) {
        if self.tracing {
            self.trace.push(t);
        }
    }

    fn rearm_all(&mut self) {
        if self.timers_dirty {
            self.timers_dirty = false;
            for i in 0..self.proxies.len() {
                self.arm_proxy(i);
            }
        }
    }

    /// Runs until `d` of simulated time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.rearm_all();
        self.start_agents();
        loop {
            let next = self.next_event_time();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
    }

    /// Runs until `cond` holds or `limit` passes; returns the time it took, or `None`.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> Option<Duration> {
        let start = self.now;
        let end = self.now + limit;
        self.rearm_all();
        self.start_agents();
        loop {
            if cond(self) {
                return Some(self.now - start);
            }
            let next = self.next_event_time();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.step();
                }
                _ => {
                    self.now = end;
                    return if cond(self) { Some(self.now - start) } else { None };
                }
            }
        }
    }

    fn next_timer(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, kind, i))) = self.timers.peek() {
            let armed = if kind == 0 {
                self.proxy_armed[i]
            } else {
                self.agent_armed[i]
            };
            if armed == Some(t) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    fn next_event_time(&mut self) -> Option<Instant> {
        let q = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let t = self.next_timer();
        [q, t].into_iter().flatten().min()
    }

    fn step(&mut self) {
        let now = self.now;
        // Deliveries due now.
        while let Some(Reverse((t, _, slot))) = self.queue.peek().copied() {
            if t > now {
                break;
            }
            self.queue.pop();
            let d = self.slots.get_mut(slot).and_then(|s| s.take());
            self.free_slots.push(slot);
            if let Some(d) = d {
                self.deliver(d);
            }
        }
        // Timers due now: proxies in index order, then agents.
        let mut due = Vec::new();
        while let Some(t) = self.next_timer() {
            if t > now {
                break;
            }
            if let Some(Reverse((_, kind, i))) = self.timers.pop() {
                if kind == 0 {
                    self.proxy_armed[i] = None;
                } else {
                    self.agent_armed[i] = None;
                }
                due.push((kind, i));
            }
        }
        due.sort_unstable();
        due.dedup();
        for (kind, i) in due {
            if kind == 0 {
                if let Some(p) = self.proxies[i].proxy.as_mut() {
                    p.handle_timeout(now);
                }
                self.drain_proxy(i);
            } else {
                if let HostKind::Target {
                    agent: Some(a),
                    alive: true,
                    ..
                } = &mut self.hosts[i].kind
                {
                    a.handle_timeout(now);
                }
                self.drain_agent(i);
            }
        }
    }

    fn drain_proxy(&mut self, i: usize) {
        let now = self.now;
        let mut buf = vec![0u8; 2048];
        loop {
            let Some(p) = self.proxies.get_mut(i).and_then(|p| p.proxy.as_mut()) else {
                return;
            };
            let Some(t) = p.poll_transmit(now, &mut buf) else {
                break;
            };
            let bytes = buf[..t.len].to_vec();
            match t.dest {
                Dest::Overlay(addr) => self.send_overlay(i, addr, bytes),
                Dest::Host => self.route_from_proxy(i, bytes),
            }
        }
        if let Some(p) = self.proxies.get_mut(i).and_then(|p| p.proxy.as_mut()) {
            while let Some(e) = p.poll_event() {
                if let Some(log) = self.member_log.as_mut() {
                    let (about, news) = match e {
                        Event::MemberUp { id, .. } => (id, MemberNews::Up),
                        Event::MemberSuspect { id } => (id, MemberNews::Suspect),
                        Event::MemberDown { id } => (id, MemberNews::Down),
                        _ => continue,
                    };
                    log.push(MemberNote {
                        at: now,
                        by: i,
                        about,
                        news,
                    });
                }
            }
        }
        self.arm_proxy(i);
    }
}
