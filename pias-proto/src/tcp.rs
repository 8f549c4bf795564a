//! TCP header (RFC 9293): a checked view, an options iterator, MSS clamping, and an owned representation.
//!
//! TCP has no length field of its own: the segment is whatever the IP layer says, so the view's buffer must
//! be exactly the segment (header and payload). The checksum covers a pseudo-header with the IP addresses.
//!
//! The IAP clamps the MSS option of SYNs it forwards so that a client never sends segments that no longer
//! fit once the overlay encapsulation is added ([`TcpPacket::clamp_mss`]); the rewrite is in place with an
//! incremental checksum update, like every NAT rewrite.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |     |N|C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsv |S|W|C|R|C|S|S|Y|I|            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options                    |    Padding    |
//! ```

use core::fmt;
use core::net::IpAddr;
use core::ops::BitOr;

use crate::addr::IpProtocol;
use crate::checksum::{self, Delta};
use crate::error::{Result, WireError, need, room};

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// Longest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Longest option area.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

const WHAT: &str = "tcp header";

mod field {
    use core::ops::Range;
    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const SEQ: Range<usize> = 4..8;
    pub(super) const ACK: Range<usize> = 8..12;
    pub(super) const OFF_FLAGS: Range<usize> = 12..14;
    pub(super) const WINDOW: Range<usize> = 14..16;
    pub(super) const CHECKSUM: Range<usize> = 16..18;
    pub(super) const URGENT: Range<usize> = 18..20;
}

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WS: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TSTAMP: u8 = 8;

/// The nine TCP flag bits (NS through FIN), as in the low bits of header bytes 12-13.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u16);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x001);
    pub const SYN: TcpFlags = TcpFlags(0x002);
    pub const RST: TcpFlags = TcpFlags(0x004);
    pub const PSH: TcpFlags = TcpFlags(0x008);
    pub const ACK: TcpFlags = TcpFlags(0x010);
    pub const URG: TcpFlags = TcpFlags(0x020);
    pub const ECE: TcpFlags = TcpFlags(0x040);
    pub const CWR: TcpFlags = TcpFlags(0x080);
    pub const NS: TcpFlags = TcpFlags(0x100);
    const ALL: u16 = 0x1ff;

    /// No flag set.
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// Flags from bits; bits outside the nine flags are dropped.
    pub const fn from_bits_truncate(bits: u16) -> TcpFlags {
        TcpFlags(bits & Self::ALL)
    }

    /// The bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// SYN set (a connection attempt or its answer): the segments that carry MSS.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// FIN set.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// RST set.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    /// ACK set.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 9] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"];
        let mut first = true;
        f.write_str("TcpFlags(")?;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    EndOfList,
    NoOperation,
    MaxSegmentSize(u16),
    WindowScale(u8),
    SackPermitted,
    /// SACK blocks, raw (pairs of 32-bit edges).
    Sack(&'a [u8]),
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
    Unknown {
        kind: u8,
        data: &'a [u8],
    },
}

