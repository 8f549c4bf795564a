//! NAT table tests: scenarios, TCP states, bounds, and a model-based property test.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(proto: IpProtocol, src: &str, sp: u16, dst: &str, dp: u16) -> FlowKey {
    FlowKey {
        proto,
        src: v4(src),
        src_port: sp,
        dst: v4(dst),
        dst_port: dp,
    }
}

fn cfg(pool: &[&str]) -> NatConfig {
    NatConfig::with_pool(pool.iter().map(|s| v4(s)).collect())
}

fn drain(t: &mut NatTable) -> Vec<NatEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

#[test]
fn forward_and_reverse_rewrite_udp() {
    let mut t = NatTable::new(cfg(&["198.51.100.1", "2001:db8::1"]), 7).unwrap();
    let c = key(IpProtocol::Udp, "203.0.113.9", 5353, "192.0.2.53", 53);
    let tr = t.create(&c, (v4("10.0.0.7"), 5300), 42, secs(1)).unwrap();
    assert_eq!(tr.src, v4("198.51.100.1"));
    assert!(tr.src_port >= 1024);
    assert_eq!((tr.dst, tr.dst_port), (v4("10.0.0.7"), 5300));
    assert_eq!(t.lookup_forward(&c, 100, secs(2)), Some(tr));
    // The target's reply: T → P.
    let reply = FlowKey {
        proto: IpProtocol::Udp,
        src: tr.dst,
        src_port: tr.dst_port,
        dst: tr.src,
        dst_port: tr.src_port,
    };
    let back = t.lookup_reverse(&reply, 200, secs(3)).unwrap();
    assert_eq!(
        (back.src, back.src_port, back.dst, back.dst_port),
        (v4("192.0.2.53"), 53, v4("203.0.113.9"), 5353)
    );
    // A reply from another source port of the target does not match (endpoint-dependent filtering).
    let mut stray = reply;
    stray.src_port += 1;
    assert_eq!(t.lookup_reverse(&stray, 0, secs(3)), None);
    let b = t.get_forward(&c).unwrap();
    assert_eq!(
        (
            b.tag,
            b.forward_packets,
            b.forward_bytes,
            b.reverse_packets,
            b.reverse_bytes
        ),
        (42, 1, 100, 1, 200)
    );
    assert_eq!(b.reverse, reply);
    assert_eq!(b.expires, secs(3 + 120));
    assert_eq!(t.counters().forward_hits, 1);
    assert_eq!(t.counters().reverse_hits, 1);
    assert_eq!(t.counters().reverse_misses, 1);
    assert!(matches!(
        drain(&mut t)[..],
        [NatEvent::Created { forward, reverse, tag: 42, .. }] if forward == c && reverse == reply
    ));
    assert!(
        matches!(t.create(&c, (v4("10.0.0.8"), 1), 0, secs(4)), Err(NatError::AlreadyExists(id)) if id == tr.id)
    );
    // IPv6 uses the v6 pool address; mixed families are refused.
    let c6 = FlowKey {
        proto: IpProtocol::Tcp,
        src: v4("2001:db8:c::9"),
        src_port: 40000,
        dst: v4("2001:db8:a::1"),
        dst_port: 443,
    };
    let tr6 = t.create(&c6, (v4("2001:db8:f::7"), 8443), 0, secs(4)).unwrap();
    assert_eq!(tr6.src, v4("2001:db8::1"));
    assert_eq!(
        t.create(&c6, (v4("10.0.0.1"), 1), 0, secs(4)),
        Err(NatError::FamilyMismatch)
    );
    let other = FlowKey {
        proto: IpProtocol::Other(47),
        ..c
    };
    assert_eq!(
        t.create(&other, (v4("10.0.0.1"), 1), 0, secs(4)),
        Err(NatError::UnsupportedProtocol(IpProtocol::Other(47)))
    );
    assert_eq!(t.counters().create_rejected, 3);
}

#[test]
fn icmp_echo_identifier_is_the_port() {
    let mut t = NatTable::new(cfg(&["198.51.100.1"]), 1).unwrap();
    let c = key(IpProtocol::Icmp, "203.0.113.9", 777, "192.0.2.1", 777);
    let tr = t.create(&c, (v4("10.0.0.7"), 0), 0, secs(0)).unwrap();
    assert_eq!(tr.src_port, tr.dst_port, "the new identifier on both sides");
    let reply = key(
        IpProtocol::Icmp,
        "10.0.0.7",
        tr.src_port,
        "198.51.100.1",
        tr.src_port,
    );
    let back = t.lookup_reverse(&reply, 64, secs(1)).unwrap();
    assert_eq!((back.src_port, back.dst_port), (777, 777));
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(61));
    assert_eq!(t.get_forward(&c).unwrap().class, TimeoutClass::Icmp);
}

