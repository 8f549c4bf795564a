//! The target agent (SPEC.md §10.2): registers one service of one group through the registration address,
//! keeps the registration alive, notices a dead JAP, and deregisters on shutdown.
//!
//! The agent is sans-IO like the rest of the core: the driver sends what [`TargetAgent::poll_transmit`]
//! writes as the payload of a UDP datagram to [`AgentConfig::registration`] (port 6082 of an anycast
//! address), passes every datagram received from there to [`TargetAgent::handle_datagram`], and calls
//! [`TargetAgent::handle_timeout`] at [`TargetAgent::poll_timeout`]. With a health check
//! ([`AgentConfig::health`]) the agent keeps its schedule: [`TargetAgent::poll_health_check`] says when the
//! driver must run one (a TCP connect, a UDP request, an HTTP GET or a command, every `interval_ms`, given
//! `timeout_ms`), and the driver reports each result with [`TargetAgent::set_health`].
//!
//! # Behaviour
//!
//! - **Register**: Register with a zero cookie; on Challenge, Register with the cookie; on RegisterAck Ok the
//!   agent is registered with the JAP named in the ack (event [`AgentEvent::Registered`]). With no Ack within
//!   `refresh_ms` of the second Register, or no Challenge, it starts over, every `refresh_ms`.
//! - **Refresh** every `refresh_ms` (the JAP's values from its RegisterAck are adopted when sane). Gone
//!   means the JAP forgot the registration: register again at once. Draining: register again after
//!   `refresh_ms` (routing will lead elsewhere). Full: back off `full_backoff_ms` (plus up to 25 % seeded
//!   jitter), event [`AgentEvent::Refused`].
//! - **Dead JAP**: no RegisterAck for `hold_ms` while registered → event [`AgentEvent::JapLost`] and register
//!   again through anycast from scratch (fresh cookie exchange), retrying every `refresh_ms`.
//! - **Health** (SPEC.md §10.3): with a health check, one is due every `interval_ms` from the start (one
//!   at a time: the next is due `interval_ms` after the previous started, or at its result if that came
//!   later), none once shutting down. The agent registers after the first passing check, deregisters
//!   (Deregister, so the JAP drops the target at once) after `fall` consecutive failures, and registers
//!   again after `rise` consecutive passes; events [`AgentEvent::ServiceDown`] / [`AgentEvent::ServiceUp`].
//! - **Shutdown**: Deregister, repeated every `refresh_ms` until Gone or `hold_ms` passed, then
//!   [`AgentEvent::Deregistered`].
//! - **Unanswered**: a JAP ignores a registration it cannot authenticate and says nothing (no reject an
//!   attacker could use as an oracle), so the agent itself tells its user: once [`UNANSWERED_WARN_ATTEMPTS`]
//!   Registers in a row drew no authenticated reply, or the first of them is [`UNANSWERED_WARN_AFTER`] old,
//!   it emits [`AgentEvent::Unanswered`] (the likely causes are in [`UNANSWERED_HINT`]) and keeps trying;
//!   again at every doubling of the count while nothing answers, and [`AgentEvent::Answered`] once
//!   something does.
//! - **Check** ([`AgentConfig::check`]): one registration, then stop: deregister once registered, or stop
//!   at the first Unanswered or refusal. [`TargetAgent::check_outcome`] says how it ended.
//!
//! # Security
//!
//! Replies are accepted only from the registration address, for this group and service, with a valid MAC
//! under the group key and a sequence number fresh for the agent's replay window. The window is reset when a
//! registration starts from scratch, because the answer may come from another proxy (anycast), whose
//! sequence numbers are unrelated. Refused datagrams change nothing but counters.
//!
//! # Drain order
//!
//! After any `handle_*`/`set_health`/`shutdown` call: `while let Some(n) = agent.poll_transmit(now, buf)`,
//! then `while let Some(ev) = agent.poll_event()`, then (with a health check) start one if
//! `poll_health_check(now)` says so, then re-arm the timer on `poll_timeout()`.
//!
//! # Modules
//!
//! `config.rs`: the configuration and its validation; `health.rs`: the health check's schedule and thresholds;
//! `unanswered.rs`: the Unanswered / Answered warnings and the end of a check-mode run.

mod config;
mod health;
mod unanswered;

pub use config::{AgentConfig, AgentConfigError, HealthSchedule};

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;

