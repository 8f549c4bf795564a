//! Control messages: the authenticated framing and every message PIAS sends.
//!
//! Proxy-to-proxy messages travel in Geneve control frames on the overlay port and are authenticated with the
//! overlay key; target-agent messages travel as the UDP payload of datagrams to the registration address and
//! are authenticated with the group's registration key (see [`crate::auth`]). Both use the same framing:
//!
//! ```text
//!  0        1        2        3        4                                   8
//! | version| type   | flags  | rsvd   |          sender proxy id          |
//!  8                                                                      16
//! |                      sequence number (u64)                            |
//! 16                18                20                                  28
//! |  body length    |   reserved      |   timestamp (u64, Unix ms)        |
//! 28
//! |  body ...  | MAC tag (16 bytes)   |
//! ```
//!
//! The tag is BLAKE3-keyed over the [`Binding`] (who the message is for) followed by bytes
//! `0 .. 28 + body length`. The binding is not sent: the sender knows where it sends and the receiver knows
//! where it listens, so a message recorded on its way to one proxy fails the MAC at any other (SPEC.md
//! §8.2). The timestamp lets a receiver refuse a message older than its replay windows' memory (a restart,
//! an expired tombstone). All integers are big-endian. Receivers:
//! reject a version other than [`VERSION`]; reject an unknown type (counted); ignore bytes of a body beyond
//! the fields they know (newer senders append fields), but reject a body shorter than the type's minimum;
//! ignore the flags and reserved bytes (sent as zero).
//!
//! Parsing is split from authentication on purpose: [`ControlPacket::new_checked`] locates the fields,
//! [`ControlPacket::verify`] checks the tag, and [`ControlPacket::message`] decodes the body. A target
//! message must be decoded before it can be verified, because its key depends on the group it names.

mod group;
mod membership;
mod target;

pub use group::{
    Answer, AnswerEntry, Invalidate, MAX_ANSWER_ENTRIES, ReportAck, ReportEntry, Reports, Resolve,
};
pub use membership::{DIGEST_FANOUT, Digest, MemberStatus, Probe, ProxyRecord, Pull, Records};
pub use target::{COOKIE_LEN, Challenge, DeliveryMode, RegAckStatus, Register, RegisterAck, TargetOp};

use crate::auth::{MacKey, TAG_LEN};
use crate::error::{Result, WireError, need, room};
use crate::geneve::{ETHERTYPE_PIAS_CONTROL, GeneveRepr, HEADER_LEN as GENEVE_LEN};

/// The control protocol version this implementation speaks.
pub const VERSION: u8 = 2;
/// Bytes of the control header.
pub const HEADER_LEN: usize = 28;
/// Largest control message (header, body and tag) a sender may emit: with Geneve, UDP and an IPv6 header
/// it still fits the IPv6 minimum MTU of 1280 bytes, so control traffic never needs fragmentation.
pub const MAX_MESSAGE_LEN: usize = 1200;
/// Largest body that fits [`MAX_MESSAGE_LEN`].
pub const MAX_BODY_LEN: usize = MAX_MESSAGE_LEN - HEADER_LEN - TAG_LEN;
/// UDP port of the registration address (target agents send here).
pub const REGISTRATION_PORT: u16 = 6082;

/// Message type codes (SPEC.md §5).
pub mod kind {
    pub const PROBE: u8 = 0x01;
    pub const PROBE_ACK: u8 = 0x02;
    pub const RECORDS: u8 = 0x03;
    pub const DIGEST: u8 = 0x04;
    pub const PULL: u8 = 0x05;
    pub const JOIN: u8 = 0x06;
    pub const REPORT: u8 = 0x10;
    pub const REPORT_ACK: u8 = 0x11;
    pub const RESOLVE: u8 = 0x12;
    pub const ANSWER: u8 = 0x13;
    pub const INVALIDATE: u8 = 0x14;
    pub const REGISTER: u8 = 0x20;
    pub const CHALLENGE: u8 = 0x21;
    pub const REGISTER_ACK: u8 = 0x22;
    pub const REFRESH: u8 = 0x23;
    pub const DEREGISTER: u8 = 0x24;
}

