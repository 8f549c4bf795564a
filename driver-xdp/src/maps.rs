//! The maps' keys and values, byte for byte as `bpf/structs.h` declares them, and their encodings from the
//! core's types.
//!
//! Fields marked BE hold network-order bytes; the Rust types keep them as `[u8; 2]` so no one converts twice.

use core::net::{IpAddr, SocketAddr};

use pias_proto::{FlowKey, TransportAddr};

/// JAPs in a group entry.
pub const MAX_JAPS: usize = 16;
/// Slots of a slot table (SPEC.md §13.3); the array is padded to 256.
pub const SLOTS: usize = 251;

/// `pias_cfg.flags`: the program serves hits (off: everything passes).
pub const CFG_ENABLED: u8 = 0x01;
/// `pias_cfg.flags`: route hits with `bpf_fib_lookup`; off, a hit is `XDP_TX` with the received MACs.
pub const CFG_FIB: u8 = 0x02;
/// `pias_cfg.flags`: TC hook on veths only: a frame sent back out of its interface goes straight into the
/// peer's receive path (`bpf_redirect_peer`) instead of through the veth's transmit.
pub const CFG_PEER: u8 = 0x04;
/// `pias_jap.flags`: the JAP is this proxy (the slow path delivers).
pub const JAP_LOCAL: u8 = 0x01;
/// `pias_nat.flags`: a TCP binding the core saw established.
pub const NAT_TCP_FAST: u8 = 0x01;
/// `pias_nat.flags`: a tunnel-mode target; `dst`:`dport` is its address (IPv4) and the overlay port.
pub const NAT_TUNNEL: u8 = 0x02;

fn ip16(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 6),
    }
}

/// `struct pias_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub sip_k0: u64,
    pub sip_k1: u64,
    pub vni: u32,
    pub self_id: u32,
    pub overlay_addr: [u8; 16],
    pub overlay_port: [u8; 2],
    pub overlay_family: u8,
    pub flags: u8,
    pub inner_mtu: u16,
    pub pad: u16,
    /// The epoch byte of `tag`.
    pub tag_epoch: u8,
    /// The epoch byte of `prev`.
    pub prev_epoch: u8,
    pub has_prev: u8,
    pub pad2: [u8; 5],
    /// The data tag key frames are sent (and accepted) under (SPEC.md §8.1).
    pub tag: TagKey,
    /// The previous epoch's data tag key, accepted too when `has_prev` is 1.
    pub prev: TagKey,
}

/// `struct pias_tag_prefix`: SipHash-1-3's state after a data frame's first word and after its first two,
/// for one inner family (see [`TagKey`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagPrefix {
    /// The frame's first 8 bytes (Geneve header), little-endian as SipHash reads them.
    pub w0: u64,
    /// The next 8 (option header, flags 0, hops 2, the key's epoch, reserved).
    pub w1: u64,
    /// The state after `w0`.
    pub s1: [u64; 4],
    /// The state after `w0`, `w1`.
    pub s2: [u64; 4],
}

/// `struct pias_tag_key`: a data tag key as the program uses it (SPEC.md §4.1, §8.1). Every data frame of
/// one inner family and VNI starts with the same 8 bytes, and every frame an IAP encapsulates with the same
/// 16, so SipHash's state after them is computed here once, when the keys are loaded, and the program starts
/// from it: one SipRound fewer per word, the same tag. A frame whose first words differ starts from an
/// earlier state.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagKey {
    /// The state after keying.
    pub s0: [u64; 4],
    /// Inner IPv4, inner IPv6.
    pub fam: [TagPrefix; 2],
}

impl TagKey {
    /// The prepared form of `key`, sent with epoch byte `epoch` on overlay `vni`.
    pub fn new(key: &pias_proto::auth::SipKey, vni: u32, epoch: u8) -> TagKey {
        use pias_proto::tunnel::{DATA_HEADER_LEN, DataHeader, INITIAL_HOPS, TagState};
        let s0 = TagState::new(key);
        let fam = [4u8, 6].map(|version| {
            let mut h = [0u8; DATA_HEADER_LEN];
            DataHeader {
                vni,
                flags: 0,
                hops: INITIAL_HOPS,
                epoch,
                ingress: pias_proto::ProxyId(0),
            }
            .emit(version, &mut h)
            .expect("a whole header's room, IP version 4 or 6");
            let word = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[8 * i..8 * i + 8]);
                u64::from_le_bytes(b)
            };
            TagPrefix {
                w0: word(0),
                w1: word(1),
                s1: s0.after(&h[..8]).words(),
                s2: s0.after(&h[..16]).words(),
            }
        });
        TagKey { s0: s0.words(), fam }
    }
}

