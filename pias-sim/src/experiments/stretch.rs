//! Experiment 1: path stretch. For every client: the latency of its first packet (client→IAP→RAP→JAP→target
//! when the IAP has no cache entry) and of a later packet (client→IAP→JAP→target) over the direct latency
//! from the client to the group's nearest target, for the RAP policies proximity, load and a mix (half the
//! groups each).

use core::fmt::Write as _;
use core::net::SocketAddr;
use core::time::Duration;

use pias_proto::IpProtocol;
use pias_state::policy::{GroupMatch, GroupPolicy};
use pias_state::rap::RapPolicy;

use super::plot::{Chart, Series, Style};
use super::{
    Output, cdf, client_ip, csv_line, f3, host_site, join, make_topology, params, quantile, target_ip, world,
};
use crate::topology::Rng;
use crate::{Hop, HostId, Sim};

params! {
    /// Parameters of the stretch experiment.
    pub struct StretchParams {
        seed: u64 = 1,
        proxies: usize = 300,
        groups: usize = 40,
        targets_per_group: usize = 4,
        clients: usize = 400,
        /// Time after the join for network coordinates to settle (s).
        warmup_s: f64 = 30.0,
        /// Fraction of hosts whose anycast route is a policy-induced non-nearest proxy.
        detour: f64 = 0.0,
        /// A latency-matrix CSV instead of the generated transit-stub topology.
        topo: String = String::new(),
    }
}

impl StretchParams {
    /// A small version (tests).
    pub fn small() -> Self {
        StretchParams {
            proxies: 30,
            groups: 6,
            targets_per_group: 3,
            clients: 40,
            warmup_s: 5.0,
            ..Self::default()
        }
    }
}

struct Sample {
    client: usize,
    group: usize,
    first_segments: usize,
    first_ms: f64,
    later_ms: f64,
    direct_ms: f64,
}

fn path_ms(sim: &Sim, client: HostId, path: &[Hop]) -> Option<(f64, usize)> {
    let mut us = 0u128;
    let mut segs = 0;
    let mut reached = false;
    for h in path {
        let d = match *h {
            Hop::ClientToProxy { proxy } => sim.host_proxy_latency(client, sim.proxy_index(proxy)?),
            Hop::Overlay { from, to, .. } => sim.proxy_latency(sim.proxy_index(from)?, sim.proxy_index(to)?),
            Hop::ProxyToTarget { proxy, target } => {
                reached = true;
                sim.host_proxy_latency(target, sim.proxy_index(proxy)?)
            }
        };
        us += d.as_micros();
        segs += 1;
        if reached {
            break;
        }
    }
    reached.then_some((us as f64 / 1000.0, segs))
}