fn tcp_table() -> (NatTable, FlowKey, BindingId) {
    let mut t = NatTable::new(cfg(&["198.51.100.1"]), 3).unwrap();
    let c = key(IpProtocol::Tcp, "203.0.113.9", 40000, "192.0.2.80", 80);
    let tr = t.create(&c, (v4("10.0.0.7"), 8080), 0, secs(0)).unwrap();
    (t, c, tr.id)
}

#[test]
fn tcp_handshake_and_close_move_through_states_and_timeouts() {
    use Direction::{Forward as F, Reverse as R};
    let (mut t, c, id) = tcp_table();
    let exp = |t: &NatTable| {
        let b = t.get_forward(&c).unwrap();
        (b.tcp.unwrap(), b.expires)
    };
    assert_eq!(exp(&t), (TcpState::Opening, secs(240)));
    let steps: [(TcpFlags, Direction, TcpState, u64); 6] = [
        (TcpFlags::SYN, F, TcpState::Opening, 240),
        (TcpFlags::SYN_ACK, R, TcpState::Opening, 240),
        (TcpFlags::ACK, F, TcpState::Established, 7440),
        (TcpFlags::FIN_ACK, F, TcpState::FinForward, 7440),
        (TcpFlags::FIN_ACK, R, TcpState::Closing, 240),
        (TcpFlags::ACK, F, TcpState::Closing, 240),
    ];
    for (n, (flags, dir, state, timeout)) in steps.into_iter().enumerate() {
        let now = secs(n as u64 + 1);
        assert_eq!(t.observe_tcp(id, flags, dir, now), Some(state), "step {n}");
        assert_eq!(exp(&t), (state, now + Duration::from_secs(timeout)), "step {n}");
    }
    // The closed connection expires after the transitory timeout.
    assert_eq!(t.poll_timeout(), Some(secs(6 + 240)));
    assert_eq!(t.handle_timeout(secs(245)), 0);
    assert_eq!(t.handle_timeout(secs(246)), 1);
    assert!(t.is_empty());
    assert_eq!(t.counters().expired(TimeoutClass::TcpTransitory), 1);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn tcp_rst_closes_and_a_new_syn_reopens() {
    let (mut t, c, id) = tcp_table();
    t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(1));
    assert_eq!(
        t.observe_tcp(id, TcpFlags::ACK, Direction::Reverse, secs(2)),
        Some(TcpState::Established)
    );
    assert_eq!(
        t.observe_tcp(id, TcpFlags::RST, Direction::Reverse, secs(3)),
        Some(TcpState::Reset)
    );
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(13));
    assert_eq!(
        t.observe_tcp(id, TcpFlags::SYN, Direction::Forward, secs(4)),
        Some(TcpState::Opening)
    );
    assert_eq!(t.get_forward(&c).unwrap().expires, secs(244));
    t.observe_tcp(id, TcpFlags::RST | TcpFlags::ACK, Direction::Forward, secs(5));
    // Past the RST timeout a lookup misses and the binding is gone from both indexes.
    let rev = t.get_forward(&c).unwrap().reverse;
    assert_eq!(t.lookup_forward(&c, 0, secs(15)), None);
    assert_eq!(t.get_reverse(&rev), None);
    assert_eq!(t.counters().expired(TimeoutClass::TcpClosed), 1);
    assert_eq!(
        t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(16)),
        None,
        "stale id"
    );
}

#[test]
fn mid_flow_tcp_stays_transitory_until_both_ways() {
    let (mut t, _c, id) = tcp_table();
    for s in 1..5 {
        assert_eq!(
            t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(s)),
            Some(TcpState::Opening)
        );
    }
    assert_eq!(
        t.observe_tcp(id, TcpFlags::ACK, Direction::Reverse, secs(5)),
        Some(TcpState::Established)
    );
}

