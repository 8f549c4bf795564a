//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443): checked views and owned representations of the messages NAT and
//! path-MTU discovery need — echo request/reply and the error messages.
//!
//! Both versions share the 8-byte header layout (type, code, checksum, four type-specific bytes); an error
//! message then quotes the packet that caused it, as much as fits (at least the IP header and 8 bytes).
//! ICMPv4's checksum covers the message only; ICMPv6's also covers the IPv6 pseudo-header, which is why the
//! v6 checksum methods take the address pair.
//!
//! Echo messages carry an identifier that NAT treats as a port (RFC 5508 §3.1); errors are translated by
//! rewriting the quoted packet ([`crate::packet`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |     Type      |     Code      |          Checksum             |
//! |   Identifier / unused / MTU   | Sequence / unused / next-hop MTU |
//! |     Data (echo) or quoted packet (error) ...
//! ```

use core::net::Ipv6Addr;

use crate::addr::IpProtocol;
use crate::checksum;
use crate::error::{Result, WireError, need, room};

/// Length of the ICMP header (both versions).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 echo reply.
pub const V4_ECHO_REPLY: u8 = 0;
/// ICMPv4 destination unreachable.
pub const V4_DST_UNREACHABLE: u8 = 3;
/// ICMPv4 echo request.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 time exceeded.
pub const V4_TIME_EXCEEDED: u8 = 11;
/// ICMPv4 parameter problem.
pub const V4_PARAM_PROBLEM: u8 = 12;
/// ICMPv4 destination unreachable code: port unreachable.
pub const V4_CODE_PORT_UNREACHABLE: u8 = 3;
/// ICMPv4 destination unreachable code: fragmentation needed and DF set (RFC 1191).
pub const V4_CODE_FRAG_NEEDED: u8 = 4;

/// ICMPv6 destination unreachable.
pub const V6_DST_UNREACHABLE: u8 = 1;
/// ICMPv6 packet too big.
pub const V6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 time exceeded.
pub const V6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 parameter problem.
pub const V6_PARAM_PROBLEM: u8 = 4;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;

mod field {
    use core::ops::Range;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Range<usize> = 2..4;
    /// Echo identifier; unused in v4 errors except parameter problem's pointer (byte 4).
    pub(super) const IDENT: Range<usize> = 4..6;
    /// Echo sequence; v4 frag-needed next-hop MTU.
    pub(super) const SEQ: Range<usize> = 6..8;
    /// v6 packet-too-big MTU and parameter-problem pointer.
    pub(super) const REST: Range<usize> = 4..8;
}

/// Whether an ICMPv4 type is an error message (one that quotes a packet).
pub const fn is_v4_error(ty: u8) -> bool {
    matches!(ty, V4_DST_UNREACHABLE | V4_TIME_EXCEEDED | V4_PARAM_PROBLEM)
}

/// Whether an ICMPv6 type is an error message (types below 128, RFC 4443 §2.1).
pub const fn is_v6_error(ty: u8) -> bool {
    ty < 128
}

