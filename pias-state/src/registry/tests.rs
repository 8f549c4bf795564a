//! Registry and agent together: real bytes both ways, replies stripped of IP and UDP with the wire views.

use super::*;
use crate::agent::{AgentConfig, AgentEvent, AgentState, LostReason, TargetAgent};
use pias_proto::ipv4::Ipv4Packet;
use pias_proto::ipv6::Ipv6Packet;
use pias_proto::udp::UdpPacket;
use proptest::prelude::*;

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
        [jap as u8; 32],
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

#[test]
fn registration_completes_in_two_round_trips_v4_and_v6() {
    for (registration, me) in [
        (reg_addr(), agent_addr(5)),
        (
            "[2001:db8::1]:6082".parse().unwrap(),
            "[2001:db8:1::5]:40000".parse().unwrap(),
        ),
    ] {
        let mut p = Pair::new(registration, me);
        p.agent.config(); // (getter smoke)
        assert_eq!(p.exchange(), (1, 1), "round trip 1: Register → Challenge");
        assert_eq!(p.agent.state(), AgentState::Registering);
        assert_eq!(
            p.exchange(),
            (1, 1),
            "round trip 2: Register with cookie → RegisterAck Ok"
        );
        assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
        assert_eq!(
            agent_events(&mut p.agent),
            vec![AgentEvent::Registered { jap: ProxyId(1) }]
        );
        let reg = &mut p.regs[0];
        assert_eq!(reg.group_count(&group()), 1);
        let evs = events(reg);
        assert!(matches!(evs[..], [RegistryEvent::TargetUp { group: g, .. }] if g == group()));
        let info: Vec<_> = reg.targets(&group()).collect();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].source, me);
        assert_eq!(info[0].local, registration);
        let flags = if me.is_ipv6() { FLAG_TUNNEL } else { 0 };
        assert_eq!(
            reg.poll_report(),
            Some(GroupReport {
                group: group(),
                count: 1,
                flags
            })
        );
        assert_eq!(reg.counters().challenges, 1);
        assert_eq!(reg.counters().registered, 1);
    }
}

#[test]
fn refresh_keeps_alive_and_silence_expires_after_exactly_hold() {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.run_until(t(10_000));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
    assert_eq!(p.regs[0].group_count(&group()), 1, "refreshes keep the target");
    assert!(p.regs[0].counters().refreshed >= 45, "{:?}", p.regs[0].counters());
    assert_eq!(p.regs[0].counters().expired, 0);
    events(&mut p.regs[0]);

    // The agent goes silent (the path is cut).
    let last = p.regs[0].targets(&group()).next().unwrap().last_refresh;
    p.route = None;
    let reg = &mut p.regs[0];
    assert_eq!(reg.poll_timeout(), Some(last + Duration::from_millis(700)));
    reg.handle_timeout(last + Duration::from_micros(699_999));
    assert_eq!(reg.group_count(&group()), 1, "alive until hold_ms has passed");
    reg.handle_timeout(last + Duration::from_millis(700));
    assert_eq!(reg.group_count(&group()), 0, "removed at last refresh + hold_ms");
    assert!(matches!(
        events(reg)[..],
        [RegistryEvent::TargetDown {
            reason: DownReason::Expired,
            ..
        }]
    ));
    assert_eq!(reg.poll_timeout(), None);
    assert_eq!(reg.counters().expired, 1);
}

#[test]
fn deregister_removes_at_once() {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.run_until(t(1000));
    events(&mut p.regs[0]);
    agent_events(&mut p.agent);
    p.agent.shutdown(p.now);
    assert_eq!(p.agent.state(), AgentState::Leaving);
    assert_eq!(p.exchange(), (1, 1));
    assert_eq!(p.regs[0].group_count(&group()), 0);
    assert!(matches!(
        events(&mut p.regs[0])[..],
        [RegistryEvent::TargetDown {
            reason: DownReason::Deregistered,
            ..
        }]
    ));
    assert_eq!(p.agent.state(), AgentState::Stopped);
    assert_eq!(agent_events(&mut p.agent), vec![AgentEvent::Deregistered]);
    assert_eq!(p.agent.poll_timeout(), None);
    assert_eq!(p.exchange(), (0, 0), "a stopped agent sends nothing");
}

#[test]
fn agent_detects_dead_jap_within_hold_and_reregisters_elsewhere() {
    let mut p = Pair::registered_with_first_of_two();
    // JAP 1 dies: nothing reaches it any more, nothing comes back.
    p.route = None;
    let cut = p.now;
    let mut lost_at = None;
    while lost_at.is_none() && p.now < t(5000) {
        p.run_until(p.now + Duration::from_millis(1));
        if agent_events(&mut p.agent).contains(&AgentEvent::JapLost {
            jap: ProxyId(1),
            reason: LostReason::Silent,
        }) {
            lost_at = Some(p.now);
        }
    }
    let lost_at = lost_at.expect("JAP loss detected");
    assert!(
        lost_at - cut <= Duration::from_millis(700),
        "detected after {:?}",
        lost_at - cut
    );
    // Routing converges on proxy 2 some time later; the agent keeps retrying every refresh_ms.
    p.run_until(lost_at + Duration::from_millis(1000));
    assert!(
        p.agent.counters().sent_register >= 5 + 2,
        "{:?}",
        p.agent.counters()
    );
    p.route = Some(1);
    let moved = p.now;
    p.run_until(moved + Duration::from_millis(250));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(2) });
    // A second of unanswered Registers was told to the user, then that an answer came.
    let evs = agent_events(&mut p.agent);
    assert!(
        matches!(
            evs[..],
            [
                AgentEvent::Unanswered { attempts: 5, .. },
                AgentEvent::Answered { .. },
                AgentEvent::Registered { jap: ProxyId(2) }
            ]
        ),
        "{evs:?}"
    );
    assert_eq!(p.regs[1].group_count(&group()), 1);
    // Proxy 1 expired it meanwhile.
    assert_eq!(p.regs[0].group_count(&group()), 0);
}

