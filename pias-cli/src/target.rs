//! `pias target`: the target agent for one local service (or, as a surrogate, for a legacy server).

use core::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use driver_tokio::{AgentDriver, AgentDriverConfig, HealthCheck, Signals};
use pias_proto::control::{DeliveryMode, REGISTRATION_PORT};
use pias_proto::{IpProtocol, TransportAddr};
use pias_state::agent::{AgentConfig, AgentCounters, UNANSWERED_HINT};

/// `--help`'s description (clap replaces a subcommand struct's doc comment with its variant's, so it
/// goes in `before_long_help`, placed by [`crate::proxy::HELP_TEMPLATE`]).
const LONG_ABOUT: &str = "\nRegisters a service as a target of a group, keeps the registration alive, and deregisters on SIGINT/SIGTERM.\n\nThe agent sends Register/Refresh to the registration anycast address (UDP port 6082): routing takes it to the nearest proxy, which becomes the group's JAP for this target. If that proxy dies, the agent notices within hold_ms and registers again through anycast (another proxy answers).";

/// Registers a service as a target of a group, keeps the registration alive, and deregisters on
/// SIGINT/SIGTERM.
///
/// The agent sends Register/Refresh to the registration anycast address (UDP port 6082): routing takes it
/// to the nearest proxy, which becomes the group's JAP for this target. If that proxy dies, the agent
/// notices within hold_ms and registers again through anycast (another proxy answers).
#[derive(Debug, ClapArgs)]
#[command(help_template = crate::proxy::HELP_TEMPLATE, before_help = "\nMore with --help.", before_long_help = LONG_ABOUT, after_help = "\
Examples:
  # a DNS server on this host, NAT mode (it sees the proxy's NAT pool address as the client):
  pias target --group 10.99.0.1:53/udp --service 10.2.0.1:53 --key-file dns.key --registration 10.99.0.250

  # a web server elsewhere, registered by a surrogate only while it accepts TCP connections:
  pias target --group 10.99.0.2:80/tcp --service 10.2.0.7:80 --key-file web.key \\
      --registration 10.99.0.250 --surrogate --health tcp

