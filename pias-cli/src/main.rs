//! `pias`: one binary for everything an operator does with PIAS.
//!
//! Subcommands are thin: protocol logic lives in `pias-state`, socket and TUN handling in the driver crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod ctl;
mod decode;
mod key;
mod lab;
mod proxy;
mod sim;
mod target;

/// PIAS — the Proxy IP Anycast Service.
///
/// A PIAS overlay is a set of proxies that all advertise one anycast prefix. A *group* is a transport address
/// (IP, port, protocol) in that prefix; clients send to it unchanged, the nearest proxy (the IAP) finds a
/// proxy that has targets for the group (a JAP, via the group's rendezvous proxies, the RAPs), and the JAP
/// hands the packet to a live target. Targets register through the anycast registration address with a
/// per-group key derived from the operator's master key.
#[derive(Debug, Parser)]
#[command(name = "pias", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Decode a packet capture (pcap) and print every IP packet, PIAS frame and control message in it.
    Decode(decode::Args),
    /// Run a proxy from a TOML configuration (TUN device, overlay socket, metrics, control socket).
    Proxy(proxy::Args),
    /// Run the target agent for a local service (or, with --surrogate, for a legacy server).
    Target(Box<target::Args>),
    /// Make a master key, or derive a group's registration key from it.
    Key(key::Args),
    /// Show a running proxy's state (members, groups, registrations, cache, NAT, counters).
    Ctl(ctl::Args),
    /// A namespace lab: ISP routers running BIRD 2 (eBGP between ASes, or one OSPF domain), clients, PIAS
    /// proxies announcing the anycast prefixes, and target sites with dnsmasq and an HTTP server.
    /// `pias lab demo` shows it all working.
    Lab(lab::Args),
    /// Scale experiments on simulated Internet-like topologies: path stretch, membership growth, a 10^5-member
    /// table, RAP updates under churn, flash crowds (CSV, SVG plots, Markdown).
    Sim(sim::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Decode(a) => decode::run(a),
        Cmd::Proxy(a) => proxy::run(a),
        Cmd::Target(a) => target::run(*a),
        Cmd::Key(a) => key::run(a),
        Cmd::Ctl(a) => ctl::run(a),
        Cmd::Lab(a) => lab::run(a),
        Cmd::Sim(a) => sim::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pias: {e:#}");
            ExitCode::FAILURE
        }
    }
}
