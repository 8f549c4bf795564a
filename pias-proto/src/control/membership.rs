//! Membership messages: liveness probes, proxy records, anti-entropy digests and joins.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::rd;
use crate::addr::ProxyId;
use crate::error::{Result, WireError, need, room};

/// A member's status as its record states it. Ordered by precedence at equal version (SPEC.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    Alive = 0,
    Suspect = 1,
    Down = 2,
    Left = 3,
}

impl MemberStatus {
    fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            0 => MemberStatus::Alive,
            1 => MemberStatus::Suspect,
            2 => MemberStatus::Down,
            3 => MemberStatus::Left,
            v => {
                return Err(WireError::Unsupported {
                    what: "member status",
                    value: v.into(),
                });
            }
        })
    }
}

/// One proxy's membership record (48 bytes on the wire).
///
/// ```text
///  0 id u32 | 4 incarnation u32 | 8 version u32 | 12 status u8 | 13 family u8 (4|6) | 14 port u16
/// 16 address (16 bytes; IPv4 in the first 4, rest zero) | 32 coordinate (16 bytes, SPEC.md §7.5)
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyRecord {
    pub id: ProxyId,
    /// Bumped when the proxy restarts; a new incarnation supersedes everything said about an older one.
    pub incarnation: u32,
    /// Bumped by the proxy for each change of its own record within one incarnation (and to refute a
    /// suspicion).
    pub version: u32,
    pub status: MemberStatus,
    /// The proxy's overlay (unicast) address and port.
    pub addr: SocketAddr,
    /// The proxy's network coordinate, opaque here (four big-endian f32: x0, x1, height, error).
    pub coord: [u8; 16],
}

impl ProxyRecord {
    pub const LEN: usize = 48;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("proxy record", b, Self::LEN)?;
        let id = ProxyId(rd::u32(b, 0));
        if !id.is_some() {
            return Err(WireError::Malformed {
                what: "proxy record",
                reason: "proxy id 0 is reserved",
            });
        }
        let port = rd::u16(b, 14);
        let ip = match b[13] {
            4 => {
                if b[20..32].iter().any(|&x| x != 0) {
                    return Err(WireError::Malformed {
                        what: "proxy record",
                        reason: "IPv4 address with padding",
                    });
                }
                IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19]))
            }
            6 => IpAddr::V6(Ipv6Addr::from(rd::arr::<16>(b, 16))),
            f => {
                return Err(WireError::Unsupported {
                    what: "proxy record address family",
                    value: f.into(),
                });
            }
        };
        Ok(ProxyRecord {
            id,
            incarnation: rd::u32(b, 4),
            version: rd::u32(b, 8),
            status: MemberStatus::from_u8(b[12])?,
            addr: SocketAddr::new(ip, port),
            coord: rd::arr::<16>(b, 32),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        let o = &mut out[..Self::LEN];
        o.fill(0);
        o[0..4].copy_from_slice(&self.id.0.to_be_bytes());
        o[4..8].copy_from_slice(&self.incarnation.to_be_bytes());
        o[8..12].copy_from_slice(&self.version.to_be_bytes());
        o[12] = self.status as u8;
        o[14..16].copy_from_slice(&self.addr.port().to_be_bytes());
        match self.addr.ip() {
            IpAddr::V4(a) => {
                o[13] = 4;
                o[16..20].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                o[13] = 6;
                o[16..32].copy_from_slice(&a.octets());
            }
        }
        o[32..48].copy_from_slice(&self.coord);
        Ok(())
    }

    /// The canonical 48 bytes (input of the anti-entropy record hash).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        // Cannot fail: the array is exactly LEN bytes.
        let _ = self.emit(&mut b);
        b
    }
}

/// Probe and ProbeAck: neighbour liveness, RTT samples and a cheap anti-entropy trigger (40 bytes).
///
/// ```text
/// 0 nonce u64 | 8 sender incarnation u32 | 12 sender version u32 | 16 table digest u64 | 24 coordinate (16)
/// ```
/// A ProbeAck echoes the probe's nonce; the prober measures the RTT on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub nonce: u64,
    pub incarnation: u32,
    pub version: u32,
    /// XOR of the hashes of every record in the sender's table (SPEC.md §7.4): equal digests mean equal
    /// tables, so anti-entropy only starts when they differ.
    pub digest: u64,
    pub coord: [u8; 16],
}