#[test]
fn route_change_gets_gone_and_reregisters_at_once() {
    let mut p = Pair::registered_with_first_of_two();
    p.route = Some(1);
    let moved = p.now;
    p.run_until(moved + Duration::from_millis(201));
    // Refresh → Gone → Register → Challenge → Register → Ok, all in one refresh interval.
    let evs = agent_events(&mut p.agent);
    assert_eq!(
        evs,
        vec![
            AgentEvent::JapLost {
                jap: ProxyId(1),
                reason: LostReason::Gone
            },
            AgentEvent::Registered { jap: ProxyId(2) }
        ]
    );
    assert_eq!(p.regs[1].counters().unknown_registration, 1);
}

#[test]
fn draining_jap_sends_its_targets_elsewhere_within_refreshes() {
    let mut p = Pair::registered_with_first_of_two();
    assert_eq!(p.regs[0].group_count(&group()), 1);
    // Proxy 1 starts leaving; routing still leads to it for another 300 ms (its withdrawal converging).
    p.regs[0].drain();
    let left = p.now;
    p.run_until(left + Duration::from_millis(300));
    let evs = agent_events(&mut p.agent);
    assert_eq!(
        evs.first(),
        Some(&AgentEvent::JapLost {
            jap: ProxyId(1),
            reason: LostReason::Draining
        }),
        "{evs:?}"
    );
    // A Register that still reaches proxy 1 is refused too (after the cookie checks), and registers nothing.
    assert!(
        evs[1..].iter().all(|e| matches!(
            e,
            AgentEvent::Refused {
                status: RegAckStatus::Draining,
                ..
            }
        )),
        "{evs:?}"
    );
    assert!(p.regs[0].counters().refused_draining >= 1);
    assert_eq!(
        p.regs[0].counters().registered,
        1,
        "nothing new registered while draining"
    );
    // The registration already there stays for flows bound through proxy 1: it no longer expires.
    assert_eq!(p.regs[0].group_count(&group()), 1);
    assert_eq!(p.regs[0].poll_timeout(), None, "nothing to expire while draining");
    p.route = Some(1);
    let moved = p.now;
    p.run_until(moved + Duration::from_millis(250));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(2) });
    assert_eq!(p.regs[1].group_count(&group()), 1);
    // With Draining the target moved within two refresh intervals of the routing change, where a JAP that
    // simply stopped costs `hold_ms` of silence first (agent_detects_dead_jap_within_hold_...).
    p.run_until(left + Duration::from_millis(3000));
    assert_eq!(
        p.regs[0].group_count(&group()),
        1,
        "kept on proxy 1 until it stops"
    );
    assert_eq!(p.regs[0].counters().expired, 0);
}

// ----- security -----

#[test]
fn wrong_group_key_is_refused_without_state() {
    let mut reg = registry(1);
    let mut cfg = agent_cfg(group(), service(5), reg_addr());
    cfg.key = MasterKey::from_bytes([1; 32]).group_key(&group());
    let mut a = TargetAgent::new(cfg.clone()).unwrap();
    let mut buf = [0u8; 1500];
    let n = a.poll_transmit(t(0), &mut buf).unwrap();
    assert_eq!(
        reg.handle_target_packet(t(0), reg_addr(), agent_addr(5), &buf[..n]),
        Err(RegistryError::BadMac)
    );
    // The key of another group is wrong too.
    cfg.key = MasterKey::from_bytes(MASTER).group_key(&group_n(1));
    let mut a = TargetAgent::new(cfg).unwrap();
    let n = a.poll_transmit(t(0), &mut buf).unwrap();
    assert_eq!(
        reg.handle_target_packet(t(0), reg_addr(), agent_addr(5), &buf[..n]),
        Err(RegistryError::BadMac)
    );
    assert_eq!(reg.counters().bad_mac, 2);
    assert!(reg.is_empty());
    assert_eq!(reg.cached_keys(), 0, "no key is cached for unauthenticated input");
    assert!(replies(&mut reg).is_empty(), "no answer to a bad MAC");
    assert_eq!(reg.poll_event(), None);
    assert_eq!(reg.poll_report(), None);
}

/// A Pair whose agent holds `key` instead of its group's key.
fn pair_with_key(key: MacKey, check: bool) -> Pair {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    let mut cfg = p.agent.config().clone();
    cfg.key = key;
    cfg.check = check;
    p.agent = TargetAgent::new(cfg).unwrap();
    p
}

#[test]
fn a_wrong_key_is_told_to_the_agents_user_within_a_second_and_the_agent_keeps_trying() {
    use crate::agent::{UNANSWERED_WARN_AFTER, UNANSWERED_WARN_ATTEMPTS};
    let wrong = MasterKey::from_bytes(MASTER).group_key(&group_n(1));
    let mut p = pair_with_key(wrong, false);
    let mut warned_at = None;
    while p.now < t(5000) {
        p.run_until(p.now + Duration::from_millis(10));
        for ev in agent_events(&mut p.agent) {
            if let AgentEvent::Unanswered { attempts, waited } = ev {
                warned_at.get_or_insert((p.now, attempts, waited));
            }
        }
    }
    let (at, attempts, waited) = warned_at.expect("the agent warns about unanswered registrations");
    assert!(at <= t(1100), "warned at {at}, not within about a second");
    assert!(attempts >= UNANSWERED_WARN_ATTEMPTS || waited >= UNANSWERED_WARN_AFTER);
    // The JAP stayed silent (no oracle), and the agent kept trying at its refresh rate.
    assert!(p.regs[0].is_empty());
    assert_eq!(p.regs[0].counters().bad_mac, p.agent.counters().sent_register);
    assert!(p.agent.counters().sent_register >= 24, "{:?}", p.agent.counters());
    assert_eq!(p.agent.state(), AgentState::Registering);
    // Repeated at each doubling, not at every attempt: 5, 10, 20 in five seconds.
    assert_eq!(p.agent.counters().unanswered_warnings, 3);
}

