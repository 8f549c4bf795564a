//! `pias lab demo`: the lab's guided tour. Brings the lab up, sends real `dig` and `curl` traffic from every
//! client through the anycast groups, shows which proxies carried each request (the proxies' own counters:
//! `iap_to_rap`/`rap_relayed` for the 4-segment first packet, `iap_to_jap` for later ones, `jap_delivered`)
//! and which target answered, then kills a target, a JAP and an ingress proxy one after another and times
//! how long DNS service was interrupted each time.
//!
//! The ways a proxy can go away depend on the routing, so they are measured under both: the demo's own
//! routing first, then (with the built-in topologies) the same three on the other routing's lab — a process
//! crash (the TUN and its routes vanish; BIRD withdraws at once), a host crash (the proxy's BIRD falls silent
//! too: OSPF's dead interval or BGP's hold timer must expire) and a graceful leave (SIGTERM) — and printed
//! side by side.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::proc::Daemon;
use super::topo::{Group, Kind, Node, Rel, Routing, Service};
use super::{Lab, net, piascfg, services, status, tools};

fn head(s: &str) {
    println!("\n\x1b[1m== {s} ==\x1b[0m");
}

/// Runs `dig` from a client and returns (the site that answered, the path the counters show).
pub(crate) fn traced_dig(lab: &Lab, c: &Node, g: &Group) -> Result<(String, piascfg::Path)> {
    let before = piascfg::all_counters(lab);
    let qtype = if g.addr.is_ipv4() { "A" } else { "AAAA" };
    let site = status::dig(lab, c, g.addr, qtype)?;
    std::thread::sleep(Duration::from_millis(100));
    let after = piascfg::all_counters(lab);
    Ok((site, piascfg::path(&before, &after)))
}

/// Runs `curl` for `/whoami` from a client and returns (the site that answered, the path).
fn traced_curl(lab: &Lab, c: &Node, g: &Group) -> Result<(String, piascfg::Path)> {
    let before = piascfg::all_counters(lab);
    let url = format!("http://{}/whoami", g.addr);
    let body = net::ns_run(&c.ns, &["curl", "-sS", "--max-time", "3", &url])?;
    std::thread::sleep(Duration::from_millis(100));
    let after = piascfg::all_counters(lab);
    Ok((body.trim().to_owned(), piascfg::path(&before, &after)))
}

