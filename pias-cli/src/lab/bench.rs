//! `pias lab bench`: PIAS against plain kernel forwarding on the same lab, in the same run.
//!
//! For each chosen client, the same measurements go to a target site's unicast address twice with the kernel
//! forwarding — once directly (client → routers → site, "kernel") and once over the hops PIAS takes, from a
//! second client address policy-routed through the IAP's and the JAP's namespaces acting as plain IP routers
//! (client → router → IAP → router → … → JAP's router → JAP → JAP's router → site, replies back through the
//! JAP: "kernel-same-path", [`net::SamePath`]) — and once per driver to the anycast group (through the
//! client's IAP and the group's JAP, both `pias proxy` processes): TCP throughput (iperf3, one stream), small-packet UDP rate (iperf3, 64-byte
//! payloads, unlimited send rate, packets *received* per second), and UDP round-trip time (an echo,
//! one request at a time; median and p99). Every run is bounded (`--seconds`, `--pings`); all traffic stays
//! inside the lab's namespaces. Every driver chosen (`--drivers`, default tokio, mio and xdp) is measured in the
//! same run, against the same kernel baseline, with the same interface settings (those `driver = "xdp"` needs:
//! checksums computed by the senders, an XDP_PASS program on the routers' proxy-facing veths). The ratios go to
//! BENCHMARKS.md, section "## Lab (kernel, tokio, mio, xdp)", with the XDP program's per-packet cost on its hit
//! paths from `BPF_PROG_TEST_RUN` (driver-xdp's `hit_path_ns_per_packet`, run by cargo from the workspace).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

use super::topo::{Kind, Node, Plan, Service};
use super::{Lab, net, piascfg, services, status};

#[derive(Debug, Parser)]
pub(crate) struct BenchArgs {
    /// Seconds per iperf3 run (bounded to 1-10).
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Echo round trips per RTT measurement (bounded to 100-20000).
    #[arg(long, default_value_t = 2000)]
    pings: u32,
    /// Clients to measure from (default: every client).
    #[arg(long)]
    clients: Vec<String>,
    /// The drivers whose PIAS path is measured (each against the same kernel baseline).
    #[arg(long, value_delimiter = ',', default_values_t = ["tokio".to_owned(), "mio".to_owned(), "xdp".to_owned(), "xdp-tc".to_owned()])]
    drivers: Vec<String>,
    /// Skip the BPF_PROG_TEST_RUN measurement (it runs `cargo test --release -p driver-xdp` in the workspace).
    #[arg(long)]
    no_test_run: bool,
    /// The file to write the lab section into.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Do not write the file, only print.
    #[arg(long)]
    no_write: bool,
    /// Leave the lab running afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Default)]
struct Row {
    client: String,
    /// "kernel", "kernel-same-path" or the driver.
    driver: String,
    path: String,
    tcp_gbps: f64,
    udp_kpps: f64,
    udp_loss: f64,
    rtt_med: f64,
    rtt_p99: f64,
}

/// One iperf3 run (JSON). The server runs one test at a time and needs a moment after an unlimited UDP run,
/// so a refused start is retried (at most 20 tries, 1 s apart); a server still busy after 8 tries is
/// restarted (`restart`) once. `bind`: the client's source address.
fn iperf(
    c: &Node,
    server: IpAddr,
    bind: Option<IpAddr>,
    secs: u32,
    udp: bool,
    restart: &dyn Fn() -> Result<()>,
) -> Result<serde_json::Value> {
    let t = secs.to_string();
    let s = server.to_string();
    let b = bind.map(|b| b.to_string());
    let mut args = vec!["timeout", "30", "iperf3", "-c", &s, "-p", "5201", "-t", &t, "-J"];
    if let Some(b) = &b {
        args.extend_from_slice(&["-B", b]);
    }
    if udp {
        args.extend_from_slice(&["-u", "-b", "0", "-l", "64"]);
    }
    let mut last = String::new();
    // A run that was cut short (a warm-up under `timeout`, a refused start) leaves the server "busy" until
    // its control connection times out: keep asking for up to 20 s.
    for i in 0..20 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        if i == 8 && last.contains("busy") {
            println!("  {:<3} iperf3 server still busy: restarting it ({last})", c.name);
            restart()?;
        }
        let o = net::ns_output(&c.ns, &args)?;
        match serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            Ok(v) if v.get("error").is_none() => return Ok(v),
            Ok(v) => last = v["error"].to_string(),
            Err(e) => last = format!("{e}: {}", String::from_utf8_lossy(&o.stderr)),
        }
    }
    bail!("iperf3 from {} to {s}: {last}", c.name)
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(|x| x.as_f64())
        .unwrap_or(0.0)
}