#[test]
fn unanswered_then_answered_is_told_once_each() {
    // The path is cut: no warning before the threshold, one at it, an Answered once the path is back,
    // and the agent registers.
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.route = None;
    p.run_until(t(700));
    assert!(
        agent_events(&mut p.agent).is_empty(),
        "no warning before the threshold"
    );
    p.run_until(t(1050));
    let evs = agent_events(&mut p.agent);
    assert!(
        matches!(evs[..], [AgentEvent::Unanswered { attempts: 5, .. }]),
        "{evs:?}"
    );
    p.route = Some(0);
    p.run_until(t(1500));
    let evs = agent_events(&mut p.agent);
    assert!(
        matches!(evs[0], AgentEvent::Answered { after_attempts } if after_attempts >= 6),
        "{evs:?}"
    );
    assert!(matches!(evs[1], AgentEvent::Registered { .. }), "{evs:?}");
    // Registered for a long time: refreshes are not registrations, nothing more is said.
    p.run_until(t(5000));
    assert!(agent_events(&mut p.agent).is_empty());
    assert_eq!(p.agent.counters().unanswered_warnings, 1);
}

#[test]
fn check_mode_ends_registered_then_deregistered_or_unanswered() {
    use crate::agent::CheckOutcome;
    // The right key: registered, then deregistered at once, and the JAP holds nothing.
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let mut p = pair_with_key(key, true);
    p.run_until(t(300));
    assert!(matches!(p.agent.check_outcome(), Some(CheckOutcome::Registered { jap }) if jap == ProxyId(1)));
    assert_eq!(p.agent.state(), AgentState::Stopped);
    assert!(p.regs[0].is_empty(), "the check deregistered");
    // The wrong key: stopped, unanswered, after about a second.
    let wrong = MasterKey::from_bytes([1; 32]).group_key(&group());
    let mut p = pair_with_key(wrong, true);
    p.run_until(t(900));
    assert_eq!(p.agent.check_outcome(), None);
    p.run_until(t(1100));
    assert_eq!(
        p.agent.check_outcome(),
        Some(CheckOutcome::Unanswered { attempts: 5 })
    );
    assert_eq!(p.agent.state(), AgentState::Stopped);
    let sent = p.agent.counters().sent_register;
    p.run_until(t(3000));
    assert_eq!(
        p.agent.counters().sent_register,
        sent,
        "a stopped check sends nothing"
    );
    assert_eq!(p.agent.poll_timeout(), None);
}

/// Drives `p` to registration and returns the Register-with-cookie payload it sent.
fn registered_pair() -> (Pair, Vec<u8>) {
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.exchange();
    p.exchange();
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
    let with_cookie = p.sent[1].clone();
    (p, with_cookie)
}

#[test]
fn register_replays_are_refused() {
    let (mut p, register) = registered_pair();
    let (me, reg) = (p.me, &mut p.regs[0]);
    // Replay while registered: the registration's window has seen it.
    assert_eq!(
        reg.handle_target_packet(t(1), reg_addr(), me, &register),
        Err(RegistryError::Replay)
    );
    // Deregister, then replay within the cookie's life: the tombstone has seen it.
    p.agent.shutdown(t(2));
    p.now = t(2);
    p.exchange();
    let reg = &mut p.regs[0];
    assert_eq!(reg.group_count(&group()), 0);
    assert_eq!(
        reg.handle_target_packet(t(3), reg_addr(), me, &register),
        Err(RegistryError::Replay)
    );
    assert_eq!(reg.counters().tombstone_replay, 1);
    // Two cookie periods later the cookie itself is stale.
    let later = t(2 * 30_000 + 10);
    assert_eq!(
        reg.handle_target_packet(later, reg_addr(), me, &register),
        Err(RegistryError::BadCookie)
    );
    assert_eq!(reg.group_count(&group()), 0);
    assert_eq!(reg.counters().bad_cookie, 1);
    assert!(replies(reg).is_empty());
}

#[test]
fn stale_cookie_is_refused_even_without_tombstone() {
    let cfg = RegistryConfig {
        max_tombstones: 1,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let (first, cookie) = challenge(&mut reg, t(0), agent_addr(5), &key, 1);
    assert_eq!(first, 1);
    let reg_msg = register_bytes(&key, &group(), &service(5), cookie, 2, 1);
    // Previous epoch: still fine (but do not use it yet).
    assert!(reg.cookie_ok(t(30_000 + 5), agent_addr(5), &group(), &cookie));
    assert_eq!(
        reg.handle_target_packet(t(60_000), reg_addr(), agent_addr(5), &reg_msg),
        Err(RegistryError::BadCookie),
        "two epochs later"
    );
    assert!(reg.is_empty());
}

#[test]
fn cookie_of_another_source_is_refused() {
    let (mut p, register) = registered_pair();
    let reg = &mut p.regs[0];
    let other = agent_addr(6);
    assert_eq!(
        reg.handle_target_packet(t(1), reg_addr(), other, &register),
        Err(RegistryError::BadCookie)
    );
    let port = SocketAddr::new(p.me.ip(), p.me.port() + 1);
    assert_eq!(
        reg.handle_target_packet(t(1), reg_addr(), port, &register),
        Err(RegistryError::BadCookie)
    );
    assert_eq!(reg.counters().bad_cookie, 2);
    let info: Vec<_> = reg.targets(&group()).collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].source, p.me, "the registration did not move");
}