use pias_proto::auth::MacKey;
use pias_proto::control::{
    Binding, COOKIE_LEN, ControlHeader, ControlPacket, DeliveryMode, Message, RegAckStatus, Register,
    TargetOp,
};
use pias_proto::{ProxyId, TransportAddr, WireError};

use crate::replay::{ReplayWindow, SeqCounter};
use crate::time::Instant;

/// Events kept for [`TargetAgent::poll_event`]; more are dropped (counted).
const EVENT_QUEUE: usize = 16;
/// Replay windows kept, one per JAP id seen in a RegisterAck (least recently used replaced).
const JAP_WINDOWS: usize = 8;
/// Registers in a row without an authenticated reply after which [`AgentEvent::Unanswered`] is emitted.
pub const UNANSWERED_WARN_ATTEMPTS: u32 = 5;
/// Age of the first unanswered Register after which [`AgentEvent::Unanswered`] is emitted, whatever the
/// count (a long `refresh_ms` must not delay the warning).
pub const UNANSWERED_WARN_AFTER: Duration = Duration::from_secs(1);
/// What an unanswered registration most likely means, in plain words, for the agent's user.
pub const UNANSWERED_HINT: &str = "no proxy answered the registration. Likely causes: (1) the key file is not \
this group's registration key (derive it with `pias key derive --master-file M --group G`; a proxy ignores \
registrations it cannot authenticate, silently, by design); (2) the registration address is not routed to any \
proxy from this host (check `ip route get <registration address>`); (3) the proxies are down or unreachable \
(a firewall dropping UDP port 6082 either way). The agent keeps trying.";

/// Why the agent lost its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// No RegisterAck for `hold_ms`.
    Silent,
    /// The JAP answered a Refresh with Gone.
    Gone,
    /// The JAP is draining.
    Draining,
}

/// What happened, for logs and the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEvent {
    /// Registered with (or moved to) this JAP.
    Registered { jap: ProxyId },
    /// The registration with this JAP is lost; the agent registers again.
    JapLost { jap: ProxyId, reason: LostReason },
    /// Deregistration finished (shutdown, or the service went down).
    Deregistered,
    /// A JAP refused the registration (Full or Draining).
    Refused { jap: ProxyId, status: RegAckStatus },
    /// `attempts` Registers in a row, the first `waited` ago, drew no authenticated reply: the agent's user
    /// should be told why (see [`UNANSWERED_HINT`]). Repeated at every doubling of `attempts`.
    Unanswered { attempts: u32, waited: Duration },
    /// An authenticated reply arrived after an [`AgentEvent::Unanswered`].
    Answered { after_attempts: u32 },
    /// The health check failed `fall` times in a row: the agent deregisters (SPEC.md §10.3).
    ServiceDown,
    /// The health check passed (`rise` times in a row, or once at start): the agent registers.
    ServiceUp,
}

/// How a check-mode agent ([`AgentConfig::check`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// A JAP accepted the registration (the agent then deregistered).
    Registered { jap: ProxyId },
    /// No authenticated reply to `attempts` Registers (see [`UNANSWERED_HINT`]).
    Unanswered { attempts: u32 },
    /// A JAP authenticated the registration but refused it (Full or Draining).
    Refused { jap: ProxyId, status: RegAckStatus },
}

/// Why a received datagram was ignored. Nothing changed but the counter of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("datagram not from the registration address")]
    WrongSource,
    #[error("malformed reply: {0}")]
    Malformed(WireError),
    /// A message that is not a Challenge or RegisterAck for this group and service.
    #[error("not a reply for this registration")]
    NotForUs,
    #[error("bad MAC")]
    BadMac,
    #[error("replayed sequence number")]
    Replay,
    /// A valid reply that makes no sense in the current state (late or duplicated).
    #[error("reply unexpected in this state")]
    Unexpected,
}

