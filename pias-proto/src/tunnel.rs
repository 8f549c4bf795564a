//! The overlay frame: Geneve carrying either a client's IP packet (data) or a control message.
//!
//! A *data frame* is a Geneve frame with the O bit clear, protocol type 0x0800 or 0x86DD, and exactly one
//! PIAS data option (class [`OPTION_CLASS_PIAS`], type [`OPTION_TYPE_DATA`], critical). The option says who
//! the ingress proxy was and how the frame travelled, so a JAP knows whom to tell when its cache entry is
//! stale and a RAP knows whom to answer:
//!
//! ```text
//! option data (8 bytes):
//!  0        1        2                 4                                 8
//! | flags  | hops   | reserved (0)    |        ingress proxy id         |
//! ```
//!
//! A *control frame* has the O bit set, protocol type [`ETHERTYPE_PIAS_CONTROL`], no options, and a control
//! message (see [`crate::control`]) as payload. Both kinds carry the overlay id in the VNI; a frame with
//! another VNI belongs to another deployment and is dropped.

use crate::addr::ProxyId;
use crate::error::{Result, WireError, room};
use crate::geneve::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_PIAS_CONTROL, GenevePacket, GeneveRepr, HEADER_LEN,
    OPTION_CLASS_PIAS, OPTION_TYPE_CRITICAL,
};

/// Type of the PIAS data option (critical bit set: a Geneve endpoint that does not speak PIAS must drop).
pub const OPTION_TYPE_DATA: u8 = OPTION_TYPE_CRITICAL | 0x01;
/// Bytes of the PIAS data option's data.
pub const DATA_OPTION_DATA_LEN: usize = 8;
/// Bytes of everything in a data frame before the client's packet: Geneve header plus the data option.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 4 + DATA_OPTION_DATA_LEN;
/// Overlay hops a fresh data frame may take: IAP→RAP, then RAP→JAP.
pub const INITIAL_HOPS: u8 = 2;

/// Flags of the data option.
pub mod flags {
    /// The frame was relayed by a RAP (it is a first packet on the 4-segment path).
    pub const VIA_RAP: u8 = 0x01;
    /// The ingress proxy asks the RAP to send it an Answer for this group.
    pub const WANT_ANSWER: u8 = 0x02;
    /// The frame goes from a JAP to a tunnel-mode target, which de-encapsulates it itself.
    pub const TO_TARGET: u8 = 0x04;
    /// The receiver is addressed as the group's RAP: it must relay the frame to a JAP (and answer if
    /// WANT_ANSWER is set). Without it the receiver is addressed as a JAP and delivers to a target.
    pub const TO_RAP: u8 = 0x08;
    /// Bits a receiver understands; others are ignored on receipt and sent as zero.
    pub const KNOWN: u8 = VIA_RAP | WANT_ANSWER | TO_TARGET | TO_RAP;
}

/// What a data frame's header says, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// The overlay id (Geneve VNI).
    pub vni: u32,
    /// See [`flags`].
    pub flags: u8,
    /// Overlay hops left; a proxy that would forward a frame whose count is 0 drops it.
    pub hops: u8,
    /// The proxy that took the client's packet from the anycast route.
    pub ingress: ProxyId,
}

impl DataHeader {
    /// Writes the Geneve header and the data option for an inner packet of IP version `ip_version` (4 or 6)
    /// into `out[..DATA_HEADER_LEN]`.
    pub fn emit(&self, ip_version: u8, out: &mut [u8]) -> Result<()> {
        room(out, DATA_HEADER_LEN)?;
        let protocol_type = match ip_version {
            4 => ETHERTYPE_IPV4,
            6 => ETHERTYPE_IPV6,
            v => {
                return Err(WireError::Unsupported {
                    what: "inner IP version",
                    value: v.into(),
                });
            }
        };
        GeneveRepr {
            oam: false,
            critical: true,
            protocol_type,
            vni: self.vni,
            options_len: 4 + DATA_OPTION_DATA_LEN,
        }
        .emit(out)?;
        let o = &mut out[HEADER_LEN..DATA_HEADER_LEN];
        o[0..2].copy_from_slice(&OPTION_CLASS_PIAS.to_be_bytes());
        o[2] = OPTION_TYPE_DATA;
        o[3] = (DATA_OPTION_DATA_LEN / 4) as u8;
        o[4] = self.flags & flags::KNOWN;
        o[5] = self.hops;
        o[6] = 0;
        o[7] = 0;
        o[8..12].copy_from_slice(&self.ingress.0.to_be_bytes());
        Ok(())
    }