#[test]
fn refresh_replay_and_foreign_refresh_are_refused() {
    let (mut p, _) = registered_pair();
    p.now = t(300);
    p.exchange();
    let refresh = p.sent.last().unwrap().clone();
    assert_eq!(p.regs[0].counters().refreshed, 1);
    let reg = &mut p.regs[0];
    assert_eq!(
        reg.handle_target_packet(t(301), reg_addr(), p.me, &refresh),
        Err(RegistryError::Replay)
    );
    assert_eq!(reg.counters().replay, 1);
    assert!(replies(reg).is_empty(), "a replay gets no answer");
    // The same refresh from another source: Gone, and nothing refreshed.
    let last = reg.targets(&group()).next().unwrap().last_refresh;
    assert_eq!(
        reg.handle_target_packet(t(400), reg_addr(), agent_addr(9), &refresh),
        Err(RegistryError::UnknownRegistration)
    );
    assert_eq!(reg.targets(&group()).next().unwrap().last_refresh, last);
    let r = replies(reg);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, agent_addr(9));
    // A replayed Deregister from the right source does nothing either.
    p.agent.shutdown(t(500));
    let mut buf = [0u8; 1500];
    let n = p.agent.poll_transmit(t(500), &mut buf).unwrap();
    let dereg = buf[..n].to_vec();
    let reg = &mut p.regs[0];
    assert_eq!(
        reg.handle_target_packet(t(500), reg_addr(), agent_addr(9), &dereg),
        Err(RegistryError::UnknownRegistration)
    );
    assert_eq!(
        reg.group_count(&group()),
        1,
        "deregister from another source removes nothing"
    );
    assert_eq!(reg.handle_target_packet(t(500), reg_addr(), p.me, &dereg), Ok(()));
    assert_eq!(reg.group_count(&group()), 0);
}

