//! Ingress and egress filtering of client packets (SPEC.md §8.5): which addresses a client may not have.
//!
//! The overlay's anycast prefixes, registration addresses and NAT pools are routed into proxies' TUNs. A
//! client packet whose *source* is in that space is either spoofed or would make the reply re-enter the
//! overlay — the one-packet loop: `G:7 → G:7` to a UDP echo group is translated by the JAP, echoed, reverse
//! translated to `G:7 → G:7`, written to the TUN, routed back into it, and forwarded again, for ever. A
//! source that cannot be a host on the Internet (a *martian*: loopback, this-network, link-local, multicast,
//! reserved, IPv4-mapped) is refused too: no reply could reach it, and a proxy only amplifies it.
//!
//! Private, shared (100.64/10), documentation and benchmarking ranges are *not* martian here: they are the
//! clients of private deployments and of labs.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP prefix: `addr/len`. Bits of `addr` beyond `len` are ignored by [`IpPrefix::contains`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    /// `None` if `len` is longer than the family's address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        (len <= max_len(addr)).then_some(IpPrefix { addr, len })
    }

    /// The prefix of one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        IpPrefix {
            addr,
            len: max_len(addr),
        }
    }

    /// Whether `a` (of the same family) is inside the prefix.
    pub fn contains(&self, a: IpAddr) -> bool {
        crate::policy::prefix_match(self.addr, self.len, a)
    }

    /// The prefix with the bits beyond `len` cleared (what an LPM map keys on).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let len = u32::from(self.len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let len = u32::from(self.len.min(128));
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl core::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn max_len(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// Why a client address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a host address on the Internet ([`is_martian`]).
    Martian,
    /// Inside the overlay's own address space ([`OverlaySpace`]).
    Overlay,
}

/// The IPv4 martian prefixes, as `(network, len)`: what [`is_martian`] refuses and what a fast path checks.
pub const MARTIAN_V4: &[(Ipv4Addr, u8)] = &[
    // "This network" (RFC 1122 §3.2.1.3): only a source during configuration, never a client's.
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    // Loopback: never leaves a host; a packet with it from outside is spoofed.
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    // Link-local: not routed, so a reply from a JAP elsewhere could not reach it.
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    // Multicast: never a source.
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    // Reserved (RFC 1112) and limited broadcast (255.255.255.255).
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The IPv6 martian prefixes, as `(network, len)` (see [`MARTIAN_V4`]).
pub const MARTIAN_V6: &[(Ipv6Addr, u8)] = &[
    // Unspecified (::/128) and loopback (::1/128).
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    // IPv4-mapped: never on the wire (RFC 4291 §2.5.5.2); used to dodge IPv4 filters.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    // Link-local: not routed.
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    // Multicast: never a source.
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// Whether `a` can never be a client's (or a client-bound reply's) address: see [`MARTIAN_V4`] and
/// [`MARTIAN_V6`].
///
/// Integer masks over the constant tables (every client packet asks, twice on the NAT path): no `IpAddr` is
/// built per prefix.
#[inline]
pub fn is_martian(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let x = v4.to_bits();
            MARTIAN_V4.iter().any(|(p, l)| x & mask4(*l) == p.to_bits())
        }
        IpAddr::V6(v6) => {
            let x = v6.to_bits();
            MARTIAN_V6.iter().any(|(p, l)| x & mask6(*l) == p.to_bits())
        }
    }
}

