//! Fuzz entry points for the core (used by `fuzz/fuzz_targets/state_*.rs` and replayed by `cargo test`).
//!
//! `proxy_events` drives one small `Proxy` with an arbitrary sequence of inputs: control messages that are
//! correctly sealed (so the fuzzer gets past authentication into every handler), raw overlay bytes, client
//! packets to groups, target replies to the NAT pool, registrations, raw host bytes, and time steps.
//! The properties checked are the core's contracts: nothing panics, every table stays within its bound,
//! transmits fit the buffer, and time handling is monotonic and harmless when early or repeated.
//! The `assert!`s here are the oracle: a failing one is a finding.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use pias_proto::auth::MasterKey;
use pias_proto::build::{Segment, tcp_segment, udp_packet};
use pias_proto::control::{
    Answer, AnswerEntry, ControlHeader, Invalidate, MemberStatus, Message, Probe, ProxyRecord, ReportAck,
    ReportEntry, Reports, Resolve,
};
use pias_proto::tcp::TcpFlags;
use pias_proto::tunnel::DataHeader;
use pias_proto::{IpProtocol, ProxyId, TransportAddr};

use crate::Instant;
use crate::proxy::{HEADROOM, PacketBuf, Proxy, ProxyConfig};

/// A fuzz entry point.
pub type Target = fn(&[u8]);

/// Every state-level fuzz target: name (as in `fuzz/fuzz_targets/`) and entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("state_proxy_events", proxy_events),
    ("state_replay_control", replay_control),
];

/// Reads bytes of the fuzz input; past the end it yields zeros, so every input is a valid program.
struct Input<'a> {
    b: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.b.split_first() {
            Some((x, rest)) => {
                self.b = rest;
                *x
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.u8()).min(max).min(self.b.len());
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        x.to_vec()
    }
    fn done(&self) -> bool {
        self.b.is_empty()
    }
}

const ME: ProxyId = ProxyId(1);

fn overlay_of(id: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id.clamp(1, 6))), 6081)
}

fn group(inp: &mut Input<'_>) -> TransportAddr {
    let proto = if inp.u8() & 1 == 0 {
        IpProtocol::Udp
    } else {
        IpProtocol::Tcp
    };
    TransportAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, inp.u8() % 4)),
        53 + u16::from(inp.u8() % 3),
        proto,
    )
}

fn small_config() -> ProxyConfig {
    let mut c = ProxyConfig::new(
        ME,
        overlay_of(1),
        MasterKey::from_bytes([0x66; 32]),
        vec![IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1))],
        vec![IpAddr::V4(Ipv4Addr::new(10, 99, 255, 1))],
    );
    c.membership.seeds = vec![overlay_of(2)];
    c.nat.max_entries = 64;
    c.nat.port_min = 40_000;
    c.nat.port_max = 40_063;
    c.iap.cache_entries = 16;
    c.rap.max_groups = 16;
    c.rap.max_japs_per_group = 4;
    c.registry.max_registrations = 16;
    c.event_capacity = 64;
    c.outbox_capacity = 64;
    c
}