#[test]
fn forged_and_replayed_acks_are_ignored_by_the_agent() {
    let (mut p, _) = registered_pair();
    agent_events(&mut p.agent);
    let good_key = p.agent.config().key.clone();
    let me = p.agent.config().service;
    let ack = |status, key: &MacKey, seq, service| {
        let jap = if seq == 2 { ProxyId(1) } else { ProxyId(66) };
        let msg = Message::RegisterAck(RegisterAck {
            group: group(),
            service,
            status,
            jap,
            refresh_ms: 200,
            hold_ms: 700,
        });
        let mut b = vec![0u8; msg.buffer_len()];
        msg.emit(
            ControlHeader {
                sender: ProxyId::NONE,
                seq,
            },
            key,
            &mut b,
        )
        .unwrap();
        b
    };
    let before = (p.agent.state(), *p.agent.counters());
    let bad_key = MacKey::from_bytes([5; 32]);
    let a = &mut p.agent;
    assert_eq!(
        a.handle_datagram(t(1), reg_addr(), &ack(RegAckStatus::Gone, &bad_key, u64::MAX, me)),
        Err(crate::agent::AgentError::BadMac)
    );
    assert_eq!(
        a.handle_datagram(
            t(1),
            agent_addr(77),
            &ack(RegAckStatus::Gone, &good_key, u64::MAX, me)
        ),
        Err(crate::agent::AgentError::WrongSource)
    );
    assert_eq!(
        a.handle_datagram(
            t(1),
            reg_addr(),
            &ack(RegAckStatus::Gone, &good_key, u64::MAX, service(99))
        ),
        Err(crate::agent::AgentError::NotForUs)
    );
    // The JAP's RegisterAck Ok (its second message), byte for byte, replayed.
    let old = ack(RegAckStatus::Ok, &good_key, 2, me);
    assert_eq!(
        a.handle_datagram(t(1), reg_addr(), &old),
        Err(crate::agent::AgentError::Replay)
    );
    assert_eq!(
        a.handle_datagram(t(1), reg_addr(), b"garbage"),
        Err(crate::agent::AgentError::Malformed(WireError::Truncated {
            what: "control header",
            need: 20,
            have: 7
        }))
    );
    assert_eq!(a.state(), before.0);
    assert_eq!(agent_events(a), vec![]);
    let c = a.counters();
    assert_eq!(
        (c.bad_mac, c.wrong_source, c.not_for_us, c.replay, c.malformed),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(c.acks_ok, before.1.acks_ok);
}

#[test]
fn max_registrations_answers_full_and_agent_backs_off() {
    let cfg = RegistryConfig {
        max_registrations: 3,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for i in 0..3u16 {
        register_direct(&mut reg, t(0), agent_addr(i), &key, &group(), &service(i), 1, 10).unwrap();
    }
    // The fourth, through a real agent.
    let mut a = TargetAgent::new(agent_cfg(group(), service(3), reg_addr())).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..2 {
        let n = a.poll_transmit(t(1), &mut buf).unwrap();
        let r = reg.handle_target_packet(t(1), reg_addr(), agent_addr(3), &buf[..n]);
        for (src, _, payload) in replies(&mut reg) {
            a.handle_datagram(t(1), src, &payload).unwrap();
        }
        if r.is_err() {
            assert_eq!(r, Err(RegistryError::Full));
        }
    }
    assert_eq!(reg.len(), 3);
    assert_eq!(reg.counters().refused_full, 1);
    assert_eq!(a.state(), AgentState::BackingOff);
    assert_eq!(
        agent_events(&mut a),
        vec![AgentEvent::Refused {
            jap: ProxyId(1),
            status: RegAckStatus::Full
        }]
    );
    let wake = a.poll_timeout().unwrap();
    assert!(wake >= t(5001) && wake <= t(6251), "{wake}");
    assert_eq!(
        a.poll_transmit(t(2000), &mut buf),
        None,
        "quiet while backing off"
    );
}

#[test]
fn targets_per_group_bound_answers_full() {
    let cfg = RegistryConfig {
        max_targets_per_group: 2,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for i in 0..2u16 {
        register_direct(&mut reg, t(0), agent_addr(i), &key, &group(), &service(i), 1, 10).unwrap();
    }
    assert_eq!(
        register_direct(&mut reg, t(0), agent_addr(2), &key, &group(), &service(2), 1, 10),
        Err(RegistryError::Full)
    );
    assert_eq!(reg.counters().refused_group_full, 1);
    // Another group still has room.
    let k2 = MasterKey::from_bytes(MASTER).group_key(&group_n(1));
    register_direct(
        &mut reg,
        t(0),
        agent_addr(2),
        &k2,
        &group_n(1),
        &service(2),
        1,
        10,
    )
    .unwrap();
}

#[test]
fn derived_key_cache_is_bounded() {
    let cfg = RegistryConfig {
        max_derived_keys: 4,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let master = MasterKey::from_bytes(MASTER);
    for i in 0..10u16 {
        let g = group_n(i);
        register_direct(
            &mut reg,
            t(0),
            agent_addr(i),
            &master.group_key(&g),
            &g,
            &service(i),
            1,
            10,
        )
        .unwrap();
        assert!(reg.cached_keys() <= 4);
    }
    assert_eq!(reg.len(), 10);
    assert_eq!(reg.cached_keys(), 4);
    assert_eq!(reg.counters().keys_evicted, 6);
    // Each group's key was derived once and then hit (second Register) while cached.
    assert_eq!(reg.counters().keys_derived, 10);
    assert_eq!(reg.counters().key_cache_hits, 10);
}

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
        },
        key,
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
        },
        key,
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
    pkt.verify(key).unwrap();
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

// ----- hysteresis under churn -----

/// 1000 possible targets of one group register, refresh, deregister and go silent at random; the registry's
/// reports are committed as the JAP glue would. Returns (reports, changes of the true count).
fn churn(
    band: u8,
    seed: u64,
    steps: usize,
    pool: u16,
    check: &mut dyn FnMut(u32, Option<u32>, u8),
) -> (usize, usize) {
    let cfg = RegistryConfig {
        band_percent: band,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let g = group();
    let mut rng = crate::rng::SplitMix::new(seed | 1);
    let next = |rng: &mut crate::rng::SplitMix| rng.next_u64();
    // Per target: live?, silent?, next sequence number, last refresh.
    let mut live = vec![false; usize::from(pool)];
    let mut silent = vec![false; usize::from(pool)];
    let mut seq = vec![1u64; usize::from(pool)];
    let mut last = vec![Instant::ZERO; usize::from(pool)];
    let (mut reports, mut changes) = (0usize, 0usize);
    let mut now = Instant::ZERO;
    let mut prev_count = 0;
    for i in 0..pool / 2 {
        let i = usize::from(i);
        register_direct(
            &mut reg,
            now,
            agent_addr(i as u16),
            &key,
            &g,
            &service(i as u16),
            1,
            seq[i],
        )
        .unwrap();
        seq[i] += 2;
        live[i] = true;
        last[i] = now;
    }
    for _ in 0..steps {
        now += Duration::from_millis(2);
        let i = (next(&mut rng) % u64::from(pool)) as usize;
        let (from, s) = (agent_addr(i as u16), service(i as u16));
        if live[i] && !silent[i] {
            if next(&mut rng) & 1 == 0 {
                reg.handle_target_packet(now, reg_addr(), from, &op_bytes(&key, &g, &s, seq[i], false))
                    .unwrap();
                seq[i] += 1;
                live[i] = false;
            } else {
                silent[i] = true;
            }
        } else if !live[i] {
            register_direct(&mut reg, now, from, &key, &g, &s, 1, seq[i]).unwrap();
            seq[i] += 2;
            live[i] = true;
            silent[i] = false;
            last[i] = now;
        }
        for j in 0..usize::from(pool) {
            if live[j] && !silent[j] && now - last[j] >= Duration::from_millis(200) {
                let (from, s) = (agent_addr(j as u16), service(j as u16));
                reg.handle_target_packet(now, reg_addr(), from, &op_bytes(&key, &g, &s, seq[j], true))
                    .unwrap();
                seq[j] += 1;
                last[j] = now;
            }
        }
        reg.handle_timeout(now);
        while reg.poll_transmit(&mut [0u8; 200]).is_some() {}
        for ev in events(&mut reg) {
            if let RegistryEvent::TargetDown {
                service,
                reason: DownReason::Expired,
                ..
            } = ev
            {
                let j = usize::from(u16::from_be_bytes(match service.ip {
                    IpAddr::V4(a) => [a.octets()[2], a.octets()[3]],
                    IpAddr::V6(_) => unreachable!(),
                }));
                live[j] = false;
                silent[j] = false;
            }
        }
        while let Some(r) = reg.poll_report() {
            reports += 1;
            reg.commit_report(&r.group, r.count, r.flags);
        }
        let count = reg.group_count(&g);
        assert_eq!(count as usize, live.iter().filter(|&&l| l).count());
        changes += usize::from(count != prev_count);
        prev_count = count;
        let reported = reg.groups().find(|gi| gi.group == g).and_then(|gi| gi.reported);
        check(count, reported, band);
    }
    (reports, changes)
}

fn assert_in_band(t: u32, r: Option<u32>, band: u8) {
    let r = r.unwrap_or(0);
    let d = u64::from(r) * u64::from(band) / 100;
    assert!(
        u64::from(t).abs_diff(u64::from(r)) <= d,
        "true {t} reported {r} band {band}"
    );
    assert_eq!(t == 0, r == 0);
}

#[test]
fn churn_reports_are_bounded_by_the_band() {
    let (r0, c0) = churn(0, 42, 3000, 1000, &mut assert_in_band);
    let (r25, c25) = churn(25, 42, 3000, 1000, &mut assert_in_band);
    eprintln!(
        "churn of 1000 targets, 3000 steps: band 0 → {r0} reports ({c0} count changes), band 25 → {r25}"
    );
    assert_eq!(c0, c25, "same churn");
    assert!(r0 >= c0, "band 0 reports every change");
    assert!(r0 >= 10 * r25, "band 0: {r0}, band 25: {r25}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn reported_count_stays_in_band(band in 0u8..=60, seed: u64) {
        churn(band, seed, 400, 60, &mut assert_in_band);
    }
}

// ----- target choice -----

fn chooser(weights: &[(IpAddr, u16)]) -> Registry {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for (i, &(ip, w)) in weights.iter().enumerate() {
        let s = TransportAddr::new(ip, 5353, IpProtocol::Udp);
        register_direct(
            &mut reg,
            t(0),
            SocketAddr::new(ip, 40000),
            &key,
            &group(),
            &s,
            w,
            10,
        )
        .unwrap();
        let _ = i;
    }
    events(&mut reg);
    reg
}

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

#[test]
fn choice_respects_weights_and_is_stable_per_flow() {
    let ws = [(ip("10.0.0.1"), 1u16), (ip("10.0.0.2"), 2), (ip("10.0.0.3"), 5)];
    let mut reg = chooser(&ws);
    let key = MasterKey::from_bytes(MASTER).flow_key();
    let mut counts = [0u32; 3];
    let mut first = Vec::new();
    let n = 40_000u32;
    for i in 0..n {
        let f = flow_from(
            IpAddr::V4(core::net::Ipv4Addr::from(0xc633_0000 + i)),
            1000 + (i % 7) as u16,
        );
        let h = crate::flowhash::flow_hash(&key, &f);
        let c = reg
            .choose_target(&group(), &f, h, &TargetOptions::default())
            .unwrap();
        assert_eq!(c.len(), 1);
        let k = ws.iter().position(|w| w.0 == c.first().service.ip).unwrap();
        counts[k] += 1;
        first.push((f, h, c.first().slot));
    }
    for (k, w) in [1.0f64, 2.0, 5.0].iter().enumerate() {
        let share = f64::from(counts[k]) / f64::from(n);
        assert!(
            (share - w / 8.0).abs() < 0.03,
            "target {k}: share {share:.3}, want {:.3}",
            w / 8.0
        );
    }
    assert_eq!(reg.counters().tables_built, 1, "built once, not per flow");
    // The table the XDP sync reads gives the same answers.
    let (members, slots) = reg
        .slot_table(&group())
        .map(|(m, s)| (m.to_vec(), s.to_vec()))
        .unwrap();
    assert_eq!(slots.len(), 251);
    for (_, h, slot) in first.iter().take(1000) {
        assert_eq!(members[usize::from(slots[(*h % 251) as usize])], *slot);
    }
    // Same flows, same choices; also after an unrelated group changed.
    let k2 = MasterKey::from_bytes(MASTER).group_key(&group_n(3));
    register_direct(
        &mut reg,
        t(1),
        agent_addr(99),
        &k2,
        &group_n(3),
        &service(99),
        1,
        10,
    )
    .unwrap();
    for (f, h, slot) in &first {
        assert_eq!(
            reg.choose_target(&group(), f, *h, &TargetOptions::default())
                .unwrap()
                .first()
                .slot,
            *slot
        );
    }
    assert_eq!(reg.counters().tables_built, 1);
    // Removing one target moves only its flows (Maglev's minimal disruption, roughly).
    let gone = reg
        .targets(&group())
        .find(|i| i.service.ip == ip("10.0.0.1"))
        .unwrap()
        .slot;
    let key_g = MasterKey::from_bytes(MASTER).group_key(&group());
    let s1 = TransportAddr::new(ip("10.0.0.1"), 5353, IpProtocol::Udp);
    reg.handle_target_packet(
        t(2),
        reg_addr(),
        SocketAddr::new(ip("10.0.0.1"), 40000),
        &op_bytes(&key_g, &group(), &s1, 100, false),
    )
    .unwrap();
    let moved = first
        .iter()
        .filter(|(f, h, slot)| {
            *slot != gone
                && reg
                    .choose_target(&group(), f, *h, &TargetOptions::default())
                    .unwrap()
                    .first()
                    .slot
                    != *slot
        })
        .count();
    assert!(
        moved < first.len() / 20,
        "{moved} flows of surviving targets moved"
    );
}

#[test]
fn exclude_sender_never_picks_the_sender() {
    let ws = [(ip("10.0.0.1"), 1u16), (ip("10.0.0.2"), 1), (ip("10.0.0.3"), 1)];
    let mut reg = chooser(&ws);
    let opts = TargetOptions {
        exclude_sender: true,
        ..TargetOptions::default()
    };
    let mut seen = [0u32; 3];
    for i in 0..5000u64 {
        let f = flow_from(ip("10.0.0.2"), i as u16);
        let h = crate::rng::mix(i + 1);
        let c = reg.choose_target(&group(), &f, h, &opts).unwrap();
        assert_ne!(c.first().service.ip, ip("10.0.0.2"));
        seen[ws.iter().position(|w| w.0 == c.first().service.ip).unwrap()] += 1;
        // Stable per flow.
        assert_eq!(reg.choose_target(&group(), &f, h, &opts).unwrap(), c);
    }
    assert!(seen[0] > 2000 && seen[2] > 2000, "{seen:?}");
    // Only the sender left: nothing, counted.
    let mut reg = chooser(&ws[1..2]);
    assert_eq!(
        reg.choose_target(&group(), &flow_from(ip("10.0.0.2"), 1), 7, &opts),
        None
    );
    assert_eq!(reg.counters().no_eligible_target, 1);
    assert!(
        reg.choose_target(&group(), &flow_from(ip("10.0.0.9"), 1), 7, &opts)
            .is_some()
    );
}

#[test]
fn scope_prefers_the_clients_prefix() {
    let ws = [
        (ip("10.1.0.1"), 1u16),
        (ip("10.1.0.2"), 1),
        (ip("10.2.0.1"), 1),
        (ip("10.2.0.2"), 1),
        (ip("10.3.0.1"), 1),
    ];
    let mut reg = chooser(&ws);
    let opts = TargetOptions {
        scope_prefix: Some(16),
        ..TargetOptions::default()
    };
    let mut spread = [0u32; 5];
    for i in 0..4000u64 {
        let h = crate::rng::mix(i + 5);
        let c = reg
            .choose_target(&group(), &flow_from(ip("10.1.77.3"), i as u16), h, &opts)
            .unwrap();
        assert!(
            same_prefix(c.first().service.ip, ip("10.1.0.0"), 16),
            "{:?}",
            c.first()
        );
        let c = reg
            .choose_target(&group(), &flow_from(ip("172.16.0.1"), i as u16), h, &opts)
            .unwrap();
        spread[ws.iter().position(|w| w.0 == c.first().service.ip).unwrap()] += 1;
    }
    assert!(
        spread.iter().all(|&n| n > 500),
        "out-of-scope clients use every target: {spread:?}"
    );
    // Both in-scope targets get flows.
    let mut both = [false; 2];
    for i in 0..200u64 {
        let c = reg
            .choose_target(
                &group(),
                &flow_from(ip("10.1.77.3"), 1),
                crate::rng::mix(i + 9),
                &opts,
            )
            .unwrap();
        both[usize::from(c.first().service.ip == ip("10.1.0.2"))] = true;
    }
    assert_eq!(both, [true, true]);
    // Scope with exclude_sender: the only in-scope target is the sender → fall back to the others.
    let opts = TargetOptions {
        scope_prefix: Some(16),
        exclude_sender: true,
        ..TargetOptions::default()
    };
    let c = reg
        .choose_target(&group(), &flow_from(ip("10.3.0.1"), 1), 3, &opts)
        .unwrap();
    assert_ne!(c.first().service.ip, ip("10.3.0.1"));
}

#[test]
fn replicate_gives_distinct_targets_and_random_uses_the_generator() {
    let ws: Vec<_> = (1..=5)
        .map(|i| (IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, i)), 1u16))
        .collect();
    let mut reg = chooser(&ws);
    let opts = TargetOptions {
        replicate: 3,
        ..TargetOptions::default()
    };
    for i in 0..500u64 {
        let h = crate::rng::mix(i + 1);
        let f = flow_from(ip("198.51.100.1"), i as u16);
        let c = reg.choose_target(&group(), &f, h, &opts).unwrap();
        assert_eq!(c.len(), 3);
        let slots: Vec<u32> = c.iter().map(|t| t.slot).collect();
        assert!(
            slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2],
            "{slots:?}"
        );
        assert_eq!(
            c.first(),
            reg.choose_target(&group(), &f, h, &TargetOptions::default())
                .unwrap()
                .first()
        );
        // TCP is never replicated.
        let tcp = FlowKey {
            proto: IpProtocol::Tcp,
            ..f
        };
        assert_eq!(reg.choose_target(&group(), &tcp, h, &opts).unwrap().len(), 1);
    }
    let opts4 = TargetOptions {
        replicate: 9,
        ..TargetOptions::default()
    };
    let mut small = chooser(&ws[..2]);
    assert_eq!(
        small
            .choose_target(&group(), &flow_from(ip("1.2.3.4"), 1), 1, &opts4)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        reg.choose_target(&group(), &flow_from(ip("1.2.3.4"), 1), 1, &opts4)
            .unwrap()
            .len(),
        MAX_REPLICAS
    );
    // Random: the same flow and hash spread over all targets.
    let rnd = TargetOptions {
        random: true,
        ..TargetOptions::default()
    };
    let mut seen = [0u32; 5];
    for _ in 0..2000 {
        let c = reg
            .choose_target(&group(), &flow_from(ip("1.2.3.4"), 1), 1, &rnd)
            .unwrap();
        seen[usize::from(match c.first().service.ip {
            IpAddr::V4(a) => a.octets()[3] - 1,
            IpAddr::V6(_) => 9,
        })] += 1;
    }
    assert!(seen.iter().all(|&n| n > 250), "{seen:?}");
    // No target: None, counted.
    assert_eq!(
        reg.choose_target(
            &group_n(9),
            &flow_from(ip("1.2.3.4"), 1),
            1,
            &TargetOptions::default()
        ),
        None
    );
    assert_eq!(reg.counters().no_target, 1);
}

