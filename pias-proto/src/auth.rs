//! Keys and message authentication.
//!
//! One operator master key (32 bytes) is the root of every secret in a PIAS deployment. Sub-keys are derived
//! with BLAKE3's key-derivation mode, each under its own context string, so no two uses ever share a key:
//!
//! | key | derivation |
//! |---|---|
//! | overlay MAC key | `derive_key("PIAS v1 overlay MAC", master)` |
//! | group registration key | `derive_key("PIAS v1 group registration", master ‖ group TA (20 bytes))` |
//! | RAP ring key (128 bit) | first 16 bytes of `derive_key("PIAS v1 RAP ring", master)` |
//! | flow hash key (128 bit) | first 16 bytes of `derive_key("PIAS v1 flow hash", master)` |
//! | data tag key of epoch `e` (128 bit) | first 16 bytes of `derive_key("PIAS v1 data tag", master ‖ e as u32 BE)` |
//!
//! Because a group's registration key is a function of the master key and the group address, any proxy can
//! check a target's registration without per-group configuration, and a target given the key of one group
//! can neither join nor hijack another.
//!
//! MACs are BLAKE3 in keyed mode, truncated to 128 bits ([`TAG_LEN`]). BLAKE3 was chosen over HMAC-SHA-256
//! because one well-kept crate gives both the MAC and the key derivation, and it is several times faster on
//! the short messages PIAS sends.

use core::fmt;

use crate::addr::TransportAddr;
use crate::error::{Result, WireError};

/// Bytes of a MAC tag on the wire.
pub const TAG_LEN: usize = 16;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;

const CTX_OVERLAY: &str = "PIAS v1 overlay MAC";
const CTX_GROUP: &str = "PIAS v1 group registration";
const CTX_RING: &str = "PIAS v1 RAP ring";
const CTX_FLOW: &str = "PIAS v1 flow hash";
const CTX_DATA: &str = "PIAS v1 data tag";
const CTX_COOKIE: &str = "PIAS v1 registration cookie";

/// The operator's master key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN]);

/// A 256-bit MAC key (overlay or group registration). Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey([u8; KEY_LEN]);

/// A 128-bit SipHash key, as the two halves `siphasher` takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SipKey {
    pub k0: u64,
    pub k1: u64,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl fmt::Debug for SipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SipKey(..)")
    }
}

impl MasterKey {
    /// Wraps 32 key bytes.
    pub const fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        MasterKey(b)
    }

    /// Parses the key-file form: 64 hexadecimal digits, surrounding whitespace ignored.
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; KEY_LEN];
        decode_hex(s.trim(), &mut out)?;
        Ok(MasterKey(out))
    }

    /// The key in the key-file form (64 lowercase hex digits).
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The key that authenticates proxy-to-proxy control messages.
    pub fn overlay_key(&self) -> MacKey {
        MacKey(blake3::derive_key(CTX_OVERLAY, &self.0))
    }

    /// The registration key of one group: what a target (or its surrogate) must hold to join it.
    pub fn group_key(&self, group: &TransportAddr) -> MacKey {
        let mut material = [0u8; KEY_LEN + TransportAddr::WIRE_LEN];
        material[..KEY_LEN].copy_from_slice(&self.0);
        material[KEY_LEN..].copy_from_slice(&group.to_bytes());
        MacKey(blake3::derive_key(CTX_GROUP, &material))
    }

    /// The key of the RAP consistent-hashing ring (shared by all proxies, unknown to outsiders, so nobody
    /// can pick group addresses that all land on one proxy).
    pub fn ring_key(&self) -> SipKey {
        sip_key(blake3::derive_key(CTX_RING, &self.0))
    }

    /// The key of the per-flow hash that picks a JAP (shared by all proxies so they all pick alike).
    pub fn flow_key(&self) -> SipKey {
        sip_key(blake3::derive_key(CTX_FLOW, &self.0))
    }

    /// The key of the data-frame tag (SipHash-1-3, SPEC.md §4.1) for key epoch `epoch`. One key per epoch for
    /// the whole overlay: every member holds the master key, so per-sender keys would stop no member.
    pub fn data_key(&self, epoch: u32) -> SipKey {
        let mut material = [0u8; KEY_LEN + 4];
        material[..KEY_LEN].copy_from_slice(&self.0);
        material[KEY_LEN..].copy_from_slice(&epoch.to_be_bytes());
        sip_key(blake3::derive_key(CTX_DATA, &material))
    }
}