/// The network mask of an IPv4 prefix length (lengths beyond 32 count as 32).
#[inline]
fn mask4(len: u8) -> u32 {
    let len = u32::from(len.min(32));
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

/// The network mask of an IPv6 prefix length (lengths beyond 128 count as 128).
#[inline]
fn mask6(len: u8) -> u128 {
    let len = u32::from(len.min(128));
    if len == 0 { 0 } else { u128::MAX << (128 - len) }
}

/// The most prefixes each list of [`OverlaySpace`]'s inputs may hold (validation enforces it): the space is
/// checked on every client packet, and a fast path installs it in a bounded map.
pub const MAX_PREFIXES: usize = 256;

/// The overlay's own address space as this proxy knows it: its anycast prefixes, registration addresses and
/// NAT pool, plus the operator's list of other proxies' pools and other overlay prefixes. Client sources
/// and reply destinations in it are refused; so are targets in it (a target there would send the packet
/// back into the overlay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlaySpace {
    prefixes: Vec<IpPrefix>,
    /// The same prefixes as `(network, mask)` integers by family, for [`OverlaySpace::contains`].
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl OverlaySpace {
    /// The space made of these prefixes (duplicates kept out).
    pub fn new(prefixes: impl IntoIterator<Item = IpPrefix>) -> Self {
        let mut v: Vec<IpPrefix> = Vec::new();
        for p in prefixes {
            let p = IpPrefix {
                addr: p.network(),
                len: p.len,
            };
            if !v.contains(&p) {
                v.push(p);
            }
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in &v {
            match p.addr {
                IpAddr::V4(a) => v4.push((a.to_bits(), mask4(p.len))),
                IpAddr::V6(a) => v6.push((a.to_bits(), mask6(p.len))),
            }
        }
        OverlaySpace { prefixes: v, v4, v6 }
    }

    /// Every prefix of the space (network addresses), for a fast path's map.
    pub fn prefixes(&self) -> &[IpPrefix] {
        &self.prefixes
    }

    /// Whether `a` is inside the overlay's space.
    #[inline]
    pub fn contains(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => {
                let x = a.to_bits();
                self.v4.iter().any(|&(n, m)| x & m == n)
            }
            IpAddr::V6(a) => {
                let x = a.to_bits();
                self.v6.iter().any(|&(n, m)| x & m == n)
            }
        }
    }

    /// Whether `a` may be a client's address: `Err` says why not. Martian is checked first (the cheaper,
    /// and the one that does not depend on configuration).
    #[inline]
    pub fn check(&self, a: IpAddr) -> Result<(), Refusal> {
        if is_martian(a) {
            return Err(Refusal::Martian);
        }
        if self.contains(a) {
            return Err(Refusal::Overlay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pre(s: &str) -> IpPrefix {
        let (a, l) = s.split_once('/').unwrap();
        IpPrefix::new(ip(a), l.parse().unwrap()).unwrap()
    }

    fn lab_space() -> OverlaySpace {
        OverlaySpace::new([
            pre("10.99.0.0/24"),
            pre("fd99::/64"),
            IpPrefix::host(ip("10.99.0.1")),
            IpPrefix::host(ip("10.98.1.1")),
            pre("10.98.0.0/16"),
            pre("fd98::/16"),
        ])
    }

    #[test]
    fn every_martian_range_is_refused() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.1.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff0e::1",
        ] {
            assert!(is_martian(ip(a)), "{a}");
            assert_eq!(lab_space().check(ip(a)), Err(Refusal::Martian), "{a}");
        }
    }

    #[test]
    fn legitimate_clients_are_accepted() {
        for a in [
            "10.1.5.2",
            "10.97.255.1",
            "10.100.0.1",
            "172.16.0.1",
            "192.168.1.10",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "8.8.8.8",
            "1.1.1.1",
            "223.255.255.255",
            "2001:db8::1",
            "fd00:5::2",
            "fd97::1",
            "2a00:1450::1",
            "fec0::1",
            "::2",
        ] {
            assert!(!is_martian(ip(a)), "{a}");
            assert_eq!(lab_space().check(ip(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn overlay_space_is_refused() {
        let s = lab_space();
        for a in [
            "10.99.0.7",
            "10.99.0.1",
            "10.99.0.255",
            "10.98.1.1",
            "10.98.3.1",
            "fd99::7",
            "fd98:2::1",
        ] {
            assert_eq!(s.check(ip(a)), Err(Refusal::Overlay), "{a}");
        }
        // The families never mix: an IPv4 prefix says nothing about IPv6 addresses.
        assert!(!OverlaySpace::new([pre("0.0.0.0/1")]).contains(ip("::2")));
    }

    #[test]
    fn space_keeps_networks_once() {
        let s = OverlaySpace::new([pre("10.99.0.7/24"), pre("10.99.0.0/24"), pre("fd99::1/64")]);
        assert_eq!(s.prefixes(), &[pre("10.99.0.0/24"), pre("fd99::/64")]);
        assert!(IpPrefix::new(ip("10.0.0.0"), 33).is_none());
        assert!(IpPrefix::new(ip("::"), 129).is_none());
        assert_eq!(pre("10.99.0.0/24").to_string(), "10.99.0.0/24");
    }

    proptest! {
        /// Any address inside a martian prefix is refused as martian, whatever the space.
        #[test]
        fn martian_ranges_always_refused(x in any::<u32>(), y in any::<u128>(), i in 0usize..16) {
            let (p4, l4) = MARTIAN_V4[i % MARTIAN_V4.len()];
            let m4 = if l4 == 0 { 0 } else { u32::MAX << (32 - u32::from(l4)) };
            let a4 = IpAddr::V4(Ipv4Addr::from((u32::from(p4) & m4) | (x & !m4)));
            prop_assert_eq!(lab_space().check(a4), Err(Refusal::Martian));
            let (p6, l6) = MARTIAN_V6[i % MARTIAN_V6.len()];
            let m6 = if l6 == 128 { u128::MAX } else { !(u128::MAX >> u32::from(l6)) };
            let a6 = IpAddr::V6(Ipv6Addr::from((u128::from(p6) & m6) | (y & !m6)));
            prop_assert_eq!(lab_space().check(a6), Err(Refusal::Martian));
        }

        /// Private and global unicast IPv4 sources outside the space are accepted.
        #[test]
        fn unicast_v4_outside_space_accepted(x in any::<u32>()) {
            let a = Ipv4Addr::from(x);
            let o = a.octets();
            prop_assume!(!(o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 169 && o[1] == 254)));
            prop_assume!(!(o[0] == 10 && (o[1] == 98 || o[1] == 99)));
            prop_assert_eq!(lab_space().check(IpAddr::V4(a)), Ok(()));
        }

        /// Global unicast and unique-local IPv6 sources outside the space are accepted.
        #[test]
        fn unicast_v6_outside_space_accepted(y in any::<u128>(), ula in any::<bool>()) {
            // 2000::/3 or fc00::/7.
            let a = if ula {
                (0xfc00u128 << 112) | (y >> 7)
            } else {
                (0x2000u128 << 112) | (y >> 3)
            };
            let a = Ipv6Addr::from(a);
            prop_assume!(!(a.segments()[0] == 0xfd98 || a.segments()[0] == 0xfd99));
            prop_assert_eq!(lab_space().check(IpAddr::V6(a)), Ok(()));
        }

        /// The space's integer masks and the martian check agree with prefix-by-prefix matching on `IpAddr`s.
        #[test]
        fn masks_agree_with_prefix_match(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128), 0..6),
            a4 in any::<u32>(),
            a6 in any::<u128>(),
            near in any::<bool>(),
        ) {
            let mut ps = Vec::new();
            for &(n4, l4, n6, l6) in &nets {
                ps.push(IpPrefix::new(IpAddr::V4(Ipv4Addr::from(n4)), l4).unwrap());
                ps.push(IpPrefix::new(IpAddr::V6(Ipv6Addr::from(n6)), l6).unwrap());
            }
            let space = OverlaySpace::new(ps.clone());
            // Half the time, an address next to a prefix of the space (so that both answers occur).
            let (a4, a6) = match nets.first() {
                Some(&(n4, _, n6, _)) if near => (n4 ^ (a4 & 0xff), n6 ^ (a6 & 0xffff)),
                _ => (a4, a6),
            };
            for a in [IpAddr::V4(Ipv4Addr::from(a4)), IpAddr::V6(Ipv6Addr::from(a6))] {
                prop_assert_eq!(space.contains(a), ps.iter().any(|p| p.contains(a)));
                let slow = match a {
                    IpAddr::V4(_) => MARTIAN_V4
                        .iter()
                        .any(|(p, l)| crate::policy::prefix_match(IpAddr::V4(*p), *l, a)),
                    IpAddr::V6(_) => MARTIAN_V6
                        .iter()
                        .any(|(p, l)| crate::policy::prefix_match(IpAddr::V6(*p), *l, a)),
                };
                prop_assert_eq!(is_martian(a), slow);
            }
        }

        /// `contains` agrees with a bit-by-bit comparison of the first `len` bits.
        #[test]
        fn contains_is_prefix_match(p in any::<u32>(), a in any::<u32>(), len in 0u8..=32) {
            let pre = IpPrefix::new(IpAddr::V4(Ipv4Addr::from(p)), len).unwrap();
            let same = (0..u32::from(len)).all(|b| (p >> (31 - b)) & 1 == (a >> (31 - b)) & 1);
            prop_assert_eq!(pre.contains(IpAddr::V4(Ipv4Addr::from(a))), same);
        }
    }
}