mod field {
    pub(super) const VERSION: usize = 0;
    pub(super) const KIND: usize = 1;
    pub(super) const SENDER: core::ops::Range<usize> = 4..8;
    pub(super) const SEQ: core::ops::Range<usize> = 8..16;
    pub(super) const BODY_LEN: core::ops::Range<usize> = 16..18;
    pub(super) const TIME: core::ops::Range<usize> = 20..28;
}

/// Who a message is for: the part of the MAC input that is not on the wire (SPEC.md §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A target message to or from a registration address. The registration address is anycast — the same
    /// at every proxy — so binding it would add nothing; the group key, the cookie and the registration's
    /// own window carry its protection (SPEC.md §8.2).
    Target,
    /// A proxy-to-proxy message for the overlay `vni`, sent to the overlay socket address `receiver`.
    Overlay {
        vni: u32,
        receiver: core::net::SocketAddr,
    },
}

impl Binding {
    /// Bytes of the longest encoding.
    pub const MAX_LEN: usize = 1 + 4 + 16 + 2;

    /// The MAC prefix: a domain byte (0 target, 1 overlay), then for the overlay the VNI (4), the receiver's
    /// IP as 16 bytes (IPv4 mapped into IPv6) and its port (2). Returns the buffer and the used length.
    pub fn encode(&self) -> ([u8; Self::MAX_LEN], usize) {
        let mut b = [0u8; Self::MAX_LEN];
        match self {
            Binding::Target => (b, 1),
            Binding::Overlay { vni, receiver } => {
                b[0] = 1;
                b[1..5].copy_from_slice(&vni.to_be_bytes());
                let ip = match receiver.ip() {
                    core::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
                    core::net::IpAddr::V6(a) => a,
                };
                b[5..21].copy_from_slice(&ip.octets());
                b[21..23].copy_from_slice(&receiver.port().to_be_bytes());
                (b, Self::MAX_LEN)
            }
        }
    }
}

/// The header fields a sender chooses for each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlHeader {
    /// The sending proxy; [`crate::ProxyId::NONE`] for a target agent.
    pub sender: crate::ProxyId,
    /// Strictly increasing per sender (and key): the receiver's replay window keys on it (SPEC.md §8.2).
    pub seq: u64,
    /// The sender's wall clock when it sealed the message, in milliseconds of Unix time; 0 in target
    /// messages (target hosts' clocks are not trusted to agree with the proxies', SPEC.md §8.2).
    pub time_ms: u64,
}

/// A view over a received control message. After construction the body and tag lie inside the buffer.
#[derive(Debug, Clone, Copy)]
pub struct ControlPacket<'a> {
    buf: &'a [u8],
    body_len: usize,
}

impl<'a> ControlPacket<'a> {
    /// Locates header, body and tag. Bytes after the tag are rejected (a message fills its datagram).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self> {
        need("control header", buf, HEADER_LEN)?;
        if buf[field::VERSION] != VERSION {
            return Err(WireError::BadVersion {
                what: "control",
                version: buf[field::VERSION],
            });
        }
        let body_len = usize::from(u16::from_be_bytes([
            buf[field::BODY_LEN.start],
            buf[field::BODY_LEN.start + 1],
        ]));
        let total = HEADER_LEN + body_len + TAG_LEN;
        need("control body and tag", buf, total)?;
        if buf.len() != total {
            return Err(WireError::BadLength {
                what: "control message",
                len: buf.len(),
            });
        }
        Ok(ControlPacket { buf, body_len })
    }

    /// The message type code.
    pub fn kind(&self) -> u8 {
        self.buf[field::KIND]
    }

    /// The header's sender, sequence number and timestamp.
    pub fn header(&self) -> ControlHeader {
        let s = &self.buf[field::SENDER];
        ControlHeader {
            sender: crate::ProxyId(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
            seq: rd::u64(self.buf, field::SEQ.start),
            time_ms: rd::u64(self.buf, field::TIME.start),
        }
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..HEADER_LEN + self.body_len]
    }

    /// Checks the tag under `key` for the receiver `bind` (constant time).
    pub fn verify(&self, key: &MacKey, bind: Binding) -> Result<()> {
        let signed = HEADER_LEN + self.body_len;
        let (b, n) = bind.encode();
        let tag = key.tag_parts(&[&b[..n], &self.buf[..signed]]);
        if crate::auth::ct_eq(&tag, &self.buf[signed..]) {
            Ok(())
        } else {
            Err(WireError::BadMac)
        }
    }

    /// Decodes the body by type. Decoding is not authentication: call [`ControlPacket::verify`] before
    /// acting on the result.
    pub fn message(&self) -> Result<Message<'a>> {
        Message::parse_body(self.kind(), self.body())
    }
}

