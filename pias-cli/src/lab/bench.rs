//! `pias lab bench`: PIAS against plain kernel forwarding on the same lab, in the same run.
//!
//! For each chosen client, the same measurements go once to a target site's unicast address (routers forward
//! in the kernel) and once to the anycast group (through the client's IAP and the group's JAP, both
//! `pias proxy` processes): TCP throughput (iperf3, one stream), small-packet UDP rate (iperf3, 64-byte
//! payloads, unlimited send rate, packets *received* per second), and UDP round-trip time (an echo,
//! one request at a time; median and p99). Every run is bounded (`--seconds`, `--pings`); all traffic stays
//! inside the lab's namespaces. The ratios go to BENCHMARKS.md, section "## Lab (driver-tokio)".

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;

use super::topo::{Kind, Node, Service};
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
    /// The file to write the "## Lab (driver-tokio)" section into.
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
    path: String,
    tcp_gbps: f64,
    udp_kpps: f64,
    udp_loss: f64,
    rtt_med: f64,
    rtt_p99: f64,
}

/// One iperf3 run (JSON). The server runs one test at a time and needs a moment after an unlimited UDP run,
/// so a refused start is retried (at most 3 tries, 1 s apart).
fn iperf(c: &Node, server: std::net::IpAddr, secs: u32, udp: bool) -> Result<serde_json::Value> {
    let t = secs.to_string();
    let s = server.to_string();
    let mut args = vec!["timeout", "30", "iperf3", "-c", &s, "-p", "5201", "-t", &t, "-J"];
    if udp {
        args.extend_from_slice(&["-u", "-b", "0", "-l", "64"]);
    }
    let mut last = String::new();
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_secs(1));
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

fn measure(
    lab: &Lab,
    c: &Node,
    path: &str,
    ip: std::net::IpAddr,
    echo: SocketAddr,
    a: &BenchArgs,
) -> Result<Row> {
    // RTT first, on an idle path (after an unlimited UDP run the proxies' queues take a while to drain).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let o = net::ns_run(
        &c.ns,
        &[
            &lab.pias.display().to_string(),
            "lab",
            "udp-ping",
            "--to",
            &echo.to_string(),
            "--count",
            &a.pings.to_string(),
        ],
    )?;
    let tcp = iperf(c, ip, a.seconds, false)?;
    let udp = iperf(c, ip, a.seconds, true)?;
    let (pk, lost, secs) = (
        f(&udp, &["end", "sum", "packets"]),
        f(&udp, &["end", "sum", "lost_packets"]),
        f(&udp, &["end", "sum", "seconds"]),
    );
    let mut r = Row {
        client: c.name.clone(),
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
    println!("bringing the lab up (fresh, with this binary)…");
    services::down(lab)?;
    services::up(lab, true)?;
    let clients: Vec<&Node> = plan
        .of(Kind::Client)
        .filter(|c| a.clients.is_empty() || a.clients.contains(&c.name))
        .collect();
    let mut rows = Vec::new();
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
            let direct = SocketAddr::new(site.addr4().into(), Service::Echo.port());
            rows.push(measure(
                lab,
                c,
                &format!("kernel → {} {}", site.name, site.addr4()),
                site.addr4().into(),
                direct,
                &a,
            )?);
            let label = format!("PIAS IAP {ing} → JAP {jap} → {}", site.name);
            rows.push(measure(lab, c, &label, tcp_g.addr.ip(), echo_g.addr, &a)?);
        }
        Ok(())
    })();
    if !a.keep {
        services::down(lab)?;
    }
    r?;
    let section = render(&rows, &a, debug);
    println!("\n{section}");
    if !a.no_write {
        write_section(&a.out, &section)?;
        println!("written to {}", a.out.display());
    }
    Ok(())
}

fn render(rows: &[Row], a: &BenchArgs, debug: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Lab (driver-tokio)\n");
    let _ = writeln!(
        s,
        "`pias lab bench` ({} build; {} s per iperf3 run, {} echo round trips): the default lab topology \
         (r1 — r2 — r3, client and `pias proxy` per router, target site t1 on r1), all in network namespaces on \
         veth links of one machine (2 cores, shared by every namespace, routers and proxies). For each client the \
         same tools run once to t1's unicast address (plain kernel forwarding through the routers) and once to \
         the anycast groups 10.99.0.52:5201/tcp+udp and 10.99.0.7:7/udp (client → IAP → JAP → t1 through the \
         tokio driver's TUN and overlay socket). TCP: iperf3, one stream. UDP: iperf3 with 64-byte payloads at \
         unlimited rate, packets received per second (sender, proxies and receiver share the 2 cores, so this \
         is an overload figure and noisy). RTT: UDP echo, one request in flight, measured first on an idle path.\n",
        if debug { "debug" } else { "release" },
        a.seconds,
        a.pings
    );
    let _ = writeln!(
        s,
        "| client | path | TCP Gbit/s | UDP 64 B kpps (rx) | UDP loss | RTT median µs | RTT p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.1} | {:.1}% | {:.1} | {:.1} |",
            r.client, r.path, r.tcp_gbps, r.udp_kpps, r.udp_loss, r.rtt_med, r.rtt_p99
        );
    }
    let _ = writeln!(
        s,
        "\nRatios (PIAS ÷ kernel on the same client) and added round-trip time (PIAS − kernel):\n"
    );
    let _ = writeln!(
        s,
        "| client | TCP ratio | UDP pps ratio | added RTT median µs | added RTT p99 µs |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for pair in rows.chunks(2) {
        if let [k, p] = pair {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:+.1} | {:+.1} |",
                k.client,
                ratio(p.tcp_gbps, k.tcp_gbps),
                ratio(p.udp_kpps, k.udp_kpps),
                p.rtt_med - k.rtt_med,
                p.rtt_p99 - k.rtt_p99
            );
        }
    }
    let _ = writeln!(
        s,
        "\nTarget (issue 4): the tokio path carries at least half the kernel's forwarding rate and adds under \
         100 µs median to a round trip. Re-run: `cargo build --release -p pias-cli && sudo target/release/pias lab bench`."
    );
    s
}

/// Replaces the "## Lab (driver-tokio)" section (up to the next "## " heading) or appends it.
fn write_section(path: &PathBuf, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let head = "## Lab (driver-tokio)";
    let new = match old.find(head) {
        Some(i) => {
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