#[test]
fn mode_and_source_changes_replace_and_reports_carry_the_tunnel_flag() {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    register_direct(&mut reg, t(0), agent_addr(1), &key, &group(), &service(1), 1, 10).unwrap();
    events(&mut reg);
    assert_eq!(
        reg.poll_report(),
        Some(GroupReport {
            group: group(),
            count: 1,
            flags: 0
        })
    );
    reg.commit_report(&group(), 1, 0);
    // Same service registers in tunnel mode from another source.
    let from = agent_addr(2);
    reg.handle_target_packet(
        t(1),
        reg_addr(),
        from,
        &register_bytes(&key, &group(), &service(1), [0; 16], 20, 1),
    )
    .unwrap();
    let r = replies(&mut reg);
    let Message::Challenge(c) = ControlPacket::new_checked(&r[0].2).unwrap().message().unwrap() else {
        panic!()
    };
    let msg = Message::Register(Register {
        group: group(),
        service: service(1),
        mode: DeliveryMode::Tunnel,
        weight: 3,
        cookie: c.cookie,
    });
    let mut b = vec![0u8; msg.buffer_len()];
    msg.emit(
        ControlHeader {
            sender: ProxyId::NONE,
            seq: 21,
        },
        &key,
        &mut b,
    )
    .unwrap();
    reg.handle_target_packet(t(1), reg_addr(), from, &b).unwrap();
    let evs = events(&mut reg);
    assert!(
        matches!(
            evs[..],
            [
                RegistryEvent::TargetDown {
                    reason: DownReason::Replaced,
                    ..
                },
                RegistryEvent::TargetUp {
                    mode: DeliveryMode::Tunnel,
                    ..
                }
            ]
        ),
        "{evs:?}"
    );
    assert_eq!(reg.group_count(&group()), 1);
    assert_eq!(
        reg.poll_report(),
        Some(GroupReport {
            group: group(),
            count: 1,
            flags: FLAG_TUNNEL
        })
    );
    assert_eq!(reg.targets(&group()).next().unwrap().source, from);
    assert_eq!(reg.counters().replaced, 1);
}

