//! Registry and agent together: real bytes both ways, replies stripped of IP and UDP with the wire views.

use super::*;
use crate::agent::{AgentConfig, AgentEvent, AgentState, LostReason, TargetAgent};
use pias_proto::ipv4::Ipv4Packet;
use pias_proto::ipv6::Ipv6Packet;
use pias_proto::udp::UdpPacket;
use proptest::prelude::*;

mod agent;
mod arbitrary;
mod choice;
mod hysteresis;
mod registration;
mod security;
mod watch;

const MASTER: [u8; 32] = [9; 32];
const MS: u64 = 1000;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn group() -> TransportAddr {
    TransportAddr::new("192.0.2.10".parse().unwrap(), 53, IpProtocol::Udp)
}

fn group_n(n: u16) -> TransportAddr {
    TransportAddr::new("192.0.2.10".parse().unwrap(), 1000 + n, IpProtocol::Udp)
}

fn service(n: u16) -> TransportAddr {
    TransportAddr::new(
        IpAddr::V4(core::net::Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
        5353,
        IpProtocol::Udp,
    )
}

fn reg_addr() -> SocketAddr {
    "192.0.2.1:6082".parse().unwrap()
}

fn agent_addr(n: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(core::net::Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8)),
        40000,
    )
}

fn registry_with(cfg: RegistryConfig, jap: u32) -> Registry {
    Registry::new(
        cfg,
        MasterKey::from_bytes(MASTER),
        ProxyId(jap),
        &crate::secrets::Secrets::from_seed_for_tests(u64::from(jap)),
        u64::from(jap),
    )
    .unwrap()
}

fn registry(jap: u32) -> Registry {
    registry_with(RegistryConfig::default(), jap)
}

fn agent_cfg(g: TransportAddr, s: TransportAddr, registration: SocketAddr) -> AgentConfig {
    let key = MasterKey::from_bytes(MASTER).group_key(&g);
    AgentConfig::new(g, s, DeliveryMode::Nat, registration, key, 7, 1)
}

/// Strips IP and UDP from a reply, checking both checksums; returns (source, destination, payload).
fn strip(pkt: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    match pkt[0] >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(pkt).unwrap();
            assert!(ip.verify_checksum(), "ipv4 header checksum");
            assert_eq!(ip.protocol(), IpProtocol::Udp);
            assert_eq!(ip.total_len(), pkt.len());
            let (s, d) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert_ne!(udp.checksum(), 0, "replies carry a UDP checksum");
            assert!(udp.verify_checksum(&s, &d), "udp checksum");
            (
                SocketAddr::new(s, udp.src_port()),
                SocketAddr::new(d, udp.dst_port()),
                udp.payload().to_vec(),
            )
        }
        6 => {
            let ip = Ipv6Packet::new_checked(pkt).unwrap();
            assert_eq!(ip.next_header(), IpProtocol::Udp);
            let (s, d) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(udp.verify_checksum(&s, &d), "udp checksum");
            (
                SocketAddr::new(s, udp.src_port()),
                SocketAddr::new(d, udp.dst_port()),
                udp.payload().to_vec(),
            )
        }
        v => panic!("not an IP packet (version {v})"),
    }
}

/// Every queued reply of `reg`, stripped.
fn replies(reg: &mut Registry) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(tx) = reg.poll_transmit(&mut buf) {
        assert_eq!(tx.dest, Dest::Host);
        out.push(strip(&buf[..tx.len]));
    }
    out
}

fn events(reg: &mut Registry) -> Vec<RegistryEvent> {
    core::iter::from_fn(|| reg.poll_event()).collect()
}

fn agent_events(a: &mut TargetAgent) -> Vec<AgentEvent> {
    core::iter::from_fn(|| a.poll_event()).collect()
}

/// An agent and the registry anycast currently leads it to.
struct Pair {
    now: Instant,
    agent: TargetAgent,
    me: SocketAddr,
    /// Registries; `route` is the one the agent's datagrams reach (`None`: the path is cut).
    regs: Vec<Registry>,
    route: Option<usize>,
    /// Datagrams the agent sent (payloads), for replay tests.
    sent: Vec<Vec<u8>>,
}

impl Pair {
    fn new(registration: SocketAddr, me: SocketAddr) -> Pair {
        let mut cfg = agent_cfg(
            group(),
            TransportAddr::new(me.ip(), 5353, IpProtocol::Udp),
            registration,
        );
        if me.is_ipv6() {
            cfg.mode = DeliveryMode::Tunnel; // an IPv6 target of an IPv4 group
        }
        Pair {
            now: Instant::ZERO,
            agent: TargetAgent::new(cfg).unwrap(),
            me,
            regs: vec![registry(1)],
            route: Some(0),
            sent: vec![],
        }
    }