impl Probe {
    pub const LEN: usize = 40;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("probe", b, Self::LEN)?;
        Ok(Probe {
            nonce: rd::u64(b, 0),
            incarnation: rd::u32(b, 8),
            version: rd::u32(b, 12),
            digest: rd::u64(b, 16),
            coord: rd::arr::<16>(b, 24),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        out[0..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..12].copy_from_slice(&self.incarnation.to_be_bytes());
        out[12..16].copy_from_slice(&self.version.to_be_bytes());
        out[16..24].copy_from_slice(&self.digest.to_be_bytes());
        out[24..40].copy_from_slice(&self.coord);
        Ok(())
    }
}

/// A list of proxy records: flooding, anti-entropy answers and the bulk transfer to a joining proxy.
///
/// ```text
/// 0 count u16 | 2 reserved u16 | 4 count × 48-byte records
/// ```
/// Every record is validated when the message is parsed, so iteration cannot fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Records<'a> {
    /// Records as received (validated), `count × 48` bytes.
    Wire(&'a [u8]),
    /// Records to send.
    Slice(&'a [ProxyRecord]),
}

impl<'a> Records<'a> {
    /// Most records one message can carry within [`super::MAX_BODY_LEN`].
    pub const MAX: usize = (super::MAX_BODY_LEN - 4) / ProxyRecord::LEN;

    pub fn parse(b: &'a [u8]) -> Result<Self> {
        need("records", b, 4)?;
        let count = usize::from(rd::u16(b, 0));
        let end = 4 + count * ProxyRecord::LEN;
        need("records list", b, end)?;
        let list = &b[4..end];
        for r in list.chunks_exact(ProxyRecord::LEN) {
            ProxyRecord::parse(r)?;
        }
        Ok(Records::Wire(list))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Records::Wire(b) => b.len() / ProxyRecord::LEN,
            Records::Slice(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = ProxyRecord> + 'a {
        let (wire, slice): (&'a [u8], &'a [ProxyRecord]) = match *self {
            Records::Wire(b) => (b, &[]),
            Records::Slice(s) => (&[], s),
        };
        wire.chunks_exact(ProxyRecord::LEN)
            .filter_map(|c| ProxyRecord::parse(c).ok())
            .chain(slice.iter().copied())
    }

    pub(super) fn body_len(&self) -> usize {
        4 + self.len() * ProxyRecord::LEN
    }

    pub(super) fn emit(&self, out: &mut [u8]) -> Result<()> {
        let n = self.len();
        if n > usize::from(u16::MAX) {
            return Err(WireError::BadLength {
                what: "records",
                len: n,
            });
        }
        room(out, self.body_len())?;
        out[0..2].copy_from_slice(&(n as u16).to_be_bytes());
        out[2..4].fill(0);
        match self {
            Records::Wire(b) => out[4..4 + b.len()].copy_from_slice(b),
            Records::Slice(s) => {
                for (i, r) in s.iter().enumerate() {
                    r.emit(&mut out[4 + i * ProxyRecord::LEN..])?;
                }
            }
        }
        Ok(())
    }
}

/// Children per node of the anti-entropy digest tree.
pub const DIGEST_FANOUT: usize = 16;

/// One node of the anti-entropy digest tree, with its 16 children (168 bytes).
///
/// ```text
/// 0 depth u8 | 1 reserved (3) | 4 prefix u32 | 8 16 × child hash u64 | 136 16 × child count u16
/// ```
/// The tree is over the 32-bit bucket key of each record (SPEC.md §7.4): the node at `depth` d with
/// `prefix` p covers keys whose top 4·d bits equal p; child i covers those whose next 4 bits equal i.
/// A child's hash is the XOR of its records' hashes and its count the number of records (saturating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub depth: u8,
    pub prefix: u32,
    pub hashes: [u64; DIGEST_FANOUT],
    pub counts: [u16; DIGEST_FANOUT],
}

impl Digest {
    pub const LEN: usize = 8 + DIGEST_FANOUT * 8 + DIGEST_FANOUT * 2;
    /// Deepest node: 8 levels of 4 bits cover the 32-bit key.
    pub const MAX_DEPTH: u8 = 7;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("digest", b, Self::LEN)?;
        let depth = b[0];
        check_node(depth, rd::u32(b, 4))?;
        let mut hashes = [0u64; DIGEST_FANOUT];
        let mut counts = [0u16; DIGEST_FANOUT];
        for i in 0..DIGEST_FANOUT {
            hashes[i] = rd::u64(b, 8 + 8 * i);
            counts[i] = rd::u16(b, 136 + 2 * i);
        }
        Ok(Digest {
            depth,
            prefix: rd::u32(b, 4),
            hashes,
            counts,
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        check_node(self.depth, self.prefix)?;
        out[0] = self.depth;
        out[1..4].fill(0);
        out[4..8].copy_from_slice(&self.prefix.to_be_bytes());
        for i in 0..DIGEST_FANOUT {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&self.hashes[i].to_be_bytes());
            out[136 + 2 * i..138 + 2 * i].copy_from_slice(&self.counts[i].to_be_bytes());
        }
        Ok(())
    }
}

/// A request for every record under one digest-tree node (8 bytes): `0 depth u8 | 1 reserved (3) | 4 prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pull {
    pub depth: u8,
    pub prefix: u32,
}

impl Pull {
    pub const LEN: usize = 8;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("pull", b, Self::LEN)?;
        check_node(b[0], rd::u32(b, 4))?;
        Ok(Pull {
            depth: b[0],
            prefix: rd::u32(b, 4),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        check_node(self.depth, self.prefix)?;
        out[0] = self.depth;
        out[1..4].fill(0);
        out[4..8].copy_from_slice(&self.prefix.to_be_bytes());
        Ok(())
    }
}

/// A node at depth d has a prefix of 4·d bits; anything wider is malformed.
fn check_node(depth: u8, prefix: u32) -> Result<()> {
    if depth > Digest::MAX_DEPTH {
        return Err(WireError::Malformed {
            what: "digest node",
            reason: "depth above 7",
        });
    }
    if depth < 8 && u64::from(prefix) >= 1u64 << (4 * u32::from(depth)) {
        return Err(WireError::Malformed {
            what: "digest node",
            reason: "prefix wider than 4 bits per level",
        });
    }
    Ok(())
}
