//! A deterministic network of [`Membership`] instances: a virtual clock, per-link latency, loss,
//! duplication and partitions, and real frames (sealed, parsed, MAC-verified, replay-checked).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pias_proto::ProxyId;
use pias_proto::auth::{MacKey, SipKey};
use pias_proto::control::{ControlPacket, MemberStatus, ProxyRecord};
use pias_proto::tunnel::Frame;

use super::{MemberEvent, Membership, MembershipConfig};
use crate::coords::Coord;
use crate::replay::Freshness;
use crate::seal::{Dest, Sealer};
use crate::time::Instant;

pub(super) const RING_KEY: SipKey = SipKey {
    k0: 0x1111_2222_3333_4444,
    k1: 0x5555_6666_7777_8888,
};
const MAC: [u8; 32] = [7; 32];
const VNI: u32 = 42;
/// Wall-clock time of the simulation's `Instant::ZERO` (any fixed value: every node shares the clock).
const SIM_WALL_ORIGIN_MS: u64 = 1_700_000_000_000;

pub(super) fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)), 6081)
}

pub(super) fn record(id: u32, addr: SocketAddr, incarnation: u32) -> ProxyRecord {
    ProxyRecord {
        id: ProxyId(id),
        incarnation,
        version: 1,
        status: MemberStatus::Alive,
        addr,
        coord: Coord::new().to_bytes(),
    }
}

pub(super) struct Node {
    pub(super) m: Membership,
    pub(super) sealer: Sealer,
    pub(super) up: bool,
    pub(super) events: Vec<MemberEvent>,
    next: Option<Instant>,
}

type Flight = Reverse<(u64, u64, usize, usize, Vec<u8>)>;

pub(super) struct Net {
    pub(super) nodes: Vec<Node>,
    pub(super) now: Instant,
    rng: u64,
    seq: u64,
    inflight: BinaryHeap<Flight>,
    by_addr: BTreeMap<SocketAddr, usize>,
    pub(super) loss: f64,
    pub(super) dup: f64,
    /// Side of each node; frames between different sides are lost. `None`: no partition.
    pub(super) sides: Option<Vec<u8>>,
    /// Nodes whose every frame (in and out) is lost.
    pub(super) isolated: Vec<bool>,
    /// Links (node index pairs, either order) whose frames are lost both ways.
    pub(super) cut: Vec<(usize, usize)>,
    pub(super) delivered: u64,
}

