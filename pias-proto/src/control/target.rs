//! Target-agent messages: registration with a cookie exchange, refresh, deregistration and acks.
//!
//! A target (or a surrogate on its behalf) sends these as the UDP payload of a datagram to the registration
//! address (an anycast address, port [`super::REGISTRATION_PORT`]), so the nearest proxy — its JAP — gets
//! them. They carry sender id 0 and are authenticated with the group's registration key.
//!
//! Registration takes two round trips: Register (cookie all zero) → Challenge (cookie) → Register (cookie)
//! → RegisterAck. The cookie is a MAC of the target's source address under a secret that the JAP rotates,
//! so the JAP keeps no state for an unverified registration, a spoofed source never gets registered, and a
//! replayed Register carries a stale cookie (SPEC.md §10.2).

use super::rd;
use crate::addr::{ProxyId, TransportAddr};
use crate::error::{Result, WireError, need, room};

const TA: usize = TransportAddr::WIRE_LEN;
/// Bytes of a registration cookie.
pub const COOKIE_LEN: usize = 16;

/// How a JAP delivers a group's packets to this target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// Rewrite addresses (the target sees the JAP's NAT pool address as the client).
    Nat = 0,
    /// Encapsulate in a Geneve data frame; the target de-encapsulates and sees the client's address.
    Tunnel = 1,
}

fn write_ta(ta: &TransportAddr, out: &mut [u8]) {
    let mut b = [0u8; TA];
    ta.write(&mut b);
    out[..TA].copy_from_slice(&b);
}

/// A registration (60 bytes).
///
/// ```text
/// 0 group (20) | 20 service (20) | 40 mode u8 | 41 reserved u8 | 42 weight u16 | 44 cookie (16)
/// ```
/// `service` is where the target listens (its protocol must be the group's). `weight` (1–65535, 0 is read
/// as 1) scales the target's share of new flows at its JAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    pub group: TransportAddr,
    pub service: TransportAddr,
    pub mode: DeliveryMode,
    pub weight: u16,
    pub cookie: [u8; COOKIE_LEN],
}

impl Register {
    pub const LEN: usize = 60;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("register", b, Self::LEN)?;
        let group = TransportAddr::parse(&b[..TA])?;
        let service = TransportAddr::parse(&b[TA..2 * TA])?;
        if group.proto != service.proto {
            return Err(WireError::Malformed {
                what: "register",
                reason: "service protocol differs from group's",
            });
        }
        let mode = match b[40] {
            0 => DeliveryMode::Nat,
            1 => DeliveryMode::Tunnel,
            m => {
                return Err(WireError::Unsupported {
                    what: "delivery mode",
                    value: m.into(),
                });
            }
        };
        if mode == DeliveryMode::Nat && group.ip.is_ipv4() != service.ip.is_ipv4() {
            return Err(WireError::Malformed {
                what: "register",
                reason: "NAT mode needs the group's address family",
            });
        }
        Ok(Register {
            group,
            service,
            mode,
            weight: rd::u16(b, 42).max(1),
            cookie: rd::arr::<COOKIE_LEN>(b, 44),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        write_ta(&self.group, out);
        write_ta(&self.service, &mut out[TA..]);
        out[40] = self.mode as u8;
        out[41] = 0;
        out[42..44].copy_from_slice(&self.weight.max(1).to_be_bytes());
        out[44..60].copy_from_slice(&self.cookie);
        Ok(())
    }
}

/// The JAP's answer to a Register without a valid cookie (36 bytes: `0 group | 20 cookie`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub group: TransportAddr,
    pub cookie: [u8; COOKIE_LEN],
}

impl Challenge {
    pub const LEN: usize = TA + COOKIE_LEN;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("challenge", b, Self::LEN)?;
        Ok(Challenge {
            group: TransportAddr::parse(&b[..TA])?,
            cookie: rd::arr::<COOKIE_LEN>(b, TA),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        write_ta(&self.group, out);
        out[TA..TA + COOKIE_LEN].copy_from_slice(&self.cookie);
        Ok(())
    }
}

/// Outcome carried by a [`RegisterAck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegAckStatus {
    /// Registered (or refreshed); keep refreshing every `refresh_ms`.
    Ok = 0,
    /// The JAP has no room for another registration; try again later.
    Full = 1,
    /// The registration is gone (answer to a Deregister, or a Refresh the JAP does not know: register again).
    Gone = 2,
    /// The JAP is draining; register again through the anycast address (another proxy will answer).
    Draining = 3,
}

/// A JAP's acknowledgement of Register, Refresh or Deregister (56 bytes).
///
/// ```text
/// 0 group (20) | 20 service (20) | 40 status u8 | 41 reserved (3) | 44 JAP id u32 | 48 refresh_ms u32
/// 52 hold_ms u32
/// ```
/// `hold_ms`: the JAP declares the target dead when no refresh arrived for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterAck {
    pub group: TransportAddr,
    pub service: TransportAddr,
    pub status: RegAckStatus,
    pub jap: ProxyId,
    pub refresh_ms: u32,
    pub hold_ms: u32,
}

impl RegisterAck {
    pub const LEN: usize = 56;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("register ack", b, Self::LEN)?;
        let status = match b[40] {
            0 => RegAckStatus::Ok,
            1 => RegAckStatus::Full,
            2 => RegAckStatus::Gone,
            3 => RegAckStatus::Draining,
            s => {
                return Err(WireError::Unsupported {
                    what: "register ack status",
                    value: s.into(),
                });
            }
        };
        Ok(RegisterAck {
            group: TransportAddr::parse(&b[..TA])?,
            service: TransportAddr::parse(&b[TA..2 * TA])?,
            status,
            jap: ProxyId(rd::u32(b, 44)),
            refresh_ms: rd::u32(b, 48),
            hold_ms: rd::u32(b, 52),
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        write_ta(&self.group, out);
        write_ta(&self.service, &mut out[TA..]);
        out[40] = self.status as u8;
        out[41..44].fill(0);
        out[44..48].copy_from_slice(&self.jap.0.to_be_bytes());
        out[48..52].copy_from_slice(&self.refresh_ms.to_be_bytes());
        out[52..56].copy_from_slice(&self.hold_ms.to_be_bytes());
        Ok(())
    }
}

/// Refresh or Deregister (56 bytes: `0 group | 20 service | 40 reserved (16)`).
///
/// The 16 reserved bytes make the request as long as the [`RegisterAck`] it draws, so a proxy never
/// answers with more bytes than it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetOp {
    pub group: TransportAddr,
    pub service: TransportAddr,
}

impl TargetOp {
    pub const LEN: usize = 56;

    pub fn parse(b: &[u8]) -> Result<Self> {
        need("refresh/deregister", b, Self::LEN)?;
        Ok(TargetOp {
            group: TransportAddr::parse(&b[..TA])?,
            service: TransportAddr::parse(&b[TA..2 * TA])?,
        })
    }

    pub fn emit(&self, out: &mut [u8]) -> Result<()> {
        room(out, Self::LEN)?;
        write_ta(&self.group, out);
        write_ta(&self.service, &mut out[TA..]);
        out[40..56].fill(0);
        Ok(())
    }
}
