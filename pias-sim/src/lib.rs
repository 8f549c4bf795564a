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
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            loss: 0.0,
            duplicate: 0.0,
            jitter: Duration::ZERO,
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

fn latency(a: (f64, f64), b: (f64, f64)) -> Duration {
    let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    Duration::from_micros(100 + (d * 1000.0) as u64)
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

    fn place_latency(&self, a: ((f64, f64), Option<Attach>), b: ((f64, f64), Option<Attach>)) -> Duration {
        match (&self.topology, a.1, b.1) {
            (Some(t), Some(x), Some(y)) => {
                let ms = t.latency_ms(x.node as usize, y.node as usize);
                Duration::from_micros(u64::from(x.access_us) + u64::from(y.access_us) + (ms * 1000.0) as u64)
            }
            _ => latency(a.0, b.0),
        }
    }

    fn proxy_place(&self, i: usize) -> ((f64, f64), Option<Attach>) {
        (self.proxies[i].pos, self.proxies[i].at)
    }

    fn host_place(&self, h: usize) -> ((f64, f64), Option<Attach>) {
        (self.hosts[h].pos, self.hosts[h].at)
    }

    /// One-way latency between proxies `a` and `b`.
    pub fn proxy_latency(&self, a: usize, b: usize) -> Duration {
        self.place_latency(self.proxy_place(a), self.proxy_place(b))
    }

    /// One-way latency between a host and proxy `p`.
    pub fn host_proxy_latency(&self, h: HostId, p: usize) -> Duration {
        self.place_latency(self.host_place(h.0), self.proxy_place(p))
    }

    /// One-way latency between two hosts (the direct Internet path).
    pub fn host_latency(&self, a: HostId, b: HostId) -> Duration {
        self.place_latency(self.host_place(a.0), self.host_place(b.0))
    }

    /// The index of the proxy with this id.
    pub fn proxy_index(&self, id: ProxyId) -> Option<usize> {
        let i = (id.0 as usize).checked_sub(1)?;
        (i < self.proxies.len()).then_some(i)
    }

    fn rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.unit_f64() <= p
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
        let proxy = Proxy::new(cfg.clone(), self.now).ok();
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

    fn arm_agent(&mut self, h: usize) {
        let t = match &self.hosts[h].kind {
            HostKind::Target {
                agent: Some(a),
                alive: true,
                ..
            } => a.poll_timeout(),
            _ => None,
        };
        if t != self.agent_armed[h] {
            self.agent_armed[h] = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, 1, h)));
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

    /// Adds a client host.
    pub fn add_client(&mut self, ip: IpAddr, pos: (f64, f64)) -> HostId {
        self.push_host(Host {
            name: format!("c{}", self.hosts.len()),
            ip,
            pos,
            at: None,
            pinned_iap: None,
            route: Cell::new(None),
            kind: HostKind::Client,
            received: Vec::new(),
        })
    }

    /// Adds a client host attached to a node of the topology.
    pub fn add_client_at(&mut self, ip: IpAddr, at: Attach) -> HostId {
        let h = self.add_client(ip, (0.0, 0.0));
        self.hosts[h.0].at = Some(at);
        h
    }

    /// Like [`Sim::add_target_with`], attached to a node of the topology.
    pub fn add_target_at(
        &mut self,
        name: &str,
        service: SocketAddr,
        group: TransportAddr,
        at: Attach,
        tune: impl FnOnce(&mut AgentConfig),
    ) -> HostId {
        let h = self.add_target_with(name, service, group, (0.0, 0.0), tune);
        self.hosts[h.0].at = Some(at);
        h
    }

    fn push_host(&mut self, host: Host) -> HostId {
        let h = self.hosts.len();
        self.by_host_ip.entry(host.ip).or_insert(h);
        self.hosts.push(host);
        self.agent_armed.push(None);
        HostId(h)
    }

    /// Number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Adds a target serving `group` at `service` with a registering agent.
    pub fn add_target(
        &mut self,
        name: &str,
        service: SocketAddr,
        group: TransportAddr,
        pos: (f64, f64),
    ) -> HostId {
        self.add_target_with(name, service, group, pos, |_| {})
    }

    /// Like [`Sim::add_target`], with a chance to change the agent's configuration.
    pub fn add_target_with(
        &mut self,
        name: &str,
        service: SocketAddr,
        group: TransportAddr,
        pos: (f64, f64),
        tune: impl FnOnce(&mut AgentConfig),
    ) -> HostId {
        let reg = if service.is_ipv4() {
            IpAddr::V4(REGISTRATION_V4)
        } else {
            IpAddr::V6(REGISTRATION_V6)
        };
        let svc = TransportAddr::new(service.ip(), service.port(), group.proto);
        let mut acfg = AgentConfig::new(
            group,
            svc,
            DeliveryMode::Nat,
            SocketAddr::new(reg, REGISTRATION_PORT),
            self.master.group_key(&group),
            1,
            self.cfg.seed ^ self.hosts.len() as u64,
        );
        tune(&mut acfg);
        let agent = TargetAgent::new(acfg).ok().map(Box::new);
        self.push_host(Host {
            name: name.to_string(),
            ip: service.ip(),
            pos,
            at: None,
            pinned_iap: None,
            route: Cell::new(None),
            kind: HostKind::Target {
                service,
                agent,
                alive: true,
            },
            received: Vec::new(),
        })
    }

    /// The agent of a target host.
    pub fn agent(&self, h: HostId) -> Option<&TargetAgent> {
        match &self.hosts.get(h.0)?.kind {
            HostKind::Target { agent, .. } => agent.as_deref(),
            HostKind::Client => None,
        }
    }

    /// What a client received so far.
    pub fn received(&self, h: HostId) -> &[Received] {
        self.hosts.get(h.0).map(|x| &x.received[..]).unwrap_or(&[])
    }

    /// The hops a packet with this payload id took.
    pub fn path(&self, id: u64) -> Vec<Hop> {
        self.trace
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, h)| *h)
            .collect()
    }

    /// Pins a host's anycast route to proxy `i` (a routing change); `None` returns to nearest-proxy routing.
    pub fn pin_iap(&mut self, h: HostId, i: Option<usize>) {
        if let Some(host) = self.hosts.get_mut(h.0) {
            host.pinned_iap = i;
        }
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
            p.proxy = Proxy::new(p.cfg.clone(), now).ok();
            self.epoch += 1;
            self.arm_proxy(i);
        }
    }

    /// Kills a target host: its service and agent stop without deregistering.
    pub fn kill_target(&mut self, h: HostId) {
        if let Some(Host {
            kind: HostKind::Target { alive, .. },
            ..
        }) = self.hosts.get_mut(h.0)
        {
            *alive = false;
            self.arm_agent(h.0);
        }
    }

    /// Brings a killed target back: its service answers again and a fresh agent (higher incarnation)
    /// registers it.
    pub fn revive_target(&mut self, h: HostId) {
        let Some(Host {
            kind: HostKind::Target { agent, alive, .. },
            ..
        }) = self.hosts.get_mut(h.0)
        else {
            return;
        };
        if *alive {
            return;
        }
        if let Some(a) = agent.as_ref() {
            let mut cfg = a.config().clone();
            cfg.incarnation += 1;
            *agent = TargetAgent::new(cfg).ok().map(Box::new);
        }
        *alive = true;
        self.drain_agent(h.0);
    }

    /// Whether a target host is alive.
    pub fn target_alive(&self, h: HostId) -> bool {
        matches!(
            self.hosts.get(h.0),
            Some(Host {
                kind: HostKind::Target { alive: true, .. },
                ..
            })
        )
    }

    /// Cuts the overlay between two sets of proxy indexes (both ways) until [`Sim::heal`].
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        self.partition = Some((a.iter().copied().collect(), b.iter().copied().collect()));
    }

    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn cut(&self, x: usize, y: usize) -> bool {
        match &self.partition {
            Some((a, b)) => (a.contains(&x) && b.contains(&y)) || (b.contains(&x) && a.contains(&y)),
            None => false,
        }
    }

    /// The proxy a host's anycast packets reach: its pinned IAP if it announces the prefix, else the nearest
    /// proxy that does.
    pub fn iap_of(&self, h: HostId) -> Option<usize> {
        let host = self.hosts.get(h.0)?;
        if let Some(i) = host.pinned_iap
            && self.announces(i)
        {
            return Some(i);
        }
        if let Some((e, i)) = host.route.get()
            && e == self.epoch
        {
            return Some(i);
        }
        let r = self.anycast_route(h.0)?;
        host.route.set(Some((self.epoch, r)));
        Some(r)
    }

    /// Nearest running proxy by the network's routing; a host picked for a policy detour gets one of the
    /// next three instead.
    fn anycast_route(&self, h: usize) -> Option<usize> {
        let place = self.host_place(h);
        let mut best: [(Duration, usize); 4] = [(Duration::MAX, usize::MAX); 4];
        for i in 0..self.proxies.len() {
            if !self.announces(i) {
                continue;
            }
            let k = (self.place_latency(place, self.proxy_place(i)), i);
            if k < best[3] {
                best[3] = k;
                best.sort_unstable();
            }
        }
        if best[0].1 == usize::MAX {
            return None;
        }
        if self.detour > 0.0 {
            let x = pias_state::rng::mix(self.cfg.seed ^ pias_state::rng::mix(h as u64) ^ 0x00de_7041);
            if ((x >> 11) as f64 / (1u64 << 53) as f64) < self.detour {
                let alts: Vec<usize> = best[1..]
                    .iter()
                    .filter(|b| b.1 != usize::MAX)
                    .map(|b| b.1)
                    .collect();
                if !alts.is_empty() {
                    return Some(alts[(x % alts.len() as u64) as usize]);
                }
            }
        }
        Some(best[0].1)
    }

    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(d);
                s
            }
            None => {
                self.slots.push(Some(d));
                self.slots.len() - 1
            }
        };
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// A client sends a UDP datagram whose payload starts with the 8-byte `id`.
    pub fn send_udp(&mut self, h: HostId, sport: u16, group: TransportAddr, id: u64, extra: &[u8]) {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(extra);
        let Some(host) = self.hosts.get(h.0) else { return };
        let src = SocketAddr::new(host.ip, sport);
        let mut buf = vec![0u8; 2048];
        let Ok(n) = udp_packet(src, SocketAddr::new(group.ip, group.port), &payload, &mut buf) else {
            return;
        };
        buf.truncate(n);
        self.client_send(h, id, buf);
    }

    /// A client sends a TCP segment (payload starts with the 8-byte `id` when non-empty).
    pub fn send_tcp(&mut self, h: HostId, sport: u16, group: TransportAddr, seg: Segment, id: u64) {
        let Some(host) = self.hosts.get(h.0) else { return };
        let src = SocketAddr::new(host.ip, sport);
        let payload = id.to_be_bytes();
        let mut buf = vec![0u8; 2048];
        let body: &[u8] = if seg.flags.syn() { &[] } else { &payload };
        let Ok(n) = tcp_segment(src, SocketAddr::new(group.ip, group.port), seg, body, &mut buf) else {
            return;
        };
        buf.truncate(n);
        self.client_send(h, id, buf);
    }

    /// A client sends a raw IP packet.
    pub fn send_raw(&mut self, h: HostId, bytes: Vec<u8>) {
        self.client_send(h, 0, bytes);
    }

    fn client_send(&mut self, h: HostId, id: u64, bytes: Vec<u8>) {
        let Some(iap) = self.iap_of(h) else {
            self.unroutable += 1;
            return;
        };
        let at = self.now + self.host_proxy_latency(h, iap);
        self.trace_push((
            id,
            Hop::ClientToProxy {
                proxy: self.proxies[iap].id,
            },
        ));
        self.schedule(at, Delivery::HostToProxy { to: iap, bytes });
    }

    /// Delivers raw bytes to proxy `to`'s overlay socket as if sent from `from` (forged or garbage input).
    pub fn inject_overlay(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>) {
        let at = self.now + Duration::from_micros(100);
        self.schedule(at, Delivery::Overlay { to, from, bytes });
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

    fn start_agents(&mut self) {
        for i in 0..self.hosts.len() {
            self.drain_agent(i);
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

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Overlay { to, from, mut bytes } => {
                let n = bytes.len();
                let mut buf = vec![0u8; HEADROOM + n + 64];
                buf[HEADROOM..HEADROOM + n].copy_from_slice(&bytes);
                bytes.clear();
                let Some(p) = self.proxies.get_mut(to).and_then(|p| p.proxy.as_mut()) else {
                    return;
                };
                let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
                let v = p.handle_overlay(now, from, &mut pb);
                let out = pb.bytes().to_vec();
                self.verdict(to, v, out);
                self.drain_proxy(to);
            }
            Delivery::HostToProxy { to, bytes } => {
                let n = bytes.len();
                let mut buf = vec![0u8; HEADROOM + n + 64];
                buf[HEADROOM..HEADROOM + n].copy_from_slice(&bytes);
                let Some(p) = self.proxies.get_mut(to).and_then(|p| p.proxy.as_mut()) else {
                    return;
                };
                let mut pb = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + n);
                let v = p.handle_host(now, &mut pb);
                let out = pb.bytes().to_vec();
                self.verdict(to, v, out);
                self.drain_proxy(to);
            }
            Delivery::ToHost { to, bytes } => self.host_input(to, bytes),
        }
    }

    fn verdict(&mut self, from: usize, v: Verdict, bytes: Vec<u8>) {
        match v {
            Verdict::Overlay(addr) => self.send_overlay(from, addr, bytes),
            Verdict::Host => self.route_from_proxy(from, bytes),
            Verdict::Consumed | Verdict::Drop(_) => {}
        }
    }

    fn send_overlay(&mut self, from: usize, addr: SocketAddr, bytes: Vec<u8>) {
        self.overlay_sent[from] += 1;
        self.overlay_bytes[from] += bytes.len() as u64;
        let Some(to) = self.by_overlay.get(&addr).copied() else {
            // Not a proxy: a tunnel-mode target's overlay port (SPEC.md §11.6).
            if let Some(h) = self.by_host_ip.get(&addr.ip()).copied() {
                if let Ok(d) = DataFrame::new_checked(&bytes[..])
                    && let Ok(ip) = IpPacket::new_checked(d.inner())
                    && let Some(id) = payload_id(&ip)
                {
                    let proxy = self.proxies[from].id;
                    self.trace_push((
                        id,
                        Hop::ProxyToTarget {
                            proxy,
                            target: HostId(h),
                        },
                    ));
                }
                let mut pkt = vec![0u8; bytes.len() + 64];
                if let Ok(n) = udp_packet(self.proxies[from].cfg.overlay_addr, addr, &bytes, &mut pkt) {
                    pkt.truncate(n);
                    let at = self.now + self.host_proxy_latency(HostId(h), from);
                    self.schedule(
                        at,
                        Delivery::ToHost {
                            to: HostId(h),
                            bytes: pkt,
                        },
                    );
                }
                return;
            }
            self.unroutable += 1;
            return;
        };
        if let Ok(d) = DataFrame::new_checked(&bytes[..])
            && let Ok(ip) = IpPacket::new_checked(d.inner())
            && let Some(id) = payload_id(&ip)
        {
            let f = d.header().flags & (flags::VIA_RAP | flags::TO_RAP);
            self.trace_push((
                id,
                Hop::Overlay {
                    from: self.proxies[from].id,
                    to: self.proxies[to].id,
                    flags: f,
                },
            ));
        }
        if self.cut(from, to) || self.chance(self.cfg.loss) {
            return;
        }
        let copies = if self.chance(self.cfg.duplicate) { 2 } else { 1 };
        let src = self.proxies[from].cfg.overlay_addr;
        let now = self.now;
        if let Some(c) = self.capture.as_mut() {
            c.push(Captured {
                at: now,
                from: src,
                to: addr,
                bytes: bytes.clone(),
            });
        }
        for _ in 0..copies {
            let jitter = if self.cfg.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(self.rand() % (self.cfg.jitter.as_micros() as u64 + 1))
            };
            let at = self.now + self.proxy_latency(from, to) + jitter;
            self.schedule(
                at,
                Delivery::Overlay {
                    to,
                    from: src,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    /// A packet a proxy wrote to its host side: the kernel routes it by destination address.
    fn route_from_proxy(&mut self, from: usize, bytes: Vec<u8>) {
        let Ok(ip) = IpPacket::new_checked(&bytes[..]) else {
            return;
        };
        let dst = ip.dst_addr();
        if let Some(h) = self.by_host_ip.get(&dst).copied() {
            if let Some(id) = payload_id(&ip)
                && matches!(self.hosts[h].kind, HostKind::Target { .. })
            {
                self.trace_push((
                    id,
                    Hop::ProxyToTarget {
                        proxy: self.proxies[from].id,
                        target: HostId(h),
                    },
                ));
            }
            let at = self.now + self.host_proxy_latency(HostId(h), from);
            self.schedule(at, Delivery::ToHost { to: HostId(h), bytes });
            return;
        }
        self.unroutable += 1;
    }

    /// A packet a host sends into the network: to the pool owner, or by anycast.
    fn host_output(&mut self, h: HostId, bytes: Vec<u8>) {
        let Ok(ip) = IpPacket::new_checked(&bytes[..]) else {
            return;
        };
        let dst = ip.dst_addr();
        let owner = self.by_pool.get(&dst).copied();
        let to = match owner {
            Some(i) if self.proxies[i].proxy.is_some() => Some(i),
            Some(_) => None,
            None => self.iap_of(h),
        };
        let Some(to) = to else {
            self.unroutable += 1;
            return;
        };
        let at = self.now + self.host_proxy_latency(h, to);
        self.schedule(at, Delivery::HostToProxy { to, bytes });
    }

    fn host_input(&mut self, h: HostId, bytes: Vec<u8>) {
        let now = self.now;
        let Ok(ip) = IpPacket::new_checked(&bytes[..]) else {
            return;
        };
        let Some(flow) = ip.flow() else { return };
        let name = self.hosts[h.0].name.clone();
        let host = &mut self.hosts[h.0];
        match &mut host.kind {
            HostKind::Client => {
                let l4 = ip.l4_bytes();
                let (payload, tcp_flags, mss) = match flow.proto {
                    IpProtocol::Udp => (l4.get(8..).unwrap_or(&[]).to_vec(), 0, None),
                    IpProtocol::Tcp => {
                        let off = usize::from(l4.get(12).copied().unwrap_or(0x50) >> 4) * 4;
                        let f = ip.tcp_flags().map(|f| f.bits()).unwrap_or(0);
                        (l4.get(off..).unwrap_or(&[]).to_vec(), f, tcp_mss(l4))
                    }
                    _ => (Vec::new(), 0, None),
                };
                host.received.push(Received {
                    at: now,
                    from: SocketAddr::new(flow.src, flow.src_port),
                    proto: flow.proto,
                    payload,
                    tcp_flags,
                    mss,
                });
            }
            HostKind::Target {
                service,
                agent,
                alive,
            } => {
                if !*alive {
                    return;
                }
                if flow.dst_port == OVERLAY_PORT && flow.proto == IpProtocol::Udp {
                    // A tunnel-mode target: de-encapsulate, answer from the group address, send the answer
                    // back through the JAP in a TO_TARGET frame.
                    let payload = ip.l4_bytes().get(8..).unwrap_or(&[]);
                    let Ok(d) = DataFrame::new_checked(payload) else {
                        return;
                    };
                    let Ok(inner) = IpPacket::new_checked(d.inner()) else {
                        return;
                    };
                    let Some(cf) = inner.flow() else { return };
                    host.received.push(Received {
                        at: now,
                        from: SocketAddr::new(cf.src, cf.src_port),
                        proto: cf.proto,
                        payload: inner.l4_bytes().get(8..).unwrap_or(&[]).to_vec(),
                        tcp_flags: 0,
                        mss: None,
                    });
                    let mut reply = inner.l4_bytes().get(8..).unwrap_or(&[]).to_vec();
                    reply.extend_from_slice(b"@");
                    reply.extend_from_slice(name.as_bytes());
                    let mut pkt = vec![0u8; 2048];
                    let group = SocketAddr::new(cf.dst, cf.dst_port);
                    let Ok(n) = udp_packet(group, SocketAddr::new(cf.src, cf.src_port), &reply, &mut pkt)
                    else {
                        return;
                    };
                    let dh = DataHeader {
                        vni: d.vni(),
                        flags: flags::TO_TARGET,
                        hops: 0,
                        ingress: ProxyId::NONE,
                    };
                    let mut frame = vec![0u8; n + 64];
                    let Ok(m) = dh.encapsulate(&pkt[..n], &mut frame) else {
                        return;
                    };
                    frame.truncate(m);
                    let me = SocketAddr::new(service.ip(), OVERLAY_PORT);
                    let jap = SocketAddr::new(flow.src, flow.src_port);
                    if let Some(to) = self.by_overlay.get(&jap).copied() {
                        let at = now + self.host_proxy_latency(h, to);
                        self.schedule(
                            at,
                            Delivery::Overlay {
                                to,
                                from: me,
                                bytes: frame,
                            },
                        );
                    }
                    return;
                }
                if flow.dst_port == AGENT_PORT && flow.proto == IpProtocol::Udp {
                    if let Some(a) = agent.as_mut() {
                        let payload = ip.l4_bytes().get(8..).unwrap_or(&[]);
                        let _ = a.handle_datagram(now, SocketAddr::new(flow.src, flow.src_port), payload);
                    }
                    self.drain_agent(h.0);
                    return;
                }
                if flow.dst_port != service.port() {
                    // The target acting as a client of some group: record what it receives.
                    let payload = match flow.proto {
                        IpProtocol::Udp => ip.l4_bytes().get(8..).unwrap_or(&[]).to_vec(),
                        _ => Vec::new(),
                    };
                    host.received.push(Received {
                        at: now,
                        from: SocketAddr::new(flow.src, flow.src_port),
                        proto: flow.proto,
                        payload,
                        tcp_flags: 0,
                        mss: None,
                    });
                    return;
                }
                let me = *service;
                let peer = SocketAddr::new(flow.src, flow.src_port);
                let mut out = vec![0u8; 2048];
                let n = match flow.proto {
                    IpProtocol::Udp => {
                        // Echo, prefixed with our name so the client can tell who served it.
                        let mut reply = ip.l4_bytes().get(8..).unwrap_or(&[]).to_vec();
                        reply.extend_from_slice(b"@");
                        reply.extend_from_slice(name.as_bytes());
                        udp_packet(me, peer, &reply, &mut out).ok()
                    }
                    IpProtocol::Tcp => {
                        let f = ip.tcp_flags().unwrap_or(TcpFlags::empty());
                        let seg = if f.syn() {
                            Segment {
                                flags: TcpFlags::from_bits_truncate(0x12),
                                seq: 100,
                                ack: 1,
                                mss: Some(1460),
                            }
                        } else {
                            Segment {
                                flags: TcpFlags::ACK,
                                seq: 101,
                                ack: 2,
                                mss: None,
                            }
                        };
                        let body = if f.syn() {
                            Vec::new()
                        } else {
                            [ip.l4_bytes().get(20..28).unwrap_or(&[]), name.as_bytes()].concat()
                        };
                        tcp_segment(me, peer, seg, &body, &mut out).ok()
                    }
                    _ => None,
                };
                if let Some(n) = n {
                    out.truncate(n);
                    self.host_output(h, out);
                }
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

    fn drain_agent(&mut self, h: usize) {
        if !matches!(
            self.hosts[h].kind,
            HostKind::Target {
                agent: Some(_),
                alive: true,
                ..
            }
        ) {
            self.arm_agent(h);
            return;
        }
        let now = self.now;
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::new();
        if let HostKind::Target {
            agent: Some(a),
            alive: true,
            service,
        } = &mut self.hosts[h].kind
        {
            let src = SocketAddr::new(service.ip(), AGENT_PORT);
            let reg = a.config().registration;
            while let Some(n) = a.poll_transmit(now, &mut buf) {
                let mut pkt = vec![0u8; 2048];
                if let Ok(m) = udp_packet(src, reg, &buf[..n], &mut pkt) {
                    pkt.truncate(m);
                    out.push(pkt);
                }
            }
            while a.poll_event().is_some() {}
        }
        for pkt in out {
            self.host_output(HostId(h), pkt);
        }
        self.arm_agent(h);
    }
}

fn tcp_mss(l4: &[u8]) -> Option<u16> {
    let off = usize::from(*l4.get(12)? >> 4) * 4;
    let mut opts = l4.get(20..off)?;
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return None,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?);
                if kind == 2 && len == 4 {
                    return Some(u16::from_be_bytes([*opts.get(2)?, *opts.get(3)?]));
                }
                opts = opts.get(len.max(2)..)?;
            }
        }
    }
    None
}