#[test]
fn config_validation_names_the_field() {
    let mut c = RegistryConfig::default();
    assert_eq!(c.validate(), Ok(()));
    c.hold_ms = 100;
    let e = c.validate().unwrap_err();
    assert_eq!(e.field, "hold_ms");
    assert!(
        e.to_string()
            .starts_with("registry.hold_ms: must exceed refresh_ms")
    );
    let c = RegistryConfig {
        max_targets_per_group: 5000,
        ..RegistryConfig::default()
    };
    assert_eq!(c.validate().unwrap_err().field, "max_targets_per_group");
    assert!(Registry::new(c, MasterKey::from_bytes(MASTER), ProxyId(1), [0; 32], 0).is_err());
    let mut a = agent_cfg(group(), service(1), reg_addr());
    a.service.proto = IpProtocol::Tcp;
    assert_eq!(a.validate().unwrap_err().field, "service");
}

#[test]
fn surrogate_registers_only_while_healthy() {
    let mut cfg = agent_cfg(group(), service(5), reg_addr());
    cfg.surrogate = true;
    let mut p = Pair::new(reg_addr(), agent_addr(5));
    p.agent = TargetAgent::new(cfg).unwrap();
    p.run_until(t(500));
    assert_eq!(p.agent.state(), AgentState::Idle);
    assert!(p.sent.is_empty(), "nothing sent before a passing check");
    p.agent.set_health(p.now, true);
    p.run_until(t(600));
    assert_eq!(p.agent.state(), AgentState::Registered { jap: ProxyId(1) });
    // One failure: refreshes stop; two: deregistered at once.
    p.agent.set_health(p.now, false);
    let sent = p.agent.counters().sent_refresh;
    p.run_until(t(900));
    assert_eq!(p.agent.counters().sent_refresh, sent);
    p.agent.set_health(p.now, false);
    p.run_until(t(910));
    assert_eq!(p.regs[0].group_count(&group()), 0);
    assert_eq!(p.agent.state(), AgentState::Idle);
    assert!(agent_events(&mut p.agent).contains(&AgentEvent::Deregistered));
    p.agent.set_health(p.now, true);
    p.run_until(t(1000));
    assert_eq!(p.regs[0].group_count(&group()), 1, "back after a passing check");
}

