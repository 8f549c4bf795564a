//! Membership timers and bounds (SPEC.md §14) and their validation.

use core::net::SocketAddr;
use core::time::Duration;

/// Membership configuration. [`Default`] gives the SPEC.md §14 values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// The probe tick: each tick probes the next chosen neighbour in turn, plus any that has not answered
    /// its last probe (§7.2).
    pub probe_interval: Duration,
    /// Consecutive missed probes (ticks with the last probe unanswered) before a neighbour is Suspect
    /// (§7.2).
    pub suspect_after: u32,
    /// How long a Suspect record stays Suspect before it is marked Down, unless a monitor confirms the
    /// suspicion sooner (§7.2).
    pub suspect_timeout: Duration,
    /// Flooding tick: accepted records go out at the next tick, batched (§7.3). Also the anti-entropy
    /// pacing tick (`ae_budget` messages per tick).
    pub flood_interval: Duration,
    /// At most one anti-entropy descent started per neighbour this often (§7.4); also the period of the
    /// tombstone reconnect probe.
    pub ae_interval: Duration,
    /// Join retry period until a Records message arrives (§7.6).
    pub join_retry: Duration,
    /// After [`super::Membership::leave`], keep answering this long (§7.6).
    pub drain_time: Duration,
    /// Down and Left records are deleted this long after they became so (§7.6).
    pub tombstone_time: Duration,
    /// Most records in the table, own included (§14). New ids beyond it are refused (counted).
    pub max_members: usize,
    /// Replay windows kept for senders that are not members yet (Join, Probe), LRU (§8.2).
    pub stranger_windows: usize,
    /// Overlay addresses of the seeds to join through; empty for the first proxy (§7.6).
    pub seeds: Vec<SocketAddr>,
    /// Anti-entropy work (digests, pulls, record pages) queued per peer; oldest dropped (§7.4, §14).
    pub ae_pending: usize,
    /// Anti-entropy messages sent per tick (`flood_interval`) in all (§7.4).
    pub ae_budget: usize,
    /// At most one re-flood of the own record for a coordinate change this often (§7.5).
    pub coord_flood_interval: Duration,
    /// …and not more often than once per `members × coord_flood_spacing`: the whole overlay re-floods at
    /// most one coordinate change per `coord_flood_spacing`, whatever its size (§7.5). Zero: no such limit.
    pub coord_flood_spacing: Duration,
    /// Most peers (chosen and reverse neighbours, anti-entropy partners) tracked at once.
    pub max_peers: usize,
    /// Record ids queued per peer for flooding; beyond it the oldest are dropped (anti-entropy repairs).
    pub flood_queue: usize,
    /// Frames waiting to be sent (probes, acks, joins, direct records); beyond it new ones are dropped.
    pub out_queue: usize,
    /// Events waiting for [`super::Membership::poll_event`]; beyond it new ones are dropped (counted).
    pub event_queue: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_interval: Duration::from_millis(250),
            suspect_after: 3,
            suspect_timeout: Duration::from_secs(1),
            flood_interval: Duration::from_millis(20),
            ae_interval: Duration::from_secs(2),
            join_retry: Duration::from_secs(1),
            drain_time: Duration::from_secs(2),
            tombstone_time: Duration::from_secs(300),
            max_members: 131_072,
            stranger_windows: 1024,
            seeds: Vec::new(),
            ae_pending: 64,
            ae_budget: 32,
            coord_flood_interval: Duration::from_secs(60),
            coord_flood_spacing: Duration::from_secs(10),
            max_peers: 512,
            flood_queue: 1024,
            out_queue: 1024,
            event_queue: 4096,
        }
    }
}

/// A configuration value that cannot work, with the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("membership config: `{field}` {problem}; {fix}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: &'static str,
    pub fix: &'static str,
}

impl MembershipConfig {
    /// Checks every field; the first bad one is named with the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem, fix| Err(ConfigError { field, problem, fix });
        let ms = Duration::from_millis(1);
        if self.probe_interval < ms {
            return err(
                "probe_interval",
                "is below 1 ms",
                "use at least 1 ms (default 250 ms)",
            );
        }
        if self.suspect_after == 0 {
            return err("suspect_after", "is 0", "use at least 1 missed probe (default 3)");
        }
        if self.suspect_timeout < ms {
            return err(
                "suspect_timeout",
                "is below 1 ms",
                "use at least 1 ms (default 1 s)",
            );
        }
        if self.flood_interval < ms || self.flood_interval > self.probe_interval {
            return err(
                "flood_interval",
                "is below 1 ms or above probe_interval",
                "use 1 ms ..= probe_interval (default 20 ms)",
            );
        }
        if self.ae_interval < self.probe_interval {
            return err(
                "ae_interval",
                "is below probe_interval",
                "use at least probe_interval (default 2 s)",
            );
        }
        if self.join_retry < ms {
            return err("join_retry", "is below 1 ms", "use at least 1 ms (default 1 s)");
        }
        if self.tombstone_time <= self.suspect_timeout {
            return err(
                "tombstone_time",
                "is not above suspect_timeout",
                "use well above suspect_timeout (default 300 s)",
            );
        }
        if self.coord_flood_interval < self.probe_interval {
            return err(
                "coord_flood_interval",
                "is below probe_interval",
                "use at least probe_interval (default 60 s)",
            );
        }
        if self.max_members < 1 || self.max_members > 1 << 22 {
            return err(
                "max_members",
                "is outside 1 ..= 4194304",
                "use 1 ..= 4194304 (default 131072)",
            );
        }
        for (field, v) in [
            ("stranger_windows", self.stranger_windows),
            ("ae_pending", self.ae_pending),
            ("ae_budget", self.ae_budget),
            ("max_peers", self.max_peers),
            ("flood_queue", self.flood_queue),
            ("out_queue", self.out_queue),
            ("event_queue", self.event_queue),
        ] {
            if v == 0 {
                return err(field, "is 0", "use at least 1 (see SPEC.md §14 for the default)");
            }
        }
        if self.max_peers < 16 {
            return err(
                "max_peers",
                "is below 16",
                "use at least 16 (8 chosen neighbours plus reverse ones)",
            );
        }
        Ok(())
    }
}