    /// Builds a whole data frame: header, then `inner` copied behind it. Returns the frame length.
    pub fn encapsulate(&self, inner: &[u8], out: &mut [u8]) -> Result<usize> {
        let total = DATA_HEADER_LEN + inner.len();
        room(out, total)?;
        let version = inner.first().map(|b| b >> 4).unwrap_or(0);
        self.emit(version, out)?;
        out[DATA_HEADER_LEN..total].copy_from_slice(inner);
        Ok(total)
    }
}

/// A received overlay frame, classified.
#[derive(Debug)]
pub enum Frame<T> {
    /// A client's packet in a data frame.
    Data(DataFrame<T>),
    /// A control frame; the payload is a control message still to be parsed and authenticated.
    Control(GenevePacket<T>),
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks and classifies a UDP payload received on the overlay port.
    pub fn parse(buf: T) -> Result<Self> {
        let g = GenevePacket::new_checked(buf)?;
        if g.oam() {
            if g.protocol_type() != ETHERTYPE_PIAS_CONTROL {
                return Err(WireError::Unsupported {
                    what: "geneve control protocol",
                    value: g.protocol_type().into(),
                });
            }
            // Control frames carry no options; a critical one we do not know means "not for us".
            for opt in g.option_iter() {
                if opt?.is_critical() {
                    return Err(WireError::Unsupported {
                        what: "geneve critical option on control",
                        value: 0,
                    });
                }
            }
            return Ok(Frame::Control(g));
        }
        Ok(Frame::Data(DataFrame::from_geneve(g)?))
    }
}

/// A view over a data frame. After construction the PIAS option is present and the inner packet's IP
/// version matches the protocol type.
#[derive(Debug)]
pub struct DataFrame<T> {
    g: GenevePacket<T>,
    /// Offset of the PIAS option's data inside the frame.
    opt: usize,
}

impl<T: AsRef<[u8]>> DataFrame<T> {
    /// Checks a whole data frame.
    pub fn new_checked(buf: T) -> Result<Self> {
        Self::from_geneve(GenevePacket::new_checked(buf)?)
    }

    fn from_geneve(g: GenevePacket<T>) -> Result<Self> {
        if g.oam() {
            return Err(WireError::Malformed {
                what: "data frame",
                reason: "O bit set",
            });
        }
        let want_version = match g.protocol_type() {
            ETHERTYPE_IPV4 => 4,
            ETHERTYPE_IPV6 => 6,
            p => {
                return Err(WireError::Unsupported {
                    what: "geneve protocol type",
                    value: p.into(),
                });
            }
        };
        let mut found = None;
        let mut off = HEADER_LEN;
        for opt in g.option_iter() {
            let opt = opt?;
            let here = off;
            off += 4 + opt.data.len();
            if opt.class == OPTION_CLASS_PIAS && opt.kind == OPTION_TYPE_DATA {
                if found.is_some() {
                    return Err(WireError::Malformed {
                        what: "data frame",
                        reason: "PIAS data option twice",
                    });
                }
                if opt.data.len() != DATA_OPTION_DATA_LEN {
                    return Err(WireError::BadLength {
                        what: "PIAS data option",
                        len: opt.data.len(),
                    });
                }
                found = Some(here + 4);
            } else if opt.is_critical() {
                return Err(WireError::Unsupported {
                    what: "geneve critical option",
                    value: opt.class.into(),
                });
            }
        }
        let Some(opt) = found else {
            return Err(WireError::Malformed {
                what: "data frame",
                reason: "no PIAS data option",
            });
        };
        let version = g.payload().first().map(|b| b >> 4).unwrap_or(0);
        if version != want_version {
            return Err(WireError::Malformed {
                what: "data frame",
                reason: "inner IP version differs from protocol type",
            });
        }
        Ok(DataFrame { g, opt })
    }

    fn opt(&self) -> &[u8] {
        // The option offset was checked against the buffer at construction.
        &self.g.bytes()[self.opt..self.opt + DATA_OPTION_DATA_LEN]
    }

    /// The overlay id.
    pub fn vni(&self) -> u32 {
        self.g.vni()
    }

    /// The option's flags (unknown bits included, as received).
    pub fn flags(&self) -> u8 {
        self.opt()[0]
    }

    /// Overlay hops left.
    pub fn hops(&self) -> u8 {
        self.opt()[1]
    }

    /// The ingress proxy.
    pub fn ingress(&self) -> ProxyId {
        let o = self.opt();
        ProxyId(u32::from_be_bytes([o[4], o[5], o[6], o[7]]))
    }

    /// The header as an owned value.
    pub fn header(&self) -> DataHeader {
        DataHeader {
            vni: self.vni(),
            flags: self.flags() & flags::KNOWN,
            hops: self.hops(),
            ingress: self.ingress(),
        }
    }

    /// The client's IP packet.
    pub fn inner(&self) -> &[u8] {
        self.g.payload()
    }

