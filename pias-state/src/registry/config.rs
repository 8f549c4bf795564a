//! The registry's configuration (defaults from SPEC.md §14) and its validation.

use super::*;

/// Configuration. Defaults from SPEC.md §14.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Interval at which targets refresh (sent to them in every RegisterAck).
    pub refresh_ms: u32,
    /// A target with no refresh for this long is removed (sent to them in every RegisterAck).
    pub hold_ms: u32,
    /// Cookie epoch length; cookies of the current and the previous epoch are accepted.
    pub cookie_period_ms: u32,
    /// Registrations per JAP; a new one beyond is answered Full.
    pub max_registrations: usize,
    /// Targets per group at this JAP (at most [`MAX_TABLE_MEMBERS`]); a new one beyond is answered Full.
    pub max_targets_per_group: usize,
    /// Derived group keys kept (least recently used evicted).
    pub max_derived_keys: usize,
    /// Ended registrations whose replay window is remembered for two cookie periods (oldest evicted).
    pub max_tombstones: usize,
    /// Hysteresis band of the reported counts, percent (SPEC.md §9.1).
    pub band_percent: u8,
    /// Replies waiting for [`Registry::poll_transmit`]; more are dropped (counted).
    pub reply_queue: usize,
    /// Events waiting for [`Registry::poll_event`].
    pub event_queue: usize,
    /// Registrations expired per [`Registry::handle_timeout`] call at most.
    pub expiry_budget: usize,
    /// This proxy's incarnation (SPEC.md §3): the high half of reply sequence numbers.
    pub incarnation: u32,
    /// Replies per second to one source prefix (/24, /56) for requests whose source is not verified yet
    /// (Challenge, Gone; SPEC.md §8.4).
    pub reply_rate: u32,
    /// How many such replies a prefix may draw at once (the bucket size).
    pub reply_burst: u32,
    /// Source prefixes whose reply buckets are kept (least recently used evicted).
    pub reply_limit_prefixes: usize,
    /// The passive watch of targets whose new flows go unanswered (SPEC.md §10.4).
    pub watch: WatchConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            refresh_ms: 200,
            hold_ms: 700,
            cookie_period_ms: 30_000,
            max_registrations: 65_536,
            max_targets_per_group: MAX_TABLE_MEMBERS,
            max_derived_keys: 4096,
            max_tombstones: 16_384,
            band_percent: DEFAULT_BAND_PERCENT,
            reply_queue: 1024,
            event_queue: 4096,
            expiry_budget: 1024,
            incarnation: 0,
            reply_rate: 20,
            reply_burst: 64,
            reply_limit_prefixes: 4096,
            watch: WatchConfig::default(),
        }
    }
}

/// A configuration value that cannot work: the field and how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("registry.{field}: {fix}")]
pub struct RegistryConfigError {
    pub field: &'static str,
    pub fix: &'static str,
}

impl RegistryConfig {
    /// Checks every field; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), RegistryConfigError> {
        let e = |field, fix| Err(RegistryConfigError { field, fix });
        if self.refresh_ms == 0 {
            return e("refresh_ms", "must be at least 1 (default 200)");
        }
        if self.hold_ms <= self.refresh_ms {
            return e(
                "hold_ms",
                "must exceed refresh_ms, 3 refresh intervals or more (default 700)",
            );
        }
        if self.cookie_period_ms < 1000 {
            return e(
                "cookie_period_ms",
                "must be at least 1000 so a cookie outlives a round trip (default 30000)",
            );
        }
        if self.max_registrations == 0 || self.max_registrations > (u32::MAX / 2) as usize {
            return e("max_registrations", "must be between 1 and 2^31 (default 65536)");
        }
        if self.max_targets_per_group == 0 || self.max_targets_per_group > MAX_TABLE_MEMBERS {
            return e(
                "max_targets_per_group",
                "must be between 1 and 4095 (default 4095)",
            );
        }
        if self.max_derived_keys == 0 {
            return e("max_derived_keys", "must be at least 1 (default 4096)");
        }
        if self.max_tombstones == 0 {
            return e("max_tombstones", "must be at least 1 (default 16384)");
        }
        if self.reply_queue == 0 {
            return e("reply_queue", "must be at least 1 (default 1024)");
        }
        if self.event_queue == 0 {
            return e("event_queue", "must be at least 1 (default 4096)");
        }
        if self.expiry_budget == 0 {
            return e("expiry_budget", "must be at least 1 (default 1024)");
        }
        if self.reply_rate == 0 {
            return e("reply_rate", "must be at least 1 (default 20)");
        }
        if self.reply_burst == 0 {
            return e("reply_burst", "must be at least 1 (default 64)");
        }
        if self.reply_limit_prefixes == 0 {
            return e("reply_limit_prefixes", "must be at least 1 (default 4096)");
        }
        if self.watch.answer_ms == 0 || self.watch.backoff_ms == 0 || self.watch.backoff_ms > 600_000 {
            return e(
                "watch",
                "answer_ms must be at least 1, backoff_ms between 1 and 600000 (defaults 500, 2000)",
            );
        }
        if self.watch.min_clients == 0 || usize::from(self.watch.min_clients) > WATCH_PREFIXES {
            return e("watch.min_clients", "must be between 1 and 4 (default 2)");
        }
        Ok(())
    }
}
