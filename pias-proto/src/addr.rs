//! Identities that every layer shares: proxies, IP protocols, transport addresses and flows.
//!
//! A PIAS *group* is a whole transport address (IP, port, protocol), not an IP address: thousands of groups
//! share one anycast address. [`TransportAddr`] is that identity, and [`FlowKey`] is the 5-tuple the NAT and
//! the per-flow hashes key on.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Result, WireError};

/// A proxy's identity in the overlay, assigned by the operator like a router id.
///
/// `0` is reserved: it means "no proxy" on the wire (for example a target message, which has no sender proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProxyId(pub u32);

impl ProxyId {
    /// The reserved "no proxy" value.
    pub const NONE: ProxyId = ProxyId(0);

    /// Whether this is a real proxy id (not [`ProxyId::NONE`]).
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for ProxyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The IP protocol numbers PIAS handles (IANA "Assigned Internet Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Udp,
    Icmpv6,
    /// Any other protocol number: carried and counted, never NATed.
    Other(u8),
}

impl IpProtocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;

    /// The protocol's number.
    pub fn number(self) -> u8 {
        match self {
            IpProtocol::Icmp => Self::ICMP,
            IpProtocol::Tcp => Self::TCP,
            IpProtocol::Udp => Self::UDP,
            IpProtocol::Icmpv6 => Self::ICMPV6,
            IpProtocol::Other(n) => n,
        }
    }

    /// Whether this protocol has 16-bit ports (and so can name a group).
    pub fn has_ports(self) -> bool {
        matches!(self, IpProtocol::Tcp | IpProtocol::Udp)
    }
}

impl From<u8> for IpProtocol {
    fn from(n: u8) -> Self {
        match n {
            Self::ICMP => IpProtocol::Icmp,
            Self::TCP => IpProtocol::Tcp,
            Self::UDP => IpProtocol::Udp,
            Self::ICMPV6 => IpProtocol::Icmpv6,
            n => IpProtocol::Other(n),
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("icmp"),
            IpProtocol::Tcp => f.write_str("tcp"),
            IpProtocol::Udp => f.write_str("udp"),
            IpProtocol::Icmpv6 => f.write_str("icmpv6"),
            IpProtocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

/// A transport address: IP address, port and protocol. A PIAS group is named by one.
///
/// `Hash` feeds the 20-byte wire encoding to the hasher in one write: group lookups are on every packet's
/// path, and one write of a fixed buffer is several times cheaper than hashing field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TransportAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: IpProtocol,
}

impl TransportAddr {
    /// Bytes of the wire encoding (SPEC.md §4.2): family, protocol, port, 16 address bytes.
    pub const WIRE_LEN: usize = 20;

    pub fn new(ip: IpAddr, port: u16, proto: IpProtocol) -> Self {
        TransportAddr { ip, port, proto }
    }

    /// Writes the 20-byte wire encoding into `out[..20]`.
    ///
    /// IPv4 addresses occupy the first four address bytes and the other twelve are zero, so every
    /// address has exactly one encoding.
    pub fn write(&self, out: &mut [u8; Self::WIRE_LEN]) {
        *out = [0; Self::WIRE_LEN];
        out[1] = self.proto.number();
        out[2..4].copy_from_slice(&self.port.to_be_bytes());
        match self.ip {
            IpAddr::V4(a) => {
                out[0] = 4;
                out[4..8].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out[0] = 6;
                out[4..20].copy_from_slice(&a.octets());
            }
        }
    }

    /// The wire encoding as an array (also the input of every keyed hash over a group).
    pub fn to_bytes(&self) -> [u8; Self::WIRE_LEN] {
        let mut b = [0; Self::WIRE_LEN];
        self.write(&mut b);
        b
    }

    /// Parses the 20-byte wire encoding, rejecting non-canonical forms.
    pub fn parse(b: &[u8]) -> Result<Self> {
        crate::error::need("transport address", b, Self::WIRE_LEN)?;
        let proto = IpProtocol::from(b[1]);
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = match b[0] {
            4 => {
                if b[8..20].iter().any(|&x| x != 0) {
                    return Err(WireError::Malformed {
                        what: "transport address",
                        reason: "IPv4 address with non-zero padding",
                    });
                }
                IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7]))
            }
            6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[4..20]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            v => {
                return Err(WireError::Unsupported {
                    what: "transport address family",
                    value: v.into(),
                });
            }
        };
        Ok(TransportAddr { ip, port, proto })
    }
}

impl core::hash::Hash for TransportAddr {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.to_bytes());
    }
}

impl fmt::Display for TransportAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{}:{}/{}", a, self.port, self.proto),
            IpAddr::V6(a) => write!(f, "[{}]:{}/{}", a, self.port, self.proto),
        }
    }
}

/// A flow: the 5-tuple of a packet as it travels in one direction.
///
/// For ICMP echo the identifier stands in for both ports, as NAT (RFC 5508) treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub proto: IpProtocol,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

impl FlowKey {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            src_port: self.dst_port,
            dst: self.src,
            dst_port: self.src_port,
        }
    }

    /// The destination transport address (the group, for a client's packet).
    pub fn dst_ta(&self) -> TransportAddr {
        TransportAddr {
            ip: self.dst,
            port: self.dst_port,
            proto: self.proto,
        }
    }

    /// The source transport address.
    pub fn src_ta(&self) -> TransportAddr {
        TransportAddr {
            ip: self.src,
            port: self.src_port,
            proto: self.proto,
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.proto, self.src, self.src_port, self.dst, self.dst_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        ]
    }

    proptest! {
        #[test]
        fn transport_addr_round_trips(ip in any_ip(), port: u16, proto: u8) {
            let ta = TransportAddr::new(ip, port, IpProtocol::from(proto));
            let b = ta.to_bytes();
            prop_assert_eq!(TransportAddr::parse(&b).unwrap(), ta);
        }

        #[test]
        fn transport_addr_parse_is_canonical(b in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(ta) = TransportAddr::parse(&b) {
                prop_assert_eq!(&ta.to_bytes()[..], &b[..20]);
            }
        }
    }

    #[test]
    fn known_bytes() {
        let ta = TransportAddr::new("192.0.2.53".parse().unwrap(), 53, IpProtocol::Udp);
        assert_eq!(
            ta.to_bytes(),
            [4, 17, 0, 53, 192, 0, 2, 53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(ta.to_string(), "192.0.2.53:53/udp");
        assert!(TransportAddr::parse(&[5; 20]).is_err());
        assert!(TransportAddr::parse(&[4; 19]).is_err());
    }
}
