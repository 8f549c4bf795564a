//! What runs where: BIRD on routers and proxies; dnsmasq, an HTTP server, iperf3 and a UDP echo on target
//! sites; `pias proxy` on proxies; one `pias target` agent per (group, site). `up` starts what is not running;
//! `down` stops everything and deletes the namespaces.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::{Daemon, wait_for};
use super::topo::{Group, Kind, Node, Service};
use super::{Lab, bird, net, piascfg};

/// Size of the file the HTTP servers serve for download tests.
pub(crate) const BIG_FILE_BYTES: usize = 20 * 1024 * 1024;

/// The daemons of a node, in the order `down` stops them (agents, proxy, services, routing).
pub(crate) fn daemons(lab: &Lab, n: &Node) -> Vec<Daemon> {
    let dir = lab.node_dir(&n.name);
    let mut v = Vec::new();
    match n.kind {
        Kind::Site => {
            for g in lab.plan.groups.iter().filter(|g| g.sites.contains(&n.name)) {
                v.push(Daemon::new(&n.ns, &dir, &format!("agent-{}", g.tag())));
            }
            for s in ["dnsmasq", "http", "iperf3", "echo"] {
                v.push(Daemon::new(&n.ns, &dir, s));
            }
        }
        Kind::Proxy => {
            v.push(Daemon::new(&n.ns, &dir, "proxy"));
            v.push(Daemon::new(&n.ns, &dir, "bird"));
        }
        Kind::Router => v.push(Daemon::new(&n.ns, &dir, "bird")),
        Kind::Client => {}
    }
    v
}

fn start_iperf(d: &Daemon) -> Result<()> {
    d.start(&["iperf3".into(), "-s".into(), "-p".into(), "5201".into()])
        .map(|_| ())
}

/// Restarts a site's iperf3 server: one that stays "busy" with a test whose client is gone (seen in the
/// bench after unlimited UDP runs) refuses every later test until it gives up on that client.
pub(crate) fn restart_iperf(lab: &Lab, site: &str) -> Result<()> {
    let d = daemon(lab, site, "iperf3")?;
    d.stop(Duration::from_secs(2));
    start_iperf(&d)
}

pub(crate) fn daemon(lab: &Lab, node: &str, name: &str) -> Result<Daemon> {
    let n = lab.plan.node(node).with_context(|| format!("no node {node}"))?;
    Ok(Daemon::new(&n.ns, &lab.node_dir(node), name))
}

fn daemon_running(lab: &Lab, n: &Node, name: &str) -> bool {
    Daemon::new(&n.ns, &lab.node_dir(&n.name), name).running()
}

pub(crate) fn bird_ctl(lab: &Lab, node: &str) -> String {
    lab.node_dir(node).join("bird.ctl").display().to_string()
}

/// Brings the whole lab up (idempotent). With `wait`, returns once every client's router has a route to the
/// anycast prefixes and every client gets a DNS answer through the IPv4 group (bounded).
pub(crate) fn up(lab: &Lab, wait: bool) -> Result<()> {
    fs::create_dir_all(&lab.dir)?;
    net::build(&lab.plan)?;
    if lab.plan.fast_path_hook().is_some() {
        net::xdp_setup(&lab.plan, &lab.dir)?;
    }
    start_bird(lab)?;
    start_sites(lab)?;
    piascfg::write_keys(lab)?;
    wait_unicast(lab, Duration::from_secs(30))?;
    // One at a time, each joining the ones already up, so the overlay forms as one membership.
    for p in lab.plan.of(Kind::Proxy) {
        if !daemon_running(lab, p, "proxy") {
            start_proxy(lab, p)?;
            wait_members(lab, Duration::from_secs(30))?;
        }
    }
    // Agents register through the anycast address: start them once every proxy's announcements are in
    // every router, so each registers with its nearest proxy rather than with whichever was up first.
    wait_routes(lab, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(500));
    for s in lab.plan.of(Kind::Site) {
        start_agents(lab, s)?;
    }
    if wait {
        wait_ready(lab, Duration::from_secs(30))?;
    }
    Ok(())
}

fn start_bird(lab: &Lab) -> Result<()> {
    for n in lab
        .plan
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, Kind::Router | Kind::Proxy))
    {
        let dir = lab.node_dir(&n.name);
        fs::create_dir_all(&dir)?;
        let conf = dir.join("bird.conf");
        let log = dir.join("bird.log");
        fs::write(&conf, bird::config(&lab.plan, n, &log.display().to_string()))?;
        let d = Daemon::new(&n.ns, &dir, "bird");
        if d.running() {
            // Pick up a changed config without a restart.
            let _ = net::run("birdc", &["-s", &bird_ctl(lab, &n.name), "configure"]);
            continue;
        }
        let bird = super::which("bird").context("bird not found")?;
        d.start(&[
            bird.display().to_string(),
            "-f".into(),
            "-c".into(),
            conf.display().to_string(),
            "-s".into(),
            bird_ctl(lab, &n.name),
            "-P".into(),
            dir.join("bird.pidfile").display().to_string(),
        ])?;
    }
    Ok(())
}

