//! IPv4 header (RFC 791): a checked view and an owned representation.
//!
//! The view accepts any header the NAT may have to forward, options included; the representation covers the
//! option-less header PIAS itself emits (ICMP errors), so `parse` refuses options rather than drop them.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version|  IHL  |Type of Service|          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options                    |    Padding    |
//! ```

use core::net::Ipv4Addr;

use crate::addr::IpProtocol;
use crate::checksum;
use crate::error::{Result, WireError, need, room};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// Longest header (IHL = 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Smallest datagram every IPv4 host must accept (RFC 791, RFC 1122 §3.3.3): the bound on ICMP errors.
pub const MIN_MTU: usize = 576;

const WHAT: &str = "ipv4 header";

mod field {
    use core::ops::Range;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const LENGTH: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const FLG_OFF: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SRC: Range<usize> = 12..16;
    pub(super) const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 datagram.
///
/// After [`Ipv4Packet::new_checked`] succeeds the version is 4, the header (options included) lies inside the
/// buffer, and the total length is at least the header and at most the buffer, so no accessor or setter
/// panics. A buffer longer than the total length is allowed (link-layer padding); [`Ipv4Packet::payload`]
/// stops at the total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic unless [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks version, IHL, and total length against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(WHAT, b, HEADER_LEN)?;
        let version = b[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(WireError::BadVersion { what: WHAT, version });
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "ipv4 ihl",
                len: hl,
            });
        }
        need(WHAT, b, hl)?;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if total < hl {
            return Err(WireError::BadLength {
                what: "ipv4 total length",
                len: total,
            });
        }
        need("ipv4 datagram", b, total)
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes after the total length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The version field (always 4 after a successful check).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Whether the header carries options (IHL > 5); the NAT forwards them untouched.
    pub fn has_options(&self) -> bool {
        self.header_len() > HEADER_LEN
    }

    /// The option bytes (empty when IHL = 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The total length field: header plus payload.
    pub fn total_len(&self) -> usize {
        usize::from(self.get_u16(field::LENGTH.start))
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.get_u16(field::IDENT.start)
    }

    /// The Don't Fragment flag: a router that cannot forward must answer "fragmentation needed".
    pub fn dont_frag(&self) -> bool {
        self.get_u16(field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.get_u16(field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.get_u16(field::FLG_OFF.start) & OFFSET_MASK) << 3
    }

    /// Whether this datagram is a fragment (MF set or non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.get_u16(field::FLG_OFF.start) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The time-to-live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol field.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        self.get_u16(field::CHECKSUM.start)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// Whether the header checksum verifies (options included).
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::add(0, &self.buffer.as_ref()[..self.header_len()]))
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }

    fn get_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets version 4 and the header length (a multiple of 4 from 20 to 60; other values are clamped).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = (header_len.clamp(HEADER_LEN, MAX_HEADER_LEN) / 4) as u8;
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    /// Sets the total length field (the caller keeps it within the buffer).
    pub fn set_total_len(&mut self, v: u16) {
        self.set_u16(field::LENGTH.start, v);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, v: u16) {
        self.set_u16(field::IDENT.start, v);
    }

    /// Sets flags and fragment offset (in bytes; rounded down to 8-byte units).
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        self.set_u16(field::FLG_OFF.start, v);
    }

    /// Sets the TTL without touching the checksum.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol field without touching the checksum.
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.number();
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16(field::CHECKSUM.start, v);
    }

    /// Sets the source address without touching the checksum.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address without touching the checksum.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Computes and stores the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len().min(self.buffer.as_ref().len());
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally; `None` (and no change) if it is already 0.
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        let old_word = self.get_u16(field::TTL);
        let ttl = self.ttl().checked_sub(1)?;
        let new_word = old_word - 0x0100;
        let c = checksum::update16(self.checksum(), old_word, new_word);
        self.set_ttl(ttl);
        self.set_checksum(c);
        Some(ttl)
    }

    /// The payload, up to the total length, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// An option-less IPv4 header, as PIAS emits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: IpProtocol,
    /// Length of the payload (total length minus 20).
    pub payload_len: usize,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Parses a checked view; refuses options (`Unsupported`) and a bad checksum (`BadChecksum`).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.has_options() {
            return Err(WireError::Unsupported {
                what: "ipv4 options",
                value: p.header_len() as u32,
            });
        }
        if !p.verify_checksum() {
            return Err(WireError::BadChecksum { what: WHAT });
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.total_len() - HEADER_LEN,
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    /// Bytes of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (with its checksum) into the first 20 bytes of `buf`.
    ///
    /// `BufferTooSmall` if `buf` is shorter than 20 bytes; `BadLength` if the payload length does not fit
    /// the 16-bit total length. Nothing is written on error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        room(buf, HEADER_LEN)?;
        let total = HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| WireError::BadLength {
            what: "ipv4 total length",
            len: total,
        })?;
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_version_and_header_len(HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_frag(self.dont_frag, self.more_frags, self.frag_offset);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2,
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn sample() -> [u8; 24] {
        let mut b = SAMPLE;
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn fields() {
        let b = sample();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn errors() {
        let b = sample();
        assert!(matches!(
            Ipv4Packet::new_checked(&b[..19]),
            Err(WireError::Truncated {
                need: 20,
                have: 19,
                ..
            })
        ));
        assert!(matches!(
            Ipv4Packet::new_checked(&b[..23]),
            Err(WireError::Truncated {
                need: 24,
                have: 23,
                ..
            })
        ));
        let mut v = b;
        v[0] = 0x65;
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(WireError::BadVersion { version: 6, .. })
        ));
        let mut v = b;
        v[0] = 0x44;
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(WireError::BadLength { len: 16, .. })
        ));
        let mut v = b;
        v[0] = 0x47; // IHL 7: a 28-byte header in a 24-byte buffer
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(WireError::Truncated { need: 28, .. })
        ));
        let mut v = b;
        v[3] = 19;
        assert!(matches!(
            Ipv4Packet::new_checked(&v[..]),
            Err(WireError::BadLength { len: 19, .. })
        ));
        // Oversized buffer: allowed, payload stops at total length.
        let mut long = [0u8; 40];
        long[..24].copy_from_slice(&b);
        let p = Ipv4Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        // Bad checksum is a Repr error, not a view error.
        let mut v = b;
        v[10] ^= 1;
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(matches!(Ipv4Repr::parse(&p), Err(WireError::BadChecksum { .. })));
    }

    #[test]
    fn decrement_ttl_is_incremental() {
        let mut b = sample();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), Some(63));
        assert!(p.verify_checksum());
        p.set_ttl(0);
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), None);
        assert_eq!(p.ttl(), 0);
    }
}