/// Starts a `dns-watch` in a client namespace, runs `event` after `lead`, and returns the probes and the
/// event's time (Unix ms).
pub(crate) fn watch_around(
    lab: &Lab,
    c: &Node,
    server: std::net::SocketAddr,
    total: Duration,
    lead: Duration,
    event: impl FnOnce() -> Result<()>,
) -> Result<(Vec<tools::Probe>, u64)> {
    let child = Command::new("ip")
        .args(["netns", "exec", &c.ns])
        .arg(&lab.pias)
        .args(["lab", "dns-watch", "--server", &server.to_string()])
        .args([
            "--duration-ms",
            &total.as_millis().to_string(),
            "--interval-ms",
            "20",
            "--timeout-ms",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dns-watch")?;
    std::thread::sleep(lead);
    let at = tools::unix_ms();
    let r = event();
    let out = child.wait_with_output()?;
    r?;
    Ok((tools::parse_watch(&String::from_utf8_lossy(&out.stdout)), at))
}

/// Queries sent at or after `at` that got no answer.
fn lost(probes: &[tools::Probe], at: u64) -> usize {
    probes
        .iter()
        .filter(|p| p.sent_ms >= at && p.answer.is_none())
        .count()
}

/// "N queries after the `event`, M unanswered; first answer after the first failure at X ms".
fn summary(probes: &[tools::Probe], at: u64, event: &str) -> String {
    let after: Vec<_> = probes.iter().filter(|p| p.sent_ms >= at).collect();
    let lost = after.iter().filter(|p| p.answer.is_none()).count();
    let first_fail = after.iter().position(|p| p.answer.is_none());
    let back = first_fail.and_then(|i| {
        after[i..]
            .iter()
            .find(|p| p.answer.is_some())
            .map(|p| p.sent_ms - at)
    });
    match back {
        Some(ms) => format!(
            "{} queries after the {event}, {lost} unanswered; the first answer after the first failure was sent at +{ms} ms",
            after.len()
        ),
        None => format!("{} queries after the {event}, {lost} unanswered", after.len()),
    }
}

fn site_ip(lab: &Lab, site: &str) -> Option<IpAddr> {
    lab.plan.node(site).map(|n| IpAddr::V4(n.addr4()))
}

/// One measured failover: (what, ms until every query is answered again, queries lost, the goal).
type Measured = (String, Option<u64>, usize, &'static str);

/// `compare`: the lab of the other routing (the same name and directory), brought up after the tour to
/// measure the proxy failovers there too.
pub(crate) fn run(lab: &Lab, keep: bool, compare: Option<&Lab>) -> Result<()> {
    let r = tour(lab, compare);
    if keep {
        println!(
            "\nlab left running (--keep): `pias lab status`, `pias lab exec c1 -- dig @10.99.0.53 www.demo.pias`, `pias lab down`"
        );
    } else {
        head("tear down");
        services::down(lab)?;
    }
    r
}

fn tour(lab: &Lab, compare: Option<&Lab>) -> Result<()> {
    let plan = &lab.plan;
    let routing = plan.routing();
    let mut results: Vec<Measured> = Vec::new();
    let (n_r, n_c, n_p, n_s) = (
        plan.of(Kind::Router).count(),
        plan.of(Kind::Client).count(),
        plan.of(Kind::Proxy).count(),
        plan.of(Kind::Site).count(),
    );
    match routing {
        Routing::Ospf => head(&format!(
            "1. bring the lab up: {n_r} ISP routers (one OSPF domain), {n_c} clients, {n_p} PIAS proxies, {n_s} target sites"
        )),
        Routing::Bgp => head(&format!(
            "1. bring the lab up: {n_r} ASes (one router each, eBGP: customer/peer policy), {n_c} clients, {n_p} PIAS proxies each announcing the anycast prefix from its own AS, {n_s} target sites"
        )),
    }
    services::down(lab).ok();
    services::up(lab, true)?;
    if routing == Routing::Bgp {
        for r in plan.of(Kind::Router) {
            let rels: Vec<String> = r
                .ifaces
                .iter()
                .filter_map(|i| Some(format!("{} {}", rel_word(i.rel?), i.name)))
                .collect();
            println!("  {} AS {}: {}", r.name, r.asn.unwrap_or(0), rels.join(", "));
        }
    }
    match routing {
        Routing::Ospf => println!("  each client reaches the proxy nearest by OSPF cost:"),
        Routing::Bgp => println!(
            "  each client reaches the proxy its ISP's BGP route leads to (local preference customer > peer > provider, then the shorter AS path):"
        ),
    }
    for c in plan.of(Kind::Client) {
        let ing = status::ingress(lab, c, &plan.topo.anycast4).unwrap_or_else(|| "?".into());
        let path = match (routing, c.router.as_deref()) {
            (Routing::Bgp, Some(r)) => format!(
                " (AS path at {r}: {})",
                status::as_path(lab, r, &plan.topo.anycast4)
            ),
            _ => String::new(),
        };
        println!("    {} ({}) → proxy {ing}{path}", c.name, c.addr4());
    }
    if routing == Routing::Bgp
        && let Some(r) = plan
            .of(Kind::Router)
            .find(|r| r.ifaces.iter().filter(|i| i.rel == Some(Rel::Provider)).count() >= 2)
    {
        let paths = status::as_paths(lab, &r.name, &plan.topo.anycast4);
        println!(
            "  {} (multi-homed) hears {} from {} neighbours: {}",
            r.name,
            plan.topo.anycast4,
            paths.len(),
            paths.join(" | ")
        );
    }
    for s in plan.of(Kind::Site) {
        println!(
            "  target site {} ({}, {}): dnsmasq, HTTP server, `pias target` agents",
            s.name,
            s.addr4(),
            s.addr6()
        );
    }

    head("2. dig from every client through the DNS groups (first query: 4 segments via a RAP; then 3)");
    let dns: Vec<&Group> = plan.groups.iter().filter(|g| g.service == Service::Dns).collect();
    for g in &dns {
        println!("  group {}:", g.spec);
        for c in plan.of(Kind::Client) {
            for _ in 0..2 {
                match traced_dig(lab, c, g) {
                    Ok((site, p)) => println!("    {}", p.describe(&c.name, &site)),
                    Err(e) => println!("    {}: FAILED {e:#}", c.name),
                }
            }
        }
    }

    head("3. curl from every client through the HTTP group");
    if let Some(g) = plan.group(Service::Http, true, false) {
        for c in plan.of(Kind::Client) {
            match traced_curl(lab, c, g) {
                Ok((site, p)) => println!("    {}", p.describe(&c.name, &site)),
                Err(e) => println!("    {}: FAILED {e:#}", c.name),
            }
        }
        let c = plan.of(Kind::Client).next().context("no client")?;
        let url = format!("http://{}/big.bin", g.addr);
        let out = net::ns_run(
            &c.ns,
            &[
                "curl",
                "-sS",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{speed_download}",
                &url,
            ],
        )?;
        let mut it = out.split_whitespace();
        let (size, speed): (f64, f64) = (
            it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
            it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
        );
        println!(
            "    {} downloaded {url}: {:.1} MB at {:.1} MB/s",
            c.name,
            size / 1e6,
            speed / 1e6
        );
    }

    let Some(g) = plan.group(Service::Dns, true, true) else {
        bail!("the topology has no IPv4 DNS group")
    };
    let c1 = plan.of(Kind::Client).next().context("no client")?;

    head("4. kill a target (SIGKILL its dnsmasq and agent): the JAP drops it after hold_ms (700 ms)");
    let (victim, _) = traced_dig(lab, c1, g).or_else(|_| traced_dig(lab, c1, g))?;
    let vnode = plan.node(&victim).context("answer from an unknown site")?;
    let vip = site_ip(lab, &victim);
    let (probes, at) = watch_around(
        lab,
        c1,
        g.addr,
        Duration::from_secs(5),
        Duration::from_millis(800),
        || {
            services::agent_daemon(lab, vnode, g).kill();
            Daemon::new(&vnode.ns, &lab.node_dir(&victim), "dnsmasq").kill();
            Ok(())
        },
    )?;
    let outage = tools::outage_ms(&probes, at, |a| Some(a) != vip);
    results.push((
        "target killed".into(),
        outage,
        lost(&probes, at),
        "hold_ms 700 ms; goal < 1 s",
    ));
    match outage {
        Some(ms) => println!(
            "    {} was answered by {victim}; after the kill, every query is answered by the other target from +{ms} ms ({})",
            c1.name,
            summary(&probes, at, "kill")
        ),
        None => println!(
            "    service did NOT come back within 5 s ({})",
            summary(&probes, at, "kill")
        ),
    }
    services::up(lab, true)?;
    println!("    {victim} restarted and registered again");

    head("5. kill a JAP (SIGKILL a `pias proxy` that delivers to targets, not the client's ingress)");
    let mut picked = None;
    for c in plan.of(Kind::Client) {
        let Ok((_, p)) = traced_dig(lab, c, g) else {
            continue;
        };
        let iap = p.direct.first().or(p.via_rap.first()).cloned();
        if let (Some(iap), Some(jap)) = (iap, p.jap.first().cloned())
            && iap != jap
        {
            picked = Some((c, iap, jap));
            break;
        }
    }
    match picked {
        None => println!("    every client's JAP is its own ingress here; skipping"),
        Some((c, iap, jap)) => {
            let d = services::daemon(lab, &jap, "proxy")?;
            let (probes, at) = watch_around(
                lab,
                c,
                g.addr,
                Duration::from_secs(6),
                Duration::from_millis(800),
                || {
                    d.kill();
                    Ok(())
                },
            )?;
            let outage = tools::outage_ms(&probes, at, |_| true);
            results.push(("JAP killed".into(), outage, lost(&probes, at), "goal < 2 s"));
            match outage {
                Some(ms) => println!(
                    "    {} (ingress {iap}) was served through JAP {jap}; after killing it, every query is answered again from +{ms} ms ({})",
                    c.name,
                    summary(&probes, at, "kill")
                ),
                None => println!(
                    "    service did NOT come back within 6 s ({})",
                    summary(&probes, at, "kill")
                ),
            }
            print_now(lab, c, g);
            services::up(lab, true)?;
            println!("    {jap} restarted");
        }
    }

    let own = proxy_failovers(lab, c1, g, 6)?;
    results.extend(own.iter().cloned());

    head("9. hang a service (SIGSTOP a dnsmasq, its agent alive): the agent's health check deregisters it");
    hung_service(lab, c1, g, &mut results)?;

    let other = match compare {
        None => None,
        Some(o) => {
            head(&format!(
                "compare: the same proxy failovers (steps 10-12) under {}, on its built-in lab, measured now",
                o.plan.routing().name()
            ));
            services::down(lab)?;
            services::up(o, true)?;
            let c = o.plan.of(Kind::Client).next().context("no client")?;
            let og = o
                .plan
                .group(Service::Dns, true, true)
                .context("no IPv4 DNS group")?;
            let r = proxy_failovers(o, c, og, 10);
            services::down(o)?;
            services::up(lab, true)?;
            Some(r?)
        }
    };

    head(
        "summary: until every query is answered again, and queries lost (one every 20 ms, 100 ms timeout, new flow each)",
    );
    println!("    measured under {}:", routing.name());
    for (what, ms, lost, goal) in &results {
        match ms {
            Some(ms) => println!("    {what:<22} {ms:>5} ms  {lost:>3} lost   ({goal})"),
            None => println!("    {what:<22}  none  {lost:>3} lost   (service did not come back; {goal})"),
        }
    }
    if let (Some(other), Some(o)) = (other, compare) {
        let (a, b) = (routing.name(), o.plan.routing().name());
        println!("\n    a proxy going away, side by side (both measured in this run):");
        println!("    {:<22} {a:>16} {b:>16}", "");
        let cell = |m: Option<&Measured>| match m {
            Some((_, Some(ms), lost, _)) => format!("{ms} ms/{lost} lost"),
            Some((_, None, lost, _)) => format!("none/{lost} lost"),
            None => "-".into(),
        };
        for (what, ..) in &own {
            let mine = own.iter().find(|m| &m.0 == what);
            let theirs = other.iter().find(|m| &m.0 == what);
            println!("    {what:<22} {:>16} {:>16}", cell(mine), cell(theirs));
        }
    }
    services::up(lab, true)?;
    Ok(())
}

fn rel_word(r: Rel) -> &'static str {
    match r {
        Rel::Customer => "provider of",
        Rel::Peer => "peer of",
        Rel::Provider => "customer of",
    }
}

/// The three ways a proxy goes away, each from `c`'s ingress, numbered from step `n`: a process crash
/// (SIGKILL: its TUN and routes vanish and its BIRD withdraws them at once), a host crash (its BIRD is
/// frozen first, so only the neighbours' timers can tell: OSPF's dead interval, BGP's hold time, 3 s both)
/// and a graceful leave (SIGTERM).
fn proxy_failovers(lab: &Lab, c: &Node, g: &Group, n: u32) -> Result<Vec<Measured>> {
    let plan = &lab.plan;
    let routing = plan.routing();
    let mut results: Vec<Measured> = Vec::new();
    let (moves, timer) = match routing {
        Routing::Ospf => ("OSPF moves", "OSPF's dead interval (3 s)"),
        Routing::Bgp => ("BGP withdraws it and moves", "BGP's hold timer (3 s)"),
    };
    head(&format!(
        "{n}. kill an ingress proxy: its TUN and routes vanish, its BIRD says so at once, {moves} the client to the next proxy"
    ));
    kill_ingress(lab, c, g, false, &mut results)?;
    head(&format!(
        "{}. crash an ingress proxy's host (freeze its BIRD, kill the proxy): only {timer} can tell",
        n + 1
    ));
    kill_ingress(lab, c, g, true, &mut results)?;
    head(&format!(
        "{}. maintenance: SIGTERM a proxy (graceful leave: routes withdrawn, targets sent elsewhere, drain)",
        n + 2
    ));
    graceful_leave(lab, c, g, &mut results)?;
    services::up(lab, true)?;
    Ok(results)
}

/// Kills `c`'s ingress proxy (with `host`, its BIRD is frozen first) and measures `c`'s outage.
fn kill_ingress(lab: &Lab, c: &Node, g: &Group, host: bool, results: &mut Vec<Measured>) -> Result<()> {
    let plan = &lab.plan;
    let ing = status::ingress(lab, c, &plan.topo.anycast4).context("no ingress")?;
    let d = services::daemon(lab, &ing, "proxy")?;
    let bird = services::daemon(lab, &ing, "bird")?;
    let (probes, at) = watch_around(
        lab,
        c,
        g.addr,
        Duration::from_secs(if host { 8 } else { 6 }),
        Duration::from_millis(800),
        || {
            if host {
                bird.signal("STOP").context("the proxy's BIRD is not running")?;
            }
            d.kill();
            Ok(())
        },
    )?;
    if host {
        bird.kill();
    }
    let now = status::ingress(lab, c, &plan.topo.anycast4).unwrap_or_else(|| "?".into());
    let outage = tools::outage_ms(&probes, at, |_| true);
    let (what, goal) = match (host, plan.routing()) {
        (false, Routing::Ospf) => ("proxy process killed", "OSPF: the LSA goes at once"),
        (false, Routing::Bgp) => ("proxy process killed", "BGP: the withdrawal goes at once"),
        (true, Routing::Ospf) => ("proxy host crashed", "OSPF dead interval 3 s"),
        (true, Routing::Bgp) => ("proxy host crashed", "BGP hold time 3 s"),
    };
    results.push((what.into(), outage, lost(&probes, at), goal));
    match outage {
        Some(ms) => println!(
            "    {} reached {ing}; after the {}, {} reaches {now} and every query is answered again from +{ms} ms ({})",
            c.name,
            if host { "host crash" } else { "kill" },
            c.name,
            summary(&probes, at, "kill")
        ),
        None => println!(
            "    service did NOT come back within the watch ({})",
            summary(&probes, at, "kill")
        ),
    }
    print_now(lab, c, g);
    services::up(lab, true)?;
    println!(
        "    {ing} restarted; `pias lab status` shows {} back on it",
        c.name
    );
    Ok(())
}

/// Step 9: a hung service behind a live agent (SPEC.md §10.3). The dnsmasq answering `c` is stopped, its
/// agent keeps running: its DNS health check times out twice, it deregisters, queries go to the other
/// target; SIGCONT, and it registers again.
fn hung_service(
    lab: &Lab,
    c: &Node,
    g: &Group,
    results: &mut Vec<(String, Option<u64>, usize, &str)>,
) -> Result<()> {
    let (victim, _) = traced_dig(lab, c, g)?;
    let vip = site_ip(lab, &victim);
    let d = services::daemon(lab, &victim, "dnsmasq")?;
    let (probes, at) = watch_around(
        lab,
        c,
        g.addr,
        Duration::from_secs(4),
        Duration::from_millis(800),
        || {
            d.signal("STOP");
            Ok(())
        },
    )?;
    d.signal("CONT");
    let outage = tools::outage_ms(&probes, at, |a| Some(a) != vip);
    results.push((
        "service hung".into(),
        outage,
        lost(&probes, at),
        "health check 2 x 300 ms; goal < 1 s",
    ));
    match outage {
        Some(ms) => println!(
            "    {} was answered by {victim}; with its dnsmasq stopped, every query is answered by the other target from +{ms} ms ({}); SIGCONT: it registers again",
            c.name,
            summary(&probes, at, "stop")
        ),
        None => println!(
            "    service did NOT come back within 4 s ({})",
            summary(&probes, at, "stop")
        ),
    }
    Ok(())
}

/// "now: <the path a query from `c` through `g` takes>", after a failover.
fn print_now(lab: &Lab, c: &Node, g: &Group) {
    match traced_dig(lab, c, g) {
        Ok((site, p)) => println!("    now: {}", p.describe(&c.name, &site)),
        Err(e) => println!("    now: FAILED {e:#}"),
    }
}

/// The JAP a site's agent for `g` last registered with, from its log ("registered jap=pN").
fn registered_with(lab: &Lab, site: &str, g: &Group) -> Option<String> {
    let d = services::daemon(lab, site, &format!("agent-{}", g.tag())).ok()?;
    let log = std::fs::read_to_string(d.log_file()).ok()?;
    log.lines()
        .filter_map(|l| l.split("registered jap=").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .next_back()
        .map(str::to_owned)
}

/// SIGTERMs `c`'s ingress proxy and watches `c`'s queries across its drain; reports which sites' agents
/// moved and where.
fn graceful_leave(lab: &Lab, c: &Node, g: &Group, results: &mut Vec<Measured>) -> Result<()> {
    let ing = status::ingress(lab, c, &lab.plan.topo.anycast4).context("no ingress")?;
    let sites: Vec<String> = g
        .sites
        .iter()
        .filter(|s| registered_with(lab, s, g).as_deref() == Some(ing.as_str()))
        .cloned()
        .collect();
    let d = services::daemon(lab, &ing, "proxy")?;
    let (probes, at) = watch_around(
        lab,
        c,
        g.addr,
        Duration::from_secs(5),
        Duration::from_millis(800),
        || {
            d.signal("TERM").context("the proxy is not running")?;
            Ok(())
        },
    )?;
    let outage = tools::outage_ms(&probes, at, |_| true);
    results.push((
        "graceful leave".into(),
        outage,
        lost(&probes, at),
        "goal: next to nothing lost",
    ));
    println!(
        "    {} entered at {ing}; across its leave: {}",
        c.name,
        summary(&probes, at, "signal")
    );
    for s in &sites {
        match registered_with(lab, s, g) {
            Some(j) if j != ing => println!("    {s}'s agent was told Draining and registered with {j}"),
            other => println!("    {s}'s agent did NOT move (last registered with {other:?})"),
        }
    }
    // The watch ran 4.2 s past the signal; the drain is 2 s.
    let stopped = super::proc::wait_for(Duration::from_secs(3), || !d.running());
    println!(
        "    {ing} {} at the end of its drain_time",
        if stopped {
            "exited by itself"
        } else {
            "was still running"
        }
    );
    print_now(lab, c, g);
    Ok(())
}