fn run_policy(p: &StretchParams, policy: &str) -> Result<Vec<Sample>, String> {
    let topo = make_topology(p.seed, &p.topo)?;
    let mut rng = Rng::new(p.seed ^ 0x5717);
    let groups: Vec<_> = (0..p.groups)
        .map(|g| Sim::group(1, 20_000 + g as u16, IpProtocol::Udp))
        .collect();
    let rules: Vec<(GroupMatch, GroupPolicy)> = if policy == "mixed" {
        groups
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, g)| {
                (
                    GroupMatch {
                        prefix: g.ip,
                        len: 32,
                        port: Some(g.port),
                        proto: Some(g.proto),
                    },
                    GroupPolicy {
                        rap: RapPolicy::Load,
                        ..GroupPolicy::default()
                    },
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let default = if policy == "load" {
        RapPolicy::Load
    } else {
        RapPolicy::Proximity
    };
    let mut sim = world(p.seed, topo.clone(), p.proxies, &mut rng, |c| {
        c.policies.default.rap = default;
        c.policies.rules = rules.clone();
    });
    sim.set_anycast_detour(p.detour);
    join(&mut sim, Duration::from_secs(120)).ok_or("proxies did not join within 120 s")?;
    sim.run_for(Duration::from_secs_f64(p.warmup_s));
    let mut targets: Vec<Vec<HostId>> = vec![Vec::new(); p.groups];
    let mut k = 0;
    for (gi, g) in groups.iter().enumerate() {
        for _ in 0..p.targets_per_group {
            let at = host_site(&topo, &mut rng);
            let svc = SocketAddr::new(target_ip(k), g.port);
            targets[gi].push(sim.add_target_at(&format!("t{k}"), svc, *g, at, |_| {}));
            k += 1;
        }
    }
    let clients: Vec<HostId> = (0..p.clients)
        .map(|c| sim.add_client_at(client_ip(c), host_site(&topo, &mut rng)))
        .collect();
    sim.run_for(Duration::from_secs(4));
    sim.set_tracing(true);
    let base = 1_000_000u64;
    for (c, &h) in clients.iter().enumerate() {
        sim.send_udp(h, 40_000, groups[c % p.groups], base + c as u64, b"first");
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(2));
    for (c, &h) in clients.iter().enumerate() {
        sim.send_udp(h, 40_000, groups[c % p.groups], 2 * base + c as u64, b"later");
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(2));
    let mut out = Vec::new();
    for (c, &h) in clients.iter().enumerate() {
        let gi = c % p.groups;
        let direct = targets[gi]
            .iter()
            .map(|&t| sim.host_latency(h, t).as_micros())
            .min()
            .unwrap_or(0) as f64
            / 1000.0;
        let (Some((first, segs)), Some((later, _))) = (
            path_ms(&sim, h, &sim.path(base + c as u64)),
            path_ms(&sim, h, &sim.path(2 * base + c as u64)),
        ) else {
            continue;
        };
        out.push(Sample {
            client: c,
            group: gi,
            first_segments: segs,
            first_ms: first,
            later_ms: later,
            direct_ms: direct,
        });
    }
    Ok(out)
}

/// Runs the stretch experiment.
pub fn stretch(p: &StretchParams, log: &mut dyn FnMut(&str)) -> Result<Output, String> {
    let mut o = Output::new("stretch");
    let mut csv = String::from(
        "policy,client,group,first_segments,first_ms,later_ms,direct_ms,stretch_first,stretch_later\n",
    );
    let mut chart = Chart::new(
        "Path stretch over the direct client→nearest-target path",
        "stretch (path latency / direct latency)",
        "CDF of clients",
    );
    chart.log_x = true;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## 1. Path stretch\n\n{} proxies, {} groups × {} targets, {} clients on a transit-stub topology \
         (seed {}, anycast detour fraction {}). Stretch = one-way latency of the path over the latency from the \
         client to the group's nearest target. *Later* packets take client→IAP→JAP→target (3 segments); \
         *first* packets find no IAP cache entry and take client→IAP→RAP→JAP→target (4 segments) unless \
         another client already filled the IAP's cache.\n\n\
         | policy | median 3-segment | p90 3-segment | median first packet | p90 first packet | first packets via RAP |\n\
         |---|---|---|---|---|---|",
        p.proxies, p.groups, p.targets_per_group, p.clients, p.seed, p.detour
    );
    let mut medians = Vec::new();
    for policy in ["proximity", "load", "mixed"] {
        log(&format!("stretch: policy {policy}"));
        let s = run_policy(p, policy)?;
        let mut later: Vec<f64> = Vec::new();
        let mut first: Vec<f64> = Vec::new();
        let mut via_rap = 0;
        for x in &s {
            let (sf, sl) = (
                x.first_ms / x.direct_ms.max(1e-3),
                x.later_ms / x.direct_ms.max(1e-3),
            );
            csv.push_str(&csv_line(&[
                policy.into(),
                x.client.to_string(),
                x.group.to_string(),
                x.first_segments.to_string(),
                f3(x.first_ms),
                f3(x.later_ms),
                f3(x.direct_ms),
                f3(sf),
                f3(sl),
            ]));
            first.push(sf);
            later.push(sl);
            if x.first_segments == 4 {
                via_rap += 1;
            }
        }
        chart.series.push(Series::new(
            format!("{policy}: 3-segment"),
            cdf(&later),
            Style::Line,
        ));
        chart.series.push(Series::new(
            format!("{policy}: first packet"),
            cdf(&first),
            Style::Dashed,
        ));
        later.sort_by(f64::total_cmp);
        first.sort_by(f64::total_cmp);
        let _ = writeln!(
            md,
            "| {policy} | {:.2} | {:.2} | {:.2} | {:.2} | {via_rap} of {} |",
            quantile(&later, 0.5),
            quantile(&later, 0.9),
            quantile(&first, 0.5),
            quantile(&first, 0.9),
            s.len()
        );
        medians.push((policy, quantile(&later, 0.5)));
    }
    let prox = medians[0].1;
    let _ = writeln!(
        md,
        "\nTarget: median 3-segment stretch under 1.5 with the proximity policy — measured {prox:.2}: {}.\n\n\
         ![stretch CDF](stretch.svg)\n",
        if prox < 1.5 { "met" } else { "NOT met" }
    );
    o.file("stretch.csv", csv);
    o.file("stretch.svg", chart.svg());
    Ok(o.finish(md))
}