impl Config {
    /// The configuration of a proxy: its flow key, data tag keys, overlay id, id and overlay address.
    pub fn new(
        key: &pias_proto::auth::SipKey,
        data: &pias_proto::tunnel::DataKeys,
        vni: u32,
        id: pias_proto::ProxyId,
        overlay: SocketAddr,
        inner_mtu: u16,
        flags: u8,
    ) -> Config {
        let (addr, family) = ip16(overlay.ip());
        let prev = data.previous().copied();
        Config {
            tag: TagKey::new(data.current(), vni, data.wire_epoch()),
            prev: prev.map_or(TagKey::default(), |k| {
                TagKey::new(&k, vni, data.epoch().wrapping_sub(1) as u8)
            }),
            tag_epoch: data.wire_epoch(),
            prev_epoch: data.epoch().wrapping_sub(1) as u8,
            has_prev: u8::from(prev.is_some()),
            pad2: [0; 5],
            sip_k0: key.k0,
            sip_k1: key.k1,
            vni,
            self_id: id.0,
            overlay_addr: addr,
            overlay_port: overlay.port().to_be_bytes(),
            overlay_family: family,
            flags,
            inner_mtu,
            pad: 0,
        }
    }
}

impl Config {
    /// The configuration that makes the program act for `proxy`: its flow key, overlay id, id, overlay
    /// socket address and inner MTU.
    pub fn for_proxy(proxy: &pias_state::proxy::Proxy, flags: u8) -> Config {
        let c = proxy.config();
        Config::new(
            &c.master_key.flow_key(),
            &pias_proto::tunnel::DataKeys::new(&c.master_key, c.data_key_epoch),
            c.vni,
            proxy.id(),
            c.overlay_addr,
            u16::try_from(c.inner_mtu()).unwrap_or(u16::MAX),
            flags,
        )
    }
}

/// `struct pias_ta`: a group, in SPEC.md §3's 20-byte encoding.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ta(pub [u8; 20]);

impl From<&TransportAddr> for Ta {
    fn from(t: &TransportAddr) -> Ta {
        Ta(t.to_bytes())
    }
}

/// `struct pias_jap`: a JAP's overlay socket address.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jap {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    /// 4 or 6; 0 when the address is unknown (the slow path then handles its slots).
    pub family: u8,
    pub flags: u8,
}

impl Jap {
    /// A JAP at `addr`.
    pub fn at(addr: SocketAddr, local: bool) -> Jap {
        let (a, family) = ip16(addr.ip());
        Jap {
            addr: a,
            port: addr.port().to_be_bytes(),
            family,
            flags: if local { JAP_LOCAL } else { 0 },
        }
    }
}

/// `struct pias_group`: an IAP cache entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub deadline_ns: u64,
    pub last_used_ns: u64,
    pub packets: u64,
    pub n_japs: u8,
    pub pad: [u8; 7],
    pub japs: [Jap; MAX_JAPS],
    pub slots: [u8; 256],
}

impl Default for Group {
    fn default() -> Self {
        Group {
            deadline_ns: 0,
            last_used_ns: 0,
            packets: 0,
            n_japs: 0,
            pad: [0; 7],
            japs: [Jap::default(); MAX_JAPS],
            slots: [u8::MAX; 256],
        }
    }
}

/// `struct pias_flow`: a NAT key, the 5-tuple as received.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub family: u8,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub pad: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl From<&FlowKey> for Flow {
    fn from(f: &FlowKey) -> Flow {
        let (src, family) = ip16(f.src);
        let (dst, _) = ip16(f.dst);
        Flow {
            proto: f.proto.number(),
            family,
            sport: f.src_port.to_be_bytes(),
            dport: f.dst_port.to_be_bytes(),
            pad: 0,
            src,
            dst,
        }
    }
}

/// `struct pias_nat`: a NAT rewrite and its activity.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nat {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub flags: u8,
    pub pad: [u8; 3],
    pub last_used_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Nat {
    /// The rewrite that makes a packet look like `to` (its source and destination).
    pub fn to_flow(to: &FlowKey, flags: u8) -> Nat {
        let f = Flow::from(to);
        Nat {
            src: f.src,
            dst: f.dst,
            sport: f.sport,
            dport: f.dport,
            flags,
            ..Nat::default()
        }
    }
}