/// One row: RTT, TCP and UDP from client `c` (from its address `from`, if given) to `ip` and `echo`.
fn measure(
    lab: &Lab,
    c: &Node,
    path: &str,
    ip: IpAddr,
    echo: SocketAddr,
    from: Option<IpAddr>,
    a: &BenchArgs,
) -> Result<Row> {
    // RTT first, on an idle path (after an unlimited UDP run the proxies' queues take a while to drain).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pias = lab.pias.display().to_string();
    let (echo_s, pings) = (echo.to_string(), a.pings.to_string());
    let from_s = from.map(|f| f.to_string());
    let mut ping = vec![
        pias.as_str(),
        "lab",
        "udp-ping",
        "--to",
        &echo_s,
        "--count",
        &pings,
    ];
    if let Some(f) = &from_s {
        ping.extend_from_slice(&["--from", f]);
    }
    let o = net::ns_run(&c.ns, &ping)?;
    let restart = || {
        let g = lab
            .plan
            .group(Service::Iperf, true, false)
            .context("iperf group")?;
        services::restart_iperf(lab, &g.sites[0])
    };
    let tcp = iperf(c, ip, from, a.seconds, false, &restart)?;
    let udp = iperf(c, ip, from, a.seconds, true, &restart)?;
    let (pk, lost, secs) = (
        f(&udp, &["end", "sum", "packets"]),
        f(&udp, &["end", "sum", "lost_packets"]),
        f(&udp, &["end", "sum", "seconds"]),
    );
    let mut r = Row {
        client: c.name.clone(),
        driver: String::new(),
        path: path.to_owned(),
        tcp_gbps: f(&tcp, &["end", "sum_received", "bits_per_second"]) / 1e9,
        udp_kpps: if secs > 0.0 { (pk - lost) / secs / 1e3 } else { 0.0 },
        udp_loss: if pk > 0.0 { lost / pk * 100.0 } else { 0.0 },
        ..Row::default()
    };
    for kv in o.split_whitespace() {
        match kv.split_once('=') {
            Some(("median_us", v)) => r.rtt_med = v.parse().unwrap_or(0.0),
            Some(("p99_us", v)) => r.rtt_p99 = v.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    println!(
        "  {:<3} {:<34} TCP {:>6.2} Gbit/s   UDP-64B {:>7.1} kpps rx ({:>4.1}% lost)   RTT median {:>6.1} µs p99 {:>7.1} µs",
        r.client, r.path, r.tcp_gbps, r.udp_kpps, r.udp_loss, r.rtt_med, r.rtt_p99
    );
    Ok(r)
}

pub(crate) fn run(lab: &Lab, mut a: BenchArgs) -> Result<()> {
    a.seconds = a.seconds.clamp(1, 10);
    a.pings = a.pings.clamp(100, 20000);
    let plan = &lab.plan;
    let (Some(tcp_g), Some(_), Some(echo_g)) = (
        plan.group(Service::Iperf, true, false),
        plan.group(Service::Iperf, true, true),
        plan.group(Service::Echo, true, true),
    ) else {
        bail!("the topology needs IPv4 iperf groups (tcp and udp, port 5201) and an IPv4 echo group");
    };
    let site = plan.node(&tcp_g.sites[0]).context("iperf site")?;
    if echo_g.sites[0] != site.name {
        bail!("the iperf and echo groups must be served by the same site");
    }
    let debug = cfg!(debug_assertions);
    if debug {
        println!("WARNING: this `pias` is a debug build; build with --release for meaningful numbers");
    }
    for d in &a.drivers {
        if !matches!(d.as_str(), "tokio" | "mio" | "xdp" | "xdp-tc") {
            bail!("--drivers: {d:?} is not a driver; use tokio, mio, xdp, xdp-tc");
        }
    }
    let clients: Vec<&Node> = plan
        .of(Kind::Client)
        .filter(|c| a.clients.is_empty() || a.clients.contains(&c.name))
        .collect();
    let mut rows = Vec::new();
    // Clients without a kernel-same-path row, and why.
    let mut skipped: Vec<(String, String)> = Vec::new();
    for (k, d) in a.drivers.iter().enumerate() {
        let mut lab = lab.clone();
        lab.plan.topo.driver = d.clone();
        let lab = &lab;
        println!("bringing the lab up (fresh, with this binary, driver {d})…");
        services::down(lab)?;
        services::up(lab, true)?;
        // The same interface settings for every driver and the kernel baseline.
        net::xdp_setup(&lab.plan, &lab.dir)?;
        let mut kept: Vec<net::SamePath> = Vec::new();
        let r = (|| -> Result<()> {
            for c in &clients {
                let ing = status::ingress_of(lab, c, tcp_g.addr.ip()).unwrap_or_else(|| "?".into());
                // Warm the IAP caches so the measured flows take the 3-segment path from the start.
                let _ = net::ns_output(
                    &c.ns,
                    &[
                        "timeout",
                        "5",
                        "iperf3",
                        "-c",
                        &tcp_g.addr.ip().to_string(),
                        "-t",
                        "1",
                    ],
                );
                let before = piascfg::all_counters(lab);
                let _ = net::ns_output(
                    &c.ns,
                    &[
                        &lab.pias.display().to_string(),
                        "lab",
                        "udp-ping",
                        "--to",
                        &echo_g.addr.to_string(),
                        "--count",
                        "5",
                    ],
                );
                let after = piascfg::all_counters(lab);
                let jap = piascfg::path(&before, &after).jap.join("+");
                if k == 0 {
                    let direct = SocketAddr::new(site.addr4().into(), Service::Echo.port());
                    let mut r = measure(
                        lab,
                        c,
                        &format!("kernel → {} {}", site.name, site.addr4()),
                        site.addr4().into(),
                        direct,
                        None,
                        &a,
                    )?;
                    r.driver = "kernel".into();
                    rows.push(r);
                    match same_path(lab, c, &ing, &jap, site, &a, &mut kept) {
                        Ok(mut r) => {
                            r.driver = "kernel-same-path".into();
                            rows.push(r);
                        }
                        Err(e) => {
                            println!("  {:<3} no kernel-same-path row: {e:#}", c.name);
                            skipped.push((c.name.clone(), format!("{e:#}")));
                        }
                    }
                }
                let label = format!("PIAS IAP {ing} → JAP {jap} → {}", site.name);
                let mut r = measure(lab, c, &label, tcp_g.addr.ip(), echo_g.addr, None, &a)?;
                r.driver = d.clone();
                rows.push(r);
            }
            Ok(())
        })();
        for mut sp in kept {
            sp.down();
        }
        if !a.keep || k + 1 < a.drivers.len() {
            services::down(lab)?;
        }
        r?;
    }
    let test_run = if a.no_test_run || !a.drivers.iter().any(|d| d.starts_with("xdp")) {
        Vec::new()
    } else {
        xdp_test_run()
    };
    let section = render(&rows, &skipped, &test_run, &a, debug);
    println!("\n{section}");
    if !a.no_write {
        write_section(&a.out, &section)?;
        println!("written to {}", a.out.display());
    }
    Ok(())
}

/// The routers a packet from `router` to `dst` crosses by the main table, `router` first, up to the one `dst`
/// hangs off.
fn router_chain(plan: &Plan, router: &Node, dst: Ipv4Addr) -> Result<Vec<String>> {
    let mut at = router;
    let mut chain = vec![at.name.clone()];
    for _ in 0..16 {
        let out = net::run("ip", &["-n", &at.ns, "route", "get", &dst.to_string()])?;
        let dev = out
            .split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .with_context(|| format!("{}: no route to {dst}", at.name))?;
        let next = plan
            .node(dev)
            .with_context(|| format!("{}: {dst} via {dev}, not a lab node", at.name))?;
        match next.kind {
            Kind::Router => {
                at = next;
                chain.push(at.name.clone());
            }
            _ => return Ok(chain),
        }
    }
    bail!("{}: no loop-free route to {dst}", router.name)
}

/// A ping from `src` (an address of client `c`) to `dst`: the forwarding hops on the way there (the
/// smallest TTL that gets an echo reply, less one) and the TTL of the reply. `None` if no reply comes.
fn hops(c: &Node, src: Ipv4Addr, dst: Ipv4Addr) -> Option<(u32, u32)> {
    let (src, dst) = (src.to_string(), dst.to_string());
    for t in 1..=24u32 {
        let ttl = t.to_string();
        let o = net::ns_output(
            &c.ns,
            &["ping", "-n", "-c", "1", "-W", "1", "-t", &ttl, "-I", &src, &dst],
        )
        .ok()?;
        if o.status.success() {
            let out = String::from_utf8_lossy(&o.stdout);
            let reply = out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ttl="))
                .and_then(|v| v.parse().ok())?;
            return Some((t - 1, reply));
        }
    }
    None
}

/// The kernel-same-path row of client `c`: kernel IP forwarding over the hops its PIAS traffic takes (IAP
/// `ing`, JAP `jap`), from a second client address ([`net::SamePath`]); the routing is checked with ping
/// (hops there, reply TTL) before measuring. The set-up stays in `kept` until the lab's measurements are
/// over: removing the second address while iperf3's last connection from it is still closing left the
/// server "busy" for good (its peer's FIN never came). An error says why there is no row.
fn same_path(
    lab: &Lab,
    c: &Node,
    ing: &str,
    jap: &str,
    site: &Node,
    a: &BenchArgs,
    kept: &mut Vec<net::SamePath>,
) -> Result<Row> {
    let plan = &lab.plan;
    let (Some(iap), Some(japn)) = (
        plan.node(ing).filter(|n| n.kind == Kind::Proxy),
        plan.node(jap).filter(|n| n.kind == Kind::Proxy),
    ) else {
        bail!("IAP {ing:?} and JAP {jap:?} must each be one known proxy");
    };
    let (Some(rc), Some(rj)) = (
        c.router.as_deref().and_then(|r| plan.node(r)),
        japn.router.as_deref().and_then(|r| plan.node(r)),
    ) else {
        bail!("the client and the JAP must hang off routers");
    };
    // The client's router to the site's (the direct kernel path), then the PIAS hops around it.
    let chain = router_chain(plan, rc, site.addr4())?;
    let mut seq = vec![rc.name.clone()];
    if iap.name != japn.name {
        seq.extend([iap.name.clone(), rc.name.clone()]);
    }
    seq.extend(chain[1..].iter().cloned());
    seq.extend([japn.name.clone(), rj.name.clone()]);
    let label = format!("kernel {} → {} {}", seq.join(" "), site.name, site.addr4());
    let direct = hops(c, c.addr4(), site.addr4());
    let sp = net::SamePath::up(plan, c, iap, japn, site)?;
    let r = (|| -> Result<Row> {
        if super::which("ping").is_none() {
            println!("  {:<3} (path not checked: no ping)", c.name);
        } else {
            let same = hops(c, sp.from, site.addr4());
            let ((df, dt), (sf, st)) = direct.zip(same).with_context(|| {
                format!(
                    "no ping reply from {} (from {} and from {})",
                    site.addr4(),
                    c.addr4(),
                    sp.from
                )
            })?;
            println!(
                "  {:<3} path check from {}: {sf} hops there, reply TTL {st} (direct: {df} hops, TTL {dt})",
                c.name, sp.from
            );
            // There: the hops listed; back: the direct path's plus the JAP and its router once more.
            if sf as usize != seq.len() || st + 2 != dt {
                bail!(
                    "from {} the path is not {} (expected {} hops there and reply TTL {})",
                    sp.from,
                    seq.join(" "),
                    seq.len(),
                    dt.saturating_sub(2)
                );
            }
        }
        let echo = SocketAddr::new(site.addr4().into(), Service::Echo.port());
        let from = IpAddr::V4(sp.from);
        measure(lab, c, &label, site.addr4().into(), echo, Some(from), a)
    })();
    kept.push(sp);
    r
}

/// driver-xdp's `hit_path_ns_per_packet` (BPF_PROG_TEST_RUN, repeat 1 000 000), run by cargo in the
/// workspace this `pias` was built from: its "… ns/packet …" lines, or one line saying why there are none.
fn xdp_test_run() -> Vec<String> {
    let ws = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    println!("BPF_PROG_TEST_RUN: cargo test --release -p driver-xdp --test kernel hit_path_ns_per_packet…");
    let o = std::process::Command::new("cargo")
        .current_dir(&ws)
        .args([
            "test",
            "--release",
            "-q",
            "-p",
            "driver-xdp",
            "--test",
            "kernel",
            "hit_path_ns_per_packet",
            "--",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match o {
        Ok(o) if o.status.success() => {
            let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("ns/packet"))
                .map(|l| {
                    l.trim()
                        .trim_start_matches('.')
                        .trim_start_matches("driver-xdp ")
                        .to_owned()
                })
                .collect();
            for l in &lines {
                println!("  {l}");
            }
            lines
        }
        Ok(o) => vec![format!(
            "not measured: the test failed ({})",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )],
        Err(e) => vec![format!(
            "not measured: cannot run cargo in {} ({e})",
            ws.display()
        )],
    }
}

const HEAD: &str = "## Lab (kernel, tokio, mio, xdp)";
/// The heading this section had before it measured every driver (replaced in place).
const OLD_HEAD: &str = "## Lab (driver-tokio)";

fn render(
    rows: &[Row],
    skipped: &[(String, String)],
    test_run: &[String],
    a: &BenchArgs,
    debug: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{HEAD}\n");
    let _ = writeln!(
        s,
        "`pias lab bench` ({} build; {} s per iperf3 run, {} echo round trips; drivers {}, one lab per driver, the \
         kernel baselines measured once per client): the default lab topology \
         (r1 — r2 — r3, client and `pias proxy` per router, target site t1 on r1), all in network namespaces on \
         veth links of one machine (2 cores, shared by every namespace, routers and proxies). For each client the \
         same tools run to t1's unicast address twice with plain kernel forwarding — \"kernel\": directly, through \
         the routers; \"kernel-same-path\": over the hops PIAS takes, from a second client address policy-routed \
         through the IAP's and the JAP's namespaces acting as plain IP routers (client → router → IAP → router → \
         … → JAP's router → JAP → JAP's router → t1, replies t1 → JAP's router → JAP → JAP's router → … → client; \
         checked with ping before measuring) — and once per \
         driver to the anycast groups 10.99.0.52:5201/tcp+udp and 10.99.0.7:7/udp (client → IAP → JAP → t1): \
         tokio and mio through the driver's TUN and overlay socket, xdp through the fast-path program on each \
         proxy's veth, native XDP (\"xdp\", which needs an XDP_PASS program on the routers' proxy-facing veths \
         to receive XDP_TX frames) or at TC ingress (\"xdp-tc\", frames sent back handed to the router's veth end \
         with bpf_redirect_peer); first packets, SYNs and a JAP that is the IAP itself take the tokio slow path. \
         Every run has `ethtool -K tx off` on clients, sites and proxies (the fast path passes packets with \
         offloaded checksums); the kernel baselines are measured in the first driver's lab, with no BPF program \
         on any interface unless that driver is xdp. TCP: iperf3, one stream. UDP: iperf3 with 64-byte payloads at \
         unlimited rate, packets received per second (sender, proxies and receiver share the 2 cores, so this \
         is an overload figure and noisy). RTT: UDP echo, one request in flight, measured first on an idle path.\n",
        if debug { "debug" } else { "release" },
        a.seconds,
        a.pings,
        a.drivers.join(", ")
    );
    let _ = writeln!(
        s,
        "| client | driver | path | TCP Gbit/s | UDP 64 B kpps (rx) | UDP loss | RTT median µs | RTT p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.1} | {:.1}% | {:.1} | {:.1} |",
            r.client, r.driver, r.path, r.tcp_gbps, r.udp_kpps, r.udp_loss, r.rtt_med, r.rtt_p99
        );
    }
    let _ = writeln!(
        s,
        "\nRatios against direct kernel forwarding (PIAS ÷ kernel on the same client) and added round-trip time \
         (PIAS − kernel):\n"
    );
    let _ = writeln!(
        s,
        "| client | driver | TCP ratio | UDP pps ratio | added RTT median µs | added RTT p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    ratios(&mut s, rows, "kernel", &a.drivers);
    if rows.iter().any(|r| r.driver == "kernel-same-path") || !skipped.is_empty() {
        let _ = writeln!(
            s,
            "\nRatios against kernel forwarding over the same hops (PIAS ÷ kernel-same-path on the same client) and \
             added round-trip time (PIAS − kernel-same-path):\n"
        );
        let _ = writeln!(
            s,
            "| client | driver | TCP ratio | UDP pps ratio | added RTT median µs | added RTT p99 µs |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
        ratios(&mut s, rows, "kernel-same-path", &a.drivers);
        if !skipped.is_empty() {
            let _ = writeln!(s);
        }
        for (c, why) in skipped {
            let _ = writeln!(s, "- {c}: no kernel-same-path row ({why})");
        }
    }
    if !test_run.is_empty() {
        let _ = writeln!(
            s,
            "\nThe program's own cost on its hit paths, per hook (`BPF_PROG_TEST_RUN`, driver-xdp's \
             `hit_path_ns_per_packet`, same run, same machine; \"alternating\" runs the program on its own output, so \
             encapsulation and decapsulation take turns; \"alone\" includes the harness's per-call overhead):\n"
        );
        for l in test_run {
            let _ = writeln!(s, "- {l}");
        }
    }
    let _ = writeln!(
        s,
        "\nTargets: the tokio path carries at least half the kernel's forwarding rate and adds under 100 µs median \
         to a round trip; xdp forwards at least as fast as the kernel forwards plain IP over the same hops \
         (kernel-same-path pps ratio ≥ 1.0) with hit paths under 100 ns/packet. Re-run: `cargo build --release -p pias-cli && sudo target/release/pias lab bench`."
    );
    let _ = writeln!(
        s,
        "\nWhy two hooks: every link here is a veth. Native XDP on a veth first copies each socket buffer into an \
         XDP frame, and a frame sent back with XDP_TX reaches the router as an XDP frame from which its veth end \
         builds a new socket buffer (through the XDP_PASS program it needs); profiled with `perf` on the busy CPU \
         (64-byte UDP, c2), one proxy hop cost about 1.3 µs that way against about 0.5 µs for the kernel's own \
         forwarding through the same namespace. At TC ingress the same program works on the socket buffer the \
         kernel already has and hands a frame going back out straight to the router's veth end \
         (`bpf_redirect_peer`). On a NIC with an XDP driver the frame exists before any socket buffer, which is \
         what the xdp hook is for; this machine has none to measure."
    );
    s
}

/// The ratio rows (one per client and driver) against the baseline rows labelled `base`.
fn ratios(s: &mut String, rows: &[Row], base: &str, drivers: &[String]) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for k in rows.iter().filter(|r| r.driver == base) {
        for d in drivers {
            for p in rows.iter().filter(|r| r.client == k.client && &r.driver == d) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {:.2} | {:+.1} | {:+.1} |",
                    k.client,
                    d,
                    ratio(p.tcp_gbps, k.tcp_gbps),
                    ratio(p.udp_kpps, k.udp_kpps),
                    p.rtt_med - k.rtt_med,
                    p.rtt_p99 - k.rtt_p99
                );
            }
        }
    }
}

/// Replaces the lab section ([`HEAD`], or [`OLD_HEAD`] from before; up to the next "## " heading) or appends it.
fn write_section(path: &PathBuf, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let found = [HEAD, OLD_HEAD]
        .into_iter()
        .find_map(|h| old.find(&format!("{h}\n")).map(|i| (i, h)));
    let new = match found {
        Some((i, head)) => {
            let rest = &old[i + head.len()..];
            let end = rest
                .find("\n## ")
                .map(|j| i + head.len() + j + 1)
                .unwrap_or(old.len());
            let tail = &old[end.min(old.len())..];
            format!(
                "{}{}\n{}{tail}",
                &old[..i],
                section.trim_end(),
                if tail.is_empty() { "" } else { "\n" }
            )
        }
        None => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(path, new)?;
    Ok(())
}