/// A correctly sealed control message from proxy `sender`, built from the input.
fn control(
    inp: &mut Input<'_>,
    seqs: &mut [u64; 7],
    master: &MasterKey,
    now: Instant,
) -> (SocketAddr, Vec<u8>) {
    let sender = 2 + inp.u8() % 5;
    let g = group(inp);
    let rec = ProxyRecord {
        id: ProxyId(u32::from(2 + inp.u8() % 5)),
        incarnation: 1 + u32::from(inp.u8() % 2),
        version: u32::from(inp.u8() % 4),
        status: [
            MemberStatus::Alive,
            MemberStatus::Suspect,
            MemberStatus::Down,
            MemberStatus::Left,
        ][usize::from(inp.u8() % 4)],
        addr: overlay_of(inp.u8() % 7),
        coord: [0; 16],
    };
    let entries = [ReportEntry {
        group: g,
        count: u32::from(inp.u8() % 5),
        flags: inp.u8() & 1,
        load: u16::from(inp.u8()) * 8,
    }];
    let japs = [
        AnswerEntry {
            jap: ProxyId(u32::from(1 + inp.u8() % 6)),
            weight: u32::from(inp.u8()),
        },
        AnswerEntry {
            jap: ProxyId(u32::from(1 + inp.u8() % 6)),
            weight: u32::from(inp.u8()),
        },
    ];
    let msg = match inp.u8() % 8 {
        0 => Message::Probe(Probe {
            nonce: u64::from(inp.u32()),
            incarnation: 1,
            version: 1,
            digest: 0,
            coord: [0; 16],
        }),
        1 => Message::ProbeAck(Probe {
            nonce: u64::from(inp.u32()),
            incarnation: 1,
            version: 1,
            digest: 0,
            coord: [0; 16],
        }),
        2 => Message::Join(rec),
        3 => Message::Records(pias_proto::control::Records::Slice(core::slice::from_ref(&rec))),
        4 => Message::Report(Reports::Slice(&entries)),
        5 => Message::Answer(Answer::new(
            g,
            u32::from(inp.u16()),
            &japs[..usize::from(inp.u8() % 3)],
        )),
        6 => Message::Invalidate(Invalidate { group: g, reason: 1 }),
        _ => {
            if inp.u8() & 1 == 0 {
                Message::Resolve(Resolve { group: g })
            } else {
                Message::ReportAck(ReportAck {
                    acked_seq: u64::from(inp.u32()),
                })
            }
        }
    };
    // Mostly fresh sequence numbers, sometimes a replay.
    let s = &mut seqs[usize::from(sender)];
    if !inp.u8().is_multiple_of(8) {
        *s += 1;
    }
    let mut out = vec![0u8; 1500];
    let n = msg
        .emit_frame(
            1,
            overlay_of(1),
            ControlHeader {
                sender: ProxyId(u32::from(sender)),
                seq: (1 << 32) | *s,
                // The proxy's wall origin is 0: its wall clock is `now`.
                time_ms: now.as_millis(),
            },
            &master.overlay_key(),
            &mut out,
        )
        .unwrap_or(0);
    out.truncate(n);
    (overlay_of(sender), out)
}

fn drain(p: &mut Proxy, now: Instant, buf: &mut [u8]) {
    for _ in 0..10_000 {
        match p.poll_transmit(now, buf) {
            Some(t) => assert!(t.len <= buf.len()),
            None => break,
        }
    }
    while p.poll_event().is_some() {}
}

fn check_bounds(p: &Proxy, cfg: &ProxyConfig) {
    assert!(p.iap().len() <= cfg.iap.cache_entries);
    assert!(p.rap().len() <= cfg.rap.max_groups);
    assert!(p.nat().len() <= cfg.nat.max_entries as usize);
    assert!(p.registry().len() <= cfg.registry.max_registrations);
}

