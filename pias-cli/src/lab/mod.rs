//! `pias lab`: a namespace lab with real anycast routing (BIRD 2: one OSPF domain, or an Internet of ASes
//! speaking eBGP), real clients (`dig`, `curl`) and real servers (`dnsmasq`, an HTTP server) behind PIAS
//! proxies — Mininet for anycast.
//!
//! Layout: `topo` (the TOML model and derived addresses), `net` (namespaces, veths, addresses), `bird` (BIRD
//! configs), `proc` (background processes with pid files), `services` (what runs where), `status`, `demo`,
//! `bench`, `tools` (small helpers the lab runs inside namespaces: UDP echo and RTT probe).
//!
//! Everything lives in namespaces named `NAME-NODE` (`pias-r1`, …) and in the lab directory
//! (`/tmp/NAME-lab`: configs, control sockets, pid files, logs). `down` stops the processes it recorded (and any
//! left in the lab's namespaces) and deletes the namespaces by name; nothing on the host is touched.

mod bench;
mod bird;
mod demo;
mod net;
mod piascfg;
mod proc;
mod services;
mod status;
mod tools;
mod topo;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

pub(crate) use topo::Plan;

/// Options every lab subcommand takes.
#[derive(Debug, Clone, Parser)]
pub(crate) struct Common {
    /// Topology file (TOML); default: the built-in topology of `--routing` (`pias lab topology` prints it).
    #[arg(long, global = true)]
    topology: Option<PathBuf>,
    /// Routing between the lab's ISPs: `ospf` (one OSPF domain: three ISP routers in a line, "nearest" by
    /// link cost) or `bgp` (seven ASes, one router each, eBGP with customer/peer policy: a tier-1 pair,
    /// two transit ASes, stubs and a multi-homed AS; "nearest" by local preference and AS path). Without
    /// `--topology` it picks the built-in topology; with one, it overrides the file's `routing` (a file
    /// without `routing` is OSPF). Default: bgp (`bench`: ospf).
    #[arg(long, global = true, value_enum)]
    routing: Option<topo::Routing>,
    /// Lab directory (configs, sockets, pid files, logs); default /tmp/NAME-lab.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
}

/// Run a namespace lab: ISPs with clients and PIAS proxies, routers running BIRD 2, and two target sites
/// with dnsmasq and an HTTP server registered into anycast groups.
///
/// Two routings (`--routing`): `ospf`, three ISP routers in one OSPF domain, where the anycast prefix goes
/// to the proxy nearest by link cost; or `bgp`, seven ASes (tier-1 pair, transit, stubs, one multi-homed)
/// with eBGP between them and Gao-Rexford policy, each proxy announcing the anycast prefix from its own
/// private AS to its ISP, so clients reach the proxy their ISPs' policy and AS paths prefer, and a proxy
/// that stops or drains is withdrawn by BGP.
///
/// Needs root and: ip (iproute2), bird/birdc (bird2), dnsmasq, dig (dnsutils), curl, python3; iperf3 for
/// `bench`. Typical use: `pias lab demo`, or `pias lab up --routing bgp`, then `pias lab status`,
/// `pias lab exec c1 -- dig @10.99.0.53 www.demo.pias`, `pias lab down`.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create namespaces and links, start BIRD, the target services, the proxies and the target agents
    /// (idempotent: what already runs is kept), and wait until every client reaches a proxy.
    Up,
    /// Stop everything the lab started and delete its namespaces.
    Down,
    /// Show which proxy each client reaches (IPv4 and IPv6), routes, and every proxy's state.
    Status,
    /// Bring the lab up, query through PIAS from every client, show the paths, kill a target, a JAP and an
    /// ingress proxy one after another while service continues, crash a proxy's host and let one leave
    /// gracefully; measure those proxy failovers on the other routing's lab too; then tear down.
    Demo {
        /// Leave the lab running at the end.
        #[arg(long)]
        keep: bool,
        /// Skip the comparison: without it (and without `--topology`), the proxy failovers are measured
        /// on the other routing's built-in lab too and printed beside this one's.
        #[arg(long)]
        no_compare: bool,
    },
    /// Run a command in a lab node's namespace: `pias lab exec c1 -- dig @10.99.0.53 www.demo.pias`.
    Exec {
        /// Node name (r1, p1, c1, t1, …).
        node: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Measure UDP small-packet rate, TCP throughput and added round-trip time through PIAS against plain kernel
    /// forwarding on the same topology, and write the ratios to BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Print every proxy's counters as `PROXY COUNTER VALUE` lines (from `pias ctl counters --json`), only the
    /// named counters if any are given.
    Counters { names: Vec<String> },
    /// Print the built-in topology of `--routing` (a starting point for `--topology`).
    Topology,
    /// (Internal) UDP echo server the lab runs on target sites.
    #[command(hide = true)]
    UdpEcho {
        #[arg(long)]
        bind: std::net::SocketAddr,
    },
    /// (Internal) DNS probe: a query (new source port each) every INTERVAL ms for DURATION ms, printing
    /// `SENT_MS DONE_MS ANSWER` (or `timeout`) per query; used to time failovers.
    #[command(hide = true)]
    DnsWatch {
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        #[arg(long, default_value_t = 250)]
        timeout_ms: u64,
        /// Send every query from this one source port (one long-lived flow) instead of a new port each.
        #[arg(long)]
        src_port: Option<u16>,
    },
    /// (Internal) Spoofed-flow flood for the NAT attack test: one DNS query from a random address of SOURCES
    /// (and a random port) each, RATE per second for DURATION ms, through a raw socket. Bounded (at most
    /// 20,000/s for 120 s) and lab addresses only (10/8, 172.16/12, 192.168/16, 198.18/15).
    #[command(hide = true)]
    Flood {
        #[arg(long)]
        server: std::net::SocketAddrV4,
        /// Source prefix, e.g. 198.18.0.0/15 (benchmarking space; route it to a blackhole in the lab).
        #[arg(long)]
        sources: String,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
    },
    /// (Internal) UDP round-trip probe: sends COUNT requests one after another, prints median and p99 in µs.
    #[command(hide = true)]
    UdpPing {
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Send from this local address (default: the one routing picks).
        #[arg(long)]
        from: Option<std::net::IpAddr>,
    },
}

