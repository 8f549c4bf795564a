//! Round-trip, golden-byte and robustness tests for every control message.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;
use crate::addr::{IpProtocol, ProxyId, TransportAddr};
use crate::auth::MasterKey;

fn key() -> MacKey {
    MasterKey::from_bytes([0x42; 32]).overlay_key()
}

/// The binding most tests use (the overlay binding is exercised by its own tests).
const B: Binding = Binding::Target;

fn overlay(vni: u32, to: &str) -> Binding {
    Binding::Overlay {
        vni,
        receiver: to.parse().unwrap(),
    }
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn any_ta() -> impl Strategy<Value = TransportAddr> {
    (any_ip(), any::<u16>(), any::<u8>())
        .prop_map(|(ip, port, p)| TransportAddr::new(ip, port, IpProtocol::from(p)))
}

fn any_record() -> impl Strategy<Value = ProxyRecord> {
    (
        1u32..,
        any::<u32>(),
        any::<u32>(),
        0u8..4,
        any_ip(),
        any::<u16>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(id, incarnation, version, st, ip, port, coord)| ProxyRecord {
            id: ProxyId(id),
            incarnation,
            version,
            status: [
                MemberStatus::Alive,
                MemberStatus::Suspect,
                MemberStatus::Down,
                MemberStatus::Left,
            ][usize::from(st)],
            addr: SocketAddr::new(ip, port),
            coord,
        })
}

fn any_probe() -> impl Strategy<Value = Probe> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(nonce, incarnation, version, digest, coord)| Probe {
            nonce,
            incarnation,
            version,
            digest,
            coord,
        })
}

fn any_digest() -> impl Strategy<Value = Digest> {
    (0u8..=7, any::<u32>(), any::<[u64; 16]>(), any::<[u16; 16]>()).prop_map(|(depth, p, hashes, counts)| {
        let prefix = if depth == 0 {
            0
        } else {
            p & ((1u64 << (4 * u32::from(depth))) - 1) as u32
        };
        Digest {
            depth,
            prefix,
            hashes,
            counts,
        }
    })
}

fn any_report() -> impl Strategy<Value = ReportEntry> {
    (any_ta(), any::<u32>(), any::<u8>(), any::<u16>()).prop_map(|(group, count, flags, load)| ReportEntry {
        group,
        count,
        flags,
        load,
    })
}

fn any_answer() -> impl Strategy<Value = Answer> {
    (
        any_ta(),
        any::<u32>(),
        proptest::collection::vec((1u32.., any::<u32>()), 0..=16),
    )
        .prop_map(|(g, ttl, v)| {
            let list: Vec<_> = v
                .into_iter()
                .map(|(j, w)| AnswerEntry {
                    jap: ProxyId(j),
                    weight: w,
                })
                .collect();
            Answer::new(g, ttl, &list)
        })
}

/// A service address compatible with the group (same protocol, and for NAT the same family).
fn any_register() -> impl Strategy<Value = Register> {
    (any_ta(), any_ta(), any::<bool>(), 1u16.., any::<[u8; 16]>()).prop_map(
        |(group, s, tunnel, weight, cookie)| {
            let mut service = TransportAddr::new(s.ip, s.port, group.proto);
            let mode = if tunnel {
                DeliveryMode::Tunnel
            } else {
                DeliveryMode::Nat
            };
            if !tunnel && service.ip.is_ipv4() != group.ip.is_ipv4() {
                service.ip = group.ip;
            }
            Register {
                group,
                service,
                mode,
                weight,
                cookie,
            }
        },
    )
}

fn any_regack() -> impl Strategy<Value = RegisterAck> {
    (
        any_ta(),
        any_ta(),
        0usize..4,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(group, service, s, jap, refresh_ms, hold_ms)| RegisterAck {
            group,
            service,
            status: [
                RegAckStatus::Ok,
                RegAckStatus::Full,
                RegAckStatus::Gone,
                RegAckStatus::Draining,
            ][s],
            jap: ProxyId(jap),
            refresh_ms,
            hold_ms,
        })
}

