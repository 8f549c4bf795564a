//! Health-gated announcement (SPEC.md §7.7): whether this proxy should announce the anycast prefixes now.
//!
//! A proxy that is up but cannot serve must withdraw, not only one that has exited: otherwise routers keep
//! sending it clients whose packets it cannot carry to any JAP, and they vanish into it for as long as the
//! fault lasts. The decision lives here, in the core, so that every driver applies the same rule; a driver
//! only moves kernel routes when [`Event::AnnounceChanged`](super::Event::AnnounceChanged) says so.
//!
//! The rule, in order:
//! 1. a proxy that is leaving (`Proxy::leave`) is withdrawn ([`AnnounceReason::Draining`]) — whatever the
//!    operator said, since its targets are being sent elsewhere;
//! 2. an operator's `on` or `off` ([`AnnounceMode`]) decides ([`AnnounceReason::Operator`]);
//! 3. otherwise (`auto`) the proxy is withdrawn once it has been unhealthy for `hold_down`, and announced
//!    again once it has been healthy for `hold_up` (hysteresis: a flapping path does not flap the route).
//!
//! Unhealthy is either of:
//! - *isolated*: the proxy has reached other members before (a probe of its was acknowledged), at its last
//!   successful round trip at least two other members were Alive, some other member is still in its table
//!   without having left, and no probe round trip has succeeded since — a healthy proxy sees one every
//!   `probe_interval` per neighbour;
//! - *overlay failed*: the driver reports that sending on the overlay socket fails.
//!
//! A proxy that never reached another member announces ([`AnnounceReason::Alone`]): it cannot tell an overlay
//! of one (which serves its own targets) from a cut-off start, and refusing to announce would leave the first
//! proxy of every new overlay dark. Neither can a proxy whose only reachable peer went silent tell whether
//! that peer failed or it is cut off; it keeps announcing (reason `Alone`), because the other answer would
//! take the survivor of a crash out with the dead — in an overlay of two, a crash would become an outage,
//! and even the crashed proxy's targets, re-registering at the anycast registration address, would find
//! nobody to register with. Losing *every one* of two or more Alive peers at once is what isolation looks
//! like (independent crashes are rarely that close), so that withdraws. When every other member has *left*
//! (gracefully), the proxy is alone again and announces.

use core::time::Duration;

use pias_proto::control::MemberStatus;

use crate::membership::Membership;
use crate::time::Instant;

use super::{Event, Proxy};

impl Proxy {
    /// Whether the anycast prefixes (and registration addresses) should be announced now, and why (SPEC.md
    /// §7.7). The driver applies each change as [`Event::AnnounceChanged`] arrives; this is the same answer
    /// for a driver that (re)starts applying it.
    pub fn announce(&self) -> Announce {
        self.announcer.state()
    }

    /// The operator's override.
    pub fn announce_mode(&self) -> AnnounceMode {
        self.announcer.mode()
    }

    /// Sets the operator's override (`pias ctl announce off|on|auto`); an [`Event::AnnounceChanged`]
    /// follows at once if the answer changes. `auto` after `off` announces again at once when healthy (the
    /// operator already waited), or after the usual hysteresis if a fault is still there.
    pub fn set_announce_mode(&mut self, now: Instant, mode: AnnounceMode) {
        self.announcer.set_mode(mode);
        self.update_announce(now);
    }

    /// The driver's report on the overlay socket (SPEC.md §7.7): `true` when sending fails with an error
    /// that is not a full queue, `false` once a send succeeds again. Withdraws after `hold_down` of failure.
    /// Cheap when nothing changes: a driver may call it on every send.
    pub fn set_overlay_failed(&mut self, now: Instant, failed: bool) {
        self.announcer.set_overlay_failed(now, failed);
        self.update_announce(now);
    }

    pub(super) fn update_announce(&mut self, now: Instant) {
        let leaving = self.registry.is_draining();
        let was_up = self.announcer.state().up;
        if let Some(a) = self.announcer.update(now, &self.membership, leaving) {
            // A change of reason while withdrawn (isolated → recovering) is not another withdrawal.
            if was_up && !a.up {
                self.counters.announce_withdrawals += 1;
            }
            self.push_event(Event::AnnounceChanged {
                up: a.up,
                reason: a.reason,
            });
        }
    }
}

/// How many Alive peers a proxy must lose at once to count as cut off rather than as the survivor of their
/// crash (SPEC.md §7.7).
pub const ISOLATION_PEERS: u8 = 2;

/// The announcement timers (SPEC.md §7.7, §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// How long the proxy must be unhealthy before it withdraws (default 2 s: ten probe intervals, longer
    /// than SWIM's suspicion and Down verdict, 1.6 s).
    pub hold_down: Duration,
    /// How long it must be healthy again before it announces again (default 5 s).
    pub hold_up: Duration,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            hold_down: Duration::from_secs(2),
            hold_up: Duration::from_secs(5),
        }
    }
}

