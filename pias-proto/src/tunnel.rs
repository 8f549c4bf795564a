//! The overlay frame: Geneve carrying either a client's IP packet (data) or a control message.
//!
//! A *data frame* is a Geneve frame with the O bit clear, protocol type 0x0800 or 0x86DD, and exactly one
//! option, the PIAS data option (class [`OPTION_CLASS_PIAS`], type [`OPTION_TYPE_DATA`], critical). The
//! option says who the ingress proxy was and how the frame travelled, so a JAP knows whom to tell when its
//! cache entry is stale and a RAP knows whom to answer, and it carries the frame's tag:
//!
//! ```text
//! option data (16 bytes):
//!  0        1        2        3        4                                 8
//! | flags  | hops   | epoch  | rsvd 0 |        ingress proxy id         |
//! |                     tag (SipHash-1-3, 64 bit BE)                     |
//! ```
//!
//! The tag (SPEC.md §4.1) is SipHash-1-3 under the overlay's data key of the frame's key epoch
//! ([`MasterKey::data_key`](crate::auth::MasterKey::data_key)) over the frame's first [`TAG_HEADER_LEN`]
//! bytes (Geneve header, option header, flags, hops, epoch, reserved, ingress id) followed by the first
//! `min(`[`TAG_INNER_LEN`]`, len)` bytes of the inner packet: the addresses and ports a receiver acts on
//! cannot be changed, nor a frame made, without the key. The tag does not cover the rest of the inner packet
//! (a budget choice for the XDP path; SPEC.md §8.1 says what that leaves to an on-path attacker).
//!
//! A *control frame* has the O bit set, protocol type [`ETHERTYPE_PIAS_CONTROL`], no options, and a control
//! message (see [`crate::control`]) as payload. Both kinds carry the overlay id in the VNI; a frame with
//! another VNI belongs to another deployment and is dropped.

use siphasher::sip::SipHasher13;

mod prefix;
pub use prefix::TagState;

use crate::addr::ProxyId;
use crate::auth::{MasterKey, SipKey, ct_eq};
use crate::error::{Result, WireError, room};
use crate::geneve::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_PIAS_CONTROL, GenevePacket, GeneveRepr, HEADER_LEN,
    OPTION_CLASS_PIAS, OPTION_TYPE_CRITICAL,
};

/// Type of the PIAS data option (critical bit set: a Geneve endpoint that does not speak PIAS must drop).
pub const OPTION_TYPE_DATA: u8 = OPTION_TYPE_CRITICAL | 0x01;
/// Bytes of the PIAS data option's data.
pub const DATA_OPTION_DATA_LEN: usize = 16;
/// Bytes of everything in a data frame before the client's packet: Geneve header plus the data option.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 4 + DATA_OPTION_DATA_LEN;
/// Offset of the tag in a data frame (the bytes before it are all authenticated).
pub const TAG_OFFSET: usize = HEADER_LEN + 4 + 8;
/// Bytes of the tag.
pub const DATA_TAG_LEN: usize = 8;
/// Bytes of the frame's header the tag covers: everything before the tag.
pub const TAG_HEADER_LEN: usize = TAG_OFFSET;
/// At most this many bytes of the inner packet are covered by the tag (IP header and transport ports).
pub const TAG_INNER_LEN: usize = 48;
/// Overlay hops a fresh data frame may take: IAP→RAP, then RAP→JAP.
pub const INITIAL_HOPS: u8 = 2;

/// Flags of the data option.
pub mod flags {
    /// The frame was relayed by a RAP (it is a first packet on the 4-segment path).
    pub const VIA_RAP: u8 = 0x01;
    /// The ingress proxy asks the RAP to send it an Answer for this group.
    pub const WANT_ANSWER: u8 = 0x02;
    /// The frame goes between a JAP and a tunnel-mode target, which de-encapsulates it itself.
    pub const TO_TARGET: u8 = 0x04;
    /// The receiver is addressed as the group's RAP: it must relay the frame to a JAP (and answer if
    /// WANT_ANSWER is set). Without it the receiver is addressed as a JAP and delivers to a target.
    pub const TO_RAP: u8 = 0x08;
    /// The JAP that received this frame cannot serve its flow under the group's target policy
    /// (`exclude_sender`: its only targets are the client): with TO_RAP, the receiving RAP relays it to a JAP
    /// of the group other than the frame's sender; a JAP never hands off a frame that carries it.
    pub const HANDOFF: u8 = 0x10;
    /// Bits a receiver understands; others are ignored on receipt and sent as zero.
    pub const KNOWN: u8 = VIA_RAP | WANT_ANSWER | TO_TARGET | TO_RAP | HANDOFF;
}

