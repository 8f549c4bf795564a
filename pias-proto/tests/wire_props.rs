//! Properties of every header: Repr round trips (emit → parse = same repr; parse → emit = same bytes for
//! canonical input built by etherparse), no panic on arbitrary bytes, typed errors for truncated and
//! oversized input, and the packet-too-big builder.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{L4Spec, build, oracle, plain_packet};
use pias_proto::icmp::{self, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr};
use pias_proto::ipv4::{Ipv4Packet, Ipv4Repr};
use pias_proto::ipv6::{Ipv6Packet, Ipv6Repr};
use pias_proto::packet::{IpPacket, IpVersion, emit_packet_too_big};
use pias_proto::tcp::{TcpFlags, TcpOptionBytes, TcpPacket, TcpRepr};
use pias_proto::udp::{UdpPacket, UdpRepr};
use pias_proto::{IpProtocol, WireError};
use proptest::prelude::*;

fn proto() -> impl Strategy<Value = IpProtocol> {
    any::<u8>().prop_map(IpProtocol::from)
}

prop_compose! {
    fn ipv4_repr()(src: [u8; 4], dst: [u8; 4], protocol in proto(), payload_len in 0usize..1500, ttl: u8,
                   tos: u8, ident: u16, dont_frag: bool, more_frags: bool, off in 0u16..0x2000) -> Ipv4Repr {
        Ipv4Repr { src_addr: src.into(), dst_addr: dst.into(), protocol, payload_len, ttl, tos, ident,
                   dont_frag, more_frags, frag_offset: off << 3 }
    }
}

prop_compose! {
    fn ipv6_repr()(src: [u8; 16], dst: [u8; 16], next_header in proto(), payload_len in 0usize..1500,
                   hop_limit: u8, traffic_class: u8, flow_label in 0u32..0x10_0000) -> Ipv6Repr {
        Ipv6Repr { src_addr: src.into(), dst_addr: dst.into(), next_header, payload_len, hop_limit,
                   traffic_class, flow_label }
    }
}

fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn ipv4_repr_round_trips(r in ipv4_repr()) {
        let mut b = vec![0u8; 20 + r.payload_len];
        r.emit(&mut b).unwrap();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), r);
        let e = etherparse::Ipv4HeaderSlice::from_slice(&b).unwrap();
        prop_assert_eq!(e.header_checksum(), e.to_header().calc_header_checksum());
    }

    #[test]
    fn ipv6_repr_round_trips(r in ipv6_repr()) {
        let mut b = vec![0u8; 40 + r.payload_len];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
        let e = etherparse::Ipv6HeaderSlice::from_slice(&b).unwrap();
        prop_assert_eq!(e.flow_label().value(), r.flow_label);
    }

    #[test]
    fn udp_repr_round_trips((s, d) in addr_pair(), sp: u16, dp: u16, payload in bytes(100)) {
        let r = UdpRepr { src_port: sp, dst_port: dp, payload_len: payload.len() };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, &s, &d, |p| p.copy_from_slice(&payload)).unwrap();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(UdpRepr::parse(&p, &s, &d).unwrap(), r);
        prop_assert_eq!(p.payload(), &payload[..]);
        prop_assert_ne!(p.checksum(), 0);
    }

    #[test]
    fn tcp_repr_round_trips((s, d) in addr_pair(), sp: u16, dp: u16, seq: u32, ack: u32, flags in 0u16..0x200,
                            window: u16, urgent: u16, opts in bytes(41), payload in bytes(100)) {
        let r = TcpRepr {
            src_port: sp, dst_port: dp, seq_number: seq, ack_number: ack,
            flags: TcpFlags::from_bits_truncate(flags), window, urgent,
            options: TcpOptionBytes::new(&opts[..opts.len().min(40)]).unwrap(), payload_len: payload.len(),
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, &s, &d, |p| p.copy_from_slice(&payload)).unwrap();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(TcpRepr::parse(&p, &s, &d).unwrap(), r);
        prop_assert_eq!(p.payload(), &payload[..]);
    }

    #[test]
    fn icmp_reprs_round_trip(kind in 0u8..5, code: u8, a: u16, b16: u16, mtu: u32, data in bytes(100),
                             (s6, d6) in (any::<[u8; 16]>(), any::<[u8; 16]>())) {
        let r4 = match kind {
            0 => Icmpv4Repr::EchoRequest { ident: a, seq_no: b16, data: &data },
            1 => Icmpv4Repr::EchoReply { ident: a, seq_no: b16, data: &data },
            // etherparse (the oracle) reads the next-hop MTU for code 4 only; other codes leave it zero.
            2 => Icmpv4Repr::DstUnreachable { code, next_hop_mtu: if code == 4 { b16 } else { 0 }, quote: &data },
            3 => Icmpv4Repr::TimeExceeded { code, quote: &data },
            // Likewise the pointer for code 0 only.
            _ => Icmpv4Repr::ParamProblem { code, pointer: if code == 0 { a as u8 } else { 0 }, quote: &data },
        };
        let mut b = vec![0u8; r4.buffer_len()];
        r4.emit(&mut b).unwrap();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(Icmpv4Repr::parse(&p).unwrap(), r4);
        let e = etherparse::Icmpv4Slice::from_slice(&b).unwrap();
        prop_assert_eq!(e.checksum(), e.icmp_type().calc_checksum(e.payload()));

        let (s6, d6) = (Ipv6Addr::from(s6), Ipv6Addr::from(d6));
        let r6 = match kind {
            0 => Icmpv6Repr::EchoRequest { ident: a, seq_no: b16, data: &data },
            1 => Icmpv6Repr::EchoReply { ident: a, seq_no: b16, data: &data },
            2 => Icmpv6Repr::DstUnreachable { code, quote: &data },
            3 => Icmpv6Repr::PacketTooBig { mtu, quote: &data },
            _ => Icmpv6Repr::ParamProblem { code, pointer: mtu, quote: &data },
        };
        let mut b = vec![0u8; r6.buffer_len()];
        r6.emit(&mut b, &s6, &d6).unwrap();
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(Icmpv6Repr::parse(&p, &s6, &d6).unwrap(), r6);
        let e = etherparse::Icmpv6Slice::from_slice(&b).unwrap();
        prop_assert!(e.is_checksum_valid(s6.octets(), d6.octets()));
    }

    /// parse → emit reproduces canonical bytes that etherparse built.
    #[test]
    fn parse_then_emit_reproduces_etherparse_bytes(spec in plain_packet()) {
        let spec = common::PacketSpec { ip_options: false, ..spec };
        let orig = build(&spec);
        let (s, d) = (spec.src(), spec.dst());
        let (l4, mut out) = if spec.v6 {
            let p = Ipv6Packet::new_checked(&orig[..]).unwrap();
            let r = Ipv6Repr::parse(&p).unwrap();
            let mut out = vec![0u8; orig.len()];
            r.emit(&mut out).unwrap();
            (&orig[40..], out)
        } else {
            let p = Ipv4Packet::new_checked(&orig[..]).unwrap();
            let r = Ipv4Repr::parse(&p).unwrap();
            let mut out = vec![0u8; orig.len()];
            r.emit(&mut out).unwrap();
            (&orig[20..], out)
        };
        let hl = orig.len() - l4.len();
        match spec.l4 {
            L4Spec::Udp { zero_csum, .. } => {
                let p = UdpPacket::new_checked(l4).unwrap();
                let r = UdpRepr::parse(&p, &s, &d).unwrap();
                r.emit(&mut out[hl..], &s, &d, |x| x.copy_from_slice(p.payload())).unwrap();
                if zero_csum && !spec.v6 {
                    // Not canonical: a zero ("no") checksum is re-emitted computed.
                    out[hl + 6] = 0;
                    out[hl + 7] = 0;
                }
            }
            L4Spec::Tcp { .. } => {
                let p = TcpPacket::new_checked(l4).unwrap();
                let r = TcpRepr::parse(&p, &s, &d).unwrap();
                r.emit(&mut out[hl..], &s, &d, |x| x.copy_from_slice(p.payload())).unwrap();
            }
            L4Spec::Echo { .. } if spec.v6 => {
                let (IpAddr::V6(s), IpAddr::V6(d)) = (s, d) else { unreachable!() };
                let p = Icmpv6Packet::new_checked(l4).unwrap();
                Icmpv6Repr::parse(&p, &s, &d).unwrap().emit(&mut out[hl..], &s, &d).unwrap();
            }
            L4Spec::Echo { .. } => {
                let p = Icmpv4Packet::new_checked(l4).unwrap();
                Icmpv4Repr::parse(&p).unwrap().emit(&mut out[hl..]).unwrap();
            }
            L4Spec::Error { .. } => unreachable!(),
        }
        prop_assert_eq!(out, orig);
    }

    /// No parser panics on arbitrary bytes, and nothing panics on a packet that parsed.
    #[test]
    fn arbitrary_bytes_never_panic(mut b in bytes(120), addr: [u8; 16], port: u16, max: u16) {
        let (s, d) = (IpAddr::from(addr), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (s6, d6) = (Ipv6Addr::from(addr), Ipv6Addr::LOCALHOST);
        if let Ok(p) = Ipv4Packet::new_checked(&b[..]) {
            let _ = (Ipv4Repr::parse(&p), p.payload(), p.options(), p.verify_checksum());
        }
        if let Ok(p) = Ipv6Packet::new_checked(&b[..]) {
            let _ = (Ipv6Repr::parse(&p), p.payload());
        }
        if let Ok(p) = UdpPacket::new_checked(&b[..]) {
            let _ = (UdpRepr::parse(&p, &s, &d), p.payload());
        }
        if let Ok(p) = TcpPacket::new_checked(&b[..]) {
            let _ = (TcpRepr::parse(&p, &s, &d), p.payload(), p.mss(), p.options().count());
            let mut c = b.clone();
            TcpPacket::new_checked(&mut c[..]).unwrap().clamp_mss(max);
        }
        if let Ok(p) = Icmpv4Packet::new_checked(&b[..]) {
            let _ = (Icmpv4Repr::parse(&p), p.quote());
        }
        if let Ok(p) = Icmpv6Packet::new_checked(&b[..]) {
            let _ = (Icmpv6Repr::parse(&p, &s6, &d6), p.quote());
        }
        // Make IP-looking input likely so IpPacket gets past the first checks.
        if b.len() > 20 && b[0] >> 4 != 6 {
            b[0] = 0x45;
            let n = b.len() as u16;
            b[2..4].copy_from_slice(&n.to_be_bytes());
        }
        exercise(&mut b, addr, port, max);
    }

    /// Mutated valid packets (including ICMP errors with their quotes) never panic anything.
    #[test]
    fn mutated_packets_never_panic(spec in common::any_packet(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                   cut: usize, addr: [u8; 16], port: u16, max: u16) {
        let mut b = build(&spec);
        for (at, x) in flips {
            let n = b.len();
            b[at % n] ^= x;
        }
        let n = b.len();
        b.truncate(n - cut % 8);
        exercise(&mut b, addr, port, max);
    }
}

fn exercise(b: &mut [u8], addr: [u8; 16], port: u16, max: u16) {
    let Ok(mut p) = IpPacket::new_checked(&mut b[..]) else {
        return;
    };
    let _ = (
        p.flow(),
        p.l4_protocol(),
        p.is_fragment(),
        p.has_ip_options(),
        p.tcp_flags(),
        p.ttl(),
    );
    let _ = (
        p.verify_checksums(),
        p.icmp_error_inner_flow(),
        p.icmp_type_code(),
        p.l4_bytes().len(),
    );
    let ip = if p.version() == IpVersion::V6 {
        IpAddr::from(addr)
    } else {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    };
    let _ = p.set_src(ip, port);
    let _ = p.set_dst(ip, port);
    let _ = p.set_src_addr(ip);
    let _ = p.set_icmp_inner_src(ip, port);
    let _ = p.set_icmp_inner_dst(ip, port);
    let _ = p.decrement_ttl();
    let _ = p.clamp_mss(max);
    let mut out = [0u8; 1280];
    let _ = emit_packet_too_big(&p, ip, 1400, &mut out);
    p.recompute_checksums();
}

// ---- typed errors ----

fn udp4() -> Vec<u8> {
    build(&common::PacketSpec {
        v6: false,
        src4: [10, 250, 0, 2],
        dst4: [10, 250, 0, 1],
        src6: [0; 16],
        dst6: [0; 16],
        ttl: 64,
        ip_options: false,
        l4: L4Spec::Udp {
            sp: 5000,
            dp: 53,
            zero_csum: false,
        },
        payload: vec![7; 12],
    })
}

#[test]
fn truncated_and_oversized_inputs() {
    let b = udp4();
    assert_eq!(b.len(), 40);
    assert!(matches!(
        IpPacket::new_checked(&b[..0]),
        Err(WireError::Truncated { need: 1, have: 0, .. })
    ));
    assert!(matches!(
        IpPacket::new_checked(&b[..19]),
        Err(WireError::Truncated {
            need: 20,
            have: 19,
            ..
        })
    ));
    assert!(matches!(
        IpPacket::new_checked(&b[..39]),
        Err(WireError::Truncated {
            need: 40,
            have: 39,
            ..
        })
    ));
    // IP total length shorter than the UDP header needs.
    let mut short = b.clone();
    short[3] = 25;
    assert!(matches!(
        IpPacket::new_checked(&short[..]),
        Err(WireError::Truncated {
            what: "udp header",
            need: 8,
            have: 5
        })
    ));
    let mut v = b.clone();
    v[0] = 0x55;
    assert!(matches!(
        IpPacket::new_checked(&v[..]),
        Err(WireError::BadVersion { version: 5, .. })
    ));
    // Oversized buffer: accepted, the packet stops at the IP total length and trailing bytes stay.
    let mut long = b.clone();
    long.extend_from_slice(&[0xee; 20]);
    let mut p = IpPacket::new_checked(&mut long[..]).unwrap();
    assert_eq!(p.total_len(), 40);
    p.verify_checksums().unwrap();
    p.set_dst(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 53).unwrap();
    p.verify_checksums().unwrap();
    assert!(long[40..].iter().all(|&x| x == 0xee));
    // A TCP header whose data offset runs past the packet.
    let mut t = b.clone();
    t[9] = 6;
    t[3] = 35;
    assert!(matches!(
        IpPacket::new_checked(&t[..]),
        Err(WireError::Truncated {
            what: "tcp header",
            need: 20,
            have: 15
        })
    ));
    t[3] = 60;
    t.resize(60, 0);
    t[20 + 12] = 0xf0;
    assert!(matches!(
        IpPacket::new_checked(&t[..]),
        Err(WireError::Truncated {
            what: "tcp header",
            need: 60,
            have: 40
        })
    ));
    t[20 + 12] = 0x30;
    assert!(matches!(
        IpPacket::new_checked(&t[..]),
        Err(WireError::BadLength { len: 12, .. })
    ));
    // A corrupted checksum is reported by layer.
    let mut c = b.clone();
    c[39] ^= 1;
    assert_eq!(
        IpPacket::new_checked(&c[..]).unwrap().verify_checksums(),
        Err(WireError::BadChecksum { what: "udp" })
    );
    c[8] ^= 1;
    assert_eq!(
        IpPacket::new_checked(&c[..]).unwrap().verify_checksums(),
        Err(WireError::BadChecksum { what: "ipv4 header" })
    );
}

#[test]
fn rewrite_errors_leave_packet_untouched() {
    let mut b = udp4();
    let orig = b.clone();
    let mut p = IpPacket::new_checked(&mut b[..]).unwrap();
    assert!(matches!(
        p.set_src(IpAddr::V6(Ipv6Addr::LOCALHOST), 1),
        Err(WireError::Malformed { .. })
    ));
    assert!(matches!(
        p.set_icmp_inner_src(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
        Err(WireError::Unsupported { .. })
    ));
    assert_eq!(b, orig);
    // Ports cannot be rewritten on a packet without ports.
    let mut f = orig.clone();
    f[6] = 0x00;
    f[7] = 0x10; // fragment offset 128: no transport header
    IpPacket::new_checked(&mut f[..]).unwrap().recompute_checksums();
    let before = f.clone();
    let mut p = IpPacket::new_checked(&mut f[..]).unwrap();
    assert!(p.is_fragment() && p.flow().is_none());
    assert!(matches!(
        p.set_src(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
        Err(WireError::Unsupported { .. })
    ));
    assert_eq!(f, before);
    IpPacket::new_checked(&mut f[..])
        .unwrap()
        .set_src_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .unwrap();
    IpPacket::new_checked(&f[..]).unwrap().verify_checksums().unwrap();
}

#[test]
fn zero_udp_checksum_over_ipv4_stays_zero() {
    let mut b = udp4();
    b[26] = 0;
    b[27] = 0;
    let mut p = IpPacket::new_checked(&mut b[..]).unwrap();
    p.set_src_dst(
        IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
        1,
        IpAddr::V4(Ipv4Addr::new(5, 6, 7, 8)),
        2,
    )
    .unwrap();
    assert_eq!(&b[26..28], &[0, 0]);
    oracle(&b);
}

#[test]
fn packet_too_big_builders() {
    // IPv4: a 1500-byte DF packet; the error quotes 548 bytes so that it is exactly 576.
    let mut spec = common::PacketSpec {
        v6: false,
        src4: [10, 250, 0, 2],
        dst4: [192, 0, 2, 1],
        src6: [0xfd, 0, 2, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        dst6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ttl: 64,
        ip_options: false,
        l4: L4Spec::Tcp {
            sp: 40000,
            dp: 80,
            seq: 1,
            syn: false,
            mss: None,
            odd_mss: false,
        },
        payload: vec![0x61; 1460],
    };
    for v6 in [false, true] {
        spec.v6 = v6;
        let big = build(&spec);
        let p = IpPacket::new_checked(&big[..]).unwrap();
        let src = spec.dst();
        let limit = if v6 { 1280 } else { 576 };
        let mut out = vec![0x55u8; 2000];
        // Too small: error, buffer untouched.
        assert_eq!(
            emit_packet_too_big(&p, src, 1400, &mut out[..limit - 1]),
            Err(WireError::BufferTooSmall {
                need: limit,
                have: limit - 1
            })
        );
        assert!(out.iter().all(|&x| x == 0x55));
        let wrong = if v6 {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        assert!(emit_packet_too_big(&p, wrong, 1400, &mut out).is_err());
        let n = emit_packet_too_big(&p, src, 1400, &mut out).unwrap();
        assert_eq!(n, limit);
        oracle(&out[..n]);
        let e = IpPacket::new_checked(&out[..n]).unwrap();
        assert_eq!(e.dst_addr(), spec.src());
        assert_eq!(e.src_addr(), src);
        assert_eq!(
            e.icmp_type_code(),
            Some(if v6 { (icmp::V6_PACKET_TOO_BIG, 0) } else { (3, 4) })
        );
        assert_eq!(e.icmp_error_inner_flow().unwrap(), p.flow().unwrap());
        let quote = &e.l4_bytes()[8..];
        assert_eq!(quote, &big[..quote.len()]);
        let mtu_field = &e.l4_bytes()[4..8];
        // 1400: v4 next-hop MTU in the low 16 bits (high 16 unused), v6 MTU as 32 bits.
        assert_eq!(mtu_field, [0, 0, 0x05, 0x78]);
        // An error about an error is refused.
        let mut out2 = vec![0u8; 2000];
        assert!(matches!(
            emit_packet_too_big(&e, spec.src(), 1400, &mut out2),
            Err(WireError::Unsupported { .. })
        ));
        // A small packet is quoted whole.
        let small = udp4();
        if !v6 {
            let p = IpPacket::new_checked(&small[..]).unwrap();
            let n = emit_packet_too_big(&p, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 1400, &mut out).unwrap();
            assert_eq!(n, 28 + 40);
            oracle(&out[..n]);
        }
    }
}