counters! {
    /// Counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct AgentCounters("agent_") {
        sent_register,
        sent_refresh,
        sent_deregister,
        challenges,
        acks_ok,
        gone,
        full,
        draining,
        jap_lost,
        wrong_source,
        malformed,
        not_for_us,
        bad_mac,
        replay,
        unexpected,
        events_dropped,
        /// [`AgentEvent::Unanswered`] warnings emitted.
        unanswered_warnings,
        /// Health checks that passed.
        health_passed,
        /// Health checks that failed (or timed out).
        health_failed,
        /// Times the service went down (`fall` failures in a row): deregistrations for health.
        health_down,
        /// Times the service came up (`rise` passes in a row, or the first at start).
        health_up,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not registering (waiting for the health check to pass).
    Idle,
    /// Registering: `cookie` from a Challenge, `cookie_sent` once the Register carrying it went out.
    Registering {
        cookie: Option<[u8; COOKIE_LEN]>,
        cookie_sent: bool,
    },
    Registered {
        jap: ProxyId,
        last_ack: Instant,
    },
    BackingOff {
        until: Instant,
    },
    /// Deregistering since `since`; afterwards Idle (service down) or Stopped (shutdown).
    Leaving {
        since: Instant,
        then_idle: bool,
    },
    Stopped,
}

/// The agent's public state, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Idle,
    Registering,
    Registered { jap: ProxyId },
    BackingOff,
    Leaving,
    Stopped,
}

/// One target's registration agent. See the module documentation.
#[derive(Debug)]
pub struct TargetAgent {
    cfg: AgentConfig,
    phase: Phase,
    next_send: Instant,
    refresh: Duration,
    hold: Duration,
    /// Whether the service counts as up (always, without a health check); the consecutive failed and
    /// passed checks behind it; whether it was ever up (at start one pass suffices).
    healthy: bool,
    failures: u32,
    passes: u32,
    ever_healthy: bool,
    seq: SeqCounter,
    /// Window for Challenges (they name no JAP): reset when a registration starts from scratch.
    challenge_window: ReplayWindow,
    /// Windows for RegisterAcks, per JAP id, with the time of last use.
    ack_windows: [(ProxyId, ReplayWindow, Instant); JAP_WINDOWS],
    rng: crate::rng::SplitMix,
    events: VecDeque<AgentEvent>,
    counters: AgentCounters,
    /// Registers sent since the last authenticated reply, and when the first of them went out.
    unanswered: u32,
    unanswered_since: Instant,
    /// `unanswered` at which the next [`AgentEvent::Unanswered`] is due (doubles after each).
    warn_at: u32,
    /// Whether an [`AgentEvent::Unanswered`] is outstanding (an [`AgentEvent::Answered`] then follows).
    warned: bool,
    outcome: Option<CheckOutcome>,
    /// When the next health check is due, and whether one runs (its result not reported yet).
    next_check: Instant,
    checking: bool,
}

impl TargetAgent {
    /// An agent that starts registering at the first `poll_transmit` (with a health check: at the first
    /// passing check).
    pub fn new(cfg: AgentConfig) -> Result<Self, AgentConfigError> {
        cfg.validate()?;
        let phase = if cfg.health.is_some() {
            Phase::Idle
        } else {
            Phase::Registering {
                cookie: None,
                cookie_sent: false,
            }
        };
        Ok(TargetAgent {
            phase,
            next_send: Instant::ZERO,
            refresh: Duration::from_millis(u64::from(cfg.refresh_ms)),
            hold: Duration::from_millis(u64::from(cfg.hold_ms)),
            healthy: cfg.health.is_none(),
            failures: 0,
            passes: 0,
            ever_healthy: false,
            seq: SeqCounter::new(cfg.incarnation),
            challenge_window: ReplayWindow::default(),
            ack_windows: [(ProxyId::NONE, ReplayWindow::default(), Instant::ZERO); JAP_WINDOWS],
            rng: crate::rng::SplitMix::new(cfg.seed),
            events: VecDeque::with_capacity(EVENT_QUEUE),
            counters: AgentCounters::default(),
            unanswered: 0,
            unanswered_since: Instant::ZERO,
            warn_at: UNANSWERED_WARN_ATTEMPTS,
            warned: false,
            outcome: None,
            next_check: Instant::ZERO,
            checking: false,
            cfg,
        })
    }

    // ----- getters -----

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &AgentCounters {
        &self.counters
    }

    /// Where the agent stands.
    pub fn state(&self) -> AgentState {
        match self.phase {
            Phase::Idle => AgentState::Idle,
            Phase::Registering { .. } => AgentState::Registering,
            Phase::Registered { jap, .. } => AgentState::Registered { jap },
            Phase::BackingOff { .. } => AgentState::BackingOff,
            Phase::Leaving { .. } => AgentState::Leaving,
            Phase::Stopped => AgentState::Stopped,
        }
    }

