//! Telling the agent's user what the JAPs do not say: the Unanswered / Answered warnings, and the end of a
//! check-mode run (SPEC.md §10.2).

use super::*;

impl TargetAgent {
    /// In check mode, ends the check with `outcome` (the first one counts).
    pub(super) fn end_check(&mut self, now: Instant, outcome: CheckOutcome) {
        if !self.cfg.check || self.outcome.is_some() {
            return;
        }
        self.outcome = Some(outcome);
        match outcome {
            CheckOutcome::Registered { .. } => self.shutdown(now),
            _ => self.phase = Phase::Stopped,
        }
    }

    /// Before the next Register goes out: warns when the ones already sent went unanswered long enough
    /// (so the warning comes with the next attempt after the threshold, or once the first is old enough).
    pub(super) fn warn_if_unanswered(&mut self, now: Instant) {
        if self.unanswered == 0 {
            return;
        }
        let waited = now.saturating_since(self.unanswered_since);
        let first_due = !self.warned && waited >= UNANSWERED_WARN_AFTER;
        if self.unanswered >= self.warn_at || first_due {
            let attempts = self.unanswered;
            self.warned = true;
            self.warn_at = attempts.saturating_mul(2).max(UNANSWERED_WARN_ATTEMPTS);
            self.counters.unanswered_warnings += 1;
            self.push_event(AgentEvent::Unanswered { attempts, waited });
            self.end_check(now, CheckOutcome::Unanswered { attempts });
        }
    }

    /// An authenticated reply arrived.
    pub(super) fn note_answered(&mut self) {
        if self.warned {
            self.push_event(AgentEvent::Answered {
                after_attempts: self.unanswered,
            });
        }
        self.unanswered = 0;
        self.warned = false;
        self.warn_at = UNANSWERED_WARN_ATTEMPTS;
    }
}