/// Emits `m`, checks the parse gives it back, and that re-emitting the parsed form gives the same bytes.
fn round_trip(m: Message<'_>, seq: u64) -> Vec<u8> {
    let hdr = ControlHeader {
        sender: ProxyId(3),
        seq,
        time_ms: 1_700_000_000_123,
    };
    let mut buf = vec![0u8; m.buffer_len()];
    let n = m.emit(hdr, &key(), B, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    let p = ControlPacket::new_checked(&buf).unwrap();
    p.verify(&key(), B).unwrap();
    assert_eq!(p.header(), hdr);
    let back = p.message().unwrap();
    // Lists compare by content (Wire vs Slice representations).
    match (&m, &back) {
        (Message::Records(a), Message::Records(b)) => assert!(a.iter().eq(b.iter())),
        (Message::Report(a), Message::Report(b)) => assert!(a.iter().eq(b.iter())),
        _ => assert_eq!(back, m),
    }
    let mut again = vec![0u8; back.buffer_len()];
    back.emit(hdr, &key(), B, &mut again).unwrap();
    assert_eq!(again, buf, "parse → emit must reproduce the bytes");
    buf
}

proptest! {
    #[test]
    fn probe_round_trips(p in any_probe(), seq: u64, ack: bool) {
        round_trip(if ack { Message::ProbeAck(p) } else { Message::Probe(p) }, seq);
    }

    #[test]
    fn records_round_trip(v in proptest::collection::vec(any_record(), 0..=Records::MAX), seq: u64) {
        round_trip(Message::Records(Records::Slice(&v)), seq);
    }

    #[test]
    fn join_round_trips(r in any_record()) {
        round_trip(Message::Join(r), 1);
    }

    #[test]
    fn digest_and_pull_round_trip(d in any_digest()) {
        round_trip(Message::Digest(d), 1);
        round_trip(Message::Pull(Pull { depth: d.depth, prefix: d.prefix }), 2);
    }

    #[test]
    fn reports_round_trip(v in proptest::collection::vec(any_report(), 0..=Reports::MAX), acked: u64) {
        round_trip(Message::Report(Reports::Slice(&v)), 5);
        round_trip(Message::ReportAck(ReportAck { acked_seq: acked }), 6);
    }

    #[test]
    fn resolve_answer_invalidate_round_trip(a in any_answer(), reason: u8) {
        round_trip(Message::Resolve(Resolve { group: a.group }), 1);
        round_trip(Message::Answer(a), 2);
        round_trip(Message::Invalidate(Invalidate { group: a.group, reason }), 3);
    }

    #[test]
    fn target_messages_round_trip(r in any_register(), ack in any_regack()) {
        round_trip(Message::Register(r), 1);
        round_trip(Message::Challenge(Challenge { group: r.group, cookie: r.cookie }), 2);
        round_trip(Message::RegisterAck(ack), 3);
        round_trip(Message::Refresh(TargetOp { group: r.group, service: r.service }), 4);
        round_trip(Message::Deregister(TargetOp { group: r.group, service: r.service }), 5);
    }

    /// Whatever the bytes, parsing returns (it never panics), and anything that parses re-emits to the same
    /// body length it claimed.
    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400), kind: u8) {
        let _ = ControlPacket::new_checked(&b).map(|p| (p.header(), p.message(), p.verify(&key(), B)));
        if let Ok(m) = Message::parse_body(kind, &b) {
            let mut out = vec![0u8; m.buffer_len()];
            m.emit(ControlHeader { sender: ProxyId(1), seq: 1, time_ms: 5 }, &key(), B, &mut out).unwrap();
        }
    }

    /// Any single flipped bit in a message makes it fail authentication (or fail to parse).
    #[test]
    fn any_bit_flip_is_detected(p in any_probe(), bit in 0usize..(HEADER_LEN + Probe::LEN + 16) * 8) {
        let m = Message::Probe(p);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(ControlHeader { sender: ProxyId(9), seq: 77, time_ms: 5 }, &key(), B, &mut buf).unwrap();
        buf[bit / 8] ^= 1 << (bit % 8);
        let ok = ControlPacket::new_checked(&buf).and_then(|p| p.verify(&key(), B));
        prop_assert!(ok.is_err());
    }
}

#[test]
fn golden_probe_bytes() {
    let m = Message::Probe(Probe {
        nonce: 0x0102030405060708,
        incarnation: 9,
        version: 10,
        digest: 0xAA,
        coord: [0; 16],
    });
    let mut buf = [0u8; 84];
    let n = m
        .emit(
            ControlHeader {
                sender: ProxyId(0x01020304),
                seq: 0x1122,
                time_ms: 1_700_000_000_000,
            },
            &key(),
            B,
            &mut buf,
        )
        .unwrap();
    assert_eq!(n, 84);
    assert_eq!(
        &buf[..36],
        &[
            2, 0x01, 0, 0, 1, 2, 3, 4, // version, type, flags, reserved, sender
            0, 0, 0, 0, 0, 0, 0x11, 0x22, // seq
            0, 40, 0, 0, // body length, reserved
            0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // timestamp 1_700_000_000_000 ms
            1, 2, 3, 4, 5, 6, 7, 8, // nonce
        ]
    );
    assert_eq!(&buf[36..44], &[0, 0, 0, 9, 0, 0, 0, 10]);
}