/// Applies an arbitrary sequence of inputs to one proxy; see the module docs.
pub fn proxy_events(data: &[u8]) {
    let cfg = small_config();
    let master = cfg.master_key.clone();
    let mut now = Instant::from_secs(1);
    let Ok(mut p) = Proxy::new(
        cfg.clone(),
        &crate::secrets::Secrets::from_seed_for_tests(cfg.seed),
        now,
    ) else {
        return;
    };
    let mut inp = Input { b: data };
    let mut seqs = [0u64; 7];
    let mut raw = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut steps = 0;
    while !inp.done() && steps < 256 {
        steps += 1;
        let op = inp.u8() % 8;
        let (packet, from, overlay) = match op {
            0 | 1 => {
                let (from, frame) = control(&mut inp, &mut seqs, &master, now);
                (frame, from, true)
            }
            2 => (inp.bytes(256), overlay_of(inp.u8() % 7), true),
            3 => {
                // A data frame from a (maybe) member carrying a client packet to a group.
                let g = group(&mut inp);
                let mut pkt = [0u8; 256];
                let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, inp.u8())), inp.u16());
                let n = udp_packet(src, SocketAddr::new(g.ip, g.port), &inp.bytes(32), &mut pkt).unwrap_or(0);
                let h = DataHeader {
                    vni: 1,
                    flags: inp.u8() & 0x0f,
                    hops: inp.u8() % 3,
                    epoch: 0,
                    ingress: ProxyId(u32::from(1 + inp.u8() % 6)),
                };
                // Mostly tagged under the overlay's data key (so the input reaches past the tag check),
                // sometimes left untagged.
                let keys = pias_proto::tunnel::DataKeys::new(&master, 0);
                let mut f = vec![0u8; 512];
                let m = if inp.u8() & 3 == 0 {
                    h.encapsulate(&pkt[..n], &mut f).unwrap_or(0)
                } else {
                    h.encapsulate_tagged(keys.current(), &pkt[..n], &mut f)
                        .unwrap_or(0)
                };
                f.truncate(m);
                (f, overlay_of(2 + inp.u8() % 5), true)
            }
            4 => {
                // A client packet (UDP or TCP) to a group, or a target's reply to the NAT pool.
                let g = group(&mut inp);
                let to_pool = inp.u8() & 1 == 1;
                let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, inp.u8())), inp.u16());
                let dst = if to_pool {
                    SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1)),
                        40_000 + u16::from(inp.u8() % 64),
                    )
                } else {
                    SocketAddr::new(g.ip, g.port)
                };
                let mut pkt = vec![0u8; 1600];
                let n = if g.proto == IpProtocol::Tcp {
                    let seg = Segment {
                        flags: TcpFlags::from_bits_truncate(u16::from(inp.u8())),
                        seq: 1,
                        ack: 1,
                        mss: Some(inp.u16()),
                    };
                    tcp_segment(src, dst, seg, &inp.bytes(64), &mut pkt).unwrap_or(0)
                } else {
                    let size = usize::from(inp.u8()) * 8;
                    udp_packet(src, dst, &vec![0x5a; size], &mut pkt).unwrap_or(0)
                };
                pkt.truncate(n);
                (pkt, src, false)
            }
            5 => {
                // Bytes to the registration address (garbage or truncated target messages).
                let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, inp.u8())), 7000);
                let mut pkt = vec![0u8; 512];
                let n = udp_packet(
                    src,
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 255, 1)), 6082),
                    &inp.bytes(200),
                    &mut pkt,
                )
                .unwrap_or(0);
                pkt.truncate(n);
                (pkt, src, false)
            }
            6 => (inp.bytes(256), overlay_of(0), false),
            _ => {
                // Time passes (up to ~65 s), sometimes not at all (a repeated timeout must be harmless).
                now += Duration::from_millis(u64::from(inp.u16()));
                p.handle_timeout(now);
                p.handle_timeout(now);
                drain(&mut p, now, &mut out);
                check_bounds(&p, &cfg);
                continue;
            }
        };
        let n = packet.len().min(raw.len() - HEADROOM);
        raw[HEADROOM..HEADROOM + n].copy_from_slice(&packet[..n]);
        let mut pb = PacketBuf::new(&mut raw, HEADROOM, HEADROOM + n);
        if overlay {
            let _ = p.handle_overlay(now, from, &mut pb);
        } else {
            let _ = p.handle_host(now, &mut pb);
        }
        assert!(pb.range().end <= raw.len());
        drain(&mut p, now, &mut out);
        check_bounds(&p, &cfg);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Replay and forgery against a small overlay

/// Proxies in [`replay_control`]'s overlay.
const OVERLAY_PROXIES: usize = 3;
/// Frames [`replay_control`] keeps (sent, in flight or delivered); later ones are lost in the network.
const MAX_FRAMES: usize = 1024;
/// The shared wall-clock origin of [`replay_control`]'s proxies.
const WALL_ORIGIN_MS: u64 = 1_700_000_000_000;