macro_rules! icmp_view_common {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it; accessors may panic unless [`Self::check_len`] passes.
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps a buffer after [`Self::check_len`].
            pub fn new_checked(buffer: T) -> Result<Self> {
                let p = Self::new_unchecked(buffer);
                p.check_len()?;
                Ok(p)
            }

            /// Checks that the 8-byte header lies in the buffer (the message is the whole buffer).
            pub fn check_len(&self) -> Result<()> {
                need(WHAT, self.buffer.as_ref(), HEADER_LEN)
            }

            /// Consumes the view, returning the buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            pub(super) fn get_u16(&self, at: usize) -> u16 {
                let b = self.buffer.as_ref();
                u16::from_be_bytes([b[at], b[at + 1]])
            }

            /// The message type.
            pub fn msg_type(&self) -> u8 {
                self.buffer.as_ref()[field::TYPE]
            }

            /// The message code.
            pub fn msg_code(&self) -> u8 {
                self.buffer.as_ref()[field::CODE]
            }

            /// The checksum field.
            pub fn checksum(&self) -> u16 {
                self.get_u16(field::CHECKSUM.start)
            }

            /// The echo identifier (meaningful for echo messages).
            pub fn echo_ident(&self) -> u16 {
                self.get_u16(field::IDENT.start)
            }

            /// The echo sequence number (meaningful for echo messages).
            pub fn echo_seq_no(&self) -> u16 {
                self.get_u16(field::SEQ.start)
            }

            /// The four type-specific bytes as one word.
            pub fn rest_of_header(&self) -> u32 {
                let b = self.buffer.as_ref();
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            }

            /// Everything after the 8-byte header: echo data, or the quoted packet of an error.
            pub fn payload(&self) -> &[u8] {
                &self.buffer.as_ref()[HEADER_LEN..]
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            fn set_u16(&mut self, at: usize, v: u16) {
                self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }

            /// Sets the message type.
            pub fn set_msg_type(&mut self, v: u8) {
                self.buffer.as_mut()[field::TYPE] = v;
            }

            /// Sets the message code.
            pub fn set_msg_code(&mut self, v: u8) {
                self.buffer.as_mut()[field::CODE] = v;
            }

            /// Sets the checksum field.
            pub fn set_checksum(&mut self, v: u16) {
                self.set_u16(field::CHECKSUM.start, v);
            }

            /// Sets the echo identifier without touching the checksum.
            pub fn set_echo_ident(&mut self, v: u16) {
                self.set_u16(field::IDENT.start, v);
            }

            /// Sets the echo sequence number without touching the checksum.
            pub fn set_echo_seq_no(&mut self, v: u16) {
                self.set_u16(field::SEQ.start, v);
            }

            /// Sets the four type-specific bytes.
            pub fn set_rest_of_header(&mut self, v: u32) {
                self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes());
            }

            /// The payload, for writing.
            pub fn payload_mut(&mut self) -> &mut [u8] {
                &mut self.buffer.as_mut()[HEADER_LEN..]
            }
        }
    };
}

/// A view over an ICMPv4 message (the whole IPv4 payload).
///
/// After [`Icmpv4Packet::new_checked`] succeeds the 8-byte header lies in the buffer, so no accessor or
/// setter panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

/// A view over an ICMPv6 message (the whole upper-layer payload).
///
/// After [`Icmpv6Packet::new_checked`] succeeds the 8-byte header lies in the buffer, so no accessor or
/// setter panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

mod v4 {
    use super::*;
    pub(super) const WHAT: &str = "icmpv4 header";
    icmp_view_common!(Icmpv4Packet);
}

mod v6 {
    use super::*;
    pub(super) const WHAT: &str = "icmpv6 header";
    icmp_view_common!(Icmpv6Packet);
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Whether this is an error message quoting a packet.
    pub fn is_error(&self) -> bool {
        is_v4_error(self.msg_type())
    }

    /// Whether this is an echo request or reply.
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), V4_ECHO_REQUEST | V4_ECHO_REPLY)
    }

    /// The next-hop MTU of a "fragmentation needed" message (RFC 1191; zero from pre-1191 routers).
    pub fn next_hop_mtu(&self) -> u16 {
        self.get_u16(field::SEQ.start)
    }

    /// The pointer of a parameter problem message.
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::IDENT.start]
    }

    /// The quoted packet of an error message (empty for other types).
    pub fn quote(&self) -> &[u8] {
        if self.is_error() { self.payload() } else { &[] }
    }

    /// Whether the checksum verifies (ICMPv4 has no pseudo-header).
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::add(0, self.buffer.as_ref()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Computes and stores the checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Whether this is an error message quoting a packet.
    pub fn is_error(&self) -> bool {
        is_v6_error(self.msg_type())
    }

    /// Whether this is an echo request or reply.
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), V6_ECHO_REQUEST | V6_ECHO_REPLY)
    }

    /// The MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// The pointer of a parameter problem message.
    pub fn pointer(&self) -> u32 {
        self.rest_of_header()
    }

    /// The quoted packet of an error message (empty for other types).
    pub fn quote(&self) -> &[u8] {
        if self.is_error() { self.payload() } else { &[] }
    }

    /// Whether the checksum verifies for this address pair (the pseudo-header is included).
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(*src, *dst, IpProtocol::ICMPV6, b.len() as u32);
        checksum::verifies(checksum::add(acc, b))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Computes and stores the checksum from scratch.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(*src, *dst, IpProtocol::ICMPV6, b.len() as u32);
        let c = checksum::finish(checksum::add(acc, b));
        self.set_checksum(c);
    }
}