    /// An agent registered with JAP 1 (its events taken) at t = 1 s, JAP 2 standing by.
    fn registered_with_first_of_two() -> Pair {
        let mut p = Pair::new(reg_addr(), agent_addr(5));
        p.regs.push(registry(2));
        p.run_until(t(1000));
        agent_events(&mut p.agent);
        p
    }

    /// Agent → registry, then registry → agent, once. Returns (datagrams sent by the agent, replies).
    fn exchange(&mut self) -> (usize, usize) {
        let mut buf = [0u8; 1500];
        let reg_addr = self.agent.config().registration;
        let mut n_out = 0;
        while let Some(n) = self.agent.poll_transmit(self.now, &mut buf) {
            n_out += 1;
            self.sent.push(buf[..n].to_vec());
            if let Some(r) = self.route {
                let _ = self.regs[r].handle_target_packet(self.now, reg_addr, self.me, &buf[..n]);
            }
        }
        let mut n_in = 0;
        if let Some(r) = self.route {
            for (src, dst, payload) in replies(&mut self.regs[r]) {
                assert_eq!(src, reg_addr, "replies come from the registration address");
                assert_eq!(dst, self.me);
                self.agent.handle_datagram(self.now, src, &payload).unwrap();
                n_in += 1;
            }
        }
        (n_out, n_in)
    }

    /// Runs to `until` in 1 ms steps, exchanging and running timers.
    fn run_until(&mut self, until: Instant) {
        while self.now < until {
            self.now += Duration::from_millis(1);
            self.agent.handle_timeout(self.now);
            for r in &mut self.regs {
                r.handle_timeout(self.now);
            }
            self.exchange();
        }
    }
}

use core::time::Duration;

// ----- helpers building messages directly (many targets, fast) -----

fn register_bytes(
    key: &MacKey,
    g: &TransportAddr,
    s: &TransportAddr,
    cookie: [u8; COOKIE_LEN],
    seq: u64,
    weight: u16,
) -> Vec<u8> {
    let msg = Message::Register(Register {
        group: *g,
        service: *s,
        mode: DeliveryMode::Nat,
        weight,
        cookie,
    });
    let mut b = vec![0u8; msg.buffer_len()];
    msg.emit(
        ControlHeader {
            sender: ProxyId::NONE,
            seq,
            time_ms: 0,
        },
        key,
        pias_proto::control::Binding::Target,
        &mut b,
    )
    .unwrap();
    b
}

fn op_bytes(key: &MacKey, g: &TransportAddr, s: &TransportAddr, seq: u64, refresh: bool) -> Vec<u8> {
    let op = TargetOp {
        group: *g,
        service: *s,
    };
    let msg = if refresh {
        Message::Refresh(op)
    } else {
        Message::Deregister(op)
    };
    let mut b = vec![0u8; msg.buffer_len()];
    msg.emit(
        ControlHeader {
            sender: ProxyId::NONE,
            seq,
            time_ms: 0,
        },
        key,
        pias_proto::control::Binding::Target,
        &mut b,
    )
    .unwrap();
    b
}

/// Sends a zero-cookie Register (for `group()`-keyed `key`) and returns (replies seen, cookie).
fn challenge(
    reg: &mut Registry,
    now: Instant,
    from: SocketAddr,
    key: &MacKey,
    seq: u64,
) -> (usize, [u8; COOKIE_LEN]) {
    let g = group();
    reg.handle_target_packet(
        now,
        reg_addr(),
        from,
        &register_bytes(key, &g, &service(0), [0; COOKIE_LEN], seq, 1),
    )
    .unwrap();
    let r = replies(reg);
    let pkt = ControlPacket::new_checked(&r[0].2).unwrap();
    pkt.verify(key, pias_proto::control::Binding::Target).unwrap();
    match pkt.message().unwrap() {
        Message::Challenge(c) => (r.len(), c.cookie),
        m => panic!("{m:?}"),
    }
}

/// Full two-round-trip registration, replies consumed.
#[allow(clippy::too_many_arguments)]
fn register_direct(
    reg: &mut Registry,
    now: Instant,
    from: SocketAddr,
    key: &MacKey,
    g: &TransportAddr,
    s: &TransportAddr,
    weight: u16,
    seq: u64,
) -> Result<(), RegistryError> {
    reg.handle_target_packet(
        now,
        reg_addr(),
        from,
        &register_bytes(key, g, s, [0; COOKIE_LEN], seq, weight),
    )?;
    let r = replies(reg);
    let pkt = ControlPacket::new_checked(&r[0].2).unwrap();
    let Message::Challenge(c) = pkt.message().unwrap() else {
        panic!()
    };
    let res = reg.handle_target_packet(
        now,
        reg_addr(),
        from,
        &register_bytes(key, g, s, c.cookie, seq + 1, weight),
    );
    replies(reg);
    res
}

// ----- flows and addresses -----

fn flow_from(src: IpAddr, port: u16) -> FlowKey {
    FlowKey {
        proto: IpProtocol::Udp,
        src,
        src_port: port,
        dst: group().ip,
        dst_port: 53,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