The key file holds the group's registration key: pias key derive --master-file M --group G > FILE. It must
be private (chmod 600 FILE): a key file its group or others can access is refused.")]
pub(crate) struct Args {
    /// The group: IP:PORT/PROTO in an anycast prefix, e.g. 10.99.0.1:53/udp or [fd99::1]:443/tcp.
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    group: TransportAddr,
    /// Where the service listens, IP:PORT (its protocol is the group's). In NAT mode, same family as the
    /// group.
    #[arg(long, value_name = "IP:PORT")]
    service: String,
    /// File holding the group's registration key (64 hex digits, from `pias key derive`).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// Accept a key file that its group or others can access (refused by default: `chmod 600 FILE`).
    #[arg(long)]
    insecure_key_file_permissions: bool,
    /// The registration anycast address, IP or IP:PORT (port 6082 if omitted).
    #[arg(long, value_name = "ADDR")]
    registration: String,
    /// How the JAP delivers client packets: nat (rewrite addresses) or tunnel (Geneve to the service's
    /// IP, port 6081, client address kept).
    #[arg(long, value_enum, default_value_t = Mode::Nat)]
    mode: Mode,
    /// This target's share of new flows among the group's targets at its JAP (1-65535).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    weight: u16,
    /// Surrogate mode: register the service only while the health check passes, deregister after 2
    /// consecutive failures.
    #[arg(long, requires = "health")]
    surrogate: bool,
    /// The surrogate's health check, run every refresh interval: tcp (a connection to the service opens)
    /// or udp (a request to the service draws any answer).
    #[arg(long, value_enum)]
    health: Option<Health>,
    /// UDP health request as hex bytes (default: a DNS query for ". NS", which DNS servers answer and echo
    /// servers return).
    #[arg(long, value_name = "HEX")]
    health_payload_hex: Option<String>,
    /// Consecutive failed checks before a surrogate deregisters.
    #[arg(long, default_value_t = 2)]
    health_failures: u32,
    /// Local address of the agent's socket (default: any address, a free port).
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,
    /// Refresh interval until the JAP says otherwise, ms.
    #[arg(long, default_value_t = 200)]
    refresh_ms: u32,
    /// The JAP is dead after this long without an answer, ms.
    #[arg(long, default_value_t = 700)]
    hold_ms: u32,
    /// The driver: tokio (a current-thread runtime) or mio (one Poll, the health check in the same loop).
    #[arg(long, value_enum, default_value_t = Driver::Tokio)]
    driver: Driver,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log: String,
    /// Try one registration and exit: 0 once a proxy accepted it (the agent then deregisters), 1 with the
    /// likely causes when no proxy answered within about a second (wrong key file, registration address
    /// not routed to a proxy, proxies unreachable) or a proxy refused it. A surrogate's health check is
    /// not run: this checks the registration path only.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Driver {
    Tokio,
    Mio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Nat,
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Health {
    Tcp,
    Udp,
}

/// A DNS query for ". IN NS" (id 0x5049, RD set).
const DNS_PROBE: [u8; 17] = [
    0x50, 0x49, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01,
];

/// Parses a group: `IP:PORT/PROTO` (`[V6]:PORT/PROTO`), PROTO `udp` or `tcp`.
pub(crate) fn parse_group(s: &str) -> Result<TransportAddr, String> {
    let (addr, proto) = s
        .rsplit_once('/')
        .ok_or_else(|| format!("{s:?}: write IP:PORT/PROTO, e.g. 10.99.0.1:53/udp"))?;
    let proto = match proto {
        "udp" => IpProtocol::Udp,
        "tcp" => IpProtocol::Tcp,
        p => return Err(format!("{s:?}: protocol {p:?} is not udp or tcp")),
    };
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not IP:PORT (IPv6 as [fd99::1]:53)"))?;
    if a.port() == 0 {
        return Err(format!("{s:?}: port 0 cannot be a group"));
    }
    Ok(TransportAddr::new(a.ip(), a.port(), proto))
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    crate::proxy::init_logging(&a.log);
    let service: SocketAddr = a
        .service
        .parse()
        .map_err(|_| anyhow::anyhow!("--service {:?}: write IP:PORT, e.g. 10.2.0.1:53", a.service))?;
    let registration = crate::config::sockaddr(&a.registration, REGISTRATION_PORT).ok_or_else(|| {
        anyhow::anyhow!(
            "--registration {:?}: write the registration anycast IP, e.g. 10.99.0.250",
            a.registration
        )
    })?;
    crate::key::check_private(
        &a.key_file,
        a.insecure_key_file_permissions,
        "pass --insecure-key-file-permissions",
    )?;
    let key = crate::key::read_group_key(&a.key_file)?;
    let mode = match a.mode {
        Mode::Nat => DeliveryMode::Nat,
        Mode::Tunnel => DeliveryMode::Tunnel,
    };
    let service_ta = TransportAddr::new(service.ip(), service.port(), a.group.proto);
    let mut cfg = AgentConfig::new(
        a.group,
        service_ta,
        mode,
        registration,
        key,
        driver_common::wall_clock_incarnation(),
        crate::key::random_u64(),
    );
    cfg.weight = a.weight;
    cfg.refresh_ms = a.refresh_ms;
    cfg.hold_ms = a.hold_ms;
    // A check tests the registration path, so it registers whatever the service's health.
    cfg.surrogate = a.surrogate && !a.check;
    cfg.check = a.check;
    cfg.health_failures = a.health_failures;
    cfg.validate().map_err(|e| {
        let flag = match e.field {
            "service" => "--service",
            "refresh_ms" => "--refresh-ms",
            "hold_ms" => "--hold-ms",
            "health_failures" => "--health-failures",
            f => f,
        };
        anyhow::anyhow!("{flag}: {}", e.fix)
    })?;
    let health = match (a.surrogate && !a.check, a.health) {
        (false, Some(_)) if !a.check => {
            anyhow::bail!("--health needs --surrogate (a plain agent registers unconditionally)")
        }
        (false, _) | (_, None) => None,
        (true, Some(Health::Tcp)) => Some(HealthCheck::Tcp { addr: service }),
        (true, Some(Health::Udp)) => {
            let payload = match &a.health_payload_hex {
                None => DNS_PROBE.to_vec(),
                Some(h) => hex(h).context("--health-payload-hex: write an even number of hex digits")?,
            };
            Some(HealthCheck::Udp {
                addr: service,
                payload,
            })
        }
    };
    if registration.ip() == IpAddr::from([0, 0, 0, 0]) {
        anyhow::bail!("--registration: must be the registration anycast address, not 0.0.0.0");
    }
    let dcfg = AgentDriverConfig {
        agent: cfg,
        bind: a.bind,
        health,
    };
    let c = match a.driver {
        Driver::Mio => {
            let signals = driver_mio::Signals::new().context("signal handlers")?;
            driver_mio::run_agent(dcfg, signals)?
        }
        Driver::Tokio => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async move {
                let signals = Signals::new().context("signal handlers")?;
                let d = AgentDriver::bind(dcfg).await?;
                anyhow::Ok(d.run(signals).await?)
            })?
        }
    };
    if a.check {
        return check_result(&c);
    }
    // Every counter the agent defines, under its exported name (the agent has no metrics endpoint).
    let mut all = String::new();
    c.for_each(&mut |n, v| {
        if !all.is_empty() {
            all.push(' ');
        }
        all.push_str(&format!("{n}={v}"));
    });
    tracing::info!(
        registers = c.sent_register,
        refreshes = c.sent_refresh,
        acks = c.acks_ok,
        jap_lost = c.jap_lost,
        counters = %all,
        "target agent stopped"
    );
    Ok(())
}

/// `--check`'s verdict from the counters of the agent that ran it (the agent stops at the first outcome:
/// registered, refused, or unanswered).
fn check_result(c: &AgentCounters) -> anyhow::Result<()> {
    if c.acks_ok > 0 {
        println!("check: OK — a proxy accepted the registration (then deregistered)");
        return Ok(());
    }
    if c.full > 0 {
        anyhow::bail!("check failed: the proxy refused the registration: its registration table is full")
    }
    if c.draining > 0 {
        anyhow::bail!("check failed: the proxy refused the registration: it is draining (shutting down)")
    }
    anyhow::bail!(
        "check failed after {} registration attempts: {UNANSWERED_HINT}",
        c.sent_register
    )
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse() {
        let g = parse_group("10.99.0.1:53/udp").unwrap();
        assert_eq!(g.to_string(), "10.99.0.1:53/udp");
        let g = parse_group("[fd99::1]:443/tcp").unwrap();
        assert_eq!(g.to_string(), "[fd99::1]:443/tcp");
        assert!(parse_group("10.99.0.1:53").is_err());
        assert!(parse_group("10.99.0.1:53/sctp").is_err());
        assert!(parse_group("10.99.0.1:0/udp").is_err());
        assert!(parse_group("host:53/udp").is_err());
    }

    #[test]
    fn hex_parses() {
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
    }
}