/// A report entry's bytes (SPEC.md §9.1): the load sits in the last two bytes, after a reserved byte.
#[test]
fn golden_report_entry_bytes() {
    let e = ReportEntry {
        group: TransportAddr::new("10.99.0.1".parse().unwrap(), 53, IpProtocol::Udp),
        count: 0x0102_0304,
        flags: ReportEntry::FLAG_TUNNEL,
        load: 0x0A0B,
    };
    let m = Message::Report(Reports::Slice(core::slice::from_ref(&e)));
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(
        ControlHeader {
            sender: ProxyId(1),
            seq: 1,
            time_ms: 1_700_000_000_000,
        },
        &key(),
        B,
        &mut buf,
    )
    .unwrap();
    // Body: count u16, reserved u16, then the entry; the group's 20 bytes come first.
    let body = &buf[28..28 + 4 + ReportEntry::LEN];
    assert_eq!(&body[..4], &[0, 1, 0, 0]);
    assert_eq!(&body[4 + 20..], &[1, 2, 3, 4, 0x01, 0, 0x0A, 0x0B]);
    let p = ControlPacket::new_checked(&buf).unwrap();
    let Ok(Message::Report(r)) = p.message() else {
        panic!("not a report")
    };
    assert_eq!(r.iter().collect::<Vec<_>>(), vec![e]);
}

#[test]
fn framing_errors_are_typed() {
    let m = Message::ReportAck(ReportAck { acked_seq: 1 });
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(
        ControlHeader {
            sender: ProxyId(1),
            seq: 1,
            time_ms: 1_700_000_000_000,
        },
        &key(),
        B,
        &mut buf,
    )
    .unwrap();
    assert!(matches!(
        ControlPacket::new_checked(&buf[..10]),
        Err(WireError::Truncated { .. })
    ));
    assert!(matches!(
        ControlPacket::new_checked(&buf[..buf.len() - 1]),
        Err(WireError::Truncated { .. })
    ));
    let mut long = buf.clone();
    long.push(0);
    assert!(matches!(
        ControlPacket::new_checked(&long),
        Err(WireError::BadLength { .. })
    ));
    let mut v1 = buf.clone();
    v1[0] = 1;
    assert!(matches!(
        ControlPacket::new_checked(&v1),
        Err(WireError::BadVersion { .. })
    ));
    let mut unknown = buf.clone();
    unknown[1] = 0x7f;
    assert!(matches!(
        ControlPacket::new_checked(&unknown).unwrap().message(),
        Err(WireError::Unsupported { .. })
    ));
    let other = MasterKey::from_bytes([1; 32]).overlay_key();
    assert_eq!(
        ControlPacket::new_checked(&buf).unwrap().verify(&other, B),
        Err(WireError::BadMac)
    );
    // A too-small output buffer is an error that writes nothing.
    let mut small = [0xEEu8; 20];
    assert!(matches!(
        m.emit(
            ControlHeader {
                sender: ProxyId(1),
                seq: 1,
                time_ms: 1_700_000_000_000,
            },
            &key(),
            B,
            &mut small
        ),
        Err(WireError::BufferTooSmall { .. })
    ));
    assert_eq!(small, [0xEE; 20]);
}

#[test]
fn longer_bodies_are_accepted_for_extension() {
    // A newer sender appends a field: the old receiver reads what it knows and ignores the rest.
    let r = Resolve {
        group: TransportAddr::new("10.0.0.1".parse().unwrap(), 53, IpProtocol::Udp),
    };
    let mut body = vec![0u8; Resolve::LEN + 8];
    r.emit(&mut body).unwrap();
    assert_eq!(
        Message::parse_body(kind::RESOLVE, &body).unwrap(),
        Message::Resolve(r)
    );
}

#[test]
fn no_reply_is_larger_than_its_request() {
    // The replies a proxy sends to unauthenticated-or-target input (SPEC.md §8.4).
    let g = TransportAddr::new("10.0.0.1".parse().unwrap(), 53, IpProtocol::Udp);
    let op = TargetOp { group: g, service: g };
    let reg = Message::Register(Register {
        group: g,
        service: g,
        mode: DeliveryMode::Nat,
        weight: 1,
        cookie: [0; 16],
    });
    let chal = Message::Challenge(Challenge {
        group: g,
        cookie: [0; 16],
    });
    let ack = Message::RegisterAck(RegisterAck {
        group: g,
        service: g,
        status: RegAckStatus::Ok,
        jap: ProxyId(1),
        refresh_ms: 1,
        hold_ms: 1,
    });
    assert!(chal.buffer_len() <= reg.buffer_len());
    assert!(ack.buffer_len() <= reg.buffer_len());
    assert!(ack.buffer_len() <= Message::Refresh(op).buffer_len());
    assert!(ack.buffer_len() <= Message::Deregister(op).buffer_len());
}