#[test]
fn port_exhaustion_is_typed_and_counted() {
    let mut c = cfg(&["198.51.100.1"]);
    (c.port_min, c.port_max) = (2000, 2003);
    let mut t = NatTable::new(c, 9).unwrap();
    let mut ports = BTreeSet::new();
    for i in 0..4 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        ports.insert(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap().src_port);
    }
    assert_eq!(ports, (2000..=2003).collect());
    let k = key(IpProtocol::Udp, "203.0.113.9", 2000, "192.0.2.53", 53);
    assert_eq!(
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)),
        Err(NatError::PortsExhausted)
    );
    assert_eq!(t.counters().port_exhausted, 1);
    // Another protocol has its own ports.
    let k = key(IpProtocol::Tcp, "203.0.113.9", 2000, "192.0.2.53", 53);
    assert!(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)).is_ok());
    // Expiry frees a port.
    t.handle_timeout(secs(120));
    let k = key(IpProtocol::Udp, "203.0.113.9", 2000, "192.0.2.53", 53);
    assert!(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(120)).is_ok());
}

#[test]
fn full_table_evicts_the_earliest_deadline_and_counts() {
    let mut c = cfg(&["198.51.100.1"]);
    c.max_entries = 3;
    let mut t = NatTable::new(c, 9).unwrap();
    let tcp = key(IpProtocol::Tcp, "203.0.113.1", 1, "192.0.2.53", 53);
    let id = t.create(&tcp, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap().id;
    t.observe_tcp(id, TcpFlags::SYN_ACK, Direction::Reverse, secs(0));
    t.observe_tcp(id, TcpFlags::ACK, Direction::Forward, secs(0)); // established: deadline 7440
    let u1 = key(IpProtocol::Udp, "203.0.113.2", 1, "192.0.2.53", 53);
    let u2 = key(IpProtocol::Udp, "203.0.113.3", 1, "192.0.2.53", 53);
    t.create(&u1, (v4("10.0.0.7"), 53), 0, secs(1)).unwrap();
    t.create(&u2, (v4("10.0.0.7"), 53), 0, secs(2)).unwrap();
    t.lookup_forward(&u1, 0, secs(3));
    drain(&mut t);
    let u3 = key(IpProtocol::Udp, "203.0.113.4", 1, "192.0.2.53", 53);
    t.create(&u3, (v4("10.0.0.7"), 53), 0, secs(4)).unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t.counters().evicted, 1);
    assert!(t.get_forward(&u2).is_none(), "u2 had the earliest deadline");
    assert!(t.get_forward(&tcp).is_some() && t.get_forward(&u1).is_some());
    let ev = drain(&mut t);
    assert!(
        matches!(ev[0], NatEvent::Removed { forward, reason: RemoveReason::Evicted, .. } if forward == u2)
    );
    // A due binding is expired rather than evicted.
    let u4 = key(IpProtocol::Udp, "203.0.113.5", 1, "192.0.2.53", 53);
    t.create(&u4, (v4("10.0.0.7"), 53), 0, secs(200)).unwrap();
    assert_eq!(t.counters().evicted, 1);
    assert_eq!(t.counters().expired(TimeoutClass::Udp), 1);
    // max_entries = 0: creation refused.
    let mut c = cfg(&["198.51.100.1"]);
    c.max_entries = 0;
    let mut t = NatTable::new(c, 9).unwrap();
    assert_eq!(
        t.create(&u4, (v4("10.0.0.7"), 53), 0, secs(0)),
        Err(NatError::NoCapacity)
    );
}

#[test]
fn handle_timeout_does_bounded_work() {
    let mut c = cfg(&["198.51.100.1"]);
    c.expiry_budget = 10;
    let mut t = NatTable::new(c, 5).unwrap();
    for i in 0..35u16 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(u64::from(i))).unwrap();
    }
    drain(&mut t);
    assert_eq!(t.handle_timeout(secs(10)), 0, "early call is harmless");
    let now = secs(1000);
    let mut calls = 0;
    while t.poll_timeout().is_some_and(|d| d <= now) {
        let n = t.handle_timeout(now);
        assert!(n <= 10);
        assert_eq!(drain(&mut t).len(), n);
        calls += 1;
    }
    assert_eq!(calls, 4);
    assert!(t.is_empty());
    // The event queue bounds expiry too: with room for 3 events, 3 per call.
    let mut c = cfg(&["198.51.100.1"]);
    c.event_capacity = 3;
    let mut t = NatTable::new(c, 5).unwrap();
    for i in 0..5u16 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    }
    assert_eq!(t.counters().events_dropped, 2);
    drain(&mut t);
    assert_eq!(t.handle_timeout(secs(500)), 3);
    assert_eq!(t.handle_timeout(secs(500)), 0, "queue full");
    drain(&mut t);
    assert_eq!(t.handle_timeout(secs(500)), 2);
}