/// An ICMPv4 message PIAS understands.
///
/// Unused header bytes are written as zero; a message with non-zero unused bytes parses but does not
/// re-emit identically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// Destination unreachable; `next_hop_mtu` is meaningful for code 4 (RFC 1191) and zero otherwise.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        quote: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        quote: &'a [u8],
    },
    ParamProblem {
        code: u8,
        pointer: u8,
        quote: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses a view, verifying the checksum; other types are `Unsupported`.
    pub fn parse(p: &Icmpv4Packet<&'a [u8]>) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(WireError::BadChecksum { what: v4::WHAT });
        }
        let buf: &'a [u8] = p.buffer;
        let data = &buf[HEADER_LEN..];
        Ok(match p.msg_type() {
            V4_ECHO_REQUEST => Icmpv4Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            V4_ECHO_REPLY => Icmpv4Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            V4_DST_UNREACHABLE => Icmpv4Repr::DstUnreachable {
                code: p.msg_code(),
                next_hop_mtu: p.next_hop_mtu(),
                quote: data,
            },
            V4_TIME_EXCEEDED => Icmpv4Repr::TimeExceeded {
                code: p.msg_code(),
                quote: data,
            },
            V4_PARAM_PROBLEM => Icmpv4Repr::ParamProblem {
                code: p.msg_code(),
                pointer: p.pointer(),
                quote: data,
            },
            t => {
                return Err(WireError::Unsupported {
                    what: "icmpv4 type",
                    value: t.into(),
                });
            }
        })
    }

    fn body(&self) -> &'a [u8] {
        match *self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => data,
            Icmpv4Repr::DstUnreachable { quote, .. }
            | Icmpv4Repr::TimeExceeded { quote, .. }
            | Icmpv4Repr::ParamProblem { quote, .. } => quote,
        }
    }

    /// Bytes of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body().len()
    }

    /// Writes the message with its checksum into `buf[..self.buffer_len()]`.
    ///
    /// `BufferTooSmall` if `buf` is short; nothing is written then.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let n = self.buffer_len();
        room(buf, n)?;
        let (ty, code, rest): (u8, u8, u32) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, .. } => {
                (V4_ECHO_REQUEST, 0, (u32::from(ident) << 16) | u32::from(seq_no))
            }
            Icmpv4Repr::EchoReply { ident, seq_no, .. } => {
                (V4_ECHO_REPLY, 0, (u32::from(ident) << 16) | u32::from(seq_no))
            }
            Icmpv4Repr::DstUnreachable {
                code, next_hop_mtu, ..
            } => (V4_DST_UNREACHABLE, code, u32::from(next_hop_mtu)),
            Icmpv4Repr::TimeExceeded { code, .. } => (V4_TIME_EXCEEDED, code, 0),
            Icmpv4Repr::ParamProblem { code, pointer, .. } => {
                (V4_PARAM_PROBLEM, code, u32::from(pointer) << 24)
            }
        };
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..n]);
        p.set_msg_type(ty);
        p.set_msg_code(code);
        p.set_rest_of_header(rest);
        p.payload_mut().copy_from_slice(self.body());
        p.fill_checksum();
        Ok(())
    }
}

