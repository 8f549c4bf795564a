//! Shared test helpers: packets built by etherparse (an independent implementation), the etherparse oracle
//! that checks fields and checksums of a packet after our rewrites, and proptest strategies.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, Ipv4HeaderSlice, NetHeaders, PacketBuilder, PacketHeaders,
    TransportHeader, icmpv4, icmpv6,
};
use pias_proto::packet::{IpPacket, IpVersion};
use pias_proto::{FlowKey, IpProtocol};
use proptest::prelude::*;

/// What to put after the IP header.
#[derive(Debug, Clone)]
pub enum L4Spec {
    Udp {
        sp: u16,
        dp: u16,
        zero_csum: bool,
    },
    Tcp {
        sp: u16,
        dp: u16,
        seq: u32,
        syn: bool,
        mss: Option<u16>,
        odd_mss: bool,
    },
    Echo {
        reply: bool,
        id: u16,
        seq: u16,
    },
    /// An ICMP error quoting `inner` truncated to its IP header + 8 + `extra` bytes.
    Error {
        kind: u8,
        inner: Box<PacketSpec>,
        extra: usize,
    },
}

#[derive(Debug, Clone)]
pub struct PacketSpec {
    pub v6: bool,
    pub src4: [u8; 4],
    pub dst4: [u8; 4],
    pub src6: [u8; 16],
    pub dst6: [u8; 16],
    pub ttl: u8,
    pub ip_options: bool,
    pub l4: L4Spec,
    pub payload: Vec<u8>,
}

impl PacketSpec {
    pub fn src(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(self.src6.into())
        } else {
            IpAddr::V4(self.src4.into())
        }
    }
    pub fn dst(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(self.dst6.into())
        } else {
            IpAddr::V4(self.dst4.into())
        }
    }
}

/// Builds the packet with etherparse.
pub fn build(s: &PacketSpec) -> Vec<u8> {
    let ip = if s.v6 {
        PacketBuilder::ipv6(s.src6, s.dst6, s.ttl)
    } else {
        PacketBuilder::ipv4(s.src4, s.dst4, s.ttl)
    };
    let mut out = Vec::new();
    match &s.l4 {
        L4Spec::Udp { sp, dp, zero_csum } => {
            ip.udp(*sp, *dp).write(&mut out, &s.payload).unwrap();
            if *zero_csum && !s.v6 {
                out[26] = 0;
                out[27] = 0;
            }
        }
        L4Spec::Tcp {
            sp,
            dp,
            seq,
            syn,
            mss,
            odd_mss,
        } => {
            let mut opts = Vec::new();
            if let Some(m) = mss {
                if *odd_mss {
                    opts.push(1);
                }
                opts.extend_from_slice(&[2, 4, (m >> 8) as u8, *m as u8]);
                while opts.len() % 4 != 0 {
                    opts.push(1);
                }
            }
            let mut b = ip.tcp(*sp, *dp, *seq, 1000);
            if *syn {
                b = b.syn();
            } else {
                b = b.ack(7).psh();
            }
            b.options_raw(&opts).unwrap().write(&mut out, &s.payload).unwrap();
        }
        L4Spec::Echo { reply, id, seq } => match (s.v6, reply) {
            (false, false) => ip
                .icmpv4_echo_request(*id, *seq)
                .write(&mut out, &s.payload)
                .unwrap(),
            (false, true) => ip
                .icmpv4_echo_reply(*id, *seq)
                .write(&mut out, &s.payload)
                .unwrap(),
            (true, false) => ip
                .icmpv6_echo_request(*id, *seq)
                .write(&mut out, &s.payload)
                .unwrap(),
            (true, true) => ip
                .icmpv6_echo_reply(*id, *seq)
                .write(&mut out, &s.payload)
                .unwrap(),
        },
        L4Spec::Error { kind, inner, extra } => {
            let quote = quote_of(inner, *extra);
            if s.v6 {
                let t = match kind % 3 {
                    0 => Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
                    1 => Icmpv6Type::PacketTooBig { mtu: 1280 },
                    _ => Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded),
                };
                ip.icmpv6(t).write(&mut out, &quote).unwrap();
            } else {
                let t = match kind % 3 {
                    0 => Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
                    1 => Icmpv4Type::DestinationUnreachable(
                        icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
                    ),
                    _ => Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
                };
                ip.icmpv4(t).write(&mut out, &quote).unwrap();
            }
        }
    }
    if s.ip_options && !s.v6 {
        // Two NOP-padded words of options (IHL 7), header checksum recomputed by etherparse.
        out.splice(20..20, [1, 1, 1, 1, 1, 1, 1, 0]);
        out[0] = 0x47;
        let tl = u16::from_be_bytes([out[2], out[3]]) + 8;
        out[2..4].copy_from_slice(&tl.to_be_bytes());
        out[10] = 0;
        out[11] = 0;
        let c = Ipv4HeaderSlice::from_slice(&out)
            .unwrap()
            .to_header()
            .calc_header_checksum();
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out
}