/// One control frame a proxy sent, as the network saw it.
struct Sent {
    to: usize,
    bytes: Vec<u8>,
    /// Its receiver (at the time) accepted it: from now on it is a replay there.
    delivered: bool,
}

struct Overlay {
    cfgs: Vec<ProxyConfig>,
    proxies: Vec<Proxy>,
    leaving: [bool; OVERLAY_PROXIES],
    frames: Vec<Sent>,
    /// Indexes into `frames` of what is in flight, in order.
    queue: std::collections::VecDeque<usize>,
    now: Instant,
    /// Attacks checked, and the most members any proxy knew when one was (for the oracle's own test).
    attacks: usize,
    most_members: usize,
}

fn overlay_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8)), 6081)
}

/// What a receiver's members look like: a replay or forgery must leave it exactly so.
fn members(p: &Proxy) -> Vec<(u32, u32, u32, pias_proto::control::MemberStatus, SocketAddr)> {
    let mut v: Vec<_> = p
        .membership()
        .iter()
        .map(|m| {
            let r = m.record();
            (r.id.0, r.incarnation, r.version, r.status, r.addr)
        })
        .collect();
    v.sort_unstable();
    v
}

impl Overlay {
    fn new() -> Option<Overlay> {
        let mut cfgs = Vec::new();
        let mut proxies = Vec::new();
        let now = Instant::from_secs(1);
        for i in 0..OVERLAY_PROXIES {
            let mut c = ProxyConfig::new(
                ProxyId(1 + i as u32),
                overlay_addr(i),
                MasterKey::from_bytes([0x66; 32]),
                vec![IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1 + i as u8))],
                vec![IpAddr::V4(Ipv4Addr::new(10, 99, 255, 1))],
            );
            c.wall_origin_ms = WALL_ORIGIN_MS;
            c.membership.tombstone_time = Duration::from_secs(40);
            if i > 0 {
                c.membership.seeds = vec![overlay_addr(0)];
            }
            c.nat.max_entries = 16;
            c.iap.cache_entries = 16;
            c.rap.max_groups = 16;
            c.registry.max_registrations = 16;
            // Small tables: three proxies are built per input, and their preallocation is most of its cost.
            c.registry.max_tombstones = 16;
            c.registry.max_derived_keys = 16;
            c.registry.reply_queue = 64;
            c.registry.event_queue = 64;
            c.membership.max_members = 16;
            c.membership.stranger_windows = 16;
            c.membership.event_queue = 64;
            c.event_capacity = 64;
            c.outbox_capacity = 64;
            proxies.push(
                Proxy::new(
                    c.clone(),
                    &crate::secrets::Secrets::from_seed_for_tests(c.seed),
                    now,
                )
                .ok()?,
            );
            cfgs.push(c);
        }
        Some(Overlay {
            cfgs,
            proxies,
            leaving: [false; OVERLAY_PROXIES],
            frames: Vec::new(),
            queue: std::collections::VecDeque::new(),
            now,
            attacks: 0,
            most_members: 0,
        })
    }

    /// Collects what every proxy sends to the overlay; host-side output is discarded.
    fn collect(&mut self) {
        let mut buf = vec![0u8; 2048];
        for p in &mut self.proxies {
            while p.poll_event().is_some() {}
        }
        for i in 0..OVERLAY_PROXIES {
            for _ in 0..10_000 {
                let Some(t) = self.proxies[i].poll_transmit(self.now, &mut buf) else {
                    break;
                };
                assert!(t.len <= buf.len());
                let crate::seal::Dest::Overlay(addr) = t.dest else {
                    continue;
                };
                let Some(to) = (0..OVERLAY_PROXIES).find(|&j| overlay_addr(j) == addr) else {
                    continue;
                };
                if self.frames.len() < MAX_FRAMES {
                    self.queue.push_back(self.frames.len());
                    self.frames.push(Sent {
                        to,
                        bytes: buf[..t.len].to_vec(),
                        delivered: false,
                    });
                }
            }
            while self.proxies[i].poll_event().is_some() {}
        }
    }

    fn feed(&mut self, to: usize, from: SocketAddr, frame: &[u8]) -> crate::proxy::Verdict {
        let mut raw = vec![0u8; HEADROOM + frame.len()];
        raw[HEADROOM..].copy_from_slice(frame);
        let end = raw.len();
        let mut pb = PacketBuf::new(&mut raw, HEADROOM, end);
        let v = self.proxies[to].handle_overlay(self.now, from, &mut pb);
        self.collect();
        v
    }

    /// Delivers frame `k` to its receiver from its sender's address (well-formed traffic).
    fn deliver(&mut self, k: usize) {
        let (to, bytes) = (self.frames[k].to, self.frames[k].bytes.clone());
        let from = self.sender_addr(&bytes);
        if self.feed(to, from, &bytes) == crate::proxy::Verdict::Consumed {
            self.frames[k].delivered = true;
        }
    }

    fn sender_addr(&self, frame: &[u8]) -> SocketAddr {
        // Geneve (8) then the control header: the sender id is at 4..8.
        let id = frame
            .get(12..16)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        overlay_addr((id as usize).wrapping_sub(1) % OVERLAY_PROXIES)
    }

    /// Feeds a frame that must be refused (a replay, a copy for another receiver, a forgery) and checks that
    /// it was, and that the receiver's member table did not move.
    fn attack(&mut self, to: usize, from: SocketAddr, frame: &[u8], what: &str) {
        let before = members(&self.proxies[to]);
        self.attacks += 1;
        self.most_members = self.most_members.max(before.len());
        let v = self.feed(to, from, frame);
        assert!(
            matches!(v, crate::proxy::Verdict::Drop(_)),
            "{what} to proxy {} was accepted: {v:?}",
            to + 1
        );
        assert_eq!(
            members(&self.proxies[to]),
            before,
            "{what} changed proxy {}'s members",
            to + 1
        );
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        for p in &mut self.proxies {
            p.handle_timeout(self.now);
            p.handle_timeout(self.now);
        }
        self.collect();
    }
}

