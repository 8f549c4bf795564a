//! Geneve (RFC 8926): the frame every proxy-to-proxy datagram travels in.
//!
//! PIAS uses a standard frame so that tcpdump and Wireshark decode the overlay as they are. The UDP port is
//! Geneve's own (6081). Data frames carry the client's IP packet with protocol type 0x0800/0x86DD and one
//! PIAS option (see [`crate::tunnel`]); control frames set the O (control) bit and carry protocol type
//! [`ETHERTYPE_PIAS_CONTROL`] with the control message as payload (see [`crate::control`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//! ```

use crate::error::{Result, WireError, need, room};

/// Geneve's IANA-assigned UDP port.
pub const UDP_PORT: u16 = 6081;
/// Length of the fixed Geneve header.
pub const HEADER_LEN: usize = 8;
/// Protocol type of an IPv4 payload.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Protocol type of an IPv6 payload.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// Protocol type of a PIAS control message: IEEE 802 "Local Experimental Ethertype 1".
pub const ETHERTYPE_PIAS_CONTROL: u16 = 0x88B5;
/// Option class for PIAS options, from the Geneve "Experimental Use" range (0xFF00–0xFFFF).
pub const OPTION_CLASS_PIAS: u16 = 0xFF50;
/// Bit of an option's type that marks it critical: a receiver that does not know it must drop the frame.
pub const OPTION_TYPE_CRITICAL: u8 = 0x80;
/// Largest option area the header can describe (6-bit length in 4-byte words).
pub const MAX_OPTIONS_LEN: usize = 63 * 4;

mod field {
    pub(super) const VER_OPTLEN: usize = 0;
    pub(super) const FLAGS: usize = 1;
    pub(super) const PROTOCOL: core::ops::Range<usize> = 2..4;
    pub(super) const VNI: core::ops::Range<usize> = 4..7;
    pub(super) const RESERVED: usize = 7;
}

/// A view over a Geneve frame (the UDP payload).
///
/// After [`GenevePacket::new_checked`] succeeds the version is 0 and the option area lies inside the buffer,
/// so no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct GenevePacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> GenevePacket<T> {
    /// Checks the fixed header and the option length against the buffer.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        need("geneve header", b, HEADER_LEN)?;
        let version = b[field::VER_OPTLEN] >> 6;
        if version != 0 {
            return Err(WireError::BadVersion {
                what: "geneve",
                version,
            });
        }
        let opt_len = usize::from(b[field::VER_OPTLEN] & 0x3f) * 4;
        need("geneve options", b, HEADER_LEN + opt_len)?;
        Ok(GenevePacket { buf })
    }

    /// Length of the option area in bytes.
    pub fn options_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_OPTLEN] & 0x3f) * 4
    }

    /// The O bit: this is a control frame, not data.
    pub fn oam(&self) -> bool {
        self.buf.as_ref()[field::FLAGS] & 0x80 != 0
    }

    /// The C bit: at least one critical option is present.
    pub fn critical(&self) -> bool {
        self.buf.as_ref()[field::FLAGS] & 0x40 != 0
    }

    /// The payload's protocol type (an Ethertype).
    pub fn protocol_type(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[field::PROTOCOL.start], b[field::PROTOCOL.start + 1]])
    }

    /// The 24-bit virtual network identifier; PIAS puts the overlay id here.
    pub fn vni(&self) -> u32 {
        let b = &self.buf.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The option area.
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + self.options_len()]
    }

    /// An iterator over the options; it yields an error (and then stops) at a malformed option.
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter { rest: self.options() }
    }

    /// The encapsulated payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN + self.options_len()..]
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// The whole frame.
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GenevePacket<T> {
    /// The whole frame, mutable.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// The payload, mutable (so a receiver can rewrite the inner packet in place).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let off = HEADER_LEN + self.options_len();
        &mut self.buf.as_mut()[off..]
    }
}

/// One Geneve option, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneveOption<'a> {
    pub class: u16,
    /// Option type including the critical bit ([`OPTION_TYPE_CRITICAL`]).
    pub kind: u8,
    pub data: &'a [u8],
}

impl GeneveOption<'_> {
    /// Whether a receiver that does not understand this option must drop the frame.
    pub fn is_critical(&self) -> bool {
        self.kind & OPTION_TYPE_CRITICAL != 0
    }
}

/// Iterator over the options of a frame. See [`GenevePacket::option_iter`].
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<GeneveOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        if r.len() < 4 {
            self.rest = &[];
            return Some(Err(WireError::Truncated {
                what: "geneve option header",
                need: 4,
                have: r.len(),
            }));
        }
        let len = usize::from(r[3] & 0x1f) * 4;
        if r.len() < 4 + len {
            self.rest = &[];
            return Some(Err(WireError::Truncated {
                what: "geneve option data",
                need: 4 + len,
                have: r.len(),
            }));
        }
        let opt = GeneveOption {
            class: u16::from_be_bytes([r[0], r[1]]),
            kind: r[2],
            data: &r[4..4 + len],
        };
        self.rest = &r[4 + len..];
        Some(Ok(opt))
    }
}