/// The inner packet's bytes as quoted: IP header + 8 + `extra` transport bytes (at most the whole packet).
pub fn quote_of(inner: &PacketSpec, extra: usize) -> Vec<u8> {
    let full = build(inner);
    let hl = if inner.v6 {
        40
    } else {
        usize::from(full[0] & 0xf) * 4
    };
    full[..full.len().min(hl + 8 + extra)].to_vec()
}

/// Checks a packet against etherparse and against full recomputation: every checksum verifies, our
/// incremental checksums equal the from-scratch ones, and flow/fields agree with etherparse's parse.
pub fn oracle(bytes: &[u8]) {
    let pkt = IpPacket::new_checked(bytes).expect("our parse");
    pkt.verify_checksums().expect("checksums verify");
    let mut copy = pkt.as_bytes().to_vec();
    IpPacket::new_checked(&mut copy[..])
        .unwrap()
        .recompute_checksums();
    assert_eq!(
        copy,
        pkt.as_bytes(),
        "incremental checksums equal full recomputation"
    );

    let h = PacketHeaders::from_ip_slice(pkt.as_bytes()).expect("etherparse parse");
    let payload = h.payload.slice();
    let (src, dst, v4h, v6h) = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(pkt.version(), IpVersion::V4);
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "ipv4 header checksum (etherparse)"
            );
            assert_eq!(pkt.ttl(), ip.time_to_live);
            assert_eq!(pkt.is_fragment(), ip.is_fragmenting_payload());
            assert_eq!(pkt.has_ip_options(), !ip.options.is_empty());
            assert_eq!(pkt.total_len(), usize::from(ip.total_len));
            (
                IpAddr::V4(Ipv4Addr::from(ip.source)),
                IpAddr::V4(Ipv4Addr::from(ip.destination)),
                Some(ip.clone()),
                None,
            )
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(pkt.version(), IpVersion::V6);
            assert_eq!(pkt.ttl(), ip.hop_limit);
            (
                IpAddr::V6(Ipv6Addr::from(ip.source)),
                IpAddr::V6(Ipv6Addr::from(ip.destination)),
                None,
                Some(ip.clone()),
            )
        }
        None => panic!("etherparse found no IP header"),
    };
    assert_eq!(pkt.src_addr(), src);
    assert_eq!(pkt.dst_addr(), dst);
    if matches!(pkt.l4_protocol(), IpProtocol::Other(_)) || pkt.is_fragment() {
        assert_eq!(pkt.flow(), None);
        return;
    }
    let flow = pkt.flow();
    let key = |sp, dp| FlowKey {
        proto: pkt.l4_protocol(),
        src,
        src_port: sp,
        dst,
        dst_port: dp,
    };
    match h.transport {
        Some(TransportHeader::Udp(u)) => {
            assert_eq!(flow, Some(key(u.source_port, u.destination_port)));
            let want = match (&v4h, &v6h) {
                (Some(ip), _) if u.checksum == 0 => 0,
                (Some(ip), _) => u.calc_checksum_ipv4(ip, payload).unwrap(),
                (_, Some(ip)) => u.calc_checksum_ipv6(ip, payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(u.checksum, want, "udp checksum (etherparse)");
        }
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(flow, Some(key(t.source_port, t.destination_port)));
            let f = pkt.tcp_flags().unwrap();
            assert_eq!((f.syn(), f.ack(), f.fin(), f.rst()), (t.syn, t.ack, t.fin, t.rst));
            let want = match (&v4h, &v6h) {
                (Some(ip), _) => t.calc_checksum_ipv4(ip, payload).unwrap(),
                (_, Some(ip)) => t.calc_checksum_ipv6(ip, payload).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(t.checksum, want, "tcp checksum (etherparse)");
        }
        Some(TransportHeader::Icmpv4(i)) => {
            assert_eq!(
                i.checksum,
                i.icmp_type.calc_checksum(payload),
                "icmpv4 checksum (etherparse)"
            );
            match i.icmp_type {
                Icmpv4Type::EchoRequest(IcmpEchoHeader { id, .. })
                | Icmpv4Type::EchoReply(IcmpEchoHeader { id, .. }) => assert_eq!(flow, Some(key(id, id))),
                _ => assert_eq!(flow, None),
            }
        }
        Some(TransportHeader::Icmpv6(i)) => {
            let ip = v6h.as_ref().unwrap();
            let want = i
                .icmp_type
                .calc_checksum(ip.source, ip.destination, payload)
                .unwrap();
            assert_eq!(i.checksum, want, "icmpv6 checksum (etherparse)");
            match i.icmp_type {
                Icmpv6Type::EchoRequest(IcmpEchoHeader { id, .. })
                | Icmpv6Type::EchoReply(IcmpEchoHeader { id, .. }) => assert_eq!(flow, Some(key(id, id))),
                _ => assert_eq!(flow, None),
            }
        }
        None => panic!(
            "etherparse found no transport header but we did: {:?}",
            pkt.l4_protocol()
        ),
    }
}

// ---- strategies ----

fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn plain_l4() -> impl Strategy<Value = L4Spec> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(sp, dp, zero_csum)| L4Spec::Udp {
            sp,
            dp,
            zero_csum
        }),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<bool>(),
            proptest::option::of(any::<u16>()),
            any::<bool>()
        )
            .prop_map(|(sp, dp, seq, syn, mss, odd_mss)| L4Spec::Tcp {
                sp,
                dp,
                seq,
                syn,
                mss,
                odd_mss
            }),
        (any::<bool>(), any::<u16>(), any::<u16>()).prop_map(|(reply, id, seq)| L4Spec::Echo {
            reply,
            id,
            seq
        }),
    ]
}

