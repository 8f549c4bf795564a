//! A parsed IP packet that the NAT and the IAP read and rewrite in place, once per packet.
//!
//! [`IpPacket::new_checked`] checks the IPv4 or IPv6 header and locates the transport header once; every
//! accessor and rewrite after that is bounds-safe and reads fixed offsets. Rewrites never recompute a
//! checksum: each one builds an RFC 1624 [`Delta`] of the words it changed and applies it to the IPv4
//! header checksum and to the transport checksum, whose pseudo-header contains the addresses. That keeps a
//! full NAT rewrite at a few dozen instructions whatever the packet size.
//!
//! What is located:
//! - TCP, UDP, ICMP (v4) and ICMPv6 directly after the IP header;
//! - nothing for non-first IPv4 fragments (no transport header) and for IPv6 packets whose next header is
//!   anything else, extension headers included: the NAT does not walk extension headers, and
//!   [`IpPacket::l4_protocol`] reports the next header as `Other(n)` so the core can count the packet and
//!   send it to its slow path.
//!
//! ICMP echo has no ports; its identifier stands in for both (RFC 5508 §3.1), so [`IpPacket::flow`] reports
//! it as source and destination port and [`IpPacket::set_src`]/[`IpPacket::set_dst`] rewrite it. ICMP
//! errors carry the flow they are about inside the quoted packet: [`IpPacket::icmp_error_inner_flow`] reads
//! it and [`IpPacket::set_icmp_inner_src`]/[`IpPacket::set_icmp_inner_dst`] translate it (RFC 5508 §4).

use core::net::{IpAddr, Ipv4Addr};

use crate::addr::{FlowKey, IpProtocol};
use crate::checksum::{self, Delta};
use crate::error::{Result, WireError, need, room};
use crate::icmp::{self, Icmpv4Repr, Icmpv6Repr};
use crate::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::tcp::{TcpFlags, TcpPacket};
use crate::udp;

/// The IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

/// What sits after the IP header, as located by [`IpPacket::new_checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    /// No transport header located: non-first fragment, extension header, or another protocol.
    None,
    Tcp,
    Udp,
    IcmpEcho,
    IcmpError,
    IcmpOther,
}

/// Offsets of a packet quoted in an ICMP error, found by [`IpPacket::inner`].
#[derive(Debug, Clone, Copy)]
struct Inner {
    /// Start of the quoted IP header.
    ip: usize,
    /// Start of the quoted transport header.
    l4: usize,
    /// Bytes of the quoted transport header present (at least 8).
    l4_avail: usize,
    proto: u8,
    kind: InnerL4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InnerL4 {
    Tcp,
    Udp,
    Echo,
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Src,
    Dst,
}

// Offsets in the IP headers.
const V4_TTL: usize = 8;
const V4_CSUM: usize = 10;
const V4_SRC: usize = 12;
const V4_DST: usize = 16;
const V6_HOP: usize = 7;
const V6_SRC: usize = 8;
const V6_DST: usize = 24;

const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;
const ICMP_IDENT: usize = 4;

/// A parsed IPv4 or IPv6 packet, for reading its flow and rewriting it in place.
///
/// After [`IpPacket::new_checked`] succeeds: the IP header is valid and inside the buffer; the packet ends
/// at the IP total length (trailing bytes are ignored and never touched); and when a TCP, UDP or ICMP
/// header was located, its fixed part (TCP: with options) lies inside the packet. No method panics after
/// that, and every rewrite keeps every checksum that verified before verifying after.
#[derive(Debug, Clone)]
pub struct IpPacket<T> {
    buffer: T,
    v6: bool,
    /// Offset of the transport header (the IP header length).
    l4_off: usize,
    /// End of the packet (IP total length).
    end: usize,
    /// IPv4 protocol or IPv6 next header.
    proto: u8,
    l4: L4,
}

// The readers copy a sub-slice (one bounds check, one load) rather than index byte by byte (a check and a
// load per byte): they run several times on every forwarded packet.
#[inline]
fn rd16(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(w)
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn rd32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

#[inline]
fn rd_ip(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(ipv6::addr(&b[at..at + 16]))
    } else {
        IpAddr::V4(Ipv4Addr::from_bits(rd32(b, at)))
    }
}

/// Writes `ip` at `at` and returns the checksum delta; the family was checked by the caller.
#[inline]
fn wr_ip(b: &mut [u8], at: usize, ip: IpAddr) -> Delta {
    match ip {
        IpAddr::V4(a) => {
            let old = rd32(b, at);
            b[at..at + 4].copy_from_slice(&a.octets());
            Delta::ZERO.word32(old, a.to_bits())
        }
        IpAddr::V6(a) => {
            let new = a.octets();
            let d = Delta::ZERO.bytes(&b[at..at + 16], &new);
            b[at..at + 16].copy_from_slice(&new);
            d
        }
    }
}

/// Writes a 16-bit word at `at` and returns the checksum delta.
#[inline]
fn wr16_delta(b: &mut [u8], at: usize, new: u16) -> Delta {
    let old = rd16(b, at);
    wr16(b, at, new);
    Delta::ZERO.word(old, new)
}

/// How a checksum field treats zero.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Zero {
    /// TCP, ICMP, IPv4 header: zero is an ordinary value.
    Plain,
    /// UDP over IPv4: a stored zero means "no checksum" and stays zero; a computed zero is sent as 0xFFFF.
    Udp4,
    /// UDP over IPv6: the checksum is mandatory (RFC 8200 §8.1): a stored zero is just a (bad) value and
    /// is updated like any other; a computed zero is sent as 0xFFFF. Found by the `ip_packet` fuzz target.
    Udp6,
}

