//! Experiment 2: membership at growing overlay sizes. For each size: join, steady-state messages and bytes
//! per proxy per second, the same at rest under uniform and heavy-tailed latency jitter (records applied,
//! bytes, false suspicions), convergence after a crash (every live proxy marks it Down), messages under churn
//! (crashes and restarts), and convergence after a partition between transit domains heals (every proxy sees
//! every live proxy usable again). Growth laws are fitted by least squares and extrapolated to 10^5.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::HashSet;

use super::fit::{Fit, fit_all};
use super::plot::{Chart, Series, Style};
use super::{Output, csv_line, f3, join, make_topology, params, world};
use crate::topology::Rng;
use crate::{Jitter, MemberNews, Sim};

params! {
    /// Parameters of the membership experiment.
    pub struct MembershipParams {
        seed: u64 = 1,
        sizes: Vec<usize> = vec![100, 200, 400, 700, 1000],
        /// Measure from this long after the proxies started (and at least 5 s after the join): network
        /// coordinates re-flood 1, 2, 4, … 32 s after start, then at most every 60 s, so the steady state
        /// starts after about 65 s; the same start for every size keeps the re-flood phase comparable.
        settle_s: f64 = 100.0,
        /// Steady-state measurement window (s).
        steady_s: f64 = 10.0,
        /// Churn window (s).
        churn_s: f64 = 10.0,
        /// Proxy crashes per second during churn (each crashed proxy restarts 2 s later).
        churn_per_s: f64 = 1.0,
        /// Partition/heal measured up to this size (the heal floods n²/2 records).
        partition_max: usize = 1000,
        /// How long the partition lasts (s).
        partition_s: f64 = 6.0,
        topo: String = String::new(),
        /// Latency jitter of the first jitter phase (`none`, `uniform:FRAC`, `pareto:FRAC:ALPHA`).
        jitter: String = "uniform:0.2".to_string(),
        /// Latency jitter of the second, heavy-tailed phase.
        jitter_tail: String = "pareto:0.1:1.5".to_string(),
        /// Each jitter phase runs this long before its measurement window (`steady_s`) starts (s).
        jitter_settle_s: f64 = 20.0,
        /// Membership `coord_flood_spacing` (s; SPEC.md §7.5); negative: the proxies' default. 0 turns the
        /// overlay-wide limit of coordinate re-floods off (to see what the RTT filter alone does).
        coord_flood_spacing_s: f64 = -1.0,
    }
}

