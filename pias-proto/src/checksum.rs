//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! IPv4, TCP, UDP and ICMP all carry the same 16-bit one's complement checksum. The NAT rewrites a handful of
//! bytes per packet, so recomputing the checksum over the whole segment would dominate its cost; instead it
//! applies RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, for every changed 16-bit word. [`Delta`] accumulates
//! the `~m + m'` terms of several changes so the fold and the final complement happen once per checksum.
//!
//! Sums are kept unfolded in a `u64` ("partial sums"): one's complement addition is associative and
//! commutative, and adding 32-bit big-endian words into a 64-bit accumulator gives the same folded 16-bit
//! result as adding 16-bit words, with a quarter of the folds. A `u64` holds 2^32 such 32-bit words without
//! overflow, far beyond any IP packet.
//!
//! Two values mean zero in one's complement, `0x0000` and `0xFFFF`. A full computation over data that is not
//! all zero never yields `0xFFFF`, and eqn. 3 never yields it either unless every term is zero, so both
//! methods agree bit for bit on real headers. (RFC 1624 §3 shows the older eqn. 2 getting this wrong.)

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Adds `data` to the partial sum `acc` as a sequence of big-endian 16-bit words.
///
/// An odd trailing byte is padded with a zero byte, as RFC 1071 requires. The result is unfolded; pass it to
/// [`fold`] or [`finish`].
#[inline]
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    // Eight bytes at a time: two 32-bit words per iteration keep the dependency chain short.
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let hi = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        let lo = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
        acc += u64::from(hi) + u64::from(lo);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    acc
}

/// Folds a partial sum to 16 bits with end-around carry (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum field value for a partial sum: the complement of its fold.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The RFC 1071 checksum of `data` (the value to store in a zeroed checksum field).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// Whether data that includes its own checksum field verifies (its folded sum is `0xFFFF`).
#[inline]
pub fn verifies(acc: u64) -> bool {
    fold(acc) == 0xffff
}

/// Partial sum of the IPv4 pseudo-header (RFC 793/768): addresses, protocol, and upper-layer length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u64 {
    u64::from(src.to_bits()) + u64::from(dst.to_bits()) + u64::from(protocol) + u64::from(len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u64 {
    add(add(0, &src.octets()), &dst.octets()) + u64::from(next_header) + u64::from(len)
}

/// Partial sum of the pseudo-header for an address pair of either family.
///
/// A mixed pair has no meaning on the wire; it is summed as given (each address's octets) rather than
/// rejected, because the caller's IP header already fixed the family.
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: u8, len: u32) -> u64 {
    let a = match src {
        IpAddr::V4(a) => add(0, &a.octets()),
        IpAddr::V6(a) => add(0, &a.octets()),
    };
    let b = match dst {
        IpAddr::V4(b) => add(0, &b.octets()),
        IpAddr::V6(b) => add(0, &b.octets()),
    };
    a + b + u64::from(protocol) + u64::from(len)
}