/// The data-tag keys a proxy holds: its configured key epoch's and the previous epoch's, so that operators
/// can raise the epoch proxy by proxy (SPEC.md §8.1). Frames are sent under the current key and accepted
/// under either. Its `Debug` output shows the epochs, never the keys.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DataKeys {
    epoch: u32,
    current: SipKey,
    previous: Option<SipKey>,
}

impl core::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DataKeys(epoch {})", self.epoch)
    }
}

impl DataKeys {
    /// The keys of `epoch` and, unless it is 0, of `epoch - 1`.
    pub fn new(master: &MasterKey, epoch: u32) -> Self {
        DataKeys {
            epoch,
            current: master.data_key(epoch),
            previous: epoch.checked_sub(1).map(|e| master.data_key(e)),
        }
    }

    /// The configured key epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The epoch byte frames are sent with (the epoch's low 8 bits).
    pub fn wire_epoch(&self) -> u8 {
        self.epoch as u8
    }

    /// The key frames are sent with.
    pub fn current(&self) -> &SipKey {
        &self.current
    }

    /// The previous epoch's key, if any.
    pub fn previous(&self) -> Option<&SipKey> {
        self.previous.as_ref()
    }

    /// The key for a received frame's epoch byte, if it names the current or the previous epoch.
    pub fn for_wire_epoch(&self, e: u8) -> Option<&SipKey> {
        if e == self.wire_epoch() {
            Some(&self.current)
        } else if e == self.epoch.wrapping_sub(1) as u8 {
            self.previous.as_ref()
        } else {
            None
        }
    }
}

/// The tag of a data frame whose header is `frame[..DATA_HEADER_LEN]` (tag field ignored) and whose inner
/// packet follows it. `frame` must be at least [`DATA_HEADER_LEN`] long (callers hold a checked frame or
/// one they just wrote).
pub fn frame_tag(key: &SipKey, frame: &[u8]) -> u64 {
    // One contiguous message and one-shot hashing: cheaper than feeding the two parts to a streaming
    // hasher (measured with callgrind, see BENCHMARKS.md).
    let mut msg = [0u8; TAG_HEADER_LEN + TAG_INNER_LEN];
    let head = TAG_HEADER_LEN.min(frame.len());
    msg[..head].copy_from_slice(&frame[..head]);
    let inner = frame.get(DATA_HEADER_LEN..).unwrap_or(&[]);
    let n = inner.len().min(TAG_INNER_LEN);
    msg[TAG_HEADER_LEN..TAG_HEADER_LEN + n].copy_from_slice(&inner[..n]);
    SipHasher13::new_with_keys(key.k0, key.k1).hash(&msg[..head + n])
}

/// Writes the tag of a data frame laid out as [`DataHeader::emit`] writes it, inner packet included.
/// Fails on a buffer shorter than [`DATA_HEADER_LEN`].
pub fn write_tag(key: &SipKey, frame: &mut [u8]) -> Result<()> {
    room(frame, DATA_HEADER_LEN)?;
    let t = frame_tag(key, frame);
    frame[TAG_OFFSET..TAG_OFFSET + DATA_TAG_LEN].copy_from_slice(&t.to_be_bytes());
    Ok(())
}

/// What a data frame's header says, owned (the tag is not part of it: it is computed over the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// The overlay id (Geneve VNI).
    pub vni: u32,
    /// See [`flags`].
    pub flags: u8,
    /// Overlay hops left; a proxy that would forward a frame whose count is 0 drops it.
    pub hops: u8,
    /// The key epoch's low 8 bits: which data key the tag is under.
    pub epoch: u8,
    /// The proxy that took the client's packet from the anycast route.
    pub ingress: ProxyId,
}

