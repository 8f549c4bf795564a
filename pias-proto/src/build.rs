//! Builders for whole IP packets: what a proxy sends a target agent, and what tests and the simulator send.
//!
//! Each writes a complete IPv4 or IPv6 packet (header, transport header, payload, every checksum) into the
//! caller's buffer and returns its length; on error (`BufferTooSmall`, mixed families) the buffer holds no
//! packet the caller may send.

use core::net::{IpAddr, SocketAddr};

use crate::addr::IpProtocol;
use crate::error::{Result, WireError, room};
use crate::ipv4::{self, Ipv4Repr};
use crate::ipv6::{self, Ipv6Repr};
use crate::tcp::{TcpFlags, TcpOptionBytes, TcpRepr};
use crate::udp::UdpRepr;

/// Default TTL / hop limit of packets PIAS originates.
pub const DEFAULT_TTL: u8 = 64;

fn ip_header(
    src: IpAddr,
    dst: IpAddr,
    proto: IpProtocol,
    payload_len: usize,
    out: &mut [u8],
) -> Result<usize> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: proto,
                payload_len,
                ttl: DEFAULT_TTL,
                tos: 0,
                ident: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(out)?;
            Ok(ipv4::HEADER_LEN)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len,
                hop_limit: DEFAULT_TTL,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(out)?;
            Ok(ipv6::HEADER_LEN)
        }
        _ => Err(WireError::Malformed {
            what: "ip packet",
            reason: "source and destination families differ",
        }),
    }
}

fn ip_len(src: IpAddr) -> usize {
    if src.is_ipv4() {
        ipv4::HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    }
}

/// A UDP datagram from `src` to `dst` carrying `payload`.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8], out: &mut [u8]) -> Result<usize> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: payload.len(),
    };
    let total = ip_len(src.ip()) + udp.buffer_len();
    room(out, total)?;
    let h = ip_header(src.ip(), dst.ip(), IpProtocol::Udp, udp.buffer_len(), out)?;
    udp.emit(&mut out[h..total], &src.ip(), &dst.ip(), |p| {
        p.copy_from_slice(payload)
    })?;
    Ok(total)
}

/// The TCP fields of a segment to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    /// An MSS option, if set.
    pub mss: Option<u16>,
}

/// A TCP segment from `src` to `dst`.
pub fn tcp_segment(
    src: SocketAddr,
    dst: SocketAddr,
    seg: Segment,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize> {
    let options = match seg.mss {
        Some(m) => {
            let b = m.to_be_bytes();
            TcpOptionBytes::new(&[2, 4, b[0], b[1]])?
        }
        None => TcpOptionBytes::EMPTY,
    };
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq_number: seg.seq,
        ack_number: seg.ack,
        flags: seg.flags,
        window: 65_535,
        urgent: 0,
        options,
        payload_len: payload.len(),
    };
    let total = ip_len(src.ip()) + tcp.buffer_len();
    room(out, total)?;
    let h = ip_header(src.ip(), dst.ip(), IpProtocol::Tcp, tcp.buffer_len(), out)?;
    tcp.emit(&mut out[h..total], &src.ip(), &dst.ip(), |p| {
        p.copy_from_slice(payload)
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::IpPacket;

    #[test]
    fn built_packets_parse_and_verify() {
        let mut buf = [0u8; 256];
        for (s, d) in [
            ("10.0.0.1:1000", "10.0.0.2:53"),
            ("[fd00::1]:1000", "[fd00::2]:53"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let n = udp_packet(s, d, b"hello", &mut buf).unwrap();
            let p = IpPacket::new_checked(&buf[..n]).unwrap();
            p.verify_checksums().unwrap();
            let f = p.flow().unwrap();
            assert_eq!(
                (f.src, f.src_port, f.dst, f.dst_port),
                (s.ip(), s.port(), d.ip(), d.port())
            );
            let seg = Segment {
                flags: TcpFlags::SYN,
                seq: 1,
                ack: 0,
                mss: Some(1460),
            };
            let n = tcp_segment(s, d, seg, b"", &mut buf).unwrap();
            let p = IpPacket::new_checked(&buf[..n]).unwrap();
            p.verify_checksums().unwrap();
            assert!(p.tcp_flags().unwrap().syn());
        }
        let mixed = udp_packet(
            "10.0.0.1:1".parse().unwrap(),
            "[fd00::2]:2".parse().unwrap(),
            b"",
            &mut buf,
        );
        assert!(mixed.is_err());
        assert!(matches!(
            udp_packet(
                "10.0.0.1:1".parse().unwrap(),
                "10.0.0.2:2".parse().unwrap(),
                &[0; 100],
                &mut [0u8; 50]
            ),
            Err(WireError::BufferTooSmall { .. })
        ));
    }
}