/// A loaded lab: the plan and where its files are.
#[derive(Debug, Clone)]
pub(crate) struct Lab {
    pub plan: Plan,
    pub dir: PathBuf,
    /// The `pias` binary to run proxies and agents with.
    pub pias: PathBuf,
}

impl Lab {
    pub(crate) fn load(c: &Common) -> Result<Lab> {
        let topo = topo::Topology::load(c.topology.as_deref(), c.routing)?;
        let plan = topo.plan()?;
        let dir = c
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/{}-lab", plan.topo.name)));
        let pias = std::env::current_exe().context("locating the pias binary")?;
        Ok(Lab { plan, dir, pias })
    }

    pub(crate) fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join(node)
    }

    pub(crate) fn ns(&self, node: &str) -> Result<String> {
        Ok(self
            .plan
            .node(node)
            .with_context(|| format!("no node {node:?} in the topology"))?
            .ns
            .clone())
    }
}

/// The programs every lab runs, each with the Debian package that brings it.
pub(crate) const LAB_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("bird", "bird2"),
    ("birdc", "bird2"),
    ("dnsmasq", "dnsmasq"),
    ("dig", "dnsutils"),
    ("curl", "curl"),
    ("python3", "python3"),
];
/// The programs `pias lab bench` runs besides [`LAB_TOOLS`].
pub(crate) const BENCH_TOOLS: &[(&str, &str)] = &[("iperf3", "iperf3")];

/// Checks root and the tools a lab needs; the error lists what is missing and how to install it.
pub(crate) fn preflight(bench: bool) -> Result<()> {
    if !running_as_root() {
        bail!("the lab needs root (network namespaces, veth, TUN): run it as root");
    }
    let mut tools = LAB_TOOLS.to_vec();
    if bench {
        tools.extend_from_slice(BENCH_TOOLS);
    }
    let missing: Vec<_> = tools.iter().filter(|(t, _)| which(t).is_none()).collect();
    if !missing.is_empty() {
        let pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        let names: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
        bail!(
            "missing tools: {} — install with: apt-get install -y {}",
            names.join(", "),
            pkgs.join(" ")
        );
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing: the proxies need TUN devices");
    }
    Ok(())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Full path of a program on PATH (or the sbin directories root has).
pub(crate) fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain([
            "/usr/sbin",
            "/sbin",
            "/usr/bin",
            "/bin",
            "/usr/local/bin",
            "/usr/local/sbin",
        ])
        .map(|d| PathBuf::from(d).join(prog))
        .find(|p| p.is_file())
}