    /// Offset of the inner packet in the frame (where a relay may re-use the header in place).
    pub fn inner_offset(&self) -> usize {
        HEADER_LEN + self.g.options_len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DataFrame<T> {
    /// The client's IP packet, mutable, for in-place NAT at the JAP.
    pub fn inner_mut(&mut self) -> &mut [u8] {
        self.g.payload_mut()
    }

    /// Rewrites flags and hops in place (what a RAP does before relaying a frame to a JAP).
    pub fn set_flags_hops(&mut self, flags: u8, hops: u8) {
        let opt = self.opt;
        let b = self.g.bytes_mut();
        b[opt] = flags & flags::KNOWN;
        b[opt + 1] = hops;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INNER_V4: [u8; 28] = [
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0,
    ];

    #[test]
    fn golden_data_frame() {
        let h = DataHeader {
            vni: 0x000102,
            flags: flags::WANT_ANSWER,
            hops: INITIAL_HOPS,
            ingress: ProxyId(7),
        };
        let mut out = [0u8; 64];
        let n = h.encapsulate(&INNER_V4, &mut out).unwrap();
        assert_eq!(n, DATA_HEADER_LEN + INNER_V4.len());
        assert_eq!(
            &out[..DATA_HEADER_LEN],
            &[
                0x03, 0x40, 0x08, 0x00, 0x00, 0x01, 0x02,
                0x00, // geneve: 3 option words, C, IPv4, VNI 0x000102
                0xff, 0x50, 0x81, 0x02, // option class 0xFF50, type 0x81, 2 words
                0x02, 0x02, 0x00, 0x00, 0, 0, 0, 7, // flags, hops, reserved, ingress 7
            ]
        );
        match Frame::parse(&out[..n]).unwrap() {
            Frame::Data(d) => {
                assert_eq!(d.header(), h);
                assert_eq!(d.inner(), &INNER_V4);
                assert_eq!(d.inner_offset(), DATA_HEADER_LEN);
            }
            Frame::Control(_) => panic!("not control"),
        }
    }

    #[test]
    fn relay_rewrites_in_place() {
        let h = DataHeader {
            vni: 1,
            flags: flags::WANT_ANSWER,
            hops: 2,
            ingress: ProxyId(9),
        };
        let mut out = [0u8; 64];
        let n = h.encapsulate(&INNER_V4, &mut out).unwrap();
        let mut d = DataFrame::new_checked(&mut out[..n]).unwrap();
        d.set_flags_hops(flags::VIA_RAP | 0x80, 1);
        assert_eq!(
            d.header(),
            DataHeader {
                vni: 1,
                flags: flags::VIA_RAP,
                hops: 1,
                ingress: ProxyId(9)
            }
        );
    }

    #[test]
    fn rejects_what_it_must() {
        let h = DataHeader {
            vni: 1,
            flags: 0,
            hops: 2,
            ingress: ProxyId(1),
        };
        let mut out = [0u8; 64];
        let n = h.encapsulate(&INNER_V4, &mut out).unwrap();
        // Wrong inner version for the protocol type.
        let mut bad = out;
        bad[DATA_HEADER_LEN] = 0x65;
        assert!(DataFrame::new_checked(&bad[..n]).is_err());
        // Unknown critical option instead of ours.
        let mut bad = out;
        bad[9] = 0x51;
        assert!(matches!(
            DataFrame::new_checked(&bad[..n]),
            Err(WireError::Unsupported { .. })
        ));
        // Unknown non-critical option is skipped, but then ours is missing.
        bad[10] = 0x01;
        assert!(matches!(
            DataFrame::new_checked(&bad[..n]),
            Err(WireError::Malformed { .. })
        ));
        // Non-IP payload.
        assert!(h.encapsulate(&[0x55], &mut [0u8; 64]).is_err());
        // Too small an output buffer is an error, not a panic.
        assert!(matches!(
            h.encapsulate(&INNER_V4, &mut [0u8; 30]),
            Err(WireError::BufferTooSmall { .. })
        ));
    }

    proptest! {
        #[test]
        fn data_header_round_trips(vni in 0u32..1 << 24, fl in 0u8..16, hops: u8, ingress: u32, v6: bool) {
            let h = DataHeader { vni, flags: fl, hops, ingress: ProxyId(ingress) };
            let mut inner = [0u8; 40];
            inner[0] = if v6 { 0x60 } else { 0x45 };
            let mut out = [0u8; 80];
            let n = h.encapsulate(&inner, &mut out).unwrap();
            let d = DataFrame::new_checked(&out[..n]).unwrap();
            prop_assert_eq!(d.header(), h);
            prop_assert_eq!(d.inner(), &inner[..]);
        }

        #[test]
        fn arbitrary_frames_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Frame::Data(d)) = Frame::parse(&b[..]) {
                let _ = (d.header(), d.inner().len());
            }
        }
    }
}