/// The operator's say (`pias ctl announce off|on|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AnnounceMode {
    /// The health rule decides.
    #[default]
    Auto,
    /// Announce whatever the health rule says (not while leaving).
    On,
    /// Withdraw.
    Off,
}

impl AnnounceMode {
    /// The word `pias ctl` uses.
    pub fn word(self) -> &'static str {
        match self {
            AnnounceMode::Auto => "auto",
            AnnounceMode::On => "on",
            AnnounceMode::Off => "off",
        }
    }

    /// The mode of a word (case-insensitive).
    pub fn from_word(s: &str) -> Option<AnnounceMode> {
        [AnnounceMode::Auto, AnnounceMode::On, AnnounceMode::Off]
            .into_iter()
            .find(|m| m.word().eq_ignore_ascii_case(s))
    }
}

/// Why the proxy announces or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceReason {
    /// Announced: probe round trips succeed and the overlay socket works.
    Healthy,
    /// Announced: no other member was ever reached, every other member left, or the only peer it could
    /// reach went silent (its crash cannot be told from being cut off, §7.7).
    Alone,
    /// No probe round trip succeeded for `hold_down` while other members are known.
    Isolated,
    /// The driver reports that sends on the overlay socket fail.
    OverlayFailed,
    /// Healthy again, but not yet for `hold_up`: still withdrawn.
    Recovering,
    /// The proxy is leaving (SPEC.md §7.6).
    Draining,
    /// `pias ctl announce on|off`.
    Operator,
}

impl AnnounceReason {
    /// The word logs, `pias ctl` and metrics labels use.
    pub fn word(self) -> &'static str {
        match self {
            AnnounceReason::Healthy => "healthy",
            AnnounceReason::Alone => "alone",
            AnnounceReason::Isolated => "isolated",
            AnnounceReason::OverlayFailed => "overlay-failed",
            AnnounceReason::Recovering => "recovering",
            AnnounceReason::Draining => "draining",
            AnnounceReason::Operator => "operator",
        }
    }
}

/// Whether the proxy announces its anycast prefixes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Announce {
    pub up: bool,
    pub reason: AnnounceReason,
}

/// The announcement's state (one per proxy).
#[derive(Debug)]
pub(super) struct Announcer {
    cfg: AnnounceConfig,
    mode: AnnounceMode,
    state: Announce,
    /// The membership's matched-ack counter when last looked at: a rise is a successful probe round trip.
    acks_seen: u64,
    /// The last successful probe round trip; `None` until the first (or since every other member left).
    last_ack: Option<Instant>,
    /// Since when the driver reports the overlay socket failing.
    overlay_failed: Option<Instant>,
    /// Since when the auto rule has found the proxy unhealthy (start of the current fault).
    sick_since: Option<Instant>,
    /// Since when it has found it healthy again (while withdrawn for a fault).
    well_since: Option<Instant>,
    /// Whether some other member that has not left is in the table; recounted only after membership news.
    others: bool,
    /// Other members Alive at the last recount, counted up to [`ISOLATION_PEERS`].
    alive_others: u8,
    /// `alive_others` at the last successful round trip: losing fewer than [`ISOLATION_PEERS`] peers cannot
    /// be told from their crash, so it does not make the proxy isolated.
    alive_at_ack: u8,
    others_dirty: bool,
    /// The membership's lost-event counter when last looked at: lost news also forces a recount.
    events_lost_seen: u64,
}

impl Announcer {
    pub(super) fn new(cfg: AnnounceConfig) -> Self {
        Announcer {
            cfg,
            mode: AnnounceMode::Auto,
            state: Announce {
                up: true,
                reason: AnnounceReason::Alone,
            },
            acks_seen: 0,
            last_ack: None,
            overlay_failed: None,
            sick_since: None,
            well_since: None,
            others: false,
            alive_others: 0,
            alive_at_ack: 0,
            others_dirty: true,
            events_lost_seen: 0,
        }
    }

    pub(super) fn state(&self) -> Announce {
        self.state
    }

    pub(super) fn mode(&self) -> AnnounceMode {
        self.mode
    }

    pub(super) fn set_mode(&mut self, mode: AnnounceMode) {
        self.mode = mode;
    }

    /// Membership news arrived (or was lost): recount the other members before the next decision.
    pub(super) fn membership_changed(&mut self) {
        self.others_dirty = true;
    }

    /// The driver's report on the overlay socket: `failed` when sends fail, `false` once one succeeds.
    pub(super) fn set_overlay_failed(&mut self, now: Instant, failed: bool) {
        match (failed, self.overlay_failed) {
            (true, None) => self.overlay_failed = Some(now),
            (false, Some(_)) => self.overlay_failed = None,
            _ => {}
        }
    }

