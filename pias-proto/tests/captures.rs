//! Golden input from real captures (see `fixtures/README.md`): every IP packet parses, verifies, agrees with
//! etherparse, survives a NAT rewrite with valid checksums, and a rewrite back restores its exact bytes.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pias_proto::IpProtocol;
use pias_proto::packet::{IpPacket, IpVersion};
use pias_proto::pcap::PcapReader;

/// The IP packets of a capture (pias_proto's pcap reader strips the link layer; non-IP frames are skipped).
fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    PcapReader::new(bytes)
        .expect("pcap global header")
        .map(|r| r.expect("pcap ends on a record boundary"))
        .inspect(|r| {
            assert_eq!(
                r.data.len(),
                r.orig_len as usize,
                "fixtures are captured with -s 0"
            )
        })
        .filter_map(|r| r.ip().map(<[u8]>::to_vec))
        .collect()
}

fn load(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/{name}.pcap", env!("CARGO_MANIFEST_DIR"));
    let pkts = read_pcap(&std::fs::read(&path).unwrap());
    assert!(!pkts.is_empty(), "{name}: no packets");
    pkts
}

const NAT4_SRC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const NAT4_DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
const NAT6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xaa, 0, 0, 0, 0, 0x107);
const NAT6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbb, 0, 0xffff, 0, 0, 0x2);

fn nat_addrs(v: IpVersion) -> (IpAddr, IpAddr) {
    match v {
        IpVersion::V4 => (NAT4_SRC.into(), NAT4_DST.into()),
        IpVersion::V6 => (NAT6_SRC.into(), NAT6_DST.into()),
    }
}

/// Parses, checks, NATs and un-NATs every packet of a capture; returns what it saw.
#[derive(Default, Debug)]
struct Seen {
    tcp: usize,
    udp: usize,
    echo: usize,
    icmp_errors: usize,
    other: usize,
    mss_syns: usize,
}

fn run(name: &str) -> Seen {
    let mut seen = Seen::default();
    for orig in load(name) {
        common::oracle(&orig);
        let mut buf = orig.clone();
        let p = IpPacket::new_checked(&mut buf[..]).unwrap();
        let v = p.version();
        let (nsrc, ndst) = nat_addrs(v);
        match (p.flow(), p.is_icmp_error()) {
            (Some(f), _) => {
                match f.proto {
                    IpProtocol::Tcp => seen.tcp += 1,
                    IpProtocol::Udp => seen.udp += 1,
                    _ => seen.echo += 1,
                }
                let mut p = p;
                p.set_src_dst(nsrc, 40000, ndst, 8443).unwrap();
                let g = p.flow().unwrap();
                assert_eq!((g.src, g.dst, g.dst_port), (nsrc, ndst, 8443));
                common::oracle(&buf);
                let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
                p.set_src(f.src, f.src_port).unwrap();
                p.set_dst(f.dst, f.dst_port).unwrap();
                assert_eq!(buf, orig, "{name}: NAT round trip");

                // MSS clamping on SYNs, and its reversal.
                let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
                if p.tcp_flags().is_some_and(|f| f.syn()) {
                    let t = &orig[p.ip_header_len()..];
                    let mss = pias_proto::tcp::TcpPacket::new_checked(t).unwrap().mss().unwrap();
                    assert_eq!(mss, if v == IpVersion::V4 { 1460 } else { 1440 });
                    assert!(p.clamp_mss(1200), "{name}: captured SYN carries MSS > 1200");
                    assert!(!p.clamp_mss(1300));
                    let t = &buf[p_quote_start(&buf) - 8..];
                    assert_eq!(
                        pias_proto::tcp::TcpPacket::new_checked(t).unwrap().mss(),
                        Some(1200)
                    );
                    common::oracle(&buf);
                    seen.mss_syns += 1;
                }
            }
            (None, true) => {
                seen.icmp_errors += 1;
                let inner = p.icmp_error_inner_flow().unwrap();
                // The quoted packet is what the client sent: NAT translates the error back to the client
                // as the JAP would for a target's error (outer dst + quoted src).
                let mut p = p;
                p.set_dst_addr(nsrc).unwrap();
                p.set_icmp_inner_src(nsrc, 40000).unwrap();
                p.set_icmp_inner_dst(ndst, 8443).unwrap();
                let g = p.icmp_error_inner_flow().unwrap();
                assert_eq!((g.src, g.src_port, g.dst, g.dst_port), (nsrc, 40000, ndst, 8443));
                common::oracle(&buf);
                // The quote here is whole, so the quoted packet itself must verify too.
                let q = &buf[p_quote_start(&buf)..];
                common::oracle(q);
                let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
                p.set_dst_addr(orig_dst(&orig)).unwrap();
                p.set_icmp_inner_src(inner.src, inner.src_port).unwrap();
                p.set_icmp_inner_dst(inner.dst, inner.dst_port).unwrap();
                assert_eq!(buf, orig, "{name}: ICMP error NAT round trip");
            }
            (None, false) => {
                seen.other += 1;
                let mut p = p;
                p.set_src_addr(nsrc).unwrap();
                if p.l4_protocol() == IpProtocol::Icmpv6 {
                    common::oracle(&buf);
                }
                let mut p = IpPacket::new_checked(&mut buf[..]).unwrap();
                p.set_src_addr(IpPacket::new_checked(&orig[..]).unwrap().src_addr())
                    .unwrap();
                assert_eq!(buf, orig, "{name}: address round trip");
            }
        }
    }
    seen
}