/// An ICMPv6 message PIAS understands (neighbour discovery and MLD are not among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    DstUnreachable { code: u8, quote: &'a [u8] },
    PacketTooBig { mtu: u32, quote: &'a [u8] },
    TimeExceeded { code: u8, quote: &'a [u8] },
    ParamProblem { code: u8, pointer: u32, quote: &'a [u8] },
    EchoRequest { ident: u16, seq_no: u16, data: &'a [u8] },
    EchoReply { ident: u16, seq_no: u16, data: &'a [u8] },
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a view, verifying the checksum with the pseudo-header; other types are `Unsupported`.
    pub fn parse(p: &Icmpv6Packet<&'a [u8]>, src: &Ipv6Addr, dst: &Ipv6Addr) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum { what: v6::WHAT });
        }
        let buf: &'a [u8] = p.buffer;
        let data = &buf[HEADER_LEN..];
        Ok(match p.msg_type() {
            V6_DST_UNREACHABLE => Icmpv6Repr::DstUnreachable {
                code: p.msg_code(),
                quote: data,
            },
            V6_PACKET_TOO_BIG => Icmpv6Repr::PacketTooBig {
                mtu: p.mtu(),
                quote: data,
            },
            V6_TIME_EXCEEDED => Icmpv6Repr::TimeExceeded {
                code: p.msg_code(),
                quote: data,
            },
            V6_PARAM_PROBLEM => Icmpv6Repr::ParamProblem {
                code: p.msg_code(),
                pointer: p.pointer(),
                quote: data,
            },
            V6_ECHO_REQUEST => Icmpv6Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            V6_ECHO_REPLY => Icmpv6Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            t => {
                return Err(WireError::Unsupported {
                    what: "icmpv6 type",
                    value: t.into(),
                });
            }
        })
    }

    fn body(&self) -> &'a [u8] {
        match *self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => data,
            Icmpv6Repr::DstUnreachable { quote, .. }
            | Icmpv6Repr::PacketTooBig { quote, .. }
            | Icmpv6Repr::TimeExceeded { quote, .. }
            | Icmpv6Repr::ParamProblem { quote, .. } => quote,
        }
    }

    /// Bytes of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body().len()
    }

    /// Writes the message with its checksum (pseudo-header from `src`/`dst`) into `buf[..self.buffer_len()]`.
    ///
    /// `BufferTooSmall` if `buf` is short; nothing is written then.
    pub fn emit(&self, buf: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) -> Result<()> {
        let n = self.buffer_len();
        room(buf, n)?;
        let (ty, code, rest): (u8, u8, u32) = match *self {
            Icmpv6Repr::DstUnreachable { code, .. } => (V6_DST_UNREACHABLE, code, 0),
            Icmpv6Repr::PacketTooBig { mtu, .. } => (V6_PACKET_TOO_BIG, 0, mtu),
            Icmpv6Repr::TimeExceeded { code, .. } => (V6_TIME_EXCEEDED, code, 0),
            Icmpv6Repr::ParamProblem { code, pointer, .. } => (V6_PARAM_PROBLEM, code, pointer),
            Icmpv6Repr::EchoRequest { ident, seq_no, .. } => {
                (V6_ECHO_REQUEST, 0, (u32::from(ident) << 16) | u32::from(seq_no))
            }
            Icmpv6Repr::EchoReply { ident, seq_no, .. } => {
                (V6_ECHO_REPLY, 0, (u32::from(ident) << 16) | u32::from(seq_no))
            }
        };
        let mut p = Icmpv6Packet::new_unchecked(&mut buf[..n]);
        p.set_msg_type(ty);
        p.set_msg_code(code);
        p.set_rest_of_header(rest);
        p.payload_mut().copy_from_slice(self.body());
        p.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_echo_known_bytes() {
        let r = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: b"ping",
        };
        let mut b = [0u8; 12];
        r.emit(&mut b).unwrap();
        assert_eq!(&b[..2], &[8, 0]);
        assert_eq!(&b[4..8], &[0x12, 0x34, 0, 1]);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum() && p.is_echo() && !p.is_error());
        assert_eq!(Icmpv4Repr::parse(&p).unwrap(), r);
        assert!(matches!(
            r.emit(&mut [0u8; 11]),
            Err(WireError::BufferTooSmall { need: 12, have: 11 })
        ));
        assert!(matches!(
            Icmpv4Packet::new_checked(&b[..7]),
            Err(WireError::Truncated { need: 8, have: 7, .. })
        ));
        let mut bad = b;
        bad[9] ^= 1;
        let p = Icmpv4Packet::new_checked(&bad[..]).unwrap();
        assert!(matches!(
            Icmpv4Repr::parse(&p),
            Err(WireError::BadChecksum { .. })
        ));
    }

    #[test]
    fn v4_frag_needed_and_v6_too_big() {
        let quote = [0x45u8; 28];
        let r = Icmpv4Repr::DstUnreachable {
            code: V4_CODE_FRAG_NEEDED,
            next_hop_mtu: 1400,
            quote: &quote,
        };
        let mut b = [0u8; 36];
        r.emit(&mut b).unwrap();
        assert_eq!(&b[..8], &[3, 4, b[2], b[3], 0, 0, 0x05, 0x78]);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(p.quote(), &quote);

        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let r = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            quote: &quote,
        };
        let mut b = [0u8; 36];
        r.emit(&mut b, &s, &d).unwrap();
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &d));
        assert_eq!(p.mtu(), 1280);
        assert_eq!(Icmpv6Repr::parse(&p, &s, &d).unwrap(), r);
        // Neighbour solicitation: a valid message, but not one PIAS represents.
        let mut ns = [0u8; 24];
        ns[0] = 135;
        Icmpv6Packet::new_unchecked(&mut ns[..]).fill_checksum(&s, &d);
        let p = Icmpv6Packet::new_checked(&ns[..]).unwrap();
        assert!(matches!(
            Icmpv6Repr::parse(&p, &s, &d),
            Err(WireError::Unsupported { value: 135, .. })
        ));
    }
}
