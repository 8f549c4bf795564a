//! Software segmentation of what a TUN with offloads hands over (`IFF_VNET_HDR` + `TUNSETOFFLOAD`, see
//! [`crate::tun::open_offload`]).
//!
//! With offloads on, the kernel stops cutting large TCP (and, where it has USO, UDP) packets to the TUN's
//! MTU before handing them over: one `read` returns a `virtio_net_hdr` and up to 64 kB — a whole train of
//! segments — with the transport checksum left partial. Reading 45 segments with one system call instead
//! of 45 is the point; the core, though, must keep seeing ordinary packets (its NAT and encapsulation work
//! per packet, and what leaves on the overlay must fit the overlay MTU). So the driver cuts the train
//! right after the read, as the kernel would have: [`Segments`] writes segment `i` with its own IP total
//! length (or payload length), IPv4 identification (`id + i`), TCP sequence number (`seq + i·mss`), flags
//! (FIN and PSH only on the last segment, CWR only on the first), UDP length, and full IP and transport
//! checksums. A packet without segmentation but with a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) is
//! completed in place ([`complete_checksum`]). Everything is bounds-checked: a header that does not
//! describe the packet is an error, never a panic.

use pias_proto::checksum;

/// Bytes of the `virtio_net_hdr` in front of every packet on a TUN opened with `IFF_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is partial (the pseudo-header's sum only).
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the sender set CWR (only the first segment keeps it).
const GSO_ECN: u8 = 0x80;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// A `virtio_net_hdr` (little-endian fields, as the kernel writes them on every little-endian host and
/// with `TUNSETVNETLE` semantics elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from its 10 bytes.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let w = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: w(2),
            gso_size: w(4),
            csum_start: w(6),
            csum_offset: w(8),
        }
    }

    /// Writes the header into its 10 bytes.
    pub fn write(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// Whether the packet is a train to cut ([`Segments`]) rather than one packet.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Completes a partial transport checksum in place (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the field at
/// `csum_start + csum_offset` holds the pseudo-header's sum; the checksum over `csum_start..` including it,
/// complemented, replaces it (`0xFFFF` for zero, as the kernel does). Nothing to do without the flag.
pub fn complete_checksum(h: &VnetHdr, pkt: &mut [u8]) -> Result<(), &'static str> {
    if h.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(h.csum_start);
    let field = start + usize::from(h.csum_offset);
    if field + 2 > pkt.len() {
        return Err("virtio_net_hdr checksum offsets beyond the packet");
    }
    let c = checksum::finish(checksum::add(0, &pkt[start..]));
    let c = if c == 0 { 0xffff } else { c };
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// A train of segments in one packet, and how to write each ordinary packet of it.
#[derive(Debug, Clone, Copy)]
pub struct Segments<'a> {
    pkt: &'a [u8],
    v6: bool,
    tcp: bool,
    /// IP header length (with IPv6 extension headers).
    l3: usize,
    /// IP + transport header length.
    hdr: usize,
    mss: usize,
    count: usize,
}

