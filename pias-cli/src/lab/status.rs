//! `pias lab status`: which proxy each client reaches (following the kernel's routes hop by hop from the
//! client's router, exactly what the client's packets do), and each proxy's state.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};

use super::topo::{Kind, Node};
use super::{Lab, net, piascfg, services};

/// The proxy a client's packets to `dst` reach, following the routers' kernel routes.
pub(crate) fn ingress(lab: &Lab, client: &Node, dst: &str) -> Option<String> {
    let dst = dst.split('/').next()?;
    // A prefix's first address is not a host: probe address 1 of it (the registration address in the default).
    let probe: IpAddr = match dst.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) | 1).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) | 1).into()),
    };
    ingress_of(lab, client, probe)
}

/// The proxy a client's packets to `addr` reach.
pub(crate) fn ingress_of(lab: &Lab, client: &Node, addr: IpAddr) -> Option<String> {
    let mut at = lab.plan.node(client.router.as_deref()?)?;
    for _ in 0..16 {
        let out = net::run("ip", &["-n", &at.ns, "route", "get", &addr.to_string()]).ok()?;
        let dev = out
            .split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)?
            .to_owned();
        let next = lab.plan.node(&dev)?;
        match next.kind {
            Kind::Proxy => return Some(next.name.clone()),
            Kind::Router => at = next,
            _ => return None,
        }
    }
    None
}

/// Every BGP path a router has for a prefix, best first, as `AS_PATH (via NEIGHBOUR)` (from
/// `birdc show route for PREFIX all`; empty under OSPF).
pub(crate) fn as_paths(lab: &Lab, router: &str, prefix: &str) -> Vec<String> {
    let Ok(out) = net::run(
        "birdc",
        &[
            "-s",
            &services::bird_ctl(lab, router),
            "show",
            "route",
            "for",
            prefix,
            "all",
        ],
    ) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    let mut via = String::new();
    for l in out.lines().map(str::trim) {
        if let Some(v) = l.strip_prefix("via ") {
            via = v.split_whitespace().nth(2).unwrap_or("?").to_owned();
        } else if let Some(p) = l.strip_prefix("BGP.as_path:") {
            paths.push(format!("{} (via {via})", p.trim()));
        }
    }
    paths
}

/// The AS path of a router's best route for a prefix ("-" if it has none).
pub(crate) fn as_path(lab: &Lab, router: &str, prefix: &str) -> String {
    as_paths(lab, router, prefix)
        .into_iter()
        .next()
        .and_then(|p| p.split(" (via").next().map(str::to_owned))
        .unwrap_or_else(|| "-".into())
}

/// The route a router uses for a prefix, as BIRD shows it (first line of `show route`).
pub(crate) fn bird_route(lab: &Lab, router: &str, prefix: &str) -> String {
    net::run(
        "birdc",
        &[
            "-s",
            &services::bird_ctl(lab, router),
            "show",
            "route",
            "for",
            prefix,
            "primary",
        ],
    )
    .map(|s| {
        s.lines()
            .filter(|l| !l.starts_with("BIRD") && !l.starts_with("Table") && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" | ")
    })
    .unwrap_or_else(|e| format!("(birdc: {e})"))
}

/// One `dig` from a client: returns the site whose address came back (the target that answered).
pub(crate) fn dig(lab: &Lab, client: &Node, server: SocketAddr, qtype: &str) -> Result<String> {
    let out = dig_raw(client, server, qtype, &["+short"])?;
    let ans = out.lines().next().unwrap_or("").trim().to_owned();
    let ip: IpAddr = ans
        .parse()
        .with_context(|| format!("dig @{server} from {}: no answer ({ans:?})", client.name))?;
    Ok(lab.plan.owner_of(ip).map(|n| n.name.clone()).unwrap_or(ans))
}

