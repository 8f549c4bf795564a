//! IPv6 fixed header (RFC 8200): a checked view and an owned representation.
//!
//! Extension headers are deliberately not walked: the NAT handles only packets whose next header is TCP, UDP
//! or ICMPv6 directly, and reports anything else through [`Ipv6Packet::next_header`] so the core can send it
//! to a slow path and count it. Jumbograms (payload length 0 with a hop-by-hop option) are not supported;
//! such a packet reads as having an empty payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                Source Address (16 bytes)                      |
//! |             Destination Address (16 bytes)                    |
//! ```

use core::net::Ipv6Addr;

use crate::addr::IpProtocol;
use crate::error::{Result, WireError, need, room};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// The IPv6 minimum link MTU (RFC 8200 §5): the bound on ICMPv6 errors.
pub const MIN_MTU: usize = 1280;
/// Next-header value of the fragment extension header.
pub const NEXT_HEADER_FRAGMENT: u8 = 44;

const WHAT: &str = "ipv6 header";

mod field {
    use core::ops::Range;
    pub(super) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: Range<usize> = 8..24;
    pub(super) const DST: Range<usize> = 24..40;
}

/// A view over an IPv6 packet.
///
/// After [`Ipv6Packet::new_checked`] succeeds the version is 6 and the fixed header plus the payload length
/// lie inside the buffer, so no accessor or setter panics. Trailing bytes beyond the payload length are
/// allowed and ignored by [`Ipv6Packet::payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic unless [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the version and the payload length against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(WHAT, b, HEADER_LEN)?;
        let version = b[0] >> 4;
        if version != 6 {
            return Err(WireError::BadVersion { what: WHAT, version });
        }
        need("ipv6 packet", b, HEADER_LEN + self.payload_len())
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes after the payload.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn word0(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The version field (always 6 after a successful check).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    /// The payload length field.
    pub fn payload_len(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(u16::from_be_bytes([b[4], b[5]]))
    }

    /// Header plus payload length.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// The next header field (an upper-layer protocol or an extension header).
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST])
    }

    /// The payload (extension headers included), up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

pub(crate) fn addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    let n = b.len().min(16);
    o[..n].copy_from_slice(&b[..n]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class and flow label (masked to 20 bits).
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length (the caller keeps it within the buffer).
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.number();
    }

    /// Sets the hop limit (IPv6 has no header checksum to update).
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// The payload, up to the payload length, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// An IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses a view (re-checking its length).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Self> {
        p.check_len()?;
        Ok(Ipv6Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Bytes of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header into the first 40 bytes of `buf`.
    ///
    /// `BufferTooSmall` if `buf` is shorter than 40 bytes; `BadLength` if the payload length exceeds 65535
    /// or the flow label 20 bits. Nothing is written on error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        room(buf, HEADER_LEN)?;
        let len = u16::try_from(self.payload_len).map_err(|_| WireError::BadLength {
            what: "ipv6 payload length",
            len: self.payload_len,
        })?;
        if self.flow_label > 0x000f_ffff {
            return Err(WireError::BadLength {
                what: "ipv6 flow label",
                len: self.flow_label as usize,
            });
        }
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_parse_and_errors() {
        let r = Ipv6Repr {
            src_addr: "fd00:250::1".parse().unwrap(),
            dst_addr: "fd00:250::2".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: 4,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        };
        let mut b = [0u8; 44];
        r.emit(&mut b).unwrap();
        assert_eq!(&b[..8], &[0x6b, 0x81, 0x23, 0x45, 0, 4, 17, 64]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), r);
        assert!(matches!(
            Ipv6Packet::new_checked(&b[..43]),
            Err(WireError::Truncated {
                need: 44,
                have: 43,
                ..
            })
        ));
        assert!(matches!(
            Ipv6Packet::new_checked(&b[..39]),
            Err(WireError::Truncated {
                need: 40,
                have: 39,
                ..
            })
        ));
        b[0] = 0x4b;
        assert!(matches!(
            Ipv6Packet::new_checked(&b[..]),
            Err(WireError::BadVersion { version: 4, .. })
        ));
        assert!(matches!(
            r.emit(&mut [0u8; 39]),
            Err(WireError::BufferTooSmall { need: 40, have: 39 })
        ));
    }
}
