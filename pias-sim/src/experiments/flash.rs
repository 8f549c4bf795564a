//! Experiment 5: a flash crowd. A group's clients grow 100× within seconds (each client sends one packet a
//! second on its own flow). Measured every second: client packets, RAP queries (IAP → RAP, i.e. IAP cache
//! misses) and RAP answers, the busiest proxy's packets as IAP and as JAP, and the JAP balance.
//!
//! With `capacity` set, the crowd runs twice on the same seed: once with no JAP capacity (load is not
//! reported, RAPs weight by target counts only) and once with every proxy's `capacity_flows_per_s` at
//! `capacity`, so JAPs over it shed new flows (SPEC.md §9.6); the report compares the JAP balance.

use core::fmt::Write as _;
use core::net::SocketAddr;
use core::time::Duration;

use pias_proto::IpProtocol;

use super::plot::{Chart, Series, Style};
use super::{Output, client_ip, csv_line, host_site, join, make_topology, params, target_ip, world};
use crate::topology::Rng;
use crate::{HostId, Sim};

params! {
    /// Parameters of the flash-crowd experiment.
    pub struct FlashParams {
        seed: u64 = 1,
        proxies: usize = 150,
        targets: usize = 30,
        base_clients: usize = 30,
        factor: usize = 100,
        /// Seconds before the crowd, of the ramp, and after.
        before_s: usize = 5,
        ramp_s: usize = 5,
        after_s: usize = 10,
        /// New flows per second each JAP takes before shedding in the second run; 0: one run, no capacity.
        capacity: u32 = 60,
        topo: String = String::new(),
    }
}

impl FlashParams {
    /// A small version (tests).
    pub fn small() -> Self {
        FlashParams {
            proxies: 20,
            targets: 6,
            base_clients: 5,
            factor: 10,
            before_s: 2,
            ramp_s: 2,
            after_s: 2,
            capacity: 20,
            ..Self::default()
        }
    }
}

/// One second: (second, clients, client packets, RAP queries, RAP answers, busiest IAP, busiest JAP,
/// mean JAP, IAPs in use, JAPs in use).
type Row = (usize, usize, u64, u64, u64, u64, u64, f64, usize, usize);

#[derive(Default, Clone, Copy)]
struct Snap {
    iap_to_rap: u64,
    answers: u64,
}

fn per_proxy(sim: &Sim) -> (Snap, Vec<(u64, u64)>) {
    let mut s = Snap::default();
    let mut v = Vec::new();
    for i in 0..sim.proxy_count() {
        let Some(p) = sim.proxy(i) else {
            v.push((0, 0));
            continue;
        };
        let c = p.counters();
        s.iap_to_rap += c.iap_to_rap;
        s.answers += c.answers_sent;
        v.push((c.iap_to_jap + c.iap_to_rap, c.jap_delivered));
    }
    (s, v)
}

/// One run: the rows, and the Invalidate(draining) messages sent (all proxies).
struct Run {
    rows: Vec<Row>,
    drains: u64,
}