impl DataHeader {
    /// Writes the Geneve header and the data option, with a zero tag, for an inner packet of IP version
    /// `ip_version` (4 or 6) into `out[..DATA_HEADER_LEN]`. Proxies then [`write_tag`] once the inner packet
    /// is behind it; a tunnel-mode target, which holds no data key, sends the zero tag.
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
        o[6] = self.epoch;
        o[7] = 0;
        o[8..12].copy_from_slice(&self.ingress.0.to_be_bytes());
        o[12..20].fill(0);
        Ok(())
    }

    /// Builds a whole data frame with a zero tag: header, then `inner` copied behind it. Returns the frame
    /// length. What a tunnel-mode target sends; proxies use [`DataHeader::encapsulate_tagged`].
    pub fn encapsulate(&self, inner: &[u8], out: &mut [u8]) -> Result<usize> {
        let total = DATA_HEADER_LEN + inner.len();
        room(out, total)?;
        let version = inner.first().map(|b| b >> 4).unwrap_or(0);
        self.emit(version, out)?;
        out[DATA_HEADER_LEN..total].copy_from_slice(inner);
        Ok(total)
    }

    /// Builds a whole data frame tagged under `key` (the key of [`DataHeader::epoch`]).
    pub fn encapsulate_tagged(&self, key: &SipKey, inner: &[u8], out: &mut [u8]) -> Result<usize> {
        let n = self.encapsulate(inner, out)?;
        write_tag(key, &mut out[..n])?;
        Ok(n)
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
        // Exactly the PIAS data option and nothing else: the tag covers a fixed layout, and an option it did
        // not cover could be added by anyone on the path.
        let mut opts = g.option_iter();
        let opt = match (opts.next(), g.options_len()) {
            (Some(Ok(o)), len) if o.class == OPTION_CLASS_PIAS && o.kind == OPTION_TYPE_DATA => {
                if o.data.len() != DATA_OPTION_DATA_LEN || len != 4 + DATA_OPTION_DATA_LEN {
                    return Err(WireError::BadLength {
                        what: "PIAS data option",
                        len: o.data.len(),
                    });
                }
                HEADER_LEN + 4
            }
            (Some(Ok(o)), _) if o.is_critical() => {
                return Err(WireError::Unsupported {
                    what: "geneve critical option",
                    value: o.class.into(),
                });
            }
            (Some(Err(e)), _) => return Err(e),
            _ => {
                return Err(WireError::Malformed {
                    what: "data frame",
                    reason: "no PIAS data option first",
                });
            }
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

    /// The key epoch byte.
    pub fn epoch(&self) -> u8 {
        self.opt()[2]
    }

    /// The ingress proxy.
    pub fn ingress(&self) -> ProxyId {
        let o = self.opt();
        ProxyId(u32::from_be_bytes([o[4], o[5], o[6], o[7]]))
    }

    /// The tag as received.
    pub fn tag(&self) -> u64 {
        let o = self.opt();
        let mut t = [0u8; DATA_TAG_LEN];
        t.copy_from_slice(&o[8..16]);
        u64::from_be_bytes(t)
    }

    /// Checks the tag under the key of the frame's epoch (current or previous, see [`DataKeys`]), in
    /// constant time. Fails with [`WireError::BadMac`] for an unknown epoch or a wrong tag.
    pub fn verify_tag(&self, keys: &DataKeys) -> Result<()> {
        let Some(key) = keys.for_wire_epoch(self.epoch()) else {
            return Err(WireError::BadMac);
        };
        let want = frame_tag(key, self.g.bytes());
        if ct_eq(&want.to_be_bytes(), &self.tag().to_be_bytes()) {
            Ok(())
        } else {
            Err(WireError::BadMac)
        }
    }

    /// The header as an owned value.
    pub fn header(&self) -> DataHeader {
        DataHeader {
            vni: self.vni(),
            flags: self.flags() & flags::KNOWN,
            hops: self.hops(),
            epoch: self.epoch(),
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

    /// Rewrites flags and hops in place (what a RAP does before relaying a frame to a JAP) and tags the
    /// frame again under `key`, sending it in epoch `epoch`.
    pub fn set_flags_hops(&mut self, flags: u8, hops: u8, epoch: u8, key: &SipKey) {
        let opt = self.opt;
        let b = self.g.bytes_mut();
        b[opt] = flags & flags::KNOWN;
        b[opt + 1] = hops;
        b[opt + 2] = epoch;
        // The frame was checked to hold the whole header at construction.
        let _ = write_tag(key, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INNER_V4: [u8; 28] = [
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0,
    ];

    fn keys() -> DataKeys {
        DataKeys::new(&MasterKey::from_bytes([7; 32]), 5)
    }

    fn header(flags: u8, hops: u8, ingress: u32) -> DataHeader {
        DataHeader {
            vni: 0x000102,
            flags,
            hops,
            epoch: keys().wire_epoch(),
            ingress: ProxyId(ingress),
        }
    }

    #[test]
    fn golden_data_frame() {
        let h = header(flags::WANT_ANSWER, INITIAL_HOPS, 7);
        let k = SipKey { k0: 1, k1: 2 };
        let mut out = [0u8; 64];
        let n = h.encapsulate_tagged(&k, &INNER_V4, &mut out).unwrap();
        assert_eq!(n, DATA_HEADER_LEN + INNER_V4.len());
        // The tag, computed independently: SipHash-1-3 over the 20 header bytes then the 28 inner bytes.
        let mut input = out[..TAG_HEADER_LEN].to_vec();
        input.extend_from_slice(&INNER_V4);
        let want = {
            use core::hash::Hasher;
            let mut s = SipHasher13::new_with_keys(1, 2);
            s.write(&input);
            s.finish()
        };
        assert_eq!(
            &out[..TAG_OFFSET],
            &[
                0x05, 0x40, 0x08, 0x00, 0x00, 0x01, 0x02,
                0x00, // geneve: 5 option words, C, IPv4, VNI 0x000102
                0xff, 0x50, 0x81, 0x04, // option class 0xFF50, type 0x81, 4 words
                0x02, 0x02, 0x05, 0x00, 0, 0, 0, 7, // flags, hops, epoch 5, reserved, ingress 7
            ]
        );
        assert_eq!(&out[TAG_OFFSET..DATA_HEADER_LEN], &want.to_be_bytes());
        // A fixed vector, so that the XDP program (driver-xdp) and other implementations can check theirs.
        assert_eq!(want, 0x4240_495c_4901_ec89, "tag vector: {want:#018x}");
        match Frame::parse(&out[..n]).unwrap() {
            Frame::Data(d) => {
                assert_eq!(d.header(), h);
                assert_eq!(d.inner(), &INNER_V4);
                assert_eq!(d.inner_offset(), DATA_HEADER_LEN);
                assert_eq!(d.tag(), want);
            }
            Frame::Control(_) => panic!("not control"),
        }
    }

    #[test]
    fn tag_checks_header_and_inner_start() {
        let ks = keys();
        let h = header(0, 2, 9);
        let mut inner = [0u8; 80];
        inner[..28].copy_from_slice(&INNER_V4);
        let mut out = [0u8; 128];
        let n = h.encapsulate_tagged(ks.current(), &inner, &mut out).unwrap();
        assert!(DataFrame::new_checked(&out[..n]).unwrap().verify_tag(&ks).is_ok());
        // Every covered byte matters (the tag field itself excluded); bytes past the first 48 inner do not.
        for i in (0..TAG_OFFSET).chain(DATA_HEADER_LEN..DATA_HEADER_LEN + TAG_INNER_LEN) {
            let mut bad = out;
            bad[i] ^= 0x01;
            if let Ok(d) = DataFrame::new_checked(&bad[..n]) {
                assert!(d.verify_tag(&ks).is_err(), "byte {i} not covered");
            }
        }
        let mut tail = out;
        tail[DATA_HEADER_LEN + TAG_INNER_LEN] ^= 1;
        assert!(
            DataFrame::new_checked(&tail[..n])
                .unwrap()
                .verify_tag(&ks)
                .is_ok()
        );
        // Untagged (zero) and another epoch's key fail.
        let n0 = h.encapsulate(&inner, &mut out).unwrap();
        assert!(
            DataFrame::new_checked(&out[..n0])
                .unwrap()
                .verify_tag(&ks)
                .is_err()
        );
        let other = DataKeys::new(&MasterKey::from_bytes([8; 32]), 5);
        h.encapsulate_tagged(other.current(), &inner, &mut out).unwrap();
        assert!(
            DataFrame::new_checked(&out[..n])
                .unwrap()
                .verify_tag(&ks)
                .is_err()
        );
    }

    #[test]
    fn previous_epoch_accepted_older_not() {
        let m = MasterKey::from_bytes([3; 32]);
        let old = DataKeys::new(&m, 4);
        let new = DataKeys::new(&m, 5);
        let newer = DataKeys::new(&m, 6);
        let h = DataHeader {
            vni: 1,
            flags: 0,
            hops: 2,
            epoch: old.wire_epoch(),
            ingress: ProxyId(1),
        };
        let mut out = [0u8; 64];
        let n = h.encapsulate_tagged(old.current(), &INNER_V4, &mut out).unwrap();
        let d = DataFrame::new_checked(&out[..n]).unwrap();
        assert!(d.verify_tag(&old).is_ok());
        assert!(d.verify_tag(&new).is_ok(), "previous epoch");
        assert!(d.verify_tag(&newer).is_err(), "two epochs back");
        assert!(DataKeys::new(&m, 0).previous().is_none());
        assert_ne!(m.data_key(4), m.data_key(5));
        assert!(!format!("{new:?}").contains(&format!("{}", new.current().k0)));
    }

    #[test]
    fn relay_rewrites_in_place() {
        let ks = keys();
        let h = header(flags::WANT_ANSWER, 2, 9);
        let mut out = [0u8; 64];
        let n = h.encapsulate_tagged(ks.current(), &INNER_V4, &mut out).unwrap();
        let mut d = DataFrame::new_checked(&mut out[..n]).unwrap();
        d.set_flags_hops(flags::VIA_RAP | 0x80, 1, ks.wire_epoch(), ks.current());
        assert_eq!(
            d.header(),
            DataHeader {
                flags: flags::VIA_RAP,
                hops: 1,
                ..h
            }
        );
        assert!(d.verify_tag(&ks).is_ok(), "relay re-tags");
    }

    #[test]
    fn rejects_what_it_must() {
        let h = header(0, 2, 1);
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
        // Unknown non-critical option: ours is not first, so the frame is refused.
        bad[10] = 0x01;
        assert!(matches!(
            DataFrame::new_checked(&bad[..n]),
            Err(WireError::Malformed { .. })
        ));
        // An extra option word behind ours (not covered by the tag) is refused.
        let mut long = [0u8; 68];
        long[..n].copy_from_slice(&out[..n]);
        long[0] = 0x06;
        assert!(matches!(
            DataFrame::new_checked(&long[..n + 4]),
            Err(WireError::BadLength { .. })
        ));
        // The old 8-byte option is refused.
        let mut old = out;
        old[0] = 0x03;
        old[11] = 0x02;
        assert!(DataFrame::new_checked(&old[..n - 8]).is_err());
        // Non-IP payload.
        assert!(h.encapsulate(&[0x55], &mut [0u8; 64]).is_err());
        // Too small an output buffer is an error, not a panic.
        assert!(matches!(
            h.encapsulate(&INNER_V4, &mut [0u8; 30]),
            Err(WireError::BufferTooSmall { .. })
        ));
        assert!(write_tag(&SipKey { k0: 0, k1: 0 }, &mut [0u8; 27]).is_err());
    }

    proptest! {
        #[test]
        fn data_header_round_trips(vni in 0u32..1 << 24, fl in 0u8..16, hops: u8, epoch: u8, ingress: u32, v6: bool, len in 1usize..100) {
            let h = DataHeader { vni, flags: fl, hops, epoch, ingress: ProxyId(ingress) };
            let mut inner = vec![0u8; len];
            inner[0] = if v6 { 0x60 } else { 0x45 };
            let ks = DataKeys::new(&MasterKey::from_bytes([1; 32]), u32::from(epoch));
            let mut out = vec![0u8; DATA_HEADER_LEN + len];
            let n = h.encapsulate_tagged(ks.current(), &inner, &mut out).unwrap();
            let d = DataFrame::new_checked(&out[..n]).unwrap();
            prop_assert_eq!(d.header(), h);
            prop_assert_eq!(d.inner(), &inner[..]);
            prop_assert!(d.verify_tag(&ks).is_ok());
        }

        #[test]
        fn arbitrary_frames_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Frame::Data(d)) = Frame::parse(&b[..]) {
                let _ = (d.header(), d.inner().len(), d.verify_tag(&keys()));
            }
        }

        #[test]
        fn flipped_covered_bit_fails(pos in 0usize..(TAG_OFFSET + TAG_INNER_LEN), bit in 0u8..8) {
            let ks = keys();
            let mut inner = [0u8; 60];
            inner[..28].copy_from_slice(&INNER_V4);
            let mut out = [0u8; DATA_HEADER_LEN + 60];
            let n = header(0, 2, 3).encapsulate_tagged(ks.current(), &inner, &mut out).unwrap();
            let i = if pos < TAG_OFFSET { pos } else { pos + DATA_TAG_LEN };
            out[i] ^= 1 << bit;
            if let Ok(d) = DataFrame::new_checked(&out[..n]) {
                prop_assert!(d.verify_tag(&ks).is_err());
            }
        }
    }
}