/// A deterministic pseudo-random file (the same bytes on every site, so any target's copy has one checksum).
fn write_big_file(path: &Path) -> Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() == BIG_FILE_BYTES as u64) {
        return Ok(());
    }
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 16];
    for _ in 0..BIG_FILE_BYTES / chunk.len() {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk)?;
    }
    f.flush()?;
    Ok(())
}

fn start_sites(lab: &Lab) -> Result<()> {
    for s in lab.plan.of(Kind::Site) {
        let dir = lab.node_dir(&s.name);
        let www = dir.join("www");
        fs::create_dir_all(&www)?;
        fs::write(www.join("whoami"), format!("{}\n", s.name))?;
        write_big_file(&www.join("big.bin"))?;
        let serves = |svc: Service| {
            lab.plan
                .groups
                .iter()
                .any(|g| g.service == svc && g.sites.contains(&s.name))
        };
        let (a4, a6) = (s.addr4().to_string(), s.addr6().to_string());
        if serves(Service::Dns) {
            let dnsmasq = super::which("dnsmasq").context("dnsmasq not found")?;
            Daemon::new(&s.ns, &dir, "dnsmasq").start(&[
                dnsmasq.display().to_string(),
                "--keep-in-foreground".into(),
                "--conf-file=/dev/null".into(),
                "--no-resolv".into(),
                "--no-hosts".into(),
                "--bind-interfaces".into(),
                format!("--listen-address={a4}"),
                format!("--listen-address={a6}"),
                "--except-interface=lo".into(),
                "--port=53".into(),
                "--user=root".into(),
                "--pid-file=".into(),
                format!("--host-record=www.demo.pias,{a4},{a6}"),
                format!("--txt-record=whoami.demo.pias,{}", s.name),
                "--log-queries".into(),
                format!("--log-facility={}", dir.join("dns-queries.log").display()),
            ])?;
        }
        if serves(Service::Http) {
            Daemon::new(&s.ns, &dir, "http").start(&[
                "python3".into(),
                "-m".into(),
                "http.server".into(),
                "80".into(),
                "--bind".into(),
                "::".into(),
                "--directory".into(),
                www.display().to_string(),
            ])?;
        }
        if serves(Service::Iperf) {
            start_iperf(&Daemon::new(&s.ns, &dir, "iperf3"))?;
        }
        if serves(Service::Echo) {
            Daemon::new(&s.ns, &dir, "echo").start(&[
                lab.pias.display().to_string(),
                "lab".into(),
                "udp-echo".into(),
                "--bind".into(),
                "[::]:7".into(),
            ])?;
        }
    }
    Ok(())
}

pub(crate) fn start_proxy(lab: &Lab, p: &Node) -> Result<()> {
    let dir = lab.node_dir(&p.name);
    fs::create_dir_all(&dir)?;
    let argv = piascfg::proxy_argv(lab, p)?;
    Daemon::new(&p.ns, &dir, "proxy").start(&argv)?;
    Ok(())
}

pub(crate) fn agent_daemon(lab: &Lab, site: &Node, g: &Group) -> Daemon {
    Daemon::new(&site.ns, &lab.node_dir(&site.name), &format!("agent-{}", g.tag()))
}

pub(crate) fn start_agents(lab: &Lab, s: &Node) -> Result<()> {
    for g in lab.plan.groups.iter().filter(|g| g.sites.contains(&s.name)) {
        let mut argv = piascfg::agent_argv(lab, s, g, None)?;
        argv.extend(health_args(g));
        agent_daemon(lab, s, g).start(&argv)?;
    }
    Ok(())
}

/// How a site's agent checks its service (SPEC.md §10.3). Every agent checks; `pias target`'s default
/// (which follows the service) is kept where it sees what matters, and replaced where it cannot:
/// - DNS: the default, a DNS query for ". NS" (dnsmasq answers it, REFUSED or not);
/// - HTTP: a TCP connect would pass on a hung server (the kernel completes the handshake for a stopped
///   process), so `GET /whoami` must answer 200 — every 200 ms, so a hung server is out within 0.6 s;
/// - the UDP echo: a request must come back (the default port check would not see it hang);
/// - iperf3: its listening socket must exist (a test connection to its control port would disturb a
///   running benchmark, and its UDP port is bound only during a test).
fn health_args(g: &Group) -> Vec<String> {
    let v: &[&str] = match g.service {
        Service::Dns => &[],
        Service::Http => &[
            "--health",
            "http",
            "--health-http-path",
            "/whoami",
            "--health-interval-ms",
            "200",
            "--health-timeout-ms",
            "200",
        ],
        Service::Echo => &[
            "--health",
            "udp",
            "--health-udp-payload",
            "7069617320686561746820636865636b",
        ],
        Service::Iperf => &[
            "--health",
            "command",
            "--health-command",
            "ss -Hltn 'sport = :5201' | grep -q .",
        ],
    };
    v.iter().map(|s| s.to_string()).collect()
}

