//! Joining and leaving (SPEC.md §7.6): answering a Join, and the graceful leave.

use core::net::SocketAddr;

use pias_proto::control::{MemberStatus, ProxyRecord};

use super::Membership;
use super::anti_entropy::AeJob;
use super::outbox::Out;
use crate::time::Instant;

impl Membership {
    /// Leaves gracefully: own status Left (version + 1), flooded; probes stop, answers continue. The driver
    /// stops after [`Membership::drained`].
    pub fn leave(&mut self, now: Instant) {
        if self.left_at.is_some() {
            return;
        }
        self.left_at = Some(now);
        self.next_join = None;
        let mut r = self.me;
        r.status = MemberStatus::Left;
        r.version = r.version.saturating_add(1);
        self.set_me(now, r);
    }

    pub(super) fn on_join(&mut self, now: Instant, from: SocketAddr, sender: u32, r: &ProxyRecord) {
        if r.id.0 != sender {
            self.counters.bad_joins += 1;
            return;
        }
        self.counters.joins_received += 1;
        self.counters.records_in += 1;
        self.apply(now, *r, Some(sender));
        // Our own record first, so the joiner knows us and accepts the anti-entropy that follows.
        self.push_out(Out::Tell {
            addr: from,
            ids: [self.me.id.0, 0],
        });
        let ae_interval = self.cfg.ae_interval;
        if self.table.get(sender).is_some()
            && let Some(p) = self.peer(sender)
            && p.ae_last.is_none_or(|t| now >= t + ae_interval)
        {
            p.ae_last = Some(now);
            self.counters.ae_sessions += 1;
            self.push_ae(sender, AeJob::Digest { depth: 0, prefix: 0 });
        }
    }
}