/// `dig @server -p port www.demo.pias QTYPE` with two tries of 1 s each; extra flags appended.
pub(crate) fn dig_raw(client: &Node, server: SocketAddr, qtype: &str, extra: &[&str]) -> Result<String> {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let mut args = vec![
        "dig",
        &at,
        "-p",
        &port,
        "+time=1",
        "+tries=2",
        "www.demo.pias",
        qtype,
    ];
    args.extend_from_slice(extra);
    let o = net::ns_output(&client.ns, &args)?;
    if !o.status.success() {
        bail!(
            "dig from {}: {}",
            client.name,
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub(crate) fn print(lab: &Lab) -> Result<()> {
    let plan = &lab.plan;
    let have = net::existing_namespaces(&plan.topo.name)?;
    if have.is_empty() {
        println!(
            "lab {:?} is down (no namespaces {}-*)",
            plan.topo.name, plan.topo.name
        );
        return Ok(());
    }
    println!(
        "lab {:?}: {} namespaces, directory {}; anycast {} and {}, registration {} / {}",
        plan.topo.name,
        have.len(),
        lab.dir.display(),
        plan.topo.anycast4,
        plan.topo.anycast6,
        plan.topo.registration4,
        plan.topo.registration6
    );
    println!(
        "\nclients (ingress = the proxy their packets reach, following the routers' {} routes):",
        plan.routing().name()
    );
    println!(
        "  {:<6} {:<12} {:<14} {:<10} {:<10}",
        "client", "IPv4", "IPv6", "ingress4", "ingress6"
    );
    for c in plan.of(Kind::Client) {
        let i4 = ingress(lab, c, &plan.topo.anycast4).unwrap_or_else(|| "-".into());
        let i6 = ingress(lab, c, &plan.topo.anycast6).unwrap_or_else(|| "-".into());
        println!(
            "  {:<6} {:<12} {:<14} {:<10} {:<10}",
            c.name,
            c.addr4(),
            c.addr6(),
            i4,
            i6
        );
    }
    println!("\nrouters (BIRD's route for the anycast prefix):");
    for r in plan.of(Kind::Router) {
        println!(
            "  {:<4} {}",
            r.name,
            bird_route(lab, &r.name, &plan.topo.anycast4)
        );
    }
    if plan.routing() == super::topo::Routing::Bgp {
        println!("\nBGP paths for {} (best first):", plan.topo.anycast4);
        for r in plan.of(Kind::Router) {
            println!(
                "  {:<4} AS {:<6} {}",
                r.name,
                r.asn.unwrap_or(0),
                as_paths(lab, &r.name, &plan.topo.anycast4).join(" | ")
            );
        }
    }
    println!("\nproxies:");
    for p in plan.of(Kind::Proxy) {
        let d = services::daemon(lab, &p.name, "proxy")?;
        let state = match d.pid() {
            Some(pid) => format!("running (pid {pid})"),
            None => "STOPPED".into(),
        };
        println!(
            "  {:<4} id {:<3} overlay {}:6081  pool {} {}  {state}",
            p.name,
            p.index,
            p.addr4(),
            p.pool4(),
            p.pool6()
        );
        if d.running() {
            match piascfg::ctl(lab, p, &["members"]) {
                Ok(s) => {
                    for l in s.lines().filter(|l| !l.trim().is_empty()) {
                        println!("       {l}");
                    }
                }
                Err(e) => println!("       (pias ctl: {e:#})"),
            }
            if let Ok(c) = piascfg::counters(lab, p) {
                let names = [
                    "registrations",
                    "iap_to_rap",
                    "rap_relayed",
                    "iap_to_jap",
                    "jap_delivered",
                    "jap_replies",
                ];
                let v: Vec<String> = names
                    .iter()
                    .map(|n| format!("{n}={}", c.get(*n).copied().unwrap_or(0)))
                    .collect();
                println!("       {}", v.join("  "));
            }
        }
    }
    println!("\ntarget sites:");
    for s in plan.of(Kind::Site) {
        let mut parts = Vec::new();
        for d in services::daemons(lab, s) {
            parts.push(format!(
                "{}{}",
                d.name,
                if d.running() { "" } else { " (STOPPED)" }
            ));
        }
        println!(
            "  {:<4} {} {}  {}",
            s.name,
            s.addr4(),
            s.addr6(),
            parts.join(", ")
        );
    }
    println!("\ngroups:");
    for g in &plan.groups {
        println!(
            "  {:<22} {:<5} served by {} (policy {})",
            g.spec,
            format!("{:?}", g.service).to_lowercase(),
            g.sites.join(", "),
            g.policy.as_deref().unwrap_or("proximity")
        );
    }
    Ok(())
}
