//! The minimal TCP tracking a NAT needs: which flags were seen in which direction, and from that the timeout class.
//!
//! No sequence numbers are checked (like most NATs); the state only picks the idle timeout (RFC 5382, and
//! conntrack's short half-open timeout so that spoofed SYNs do not hold ports):
//!
//! | seen                                   | [`TcpState`]                 | timeout class        |
//! | -------------------------------------- | ---------------------------- | -------------------- |
//! | RST either way                         | `Reset`                      | `TcpClosed` (10 s)   |
//! | FIN both ways                          | `Closing`                    | `TcpTransitory` (240 s) |
//! | ACK both ways, FIN one way             | `FinForward` / `FinReverse`  | `TcpEstablished` (7440 s) |
//! | ACK both ways                          | `Established`                | `TcpEstablished`     |
//! | nothing from the target yet            | `HalfOpen`                   | `TcpHalfOpen` (30 s) |
//! | anything else (answered, not both ACKs)| `Opening`                    | `TcpTransitory`      |
//!
//! A SYN without ACK from the client on a `Reset` or `Closing` binding starts over (the client reuses the port
//! for a new connection): the tracked flags are cleared before the SYN is recorded.

use super::{Direction, TimeoutClass};

/// TCP header flags, with the bit values of the TCP header's flags byte so a driver can pass that byte as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// SYN and ACK, the server's answer to a SYN.
    pub const SYN_ACK: TcpFlags = TcpFlags(0x12);
    /// FIN and ACK, the usual closing segment.
    pub const FIN_ACK: TcpFlags = TcpFlags(0x11);

    /// Whether every flag of `other` is set in `self`.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// What the NAT knows of a TCP connection, derived from the flags it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// Nothing seen from the target yet: a SYN sent (perhaps from a spoofed source), or a binding created by a
    /// mid-flow packet.
    HalfOpen,
    /// The target answered, but not yet ACKs both ways.
    Opening,
    /// ACKs seen both ways.
    Established,
    /// Established, and the client sent FIN.
    FinForward,
    /// Established, and the target sent FIN.
    FinReverse,
    /// FIN seen both ways.
    Closing,
    /// RST seen.
    Reset,
}

const SYN_F: u8 = 1;
const SYN_R: u8 = 2;
const ACK_F: u8 = 4;
const ACK_R: u8 = 8;
const FIN_F: u8 = 16;
const FIN_R: u8 = 32;
const RST: u8 = 64;

/// The flags seen so far, one bit per (flag, direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Seen(pub(crate) u8);

impl Seen {
    /// Records one segment's flags.
    pub(crate) fn observe(self, flags: TcpFlags, dir: Direction) -> Seen {
        let mut s = self.0;
        let fwd = dir == Direction::Forward;
        if flags.contains(TcpFlags::RST) {
            return Seen(s | RST);
        }
        let syn = flags.contains(TcpFlags::SYN);
        let ack = flags.contains(TcpFlags::ACK);
        if syn && !ack && fwd && (s & RST != 0 || s & (FIN_F | FIN_R) == FIN_F | FIN_R) {
            s = 0;
        }
        if syn {
            s |= if fwd { SYN_F } else { SYN_R };
        }
        if ack {
            s |= if fwd { ACK_F } else { ACK_R };
        }
        if flags.contains(TcpFlags::FIN) {
            s |= if fwd { FIN_F } else { FIN_R };
        }
        Seen(s)
    }

    /// The state these flags mean.
    pub(crate) fn state(self) -> TcpState {
        let s = self.0;
        if s & RST != 0 {
            TcpState::Reset
        } else if s & (FIN_F | FIN_R) == FIN_F | FIN_R {
            TcpState::Closing
        } else if s & (ACK_F | ACK_R) == ACK_F | ACK_R {
            if s & FIN_F != 0 {
                TcpState::FinForward
            } else if s & FIN_R != 0 {
                TcpState::FinReverse
            } else {
                TcpState::Established
            }
        } else if s & (SYN_R | ACK_R | FIN_R) == 0 {
            TcpState::HalfOpen
        } else {
            TcpState::Opening
        }
    }
}

impl TcpState {
    /// The timeout class of a binding in this state.
    pub fn timeout_class(self) -> TimeoutClass {
        match self {
            TcpState::HalfOpen => TimeoutClass::TcpHalfOpen,
            TcpState::Opening | TcpState::Closing => TimeoutClass::TcpTransitory,
            TcpState::Established | TcpState::FinForward | TcpState::FinReverse => {
                TimeoutClass::TcpEstablished
            }
            TcpState::Reset => TimeoutClass::TcpClosed,
        }
    }
}