impl MembershipParams {
    /// A small version (tests).
    pub fn small() -> Self {
        MembershipParams {
            sizes: vec![20, 40],
            steady_s: 2.0,
            settle_s: 2.0,
            churn_s: 2.0,
            partition_s: 4.0,
            jitter_settle_s: 2.0,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Row {
    n: usize,
    join_s: f64,
    steady: f64,
    steady_bytes: f64,
    churn: f64,
    detect_s: f64,
    converge_s: f64,
    heal_s: f64,
    nbrs: f64,
    /// Steady state per proxy per second: probes+acks, flood messages, anti-entropy messages, records applied.
    kinds: [f64; 4],
    /// Suspicions raised per proxy per second at rest (all false: nobody crashed).
    steady_suspects: f64,
    /// Per jitter phase (uniform, heavy-tailed): records applied, bytes sent and suspicions raised, each
    /// per proxy per second.
    jit: [[f64; 3]; 2],
    wall_s: f64,
}

fn sent(sim: &Sim) -> (u64, u64) {
    (sim.overlay_sent.iter().sum(), sim.overlay_bytes.iter().sum())
}

fn kinds(sim: &Sim) -> [u64; 4] {
    let mut k = [0u64; 4];
    for i in 0..sim.proxy_count() {
        if let Some(p) = sim.proxy(i) {
            let c = p.membership().counters();
            k[0] += c.probes_sent + c.acks_sent;
            k[1] += c.floods;
            k[2] += c.ae_digests_sent + c.ae_pulls_sent + c.ae_records_sent;
            k[3] += c.records_applied;
        }
    }
    k
}

fn suspects(sim: &Sim) -> u64 {
    (0..sim.proxy_count())
        .filter_map(|i| sim.proxy(i))
        .map(|p| p.membership().counters().suspects)
        .sum()
}

fn live(sim: &Sim) -> usize {
    (0..sim.proxy_count()).filter(|&i| sim.proxy(i).is_some()).count()
}

fn one_size(p: &MembershipParams, n: usize) -> Result<Row, String> {
    let wall = std::time::Instant::now();
    let debug = std::env::var_os("PIAS_SIM_DEBUG").is_some();
    let phase = |what: &str| {
        if debug {
            eprintln!(
                "membership {n}: {what} done at {:.1} s wall",
                wall.elapsed().as_secs_f64()
            );
        }
    };
    let topo = make_topology(p.seed, &p.topo)?;
    let mut rng = Rng::new(p.seed ^ n as u64);
    let spacing = p.coord_flood_spacing_s;
    let mut sim = world(p.seed, topo.clone(), n, &mut rng, |c| {
        if spacing >= 0.0 {
            c.membership.coord_flood_spacing = Duration::from_secs_f64(spacing);
        }
    });
    let join_t =
        join(&mut sim, Duration::from_secs(300)).ok_or(format!("{n} proxies did not join in 300 s"))?;
    let settle = (p.settle_s - join_t.as_secs_f64()).max(5.0);
    sim.run_for(Duration::from_secs_f64(settle));
    let mut row = Row {
        n,
        join_s: join_t.as_secs_f64(),
        ..Row::default()
    };
    row.nbrs = (0..n)
        .filter_map(|i| sim.proxy(i))
        .map(|x| x.membership().neighbours().count())
        .sum::<usize>() as f64
        / n as f64;
    phase("join and settle");
    // Steady state.
    let (m0, b0) = sent(&sim);
    let k0 = kinds(&sim);
    let s0 = suspects(&sim);
    sim.run_for(Duration::from_secs_f64(p.steady_s));
    let (m1, b1) = sent(&sim);
    let k1 = kinds(&sim);
    for j in 0..4 {
        row.kinds[j] = (k1[j] - k0[j]) as f64 / n as f64 / p.steady_s;
    }
    row.steady = (m1 - m0) as f64 / n as f64 / p.steady_s;
    row.steady_bytes = (b1 - b0) as f64 / n as f64 / p.steady_s;
    row.steady_suspects = (suspects(&sim) - s0) as f64 / n as f64 / p.steady_s;
    // Jitter: the same world at rest with noisy latencies, first uniform then heavy-tailed. Coordinates move
    // with every noisy sample; what matters is how many records that re-floods.
    for (j, model) in [&p.jitter, &p.jitter_tail].into_iter().enumerate() {
        sim.set_jitter(Jitter::parse(model)?);
        sim.run_for(Duration::from_secs_f64(p.jitter_settle_s));
        let (_, b0) = sent(&sim);
        let k0 = kinds(&sim);
        let s0 = suspects(&sim);
        sim.run_for(Duration::from_secs_f64(p.steady_s));
        let (_, b1) = sent(&sim);
        let k1 = kinds(&sim);
        let per = |x: u64| x as f64 / n as f64 / p.steady_s;
        row.jit[j] = [per(k1[3] - k0[3]), per(b1 - b0), per(suspects(&sim) - s0)];
    }
    sim.set_jitter(Jitter::None);
    sim.run_for(Duration::from_secs(5));
    phase("steady and jitter");
    // Crash.
    sim.watch_members(true);
    let victim = 1 + rng.below(n - 1);
    let vid = pias_proto::ProxyId(victim as u32 + 1);
    sim.crash_proxy(victim);
    let t0 = sim.now();
    let need = live(&sim);
    let mut seen = HashSet::new();
    let mut first = None;
    let mut last = None;
    for _ in 0..120 {
        sim.run_for(Duration::from_millis(250));
        for e in sim.take_member_log() {
            if e.about == vid && e.news == MemberNews::Down && seen.insert(e.by) {
                first.get_or_insert(e.at);
                last = Some(e.at);
            }
        }
        if seen.len() >= need {
            break;
        }
    }
    row.detect_s = first.map_or(f64::NAN, |t| (t - t0).as_secs_f64());
    row.converge_s = if seen.len() >= need {
        last.map_or(f64::NAN, |t| (t - t0).as_secs_f64())
    } else {
        f64::NAN
    };
    sim.restart_proxy(victim);
    sim.run_for(Duration::from_secs(5));
    phase("crash");
    // Churn: a crash every 1/rate s, each crashed proxy restarting 2 s later.
    let (m0, _) = sent(&sim);
    let steps = (p.churn_s * 10.0).round() as usize;
    let every = ((10.0 / p.churn_per_s).round() as usize).max(1);
    let mut down: Vec<(usize, usize)> = Vec::new();
    for s in 0..steps {
        if s % every == 0 {
            let v = 1 + rng.below(n - 1);
            if sim.proxy(v).is_some() {
                sim.crash_proxy(v);
                down.push((s + 20, v));
            }
        }
        while let Some(&(at, v)) = down.first() {
            if at > s {
                break;
            }
            sim.restart_proxy(v);
            down.remove(0);
        }
        sim.run_for(Duration::from_millis(100));
    }
    let (m1, _) = sent(&sim);
    row.churn = (m1 - m0) as f64 / n as f64 / p.churn_s;
    for (_, v) in down {
        sim.restart_proxy(v);
    }
    sim.run_for(Duration::from_secs(10));
    sim.take_member_log();
    phase("churn");
    // Partition between transit domains, then heal.
    row.heal_s = f64::NAN;
    if n <= p.partition_max {
        let domains = (0..topo.stubs())
            .map(|s| topo.domain_of_stub(s))
            .max()
            .unwrap_or(0)
            + 1;
        let side = |i: usize| -> bool {
            let node = sim.proxies[i].at.map_or(0, |a| a.node as usize);
            if domains > 1 {
                topo.domain_of_stub(topo.stub_of(node)) < domains / 2
            } else {
                i.is_multiple_of(2)
            }
        };
        let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| side(i));
        let mut bad: HashSet<(usize, u32)> = HashSet::new();
        let apply = |bad: &mut HashSet<(usize, u32)>, sim: &mut Sim| {
            for e in sim.take_member_log() {
                match e.news {
                    MemberNews::Down | MemberNews::Suspect => {
                        bad.insert((e.by, e.about.0));
                    }
                    MemberNews::Up => {
                        bad.remove(&(e.by, e.about.0));
                    }
                }
            }
        };
        sim.partition(&a, &b);
        sim.run_for(Duration::from_secs_f64(p.partition_s));
        apply(&mut bad, &mut sim);
        sim.heal();
        let t0 = sim.now();
        for _ in 0..240 {
            sim.run_for(Duration::from_millis(250));
            apply(&mut bad, &mut sim);
            if std::env::var_os("PIAS_SIM_DEBUG").is_some() {
                eprintln!("heal +{:?}: {} pairs bad", sim.now() - t0, bad.len());
            }
            if bad.is_empty() {
                row.heal_s = (sim.now() - t0).as_secs_f64();
                break;
            }
        }
    }
    phase("partition and heal");
    row.wall_s = wall.elapsed().as_secs_f64();
    Ok(row)
}

fn fit_block(md: &mut String, what: &str, pts: &[(f64, f64)]) -> Option<Fit> {
    let fits = fit_all(pts);
    let best = *fits.first()?;
    let _ = writeln!(
        md,
        "\n**{what}** — fits (best first, by AICc):\n\n| law | fit | RMSE | at 10^5 |\n|---|---|---|---|"
    );
    for f in &fits {
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {:.3} |",
            f.model.name(),
            f.describe(),
            f.rmse,
            f.eval(1e5)
        );
    }
    Some(best)
}

fn curve(f: &Fit, lo: f64) -> Vec<(f64, f64)> {
    (0..=40)
        .map(|i| {
            let n = lo * (1e5 / lo).powf(f64::from(i) / 40.0);
            (n, f.eval(n))
        })
        .collect()
}

/// Runs the membership experiment.
pub fn membership(p: &MembershipParams, log: &mut dyn FnMut(&str)) -> Result<Output, String> {
    let mut o = Output::new("membership");
    let mut rows = Vec::new();
    for &n in &p.sizes {
        log(&format!("membership: {n} proxies"));
        let r = one_size(p, n)?;
        log(&format!(
            "membership: {n} proxies: steady {:.2} msg/proxy/s, churn {:.2}, crash converge {:.2} s, heal {:.2} s, wall {:.1} s",
            r.steady, r.churn, r.converge_s, r.heal_s, r.wall_s
        ));
        rows.push(r);
    }
    let mut csv = String::from(
        "proxies,join_s,neighbours,steady_msgs_per_proxy_s,steady_bytes_per_proxy_s,steady_probe_ack_msgs,steady_flood_msgs,steady_ae_msgs,steady_records_applied,steady_suspects_per_proxy_s,jitter_records_per_proxy_s,jitter_bytes_per_proxy_s,jitter_suspects_per_proxy_s,tail_records_per_proxy_s,tail_bytes_per_proxy_s,tail_suspects_per_proxy_s,churn_msgs_per_proxy_s,crash_detect_s,crash_converge_s,heal_converge_s\n",
    );
    let mut timing = String::from("proxies,wall_s\n");
    for r in &rows {
        csv.push_str(&csv_line(&[
            r.n.to_string(),
            f3(r.join_s),
            f3(r.nbrs),
            f3(r.steady),
            f3(r.steady_bytes),
            f3(r.kinds[0]),
            f3(r.kinds[1]),
            f3(r.kinds[2]),
            f3(r.kinds[3]),
            format!("{:.5}", r.steady_suspects),
            f3(r.jit[0][0]),
            f3(r.jit[0][1]),
            format!("{:.5}", r.jit[0][2]),
            f3(r.jit[1][0]),
            f3(r.jit[1][1]),
            format!("{:.5}", r.jit[1][2]),
            f3(r.churn),
            f3(r.detect_s),
            f3(r.converge_s),
            f3(r.heal_s),
        ]));
        timing.push_str(&csv_line(&[r.n.to_string(), format!("{:.1}", r.wall_s)]));
    }
    let pts = |f: fn(&Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|r| (r.n as f64, f(r)))
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## 2. Membership\n\nReal proxies on a transit-stub topology (seed {}), default membership timers \
         (one neighbour probed per 250 ms tick in turn; suspect after 3 misses; Down when another monitor \
         confirms, else 1 s later); measured from {} s after the proxies started (at least 5 s after the join). Messages are every overlay datagram a proxy sends (probes, \
         acks, floods, anti-entropy, reports). Churn: {} crash(es) per second, each restarting 2 s later. The \
         partition cuts the overlay between the two halves of the transit domains for {} s.\n\n\
         | proxies | join (s) | neighbours | steady msgs/proxy/s | steady bytes/proxy/s | churn msgs/proxy/s | crash: first Down (s) | crash: all Down (s) | partition heal (s) |\n\
         |---|---|---|---|---|---|---|---|---|",
        p.seed, p.settle_s, p.churn_per_s, p.partition_s
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            r.n,
            r.join_s,
            r.nbrs,
            r.steady,
            r.steady_bytes,
            r.churn,
            r.detect_s,
            r.converge_s,
            if r.heal_s.is_finite() {
                format!("{:.2}", r.heal_s)
            } else {
                "—".into()
            }
        );
    }
    md.push_str(
        "\nSteady-state breakdown per proxy per second (membership counters): probes + acks, flood messages, \
         anti-entropy messages (digests, pulls, record pages), and records applied (new versions accepted):\n\n\
         | proxies | probes+acks | floods | anti-entropy | records applied |\n|---|---|---|---|---|\n",
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.n, r.kinds[0], r.kinds[1], r.kinds[2], r.kinds[3]
        );
    }
    let _ = writeln!(
        md,
        "\nAt rest with latency jitter (each phase {} s after the jitter starts, {} s window): per proxy per \
         second, records applied, bytes sent and suspicions raised (all false: nobody crashed). `{}` then `{}` \
         (uniform: latency × (1 ± u); pareto: latency × (1 + f·(X − 1)), X Pareto(1, α), extra capped at 1 s).\n\n\
         | proxies | suspicions at rest | records (uniform) | bytes (uniform) | suspicions (uniform) | records (tail) | bytes (tail) | suspicions (tail) |\n\
         |---|---|---|---|---|---|---|---|",
        p.jitter_settle_s, p.steady_s, p.jitter, p.jitter_tail
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.2} | {:.0} | {:.4} | {:.2} | {:.0} | {:.4} |",
            r.n,
            r.steady_suspects,
            r.jit[0][0],
            r.jit[0][1],
            r.jit[0][2],
            r.jit[1][0],
            r.jit[1][1],
            r.jit[1][2]
        );
    }
    let lo = p.sizes.iter().copied().min().unwrap_or(100) as f64;
    let mut msgs = Chart::new(
        "Membership messages per proxy per second (measured, fitted to 10^5)",
        "proxies",
        "messages / proxy / s",
    );
    msgs.log_x = true;
    let steady_pts = pts(|r| r.steady);
    let churn_pts = pts(|r| r.churn);
    msgs.series.push(Series::new(
        "steady (measured)",
        steady_pts.clone(),
        Style::Points,
    ));
    msgs.series
        .push(Series::new("churn (measured)", churn_pts.clone(), Style::Points));
    if let Some(f) = fit_block(&mut md, "Steady-state messages per proxy per second", &steady_pts) {
        msgs.series.push(Series::new(
            format!("steady fit: {}", f.model.name()),
            curve(&f, lo),
            Style::Dashed,
        ));
    }
    if let Some(f) = fit_block(&mut md, "Messages per proxy per second under churn", &churn_pts) {
        msgs.series.push(Series::new(
            format!("churn fit: {}", f.model.name()),
            curve(&f, lo),
            Style::Dashed,
        ));
    }
    let mut conv = Chart::new(
        "Convergence time (measured, fitted to 10^5)",
        "proxies",
        "seconds",
    );
    conv.log_x = true;
    let crash_pts = pts(|r| r.converge_s);
    let heal_pts = pts(|r| r.heal_s);
    conv.series.push(Series::new(
        "crash → all Down (measured)",
        crash_pts.clone(),
        Style::Points,
    ));
    conv.series.push(Series::new(
        "partition heal (measured)",
        heal_pts.clone(),
        Style::Points,
    ));
    if let Some(f) = fit_block(&mut md, "Crash convergence (s)", &crash_pts) {
        conv.series.push(Series::new(
            format!("crash fit: {}", f.model.name()),
            curve(&f, lo),
            Style::Dashed,
        ));
    }
    if let Some(f) = fit_block(&mut md, "Partition heal convergence (s)", &heal_pts) {
        conv.series.push(Series::new(
            format!("heal fit: {}", f.model.name()),
            curve(&f, lo),
            Style::Dashed,
        ));
    }
    let rec_pts = pts(|r| r.kinds[3]);
    let bytes_pts = pts(|r| r.steady_bytes / 1000.0);
    let mut recs = Chart::new(
        "Steady state: membership records applied and kB sent per proxy per second",
        "proxies",
        "per proxy per second",
    );
    recs.log_x = true;
    recs.series.push(Series::new(
        "records applied (measured)",
        rec_pts.clone(),
        Style::Points,
    ));
    recs.series.push(Series::new(
        "kB sent (measured)",
        bytes_pts.clone(),
        Style::Points,
    ));
    if let Some(f) = fit_block(&mut md, "Records applied per proxy per second (steady)", &rec_pts) {
        recs.series.push(Series::new(
            format!("records fit: {}", f.model.name()),
            curve(&f, lo),
            Style::Dashed,
        ));
    }
    if let Some(f) = fit_block(&mut md, "kB sent per proxy per second (steady)", &bytes_pts) {
        recs.series.push(Series::new(
            format!("kB fit: {}", f.model.name()),
            curve(&f, lo),
            Style::Dashed,
        ));
    }
    o.file("membership-records.svg", recs.svg());
    let (s0, s1) = (
        steady_pts.first().map_or(f64::NAN, |x| x.1),
        steady_pts.last().map_or(f64::NAN, |x| x.1),
    );
    let _ = writeln!(
        md,
        "\nTarget: steady-state membership traffic per proxy independent of the number of proxies — measured \
         {s0:.2} → {s1:.2} msgs/proxy/s from {} to {} proxies (ratio {:.2}).\n\n\
         ![messages per proxy](membership-msgs.svg)\n\n![convergence](membership-convergence.svg)\n\n![records and bytes](membership-records.svg)\n",
        steady_pts.first().map_or(0.0, |x| x.0),
        steady_pts.last().map_or(0.0, |x| x.0),
        s1 / s0
    );
    o.file("membership.csv", csv);
    o.file("membership-msgs.svg", msgs.svg());
    o.file("membership-convergence.svg", conv.svg());
    o.timing.push(("membership-timing.csv".into(), timing));
    Ok(o.finish(md))
}