/// Iterator over the options of a TCP header.
///
/// Yields each option; a malformed option (length below 2, past the end, or a known kind with the wrong
/// length) yields one `Err(Malformed)` and ends the iteration, so a hostile header costs at most 40 steps.
/// End-of-list ends the iteration after being yielded.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    bytes: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> TcpOptions<'a> {
    /// Iterates over raw option bytes (the area between the fixed header and the data offset).
    pub fn new(bytes: &'a [u8]) -> Self {
        TcpOptions {
            bytes,
            pos: 0,
            done: false,
        }
    }

    /// The next option with its offset in the option area.
    fn next_at(&mut self) -> Option<Result<(usize, TcpOption<'a>)>> {
        if self.done || self.pos >= self.bytes.len() {
            return None;
        }
        let at = self.pos;
        let kind = self.bytes[at];
        match kind {
            OPT_EOL => {
                self.done = true;
                return Some(Ok((at, TcpOption::EndOfList)));
            }
            OPT_NOP => {
                self.pos += 1;
                return Some(Ok((at, TcpOption::NoOperation)));
            }
            _ => {}
        }
        let bad = |reason| {
            Some(Err(WireError::Malformed {
                what: "tcp option",
                reason,
            }))
        };
        let Some(&len) = self.bytes.get(at + 1) else {
            self.done = true;
            return bad("option length missing");
        };
        let len = usize::from(len);
        if len < 2 || at + len > self.bytes.len() {
            self.done = true;
            return bad("option length out of range");
        }
        let data = &self.bytes[at + 2..at + len];
        let opt = match (kind, data.len()) {
            (OPT_MSS, 2) => TcpOption::MaxSegmentSize(u16::from_be_bytes([data[0], data[1]])),
            (OPT_WS, 1) => TcpOption::WindowScale(data[0]),
            (OPT_SACK_PERM, 0) => TcpOption::SackPermitted,
            (OPT_SACK, n) if n % 8 == 0 && n > 0 => TcpOption::Sack(data),
            (OPT_TSTAMP, 8) => TcpOption::Timestamps {
                tsval: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                tsecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            },
            (OPT_MSS | OPT_WS | OPT_SACK_PERM | OPT_SACK | OPT_TSTAMP, _) => {
                self.done = true;
                return bad("wrong length for option kind");
            }
            (kind, _) => TcpOption::Unknown { kind, data },
        };
        self.pos += len;
        Some(Ok((at, opt)))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_at().map(|r| r.map(|(_, o)| o))
    }
}

/// A view over a TCP segment (header and payload; the buffer ends where the IP payload ends).
///
/// After [`TcpPacket::new_checked`] succeeds the fixed header and the option area (data offset) lie in the
/// buffer, so no accessor or setter panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic unless [`Self::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the fixed header and the data offset against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(WHAT, b, HEADER_LEN)?;
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadLength {
                what: "tcp data offset",
                len: hl,
            });
        }
        need(WHAT, b, hl)
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn get_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn get_u32(&self, at: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.get_u16(field::SRC_PORT.start)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.get_u16(field::DST_PORT.start)
    }

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        self.get_u32(field::SEQ.start)
    }

    /// The acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        self.get_u32(field::ACK.start)
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS.start] >> 4) * 4
    }

    /// The three reserved bits between data offset and NS.
    pub fn reserved(&self) -> u8 {
        (self.buffer.as_ref()[field::OFF_FLAGS.start] >> 1) & 0x7
    }

    /// The flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits_truncate(self.get_u16(field::OFF_FLAGS.start))
    }

    /// The window field (unscaled).
    pub fn window(&self) -> u16 {
        self.get_u16(field::WINDOW.start)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.get_u16(field::CHECKSUM.start)
    }

    /// The urgent pointer.
    pub fn urgent(&self) -> u16 {
        self.get_u16(field::URGENT.start)
    }

    /// The raw option area.
    pub fn options_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Iterates over the options.
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options_bytes())
    }

    /// The value of the first MSS option; `None` if absent or if the options are malformed before it.
    pub fn mss(&self) -> Option<u16> {
        self.find_mss().map(|(_, v)| v)
    }

    /// Offset of the MSS value in the header and the value.
    fn find_mss(&self) -> Option<(usize, u16)> {
        let mut it = self.options();
        while let Some(Ok((at, opt))) = it.next_at() {
            if let TcpOption::MaxSegmentSize(v) = opt {
                return Some((HEADER_LEN + at + 2, v));
            }
        }
        None
    }

    /// The payload (after the options).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum verifies for this address pair.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header(src, dst, IpProtocol::TCP, b.len() as u32);
        checksum::verifies(checksum::add(acc, b))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn set_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn set_u32(&mut self, at: usize, v: u32) {
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port without touching the checksum.
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16(field::SRC_PORT.start, v);
    }

    /// Sets the destination port without touching the checksum.
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16(field::DST_PORT.start, v);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        self.set_u32(field::SEQ.start, v);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        self.set_u32(field::ACK.start, v);
    }

    /// Sets the data offset from a header length (a multiple of 4 from 20 to 60; other values are clamped)
    /// and the flags; the reserved bits become zero.
    pub fn set_header_len_and_flags(&mut self, header_len: usize, flags: TcpFlags) {
        let off = (header_len.clamp(HEADER_LEN, MAX_HEADER_LEN) / 4) as u16;
        self.set_u16(field::OFF_FLAGS.start, (off << 12) | flags.bits());
    }

    /// Sets the window.
    pub fn set_window(&mut self, v: u16) {
        self.set_u16(field::WINDOW.start, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16(field::CHECKSUM.start, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        self.set_u16(field::URGENT.start, v);
    }

    /// The option area, for writing.
    pub fn options_bytes_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    /// The payload, for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }

    /// Computes and stores the checksum from scratch.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header(src, dst, IpProtocol::TCP, b.len() as u32);
        let c = checksum::finish(checksum::add(acc, b));
        self.set_checksum(c);
    }

    /// Lowers the MSS option to `max` if it is larger, updating the checksum incrementally.
    ///
    /// Returns whether the segment changed. A segment without an MSS option (or with malformed options
    /// before it) is left alone. The checksum is updated even if it did not verify before, so a corrupt
    /// segment stays detectably corrupt.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let Some((at, mss)) = self.find_mss() else {
            return false;
        };
        if mss <= max {
            return false;
        }
        // Options are byte-aligned: the value may straddle two checksum words.
        let d = if at % 2 == 0 {
            Delta::ZERO.word(mss, max)
        } else {
            Delta::ZERO.word_odd(mss, max)
        };
        self.set_u16(at, max);
        let c = d.apply(self.checksum());
        self.set_checksum(c);
        true
    }
}