/// Applies `d` to the checksum stored at `at` and returns the delta of that change (for an enclosing sum).
#[inline]
fn apply_at(b: &mut [u8], at: usize, d: Delta, zero: Zero) -> Delta {
    let old = rd16(b, at);
    if zero == Zero::Udp4 && old == 0 {
        return Delta::ZERO;
    }
    let mut new = d.apply(old);
    if zero != Zero::Plain && new == 0 {
        new = 0xffff;
    }
    wr16(b, at, new);
    Delta::ZERO.word(old, new)
}

/// ICMPv4 has no pseudo-header, so its checksummed data can be all zero (an echo with identifier,
/// sequence and payload zero), and then the only valid checksum is 0xFFFF. RFC 1624's eqn. 3 can produce
/// 0x0000 there (the other representation of zero), which receivers reject. A result of 0x0000 is valid
/// only when the data is not all zero, so it is checked only then (1 in 65 536 packets). Found by the
/// `ip_packet` fuzz target.
fn fix_negative_zero(b: &mut [u8], from: usize, csum_at: usize) {
    if rd16(b, csum_at) != 0 {
        return;
    }
    let zero = b[from..]
        .iter()
        .enumerate()
        .all(|(i, x)| *x == 0 || from + i == csum_at || from + i == csum_at + 1);
    if zero {
        wr16(b, csum_at, 0xffff);
    }
}