#[test]
fn geneve_control_frame() {
    let m = Message::Pull(Pull { depth: 1, prefix: 3 });
    let mut out = [0u8; 128];
    let n = m
        .emit_frame(
            0x00abcd,
            "192.0.2.1:6081".parse().unwrap(),
            ControlHeader {
                sender: ProxyId(2),
                seq: 3,
                time_ms: 1_700_000_000_000,
            },
            &key(),
            &mut out,
        )
        .unwrap();
    match crate::tunnel::Frame::parse(&out[..n]).unwrap() {
        crate::tunnel::Frame::Control(g) => {
            assert_eq!(g.vni(), 0xabcd);
            let p = ControlPacket::new_checked(g.payload()).unwrap();
            p.verify(&key(), overlay(0x00abcd, "192.0.2.1:6081")).unwrap();
            assert_eq!(p.message().unwrap(), m);
        }
        crate::tunnel::Frame::Data(_) => panic!("control frame parsed as data"),
    }
}

#[test]
fn list_capacities_fit_the_size_limit() {
    let recs = vec![
        ProxyRecord {
            id: ProxyId(1),
            incarnation: 1,
            version: 1,
            status: MemberStatus::Alive,
            addr: "[2001:db8::1]:6081".parse().unwrap(),
            coord: [0; 16]
        };
        Records::MAX
    ];
    let m = Message::Records(Records::Slice(&recs));
    assert!(m.buffer_len() <= MAX_MESSAGE_LEN);
    let too_many = vec![recs[0]; Records::MAX + 1];
    let m = Message::Records(Records::Slice(&too_many));
    let mut out = vec![0u8; 2000];
    assert!(matches!(
        m.emit(
            ControlHeader {
                sender: ProxyId(1),
                seq: 1,
                time_ms: 1_700_000_000_000,
            },
            &key(),
            B,
            &mut out
        ),
        Err(WireError::BadLength { .. })
    ));
}

/// The MAC binds each field of the overlay binding: a message sealed for one receiver, VNI or domain fails
/// at any other, so a frame recorded on its way to proxy A is refused by proxy B (SPEC.md §8.2).
#[test]
fn mac_binds_receiver_vni_and_domain() {
    let m = Message::Join(ProxyRecord {
        id: ProxyId(4),
        incarnation: 1,
        version: 1,
        status: MemberStatus::Alive,
        addr: "192.0.2.4:6081".parse().unwrap(),
        coord: [0; 16],
    });
    let hdr = ControlHeader {
        sender: ProxyId(4),
        seq: 1,
        time_ms: 1,
    };
    let to_a = overlay(7, "192.0.2.1:6081");
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(hdr, &key(), to_a, &mut buf).unwrap();
    let p = ControlPacket::new_checked(&buf).unwrap();
    assert_eq!(p.verify(&key(), to_a), Ok(()));
    for other in [
        overlay(7, "192.0.2.2:6081"),          // another proxy
        overlay(7, "192.0.2.1:6082"),          // another port of the same host
        overlay(8, "192.0.2.1:6081"),          // another overlay
        overlay(7, "[::ffff:192.0.2.2]:6081"), // another proxy, in mapped form
        Binding::Target,
    ] {
        assert_eq!(p.verify(&key(), other), Err(WireError::BadMac), "{other:?}");
    }
    // An IPv4 receiver and its IPv4-mapped IPv6 form are one address.
    assert_eq!(p.verify(&key(), overlay(7, "[::ffff:192.0.2.1]:6081")), Ok(()));
}

proptest! {
    /// Changing any field of the binding (VNI, any receiver address bit, port) breaks the tag, and so does
    /// changing the timestamp in the header.
    #[test]
    fn binding_and_timestamp_are_authenticated(
        vni in 0u32..(1 << 24),
        ip: [u8; 16],
        port: u16,
        which in 0usize..4,
        bit in 0usize..128,
        time_ms: u64,
    ) {
        let to = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port);
        let bind = Binding::Overlay { vni, receiver: to };
        let m = Message::Pull(Pull { depth: 0, prefix: 0 });
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(ControlHeader { sender: ProxyId(1), seq: 1, time_ms }, &key(), bind, &mut buf).unwrap();
        prop_assert_eq!(ControlPacket::new_checked(&buf).unwrap().header().time_ms, time_ms);
        let wrong = match which {
            0 => Binding::Overlay { vni: vni ^ (1 << (bit % 24)), receiver: to },
            1 => {
                let mut o = ip;
                o[bit / 8] ^= 1 << (bit % 8);
                Binding::Overlay { vni, receiver: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port) }
            }
            2 => Binding::Overlay { vni, receiver: SocketAddr::new(to.ip(), port ^ (1 << (bit % 16))) },
            _ => {
                // The timestamp: flip one of its bits on the wire.
                buf[20 + (bit % 64) / 8] ^= 1 << (bit % 8);
                bind
            }
        };
        prop_assert_eq!(
            ControlPacket::new_checked(&buf).unwrap().verify(&key(), wrong),
            Err(WireError::BadMac)
        );
    }
}