/// Raw TCP option bytes, padded to a multiple of 4, held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpOptionBytes {
    len: u8,
    bytes: [u8; MAX_OPTIONS_LEN],
}

impl TcpOptionBytes {
    /// No options.
    pub const EMPTY: TcpOptionBytes = TcpOptionBytes {
        len: 0,
        bytes: [0; MAX_OPTIONS_LEN],
    };

    /// Copies option bytes, padding with end-of-list (zero) bytes to a multiple of 4.
    ///
    /// `BadLength` if longer than 40 bytes. The content is not validated: an option area is carried as is.
    pub fn new(opts: &[u8]) -> Result<Self> {
        if opts.len() > MAX_OPTIONS_LEN {
            return Err(WireError::BadLength {
                what: "tcp options",
                len: opts.len(),
            });
        }
        let mut o = Self::EMPTY;
        o.bytes[..opts.len()].copy_from_slice(opts);
        o.len = opts.len().next_multiple_of(4) as u8;
        Ok(o)
    }

    /// The (padded) option bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(MAX_OPTIONS_LEN)]
    }
}

impl fmt::Debug for TcpOptionBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(TcpOptions::new(self.as_slice())).finish()
    }
}

/// A TCP header; the payload is passed separately to [`TcpRepr::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub urgent: u16,
    pub options: TcpOptionBytes,
    pub payload_len: usize,
}