/// Drives a three-proxy overlay with an interleaving of well-formed traffic (the proxies' own frames,
/// delivered, delayed or lost), replays of recorded frames (to their receiver again, to another proxy,
/// from any source address, after restarts, leaves and tombstone expiry) and forgeries (a recorded frame
/// with one bit flipped in its control message). Oracle: a replay or a forgery is always dropped and
/// never changes the receiver's member table (SPEC.md §8.2); nothing panics; tables stay bounded.
pub fn replay_control(data: &[u8]) {
    run_replay(data);
}

/// [`replay_control`]; returns the attacks checked and the most members a receiver knew at one.
fn run_replay(data: &[u8]) -> (usize, usize) {
    let Some(mut o) = Overlay::new() else {
        return (0, 0);
    };
    let mut inp = Input { b: data };
    o.tick(Duration::ZERO);
    let mut steps = 0;
    while !inp.done() && steps < 256 {
        steps += 1;
        match inp.u8() % 8 {
            0 => {
                if let Some(k) = o.queue.pop_front() {
                    o.deliver(k);
                }
            }
            1 => {
                for _ in 0..64 {
                    let Some(k) = o.queue.pop_front() else { break };
                    o.deliver(k);
                }
            }
            2 => {
                // Lost (or delayed: it stays recorded and may come back as a "replay" of an unseen frame).
                o.queue.pop_front();
            }
            3 => o.tick(Duration::from_millis(u64::from(inp.u16()))),
            4 | 5 => {
                let forge = inp.u8() % 2 == 1;
                let (k, to, src) = (usize::from(inp.u16()), usize::from(inp.u8()), inp.u8());
                let bit = usize::from(inp.u16());
                if o.frames.is_empty() {
                    continue;
                }
                let k = k % o.frames.len();
                let to = to % OVERLAY_PROXIES;
                // Any source: a member's overlay address, or an outsider's.
                let from = if src % 4 == 3 {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, src)), 6081)
                } else {
                    overlay_addr(usize::from(src % 3))
                };
                let mut bytes = o.frames[k].bytes.clone();
                if forge {
                    // One bit of the control message (after the 8-byte Geneve header) flipped.
                    let msg_bits = (bytes.len() - pias_proto::geneve::HEADER_LEN) * 8;
                    let b = pias_proto::geneve::HEADER_LEN * 8 + bit % msg_bits;
                    bytes[b / 8] ^= 1 << (b % 8);
                    o.attack(to, from, &bytes, "a forged frame");
                } else if to != o.frames[k].to {
                    o.attack(to, from, &bytes, "a frame recorded for another receiver");
                } else if o.frames[k].delivered {
                    o.attack(to, from, &bytes, "a replayed frame");
                } else if o.feed(to, from, &bytes) == crate::proxy::Verdict::Consumed {
                    // Its first arrival at its receiver, late: legitimate once.
                    o.frames[k].delivered = true;
                }
            }
            6 => {
                // A restart, at least a millisecond after anything the old life sealed or accepted.
                let i = usize::from(inp.u8()) % OVERLAY_PROXIES;
                o.tick(Duration::from_millis(1));
                o.cfgs[i].incarnation += 1;
                let secrets = crate::secrets::Secrets::from_seed_for_tests(
                    o.cfgs[i].seed ^ u64::from(o.cfgs[i].incarnation),
                );
                if let Ok(p) = Proxy::new(o.cfgs[i].clone(), &secrets, o.now) {
                    o.proxies[i] = p;
                    o.leaving[i] = false;
                }
                o.collect();
            }
            _ => {
                let i = usize::from(inp.u8()) % OVERLAY_PROXIES;
                if !o.leaving[i] {
                    o.leaving[i] = true;
                    let now = o.now;
                    o.proxies[i].leave(now);
                    o.collect();
                }
            }
        }
        for (p, c) in o.proxies.iter().zip(&o.cfgs) {
            check_bounds(p, c);
        }
    }
    (o.attacks, o.most_members)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replay oracle runs, and is not vacuous: a converging overlay whose recorded frames are then
    /// replayed everywhere, and bit-flipped.
    #[test]
    fn replay_programs_run() {
        replay_control(&[]);
        let mut prog = Vec::new();
        for _ in 0..30 {
            prog.extend_from_slice(&[3, 0, 200, 1]); // 200 ms, deliver everything
        }
        for k in 0..40u8 {
            prog.extend_from_slice(&[4, 0, 0, k, k % 3, k % 4, 0, 0]); // replays
            prog.extend_from_slice(&[5, 1, 0, k, k % 3, 0, 0, k]); // forgeries
        }
        prog.extend_from_slice(&[7, 2, 3, 0, 200, 1, 3, 0xff, 0xff, 1]); // leave, time passes
        for k in 0..40u8 {
            prog.extend_from_slice(&[4, 0, 0, k, k % 3, k % 4, 0, 0]);
        }
        prog.extend_from_slice(&[6, 0]); // a restart of proxy 1
        for k in 0..40u8 {
            prog.extend_from_slice(&[4, 0, 0, k, 0, 0, 0, 0]);
        }
        let (attacks, most) = run_replay(&prog);
        assert!(attacks >= 100, "{attacks} attacks");
        assert_eq!(most, OVERLAY_PROXIES, "the overlay converged before the attacks");
        let mut x = 11u64;
        for _ in 0..20 {
            let v: Vec<u8> = (0..600)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            replay_control(&v);
        }
    }

    #[test]
    fn a_few_programs_run() {
        proxy_events(&[]);
        proxy_events(&[0; 64]);
        proxy_events(&(0..=255).collect::<Vec<u8>>());
        let mut x = 7u64;
        for _ in 0..50 {
            let v: Vec<u8> = (0..400)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            proxy_events(&v);
        }
    }
}
