//! Experiment 4: target churn against RAP updates. Targets of one group sit behind a few JAPs; targets die
//! and come back at a given rate; JAPs report counts to the group's RAPs only when a count leaves its
//! hysteresis band (`registry.band_percent`; 0 = every change). Measured: report messages per second sent to
//! RAPs, and the load-balance error the band costs: the total-variation distance between the JAP shares the
//! first RAP holds and the true shares, sampled every second.

use core::fmt::Write as _;
use core::net::SocketAddr;
use core::time::Duration;

use pias_proto::IpProtocol;

use super::plot::{Chart, Series, Style};
use super::{Output, csv_line, f3, join, make_topology, params, target_ip, world};
use crate::topology::{Attach, Rng};
use crate::{HostId, Sim};

params! {
    /// Parameters of the churn experiment.
    pub struct ChurnParams {
        seed: u64 = 1,
        proxies: usize = 30,
        japs: usize = 6,
        targets: usize = 240,
        /// Target deaths/revivals per second.
        rates: Vec<f64> = vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0],
        bands: Vec<u8> = vec![0, 10, 25, 50],
        duration_s: f64 = 20.0,
        topo: String = String::new(),
    }
}

impl ChurnParams {
    /// A small version (tests).
    pub fn small() -> Self {
        ChurnParams {
            proxies: 8,
            japs: 3,
            targets: 30,
            rates: vec![2.0, 10.0],
            bands: vec![0, 25],
            duration_s: 4.0,
            ..Self::default()
        }
    }
}

fn reports(sim: &Sim) -> u64 {
    (0..sim.proxy_count())
        .filter_map(|i| sim.proxy(i))
        .map(|p| p.report_counters().messages)
        .sum()
}

fn run(p: &ChurnParams, band: u8, rate: f64) -> Result<(f64, f64), String> {
    let topo = make_topology(p.seed, &p.topo)?;
    let mut rng = Rng::new(p.seed ^ 0xc4u64);
    let mut sim = world(p.seed, topo, p.proxies, &mut rng, |c| {
        c.registry.band_percent = band
    });
    join(&mut sim, Duration::from_secs(60)).ok_or("proxies did not join")?;
    let group = Sim::group(7, 7000, IpProtocol::Udp);
    let japs: Vec<usize> = (0..p.japs)
        .map(|j| (j * p.proxies / p.japs.max(1)).min(p.proxies - 1))
        .collect();
    let targets: Vec<HostId> = (0..p.targets)
        .map(|k| {
            let j = japs[k % japs.len()];
            let at = sim.proxies[j].at.unwrap_or(Attach {
                node: 0,
                access_us: 0,
            });
            let at = Attach {
                node: at.node,
                access_us: 50,
            };
            sim.add_target_at(
                &format!("t{k}"),
                SocketAddr::new(target_ip(k), 7000),
                group,
                at,
                |_| {},
            )
        })
        .collect();
    sim.run_for(Duration::from_secs(4));
    let rap = sim.proxy(0).map(|x| x.raps_of(&group)[0]).ok_or("no proxy 0")?;
    let rap = sim.proxy_index(rap).ok_or("bad rap")?;
    let before = reports(&sim);
    let steps = (p.duration_s * 100.0).round() as usize;
    let mut acc = 0.0;
    let mut err_sum = 0.0;
    let mut samples = 0;
    for s in 0..steps {
        acc += rate / 100.0;
        while acc >= 1.0 {
            acc -= 1.0;
            let t = targets[rng.below(targets.len())];
            if sim.target_alive(t) {
                sim.kill_target(t);
            } else {
                sim.revive_target(t);
            }
        }
        sim.run_for(Duration::from_millis(10));
        if s % 100 == 99 {
            let truth: Vec<(u32, f64)> = (0..sim.proxy_count())
                .filter_map(|i| sim.proxy(i))
                .map(|x| (x.id().0, f64::from(x.registry().group_count(&group))))
                .filter(|x| x.1 > 0.0)
                .collect();
            let held: Vec<(u32, f64)> = sim
                .proxy(rap)
                .map(|x| {
                    x.rap()
                        .japs(&group)
                        .iter()
                        .map(|j| (j.jap.0, f64::from(j.count)))
                        .collect()
                })
                .unwrap_or_default();
            let (tt, th): (f64, f64) = (truth.iter().map(|x| x.1).sum(), held.iter().map(|x| x.1).sum());
            if tt > 0.0 && th > 0.0 {
                let mut ids: Vec<u32> = truth.iter().chain(&held).map(|x| x.0).collect();
                ids.sort_unstable();
                ids.dedup();
                let share = |v: &[(u32, f64)], id: u32, tot: f64| {
                    v.iter().find(|x| x.0 == id).map_or(0.0, |x| x.1 / tot)
                };
                let tv: f64 = ids
                    .iter()
                    .map(|&id| (share(&truth, id, tt) - share(&held, id, th)).abs())
                    .sum::<f64>()
                    / 2.0;
                err_sum += tv;
                samples += 1;
            }
        }
    }
    let msgs = (reports(&sim) - before) as f64 / p.duration_s;
    Ok((
        msgs,
        if samples > 0 {
            err_sum / f64::from(samples)
        } else {
            f64::NAN
        },
    ))
}