pub(crate) fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Topology => {
            print!(
                "{}",
                a.common.routing.unwrap_or(topo::Routing::CLI_DEFAULT).builtin()
            );
            Ok(())
        }
        Cmd::UdpEcho { bind } => tools::udp_echo(bind),
        Cmd::DnsWatch {
            server,
            duration_ms,
            interval_ms,
            timeout_ms,
            src_port,
        } => tools::dns_watch(
            server,
            Duration::from_millis(duration_ms),
            Duration::from_millis(interval_ms),
            Duration::from_millis(timeout_ms),
            src_port,
        ),
        Cmd::Flood {
            server,
            sources,
            rate,
            duration_ms,
        } => {
            let (a, l) = sources
                .split_once('/')
                .and_then(|(a, l)| Some((a.parse().ok()?, l.parse().ok()?)))
                .context("--sources: IPv4 prefix like 198.18.0.0/15")?;
            tools::flood(server, (a, l), rate, Duration::from_millis(duration_ms)).map(|_| ())
        }
        Cmd::UdpPing { to, count, from } => {
            let r = tools::udp_ping(to, count, Duration::from_millis(500), from)?;
            println!("{}", r.line());
            Ok(())
        }
        cmd => {
            let mut common = a.common.clone();
            if matches!(cmd, Cmd::Bench(_)) && common.topology.is_none() {
                // The bench's baselines and BENCHMARKS.md are the OSPF lab's (one ISP per client).
                common.routing.get_or_insert(topo::Routing::Ospf);
            }
            let lab = Lab::load(&common)?;
            match cmd {
                Cmd::Up => {
                    preflight(false)?;
                    services::up(&lab, true)?;
                    status::print(&lab)
                }
                Cmd::Down => {
                    services::down(&lab)?;
                    Ok(())
                }
                Cmd::Status => status::print(&lab),
                Cmd::Counters { names } => {
                    for (p, c) in piascfg::all_counters(&lab) {
                        for (n, v) in c.iter().filter(|(n, _)| names.is_empty() || names.contains(n)) {
                            println!("{p} {n} {v}");
                        }
                    }
                    Ok(())
                }
                Cmd::Demo { keep, no_compare } => {
                    preflight(false)?;
                    let other = (!no_compare && a.common.topology.is_none())
                        .then(|| {
                            let r = match lab.plan.routing() {
                                topo::Routing::Ospf => topo::Routing::Bgp,
                                topo::Routing::Bgp => topo::Routing::Ospf,
                            };
                            let c = Common {
                                routing: Some(r),
                                ..a.common.clone()
                            };
                            Lab::load(&c)
                        })
                        .transpose()?;
                    demo::run(&lab, keep, other.as_ref())
                }
                Cmd::Exec { node, cmd } => {
                    let ns = lab.ns(&node)?;
                    let st = std::process::Command::new("ip")
                        .args(["netns", "exec", &ns])
                        .args(&cmd)
                        .status()
                        .context("running ip netns exec")?;
                    if !st.success() {
                        bail!("{} exited with {st}", cmd[0]);
                    }
                    Ok(())
                }
                Cmd::Bench(b) => {
                    preflight(true)?;
                    bench::run(&lab, b)
                }
                Cmd::Topology
                | Cmd::UdpEcho { .. }
                | Cmd::UdpPing { .. }
                | Cmd::DnsWatch { .. }
                | Cmd::Flood { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packages `scripts/apt-packages.txt` gives `job` (`demo` or `test`): the lines whose second
    /// column is the job or `both`.
    fn apt_packages_for(job: &str) -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/apt-packages.txt");
        let text = std::fs::read_to_string(path).expect("scripts/apt-packages.txt");
        text.lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (name, who) = (w.next()?, w.next()?);
                (who == "both" || who == job).then(|| name.to_string())
            })
            .collect()
    }

    /// Each README command, run first and alone on a fresh machine, must install what it needs: the demo
    /// builds `pias` (which links driver-xdp, whose build compiles the XDP program) and runs every lab
    /// tool, bench included; the tests need all of that too.
    #[test]
    fn both_readme_commands_install_what_the_build_and_the_lab_need() {
        let needed = driver_xdp::BUILD_DEBIAN_PACKAGES
            .iter()
            .copied()
            .chain(LAB_TOOLS.iter().chain(BENCH_TOOLS).map(|(_, p)| *p));
        for job in ["demo", "test"] {
            let list = apt_packages_for(job);
            assert!(list.len() >= 5, "{job}: {list:?}");
            for p in needed.clone() {
                assert!(
                    list.iter().any(|l| l == p),
                    "scripts/apt-packages.txt does not give `{p}` to the {job} job: {list:?}"
                );
            }
        }
        assert!(
            apt_packages_for("test").iter().any(|p| p == "g++"),
            "libfuzzer-sys builds C++"
        );
    }
}