/// Waits until the lab's routing (OSPF or BGP) gives every proxy a route to every other proxy's overlay address. Proxies start only
/// then: a proxy that cannot reach its seeds when it starts stays outside the overlay.
fn wait_unicast(lab: &Lab, t: Duration) -> Result<()> {
    let proxies: Vec<&Node> = lab.plan.of(Kind::Proxy).collect();
    let ok = wait_for(t, || {
        proxies.iter().all(|p| {
            proxies.iter().filter(|q| q.name != p.name).all(|q| {
                net::output("ip", &["-n", &p.ns, "route", "get", &q.addr4().to_string()])
                    .is_ok_and(|o| o.status.success())
            })
        })
    });
    if !ok {
        anyhow::bail!(
            "{} gave the proxies no routes to each other in {t:?}: see {}/*/bird.log",
            lab.plan.routing().name(),
            lab.dir.display()
        );
    }
    Ok(())
}

/// Waits until every running proxy sees every running proxy alive.
pub(crate) fn wait_members(lab: &Lab, t: Duration) -> Result<()> {
    let running: Vec<&Node> = lab
        .plan
        .of(Kind::Proxy)
        .filter(|p| daemon_running(lab, p, "proxy"))
        .collect();
    let ids: Vec<u32> = running.iter().map(|p| p.index).collect();
    let mut last = String::new();
    let ok = wait_for(t, || {
        last.clear();
        running.iter().all(|p| match piascfg::alive_members(lab, p) {
            Ok(alive) => {
                let ok = ids.iter().all(|i| alive.contains(i));
                if !ok {
                    last = format!("{} sees {alive:?} alive", p.name);
                }
                ok
            }
            Err(e) => {
                last = format!("{}: {e:#}", p.name);
                false
            }
        })
    });
    if !ok {
        anyhow::bail!(
            "the proxies did not form one overlay in {t:?} (want ids {ids:?}; {last}): see {}/p*/proxy.log",
            lab.dir.display()
        );
    }
    Ok(())
}

/// Waits until every client's router routes both anycast prefixes and every (group, site) pair is registered
/// at some proxy (the proxies' `registrations` counters). Sends no client traffic, so IAP caches stay cold.
pub(crate) fn wait_ready(lab: &Lab, t: Duration) -> Result<()> {
    wait_routes(lab, t)?;
    wait_members(lab, t)?;
    let want = piascfg::expected_registrations(lab);
    let mut have = 0;
    let ok = wait_for(t, || {
        have = piascfg::sum(&piascfg::all_counters(lab), "registrations");
        have >= want
    });
    if !ok {
        anyhow::bail!(
            "{have} of {want} targets registered after {t:?}: see {}/p*/proxy.log and t*/agent-*.log",
            lab.dir.display()
        );
    }
    Ok(())
}

/// Waits until every client reaches a proxy for both anycast prefixes and every running proxy's
/// announcements have reached every router.
fn wait_routes(lab: &Lab, t: Duration) -> Result<()> {
    let (a4, a6) = (lab.plan.topo.anycast4.clone(), lab.plan.topo.anycast6.clone());
    let ok = wait_for(t, || {
        lab.plan.of(Kind::Client).all(|c| {
            super::status::ingress(lab, c, &a4).is_some() && super::status::ingress(lab, c, &a6).is_some()
        })
    });
    // Every running proxy's announcements (its NAT pool, routed into its TUN with the anycast prefixes) have
    // reached every router.
    let ok = ok
        && wait_for(t, || {
            lab.plan
                .of(Kind::Proxy)
                .filter(|p| daemon_running(lab, p, "proxy"))
                .all(|p| {
                    lab.plan.of(Kind::Router).all(|r| {
                        [p.pool4().to_string(), p.pool6().to_string()].iter().all(|a| {
                            net::output("ip", &["-n", &r.ns, "route", "get", a]).is_ok_and(|o| {
                                o.status.success()
                                    && !String::from_utf8_lossy(&o.stdout).contains("unreachable")
                            })
                        })
                    })
                })
        });
    if !ok {
        anyhow::bail!(
            "routing did not converge in {t:?}: see {}/*/bird.log",
            lab.dir.display()
        );
    }
    Ok(())
}

/// Stops every process of the lab and deletes its namespaces and directory.
pub(crate) fn down(lab: &Lab) -> Result<()> {
    for kind in [Kind::Site, Kind::Proxy, Kind::Router] {
        for n in lab.plan.of(kind) {
            for d in daemons(lab, n) {
                d.stop(Duration::from_millis(1500));
            }
        }
    }
    // Anything else still running inside the lab's namespaces was started there by the lab (or by `lab exec`).
    for ns in net::existing_namespaces(&lab.plan.topo.name)? {
        for pid in net::ns_pids(&ns) {
            net::send_signal(pid, "KILL");
        }
    }
    let gone = net::destroy(&lab.plan.topo.name)?;
    if lab.dir.exists() {
        fs::remove_dir_all(&lab.dir).with_context(|| format!("removing {}", lab.dir.display()))?;
    }
    println!(
        "lab down: removed {} namespaces and {}",
        gone.len(),
        lab.dir.display()
    );
    Ok(())
}