impl TcpRepr {
    /// Parses a view, verifying its checksum for the address pair (`BadChecksum`). Reserved bits are dropped.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>, src: &IpAddr, dst: &IpAddr) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum { what: WHAT });
        }
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window: p.window(),
            urgent: p.urgent(),
            options: TcpOptionBytes::new(p.options_bytes())?,
            payload_len: p.payload().len(),
        })
    }

    /// Header length with options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.as_slice().len()
    }

    /// Bytes of header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// The MSS option's value, if any.
    pub fn mss(&self) -> Option<u16> {
        TcpOptions::new(self.options.as_slice()).find_map(|o| match o {
            Ok(TcpOption::MaxSegmentSize(v)) => Some(v),
            _ => None,
        })
    }

    /// Writes header and payload into `buf[..self.buffer_len()]`, then the checksum.
    ///
    /// `BufferTooSmall` if `buf` is short; nothing is written on error.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: &IpAddr,
        dst: &IpAddr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let total = self.buffer_len();
        room(buf, total)?;
        let hl = self.header_len();
        let mut p = TcpPacket::new_unchecked(&mut buf[..total]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len_and_flags(hl, self.flags);
        p.set_window(self.window);
        p.set_urgent(self.urgent);
        p.options_bytes_mut().copy_from_slice(self.options.as_slice());
        emit_payload(p.payload_mut());
        p.fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (IpAddr, IpAddr) {
        ("10.250.0.1".parse().unwrap(), "10.250.0.2".parse().unwrap())
    }

    fn syn(opts: &[u8]) -> ([u8; 64], usize) {
        let (s, d) = addrs();
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq_number: 1,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            options: TcpOptionBytes::new(opts).unwrap(),
            payload_len: 0,
        };
        let mut b = [0u8; 64];
        r.emit(&mut b, &s, &d, |_| ()).unwrap();
        (b, r.buffer_len())
    }

    #[test]
    fn options_and_mss() {
        // Linux SYN options: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
        let opts = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        let (b, n) = syn(&opts);
        let p = TcpPacket::new_checked(&b[..n]).unwrap();
        assert_eq!(p.header_len(), 40);
        let all: Vec<_> = p.options().collect::<Result<_>>().unwrap();
        assert_eq!(
            all,
            vec![
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 0 },
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
            ]
        );
        assert_eq!(p.mss(), Some(1460));
        assert!(p.flags().syn() && !p.flags().ack());
    }

    #[test]
    fn clamp_mss_even_and_odd_offsets() {
        let (s, d) = addrs();
        for opts in [&[2u8, 4, 5, 0xb4][..], &[1, 2, 4, 0x23, 0x28, 1, 1, 1][..]] {
            let (mut b, n) = syn(opts);
            let mut p = TcpPacket::new_checked(&mut b[..n]).unwrap();
            let before = p.mss().unwrap();
            assert!(!p.clamp_mss(before));
            assert!(p.clamp_mss(1200));
            assert_eq!(p.mss(), Some(1200));
            assert!(p.verify_checksum(&s, &d));
            assert!(!p.clamp_mss(1300));
        }
        let (mut b, n) = syn(&[]);
        assert!(!TcpPacket::new_checked(&mut b[..n]).unwrap().clamp_mss(536));
    }

    #[test]
    fn malformed_options_stop() {
        let mut it = TcpOptions::new(&[1, 2, 3]);
        assert_eq!(it.next(), Some(Ok(TcpOption::NoOperation)));
        assert!(matches!(it.next(), Some(Err(WireError::Malformed { .. }))));
        assert_eq!(it.next(), None);
        let mut it = TcpOptions::new(&[2, 3, 0, 0]);
        assert!(matches!(it.next(), Some(Err(WireError::Malformed { .. }))));
        let mut it = TcpOptions::new(&[7]);
        assert!(matches!(it.next(), Some(Err(WireError::Malformed { .. }))));
        let mut it = TcpOptions::new(&[0, 2, 4, 5, 0xb4]);
        assert_eq!(it.next(), Some(Ok(TcpOption::EndOfList)));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn errors() {
        let (b, n) = syn(&[]);
        assert!(matches!(
            TcpPacket::new_checked(&b[..19]),
            Err(WireError::Truncated { need: 20, .. })
        ));
        let mut v = b;
        v[12] = 0x40;
        assert!(matches!(
            TcpPacket::new_checked(&v[..n]),
            Err(WireError::BadLength { len: 16, .. })
        ));
        v[12] = 0x60;
        assert!(matches!(
            TcpPacket::new_checked(&v[..n]),
            Err(WireError::Truncated {
                need: 24,
                have: 20,
                ..
            })
        ));
        assert!(TcpOptionBytes::new(&[1; 41]).is_err());
    }
}
