//! The JAP's passive watch of its targets (SPEC.md §10.4): a target whose new flows go unanswered is taken
//! out of the choice for new flows for a while, so a dead or hung service is avoided even between its
//! agent's health checks (or when its agent checks nothing).
//!
//! The evidence is the NAT's: the proxy tells the registry when a NAT binding towards a target is created
//! ([`Registry::watch_flow`]: a new UDP flow, or a TCP SYN) and when one gets its first reply from the target
//! ([`Registry::watch_answered`]: not an ICMP error, not a TCP RST, which a host sends for a dead service).
//! Per target it keeps only the flows started since the last answer: how many, when the first started, and
//! up to [`WATCH_PREFIXES`] distinct client prefixes (/24, /56) among them.
//!
//! **Suspect** when `udp_flows` (3) new UDP flows, or `tcp_flows` (2) TCP SYNs, from at least
//! `min_clients` (2) distinct client prefixes got no answer, the last of them `answer_ms` (500 ms) old,
//! and nothing answered since the first — provided some flow of the target was answered once since it
//! registered (a one-way service, which never answers, is not watched). Then the target is out of the choice for new flows for
//! `backoff_ms` (2 s); flows already bound to it stay. Afterwards it is on probation: the next new flow may
//! go to it; answered, it is back for good; unanswered after `answer_ms`, it is suspect again for twice
//! the back-off (at most 8×). Counted (`reg_target_suspected`), and an event for the logs.
//!
//! **Cheap removal is refused.** One client (or one prefix) sending flows a service ignores, whatever
//! their number, is not evidence: it takes several prefixes. Any answered flow of any client clears the
//! evidence, so spoofed flows must outnumber the real ones between two answers. Evidence older than
//! `window_ms` (10 s) is forgotten (also a probe flow's, judged only when the next new flow comes). And the watch never takes the last target out: when every eligible
//! target of a group is suspect, the choice ignores the watch (counted `reg_suspect_ignored`) — a group
//! whose every target seems dead is served as if the watch did not exist, since refusing every flow would
//! turn an attacker's success into a total outage.

use super::*;

/// Distinct client prefixes remembered per target (enough for any sane `min_clients`).
pub const WATCH_PREFIXES: usize = 4;
/// The back-off doubles at most this many times.
const MAX_BACKOFF_SHIFT: u8 = 3;

/// The passive watch's parameters (SPEC.md §10.4). A flow count of 0 turns the watch off for that
/// protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// A new flow with no reply after this long counts as unanswered (default 500 ms).
    pub answer_ms: u32,
    /// Unanswered new UDP flows that make a target suspect (default 3; 0: no watch of UDP).
    pub udp_flows: u16,
    /// Unanswered TCP SYNs that make a target suspect (default 2; 0: no watch of TCP).
    pub tcp_flows: u16,
    /// Distinct client prefixes (/24, /56) the unanswered flows must come from (default 2, at most
    /// [`WATCH_PREFIXES`]).
    pub min_clients: u8,
    /// How long a suspect target gets no new flows (default 2 s; doubled for each relapse on probation).
    pub backoff_ms: u32,
    /// Evidence older than this is forgotten (default 10 s).
    pub window_ms: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            answer_ms: 500,
            udp_flows: 3,
            tcp_flows: 2,
            min_clients: 2,
            backoff_ms: 2000,
            window_ms: 10_000,
        }
    }
}

/// One target's watch state (reset when its registration slot is taken by a new registration).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Watch {
    /// New flows since the last answer, and when the first of them started.
    unanswered: u16,
    since: Instant,
    /// Distinct client prefixes among them (hashes), `nprefixes` of them used.
    prefixes: [u32; WATCH_PREFIXES],
    nprefixes: u8,
    /// When the evidence is complete (the flow that completed it is `answer_ms` old); zero: not yet.
    ripe_at: Instant,
    /// Out of the choice for new flows until then.
    suspect_until: Instant,
    /// After a back-off: one unanswered flow is enough to make it suspect again.
    probation: bool,
    backoff_shift: u8,
    /// Whether any of its flows was ever answered: a service that never answers (one-way UDP: syslog,
    /// metrics, a benchmark's blast) gives no evidence by its silence and is not watched.
    answered_once: bool,
}

impl Watch {
    fn forget_evidence(&mut self) {
        self.unanswered = 0;
        self.nprefixes = 0;
        self.ripe_at = Instant::ZERO;
    }
}

/// A client address's prefix (/24, /56) as a small hash: distinctness is all the watch needs.
fn prefix_of(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a) >> 8,
        IpAddr::V6(a) => {
            let p = u128::from(a) >> 72;
            (p as u32) ^ ((p >> 32) as u32).rotate_left(7) ^ 0x8000_0000
        }
    }
}