#[test]
fn remove_where_target_sweeps_in_bounded_steps() {
    let mut c = cfg(&["198.51.100.1"]);
    c.sweep_budget = 8;
    let mut t = NatTable::new(c, 5).unwrap();
    let mut keys = Vec::new();
    for i in 0..40u16 {
        let k = key(IpProtocol::Udp, "203.0.113.9", 1000 + i, "192.0.2.53", 53);
        let target = if i % 2 == 0 { "10.0.0.7" } else { "10.0.0.8" };
        t.create(&k, (v4(target), 53), u32::from(i), secs(0)).unwrap();
        keys.push(k);
    }
    drain(&mut t);
    assert!(t.remove_where_target(v4("10.0.0.7"), None));
    assert!(t.is_draining(v4("10.0.0.7"), 53));
    assert_eq!(t.poll_timeout(), Some(secs(0)));
    // Lookups of the dead target miss at once; creation towards it is refused.
    assert_eq!(t.lookup_forward(&keys[0], 0, secs(1)), None);
    assert!(t.lookup_forward(&keys[1], 0, secs(1)).is_some());
    let k = key(IpProtocol::Udp, "203.0.113.1", 1, "192.0.2.53", 53);
    assert_eq!(
        t.create(&k, (v4("10.0.0.7"), 53), 0, secs(1)),
        Err(NatError::TargetDraining)
    );
    let mut calls = 0;
    while t.is_draining(v4("10.0.0.7"), 53) {
        assert!(t.handle_timeout(secs(1)) <= 8);
        calls += 1;
    }
    assert_eq!(calls, 5);
    assert_eq!(t.len(), 20);
    assert_eq!(t.counters().removed_target, 20);
    assert!(t.iter().all(|b| b.reverse.src == v4("10.0.0.8")));
    assert!(t.create(&k, (v4("10.0.0.7"), 53), 0, secs(1)).is_ok());
}

#[test]
fn config_errors_name_the_field() {
    let bad = |f: fn(&mut NatConfig)| {
        let mut c = cfg(&["198.51.100.1"]);
        f(&mut c);
        NatTable::new(c, 0).unwrap_err().to_string()
    };
    assert!(bad(|c| c.pool.clear()).contains("nat.pool"));
    assert!(bad(|c| c.pool.push(v4("198.51.100.1"))).contains("twice"));
    assert!(bad(|c| c.pool[0] = v4("0.0.0.0")).contains("nat.pool"));
    assert!(bad(|c| c.port_min = 0).contains("nat.port_min"));
    assert!(bad(|c| (c.port_min, c.port_max) = (5, 4)).contains("nat.port_max"));
    assert!(bad(|c| c.max_entries = u32::MAX).contains("nat.max_entries"));
    assert!(bad(|c| c.tcp_closed_timeout = Duration::ZERO).contains("nat.tcp_closed_timeout"));
    assert!(bad(|c| c.expiry_budget = 0).contains("nat.expiry_budget"));
}