/// Runs the flash-crowd experiment.
pub fn flash(p: &FlashParams, log: &mut dyn FnMut(&str)) -> Result<Output, String> {
    let mut o = Output::new("flash");
    let base = run(p, None, log)?;
    let shed = match p.capacity {
        0 => None,
        c => Some(run(p, Some(c), log)?),
    };
    let rows = &base.rows;
    let mut csv = String::from(
        "capacity,second,clients,client_pkts_per_s,rap_queries_per_s,rap_answers_per_s,max_iap_pkts_per_s,max_jap_pkts_per_s,mean_jap_pkts_per_s,active_iaps\n",
    );
    for (cap, r) in rows
        .iter()
        .map(|r| (0, r))
        .chain(shed.iter().flat_map(|s| s.rows.iter().map(|r| (p.capacity, r))))
    {
        csv.push_str(&csv_line(&[
            cap.to_string(),
            r.0.to_string(),
            r.1.to_string(),
            r.2.to_string(),
            r.3.to_string(),
            r.4.to_string(),
            r.5.to_string(),
            r.6.to_string(),
            format!("{:.1}", r.7),
            r.8.to_string(),
        ]));
    }
    let mut c = Chart::new("Flash crowd: 100× clients in seconds", "second", "per second");
    c.log_y = true;
    let ser = |rows: &[Row], f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.0 as f64, f(r).max(0.5))).collect()
    };
    c.series.push(Series::new(
        "client packets",
        ser(rows, &|r| r.2 as f64),
        Style::LinePoints,
    ));
    c.series.push(Series::new(
        "RAP queries (IAP misses)",
        ser(rows, &|r| r.3 as f64),
        Style::LinePoints,
    ));
    c.series.push(Series::new(
        "busiest IAP packets",
        ser(rows, &|r| r.5 as f64),
        Style::LinePoints,
    ));
    c.series.push(Series::new(
        "busiest JAP packets",
        ser(rows, &|r| r.6 as f64),
        Style::LinePoints,
    ));
    c.series.push(Series::new(
        "mean JAP packets",
        ser(rows, &|r| r.7),
        Style::Dashed,
    ));
    if let Some(s) = &shed {
        c.series.push(Series::new(
            format!("busiest JAP packets, capacity {} new flows/s", p.capacity),
            ser(&s.rows, &|r| r.6 as f64),
            Style::LinePoints,
        ));
    }
    c.series.push(Series::new(
        "IAPs in use",
        ser(rows, &|r| r.8 as f64),
        Style::Dashed,
    ));
    let max_q = rows.iter().map(|r| r.3).max().unwrap_or(0);
    let base_q = rows.iter().take(p.before_s).map(|r| r.3).max().unwrap_or(0);
    let peak = p.base_clients * p.factor;
    let mut md = format!(
        "## 5. Flash crowd\n\n{} proxies, one group with {} targets; clients grow from {} to {} ({}×) over {} s, each \
         sending one packet per second on its own flow. RAP queries are IAP cache misses (one per IAP and group, \
         then the IAP cache answers); per-proxy load is packets per second handled as IAP or as JAP. First without \
         a JAP capacity (RAPs weight JAPs by target count only):\n\n",
        p.proxies, p.targets, p.base_clients, peak, p.factor, p.ramp_s
    );
    table(&mut md, rows);
    if let Some(r) = rows.last() {
        let _ = writeln!(
            md,
            "\nAt the peak, {} client packets/s; RAP queries peaked at {max_q}/s (before the crowd: {base_q}/s) and \
             are bounded by the number of IAPs ({} in use, {} proxies), not by the clients; the busiest JAP \
             carried {} packets/s against a mean of {:.1} over the JAPs in use ({:.1}×).",
            r.2,
            r.8,
            p.proxies,
            r.6,
            r.7,
            r.6 as f64 / r.7.max(1.0)
        );
    }
    if let Some(s) = &shed {
        let _ = writeln!(
            md,
            "\nThe same crowd (same seed) with every proxy's `capacity_flows_per_s` = {}: a JAP over it asks the IAPs \
             sending it new flows to send them elsewhere (Invalidate, draining) and reports itself full, so RAPs \
             answer the JAPs with spare capacity (SPEC.md §9.6). These clients' flows are UDP, which has no start an \
             IAP can see, so some flows bound at a draining JAP move with its IAPs' new answers (served by a new \
             binding elsewhere; no packet is lost): that is why the busiest JAP still sheds after the ramp. TCP \
             connections would stay (§9.6).\n",
            p.capacity
        );
        table(&mut md, &s.rows);
        if let (Some(a), Some(b)) = (rows.last(), s.rows.last()) {
            let _ = writeln!(
                md,
                "\nAt the peak the busiest JAP carried {} packets/s against a mean of {:.1} ({:.1}×), instead of {} \
                 against {:.1} ({:.1}×) without a capacity; {} JAPs in use instead of {}; {} draining Invalidates \
                 were sent in all.",
                b.6,
                b.7,
                b.6 as f64 / b.7.max(1.0),
                a.6,
                a.7,
                a.6 as f64 / a.7.max(1.0),
                active_japs(b),
                active_japs(a),
                s.drains
            );
        }
    }
    let _ = writeln!(md, "\n![flash crowd](flash.svg)");
    o.file("flash.csv", csv);
    o.file("flash.svg", c.svg());
    Ok(o.finish(md))
}