/// [`Registry::is_suspect`] on the watch states alone (for use while other fields are borrowed): in a
/// back-off, or with ripe evidence not older than `window`.
pub(super) fn suspect_in(watch: &[Watch], slot: u32, now: Instant, window: Duration) -> bool {
    watch.get(slot as usize).is_some_and(|w| {
        now < w.suspect_until
            || (w.ripe_at != Instant::ZERO && now >= w.ripe_at && now.saturating_since(w.since) <= window)
    })
}

impl Registry {
    fn watch_slot(&mut self, slot: u32) -> Option<&mut Watch> {
        let i = slot as usize;
        if self.regs.get(i).is_none_or(|r| r.is_none()) {
            return None;
        }
        if self.watch.len() <= i {
            self.watch.resize(i + 1, Watch::default());
        }
        self.watch.get_mut(i)
    }

    /// A new registration took `slot`: it starts with a clean record.
    pub(super) fn watch_reset(&mut self, slot: u32) {
        if let Some(w) = self.watch.get_mut(slot as usize) {
            *w = Watch::default();
        }
    }

    /// How many unanswered flows of `proto` make a target suspect (0: not watched).
    fn watch_need(&self, proto: IpProtocol) -> u16 {
        match proto {
            IpProtocol::Udp => self.cfg.watch.udp_flows,
            IpProtocol::Tcp => self.cfg.watch.tcp_flows,
            _ => 0,
        }
    }

    /// The proxy created a NAT binding for a new flow from `client` towards the target in `slot` (a UDP
    /// flow, or a TCP flow by its SYN).
    pub fn watch_flow(&mut self, slot: u32, client: IpAddr, proto: IpProtocol, now: Instant) {
        let need = self.watch_need(proto);
        let (answer, window, min_clients) = (
            Duration::from_millis(u64::from(self.cfg.watch.answer_ms)),
            Duration::from_millis(u64::from(self.cfg.watch.window_ms)),
            usize::from(self.cfg.watch.min_clients).min(WATCH_PREFIXES),
        );
        if need == 0 {
            return;
        }
        let Some(w) = self.watch_slot(slot) else { return };
        if w.unanswered > 0 && now.saturating_since(w.since) > window {
            w.forget_evidence();
        }
        if w.unanswered == 0 {
            w.since = now;
        }
        w.unanswered = w.unanswered.saturating_add(1);
        let p = prefix_of(client);
        let n = usize::from(w.nprefixes);
        if n < WATCH_PREFIXES && !w.prefixes[..n].contains(&p) {
            w.prefixes[n] = p;
            w.nprefixes += 1;
        }
        let complete = w.answered_once
            && (w.probation || w.unanswered >= need && usize::from(w.nprefixes) >= min_clients);
        if complete && w.ripe_at == Instant::ZERO {
            w.ripe_at = now + answer;
        }
    }

    /// A NAT binding towards the target in `slot` got its first reply (not an ICMP error or a TCP RST):
    /// the service answers; any evidence against it is void.
    pub fn watch_answered(&mut self, slot: u32) {
        if let Some(w) = self.watch_slot(slot) {
            w.forget_evidence();
            w.probation = false;
            w.backoff_shift = 0;
            w.answered_once = true;
        }
    }

    /// Whether the target in `slot` is out of the choice for new flows at `now` (read-only: a target
    /// whose evidence just ripened counts as suspect; the choice records it).
    pub fn is_suspect(&self, slot: u32, now: Instant) -> bool {
        suspect_in(&self.watch, slot, now, self.watch_window())
    }

    /// Evidence older than this is forgotten (`window_ms`).
    pub(super) fn watch_window(&self) -> Duration {
        Duration::from_millis(u64::from(self.cfg.watch.window_ms))
    }

    /// Records that the target in `slot` is suspect, if its evidence ripened: the back-off starts, counted,
    /// with an event. Returns whether it is suspect now.
    pub(super) fn watch_suspect(&mut self, slot: u32, now: Instant) -> bool {
        let base = u64::from(self.cfg.watch.backoff_ms);
        if !suspect_in(&self.watch, slot, now, self.watch_window()) {
            return false;
        }
        let Some(w) = self.watch.get_mut(slot as usize) else {
            return false;
        };
        if now < w.suspect_until {
            return true;
        }
        w.suspect_until = now + Duration::from_millis(base << w.backoff_shift);
        w.backoff_shift = (w.backoff_shift + 1).min(MAX_BACKOFF_SHIFT);
        w.probation = true;
        w.forget_evidence();
        self.counters.target_suspected += 1;
        if let Some(r) = self.regs.get(slot as usize).and_then(|r| r.as_ref()) {
            let (group, service) = (r.group, r.service);
            self.push_event(RegistryEvent::TargetSuspected { slot, group, service });
        }
        true
    }
}
