//! Sealing outgoing control messages: framing, sequence number and MAC in one place.
//!
//! Every sub-machine of a proxy (membership, RAP, JAP, IAP) writes its control messages through the proxy's
//! one [`Sealer`], so sequence numbers are strictly increasing per sender across all of them, as the
//! receivers' replay windows require (SPEC.md §8.2). The sealer also opens what others sent: the MAC is
//! bound to the receiver (VNI and overlay address) and the sender's timestamp must be fresh, so it is the
//! one place that knows both sides of that rule.

use core::net::SocketAddr;

use pias_proto::ProxyId;
use pias_proto::auth::MacKey;
use pias_proto::control::{Binding, ControlHeader, ControlPacket, Message};

use crate::replay::{Freshness, SeqCounter, Stale};
use crate::time::Instant;

/// Why [`Sealer::open`] refused a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The tag does not verify for this receiver (forged, damaged, or sealed for another proxy or VNI).
    BadMac,
    /// The timestamp is outside the skew window or before this proxy started.
    Stale(Stale),
}

/// Seals proxy-to-proxy control messages into Geneve control frames.
#[derive(Debug, Clone)]
pub struct Sealer {
    id: ProxyId,
    vni: u32,
    key: MacKey,
    seq: SeqCounter,
    clock: Freshness,
}

impl Sealer {
    /// The sealer of proxy `id`, stamping and checking times with `clock`.
    pub fn new(id: ProxyId, vni: u32, key: MacKey, incarnation: u32, clock: Freshness) -> Self {
        Sealer {
            id,
            vni,
            key,
            seq: SeqCounter::new(incarnation),
            clock,
        }
    }

    /// Writes `msg`, for the proxy at overlay address `to`, as a Geneve control frame into `out`; returns
    /// its length. A sequence number is used only when the frame was written (emit, then commit).
    pub fn seal(&mut self, now: Instant, to: SocketAddr, msg: &Message<'_>, out: &mut [u8]) -> Option<usize> {
        self.seal_seq(now, to, msg, out).map(|(n, _)| n)
    }

    /// Like [`Sealer::seal`], and also returns the sequence number used (what a ReportAck will name).
    pub fn seal_seq(
        &mut self,
        now: Instant,
        to: SocketAddr,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Option<(usize, u64)> {
        let mut probe = self.seq;
        let seq = probe.next_seq();
        let hdr = ControlHeader {
            sender: self.id,
            seq,
            time_ms: self.clock.wall_ms(now),
        };
        let n = msg.emit_frame(self.vni, to, hdr, &self.key, out).ok()?;
        self.seq = probe;
        Some((n, seq))
    }

    /// Authenticates a received control message for this proxy, listening at overlay address `me`, and
    /// checks its timestamp; returns its header. The caller checks the sequence number next (SPEC.md §8.2).
    pub fn open(
        &self,
        now: Instant,
        me: SocketAddr,
        cp: &ControlPacket<'_>,
    ) -> Result<ControlHeader, OpenError> {
        let bind = Binding::Overlay {
            vni: self.vni,
            receiver: me,
        };
        cp.verify(&self.key, bind).map_err(|_| OpenError::BadMac)?;
        let hdr = cp.header();
        self.clock.check(hdr.time_ms, now).map_err(OpenError::Stale)?;
        Ok(hdr)
    }

    /// The clock this sealer stamps with.
    pub fn clock(&self) -> &Freshness {
        &self.clock
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
