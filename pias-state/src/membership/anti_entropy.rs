//! Anti-entropy (SPEC.md §7.4): descending the 16-ary digest tree with a peer, and the paced per-peer
//! queue of Digest, Pull and Records jobs that repairs what flooding lost.

use pias_proto::control::{DIGEST_FANOUT, Digest, Message, ProxyRecord, Pull, Records};

use super::outbox::Step;
use super::table::{self, Table, node_of};
use super::{Membership, peer_entry};
use crate::seal::{Dest, Sealer, Transmit};
use crate::time::Instant;

/// A child with at most this many records is transferred rather than descended (SPEC.md §7.4).
const AE_LEAF: u32 = Records::MAX as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AeJob {
    Digest {
        depth: u8,
        prefix: u32,
    },
    Pull {
        depth: u8,
        prefix: u32,
    },
    /// Records under a node, from bucket `bucket`, position `off` on.
    Records {
        depth: u8,
        prefix: u32,
        bucket: u32,
        off: u32,
    },
}

pub(super) fn sat16(c: u32) -> u16 {
    c.min(u32::from(u16::MAX)) as u16
}

impl Membership {
    pub(super) fn on_digest(&mut self, _now: Instant, sender: u32, d: &Digest) {
        let (hashes, counts) = self.table.children(d.depth, d.prefix);
        if d.depth >= Digest::MAX_DEPTH {
            if hashes != d.hashes || counts.map(sat16) != d.counts {
                self.push_ae(
                    sender,
                    AeJob::Records {
                        depth: d.depth,
                        prefix: d.prefix,
                        bucket: 0,
                        off: 0,
                    },
                );
                self.push_ae(
                    sender,
                    AeJob::Pull {
                        depth: d.depth,
                        prefix: d.prefix,
                    },
                );
            }
            return;
        }
        for c in 0..DIGEST_FANOUT {
            if hashes[c] == d.hashes[c] && sat16(counts[c]) == d.counts[c] {
                continue;
            }
            let depth = d.depth + 1;
            let prefix = d.prefix.wrapping_mul(16) | c as u32;
            if counts[c] <= AE_LEAF || u32::from(d.counts[c]) <= AE_LEAF {
                self.push_ae(
                    sender,
                    AeJob::Records {
                        depth,
                        prefix,
                        bucket: 0,
                        off: 0,
                    },
                );
                self.push_ae(sender, AeJob::Pull { depth, prefix });
            } else {
                self.push_ae(sender, AeJob::Digest { depth, prefix });
            }
        }
    }

    pub(super) fn push_ae(&mut self, to: u32, job: AeJob) {
        if self.table.get(to).is_none() {
            return;
        }
        let cap = self.cfg.ae_pending;
        let Some(p) = peer_entry(
            &mut self.peers,
            self.cfg.max_peers,
            &mut self.counters.peers_full,
            to,
        ) else {
            return;
        };
        if p.ae.len() >= cap {
            p.ae.pop_front();
            self.counters.ae_dropped += 1;
        }
        p.ae.push_back(job);
        if !p.in_ae_ring {
            p.in_ae_ring = true;
            self.ae_ring.push_back(to);
        }
    }

    pub(super) fn requeue_ae(&mut self, pid: u32) {
        if let Some(p) = self.peers.get_mut(&pid) {
            if p.ae.is_empty() {
                p.in_ae_ring = false;
            } else {
                self.ae_ring.push_back(pid);
            }
        }
    }

    pub(super) fn emit_ae(
        &mut self,
        now: Instant,
        pid: u32,
        sealer: &mut Sealer,
        buf: &mut [u8],
        scratch: &mut [ProxyRecord; Records::MAX],
    ) -> Step {
        let Some(addr) = self.table.get(pid).map(|m| m.record.addr) else {
            if let Some(p) = self.peers.get_mut(&pid) {
                p.ae.clear();
            }
            return Step::Skip;
        };
        let Some(p) = self.peers.get(&pid) else {
            return Step::Skip;
        };
        let Some(&job) = p.ae.front() else {
            return Step::Skip;
        };
        match job {
            AeJob::Digest { depth, prefix } => {
                let (hashes, counts) = self.table.children(depth, prefix);
                let msg = Message::Digest(Digest {
                    depth,
                    prefix,
                    hashes,
                    counts: counts.map(sat16),
                });
                let Some(len) = sealer.seal(now, addr, &msg, buf) else {
                    return Step::Blocked;
                };
                self.pop_ae(pid, 1, None);
                self.counters.ae_digests_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            AeJob::Pull { depth, prefix } => {
                let Some(len) = sealer.seal(now, addr, &Message::Pull(Pull { depth, prefix }), buf) else {
                    return Step::Blocked;
                };
                self.pop_ae(pid, 1, None);
                self.counters.ae_pulls_sent += 1;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
            AeJob::Records { .. } => {
                // Fill one message from this and the following record jobs (emit, then commit).
                let mut n = 0;
                let mut done = 0;
                let mut partial = None;
                for &j in &p.ae {
                    let AeJob::Records {
                        depth,
                        prefix,
                        bucket,
                        off,
                    } = j
                    else {
                        break;
                    };
                    let (exhausted, b, o) = self.fill(depth, prefix, bucket, off, scratch, &mut n);
                    if exhausted {
                        done += 1;
                    } else {
                        partial = Some(AeJob::Records {
                            depth,
                            prefix,
                            bucket: b,
                            off: o,
                        });
                        break;
                    }
                }
                if n == 0 {
                    self.pop_ae(pid, done, partial);
                    return Step::Skip;
                }
                let msg = Message::Records(Records::Slice(&scratch[..n]));
                let Some(len) = sealer.seal(now, addr, &msg, buf) else {
                    return Step::Blocked;
                };
                self.pop_ae(pid, done, partial);
                self.counters.ae_records_sent += 1;
                self.counters.records_out += n as u64;
                Step::Sent(Transmit {
                    dest: Dest::Overlay(addr),
                    len,
                })
            }
        }
    }

    pub(super) fn pop_ae(&mut self, pid: u32, done: usize, partial: Option<AeJob>) {
        if let Some(p) = self.peers.get_mut(&pid) {
            p.ae.drain(..done.min(p.ae.len()));
            if let (Some(j), Some(front)) = (partial, p.ae.front_mut()) {
                *front = j;
            }
        }
    }

    /// Copies records under node `(depth, prefix)` from cursor `(bucket, off)` into `scratch[n..]`.
    /// Returns whether the node is exhausted and the cursor to resume from. At most 4096 buckets visited.
    pub(super) fn fill(
        &self,
        depth: u8,
        prefix: u32,
        bucket: u32,
        off: u32,
        scratch: &mut [ProxyRecord; Records::MAX],
        n: &mut usize,
    ) -> (bool, u32, u32) {
        let (lo, hi) = Table::bucket_range(depth, prefix);
        let (mut b, mut o) = if (bucket as usize) < lo {
            (lo, 0usize)
        } else {
            (bucket as usize, off as usize)
        };
        while b < hi {
            let ids = self.table.bucket(b);
            while o < ids.len() {
                if *n == Records::MAX {
                    return (false, b as u32, o as u32);
                }
                let id = ids[o];
                o += 1;
                if let Some(m) = self.table.get(id)
                    && (depth <= table::KEPT_LEVELS || node_of(m.key, depth) == prefix)
                {
                    scratch[*n] = m.record;
                    *n += 1;
                }
            }
            b += 1;
            o = 0;
        }
        (true, b as u32, 0)
    }
}
