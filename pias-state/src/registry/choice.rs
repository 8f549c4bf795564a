//! How the JAP chooses a target for a new flow (SPEC.md §9.5, §13.3): the weighted slot table, weighted
//! rendezvous (HRW) for `exclude_sender` / `scope_prefix`, `random` and `replicate`.

use super::*;

fn mix(h: u64, slot: u32) -> u64 {
    crate::rng::mix(
        h ^ u64::from(slot)
            .wrapping_add(1)
            .wrapping_mul(0xd6e8_feb8_6659_fd93),
    )
}

/// Whether `a` and `b` share their first `bits` bits (same family only).
pub(super) fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            let n = u32::from(bits.min(32));
            let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            u32::from(x) & mask == u32::from(y) & mask
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            let n = u32::from(bits.min(128));
            let mask = if n == 0 { 0 } else { u128::MAX << (128 - n) };
            u128::from(x) & mask == u128::from(y) & mask
        }
        _ => false,
    }
}

/// Weighted rendezvous score of a target for a hash (higher wins): `w / -ln(u)` with `u` uniform in (0, 1).
fn hrw_score(h: u64, slot: u32, weight: u16) -> f64 {
    let u = ((mix(h, slot) >> 11) | 1) as f64 / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

impl Registry {
    /// Rebuilds the group's slot table if its target set changed since the last build.
    fn fresh_table(&mut self, gh: u64, group: &TransportAddr) -> Option<&GroupState> {
        let g = self.groups.find_mut(gh, |g| g.group == *group)?;
        if g.table_stale {
            self.weights.clear();
            for &s in &g.members {
                let w = self
                    .regs
                    .get(s as usize)
                    .and_then(|r| r.as_ref())
                    .map_or(1, |r| r.weight);
                self.weights.push((s, u32::from(w)));
            }
            g.table.rebuild(&self.flow_key, &self.weights, &mut self.scratch);
            g.table_stale = false;
            self.counters.tables_built += 1;
        }
        Some(g)
    }

    /// The group's slot table (SPEC.md §13.3) for the XDP map sync: the registration indexes, ascending, and
    /// the slots (each an index into them); a flow's target is `members[slots[flow_hash mod slots.len()]]`.
    /// Rebuilt first if the target set changed. `None` if the group has no state here.
    pub fn slot_table(&mut self, group: &TransportAddr) -> Option<(&[u32], &[u16])> {
        let gh = self.hash_group(group);
        let g = self.fresh_table(gh, group)?;
        Some((&g.table.members, &g.table.slots))
    }

    /// Picks the target(s) for a new flow of `group` (SPEC.md §9.5). `flow_hash` is the flow's hash
    /// (§13.2). `None` if the group has no live target here (counted `no_target`) or the options exclude
    /// every target (counted `no_eligible_target`).
    ///
    /// Default: the group's weighted slot table (§13.3), rebuilt on the first choice after its target set
    /// changed (not per packet). With `exclude_sender` or `scope_prefix`, the table's choice is kept when it
    /// qualifies, otherwise the qualifying target of highest weighted rendezvous score for the flow is chosen
    /// (consistent per flow, weights respected). `random` replaces the flow hash with the seeded generator.
    /// `replicate` adds the next distinct qualifying targets by rendezvous score. Allocation-free except
    /// for the table rebuild after a change.
    pub fn choose_target(
        &mut self,
        group: &TransportAddr,
        flow: &FlowKey,
        flow_hash: u64,
        opts: &TargetOptions,
    ) -> Option<TargetChoice> {
        self.choose(None, group, flow, flow_hash, opts)
    }

    /// [`Registry::choose_target`] for a new flow at `now`, heeding the passive watch (SPEC.md §10.4): when
    /// the choice falls on a suspect target, the qualifying target of highest rendezvous score that is not
    /// suspect is chosen instead (counted `suspect_avoided`); when every qualifying target is suspect, the
    /// watch is ignored (counted `suspect_ignored`): it never takes the last target out.
    pub fn choose_target_at(
        &mut self,
        now: Instant,
        group: &TransportAddr,
        flow: &FlowKey,
        flow_hash: u64,
        opts: &TargetOptions,
    ) -> Option<TargetChoice> {
        self.choose(Some(now), group, flow, flow_hash, opts)
    }

    fn choose(
        &mut self,
        now: Option<Instant>,
        group: &TransportAddr,
        flow: &FlowKey,
        flow_hash: u64,
        opts: &TargetOptions,
    ) -> Option<TargetChoice> {
        let h = if opts.random {
            self.rng.next_u64()
        } else {
            flow_hash
        };
        let gh = self.hash_group(group);
        if self.group(group).is_none_or(|g| g.members.is_empty()) {
            self.counters.no_target += 1;
            return None;
        }
        self.fresh_table(gh, group)?;
        let g = self.groups.find(gh, |g| g.group == *group)?;
        let regs = &self.regs;
        let reg = |s: u32| regs.get(s as usize).and_then(|r| r.as_ref());
        let is_sender = |s: u32| opts.exclude_sender && reg(s).is_some_and(|r| r.service.ip == flow.src);
        let in_scope = |s: u32, bits: u8| reg(s).is_some_and(|r| same_prefix(r.service.ip, flow.src, bits));
        // Scope applies only if some non-excluded target is in it.
        let scope = opts
            .scope_prefix
            .filter(|&bits| g.members.iter().any(|&s| !is_sender(s) && in_scope(s, bits)));
        let eligible = |s: u32| !is_sender(s) && scope.is_none_or(|bits| in_scope(s, bits));
        let to_ref = |s: u32| {
            reg(s).map(|r| TargetRef {
                slot: s,
                service: r.service,
                mode: r.mode,
            })
        };

        let mut primary = match g.table.pick(h).filter(|&s| eligible(s)) {
            Some(s) => Some(s),
            None => best_hrw(&g.members, h, regs, &eligible, &[]),
        };
        // The passive watch: a suspect target gets no new flow while another qualifies.
        let mut suspected = None;
        if let (Some(p), Some(now)) = (primary, now) {
            let (watch, window) = (&self.watch, self.watch_window());
            if watch::suspect_in(watch, p, now, window) {
                let healthy = |s: u32| eligible(s) && !watch::suspect_in(watch, s, now, window);
                match best_hrw(&g.members, h, regs, &healthy, &[]) {
                    Some(alt) => {
                        self.counters.suspect_avoided += 1;
                        suspected = Some((p, now));
                        primary = Some(alt);
                    }
                    None => self.counters.suspect_ignored += 1,
                }
            }
        }
        let Some(primary) = primary.and_then(to_ref) else {
            self.counters.no_eligible_target += 1;
            return None;
        };
        let mut choice = TargetChoice::one(primary);
        let r = usize::from(opts.replicate).min(MAX_REPLICAS);
        if r >= 2 && flow.proto == IpProtocol::Udp {
            let mut taken = [NIL; MAX_REPLICAS];
            taken[0] = primary.slot;
            for i in 1..r {
                let Some(next) = best_hrw(&g.members, h, regs, &eligible, &taken[..i]).and_then(to_ref)
                else {
                    break;
                };
                taken[i] = next.slot;
                choice.targets[i] = Some(next);
            }
        }
        if let Some((p, now)) = suspected {
            self.watch_suspect(p, now);
        }
        Some(choice)
    }
}

/// The eligible member not in `taken` with the highest weighted rendezvous score for `h`.
fn best_hrw(
    members: &[u32],
    h: u64,
    regs: &[Option<Reg>],
    eligible: &impl Fn(u32) -> bool,
    taken: &[u32],
) -> Option<u32> {
    let mut best: Option<(f64, u32)> = None;
    for &s in members {
        if taken.contains(&s) || !eligible(s) {
            continue;
        }
        let w = regs
            .get(s as usize)
            .and_then(|r| r.as_ref())
            .map_or(1, |r| r.weight);
        let score = hrw_score(h, s, w);
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, s));
        }
    }
    best.map(|(_, s)| s)
}
