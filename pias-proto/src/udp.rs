//! UDP header (RFC 768): a checked view and an owned representation.
//!
//! The checksum covers a pseudo-header with the IP addresses, which is why every checksum method takes the
//! address pair. Over IPv4 a zero checksum means "none" (RFC 768) and a computed zero is sent as `0xFFFF`;
//! over IPv6 the checksum is mandatory (RFC 8200 §8.1), so zero does not verify there.
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! |     Source      |   Destination   |
//! |      Port       |      Port       |
//! |     Length      |    Checksum     |
//! ```

use core::net::IpAddr;

use crate::addr::IpProtocol;
use crate::checksum;
use crate::error::{Result, WireError, need, room};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

const WHAT: &str = "udp header";

mod field {
    use core::ops::Range;
    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
}

/// A view over a UDP datagram.
///
/// After [`UdpPacket::new_checked`] succeeds the header lies in the buffer and the length field is between 8
/// and the buffer length, so no accessor or setter panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic unless [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the header and the length field against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(WHAT, b, HEADER_LEN)?;
        let len = self.len();
        if len < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "udp length",
                len,
            });
        }
        need("udp datagram", b, len)
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn get_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.get_u16(field::SRC_PORT.start)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.get_u16(field::DST_PORT.start)
    }

    /// The length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.get_u16(field::LENGTH.start))
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.get_u16(field::CHECKSUM.start)
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }

    /// Whether the checksum verifies for this address pair (zero verifies over IPv4 only).
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let len = self.len();
        let acc = checksum::pseudo_header(src, dst, IpProtocol::UDP, len as u32);
        checksum::verifies(checksum::add(acc, &self.buffer.as_ref()[..len]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn set_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port without touching the checksum.
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16(field::SRC_PORT.start, v);
    }

    /// Sets the destination port without touching the checksum.
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16(field::DST_PORT.start, v);
    }

    /// Sets the length field (the caller keeps it within the buffer).
    pub fn set_len(&mut self, v: u16) {
        self.set_u16(field::LENGTH.start, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16(field::CHECKSUM.start, v);
    }

    /// The payload, up to the length field, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    /// Computes and stores the checksum from scratch (a computed zero is stored as `0xFFFF`).
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let len = self.len().min(self.buffer.as_ref().len());
        let acc = checksum::pseudo_header(src, dst, IpProtocol::UDP, len as u32);
        let c = checksum::finish(checksum::add(acc, &self.buffer.as_ref()[..len]));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// A UDP header; the payload is passed separately to [`UdpRepr::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    /// Parses a view, verifying its checksum for the address pair (`BadChecksum`).
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>, src: &IpAddr, dst: &IpAddr) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum { what: WHAT });
        }
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN,
        })
    }

    /// Bytes of header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes header and payload into `buf[..self.buffer_len()]`, then the checksum.
    ///
    /// `emit_payload` fills the payload area. `BufferTooSmall` if `buf` is short, `BadLength` if the datagram
    /// exceeds 65535 bytes; nothing is written on error.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: &IpAddr,
        dst: &IpAddr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let total = self.buffer_len();
        let len = u16::try_from(total).map_err(|_| WireError::BadLength {
            what: "udp length",
            len: total,
        })?;
        room(buf, total)?;
        let mut p = UdpPacket::new_unchecked(&mut buf[..total]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        emit_payload(p.payload_mut());
        p.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_checksum_and_errors() {
        let (s, d): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let r = UdpRepr {
            src_port: 1234,
            dst_port: 53,
            payload_len: 3,
        };
        let mut b = [0u8; 11];
        r.emit(&mut b, &s, &d, |p| p.copy_from_slice(b"abc")).unwrap();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(&s, &d));
        assert_eq!(UdpRepr::parse(&p, &s, &d).unwrap(), r);
        assert!(matches!(
            UdpPacket::new_checked(&b[..10]),
            Err(WireError::Truncated {
                need: 11,
                have: 10,
                ..
            })
        ));
        assert!(matches!(
            UdpPacket::new_checked(&b[..7]),
            Err(WireError::Truncated { need: 8, .. })
        ));
        let mut z = b;
        z[4] = 0;
        z[5] = 7;
        assert!(matches!(
            UdpPacket::new_checked(&z[..]),
            Err(WireError::BadLength { len: 7, .. })
        ));
        let mut bad = b;
        bad[8] ^= 0x40;
        let p = UdpPacket::new_checked(&bad[..]).unwrap();
        assert!(matches!(
            UdpRepr::parse(&p, &s, &d),
            Err(WireError::BadChecksum { .. })
        ));
        // Zero checksum: "none" over IPv4, invalid over IPv6.
        let mut z = b;
        z[6] = 0;
        z[7] = 0;
        let p = UdpPacket::new_checked(&z[..]).unwrap();
        assert!(p.verify_checksum(&s, &d));
        let (s6, d6): (IpAddr, IpAddr) = ("::1".parse().unwrap(), "::2".parse().unwrap());
        assert!(!p.verify_checksum(&s6, &d6));
        assert!(matches!(
            r.emit(&mut [0u8; 10], &s, &d, |_| ()),
            Err(WireError::BufferTooSmall { need: 11, have: 10 })
        ));
    }
}