impl Net {
    /// `n` proxies with ids 1..=n; proxy 1 is the seed of all others; proxy i starts at `i * stagger`.
    pub(super) fn new(n: usize, seed: u64, cfg: &MembershipConfig, stagger: Duration) -> Net {
        let mut net = Net {
            nodes: Vec::new(),
            now: Instant::ZERO,
            rng: seed | 1,
            seq: 0,
            inflight: BinaryHeap::new(),
            by_addr: BTreeMap::new(),
            loss: 0.0,
            dup: 0.0,
            sides: None,
            isolated: vec![false; n],
            cut: Vec::new(),
            delivered: 0,
        };
        for i in 0..n {
            let mut c = cfg.clone();
            if i > 0 {
                c.seeds = vec![addr_of(0)];
            }
            let id = i as u32 + 1;
            let start = Instant::ZERO + stagger * i as u32;
            let m = Membership::new(
                c,
                record(id, addr_of(i), 1),
                RING_KEY,
                crate::secrets::Secrets::from_seed_for_tests(seed ^ u64::from(id) << 20).nonce_key(),
                seed ^ u64::from(id) << 20,
                start,
            );
            net.by_addr.insert(addr_of(i), i);
            net.nodes.push(Node {
                m,
                sealer: Sealer::new(
                    ProxyId(id),
                    VNI,
                    MacKey::from_bytes(MAC),
                    1,
                    Freshness::new(SIM_WALL_ORIGIN_MS, 30_000, start),
                ),
                up: true,
                events: Vec::new(),
                next: Some(start),
            });
        }
        net
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn unit(&mut self) -> f64 {
        (self.rand() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One-way latency of a link: a fixed 1–20 ms per pair plus up to 1 ms of jitter.
    fn latency(&mut self, a: usize, b: usize) -> Duration {
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        let h = (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ y.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)) >> 40;
        Duration::from_micros(1000 + h % 19_000 + self.rand() % 1000)
    }

    /// Sends whatever node `i` has queued.
    pub(super) fn kick(&mut self, i: usize) {
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        let mut buf = [0u8; 1500];
        let now = self.now;
        loop {
            let node = &mut self.nodes[i];
            let Some(t) = node.m.poll_transmit(now, &mut node.sealer, &mut buf) else {
                break;
            };
            while let Some(e) = node.m.poll_event() {
                node.events.push(e);
            }
            let Dest::Overlay(to) = t.dest else {
                panic!("membership sends to the overlay only")
            };
            let Some(&j) = self.by_addr.get(&to) else { continue };
            if self.isolated[i] || self.isolated[j] || self.cut.contains(&(i.min(j), i.max(j))) {
                continue;
            }
            if let Some(s) = &self.sides
                && s[i] != s[j]
            {
                continue;
            }
            if self.unit() < self.loss {
                continue;
            }
            let copies = if self.unit() < self.dup { 2 } else { 1 };
            for _ in 0..copies {
                let at = now + self.latency(i, j);
                self.seq += 1;
                self.inflight
                    .push(Reverse((at.as_micros(), self.seq, j, i, buf[..t.len].to_vec())));
            }
        }
        let node = &mut self.nodes[i];
        while let Some(e) = node.m.poll_event() {
            node.events.push(e);
        }
        node.next = node.m.poll_timeout();
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: &[u8]) {
        let node = &mut self.nodes[to];
        if !node.up {
            return;
        }
        let Ok(Frame::Control(g)) = Frame::parse(bytes) else {
            panic!("membership frames are control frames")
        };
        let pkt = ControlPacket::new_checked(g.payload()).expect("well-formed control message");
        let hdr = node
            .sealer
            .open(self.now, addr_of(to), &pkt)
            .expect("MAC verifies for its receiver, timestamp fresh");
        let msg = pkt.message().expect("body parses");
        if node.m.accept(hdr.sender, hdr.seq, pkt.kind()).is_ok() {
            node.m.handle(self.now, addr_of(from), hdr.sender, &msg);
            self.delivered += 1;
        }
        self.drain(to);
    }

    /// Advances to the next event (a delivery or a timer) and runs it. Returns false past `until`.
    pub(super) fn step(&mut self, until: Instant) -> bool {
        let mut t = self.inflight.peek().map(|Reverse(f)| Instant::from_micros(f.0));
        for n in &self.nodes {
            if n.up
                && let Some(x) = n.next
            {
                t = Some(t.map_or(x, |t: Instant| t.min(x)));
            }
        }
        let Some(t) = t else { return false };
        if t > until {
            self.now = until;
            return false;
        }
        self.now = self.now.max(t);
        while let Some(Reverse(f)) = self.inflight.peek() {
            if Instant::from_micros(f.0) > self.now {
                break;
            }
            let Some(Reverse((_, _, to, from, bytes))) = self.inflight.pop() else {
                break;
            };
            self.deliver(to, from, &bytes);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up && self.nodes[i].next.is_some_and(|x| x <= self.now) {
                let now = self.now;
                self.nodes[i].m.handle_timeout(now);
                self.drain(i);
            }
        }
        true
    }

    pub(super) fn run_until(&mut self, t: Instant) {
        while self.step(t) {}
    }

    /// Runs until `cond` holds (checked every 10 ms of virtual time) or `deadline`; the time it held.
    pub(super) fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut cond: impl FnMut(&Net) -> bool,
    ) -> Option<Instant> {
        loop {
            if cond(self) {
                return Some(self.now);
            }
            if self.now >= deadline {
                return None;
            }
            let next = (self.now + Duration::from_millis(10)).min(deadline);
            self.run_until(next);
        }
    }

    /// Every up node holds exactly `expect` records, all Alive, and the same digest.
    pub(super) fn converged(&self, expect: usize) -> bool {
        let mut d = None;
        for n in self.nodes.iter().filter(|n| n.up) {
            if n.m.len() != expect || n.m.iter().any(|m| m.status() != MemberStatus::Alive) {
                return false;
            }
            match d {
                None => d = Some(n.m.digest()),
                Some(x) if x != n.m.digest() => return false,
                _ => {}
            }
        }
        true
    }

    /// Every up node except `id`'s holds `id` with `status`.
    pub(super) fn all_see(&self, id: u32, status: MemberStatus) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.up && n.m.me().id.0 != id)
            .all(|n| n.m.get(ProxyId(id)).is_some_and(|m| m.status() == status))
    }

    pub(super) fn frames_sent(&self) -> u64 {
        self.nodes.iter().map(|n| n.m.counters().frames_sent).sum()
    }
}