/// JAPs that delivered packets in a row's second.
fn active_japs(r: &Row) -> usize {
    r.9
}

fn table(md: &mut String, rows: &[Row]) {
    md.push_str(
        "| second | clients | RAP queries/s | busiest IAP pkts/s | busiest JAP pkts/s | mean JAP pkts/s | IAPs in use |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.1} | {} |",
            r.0, r.1, r.3, r.5, r.6, r.7, r.8
        );
    }
}

/// One run of the crowd; `capacity`: every proxy's `capacity_flows_per_s`.
fn run(p: &FlashParams, capacity: Option<u32>, log: &mut dyn FnMut(&str)) -> Result<Run, String> {
    let topo = make_topology(p.seed, &p.topo)?;
    let mut rng = Rng::new(p.seed ^ 0xf1a5);
    let mut sim = world(p.seed, topo.clone(), p.proxies, &mut rng, |c| {
        c.capacity_flows_per_s = capacity;
    });
    log(&format!("flash: joining (capacity {capacity:?})"));
    join(&mut sim, Duration::from_secs(120)).ok_or("proxies did not join")?;
    sim.run_for(Duration::from_secs(10));
    let group = Sim::group(9, 9000, IpProtocol::Udp);
    for k in 0..p.targets {
        let at = host_site(&topo, &mut rng);
        sim.add_target_at(
            &format!("t{k}"),
            SocketAddr::new(target_ip(k), 9000),
            group,
            at,
            |_| {},
        );
    }
    sim.run_for(Duration::from_secs(4));
    let peak = p.base_clients * p.factor;
    let mut clients: Vec<HostId> = Vec::new();
    let total = p.before_s + p.ramp_s + p.after_s;
    let (mut snap, mut pp) = per_proxy(&sim);
    let mut rows = Vec::new();
    let mut id = 1u64;
    for sec in 0..total {
        let want = if sec < p.before_s {
            p.base_clients
        } else if sec < p.before_s + p.ramp_s {
            let f = (sec - p.before_s + 1) as f64 / p.ramp_s as f64;
            p.base_clients + ((peak - p.base_clients) as f64 * f) as usize
        } else {
            peak
        };
        while clients.len() < want {
            let k = clients.len();
            clients.push(sim.add_client_at(client_ip(k), host_site(&topo, &mut rng)));
        }
        // Each client sends once in this second, spread over 10 ticks.
        for tick in 0..10 {
            for (c, &h) in clients.iter().enumerate() {
                if c % 10 == tick {
                    sim.send_udp(h, 30_000 + (c % 30_000) as u16, group, id, b"f");
                    id += 1;
                }
            }
            sim.run_for(Duration::from_millis(100));
        }
        let (s2, pp2) = per_proxy(&sim);
        let iap: Vec<u64> = pp2.iter().zip(&pp).map(|(a, b)| a.0 - b.0).collect();
        let jap: Vec<u64> = pp2.iter().zip(&pp).map(|(a, b)| a.1 - b.1).collect();
        let active_japs = jap.iter().filter(|x| **x > 0).count().max(1);
        rows.push((
            sec,
            clients.len(),
            clients.len() as u64,
            s2.iap_to_rap - snap.iap_to_rap,
            s2.answers - snap.answers,
            iap.iter().copied().max().unwrap_or(0),
            jap.iter().copied().max().unwrap_or(0),
            jap.iter().sum::<u64>() as f64 / active_japs as f64,
            iap.iter().filter(|x| **x > 0).count(),
            jap.iter().filter(|x| **x > 0).count(),
        ));
        snap = s2;
        pp = pp2;
    }
    let drains = (0..sim.proxy_count())
        .filter_map(|i| sim.proxy(i))
        .map(|p| p.counters().drain_invalidations_sent)
        .sum();
    Ok(Run { rows, drains })
}
