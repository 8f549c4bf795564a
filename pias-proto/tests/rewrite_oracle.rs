//! Rewrites under an independent oracle: packets built by etherparse go through arbitrary sequences of
//! in-place rewrites; afterwards every checksum verifies, equals a from-scratch recomputation, and etherparse
//! agrees on fields and checksums. ICMP error translation is checked against the same rewrite applied to the
//! whole (unquoted) packet.

mod common;

use common::{AnyAddr, L4Spec, any_addr, any_packet, build, oracle, plain_packet};
use pias_proto::WireError;
use pias_proto::packet::{IpPacket, IpVersion};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Src(AnyAddr, u16),
    Dst(AnyAddr, u16),
    SrcDst(AnyAddr, u16, AnyAddr, u16),
    SrcAddr(AnyAddr),
    DstAddr(AnyAddr),
    Ttl,
    Mss(u16),
    InnerSrc(AnyAddr, u16),
    InnerDst(AnyAddr, u16),
    /// An address of the wrong family: must fail and leave the packet untouched.
    WrongFamily(AnyAddr),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any_addr(), any::<u16>()).prop_map(|(a, p)| Op::Src(a, p)),
        (any_addr(), any::<u16>()).prop_map(|(a, p)| Op::Dst(a, p)),
        (any_addr(), any::<u16>(), any_addr(), any::<u16>()).prop_map(|(a, p, b, q)| Op::SrcDst(a, p, b, q)),
        any_addr().prop_map(Op::SrcAddr),
        any_addr().prop_map(Op::DstAddr),
        Just(Op::Ttl),
        any::<u16>().prop_map(Op::Mss),
        (any_addr(), any::<u16>()).prop_map(|(a, p)| Op::InnerSrc(a, p)),
        (any_addr(), any::<u16>()).prop_map(|(a, p)| Op::InnerDst(a, p)),
        any_addr().prop_map(Op::WrongFamily),
    ]
}

/// Applies `op`; on error the packet must be unchanged.
fn apply(buf: &mut [u8], op: &Op) -> Result<(), WireError> {
    let before = buf.to_vec();
    let mut p = IpPacket::new_checked(&mut *buf).unwrap();
    let v6 = p.version() == IpVersion::V6;
    let r = match *op {
        Op::Src(a, port) => p.set_src(a.pick(v6), port),
        Op::Dst(a, port) => p.set_dst(a.pick(v6), port),
        Op::SrcDst(a, pa, b, pb) => p.set_src_dst(a.pick(v6), pa, b.pick(v6), pb),
        Op::SrcAddr(a) => p.set_src_addr(a.pick(v6)),
        Op::DstAddr(a) => p.set_dst_addr(a.pick(v6)),
        Op::Ttl => {
            p.decrement_ttl();
            Ok(())
        }
        Op::Mss(m) => {
            let before = p.l4_bytes().to_vec();
            let changed = p.clamp_mss(m);
            assert_eq!(changed, before != p.l4_bytes());
            Ok(())
        }
        Op::InnerSrc(a, port) => p.set_icmp_inner_src(a.pick(v6), port),
        Op::InnerDst(a, port) => p.set_icmp_inner_dst(a.pick(v6), port),
        Op::WrongFamily(a) => {
            let r = p.set_src(a.pick(!v6), 1);
            assert!(matches!(r, Err(WireError::Malformed { .. })));
            assert!(p.set_dst_addr(a.pick(!v6)).is_err());
            assert!(p.set_icmp_inner_dst(a.pick(!v6), 1).is_err());
            r
        }
    };
    if r.is_err() {
        assert_eq!(&buf[..], &before[..], "a failed rewrite changed the packet");
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn rewrites_keep_checksums_right(spec in any_packet(), ops in proptest::collection::vec(op(), 0..8)) {
        let mut buf = build(&spec);
        oracle(&buf);
        for op in &ops {
            let _ = apply(&mut buf, op);
            oracle(&buf);
        }
    }

    /// NAT there and back is the identity on the bytes.
    #[test]
    fn nat_round_trip_is_identity(spec in plain_packet(), a in any_addr(), pa: u16, b in any_addr(), pb: u16) {
        let orig = build(&spec);
        let mut buf = orig.clone();
        let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
        let v6 = p.version() == IpVersion::V6;
        let f = p.flow().unwrap();
        p.set_src_dst(a.pick(v6), pa, b.pick(v6), pb).unwrap();
        let g = p.flow().unwrap();
        prop_assert_eq!((g.src, g.dst), (a.pick(v6), b.pick(v6)));
        if matches!(spec.l4, L4Spec::Echo { .. }) {
            prop_assert_eq!((g.src_port, g.dst_port), (pb, pb));
        } else {
            prop_assert_eq!((g.src_port, g.dst_port), (pa, pb));
        }
        oracle(&buf);
        let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_src(f.src, f.src_port).unwrap();
        p.set_dst(f.dst, f.dst_port).unwrap();
        prop_assert_eq!(&buf, &orig);
    }

    /// Translating the quote of an ICMP error gives the same bytes as translating the packet itself and
    /// quoting it afterwards — including the quoted transport checksum of a truncated quote.
    #[test]
    fn icmp_inner_rewrite_matches_rewrite_of_whole_packet(
        spec in any_packet(), a in any_addr(), pa: u16, b in any_addr(), pb: u16,
    ) {
        let L4Spec::Error { inner, extra, .. } = &spec.l4 else { return Ok(()) };
        let mut buf = build(&spec);
        let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
        let v6 = p.version() == IpVersion::V6;
        let inner_flow = p.icmp_error_inner_flow().unwrap();
        prop_assert_eq!(inner_flow, IpPacket::new_checked(build(inner)).unwrap().flow().unwrap());
        p.set_icmp_inner_src(a.pick(v6), pa).unwrap();
        p.set_icmp_inner_dst(b.pick(v6), pb).unwrap();
        let hl = p.ip_header_len() + 8;
        let quote = p.as_bytes()[hl..].to_vec();
        oracle(&buf);

        let mut whole = build(inner);
        let mut q = IpPacket::new_checked(&mut whole[..]).unwrap();
        q.set_src(a.pick(v6), pa).unwrap();
        q.set_dst(b.pick(v6), pb).unwrap();
        oracle(&whole);
        let ihl = if v6 { 40 } else { usize::from(whole[0] & 0xf) * 4 };
        let n = whole.len().min(ihl + 8 + extra);
        if matches!(inner.l4, L4Spec::Tcp { .. }) && n == ihl + 17 {
            // The quote ends between the two bytes of the TCP checksum: half a checksum cannot be updated.
            prop_assert_eq!(&quote[..n - 1], &whole[..n - 1]);
        } else {
            prop_assert_eq!(&quote[..], &whole[..n]);
        }
    }
}