impl MacKey {
    /// Wraps 32 key bytes (a group key read from a key file, for example).
    pub const fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        MacKey(b)
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; KEY_LEN];
        decode_hex(s.trim(), &mut out)?;
        Ok(MacKey(out))
    }

    /// The key as 64 lowercase hex digits (what `pias key` prints for a target's key file).
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The 128-bit tag of `data` under this key.
    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let h = blake3::keyed_hash(&self.0, data);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&h.as_bytes()[..TAG_LEN]);
        t
    }

    /// The tag of the concatenation of `parts`, without copying them together.
    pub fn tag_parts(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for p in parts {
            h.update(p);
        }
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
        t
    }

    /// Checks `tag` against `data` in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> Result<()> {
        if tag.len() == TAG_LEN && ct_eq(&self.tag(data), tag) {
            Ok(())
        } else {
            Err(WireError::BadMac)
        }
    }

    /// A registration cookie secret derived from a proxy's own random secret (see SPEC.md §6.3).
    pub fn cookie_key(secret: &[u8; KEY_LEN]) -> MacKey {
        MacKey(blake3::derive_key(CTX_COOKIE, secret))
    }
}

/// Constant-time equality of two byte strings of equal length.
///
/// Eight bytes at a time (a data frame's tag is one word: this runs on every received data frame), the
/// differences OR-ed together with no data-dependent branch; only the length, which is public, decides the
/// loop.
#[inline]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    ca.zip(cb).fold(tail, |acc, (x, y)| {
        let (mut wx, mut wy) = ([0u8; 8], [0u8; 8]);
        wx.copy_from_slice(x);
        wy.copy_from_slice(y);
        acc | (u64::from_ne_bytes(wx) ^ u64::from_ne_bytes(wy))
    }) == 0
}

fn sip_key(d: [u8; 32]) -> SipKey {
    let mut k0 = [0u8; 8];
    let mut k1 = [0u8; 8];
    k0.copy_from_slice(&d[..8]);
    k1.copy_from_slice(&d[8..16]);
    SipKey {
        k0: u64::from_le_bytes(k0),
        k1: u64::from_le_bytes(k1),
    }
}

fn decode_hex(s: &str, out: &mut [u8]) -> Result<()> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return Err(WireError::BadLength {
            what: "hex key",
            len: b.len(),
        });
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        match (nibble(b[2 * i]), nibble(b[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => {
                return Err(WireError::Malformed {
                    what: "hex key",
                    reason: "not a hexadecimal digit",
                });
            }
        }
    }
    Ok(())
}

fn encode_hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[usize::from(x >> 4)] as char);
        s.push(D[usize::from(x & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::IpProtocol;

    fn master() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    proptest::proptest! {
        /// `ct_eq` is `==` for strings of equal length (whole words, a tail, or both; a difference anywhere),
        /// and false for different lengths.
        #[test]
        fn ct_eq_is_equality(a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                             i in 0usize..40, flip in 1u8..=255) {
            proptest::prop_assert!(ct_eq(&a, &a.clone()));
            let mut b = a.clone();
            if !b.is_empty() {
                let j = i % b.len();
                b[j] ^= flip;
                proptest::prop_assert!(!ct_eq(&a, &b));
            }
            b.push(0);
            proptest::prop_assert!(!ct_eq(&a, &b));
        }
    }

    #[test]
    fn keys_are_separated_by_purpose_and_group() {
        let m = master();
        let g1 = TransportAddr::new("10.9.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        let g2 = TransportAddr::new("10.9.0.1".parse().unwrap(), 53, IpProtocol::Tcp);
        assert_ne!(m.group_key(&g1), m.group_key(&g2));
        assert_ne!(m.group_key(&g1), m.overlay_key());
        assert_ne!(m.ring_key(), m.flow_key());
        assert_eq!(
            m.group_key(&g1),
            master().group_key(&g1),
            "derivation is deterministic"
        );
    }

    #[test]
    fn mac_detects_tampering_and_wrong_keys() {
        let k = master().overlay_key();
        let t = k.tag(b"hello");
        assert!(k.verify(b"hello", &t).is_ok());
        assert_eq!(k.verify(b"hellp", &t), Err(WireError::BadMac));
        assert_eq!(
            MacKey::from_bytes([1; 32]).verify(b"hello", &t),
            Err(WireError::BadMac)
        );
        assert_eq!(k.verify(b"hello", &t[..15]), Err(WireError::BadMac));
        assert_eq!(k.tag_parts(&[b"hel", b"lo"]), t);
    }

    #[test]
    fn known_answers_pin_the_constructions() {
        // Pinned values: a change of MAC construction, truncation or key-derivation context breaks
        // interoperability with deployed proxies and targets, so it must break this test first.
        let k = MacKey::from_bytes([7; 32]);
        assert_eq!(encode_hex(&k.tag(b"")), "29dc8692843c22e4bdc8f56a93c364a3");
        let g = TransportAddr::new("10.9.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        assert_eq!(
            master().group_key(&g).to_hex(),
            "2807b4743d11e11801d2b8946e7beaa7ad6339bc6955191839785ed23f28f818"
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let m = master();
        assert_eq!(MasterKey::from_hex(&format!("  {}\n", m.to_hex())).unwrap(), m);
        assert!(MasterKey::from_hex("abc").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{:?}", m), "MasterKey(..)");
    }
}