fn p_quote_start(b: &[u8]) -> usize {
    IpPacket::new_checked(b).unwrap().ip_header_len() + 8
}

fn orig_dst(b: &[u8]) -> IpAddr {
    IpPacket::new_checked(b).unwrap().dst_addr()
}

#[test]
fn dns_over_udp() {
    let s4 = run("dns4");
    let s6 = run("dns6");
    assert!(s4.udp >= 2 && s6.udp >= 2, "{s4:?} {s6:?}");
}

#[test]
fn http_over_tcp() {
    let s4 = run("http4");
    let s6 = run("http6");
    assert!(s4.tcp >= 6 && s6.tcp >= 6, "{s4:?} {s6:?}");
    assert_eq!(s4.mss_syns + s6.mss_syns, 4, "SYN and SYN-ACK in each");
}

#[test]
fn ping() {
    let s4 = run("ping4");
    let s6 = run("ping6");
    assert_eq!((s4.echo, s6.echo), (4, 4));
}

#[test]
fn icmp_port_unreachable() {
    for name in ["unreach4", "unreach6"] {
        let s = run(name);
        assert_eq!(s.icmp_errors, 1, "{name}: {s:?}");
        let pkts = load(name);
        let err = pkts
            .iter()
            .map(|b| IpPacket::new_checked(&b[..]).unwrap())
            .find(|p| p.is_icmp_error())
            .unwrap();
        let query = pkts
            .iter()
            .map(|b| IpPacket::new_checked(&b[..]).unwrap())
            .find(|p| p.flow().is_some())
            .unwrap();
        // The error quotes the query: its inner flow is the query's flow, to the closed port.
        assert_eq!(err.icmp_error_inner_flow().unwrap(), query.flow().unwrap());
        assert_eq!(query.flow().unwrap().dst_port, 5300);
        assert_eq!(
            err.icmp_type_code(),
            Some(if name == "unreach4" { (3, 3) } else { (1, 4) })
        );
    }
}

#[test]
fn extension_headers_are_reported_not_walked() {
    // The kernel's MLD reports carry a hop-by-hop header: next header 0, no flow.
    let all: Vec<_> = ["dns4", "ping4"].iter().flat_map(|n| load(n)).collect();
    let hbh = all
        .iter()
        .filter_map(|b| IpPacket::new_checked(&b[..]).ok())
        .filter(|p| p.l4_protocol() == IpProtocol::Other(0))
        .count();
    assert!(hbh >= 1);
}
