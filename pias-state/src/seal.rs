//! Sealing outgoing control messages: framing, sequence number and MAC in one place.
//!
//! Every sub-machine of a proxy (membership, RAP, JAP, IAP) writes its control messages through the proxy's
//! one [`Sealer`], so sequence numbers are strictly increasing per sender across all of them, as the
//! receivers' replay windows require (SPEC.md §8.2).

use core::net::SocketAddr;

use pias_proto::ProxyId;
use pias_proto::auth::MacKey;
use pias_proto::control::{ControlHeader, Message};

use crate::replay::SeqCounter;

/// Seals proxy-to-proxy control messages into Geneve control frames.
#[derive(Debug, Clone)]
pub struct Sealer {
    id: ProxyId,
    vni: u32,
    key: MacKey,
    seq: SeqCounter,
}

impl Sealer {
    pub fn new(id: ProxyId, vni: u32, key: MacKey, incarnation: u32) -> Self {
        Sealer {
            id,
            vni,
            key,
            seq: SeqCounter::new(incarnation),
        }
    }

    /// Writes `msg` as a Geneve control frame into `out`; returns its length. A sequence number is used only
    /// when the frame was written (emit, then commit).
    pub fn seal(&mut self, msg: &Message<'_>, out: &mut [u8]) -> Option<usize> {
        self.seal_seq(msg, out).map(|(n, _)| n)
    }

    /// Like [`Sealer::seal`], and also returns the sequence number used (what a ReportAck will name).
    pub fn seal_seq(&mut self, msg: &Message<'_>, out: &mut [u8]) -> Option<(usize, u64)> {
        let mut probe = self.seq;
        let seq = probe.next_seq();
        let n = msg
            .emit_frame(self.vni, ControlHeader { sender: self.id, seq }, &self.key, out)
            .ok()?;
        self.seq = probe;
        Some((n, seq))
    }

    /// The overlay MAC key (for verifying received messages).
    pub fn key(&self) -> &MacKey {
        &self.key
    }

    /// The overlay id.
    pub fn vni(&self) -> u32 {
        self.vni
    }

    /// This proxy's id.
    pub fn id(&self) -> ProxyId {
        self.id
    }
}

/// Where an output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// A UDP datagram from the overlay socket to another proxy's overlay address.
    Overlay(SocketAddr),
    /// An IP packet written to the host side (the TUN): towards a client, a target, or a target agent.
    Host,
}

/// One output written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dest: Dest,
    /// Bytes written at the start of the buffer.
    pub len: usize,
}