    /// Re-decides at `now`; returns the new state if it changed.
    pub(super) fn update(&mut self, now: Instant, m: &Membership, leaving: bool) -> Option<Announce> {
        let lost = m.counters().events_dropped;
        if self.others_dirty || lost != self.events_lost_seen {
            self.others_dirty = false;
            self.events_lost_seen = lost;
            let me = m.me().id;
            let (mut others, mut left, mut alive) = (false, false, 0u8);
            // Stops as soon as the answer is known: at 10^5 members this runs on membership news.
            for r in m.iter() {
                if r.id() == me {
                    continue;
                }
                match r.status() {
                    MemberStatus::Left => left = true,
                    MemberStatus::Alive => {
                        others = true;
                        alive += 1;
                        if alive >= ISOLATION_PEERS {
                            break;
                        }
                    }
                    _ => others = true,
                }
            }
            self.others = others;
            self.alive_others = alive;
            if !others && left {
                // Every other member left gracefully: an overlay of one again.
                self.last_ack = None;
            }
        }
        let acks = m.counters().acks;
        if acks != self.acks_seen {
            self.acks_seen = acks;
            self.last_ack = Some(now);
            self.alive_at_ack = self.alive_others;
        }
        let next = self.decide(now, leaving);
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// The fault the auto rule sees now, and since when.
    fn fault(&self, now: Instant) -> Option<(AnnounceReason, Instant)> {
        if let Some(t) = self.overlay_failed {
            return Some((AnnounceReason::OverlayFailed, t));
        }
        match self.last_ack {
            // Unreachable since the last round trip; a fault once that is `hold_down` old (the
            // hold-down is measured from the last sign of health, not from when it was noticed).
            Some(t)
                if self.others
                    && self.alive_at_ack >= ISOLATION_PEERS
                    && now.saturating_since(t) >= self.cfg.hold_down =>
            {
                Some((AnnounceReason::Isolated, t))
            }
            _ => None,
        }
    }

    fn decide(&mut self, now: Instant, leaving: bool) -> Announce {
        let down = |reason| Announce { up: false, reason };
        let up = |reason| Announce { up: true, reason };
        let fault = self.fault(now);
        // Track the auto rule's hysteresis even while an override decides, so `auto` resumes from the truth.
        match fault {
            Some((_, t)) => {
                self.sick_since.get_or_insert(t);
                self.well_since = None;
            }
            None => {
                if self.sick_since.take().is_some() || (!self.state.up && self.well_since.is_none()) {
                    self.well_since = Some(now);
                }
            }
        }
        if leaving {
            return down(AnnounceReason::Draining);
        }
        match self.mode {
            AnnounceMode::On => return up(AnnounceReason::Operator),
            AnnounceMode::Off => return down(AnnounceReason::Operator),
            AnnounceMode::Auto => {}
        }
        // Healthy while round trips succeed; alone when none ever did, every other member left, or the only
        // peer(s) it had went silent (which does not make it isolated, see the module's doc).
        let healthy = match self.last_ack {
            Some(t) if self.others && now.saturating_since(t) < self.cfg.hold_down => AnnounceReason::Healthy,
            _ => AnnounceReason::Alone,
        };
        match fault {
            Some((reason, since)) => {
                if self.state.up && now.saturating_since(since) < self.cfg.hold_down {
                    self.state
                } else {
                    down(reason)
                }
            }
            None if self.state.up => up(healthy),
            None => {
                // Withdrawn: by an override just lifted (come back at once: the operator decided), or by a
                // fault, which must be gone for `hold_up` first.
                let by_fault = matches!(
                    self.state.reason,
                    AnnounceReason::Isolated | AnnounceReason::OverlayFailed | AnnounceReason::Recovering
                );
                match self.well_since {
                    Some(t) if by_fault && now.saturating_since(t) < self.cfg.hold_up => {
                        down(AnnounceReason::Recovering)
                    }
                    _ => up(healthy),
                }
            }
        }
    }

    /// When [`Announcer::update`] may next change its answer by time alone: the hold-down of a sign of
    /// trouble while announced, the end of the hold-up while recovering. Never while an override or a leave
    /// decides (a deadline left in the past would spin a driver's timer).
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if self.mode != AnnounceMode::Auto {
            return None;
        }
        match (self.state.up, self.state.reason) {
            (true, reason) => {
                // A failing socket withdraws hold_down after it began; a healthy proxy's last round trip
                // ages into isolation (or into alone) hold_down after it. Alone has no such deadline: it
                // would be in the past and spin the driver's timer.
                let since = match (self.overlay_failed, reason) {
                    (Some(t), _) => Some(t),
                    (None, AnnounceReason::Healthy) => self.last_ack.filter(|_| self.others),
                    (None, _) => None,
                };
                since.map(|t| t + self.cfg.hold_down)
            }
            (false, AnnounceReason::Recovering) => self.well_since.map(|t| t + self.cfg.hold_up),
            // Withdrawn for a fault: only an input (an ack, the driver's report) changes that.
            (false, _) => None,
        }
    }
}
