//! The scale experiments of `pias sim` (issue 5).

use pias_state::proxy::ProxyConfig;

/// Shrinks the tables a proxy preallocates to what a simulated proxy needs. The defaults size a proxy for
/// a real box (a 10^6-entry NAT table alone is about 150 MB); the simulator runs thousands of proxies.
/// Membership bounds are untouched (the table grows with the overlay), so membership behaviour is the
/// real one.
pub fn small_proxy_config(c: &mut ProxyConfig) {
    c.nat.max_entries = 256;
    c.iap.cache_entries = 128;
    c.rap.max_groups = 1024;
    c.registry.max_registrations = 256;
    c.registry.max_derived_keys = 64;
    c.registry.max_tombstones = 256;
    c.registry.event_queue = 256;
    c.registry.reply_queue = 256;
    c.membership.stranger_windows = 256;
    c.event_capacity = 256;
    c.outbox_capacity = 1024;
}