impl<'a> Segments<'a> {
    /// The train `pkt` (an IP packet, after its `virtio_net_hdr` `h`) as segments of `h.gso_size`.
    pub fn new(h: &VnetHdr, pkt: &'a [u8]) -> Result<Segments<'a>, &'static str> {
        let version = pkt.first().ok_or("empty packet")? >> 4;
        let (v6, l3, proto) = match version {
            4 => {
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                if ihl < 20 || pkt.len() < ihl {
                    return Err("IPv4 header truncated");
                }
                if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                    return Err("IPv4 fragment in a segmentation train");
                }
                (false, ihl, pkt[9])
            }
            6 => {
                if pkt.len() < 40 {
                    return Err("IPv6 header truncated");
                }
                let (mut nh, mut off) = (pkt[6], 40);
                // Hop-by-hop, routing and destination options headers may precede the transport header.
                while matches!(nh, 0 | 43 | 60) {
                    if off + 2 > pkt.len() {
                        return Err("IPv6 extension header truncated");
                    }
                    nh = pkt[off];
                    off += (usize::from(pkt[off + 1]) + 1) * 8;
                }
                (true, off, nh)
            }
            _ => return Err("not an IP packet"),
        };
        let tcp = match (h.gso_type & !GSO_ECN, proto) {
            (GSO_TCPV4, PROTO_TCP) if !v6 => true,
            (GSO_TCPV6, PROTO_TCP) if v6 => true,
            (GSO_UDP_L4, PROTO_UDP) => false,
            _ => return Err("segmentation type does not match the packet"),
        };
        let l4 = if tcp {
            let o = pkt.get(l3 + 12).ok_or("TCP header truncated")?;
            usize::from(o >> 4) * 4
        } else {
            8
        };
        let hdr = l3 + l4;
        if (tcp && l4 < 20) || pkt.len() < hdr {
            return Err("transport header truncated");
        }
        let payload = pkt.len() - hdr;
        let mss = match usize::from(h.gso_size) {
            0 => payload.max(1),
            m => m,
        };
        if hdr + mss > 65_535 {
            return Err("segment size beyond an IP packet");
        }
        let count = payload.div_ceil(mss).max(1);
        Ok(Segments {
            pkt,
            v6,
            tcp,
            l3,
            hdr,
            mss,
            count,
        })
    }

    /// How many packets the train holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Writes packet `i` (`< count`) at the start of `out` (at least headers + `gso_size` long); returns
    /// its length.
    pub fn write(&self, i: usize, out: &mut [u8]) -> usize {
        let (h, p) = (self.hdr, self.pkt);
        let start = (i * self.mss).min(p.len() - h);
        let end = (start + self.mss).min(p.len() - h);
        let len = h + end - start;
        out[..h].copy_from_slice(&p[..h]);
        out[h..len].copy_from_slice(&p[h + start..h + end]);
        let l3 = self.l3;
        if self.v6 {
            out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let id = u16::from_be_bytes([p[4], p[5]]).wrapping_add(i as u16);
            out[4..6].copy_from_slice(&id.to_be_bytes());
            out[10..12].fill(0);
            let c = checksum::checksum(&out[..l3]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4_len = len - l3;
        let field = if self.tcp {
            let seq = u32::from_be_bytes([p[l3 + 4], p[l3 + 5], p[l3 + 6], p[l3 + 7]]);
            out[l3 + 4..l3 + 8].copy_from_slice(&seq.wrapping_add(start as u32).to_be_bytes());
            if i + 1 < self.count {
                out[l3 + 13] &= !(0x01 | 0x08); // FIN, PSH: the last segment's
            }
            if i > 0 {
                out[l3 + 13] &= !0x80; // CWR: the first segment's
            }
            l3 + 16
        } else {
            out[l3 + 4..l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l3 + 6
        };
        out[field..field + 2].fill(0);
        let proto = if self.tcp { PROTO_TCP } else { PROTO_UDP };
        let addrs = if self.v6 { &out[8..40] } else { &out[12..20] };
        let pseudo = checksum::add(0, addrs) + u64::from(proto) + l4_len as u64;
        let c = checksum::finish(checksum::add(pseudo, &out[l3..len]));
        let c = if c == 0 && !self.tcp { 0xffff } else { c };
        out[field..field + 2].copy_from_slice(&c.to_be_bytes());
        len
    }
}

#[cfg(test)]
mod tests {
    use core::net::IpAddr;

    use pias_proto::ipv4::Ipv4Packet;
    use pias_proto::ipv6::Ipv6Packet;
    use pias_proto::tcp::{TcpFlags, TcpPacket};
    use pias_proto::udp::UdpPacket;

    use super::*;

    /// RFC 1071 the slow way, 16 bits at a time: independent of `pias_proto::checksum`.
    fn naive_sum(words: &[u8]) -> u32 {
        let mut s: u32 = 0;
        for c in words.chunks(2) {
            let w = (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0));
            s += w;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s
    }

    /// Whether the packet's IP (v4) and transport checksums verify, computed naively.
    fn naive_ok(p: &[u8]) -> bool {
        let (l3, proto, pseudo_addrs) = if p[0] >> 4 == 4 {
            let ihl = usize::from(p[0] & 15) * 4;
            if naive_sum(&p[..ihl]) != 0xffff {
                return false;
            }
            (ihl, p[9], &p[12..20])
        } else {
            (40, p[6], &p[8..40])
        };
        let l4 = &p[l3..];
        let mut pseudo = pseudo_addrs.to_vec();
        pseudo.extend([0, proto]);
        pseudo.extend((l4.len() as u16).to_be_bytes());
        let mut all = pseudo;
        all.extend(l4);
        naive_sum(&all) == 0xffff
    }

    fn v4_tcp(payload: usize, flags: u8, opts: &[u8]) -> Vec<u8> {
        let thl = 20 + opts.len();
        let mut p = vec![0u8; 20 + thl + payload];
        p[0] = 0x45;
        let tl = p.len() as u16;
        p[2..4].copy_from_slice(&tl.to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 99, 0, 7]);
        let t = 20;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&0xffff_f000u32.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = ((thl / 4) as u8) << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        p[t + 20..t + thl].copy_from_slice(opts);
        for (i, b) in p[t + thl..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        p
    }

    fn v6(next: u8, l4: &[u8], ext: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        p[6] = if ext.is_empty() { next } else { 0 };
        p[7] = 64;
        p[8..24].copy_from_slice(&"fd00::1".parse::<core::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd99::7".parse::<core::net::Ipv6Addr>().unwrap().octets());
        p.extend(ext);
        p.extend(l4);
        p
    }

    fn hdr(gso_type: u8, gso_size: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            gso_size,
            ..VnetHdr::default()
        }
    }

    fn cut(h: &VnetHdr, p: &[u8]) -> Vec<Vec<u8>> {
        let s = Segments::new(h, p).unwrap();
        (0..s.count())
            .map(|i| {
                let mut out = vec![0u8; 70_000];
                let n = s.write(i, &mut out);
                out.truncate(n);
                out
            })
            .collect()
    }

    #[test]
    fn a_tcp_v4_train_becomes_mss_segments_with_their_own_headers() {
        // SYN-less data with PSH|FIN|CWR|ACK, timestamps option, 5000 bytes at MSS 1448: 4 segments.
        let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let p = v4_tcp(5000, 0x01 | 0x08 | 0x10 | 0x80, &opts);
        let segs = cut(&hdr(GSO_TCPV4 | GSO_ECN, 1448), &p);
        assert_eq!(segs.len(), 4);
        let mut payload: Vec<u8> = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(naive_ok(s), "segment {i}");
            let ip = Ipv4Packet::new_checked(&s[..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.total_len(), s.len());
            assert_eq!(ip.ident(), 0xfffeu16.wrapping_add(i as u16));
            assert!(ip.dont_frag());
            let (src, dst) = (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()));
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(&src, &dst), "segment {i}");
            assert_eq!(tcp.options_bytes(), &opts);
            assert_eq!(tcp.seq_number(), 0xffff_f000u32.wrapping_add(1448 * i as u32));
            assert_eq!(tcp.ack_number(), 77);
            let f = tcp.flags();
            let last = i == 3;
            assert_eq!(f.contains(TcpFlags::FIN), last, "FIN on {i}");
            assert_eq!(f.contains(TcpFlags::PSH), last, "PSH on {i}");
            assert_eq!(f.contains(TcpFlags::CWR), i == 0, "CWR on {i}");
            assert!(f.contains(TcpFlags::ACK));
            assert_eq!(tcp.payload().len(), if last { 5000 - 3 * 1448 } else { 1448 });
            payload.extend(tcp.payload());
        }
        assert_eq!(payload, p[20 + 32..]);
    }

    #[test]
    fn a_tcp_v6_train_with_an_extension_header() {
        let mut l4 = v4_tcp(3000, 0x10 | 0x08, &[])[20..].to_vec();
        l4[16..18].fill(0);
        // A destination-options header (8 bytes: next header TCP, length 0, PadN).
        let ext = [PROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        let p = v6(PROTO_TCP, &l4, &ext);
        let segs = cut(&hdr(GSO_TCPV6, 1000), &p);
        assert_eq!(segs.len(), 3);
        for (i, s) in segs.iter().enumerate() {
            let ip = Ipv6Packet::new_checked(&s[..]).unwrap();
            assert_eq!(ip.payload_len(), s.len() - 40);
            assert_eq!(&s[40..48], &ext);
            let t = &s[48..];
            let tcp = TcpPacket::new_checked(t).unwrap();
            let (src, dst) = (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()));
            assert!(tcp.verify_checksum(&src, &dst), "segment {i}");
            assert_eq!(tcp.seq_number(), 0xffff_f000u32.wrapping_add(1000 * i as u32));
            assert_eq!(tcp.flags().contains(TcpFlags::PSH), i == 2);
            assert_eq!(tcp.payload().len(), 1000);
        }
    }

    #[test]
    fn a_udp_train_becomes_datagrams() {
        let mut l4 = vec![0u8; 8 + 2500];
        l4[0..2].copy_from_slice(&5353u16.to_be_bytes());
        l4[2..4].copy_from_slice(&53u16.to_be_bytes());
        for (i, b) in l4[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let p = v6(PROTO_UDP, &l4, &[]);
        let segs = cut(&hdr(GSO_UDP_L4, 1200), &p);
        assert_eq!(segs.len(), 3);
        for (i, s) in segs.iter().enumerate() {
            assert!(naive_ok(s), "datagram {i}");
            let ip = Ipv6Packet::new_checked(&s[..]).unwrap();
            let (src, dst) = (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()));
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum(&src, &dst));
            assert_eq!(u.len(), 8 + if i == 2 { 100 } else { 1200 });
            assert_eq!(u.payload()[0], (i * 1200) as u8);
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut p = v4_tcp(333, 0x18, &[]);
        // What the kernel leaves: the pseudo-header's folded sum in the field.
        let pseudo = checksum::add(0, &p[12..20]) + u64::from(PROTO_TCP) + (p.len() - 20) as u64;
        p[36..38].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut ipc = p.clone();
        ipc[10..12].copy_from_slice(&checksum::checksum(&p[..20]).to_be_bytes());
        complete_checksum(&h, &mut ipc).unwrap();
        assert!(naive_ok(&ipc));
        let bad = VnetHdr {
            csum_offset: 400,
            ..h
        };
        assert!(complete_checksum(&bad, &mut ipc).is_err());
        // Without the flag nothing changes.
        let before = ipc.clone();
        complete_checksum(&VnetHdr::default(), &mut ipc).unwrap();
        assert_eq!(before, ipc);
    }

    #[test]
    fn headers_that_do_not_describe_the_packet_are_errors() {
        let p = v4_tcp(100, 0x10, &[]);
        assert!(Segments::new(&hdr(GSO_TCPV6, 50), &p).is_err());
        assert!(Segments::new(&hdr(GSO_UDP_L4, 50), &p).is_err());
        assert!(Segments::new(&hdr(GSO_TCPV4, 50), &p[..30]).is_err());
        assert!(Segments::new(&hdr(GSO_TCPV4, 50), &[]).is_err());
        assert!(Segments::new(&hdr(GSO_TCPV4, 50), &[0x70; 60]).is_err());
        let mut frag = p.clone();
        frag[7] = 1;
        assert!(Segments::new(&hdr(GSO_TCPV4, 50), &frag).is_err());
        // A train shorter than one segment is one packet, checksums made whole.
        let segs = cut(&hdr(GSO_TCPV4, 1448), &p);
        assert_eq!(segs.len(), 1);
        assert!(naive_ok(&segs[0]));
        let mut b = [0u8; VNET_HDR_LEN];
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        h.write(&mut b);
        assert_eq!(VnetHdr::parse(&b), h);
        assert!(h.is_gso() && !VnetHdr::default().is_gso());
    }
}