/// Every control message, decoded. Variable-length lists borrow from the received bytes (or, when
/// emitting, from the caller's slice), so neither direction allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    Probe(Probe),
    ProbeAck(Probe),
    Records(Records<'a>),
    Digest(Digest),
    Pull(Pull),
    Join(ProxyRecord),
    Report(Reports<'a>),
    ReportAck(ReportAck),
    Resolve(Resolve),
    Answer(Answer),
    Invalidate(Invalidate),
    Register(Register),
    Challenge(Challenge),
    RegisterAck(RegisterAck),
    Refresh(TargetOp),
    Deregister(TargetOp),
}

impl<'a> Message<'a> {
    /// The type code.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Probe(_) => kind::PROBE,
            Message::ProbeAck(_) => kind::PROBE_ACK,
            Message::Records(_) => kind::RECORDS,
            Message::Digest(_) => kind::DIGEST,
            Message::Pull(_) => kind::PULL,
            Message::Join(_) => kind::JOIN,
            Message::Report(_) => kind::REPORT,
            Message::ReportAck(_) => kind::REPORT_ACK,
            Message::Resolve(_) => kind::RESOLVE,
            Message::Answer(_) => kind::ANSWER,
            Message::Invalidate(_) => kind::INVALIDATE,
            Message::Register(_) => kind::REGISTER,
            Message::Challenge(_) => kind::CHALLENGE,
            Message::RegisterAck(_) => kind::REGISTER_ACK,
            Message::Refresh(_) => kind::REFRESH,
            Message::Deregister(_) => kind::DEREGISTER,
        }
    }

    /// Whether this message is sent by a target agent or to one (authenticated with a group key, carried
    /// to or from the registration address) rather than between proxies.
    pub fn is_target_message(&self) -> bool {
        matches!(
            self,
            Message::Register(_)
                | Message::Challenge(_)
                | Message::RegisterAck(_)
                | Message::Refresh(_)
                | Message::Deregister(_)
        )
    }

    /// The group a target message names (the input of its key derivation).
    pub fn target_group(&self) -> Option<crate::TransportAddr> {
        match self {
            Message::Register(m) => Some(m.group),
            Message::Challenge(m) => Some(m.group),
            Message::RegisterAck(m) => Some(m.group),
            Message::Refresh(m) | Message::Deregister(m) => Some(m.group),
            _ => None,
        }
    }

    fn parse_body(k: u8, b: &'a [u8]) -> Result<Self> {
        Ok(match k {
            kind::PROBE => Message::Probe(Probe::parse(b)?),
            kind::PROBE_ACK => Message::ProbeAck(Probe::parse(b)?),
            kind::RECORDS => Message::Records(Records::parse(b)?),
            kind::DIGEST => Message::Digest(Digest::parse(b)?),
            kind::PULL => Message::Pull(Pull::parse(b)?),
            kind::JOIN => Message::Join(ProxyRecord::parse(b)?),
            kind::REPORT => Message::Report(Reports::parse(b)?),
            kind::REPORT_ACK => Message::ReportAck(ReportAck::parse(b)?),
            kind::RESOLVE => Message::Resolve(Resolve::parse(b)?),
            kind::ANSWER => Message::Answer(Answer::parse(b)?),
            kind::INVALIDATE => Message::Invalidate(Invalidate::parse(b)?),
            kind::REGISTER => Message::Register(Register::parse(b)?),
            kind::CHALLENGE => Message::Challenge(Challenge::parse(b)?),
            kind::REGISTER_ACK => Message::RegisterAck(RegisterAck::parse(b)?),
            kind::REFRESH => Message::Refresh(TargetOp::parse(b)?),
            kind::DEREGISTER => Message::Deregister(TargetOp::parse(b)?),
            other => {
                return Err(WireError::Unsupported {
                    what: "control message type",
                    value: other.into(),
                });
            }
        })
    }

    /// Bytes of the body this message emits.
    pub fn body_len(&self) -> usize {
        match self {
            Message::Probe(_) | Message::ProbeAck(_) => Probe::LEN,
            Message::Records(r) => r.body_len(),
            Message::Digest(_) => Digest::LEN,
            Message::Pull(_) => Pull::LEN,
            Message::Join(_) => ProxyRecord::LEN,
            Message::Report(r) => r.body_len(),
            Message::ReportAck(_) => ReportAck::LEN,
            Message::Resolve(_) => Resolve::LEN,
            Message::Answer(a) => a.body_len(),
            Message::Invalidate(_) => Invalidate::LEN,
            Message::Register(_) => Register::LEN,
            Message::Challenge(_) => Challenge::LEN,
            Message::RegisterAck(_) => RegisterAck::LEN,
            Message::Refresh(_) | Message::Deregister(_) => TargetOp::LEN,
        }
    }

    /// Bytes of the whole message (header, body, tag).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len() + TAG_LEN
    }

    fn emit_body(&self, out: &mut [u8]) -> Result<()> {
        match self {
            Message::Probe(m) | Message::ProbeAck(m) => m.emit(out),
            Message::Records(m) => m.emit(out),
            Message::Digest(m) => m.emit(out),
            Message::Pull(m) => m.emit(out),
            Message::Join(m) => m.emit(out),
            Message::Report(m) => m.emit(out),
            Message::ReportAck(m) => m.emit(out),
            Message::Resolve(m) => m.emit(out),
            Message::Answer(m) => m.emit(out),
            Message::Invalidate(m) => m.emit(out),
            Message::Register(m) => m.emit(out),
            Message::Challenge(m) => m.emit(out),
            Message::RegisterAck(m) => m.emit(out),
            Message::Refresh(m) | Message::Deregister(m) => m.emit(out),
        }
    }

    /// Writes header, body and tag into `out`; returns the length. On error nothing the caller may rely on
    /// was written (the buffer is checked before any byte is).
    pub fn emit(&self, hdr: ControlHeader, key: &MacKey, bind: Binding, out: &mut [u8]) -> Result<usize> {
        let body_len = self.body_len();
        if body_len > MAX_BODY_LEN {
            return Err(WireError::BadLength {
                what: "control body",
                len: body_len,
            });
        }
        let total = HEADER_LEN + body_len + TAG_LEN;
        room(out, total)?;
        let h = &mut out[..HEADER_LEN];
        h.fill(0);
        h[field::VERSION] = VERSION;
        h[field::KIND] = self.kind();
        h[field::SENDER].copy_from_slice(&hdr.sender.0.to_be_bytes());
        h[field::SEQ].copy_from_slice(&hdr.seq.to_be_bytes());
        h[field::BODY_LEN].copy_from_slice(&(body_len as u16).to_be_bytes());
        h[field::TIME].copy_from_slice(&hdr.time_ms.to_be_bytes());
        self.emit_body(&mut out[HEADER_LEN..HEADER_LEN + body_len])?;
        let signed = HEADER_LEN + body_len;
        let (b, n) = bind.encode();
        let tag = key.tag_parts(&[&b[..n], &out[..signed]]);
        out[signed..total].copy_from_slice(&tag);
        Ok(total)
    }

    /// Writes a Geneve control frame (header with O bit, VNI, no options) around the message, bound to
    /// `vni` and the overlay address `to` it is sent to; returns the frame length. This is what goes in a
    /// UDP datagram to another proxy's overlay port.
    pub fn emit_frame(
        &self,
        vni: u32,
        to: core::net::SocketAddr,
        hdr: ControlHeader,
        key: &MacKey,
        out: &mut [u8],
    ) -> Result<usize> {
        room(out, GENEVE_LEN + self.buffer_len())?;
        GeneveRepr {
            oam: true,
            critical: false,
            protocol_type: ETHERTYPE_PIAS_CONTROL,
            vni,
            options_len: 0,
        }
        .emit(out)?;
        let n = self.emit(
            hdr,
            key,
            Binding::Overlay { vni, receiver: to },
            &mut out[GENEVE_LEN..],
        )?;
        Ok(GENEVE_LEN + n)
    }
}

/// Big-endian field readers over a body whose length was checked by the caller.
pub(crate) mod rd {
    pub(crate) fn u16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    pub(crate) fn u32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    pub(crate) fn u64(b: &[u8], at: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_be_bytes(x)
    }
    pub(crate) fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
        let mut x = [0u8; N];
        x.copy_from_slice(&b[at..at + N]);
        x
    }
}

#[cfg(test)]
mod tests;