/// The accumulated `~m + m'` terms of RFC 1624 eqn. 3 for a set of changed words.
///
/// A word that does not change adds nothing, so an empty delta leaves every checksum as it was, including
/// a non-canonical `0xFFFF` (RFC 1624 errata 4782: applying `~m + m` would turn it into `0x0000`).
///
/// Building one `Delta` per rewrite and applying it to each affected checksum (the IP header's and the
/// transport's, which share the address words through the pseudo-header) folds once per checksum.
/// Every word must sit at an even offset from the start of the checksummed data; for a value at an odd
/// offset use [`Delta::word_odd`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// No change.
    pub const ZERO: Delta = Delta(0);

    /// Adds the change of one 16-bit word from `old` to `new`.
    #[inline]
    #[must_use]
    pub fn word(self, old: u16, new: u16) -> Delta {
        if old == new {
            return self;
        }
        Delta(self.0 + u64::from(!old) + u64::from(new))
    }

    /// Adds the change of a 16-bit value that starts at an odd offset of the checksummed data.
    ///
    /// Its bytes straddle two words, high byte in the low half of one and low byte in the high half of the
    /// next; in one's complement arithmetic that contributes the byte-swapped value.
    #[inline]
    #[must_use]
    pub fn word_odd(self, old: u16, new: u16) -> Delta {
        self.word(old.swap_bytes(), new.swap_bytes())
    }

    /// Adds the change of one 32-bit word (two 16-bit words) from `old` to `new`.
    #[inline]
    #[must_use]
    pub fn word32(self, old: u32, new: u32) -> Delta {
        if old == new {
            return self;
        }
        Delta(self.0 + u64::from(!old) + u64::from(new))
    }

    /// Adds the change of a byte string of even length from `old` to `new` (same length).
    ///
    /// Bytes beyond the shorter of the two are ignored; an odd final byte is treated as padded with zero.
    #[inline]
    #[must_use]
    pub fn bytes(self, old: &[u8], new: &[u8]) -> Delta {
        let n = old.len().min(new.len());
        if old[..n] == new[..n] {
            return self;
        }
        // ~(sum of old words) == sum of ~(old words) in one's complement; complementing the folded sum is
        // cheaper than complementing each word.
        let o = fold(add(0, &old[..n]));
        let m = add(0, &new[..n]);
        Delta(self.0 + u64::from(!o) + m)
    }

    /// Adds the change of an IPv4 address.
    #[inline]
    #[must_use]
    pub fn ipv4(self, old: Ipv4Addr, new: Ipv4Addr) -> Delta {
        self.word32(old.to_bits(), new.to_bits())
    }

    /// Adds the change of an IPv6 address.
    #[inline]
    #[must_use]
    pub fn ipv6(self, old: Ipv6Addr, new: Ipv6Addr) -> Delta {
        let (o, n) = (old.to_bits(), new.to_bits());
        if o == n {
            return self;
        }
        let mut acc = self.0;
        let (no, nn) = (!o, n);
        acc += (no >> 96) as u32 as u64 + (no >> 64) as u32 as u64;
        acc += (no >> 32) as u32 as u64 + no as u32 as u64;
        acc += (nn >> 96) as u32 as u64 + (nn >> 64) as u32 as u64;
        acc += (nn >> 32) as u32 as u64 + nn as u32 as u64;
        Delta(acc)
    }

    /// Adds the change of an address of either family; a change of family is summed octet-wise (meaningless
    /// on the wire, but not a panic).
    #[inline]
    #[must_use]
    pub fn ip(self, old: IpAddr, new: IpAddr) -> Delta {
        match (old, new) {
            (IpAddr::V4(o), IpAddr::V4(n)) => self.ipv4(o, n),
            (IpAddr::V6(o), IpAddr::V6(n)) => self.ipv6(o, n),
            (IpAddr::V4(o), IpAddr::V6(n)) => self.bytes(&o.octets(), &n.octets()[..4]),
            (IpAddr::V6(o), IpAddr::V4(n)) => self.bytes(&o.octets()[..4], &n.octets()),
        }
    }

    /// Combines two deltas.
    #[inline]
    #[must_use]
    pub fn plus(self, other: Delta) -> Delta {
        Delta(self.0 + other.0)
    }

    /// Applies the change to a checksum field value `hc` (RFC 1624 eqn. 3).
    #[inline]
    #[must_use]
    pub fn apply(self, hc: u16) -> u16 {
        !fold(u64::from(!hc) + self.0)
    }
}

/// RFC 1624 eqn. 3 for one 16-bit word: the new checksum after `old` became `new`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    Delta::ZERO.word(old, new).apply(hc)
}

/// RFC 1624 eqn. 3 for one 32-bit word (two adjacent 16-bit words).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    Delta::ZERO.word32(old, new).apply(hc)
}

/// RFC 1624 eqn. 3 for an IPv4 address (in the header, or in a pseudo-header).
#[inline]
pub fn update_ipv4(hc: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    Delta::ZERO.ipv4(old, new).apply(hc)
}

/// RFC 1624 eqn. 3 for an IPv6 address (in a pseudo-header).
#[inline]
pub fn update_ipv6(hc: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    Delta::ZERO.ipv6(old, new).apply(hc)
}