prop_compose! {
    fn base(v6: bool)(src4: [u8; 4], dst4: [u8; 4], src6: [u8; 16], dst6: [u8; 16], ttl: u8,
                     ip_options in proptest::bool::weighted(0.2), payload in payload()) -> PacketSpec {
        PacketSpec { v6, src4, dst4, src6, dst6, ttl, ip_options, l4: L4Spec::Echo { reply: false, id: 0, seq: 0 }, payload }
    }
}

/// A packet that is not an ICMP error.
pub fn plain_packet() -> impl Strategy<Value = PacketSpec> {
    (any::<bool>().prop_flat_map(base), plain_l4()).prop_map(|(mut s, l4)| {
        s.l4 = l4;
        s
    })
}

/// A TCP/UDP/echo packet or an ICMP error quoting one (same family).
pub fn any_packet() -> impl Strategy<Value = PacketSpec> {
    prop_oneof![
        3 => plain_packet(),
        2 => (any::<bool>(), any::<u8>(), 0usize..80, any::<u8>()).prop_flat_map(|(v6, kind, extra, _)| {
            (base(v6), base(v6), plain_l4()).prop_map(move |(mut outer, mut inner, l4)| {
                inner.l4 = l4;
                outer.ip_options = false;
                outer.l4 = L4Spec::Error { kind, inner: Box::new(inner), extra };
                outer
            })
        }),
    ]
}

/// An address of each family; rewrites pick the one matching the packet.
#[derive(Debug, Clone, Copy)]
pub struct AnyAddr {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl AnyAddr {
    pub fn pick(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

pub fn any_addr() -> impl Strategy<Value = AnyAddr> {
    (any::<[u8; 4]>(), any::<[u8; 16]>()).prop_map(|(a, b)| AnyAddr {
        v4: a.into(),
        v6: b.into(),
    })
}