    /// The JAP the agent is registered with, if any.
    pub fn jap(&self) -> Option<ProxyId> {
        match self.phase {
            Phase::Registered { jap, .. } => Some(jap),
            _ => None,
        }
    }

    /// The refresh interval and hold time in use (the JAP's, once it sent sane ones).
    pub fn timers(&self) -> (Duration, Duration) {
        (self.refresh, self.hold)
    }

    /// How a check-mode agent ended (`None` before the end, or when not in check mode).
    pub fn check_outcome(&self) -> Option<CheckOutcome> {
        self.outcome
    }

    // ----- internals -----

    fn push_event(&mut self, ev: AgentEvent) {
        if self.events.len() >= EVENT_QUEUE {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    /// Starts a registration from scratch at `at`: zero cookie, fresh Challenge window.
    fn restart(&mut self, at: Instant) {
        self.phase = Phase::Registering {
            cookie: None,
            cookie_sent: false,
        };
        self.challenge_window = ReplayWindow::default();
        self.next_send = at;
    }

    /// The index of `jap`'s Ack window, or of the least recently used one (to be replaced) and `false`.
    fn ack_window(&self, jap: ProxyId) -> (usize, bool) {
        if let Some(i) = self.ack_windows.iter().position(|w| w.0 == jap && jap.is_some()) {
            return (i, true);
        }
        let mut lru = 0;
        for (i, w) in self.ack_windows.iter().enumerate() {
            if w.2 < self.ack_windows[lru].2 || !w.0.is_some() && self.ack_windows[lru].0.is_some() {
                lru = i;
            }
        }
        (lru, false)
    }

    fn finish_leaving(&mut self, then_idle: bool) {
        self.phase = if then_idle { Phase::Idle } else { Phase::Stopped };
        self.push_event(AgentEvent::Deregistered);
    }

    /// Timer-driven transitions (idempotent).
    fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Registered { jap, last_ack } if now >= last_ack + self.hold => {
                if self.healthy {
                    self.counters.jap_lost += 1;
                    self.push_event(AgentEvent::JapLost {
                        jap,
                        reason: LostReason::Silent,
                    });
                }
                self.restart(now);
            }
            Phase::BackingOff { until } if now >= until => self.restart(now),
            Phase::Registering {
                cookie: Some(_),
                cookie_sent: true,
            } if now >= self.next_send => self.restart(now),
            Phase::Leaving { since, then_idle } if now >= since + self.hold => self.finish_leaving(then_idle),
            _ => {}
        }
    }

    // ----- input -----