// ----- arbitrary input -----

proptest! {
    #[test]
    fn arbitrary_bytes_never_create_state(
        data in proptest::collection::vec(any::<u8>(), 0..200),
        kind in 0x20u8..=0x24,
        v6 in any::<bool>(),
    ) {
        let mut reg = registry(1);
        let from: SocketAddr = if v6 { "[2001:db8::5]:1".parse().unwrap() } else { agent_addr(1) };
        let local: SocketAddr = if v6 { "[2001:db8::1]:6082".parse().unwrap() } else { reg_addr() };
        // Raw bytes, and the same bytes framed as a target message (so the body parsers run).
        let mut framed = vec![1u8, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let body_len = data.len().saturating_sub(16);
        framed.extend_from_slice(&(body_len as u16).to_be_bytes());
        framed.extend_from_slice(&[0, 0]);
        framed.extend_from_slice(&data);
        for input in [&data[..], &framed[..]] {
            prop_assert!(reg.handle_target_packet(t(5), local, from, input).is_err());
        }
        prop_assert!(reg.is_empty());
        prop_assert_eq!(reg.cached_keys(), 0);
        prop_assert_eq!(reg.poll_event(), None);
        prop_assert_eq!(reg.poll_report(), None);
        prop_assert!(reg.poll_transmit(&mut [0u8; 1500]).is_none());
        reg.handle_timeout(t(10_000));
    }

    #[test]
    fn mutated_valid_messages_never_create_state(pos in 0usize..96, bit in 0u8..8) {
        let mut reg = registry(1);
        let key = MasterKey::from_bytes(MASTER).group_key(&group());
        let (_, cookie) = challenge(&mut reg, t(0), agent_addr(1), &key, 1);
        let mut m = register_bytes(&key, &group(), &service(0), cookie, 2, 1);
        let at = pos % m.len();
        m[at] ^= 1 << bit;
        prop_assert!(reg.handle_target_packet(t(1), reg_addr(), agent_addr(1), &m).is_err());
        prop_assert!(reg.is_empty());
        prop_assert_eq!(reg.poll_event(), None);
    }

    #[test]
    fn arbitrary_bytes_into_the_agent_change_nothing(
        data in proptest::collection::vec(any::<u8>(), 0..120),
        registered in any::<bool>(),
    ) {
        let mut p = Pair::new(reg_addr(), agent_addr(5));
        if registered {
            p.exchange();
            p.exchange();
        }
        agent_events(&mut p.agent);
        let (state, timeout) = (p.agent.state(), p.agent.poll_timeout());
        prop_assert!(p.agent.handle_datagram(t(0), reg_addr(), &data).is_err());
        prop_assert_eq!(p.agent.state(), state);
        prop_assert_eq!(p.agent.poll_timeout(), timeout);
        prop_assert_eq!(p.agent.poll_event(), None);
    }
}

#[test]
fn hot_paths_do_not_grow_tables() {
    let mut reg = registry(1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    for i in 0..50u16 {
        register_direct(
            &mut reg,
            t(0),
            agent_addr(i),
            &key,
            &group(),
            &service(i),
            1 + i % 3,
            10,
        )
        .unwrap();
    }
    let f = flow_from(ip("1.2.3.4"), 9);
    reg.choose_target(&group(), &f, 1, &TargetOptions::default())
        .unwrap();
    let before = reg.memory_bytes();
    let mut buf = [0u8; 1500];
    for round in 0..20u64 {
        for i in 0..50u16 {
            let m = op_bytes(&key, &group(), &service(i), 12 + round, true);
            reg.handle_target_packet(t(1 + round), reg_addr(), agent_addr(i), &m)
                .unwrap();
        }
        while reg.poll_transmit(&mut buf).is_some() {}
        for h in 0..100 {
            reg.choose_target(
                &group(),
                &f,
                h,
                &TargetOptions {
                    replicate: 3,
                    exclude_sender: true,
                    scope_prefix: Some(8),
                    random: false,
                },
            )
            .unwrap();
        }
    }
    assert_eq!(reg.memory_bytes(), before);
    assert_eq!(reg.counters().refreshed, 1000);
    assert!(before < 4 << 20, "{before} bytes");
    let _ = MS;
}
