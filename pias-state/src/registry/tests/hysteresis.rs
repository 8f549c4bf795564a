//! Reported counts under churn stay within the hysteresis band (SPEC.md §9.1).

use super::*;

// ----- hysteresis under churn -----

/// 1000 possible targets of one group register, refresh, deregister and go silent at random; the registry's
/// reports are committed as the JAP glue would. Returns (reports, changes of the true count).
fn churn(
    band: u8,
    seed: u64,
    steps: usize,
    pool: u16,
    check: &mut dyn FnMut(u32, Option<u32>, u8),
) -> (usize, usize) {
    // Hundreds of targets of one /24 register within milliseconds here: no reply rate limit (§8.4).
    let cfg = RegistryConfig {
        band_percent: band,
        reply_burst: 1_000_000,
        ..RegistryConfig::default()
    };
    let mut reg = registry_with(cfg, 1);
    let key = MasterKey::from_bytes(MASTER).group_key(&group());
    let g = group();
    let mut rng = crate::rng::SplitMix::new(seed | 1);
    let next = |rng: &mut crate::rng::SplitMix| rng.next_u64();
    // Per target: live?, silent?, next sequence number, last refresh.
    let mut live = vec![false; usize::from(pool)];
    let mut silent = vec![false; usize::from(pool)];
    let mut seq = vec![1u64; usize::from(pool)];
    let mut last = vec![Instant::ZERO; usize::from(pool)];
    let (mut reports, mut changes) = (0usize, 0usize);
    let mut now = Instant::ZERO;
    let mut prev_count = 0;
    for i in 0..pool / 2 {
        let i = usize::from(i);
        register_direct(
            &mut reg,
            now,
            agent_addr(i as u16),
            &key,
            &g,
            &service(i as u16),
            1,
            seq[i],
        )
        .unwrap();
        seq[i] += 2;
        live[i] = true;
        last[i] = now;
    }
    for _ in 0..steps {
        now += Duration::from_millis(2);
        let i = (next(&mut rng) % u64::from(pool)) as usize;
        let (from, s) = (agent_addr(i as u16), service(i as u16));
        if live[i] && !silent[i] {
            if next(&mut rng) & 1 == 0 {
                reg.handle_target_packet(now, reg_addr(), from, &op_bytes(&key, &g, &s, seq[i], false))
                    .unwrap();
                seq[i] += 1;
                live[i] = false;
            } else {
                silent[i] = true;
            }
        } else if !live[i] {
            register_direct(&mut reg, now, from, &key, &g, &s, 1, seq[i]).unwrap();
            seq[i] += 2;
            live[i] = true;
            silent[i] = false;
            last[i] = now;
        }
        for j in 0..usize::from(pool) {
            if live[j] && !silent[j] && now - last[j] >= Duration::from_millis(200) {
                let (from, s) = (agent_addr(j as u16), service(j as u16));
                reg.handle_target_packet(now, reg_addr(), from, &op_bytes(&key, &g, &s, seq[j], true))
                    .unwrap();
                seq[j] += 1;
                last[j] = now;
            }
        }
        reg.handle_timeout(now);
        while reg.poll_transmit(&mut [0u8; 200]).is_some() {}
        for ev in events(&mut reg) {
            if let RegistryEvent::TargetDown {
                service,
                reason: DownReason::Expired,
                ..
            } = ev
            {
                let j = usize::from(u16::from_be_bytes(match service.ip {
                    IpAddr::V4(a) => [a.octets()[2], a.octets()[3]],
                    IpAddr::V6(_) => unreachable!(),
                }));
                live[j] = false;
                silent[j] = false;
            }
        }
        while let Some(r) = reg.poll_report() {
            reports += 1;
            reg.commit_report(&r.group, r.count, r.flags);
        }
        let count = reg.group_count(&g);
        assert_eq!(count as usize, live.iter().filter(|&&l| l).count());
        changes += usize::from(count != prev_count);
        prev_count = count;
        let reported = reg.groups().find(|gi| gi.group == g).and_then(|gi| gi.reported);
        check(count, reported, band);
    }
    (reports, changes)
}

fn assert_in_band(t: u32, r: Option<u32>, band: u8) {
    let r = r.unwrap_or(0);
    let d = u64::from(r) * u64::from(band) / 100;
    assert!(
        u64::from(t).abs_diff(u64::from(r)) <= d,
        "true {t} reported {r} band {band}"
    );
    assert_eq!(t == 0, r == 0);
}

#[test]
fn churn_reports_are_bounded_by_the_band() {
    let (r0, c0) = churn(0, 42, 3000, 1000, &mut assert_in_band);
    let (r25, c25) = churn(25, 42, 3000, 1000, &mut assert_in_band);
    eprintln!(
        "churn of 1000 targets, 3000 steps: band 0 → {r0} reports ({c0} count changes), band 25 → {r25}"
    );
    assert_eq!(c0, c25, "same churn");
    assert!(r0 >= c0, "band 0 reports every change");
    assert!(r0 >= 10 * r25, "band 0: {r0}, band 25: {r25}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn reported_count_stays_in_band(band in 0u8..=60, seed: u64) {
        churn(band, seed, 400, 60, &mut assert_in_band);
    }
}