    /// Handles a UDP datagram received from `from` (replies come from the registration address).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        payload: &[u8],
    ) -> Result<(), AgentError> {
        let r = self.handle_inner(now, from, payload);
        if let Err(e) = r {
            let c = &mut self.counters;
            match e {
                AgentError::WrongSource => c.wrong_source += 1,
                AgentError::Malformed(_) => c.malformed += 1,
                AgentError::NotForUs => c.not_for_us += 1,
                AgentError::BadMac => c.bad_mac += 1,
                AgentError::Replay => c.replay += 1,
                AgentError::Unexpected => c.unexpected += 1,
            }
        }
        r
    }

    fn handle_inner(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Result<(), AgentError> {
        if from != self.cfg.registration {
            return Err(AgentError::WrongSource);
        }
        let pkt = ControlPacket::new_checked(payload).map_err(AgentError::Malformed)?;
        let msg = pkt.message().map_err(AgentError::Malformed)?;
        let ours = match msg {
            Message::Challenge(c) => c.group == self.cfg.group,
            Message::RegisterAck(a) => a.group == self.cfg.group && a.service == self.cfg.service,
            _ => false,
        };
        if !ours {
            return Err(AgentError::NotForUs);
        }
        pkt.verify(&self.cfg.key, Binding::Target)
            .map_err(|_| AgentError::BadMac)?;
        let seq = pkt.header().seq;
        // Replies come from whichever proxy anycast reaches, each with its own sequence numbers: Acks are
        // checked per JAP id, Challenges in a window that starts afresh with each registration attempt.
        let (slot, known) = match msg {
            Message::RegisterAck(a) => self.ack_window(a.jap),
            _ => (0, true),
        };
        let fresh = match msg {
            Message::RegisterAck(_) if known => self.ack_windows[slot].1.check(seq),
            Message::RegisterAck(_) => true,
            _ => self.challenge_window.check(seq),
        };
        if !fresh {
            return Err(AgentError::Replay);
        }
        // Authenticated and fresh: a proxy is there and the key is right, whatever the reply says.
        self.note_answered();
        self.advance(now);
        let accepted = match msg {
            Message::Challenge(c) => match self.phase {
                Phase::Registering { cookie: None, .. } => {
                    self.counters.challenges += 1;
                    self.phase = Phase::Registering {
                        cookie: Some(c.cookie),
                        cookie_sent: false,
                    };
                    self.next_send = now;
                    true
                }
                _ => false,
            },
            Message::RegisterAck(a) => self.on_ack(now, a.status, a.jap, a.refresh_ms, a.hold_ms),
            _ => false,
        };
        if !accepted {
            return Err(AgentError::Unexpected);
        }
        match msg {
            Message::RegisterAck(a) => {
                let w = &mut self.ack_windows[slot];
                if !known {
                    *w = (a.jap, ReplayWindow::default(), now);
                }
                w.1.commit(seq);
                w.2 = now;
            }
            _ => {
                self.challenge_window.commit(seq);
            }
        }
        Ok(())
    }

    fn adopt_timers(&mut self, refresh_ms: u32, hold_ms: u32) {
        if (10..=60_000).contains(&refresh_ms) && hold_ms > refresh_ms && hold_ms <= 600_000 {
            self.refresh = Duration::from_millis(u64::from(refresh_ms));
            self.hold = Duration::from_millis(u64::from(hold_ms));
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        status: RegAckStatus,
        from_jap: ProxyId,
        refresh_ms: u32,
        hold_ms: u32,
    ) -> bool {
        match (status, self.phase) {
            (
                RegAckStatus::Ok,
                Phase::Registering {
                    cookie_sent: true, ..
                },
            ) => {
                self.counters.acks_ok += 1;
                self.adopt_timers(refresh_ms, hold_ms);
                self.phase = Phase::Registered {
                    jap: from_jap,
                    last_ack: now,
                };
                self.next_send = now + self.refresh;
                self.push_event(AgentEvent::Registered { jap: from_jap });
                self.end_check(now, CheckOutcome::Registered { jap: from_jap });
                true
            }
            (RegAckStatus::Ok, Phase::Registered { jap, .. }) => {
                self.counters.acks_ok += 1;
                self.adopt_timers(refresh_ms, hold_ms);
                self.phase = Phase::Registered {
                    jap: from_jap,
                    last_ack: now,
                };
                if jap != from_jap {
                    self.push_event(AgentEvent::Registered { jap: from_jap });
                }
                true
            }
            (RegAckStatus::Gone, Phase::Registered { jap, .. }) => {
                self.counters.gone += 1;
                self.counters.jap_lost += 1;
                self.push_event(AgentEvent::JapLost {
                    jap,
                    reason: LostReason::Gone,
                });
                self.restart(now);
                true
            }
            (RegAckStatus::Gone, Phase::Leaving { then_idle, .. }) => {
                self.counters.gone += 1;
                self.finish_leaving(then_idle);
                true
            }
            (
                RegAckStatus::Full,
                Phase::Registering {
                    cookie_sent: true, ..
                },
            ) => {
                self.counters.full += 1;
                self.push_event(AgentEvent::Refused {
                    jap: from_jap,
                    status,
                });
                let base = u64::from(self.cfg.full_backoff_ms);
                let jitter = self.rng.next_u64() % (base / 4 + 1);
                self.phase = Phase::BackingOff {
                    until: now + Duration::from_millis(base + jitter),
                };
                self.end_check(
                    now,
                    CheckOutcome::Refused {
                        jap: from_jap,
                        status,
                    },
                );
                true
            }
            (
                RegAckStatus::Draining,
                Phase::Registering {
                    cookie_sent: true, ..
                }
                | Phase::Registered { .. },
            ) => {
                self.counters.draining += 1;
                if let Phase::Registered { jap, .. } = self.phase {
                    self.counters.jap_lost += 1;
                    self.push_event(AgentEvent::JapLost {
                        jap,
                        reason: LostReason::Draining,
                    });
                    self.restart(now + self.refresh);
                } else {
                    self.push_event(AgentEvent::Refused {
                        jap: from_jap,
                        status,
                    });
                    self.restart(now + self.refresh);
                    self.end_check(
                        now,
                        CheckOutcome::Refused {
                            jap: from_jap,
                            status,
                        },
                    );
                }
                true
            }
            _ => false,
        }
    }

    /// Starts deregistering (Deregister until Gone or `hold_ms`) when a JAP may hold the registration
    /// (registered, or a Register with a cookie sent); afterwards Idle (`then_idle`) or Stopped. Returns
    /// whether it did.
    fn start_leaving(&mut self, now: Instant, then_idle: bool) -> bool {
        match self.phase {
            Phase::Registered { .. }
            | Phase::Registering {
                cookie_sent: true, ..
            } => {
                self.phase = Phase::Leaving {
                    since: now,
                    then_idle,
                };
                self.next_send = now;
                true
            }
            _ => false,
        }
    }

    /// Timer: call at [`TargetAgent::poll_timeout`]. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Starts deregistration (Deregister until Gone or `hold_ms`), or stops at once if not registered.
    pub fn shutdown(&mut self, now: Instant) {
        if self.start_leaving(now, false) {
            return;
        }
        match self.phase {
            Phase::Leaving { since, .. } => {
                self.phase = Phase::Leaving {
                    since,
                    then_idle: false,
                }
            }
            Phase::Stopped => {}
            _ => self.finish_leaving(false),
        }
    }

    // ----- output -----

    /// When [`TargetAgent::handle_timeout`], [`TargetAgent::poll_transmit`] or (with a health check)
    /// [`TargetAgent::poll_health_check`] has work. `None` when the agent waits only for input (a running
    /// health check's result, a reply) or has stopped.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.own_timeout();
        if !self.checks_due() {
            return own;
        }
        Some(own.map_or(self.next_check, |t| t.min(self.next_check)))
    }

    fn own_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle | Phase::Stopped => None,
            Phase::Registering { .. } => self.healthy.then_some(self.next_send),
            Phase::Registered { last_ack, .. } => {
                let lost = last_ack + self.hold;
                Some(if self.healthy {
                    lost.min(self.next_send)
                } else {
                    lost
                })
            }
            Phase::BackingOff { until } => Some(until),
            Phase::Leaving { since, .. } => Some((since + self.hold).min(self.next_send)),
        }
    }

    /// Writes the next message due into `buf` (the payload of a UDP datagram to the registration address)
    /// and returns its length. `None` if nothing is due or `buf` is too small (then nothing changed).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.advance(now);
        if now < self.next_send {
            return None;
        }
        if matches!(self.phase, Phase::Registering { .. }) && self.healthy {
            self.warn_if_unanswered(now);
        }
        let (g, s) = (self.cfg.group, self.cfg.service);
        let op = TargetOp { group: g, service: s };
        let msg = match self.phase {
            Phase::Registering { cookie, .. } if self.healthy => Message::Register(Register {
                group: g,
                service: s,
                mode: self.cfg.mode,
                weight: self.cfg.weight.max(1),
                cookie: cookie.unwrap_or([0; COOKIE_LEN]),
            }),
            Phase::Registered { .. } if self.healthy => Message::Refresh(op),
            Phase::Leaving { .. } => Message::Deregister(op),
            _ => return None,
        };
        let mut probe = self.seq;
        let hdr = ControlHeader {
            sender: ProxyId::NONE,
            seq: probe.next_seq(),
            time_ms: 0,
        };
        let n = msg.emit(hdr, &self.cfg.key, Binding::Target, buf).ok()?;
        self.seq = probe;
        self.next_send = now + self.refresh;
        match msg {
            Message::Register(r) => {
                self.counters.sent_register += 1;
                if self.unanswered == 0 {
                    self.unanswered_since = now;
                }
                self.unanswered = self.unanswered.saturating_add(1);
                if r.cookie != [0; COOKIE_LEN] {
                    self.phase = Phase::Registering {
                        cookie: Some(r.cookie),
                        cookie_sent: true,
                    };
                }
            }
            Message::Refresh(_) => self.counters.sent_refresh += 1,
            _ => self.counters.sent_deregister += 1,
        }
        Some(n)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }
}
