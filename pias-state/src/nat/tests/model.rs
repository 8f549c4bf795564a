//! Model-based property test: random operations against a simple model of the table.

use super::*;

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const CLIENTS: [&str; 4] = ["203.0.113.1", "203.0.113.2", "2001:db8:c::1", "2001:db8:c::2"];
const GROUPS: [&str; 2] = ["192.0.2.1", "2001:db8:a::1"];
const TARGETS_V4: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const TARGETS_V6: [&str; 2] = ["2001:db8:f::1", "2001:db8:f::2"];
const PORT_MIN: u16 = 3000;
const PORT_MAX: u16 = 3004;
const MAX: usize = 8;
/// `new_per_prefix`: the two v4 clients share a /24, the two v6 clients a /56.
const CAP: usize = 3;

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
    /// Creation time in whole seconds, and whether it is still new (counted against its prefix's cap).
    created_s: u64,
    fresh: bool,
}

impl MBinding {
    fn tcp_class(&self) -> TimeoutClass {
        if self.rst {
            TimeoutClass::TcpClosed
        } else if self.fin[0] && self.fin[1] {
            TimeoutClass::TcpTransitory
        } else if self.ack[0] && self.ack[1] {
            TimeoutClass::TcpEstablished
        } else if !(self.syn[1] || self.ack[1] || self.fin[1]) {
            TimeoutClass::TcpHalfOpen
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
    /// New bindings of `client`'s prefix (the test's clients: one v4 and one v6 prefix).
    fn fresh_in_prefix(&self, v6: bool, except: Option<&FlowKey>) -> usize {
        self.map
            .iter()
            .filter(|(k, b)| b.fresh && k.src.is_ipv6() == v6 && Some(*k) != except)
            .count()
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
                        assert!(d > m.now);
                        assert!(
                            b.class.is_transitory(),
                            "early drop never takes a protected binding"
                        );
                        // Whether for entries or for ports, no transitory binding of the victim's family and
                        // port class was seen longer ago (within the granularity).
                        let class = port_class(forward.proto);
                        let same = m.map.iter().filter(|(k, x)| {
                            x.class.is_transitory()
                                && k.src.is_ipv6() == forward.src.is_ipv6()
                                && port_class(k.proto) == class
                        });
                        let min = same.map(|(_, x)| x.last_seen).min().unwrap();
                        assert!(
                            b.last_seen <= min + m.slack,
                            "early drop takes the oldest transitory binding (within the granularity)"
                        );
                        let ports_full = m
                            .map
                            .keys()
                            .filter(|k| {
                                k.src.is_ipv6() == forward.src.is_ipv6() && port_class(k.proto) == class
                            })
                            .count()
                            == usize::from(PORT_MAX - PORT_MIN + 1);
                        assert!(full_before || ports_full, "early drop without need");
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
        t.len() as u64 + c.expired_total() + c.early_drop + c.removed + c.removed_target,
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
        assert_eq!(
            t.new_in_prefix(k.src) as usize,
            m.fresh_in_prefix(k.src.is_ipv6(), None),
            "prefix count"
        );
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
    cfg.udp_transitory_timeout = Duration::from_secs(10);
    cfg.tcp_half_open_timeout = Duration::from_secs(8);
    cfg.new_per_prefix = CAP as u32;
    cfg.icmp_timeout = Duration::from_secs(20);
    cfg.tcp_established_timeout = Duration::from_secs(300);
    cfg.tcp_transitory_timeout = Duration::from_secs(40);
    cfg.tcp_closed_timeout = Duration::from_secs(5);
    cfg.touch_granularity = Duration::from_secs(granularity_s);
    cfg.expiry_budget = 2;
    cfg.sweep_budget = 3;
    cfg.event_capacity = 64;
    let mut t = NatTable::new(cfg.clone(), crate::secrets::table_key_for_tests(seed)).unwrap();
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
                let stale = existing.as_ref().filter(|_| !live_existing).map(|_| &k);
                let at_cap = m.fresh_in_prefix(v6, stale) >= CAP;
                let droppable_ports = m.map.iter().any(|(kk, b)| {
                    kk.src.is_ipv6() == v6
                        && port_class(kk.proto) == Some(class)
                        && b.class.is_transitory()
                        && Some(kk) != stale
                });
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
                } else if at_cap {
                    assert_eq!(r, Err(NatError::PrefixCap));
                } else if used == usize::from(PORT_MAX - PORT_MIN + 1) && !droppable_ports {
                    assert_eq!(r, Err(NatError::PortsExhausted));
                } else if r == Err(NatError::Full) {
                    // Only when every binding is protected (none due, up to the granularity).
                    assert_eq!(m.map.len(), MAX);
                    for b in m.map.values() {
                        assert!(
                            !b.class.is_transitory(),
                            "refused while a transitory binding was there"
                        );
                        assert!(m.deadline(b) + m.slack > m.now, "refused while a binding was due");
                    }
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
                        IpProtocol::Tcp => TimeoutClass::TcpHalfOpen,
                        IpProtocol::Udp => TimeoutClass::UdpTransitory,
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
                            created_s: m.now / 1_000_000,
                            fresh: true,
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
                        let now_s = m.now / 1_000_000;
                        let mb = m.map.get_mut(&k).unwrap();
                        mb.last_seen = m.now;
                        mb.packets[usize::from(!fwd)] += 1;
                        if mb.class == TimeoutClass::UdpTransitory
                            && mb.packets[1] > 0
                            && now_s >= mb.created_s + u64::from(UDP_ASSURE_AFTER_S)
                        {
                            mb.class = TimeoutClass::Udp;
                            mb.fresh = false;
                        }
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
                        let old = mb.class;
                        mb.class = mb.tcp_class();
                        if mb.class != old && mb.class == TimeoutClass::TcpEstablished {
                            mb.fresh = false;
                        }
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
