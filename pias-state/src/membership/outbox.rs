//! The outbox: probes, acks, joins and direct record answers queued for sending, and how each is
//! sealed into a frame.

use core::net::SocketAddr;

use pias_proto::control::{Message, ProxyRecord, Records};

use super::Membership;
use crate::seal::{Dest, Sealer, Transmit};
use crate::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Out {
    /// A probe to a member (address from the table at send time).
    Probe {
        to: u32,
        nonce: u64,
    },
    Ack {
        addr: SocketAddr,
        nonce: u64,
    },
    Join {
        addr: SocketAddr,
    },
    /// The current records of `ids` (0 = none), sent directly to `addr`.
    Tell {
        addr: SocketAddr,
        ids: [u32; 2],
    },
}

pub(super) enum Step {
    Sent(Transmit),
    Skip,
    Blocked,
}

impl Membership {
    pub(super) fn push_out(&mut self, o: Out) {
        if self.out.len() >= self.cfg.out_queue {
            self.counters.out_dropped += 1;
        } else {
            self.out.push_back(o);
        }
    }

    pub(super) fn sent(&mut self, t: Transmit) -> Transmit {
        self.counters.frames_sent += 1;
        t
    }

    pub(super) fn emit_out(
        &mut self,
        now: Instant,
        item: Out,
        sealer: &mut Sealer,
        buf: &mut [u8],
        scratch: &mut [ProxyRecord; Records::MAX],
    ) -> Step {
        match item {
            Out::Probe { to, nonce } => {
                let Some(addr) = self.table.get(to).map(|m| m.record.addr) else {
                    return Step::Skip;
                };
                let msg = Message::Probe(self.probe_body(nonce));
                let Some(len) = sealer.seal(now, addr, &msg, buf) else {
                    return Step::Blocked;
                };
                if let Some(p) = self.peers.get_mut(&to)
                    && let Some(slot) = p.probes.iter_mut().find(|(n, _)| *n == nonce)
                {
                    slot.1 = Some(now);
                }
                self.counters.probes_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            Out::Ack { addr, nonce } => {
                let msg = Message::ProbeAck(self.probe_body(nonce));
                let Some(len) = sealer.seal(now, addr, &msg, buf) else {
                    return Step::Blocked;
                };
                self.counters.acks_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            Out::Join { addr } => {
                let msg = Message::Join(self.me);
                let Some(len) = sealer.seal(now, addr, &msg, buf) else {
                    return Step::Blocked;
                };
                self.counters.joins_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            Out::Tell { addr, ids } => {
                let mut n = 0;
                for id in ids {
                    if let Some(m) = self.table.get(id) {
                        scratch[n] = m.record;
                        n += 1;
                    }
                }
                if n == 0 {
                    return Step::Skip;
                }
                let msg = Message::Records(Records::Slice(&scratch[..n]));
                let Some(len) = sealer.seal(now, addr, &msg, buf) else {
                    return Step::Blocked;
                };
                self.counters.records_out += n as u64;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
        }
    }
}