fn family_error() -> WireError {
    WireError::Malformed {
        what: "ip packet rewrite",
        reason: "address family differs from the packet's",
    }
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// Checks the IP header and locates the transport header.
    ///
    /// Errors: `Truncated` for a buffer shorter than the headers or the IP total length; `BadVersion`;
    /// `BadLength` for an IHL, total length or TCP data offset below its minimum. A TCP/UDP/ICMP header
    /// that is cut short is `Truncated` (except in a non-first fragment, which has none). Checksums are not
    /// verified here (see [`IpPacket::verify_checksums`]): the forwarding path need not pay for it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need("ip packet", b, 1)?;
        let (v6, l4_off, end, proto, first) = match b[0] >> 4 {
            4 => {
                let p = Ipv4Packet::new_checked(b)?;
                (false, p.header_len(), p.total_len(), b[9], p.frag_offset() == 0)
            }
            6 => {
                let p = Ipv6Packet::new_checked(b)?;
                (true, ipv6::HEADER_LEN, p.total_len(), b[6], true)
            }
            version => {
                return Err(WireError::BadVersion {
                    what: "ip packet",
                    version,
                });
            }
        };
        let l4b = &b[l4_off..end];
        let l4 = match proto {
            _ if !first => L4::None,
            IpProtocol::TCP => {
                TcpPacket::new_checked(l4b)?;
                L4::Tcp
            }
            IpProtocol::UDP => {
                need("udp header", l4b, udp::HEADER_LEN)?;
                L4::Udp
            }
            IpProtocol::ICMP if !v6 => {
                need("icmpv4 header", l4b, icmp::HEADER_LEN)?;
                match l4b[0] {
                    icmp::V4_ECHO_REQUEST | icmp::V4_ECHO_REPLY => L4::IcmpEcho,
                    t if icmp::is_v4_error(t) => L4::IcmpError,
                    _ => L4::IcmpOther,
                }
            }
            IpProtocol::ICMPV6 if v6 => {
                need("icmpv6 header", l4b, icmp::HEADER_LEN)?;
                match l4b[0] {
                    icmp::V6_ECHO_REQUEST | icmp::V6_ECHO_REPLY => L4::IcmpEcho,
                    t if icmp::is_v6_error(t) => L4::IcmpError,
                    _ => L4::IcmpOther,
                }
            }
            _ => L4::None,
        };
        Ok(IpPacket {
            buffer,
            v6,
            l4_off,
            end,
            proto,
            l4,
        })
    }

    /// Consumes the packet, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The packet's bytes, up to the IP total length.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.end]
    }

    /// The IP version.
    #[inline]
    pub fn version(&self) -> IpVersion {
        if self.v6 { IpVersion::V6 } else { IpVersion::V4 }
    }

    /// The IP total length: header plus payload (the buffer may be longer).
    #[inline]
    pub fn total_len(&self) -> usize {
        self.end
    }

    /// The IP header length (IPv4 with options; the IPv6 fixed header).
    #[inline]
    pub fn ip_header_len(&self) -> usize {
        self.l4_off
    }

    /// The bytes after the IP header: the transport header and payload (or the extension headers).
    #[inline]
    pub fn l4_bytes(&self) -> &[u8] {
        &self.as_bytes()[self.l4_off..]
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> IpAddr {
        rd_ip(
            self.buffer.as_ref(),
            if self.v6 { V6_SRC } else { V4_SRC },
            self.v6,
        )
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> IpAddr {
        rd_ip(
            self.buffer.as_ref(),
            if self.v6 { V6_DST } else { V4_DST },
            self.v6,
        )
    }

    /// The IPv4 protocol or the IPv6 next header; for IPv6 an extension header shows as `Other(n)`.
    #[inline]
    pub fn l4_protocol(&self) -> IpProtocol {
        IpProtocol::from(self.proto)
    }

    /// Whether the packet is a fragment: IPv4 MF or non-zero offset; IPv6 next header = Fragment.
    ///
    /// The NAT cannot translate fragments statelessly (only the first carries ports); the core sends them
    /// to its slow path.
    pub fn is_fragment(&self) -> bool {
        if self.v6 {
            self.proto == ipv6::NEXT_HEADER_FRAGMENT
        } else {
            Ipv4Packet::new_unchecked(self.buffer.as_ref()).is_fragment()
        }
    }

    /// Whether the IPv4 header carries options (always false for IPv6, whose extension headers show in
    /// [`IpPacket::l4_protocol`] instead).
    pub fn has_ip_options(&self) -> bool {
        !self.v6 && self.l4_off > ipv4::HEADER_LEN
    }

    /// The IPv4 TTL or IPv6 hop limit.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[if self.v6 { V6_HOP } else { V4_TTL }]
    }

    /// The TCP flags, for a packet with a TCP header.
    #[inline]
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        (self.l4 == L4::Tcp)
            .then(|| TcpFlags::from_bits_truncate(rd16(self.buffer.as_ref(), self.l4_off + 12)))
    }

    /// The ICMP type and code, for an ICMP (v4 over IPv4, v6 over IPv6) packet.
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        matches!(self.l4, L4::IcmpEcho | L4::IcmpError | L4::IcmpOther).then(|| {
            let b = self.buffer.as_ref();
            (b[self.l4_off], b[self.l4_off + 1])
        })
    }

    /// Whether the packet is an ICMP error message (it quotes another packet).
    pub fn is_icmp_error(&self) -> bool {
        self.l4 == L4::IcmpError
    }

    /// The flow: addresses and TCP/UDP ports, or for ICMP echo the identifier as both ports.
    ///
    /// `None` when the packet has no ports: ICMP errors (see [`IpPacket::icmp_error_inner_flow`]) and other
    /// ICMP messages, non-first fragments, IPv6 extension headers, other protocols. A first fragment does
    /// report its flow; check [`IpPacket::is_fragment`] too.
    #[inline]
    pub fn flow(&self) -> Option<FlowKey> {
        let b = self.buffer.as_ref();
        let (sp, dp) = match self.l4 {
            L4::Tcp | L4::Udp => (rd16(b, self.l4_off), rd16(b, self.l4_off + 2)),
            L4::IcmpEcho => {
                let id = rd16(b, self.l4_off + ICMP_IDENT);
                (id, id)
            }
            _ => return None,
        };
        Some(FlowKey {
            proto: IpProtocol::from(self.proto),
            src: self.src_addr(),
            src_port: sp,
            dst: self.dst_addr(),
            dst_port: dp,
        })
    }

    /// Verifies the IPv4 header checksum and the transport checksum (with its pseudo-header).
    ///
    /// Fragments and packets without a located transport header are checked at the IP level only. A zero
    /// UDP checksum over IPv4 means "none" and passes. `BadChecksum` names the failing layer; `BadLength`
    /// if the UDP length field disagrees with the IP payload length.
    pub fn verify_checksums(&self) -> Result<()> {
        let b = self.as_bytes();
        if !self.v6 && !checksum::verifies(checksum::add(0, &b[..self.l4_off])) {
            return Err(WireError::BadChecksum { what: "ipv4 header" });
        }
        if self.is_fragment() {
            return Ok(());
        }
        let l4 = &b[self.l4_off..];
        let what = match self.l4 {
            L4::None => return Ok(()),
            L4::Tcp => "tcp",
            L4::Udp => {
                let len = usize::from(rd16(l4, 4));
                if len != l4.len() {
                    return Err(WireError::BadLength {
                        what: "udp length",
                        len,
                    });
                }
                if rd16(l4, UDP_CSUM) == 0 && !self.v6 {
                    return Ok(());
                }
                "udp"
            }
            _ if self.v6 => "icmpv6",
            _ => {
                return if checksum::verifies(checksum::add(0, l4)) {
                    Ok(())
                } else {
                    Err(WireError::BadChecksum { what: "icmpv4" })
                };
            }
        };
        if checksum::verifies(checksum::add(self.pseudo_header(), l4)) {
            Ok(())
        } else {
            Err(WireError::BadChecksum { what })
        }
    }

    /// The pseudo-header partial sum for the transport protocol and the IP payload length.
    fn pseudo_header(&self) -> u64 {
        let b = self.buffer.as_ref();
        let len = (self.end - self.l4_off) as u32;
        let addrs = if self.v6 {
            &b[V6_SRC..V6_DST + 16]
        } else {
            &b[V4_SRC..V4_DST + 4]
        };
        checksum::add(0, addrs) + u64::from(self.proto) + u64::from(len)
    }

    /// Locates the packet quoted by an ICMP error.
    fn inner(&self) -> Result<Inner> {
        if self.l4 != L4::IcmpError {
            return Err(WireError::Unsupported {
                what: "icmp error inner packet of a non-error",
                value: u32::from(self.proto),
            });
        }
        let b = self.as_bytes();
        let ip = self.l4_off + icmp::HEADER_LEN;
        let q = &b[ip..];
        let (hl, proto) = if self.v6 {
            need("icmp quoted ipv6 header", q, ipv6::HEADER_LEN)?;
            if q[0] >> 4 != 6 {
                return Err(WireError::BadVersion {
                    what: "icmp quoted ipv6 header",
                    version: q[0] >> 4,
                });
            }
            (ipv6::HEADER_LEN, q[6])
        } else {
            need("icmp quoted ipv4 header", q, ipv4::HEADER_LEN)?;
            if q[0] >> 4 != 4 {
                return Err(WireError::BadVersion {
                    what: "icmp quoted ipv4 header",
                    version: q[0] >> 4,
                });
            }
            let hl = usize::from(q[0] & 0x0f) * 4;
            if hl < ipv4::HEADER_LEN {
                return Err(WireError::BadLength {
                    what: "icmp quoted ipv4 ihl",
                    len: hl,
                });
            }
            if rd16(q, 6) & 0x1fff != 0 {
                return Err(WireError::Unsupported {
                    what: "icmp quoted non-first fragment",
                    value: u32::from(rd16(q, 6) & 0x1fff),
                });
            }
            (hl, q[9])
        };
        need("icmp quoted transport header", q, hl + 8)?;
        let l4q = &q[hl..];
        let kind = match proto {
            IpProtocol::TCP => InnerL4::Tcp,
            IpProtocol::UDP => InnerL4::Udp,
            IpProtocol::ICMP if !self.v6 && matches!(l4q[0], icmp::V4_ECHO_REQUEST | icmp::V4_ECHO_REPLY) => {
                InnerL4::Echo
            }
            IpProtocol::ICMPV6
                if self.v6 && matches!(l4q[0], icmp::V6_ECHO_REQUEST | icmp::V6_ECHO_REPLY) =>
            {
                InnerL4::Echo
            }
            p => {
                return Err(WireError::Unsupported {
                    what: "icmp quoted protocol",
                    value: p.into(),
                });
            }
        };
        Ok(Inner {
            ip,
            l4: ip + hl,
            l4_avail: l4q.len(),
            proto,
            kind,
        })
    }

    /// The flow of the packet quoted in an ICMP error (as that packet travelled).
    ///
    /// The quote may be truncated; the IP header and the first 8 transport bytes suffice. Errors:
    /// `Unsupported` if this is not an ICMP error or the quoted packet is not TCP, UDP or ICMP echo (or is a
    /// non-first fragment); `Truncated`, `BadVersion`, `BadLength` for a malformed quote.
    pub fn icmp_error_inner_flow(&self) -> Result<FlowKey> {
        let i = self.inner()?;
        let b = self.as_bytes();
        let (so, d_o) = if self.v6 {
            (V6_SRC, V6_DST)
        } else {
            (V4_SRC, V4_DST)
        };
        let (sp, dp) = match i.kind {
            InnerL4::Tcp | InnerL4::Udp => (rd16(b, i.l4), rd16(b, i.l4 + 2)),
            InnerL4::Echo => {
                let id = rd16(b, i.l4 + ICMP_IDENT);
                (id, id)
            }
        };
        Ok(FlowKey {
            proto: IpProtocol::from(i.proto),
            src: rd_ip(b, i.ip + so, self.v6),
            src_port: sp,
            dst: rd_ip(b, i.ip + d_o, self.v6),
            dst_port: dp,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IpPacket<T> {
    /// Rewrites the source address and port (the echo identifier for ICMP echo).
    ///
    /// Errors, with the packet untouched: `Malformed` if `ip` is of the other family; `Unsupported` if the
    /// packet has no ports ([`IpPacket::flow`] is `None`; use [`IpPacket::set_src_addr`]).
    #[inline]
    pub fn set_src(&mut self, ip: IpAddr, port: u16) -> Result<()> {
        self.rewrite(Some(ip), Some(port), None, None)
    }

    /// Rewrites the destination address and port (the echo identifier for ICMP echo).
    ///
    /// Errors as for [`IpPacket::set_src`].
    #[inline]
    pub fn set_dst(&mut self, ip: IpAddr, port: u16) -> Result<()> {
        self.rewrite(None, None, Some(ip), Some(port))
    }

    /// Rewrites source and destination in one pass (one checksum fold per checksum): the NAT's usual case.
    ///
    /// For ICMP echo both ports name the identifier; the destination's is written last and wins.
    /// Errors as for [`IpPacket::set_src`].
    #[inline]
    pub fn set_src_dst(&mut self, src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Result<()> {
        self.rewrite(Some(src), Some(src_port), Some(dst), Some(dst_port))
    }

    /// Rewrites the source address only, with the checksums that cover it.
    ///
    /// For packets without a located transport header (non-first fragments, IPv6 extension headers) only the
    /// IP header changes. `Malformed` if `ip` is of the other family.
    #[inline]
    pub fn set_src_addr(&mut self, ip: IpAddr) -> Result<()> {
        self.rewrite(Some(ip), None, None, None)
    }

    /// Rewrites the destination address only; see [`IpPacket::set_src_addr`].
    #[inline]
    pub fn set_dst_addr(&mut self, ip: IpAddr) -> Result<()> {
        self.rewrite(None, None, Some(ip), None)
    }

    fn rewrite(
        &mut self,
        src: Option<IpAddr>,
        src_port: Option<u16>,
        dst: Option<IpAddr>,
        dst_port: Option<u16>,
    ) -> Result<()> {
        let v6 = self.v6;
        if src.is_some_and(|a| a.is_ipv6() != v6) || dst.is_some_and(|a| a.is_ipv6() != v6) {
            return Err(family_error());
        }
        let ported = matches!(self.l4, L4::Tcp | L4::Udp | L4::IcmpEcho);
        if (src_port.is_some() || dst_port.is_some()) && !ported {
            return Err(WireError::Unsupported {
                what: "port rewrite on a packet without ports",
                value: u32::from(self.proto),
            });
        }
        let (l4, kind) = (self.l4_off, self.l4);
        let b = &mut self.buffer.as_mut()[..self.end];
        let (so, d_o) = if v6 { (V6_SRC, V6_DST) } else { (V4_SRC, V4_DST) };
        let mut addr = Delta::ZERO;
        if let Some(ip) = src {
            addr = addr.plus(wr_ip(b, so, ip));
        }
        if let Some(ip) = dst {
            addr = addr.plus(wr_ip(b, d_o, ip));
        }
        let mut port = Delta::ZERO;
        let (sp_at, dp_at) = if kind == L4::IcmpEcho {
            (l4 + ICMP_IDENT, l4 + ICMP_IDENT)
        } else {
            (l4, l4 + 2)
        };
        if let Some(p) = src_port {
            port = port.plus(wr16_delta(b, sp_at, p));
        }
        if let Some(p) = dst_port {
            port = port.plus(wr16_delta(b, dp_at, p));
        }
        if !v6 {
            apply_at(b, V4_CSUM, addr, Zero::Plain);
        }
        match kind {
            L4::Tcp => {
                apply_at(b, l4 + TCP_CSUM, addr.plus(port), Zero::Plain);
            }
            L4::Udp => {
                apply_at(
                    b,
                    l4 + UDP_CSUM,
                    addr.plus(port),
                    if v6 { Zero::Udp6 } else { Zero::Udp4 },
                );
            }
            L4::IcmpEcho if v6 => {
                apply_at(b, l4 + ICMP_CSUM, addr.plus(port), Zero::Plain);
            }
            L4::IcmpEcho => {
                apply_at(b, l4 + ICMP_CSUM, port, Zero::Plain);
                fix_negative_zero(b, l4, l4 + ICMP_CSUM);
            }
            L4::IcmpError | L4::IcmpOther if v6 => {
                apply_at(b, l4 + ICMP_CSUM, addr, Zero::Plain);
            }
            L4::IcmpError | L4::IcmpOther | L4::None => {}
        }
        Ok(())
    }

    /// Decrements the IPv4 TTL (updating the header checksum incrementally) or the IPv6 hop limit.
    ///
    /// Returns the new value, or `None` (packet untouched) if it was already zero.
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        if self.v6 {
            let b = self.buffer.as_mut();
            b[V6_HOP] = b[V6_HOP].checked_sub(1)?;
            Some(b[V6_HOP])
        } else {
            Ipv4Packet::new_unchecked(self.buffer.as_mut()).decrement_ttl()
        }
    }

    /// Lowers a TCP SYN's MSS option to `max` if larger (incremental checksum update); whether it changed.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        if self.l4 != L4::Tcp {
            return false;
        }
        let (l4, end) = (self.l4_off, self.end);
        TcpPacket::new_unchecked(&mut self.buffer.as_mut()[l4..end]).clamp_mss(max)
    }

    /// Rewrites the source of the packet quoted in an ICMP error: address and port (echo identifier).
    ///
    /// The NAT calls this (with [`IpPacket::set_dst_addr`] for the outer header) to translate an error about
    /// a translated packet back (RFC 5508 §4.2). Updated incrementally: the quoted IPv4 header checksum, the
    /// quoted transport checksum when the quote contains it (it may not verify, the quote being truncated;
    /// it is updated anyway so that it stays right for whoever has the whole packet), and the outer ICMP
    /// checksum. A zero quoted UDP checksum over IPv4 stays zero; a quote that ends between the two bytes
    /// of the TCP checksum keeps its half (it cannot be updated without the other). Errors as for
    /// [`IpPacket::icmp_error_inner_flow`], and `Malformed` for an address of the other family; the packet
    /// is untouched on error.
    pub fn set_icmp_inner_src(&mut self, ip: IpAddr, port: u16) -> Result<()> {
        self.rewrite_inner(Side::Src, ip, port)
    }

    /// Rewrites the destination of the packet quoted in an ICMP error; see
    /// [`IpPacket::set_icmp_inner_src`].
    pub fn set_icmp_inner_dst(&mut self, ip: IpAddr, port: u16) -> Result<()> {
        self.rewrite_inner(Side::Dst, ip, port)
    }

    fn rewrite_inner(&mut self, side: Side, ip: IpAddr, port: u16) -> Result<()> {
        let v6 = self.v6;
        if ip.is_ipv6() != v6 {
            return Err(family_error());
        }
        let i = self.inner()?;
        let l4 = self.l4_off;
        let b = &mut self.buffer.as_mut()[..self.end];
        let addr_at = i.ip
            + match (side, v6) {
                (Side::Src, false) => V4_SRC,
                (Side::Dst, false) => V4_DST,
                (Side::Src, true) => V6_SRC,
                (Side::Dst, true) => V6_DST,
            };
        let addr = wr_ip(b, addr_at, ip);
        let port_at = match (i.kind, side) {
            (InnerL4::Echo, _) => i.l4 + ICMP_IDENT,
            (_, Side::Src) => i.l4,
            (_, Side::Dst) => i.l4 + 2,
        };
        let port = wr16_delta(b, port_at, port);
        // Every byte changed inside the quote changes the outer ICMP sum; all sit at even offsets from
        // the ICMP header (8 + a multiple of 4).
        let mut outer = addr.plus(port);
        if !v6 {
            outer = outer.plus(apply_at(b, i.ip + V4_CSUM, addr, Zero::Plain));
        }
        let inner_l4 = match i.kind {
            InnerL4::Tcp if i.l4_avail >= TCP_CSUM + 2 => Some((TCP_CSUM, addr.plus(port), Zero::Plain)),
            InnerL4::Tcp => None,
            InnerL4::Udp => Some((
                UDP_CSUM,
                addr.plus(port),
                if v6 { Zero::Udp6 } else { Zero::Udp4 },
            )),
            InnerL4::Echo if v6 => Some((ICMP_CSUM, addr.plus(port), Zero::Plain)),
            InnerL4::Echo => Some((ICMP_CSUM, port, Zero::Plain)),
        };
        if let Some((at, d, udp)) = inner_l4 {
            outer = outer.plus(apply_at(b, i.l4 + at, d, udp));
        }
        apply_at(b, l4 + ICMP_CSUM, outer, Zero::Plain);
        Ok(())
    }

    /// Recomputes every checksum from scratch: the IPv4 header's and the transport's (not for fragments or
    /// packets without a located transport header; a zero UDP checksum over IPv4 stays zero).
    ///
    /// For packets the caller built or edited field by field; rewrites through this type never need it.
    pub fn recompute_checksums(&mut self) {
        let (l4, end, v6, kind) = (self.l4_off, self.end, self.v6, self.l4);
        let frag = self.is_fragment();
        let b = &mut self.buffer.as_mut()[..end];
        if !v6 {
            wr16(b, V4_CSUM, 0);
            let c = checksum::checksum(&b[..l4]);
            wr16(b, V4_CSUM, c);
        }
        if frag {
            return;
        }
        let (at, pseudo, udp) = match kind {
            L4::None => return,
            L4::Tcp => (TCP_CSUM, true, false),
            L4::Udp => {
                if !v6 && rd16(b, l4 + UDP_CSUM) == 0 {
                    return;
                }
                (UDP_CSUM, true, true)
            }
            _ => (ICMP_CSUM, v6, false),
        };
        wr16(b, l4 + at, 0);
        let acc = if pseudo { self.pseudo_header() } else { 0 };
        let b = &mut self.buffer.as_mut()[..end];
        let mut c = checksum::finish(checksum::add(acc, &b[l4..]));
        if udp && c == 0 {
            c = 0xffff;
        }
        wr16(b, l4 + at, c);
    }
}

/// Builds the ICMP error that tells `offending`'s sender its packet was too big for the path: ICMPv4
/// "fragmentation needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too big" (RFC 4443 §3.2).
///
/// The error comes from `src` (the IAP answers from the anycast address the client used) and goes to the
/// offending packet's source. It quotes as much of the offending packet as fits in 576 bytes (IPv4) or
/// 1280 bytes (IPv6). `mtu` is the MTU to report (clamped to 65535 for IPv4). Returns the length written
/// to the start of `out`.
///
/// Errors, with `out` untouched: `BufferTooSmall` if the error does not fit in `out`; `Malformed` if `src`
/// is of the other family; `Unsupported` if the offending packet is itself an ICMP error or a non-first
/// fragment (RFC 1812 §4.3.2.7: never answer those).
pub fn emit_packet_too_big<T: AsRef<[u8]>>(
    offending: &IpPacket<T>,
    src: IpAddr,
    mtu: u32,
    out: &mut [u8],
) -> Result<usize> {
    if src.is_ipv6() != offending.v6 {
        return Err(family_error());
    }
    if offending.is_icmp_error() {
        return Err(WireError::Unsupported {
            what: "icmp error about an icmp error",
            value: u32::from(offending.proto),
        });
    }
    if !offending.v6 {
        let off = Ipv4Packet::new_unchecked(offending.buffer.as_ref()).frag_offset();
        if off != 0 {
            return Err(WireError::Unsupported {
                what: "icmp error about a non-first fragment",
                value: u32::from(off),
            });
        }
    }
    let pkt = offending.as_bytes();
    match (src, offending.src_addr()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let hdr = ipv4::HEADER_LEN + icmp::HEADER_LEN;
            let quote = &pkt[..pkt.len().min(ipv4::MIN_MTU - hdr)];
            let n = hdr + quote.len();
            room(out, n)?;
            let icmp = Icmpv4Repr::DstUnreachable {
                code: icmp::V4_CODE_FRAG_NEEDED,
                next_hop_mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
                quote,
            };
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: IpProtocol::Icmp,
                payload_len: icmp.buffer_len(),
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            };
            ip.emit(&mut out[..ipv4::HEADER_LEN])?;
            icmp.emit(&mut out[ipv4::HEADER_LEN..n])?;
            Ok(n)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let hdr = ipv6::HEADER_LEN + icmp::HEADER_LEN;
            let quote = &pkt[..pkt.len().min(ipv6::MIN_MTU - hdr)];
            let n = hdr + quote.len();
            room(out, n)?;
            let icmp = Icmpv6Repr::PacketTooBig { mtu, quote };
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            };
            ip.emit(&mut out[..ipv6::HEADER_LEN])?;
            icmp.emit(&mut out[ipv6::HEADER_LEN..n], &s, &d)?;
            Ok(n)
        }
        _ => Err(family_error()),
    }
}

#[cfg(test)]
mod negative_zero_tests {
    use super::*;

    /// An all-zero ICMPv4 echo reply (identifier, sequence and payload zero) has checksum 0xFFFF; an
    /// identifier rewrite and its inverse must give it back, not 0x0000 (found by the `ip_packet` fuzzer).
    #[test]
    fn all_zero_icmp_echo_keeps_a_valid_checksum_through_nat_and_back() {
        let mut pkt = [0u8; 28];
        pkt[..20].copy_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        pkt[22..24].copy_from_slice(&[0xff, 0xff]);
        let orig = {
            let mut p = IpPacket::new_checked(&mut pkt[..]).unwrap();
            p.recompute_checksums();
            p.verify_checksums().unwrap();
            pkt
        };
        assert_eq!(&orig[22..24], &[0xff, 0xff]);
        let mut p = IpPacket::new_checked(&mut pkt[..]).unwrap();
        let src = p.src_addr();
        p.set_src(src, 777).unwrap();
        p.verify_checksums().unwrap();
        p.set_src(src, 0).unwrap();
        p.verify_checksums().unwrap();
        assert_eq!(pkt, orig);
    }
}