/// `pias_filter` value: the source is in the overlay's space (SPEC.md §8.5).
pub const FILTER_OVERLAY: u8 = 1;
/// `pias_filter` value: the source is martian (SPEC.md §8.5).
pub const FILTER_MARTIAN: u8 = 2;

/// The data of a `struct pias_filter_key` (after its prefix length): the family byte, then the address
/// (IPv4 in the first 4 bytes).
pub type FilterData = [u8; 17];

/// The `pias_filter` key of `addr/len`: the prefix length counts the family byte's 8 bits too, so an IPv4
/// prefix never matches an IPv6 address.
pub fn filter_key(addr: IpAddr, len: u8) -> aya::maps::lpm_trie::Key<FilterData> {
    let (a, family) = ip16(addr);
    let mut d = [0u8; 17];
    d[0] = family;
    d[1..].copy_from_slice(&a);
    aya::maps::lpm_trie::Key::new(8 + u32::from(len), d)
}

/// Every `pias_filter` entry for a proxy: the martian ranges and the overlay's space, as the core defines
/// them (`pias_state::filter`); the program refuses nothing else.
pub fn filter_entries(space: &pias_state::filter::OverlaySpace) -> Vec<(IpAddr, u8, u8)> {
    use pias_state::filter::{MARTIAN_V4, MARTIAN_V6};
    let mut v: Vec<(IpAddr, u8, u8)> = Vec::new();
    v.extend(
        MARTIAN_V4
            .iter()
            .map(|(a, l)| (IpAddr::V4(*a), *l, FILTER_MARTIAN)),
    );
    v.extend(
        MARTIAN_V6
            .iter()
            .map(|(a, l)| (IpAddr::V6(*a), *l, FILTER_MARTIAN)),
    );
    v.extend(
        space
            .prefixes()
            .iter()
            .map(|p| (p.network(), p.len, FILTER_OVERLAY)),
    );
    v
}

/// `struct pias_sockaddr`: a member's overlay socket address.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SockAddr {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub family: u8,
    pub pad: u8,
}

impl From<SocketAddr> for SockAddr {
    fn from(s: SocketAddr) -> SockAddr {
        let (addr, family) = ip16(s.ip());
        SockAddr {
            addr,
            port: s.port().to_be_bytes(),
            family,
            pad: 0,
        }
    }
}

// SAFETY: every type above is `repr(C)`, made only of integers and byte arrays, with no padding the
// compiler inserts (the layout test checks the sizes against structs.h), so any bit pattern is valid.
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for Ta {}
unsafe impl aya::Pod for Group {}
unsafe impl aya::Pod for Flow {}
unsafe impl aya::Pod for Nat {}
unsafe impl aya::Pod for SockAddr {}

/// The program's per-CPU counters, in `enum pias_counter` order.
pub const COUNTER_NAMES: [&str; 29] = [
    "xdp_iap_hit",
    "xdp_jap_forward_hit",
    "xdp_jap_reverse_hit",
    "xdp_pass_no_config",
    "xdp_pass_not_ip",
    "xdp_pass_truncated",
    "xdp_pass_ip_options",
    "xdp_pass_fragment",
    "xdp_pass_l4_other",
    "xdp_pass_group_miss",
    "xdp_pass_group_expired",
    "xdp_pass_local_jap",
    "xdp_pass_tcp_control",
    "xdp_pass_too_big",
    "xdp_pass_udp_no_checksum",
    "xdp_pass_jap_family",
    "xdp_pass_frame_other",
    "xdp_pass_stranger",
    "xdp_pass_nat_miss",
    "xdp_pass_tcp_not_fast",
    "xdp_pass_fib",
    "xdp_pass_adjust",
    "xdp_pass_partial_checksum",
    "xdp_pass_ttl",
    "xdp_jap_tunnel_hit",
    "xdp_pass_gso",
    "xdp_iap_local_hit",
    "xdp_pass_filtered",
    "xdp_drop_bad_tag",
];

/// Index of a counter by name, for tests.
pub fn counter(name: &str) -> usize {
    COUNTER_NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_structs_h() {
        assert_eq!(size_of::<Config>(), 440);
        assert_eq!(size_of::<Ta>(), 20);
        assert_eq!(size_of::<Jap>(), 20);
        assert_eq!(size_of::<Group>(), 608);
        assert_eq!(size_of::<Flow>(), 40);
        assert_eq!(size_of::<Nat>(), 64);
        assert_eq!(size_of::<SockAddr>(), 20);
    }
}