/// Runs the churn experiment.
pub fn churn(p: &ChurnParams, log: &mut dyn FnMut(&str)) -> Result<Output, String> {
    let mut o = Output::new("churn");
    let mut csv = String::from("band_percent,churn_per_s,rap_update_msgs_per_s,lb_error\n");
    let mut upd = Chart::new(
        "RAP update messages vs target churn",
        "target churn (events/s)",
        "RAP update messages / s",
    );
    upd.log_x = true;
    upd.log_y = true;
    let mut lb = Chart::new(
        "Load-balance error each band costs",
        "target churn (events/s)",
        "mean TV distance, RAP view vs truth",
    );
    lb.log_x = true;
    // Per band: (churn rate, update msgs/s, LB error) per rate.
    type Points = Vec<(f64, f64, f64)>;
    let mut table: Vec<(u8, Points)> = Vec::new();
    for &band in &p.bands {
        let mut pts = Vec::new();
        for &rate in &p.rates {
            log(&format!("churn: band {band}%, {rate}/s"));
            let (m, e) = run(p, band, rate)?;
            csv.push_str(&csv_line(&[band.to_string(), f3(rate), f3(m), format!("{e:.4}")]));
            pts.push((rate, m, e));
        }
        let name = if band == 0 {
            "no hysteresis".to_string()
        } else {
            format!("±{band} %")
        };
        upd.series.push(Series::new(
            name.clone(),
            pts.iter().map(|x| (x.0, x.1.max(0.01))).collect(),
            Style::LinePoints,
        ));
        lb.series.push(Series::new(
            name,
            pts.iter().map(|x| (x.0, x.2)).collect(),
            Style::LinePoints,
        ));
        table.push((band, pts));
    }
    let mut md = format!(
        "## 4. Group churn and hysteresis\n\n{} proxies, one group with {} targets behind {} JAPs; targets die or \
         come back at the given rate for {} s. RAP updates = report messages JAPs send to the group's RAPs \
         (k = 3); LB error = mean total-variation distance between the JAP shares the first RAP holds and the \
         true shares (0 = exact, 1 = disjoint), sampled every second.\n\n| band |",
        p.proxies, p.targets, p.japs, p.duration_s
    );
    for r in &p.rates {
        let _ = write!(md, " {r}/s: msgs/s (LB err) |");
    }
    md.push_str("\n|---|");
    for _ in &p.rates {
        md.push_str("---|");
    }
    md.push('\n');
    for (band, pts) in &table {
        let _ = write!(
            md,
            "| {} |",
            if *band == 0 {
                "off".to_string()
            } else {
                format!("±{band} %")
            }
        );
        for (_, m, e) in pts {
            let _ = write!(md, " {m:.1} ({e:.3}) |");
        }
        md.push('\n');
    }
    let off = table.iter().find(|t| t.0 == 0);
    let b25 = table.iter().find(|t| t.0 == 25);
    if let (Some(off), Some(b25)) = (off, b25)
        && let (Some(a), Some(b)) = (off.1.last(), b25.1.last())
    {
        let ratio = a.1 / b.1.max(1e-9);
        let _ = writeln!(
            md,
            "\nTarget: with the ±25 % band at least 10× fewer RAP updates than without hysteresis under heavy \
             churn — at {}/s: {:.1} vs {:.1} msgs/s, {ratio:.1}×: {}.",
            a.0,
            a.1,
            b.1,
            if ratio >= 10.0 { "met" } else { "NOT met" }
        );
    }
    md.push_str("\n![RAP updates](churn-updates.svg)\n\n![LB error](churn-lb-error.svg)\n");
    o.file("churn.csv", csv);
    o.file("churn-updates.svg", upd.svg());
    o.file("churn-lb-error.svg", lb.svg());
    Ok(o.finish(md))
}