/// RFC 1624 eqn. 3 for an address of either family.
#[inline]
pub fn update_ip(hc: u16, old: IpAddr, new: IpAddr) -> u16 {
    Delta::ZERO.ip(old, new).apply(hc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 §3 example: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (checksum = 220d).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // Byte order independence (RFC 1071 §2.B): the swapped data sums to the swapped sum.
        let swapped = [0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6];
        assert_eq!(fold(add(0, &swapped)), 0xf2dd);
        // Odd lengths pad with zero.
        assert_eq!(
            fold(add(0, &data[..7])),
            fold(add(0, &[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0]))
        );
    }

    /// RFC 1624 §4 example: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285. The correct new checksum is 0x0000;
    /// RFC 1141's eqn. 2 gives 0xFFFF.
    #[test]
    fn rfc1624_example() {
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        // The same by full computation: the other words sum to 0xCD7A.
        assert_eq!(checksum(&[0xcd, 0x7a, 0x55, 0x55]), 0xdd2f);
        assert_eq!(checksum(&[0xcd, 0x7a, 0x32, 0x85]), 0x0000);
        // RFC 1141's eqn. 2, HC' = HC + m + ~m' in one's complement, gets -0 instead, for contrast.
        let eqn2 = fold(0xdd2f + 0x5555 + u64::from(!0x3285u16));
        assert_eq!(eqn2, 0xffff);
        // The reverse change, from a zero checksum.
        assert_eq!(update16(0x0000, 0x3285, 0x5555), 0xdd2f);
    }

    #[test]
    fn zero_data_and_all_ones() {
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0, 0, 0, 0]), 0xffff);
        assert_eq!(checksum(&[0xff, 0xff]), 0x0000);
        assert!(verifies(add(0, &[0x12, 0x34, !0x12, !0x34])));
    }

    #[test]
    fn ipv4_header_known_answer() {
        // A classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert!(verifies(add(0, &h)));
    }

    fn set_words(data: &mut [u8], at: usize, new: &[u8]) {
        data[at..at + new.len()].copy_from_slice(new);
    }

    proptest! {
        #[test]
        fn add_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..200), init in 0u64..1 << 40) {
            let mut naive = init;
            for c in data.chunks(2) {
                let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
                naive += u64::from(w);
            }
            prop_assert_eq!(fold(add(init, &data)), fold(naive));
        }

        #[test]
        fn incremental_word_equals_full(
            mut data in proptest::collection::vec(any::<u8>(), 2..64),
            at in 0usize..64, new: u16,
        ) {
            let at = (at % (data.len() / 2)) * 2;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            set_words(&mut data, at, &new.to_be_bytes());
            prop_assume!(data.iter().any(|&b| b != 0));
            prop_assert_eq!(update16(hc, old, new), checksum(&data));
        }

        #[test]
        fn incremental_odd_word_equals_full(
            mut data in proptest::collection::vec(any::<u8>(), 4..64),
            at in 0usize..64, new: u16,
        ) {
            let at = ((at % (data.len() / 2 - 1)) * 2) + 1;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            set_words(&mut data, at, &new.to_be_bytes());
            prop_assume!(data.iter().any(|&b| b != 0));
            prop_assert_eq!(Delta::ZERO.word_odd(old, new).apply(hc), checksum(&data));
        }

        #[test]
        fn incremental_word32_and_addrs_equal_full(
            mut data in proptest::collection::vec(any::<u8>(), 40..80),
            a: u32, b: [u8; 16], c: u16,
        ) {
            let hc = checksum(&data);
            let old32 = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            let mut old6 = [0u8; 16];
            old6.copy_from_slice(&data[8..24]);
            let oldw = u16::from_be_bytes([data[30], data[31]]);
            set_words(&mut data, 4, &a.to_be_bytes());
            set_words(&mut data, 8, &b);
            set_words(&mut data, 30, &c.to_be_bytes());
            prop_assume!(data.iter().any(|&x| x != 0));
            let d = Delta::ZERO
                .ipv4(Ipv4Addr::from_bits(old32), Ipv4Addr::from_bits(a))
                .ipv6(Ipv6Addr::from(old6), Ipv6Addr::from(b))
                .word(oldw, c);
            prop_assert_eq!(d.apply(hc), checksum(&data));
            // The single-purpose helpers agree with the accumulator.
            let step = update_ip(
                update_ipv6(update32(hc, old32, a), Ipv6Addr::from(old6), Ipv6Addr::from(b)),
                IpAddr::V4(Ipv4Addr::from_bits(0)), IpAddr::V4(Ipv4Addr::from_bits(0)),
            );
            prop_assert_eq!(update16(step, oldw, c), checksum(&data));
        }

        #[test]
        fn delta_bytes_equals_full(
            mut data in proptest::collection::vec(any::<u8>(), 32..64),
            new in proptest::collection::vec(any::<u8>(), 16),
        ) {
            let hc = checksum(&data);
            let old = data[6..22].to_vec();
            set_words(&mut data, 6, &new);
            prop_assume!(data.iter().any(|&x| x != 0));
            prop_assert_eq!(Delta::ZERO.bytes(&old, &new).apply(hc), checksum(&data));
        }

        #[test]
        fn pseudo_headers_match_bytes(s: [u8; 16], d: [u8; 16], p: u8, len: u32) {
            let v6 = pseudo_header_v6(Ipv6Addr::from(s), Ipv6Addr::from(d), p, len);
            let mut ph = [0u8; 40];
            ph[..16].copy_from_slice(&s);
            ph[16..32].copy_from_slice(&d);
            ph[32..36].copy_from_slice(&len.to_be_bytes());
            ph[39] = p;
            prop_assert_eq!(fold(v6), fold(add(0, &ph)));
            let (s4, d4) = ([s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]]);
            let len16 = len as u16;
            let v4 = pseudo_header_v4(Ipv4Addr::from(s4), Ipv4Addr::from(d4), p, u32::from(len16));
            let ph4 = [s4[0], s4[1], s4[2], s4[3], d4[0], d4[1], d4[2], d4[3], 0, p,
                (len16 >> 8) as u8, len16 as u8];
            prop_assert_eq!(fold(v4), fold(add(0, &ph4)));
            prop_assert_eq!(
                fold(pseudo_header(&IpAddr::V4(Ipv4Addr::from(s4)), &IpAddr::V4(Ipv4Addr::from(d4)), p, u32::from(len16))),
                fold(v4)
            );
        }
    }
}
