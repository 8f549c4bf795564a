//! The per-group counts the JAP reports to RAPs (SPEC.md §9.1), with hysteresis and emit-then-commit.

use super::*;

impl Registry {
    /// Queues the group for a report if one is due and it is not queued yet.
    pub(super) fn check_report(&mut self, group: &TransportAddr) {
        let mut push = false;
        if let Some(g) = self.group_mut(group)
            && !g.queued
            && g.report_due()
        {
            g.queued = true;
            push = true;
        }
        if push {
            self.reports.push_back(*group);
        }
    }

    /// The next group whose count report is due (SPEC.md §9.1). Send it to the group's RAPs, then call
    /// [`Registry::commit_report`] with the same values; a report not committed is offered again at the
    /// group's next change.
    pub fn poll_report(&mut self) -> Option<GroupReport> {
        while let Some(group) = self.reports.pop_front() {
            let Some(g) = self.group_mut(&group) else { continue };
            g.queued = false;
            if g.report_due() {
                return Some(GroupReport {
                    group,
                    count: g.count(),
                    flags: g.flags(),
                });
            }
            self.drop_group_if_idle(&group);
        }
        None
    }

    /// Records that `count` and `flags` were reported for `group` (the commit of emit-then-commit).
    pub fn commit_report(&mut self, group: &TransportAddr, count: u32, flags: u8) {
        let Some(g) = self.group_mut(group) else { return };
        g.hyst.commit(count);
        g.reported_flags = flags;
        self.counters.reports_committed += 1;
        self.check_report(group);
        self.drop_group_if_idle(group);
    }

    /// Every group's last committed report, for the periodic full re-send (`report_refresh`).
    pub fn reported(&self) -> impl Iterator<Item = GroupReport> + '_ {
        self.groups.iter().filter_map(|g| {
            g.hyst.reported.map(|count| GroupReport {
                group: g.group,
                count,
                flags: g.reported_flags,
            })
        })
    }

    /// One group's last committed report (`None` if it never committed one): a keyed lookup, so re-reporting
    /// after a ring change costs one probe per moved group, not a walk of every group.
    pub fn reported_of(&self, group: &TransportAddr) -> Option<GroupReport> {
        let g = self.group(group)?;
        g.hyst.reported.map(|count| GroupReport {
            group: g.group,
            count,
            flags: g.reported_flags,
        })
    }
}