/// The fixed Geneve header, owned. Options are written by the caller after [`GeneveRepr::emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneveRepr {
    pub oam: bool,
    pub critical: bool,
    pub protocol_type: u16,
    pub vni: u32,
    /// Length of the option area that follows the fixed header, in bytes (a multiple of 4, at most 252).
    pub options_len: usize,
}

impl GeneveRepr {
    /// Reads the fixed header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(p: &GenevePacket<T>) -> Self {
        GeneveRepr {
            oam: p.oam(),
            critical: p.critical(),
            protocol_type: p.protocol_type(),
            vni: p.vni(),
            options_len: p.options_len(),
        }
    }

    /// Bytes of the fixed header plus the option area.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.options_len
    }

    /// Writes the fixed header into `out[..8]`; the option area is the caller's.
    ///
    /// Fails without writing if the buffer is short, the VNI does not fit 24 bits, or the option length is
    /// not a multiple of 4 up to 252.
    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, HEADER_LEN)?;
        if self.vni > 0x00ff_ffff {
            return Err(WireError::Malformed {
                what: "geneve",
                reason: "VNI wider than 24 bits",
            });
        }
        if !self.options_len.is_multiple_of(4) || self.options_len > MAX_OPTIONS_LEN {
            return Err(WireError::BadLength {
                what: "geneve options",
                len: self.options_len,
            });
        }
        out[field::VER_OPTLEN] = (self.options_len / 4) as u8;
        out[field::FLAGS] = (u8::from(self.oam) << 7) | (u8::from(self.critical) << 6);
        out[field::PROTOCOL].copy_from_slice(&self.protocol_type.to_be_bytes());
        out[field::VNI].copy_from_slice(&self.vni.to_be_bytes()[1..]);
        out[field::RESERVED] = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_header() {
        let repr = GeneveRepr {
            oam: true,
            critical: false,
            protocol_type: 0x88B5,
            vni: 0x0a0b0c,
            options_len: 0,
        };
        let mut b = [0xffu8; 8];
        repr.emit(&mut b).unwrap();
        assert_eq!(b, [0x00, 0x80, 0x88, 0xB5, 0x0a, 0x0b, 0x0c, 0x00]);
        let p = GenevePacket::new_checked(&b[..]).unwrap();
        assert_eq!(GeneveRepr::parse(&p), repr);
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(
            GenevePacket::new_checked(&[0u8; 7][..]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            GenevePacket::new_checked(&[0x40u8, 0, 0, 0, 0, 0, 0, 0][..]),
            Err(WireError::BadVersion { .. })
        ));
        // Option length of 2 words but nothing behind the header.
        assert!(matches!(
            GenevePacket::new_checked(&[0x02u8, 0, 8, 0, 0, 0, 0, 0][..]),
            Err(WireError::Truncated { .. })
        ));
        let bad = GeneveRepr {
            oam: false,
            critical: false,
            protocol_type: 0,
            vni: 1 << 24,
            options_len: 0,
        };
        assert!(bad.emit(&mut [0; 8]).is_err());
    }

    #[test]
    fn option_iteration_stops_at_garbage() {
        // One option with 4 data bytes, then a truncated option header.
        let mut b = vec![0x03u8, 0, 0x08, 0x00, 0, 0, 1, 0];
        b.extend_from_slice(&[0xff, 0x50, 0x81, 0x01, 1, 2, 3, 4, 0xff, 0x50, 0x81, 0x05]);
        let p = GenevePacket::new_checked(&b[..]).unwrap();
        let opts: Vec<_> = p.option_iter().collect();
        assert_eq!(opts.len(), 2);
        assert_eq!(
            opts[0].unwrap(),
            GeneveOption {
                class: 0xff50,
                kind: 0x81,
                data: &[1, 2, 3, 4]
            }
        );
        assert!(opts[0].unwrap().is_critical());
        assert!(opts[1].is_err());
    }

    proptest! {
        #[test]
        fn repr_round_trips(oam: bool, critical: bool, protocol_type: u16, vni in 0u32..1 << 24, words in 0usize..64) {
            let repr = GeneveRepr { oam, critical, protocol_type, vni, options_len: words * 4 };
            let mut b = vec![0u8; repr.buffer_len()];
            repr.emit(&mut b).unwrap();
            let p = GenevePacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(GeneveRepr::parse(&p), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(p) = GenevePacket::new_checked(&b[..]) {
                let _ = (p.oam(), p.critical(), p.protocol_type(), p.vni(), p.payload().len());
                for o in p.option_iter() { let _ = o; }
            }
        }
    }
}