#[test]
fn same_seed_same_ports() {
    let run = |seed| {
        let mut t = NatTable::new(cfg(&["198.51.100.1", "198.51.100.2"]), seed).unwrap();
        (0..50u16)
            .map(|i| {
                let k = key(IpProtocol::Udp, "203.0.113.9", i, "192.0.2.53", 53);
                let tr = t.create(&k, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
                (tr.src, tr.src_port)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// 10^6 bindings stay under 160 MB. Creating them takes a few seconds in a debug build.
#[test]
fn a_million_bindings_fit_in_160_mb() {
    let pool: Vec<IpAddr> = (1..=20)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    let mut t = NatTable::new(NatConfig::with_pool(pool), 1).unwrap();
    let before = t.memory_bytes();
    for i in 0..1_000_000u32 {
        let k = FlowKey {
            proto: IpProtocol::Udp,
            src: IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (i >> 4))),
            src_port: 1024 + (i & 15) as u16,
            dst: v4("192.0.2.53"),
            dst_port: 53,
        };
        t.create(&k, (v4("10.9.0.1"), 53), i, secs(0)).unwrap();
        if i % 4096 == 0 {
            drain(&mut t);
        }
    }
    assert_eq!(t.len(), 1_000_000);
    assert_eq!(t.memory_bytes(), before, "everything was preallocated");
    assert!(t.memory_bytes() < 160_000_000, "{}", t.memory_bytes());
}

// ---- model-based property test ----

const CLIENTS: [&str; 4] = ["203.0.113.1", "203.0.113.2", "2001:db8:c::1", "2001:db8:c::2"];
const GROUPS: [&str; 2] = ["192.0.2.1", "2001:db8:a::1"];
const TARGETS_V4: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const TARGETS_V6: [&str; 2] = ["2001:db8:f::1", "2001:db8:f::2"];
const PORT_MIN: u16 = 3000;
const PORT_MAX: u16 = 3004;
const MAX: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Create {
        client: usize,
        cport: u16,
        proto: u8,
        target: usize,
        tport: u16,
    },
    Forward(usize),
    Reverse(usize),
    StrayReverse(usize),
    Observe(usize, u8, bool),
    Advance(u64),
    Timeout,
    Remove(usize),
    RemoveTarget(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, 1..4u16, 0..3u8, 0..2usize, 1..3u16)
            .prop_map(|(client, cport, proto, target, tport)| Op::Create { client, cport, proto, target, tport }),
        3 => (0..64usize).prop_map(Op::Forward),
        3 => (0..64usize).prop_map(Op::Reverse),
        1 => (0..64usize).prop_map(Op::StrayReverse),
        3 => (0..64usize, prop::sample::select(vec![0x02u8, 0x12, 0x10, 0x11, 0x04, 0x14]), any::<bool>())
            .prop_map(|(i, f, d)| Op::Observe(i, f, d)),
        3 => prop_oneof![0..5u64, 5..60u64, 60..400u64].prop_map(Op::Advance),
        2 => Just(Op::Timeout),
        1 => (0..64usize).prop_map(Op::Remove),
        1 => (0..2usize, any::<bool>()).prop_map(|(t, p)| Op::RemoveTarget(t, p)),
    ]
}

#[derive(Debug, Clone)]
struct MBinding {
    reverse: FlowKey,
    id: BindingId,
    last_seen: u64,
    class: TimeoutClass,
    // Independent TCP model: flags seen per direction.
    syn: [bool; 2],
    ack: [bool; 2],
    fin: [bool; 2],
    rst: bool,
    packets: [u64; 2],
}

impl MBinding {
    fn tcp_class(&self) -> TimeoutClass {
        if self.rst {
            TimeoutClass::TcpClosed
        } else if self.fin[0] && self.fin[1] {
            TimeoutClass::TcpTransitory
        } else if self.ack[0] && self.ack[1] {
            TimeoutClass::TcpEstablished
        } else {
            TimeoutClass::TcpTransitory
        }
    }
}

struct Model {
    cfg: NatConfig,
    now: u64,
    map: BTreeMap<FlowKey, MBinding>,
    /// Targets being swept: (ip, port or all); bindings towards them are doomed.
    doomed: Vec<(IpAddr, Option<u16>)>,
    /// `touch_granularity` in µs: how late expiry and how far from the earliest eviction may be.
    slack: u64,
}

impl Model {
    fn deadline(&self, b: &MBinding) -> u64 {
        b.last_seen + self.cfg.timeout(b.class).as_micros() as u64
    }
    fn is_doomed(&self, b: &MBinding) -> bool {
        self.doomed
            .iter()
            .any(|&(ip, p)| b.reverse.src == ip && p.is_none_or(|p| p == b.reverse.src_port))
    }
    fn nth(&self, i: usize) -> Option<(FlowKey, MBinding)> {
        if self.map.is_empty() {
            return None;
        }
        self.map
            .iter()
            .nth(i % self.map.len())
            .map(|(k, b)| (*k, b.clone()))
    }
}

/// Applies the table's events to the model, checking each is justified.
fn apply_events(t: &mut NatTable, m: &mut Model, created: &mut Vec<NatEvent>, full_before: bool) {
    while let Some(ev) = t.poll_event() {
        match ev {
            NatEvent::Created { .. } => created.push(ev),
            NatEvent::Removed {
                forward,
                reverse,
                reason,
                id,
                ..
            } => {
                let b = m
                    .map
                    .get(&forward)
                    .cloned()
                    .expect("removed binding was live in the model");
                assert_eq!(b.reverse, reverse);
                assert_eq!(b.id, id);
                let d = m.deadline(&b);
                match reason {
                    RemoveReason::Timeout(c) => {
                        assert_eq!(c, b.class);
                        assert!(d <= m.now, "expired before its deadline");
                    }
                    RemoveReason::Evicted => {
                        assert!(full_before, "evicted from a table that was not full");
                        assert!(d > m.now);
                        let min = m.map.values().map(|x| m.deadline(x)).min().unwrap();
                        assert!(
                            d <= min + m.slack,
                            "victim has the earliest deadline (within the granularity)"
                        );
                    }
                    RemoveReason::TargetRemoved => assert!(m.is_doomed(&b)),
                    RemoveReason::Removed => {}
                }
                m.map.remove(&forward);
            }
        }
    }
}

fn check_invariants(t: &NatTable, m: &Model) {
    assert_eq!(t.len(), m.map.len());
    assert!(t.len() <= MAX);
    let c = t.counters();
    assert_eq!(
        c.created,
        t.len() as u64 + c.expired_total() + c.evicted + c.removed + c.removed_target,
        "counters add up"
    );
    let mut pool_used = BTreeSet::new();
    for (k, b) in &m.map {
        let got = t.get_forward(k).expect("forward index has every live binding");
        assert_eq!(got.reverse, b.reverse);
        assert_eq!(got.class, b.class);
        assert_eq!(got.id, b.id);
        assert_eq!([got.forward_packets, got.reverse_packets], b.packets);
        assert_eq!(got.expires.as_micros(), m.deadline(b));
        let back = t
            .get_reverse(&b.reverse)
            .expect("reverse index has every live binding");
        assert_eq!(back.forward, *k, "bijection");
        let class = port_class(k.proto).unwrap();
        assert!(
            pool_used.insert((b.reverse.dst, b.reverse.dst_port, class)),
            "pool port shared"
        );
        assert!((PORT_MIN..=PORT_MAX).contains(&b.reverse.dst_port));
    }
    assert_eq!(t.iter().count(), m.map.len());
    for b in t.iter() {
        assert!(m.map.contains_key(&b.forward), "no binding outside the model");
    }
}

fn run(ops: Vec<Op>, seed: u64, granularity_s: u64) {
    let mut cfg = NatConfig::with_pool(vec![v4("198.51.100.1"), v4("2001:db8:e::1")]);
    cfg.port_min = PORT_MIN;
    cfg.port_max = PORT_MAX;
    cfg.max_entries = MAX as u32;
    cfg.udp_timeout = Duration::from_secs(30);
    cfg.icmp_timeout = Duration::from_secs(20);
    cfg.tcp_established_timeout = Duration::from_secs(300);
    cfg.tcp_transitory_timeout = Duration::from_secs(40);
    cfg.tcp_closed_timeout = Duration::from_secs(5);
    cfg.touch_granularity = Duration::from_secs(granularity_s);
    cfg.expiry_budget = 2;
    cfg.sweep_budget = 3;
    cfg.event_capacity = 64;
    let mut t = NatTable::new(cfg.clone(), seed).unwrap();
    let mut m = Model {
        cfg,
        now: 0,
        map: BTreeMap::new(),
        doomed: Vec::new(),
        slack: granularity_s * 1_000_000,
    };
    for op in ops {
        let now = Instant::from_micros(m.now);
        let full_before = m.map.len() == MAX;
        let mut created = Vec::new();
        match op {
            Op::Create {
                client,
                cport,
                proto,
                target,
                tport,
            } => {
                let proto = [IpProtocol::Tcp, IpProtocol::Udp, IpProtocol::Icmp][proto as usize];
                let v6 = client >= 2;
                let proto = if v6 && proto == IpProtocol::Icmp {
                    IpProtocol::Icmpv6
                } else {
                    proto
                };
                let k = FlowKey {
                    proto,
                    src: v4(CLIENTS[client]),
                    src_port: cport,
                    dst: v4(GROUPS[usize::from(v6)]),
                    dst_port: if proto.has_ports() { 53 } else { cport },
                };
                let tip = v4(if v6 {
                    TARGETS_V6[target]
                } else {
                    TARGETS_V4[target]
                });
                // Predict.
                let existing = m.map.get(&k).cloned();
                let live_existing = existing.as_ref().is_some_and(|b| m.deadline(b) > m.now);
                let class = port_class(proto).unwrap();
                let used = m
                    .map
                    .iter()
                    .filter(|(kk, _)| {
                        kk.src.is_ipv6() == v6
                            && port_class(kk.proto) == Some(class)
                            && !(live_existing && **kk == k)
                    })
                    .filter(|(kk, _)| !(existing.is_some() && !live_existing && **kk == k))
                    .count();
                let r = t.create(&k, (tip, tport), 9, now);
                apply_events(&mut t, &mut m, &mut created, full_before);
                if live_existing {
                    assert!(matches!(r, Err(NatError::AlreadyExists(id)) if id == existing.unwrap().id));
                } else if m
                    .doomed
                    .iter()
                    .any(|&(ip, p)| ip == tip && p.is_none_or(|p| p == tport))
                {
                    assert!(t.is_draining(tip, tport));
                    assert_eq!(r, Err(NatError::TargetDraining));
                } else if used == usize::from(PORT_MAX - PORT_MIN + 1) {
                    assert_eq!(r, Err(NatError::PortsExhausted));
                } else {
                    let tr = r.expect("create succeeds");
                    let pool = v4(if v6 { "2001:db8:e::1" } else { "198.51.100.1" });
                    assert_eq!(tr.src, pool);
                    assert_eq!(tr.dst, tip);
                    assert_eq!(tr.dst_port, if proto.has_ports() { tport } else { tr.src_port });
                    let reverse = FlowKey {
                        proto,
                        src: tr.dst,
                        src_port: tr.dst_port,
                        dst: tr.src,
                        dst_port: tr.src_port,
                    };
                    assert!(matches!(
                        created[..],
                        [NatEvent::Created { forward, reverse: r2, id, .. }] if forward == k && r2 == reverse && id == tr.id
                    ));
                    let class = match proto {
                        IpProtocol::Tcp => TimeoutClass::TcpTransitory,
                        IpProtocol::Udp => TimeoutClass::Udp,
                        _ => TimeoutClass::Icmp,
                    };
                    m.map.insert(
                        k,
                        MBinding {
                            reverse,
                            id: tr.id,
                            last_seen: m.now,
                            class,
                            syn: [false; 2],
                            ack: [false; 2],
                            fin: [false; 2],
                            rst: false,
                            packets: [0; 2],
                        },
                    );
                }
            }
            Op::Forward(i) | Op::Reverse(i) => {
                let fwd = matches!(op, Op::Forward(_));
                if let Some((k, b)) = m.nth(i) {
                    let r = if fwd {
                        t.lookup_forward(&k, 10, now)
                    } else {
                        t.lookup_reverse(&b.reverse, 10, now)
                    };
                    let expect_hit = m.deadline(&b) > m.now && !m.is_doomed(&b);
                    apply_events(&mut t, &mut m, &mut created, full_before);
                    if expect_hit {
                        let tr = r.expect("live binding hits");
                        if fwd {
                            assert_eq!(
                                (tr.src, tr.src_port, tr.dst, tr.dst_port),
                                (
                                    b.reverse.dst,
                                    b.reverse.dst_port,
                                    b.reverse.src,
                                    b.reverse.src_port
                                )
                            );
                        } else {
                            assert_eq!(
                                (tr.src, tr.src_port, tr.dst, tr.dst_port),
                                (k.dst, k.dst_port, k.src, k.src_port)
                            );
                        }
                        let mb = m.map.get_mut(&k).unwrap();
                        mb.last_seen = m.now;
                        mb.packets[usize::from(!fwd)] += 1;
                    } else {
                        assert_eq!(r, None);
                        assert!(!m.map.contains_key(&k), "a miss removed the binding");
                    }
                }
            }
            Op::StrayReverse(i) => {
                if let Some((_, b)) = m.nth(i) {
                    let mut stray = b.reverse;
                    stray.src_port = stray.src_port.wrapping_add(1000);
                    assert_eq!(t.lookup_reverse(&stray, 1, now), None);
                }
            }
            Op::Observe(i, flags, fwd) => {
                if let Some((k, b)) = m.nth(i) {
                    let dir = if fwd {
                        Direction::Forward
                    } else {
                        Direction::Reverse
                    };
                    let r = t.observe_tcp(b.id, TcpFlags(flags), dir, now);
                    let gone = m.deadline(&b) <= m.now || m.is_doomed(&b);
                    apply_events(&mut t, &mut m, &mut created, full_before);
                    if gone {
                        assert_eq!(r, None);
                        assert!(!m.map.contains_key(&k), "observe removed the dead binding");
                    } else if k.proto != IpProtocol::Tcp {
                        assert_eq!(r, None);
                    } else {
                        let mb = m.map.get_mut(&k).unwrap();
                        let d = usize::from(!fwd);
                        let (syn, ack, fin, rst) =
                            (flags & 2 != 0, flags & 0x10 != 0, flags & 1 != 0, flags & 4 != 0);
                        if rst {
                            mb.rst = true;
                        } else {
                            if syn && !ack && fwd && (mb.rst || (mb.fin[0] && mb.fin[1])) {
                                mb.syn = [false; 2];
                                mb.ack = [false; 2];
                                mb.fin = [false; 2];
                                mb.rst = false;
                            }
                            mb.syn[d] |= syn;
                            mb.ack[d] |= ack;
                            mb.fin[d] |= fin;
                        }
                        mb.class = mb.tcp_class();
                        mb.last_seen = m.now;
                        assert_eq!(r.map(|s| s.timeout_class()), Some(mb.class));
                    }
                }
            }
            Op::Advance(s) => m.now += s * 1_000_000,
            Op::Timeout => {
                let mut calls = 0;
                while t.poll_timeout().is_some_and(|d| d <= now) {
                    let n = t.handle_timeout(now);
                    assert!(n <= 2 + 3, "bounded work");
                    apply_events(&mut t, &mut m, &mut created, full_before);
                    calls += 1;
                    assert!(calls < 100);
                }
                // Everything due or doomed is gone.
                m.doomed.clear();
                for b in m.map.values() {
                    assert!(
                        m.deadline(b) + m.slack > m.now,
                        "due binding survived handle_timeout"
                    );
                }
            }
            Op::Remove(i) => {
                if let Some((k, b)) = m.nth(i) {
                    assert!(t.remove(&k));
                    apply_events(&mut t, &mut m, &mut created, full_before);
                    assert!(!m.map.contains_key(&k));
                    assert!(t.get_reverse(&b.reverse).is_none());
                    assert!(!t.remove(&k));
                }
            }
            Op::RemoveTarget(ti, with_port) => {
                let ip = v4(TARGETS_V4[ti]);
                let port = with_port.then_some(1);
                assert!(t.remove_where_target(ip, port));
                if t.is_draining(ip, 1) {
                    m.doomed.push((ip, port));
                }
            }
        }
        apply_events(&mut t, &mut m, &mut created, full_before);
        check_invariants(&t, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn nat_matches_model_exact_order(ops in proptest::collection::vec(op(), 1..120), seed: u64) {
        run(ops, seed, 0);
    }

    #[test]
    fn nat_matches_model_lazy_touch(ops in proptest::collection::vec(op(), 1..120), seed: u64) {
        run(ops, seed, 3);
    }
}

#[test]
fn lazy_touch_expires_at_most_one_granularity_late() {
    let mut c = cfg(&["198.51.100.1"]);
    c.touch_granularity = Duration::from_secs(3);
    let mut t = NatTable::new(c, 5).unwrap();
    let a = key(IpProtocol::Udp, "203.0.113.1", 1, "192.0.2.53", 53);
    let b = key(IpProtocol::Udp, "203.0.113.2", 1, "192.0.2.53", 53);
    t.create(&a, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    t.create(&b, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    // A hit 2 s later only records last_seen: `a` stays at the head, ahead of `b`.
    assert!(t.lookup_forward(&a, 0, secs(2)).is_some());
    assert_eq!(t.get_forward(&a).unwrap().expires, secs(122));
    assert_eq!(t.poll_timeout(), Some(secs(122)), "head is `a`");
    // `b` is due at 120 but waits behind `a`; a lookup still misses exactly at the deadline.
    assert_eq!(t.handle_timeout(secs(121)), 0);
    assert!(t.get_forward(&b).is_some());
    assert_eq!(
        t.handle_timeout(secs(122)),
        2,
        "both go, `b` 2 s late (< granularity)"
    );
    // With granularity 0 the order is exact.
    let mut c = cfg(&["198.51.100.1"]);
    c.touch_granularity = Duration::ZERO;
    let mut t = NatTable::new(c, 5).unwrap();
    t.create(&a, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    t.create(&b, (v4("10.0.0.7"), 53), 0, secs(0)).unwrap();
    t.lookup_forward(&a, 0, secs(2));
    assert_eq!(t.poll_timeout(), Some(secs(120)));
    assert_eq!(t.handle_timeout(secs(121)), 1);
    assert!(t.get_forward(&b).is_none());
    // A lookup of a due binding misses even before handle_timeout runs.
    assert_eq!(t.lookup_forward(&a, 0, secs(122)), None);
    assert_eq!(t.counters().expired(TimeoutClass::Udp), 2);
}
