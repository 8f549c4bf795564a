//! `pias target`: the target agent for one local service (or, as a surrogate, for a legacy server), which
//! it registers while its health check passes.

use core::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use driver_tokio::{AgentDriver, AgentDriverConfig, HealthCheck, Signals};
use pias_proto::control::{DeliveryMode, REGISTRATION_PORT};
use pias_proto::{IpProtocol, TransportAddr};
use pias_state::agent::{AgentConfig, AgentCounters, HealthSchedule, UNANSWERED_HINT};

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

  # a web server, registered only while GET /health answers 200 (checked every 300 ms):
  pias target --group 10.99.0.2:80/tcp --service 10.2.0.7:80 --key-file web.key \\
      --registration 10.99.0.250 --health http --health-http-path /health

  # a UDP service checked by a script (exit status 0 = healthy):
  pias target --group 10.99.0.3:5000/udp --service 10.2.0.1:5000 --key-file app.key \\
      --registration 10.99.0.250 --health command --health-command 'app-ping 10.2.0.1'

Health: the agent checks its service every --health-interval-ms, registers after the first
passing check, deregisters (the JAP drops the target at once) after --health-fall failures in a
row, and registers again after --health-rise passes in a row. Without --health the check follows
the service: TCP: a connection opens (tcp); UDP port 53: a DNS query for \". NS\" draws an answer
(udp); other UDP ports: the port check (udp-port), which fails only when the host refuses the
request (the port is closed: the service crashed) and cannot see a hung service, since no UDP
request is answered by every service. To check that a UDP service answers, give --health udp
--health-udp-payload HEX (and --health-udp-expect HEX), or --health command. --no-health-check
registers unconditionally.

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
    /// Surrogate mode: the service is a legacy server elsewhere (give --health-addr if the check must go
    /// elsewhere than --service). Every agent checks its service now; this only refuses
    /// --no-health-check.
    #[arg(long, conflicts_with = "no_health_check")]
    surrogate: bool,
    /// Register unconditionally: no health check (a dead service behind a live agent then keeps getting
    /// new flows until the JAP's passive watch catches it).
    #[arg(long)]
    no_health_check: bool,
    /// The health check: tcp (a connection opens), udp (a request draws an answer), udp-port (the
    /// service's UDP port is not refused), http (GET answers the expected status) or command (exits 0).
    /// Default: from the service (see below).
    #[arg(long, value_enum)]
    health: Option<Health>,
    /// Where the check goes, IP:PORT (default: --service).
    #[arg(long, value_name = "IP:PORT")]
    health_addr: Option<SocketAddr>,
    /// A check starts this often, ms.
    #[arg(long, default_value_t = 300)]
    health_interval_ms: u32,
    /// A check that has not passed by then fails, ms.
    #[arg(long, default_value_t = 300)]
    health_timeout_ms: u32,
    /// Consecutive passing checks that bring a failed service back.
    #[arg(long, default_value_t = 2)]
    health_rise: u32,
    /// Consecutive failing checks after which the agent deregisters.
    #[arg(long, default_value_t = 2, alias = "health-failures")]
    health_fall: u32,
    /// UDP check request as hex bytes (default: a DNS query for ". NS", which DNS servers answer and echo
    /// servers return; empty for udp-port).
    #[arg(long, value_name = "HEX", alias = "health-payload-hex")]
    health_udp_payload: Option<String>,
    /// The UDP answer must begin with these bytes (hex; default: any answer).
    #[arg(long, value_name = "HEX")]
    health_udp_expect: Option<String>,
    /// The HTTP check's path.
    #[arg(long, default_value = "/")]
    health_http_path: String,
    /// The HTTP check's expected status.
    #[arg(long, default_value_t = 200)]
    health_http_status: u16,
    /// The HTTP check's Host header (default: the check's IP:PORT).
    #[arg(long)]
    health_http_host: Option<String>,
    /// The command check: run with `sh -c`, healthy when it exits 0 within the timeout.
    #[arg(long, value_name = "CMD")]
    health_command: Option<String>,
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
    /// not routed to a proxy, proxies unreachable) or a proxy refused it. The health check is not run:
    /// this checks the registration path only.
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
    UdpPort,
    Http,
    Command,
}

/// A DNS query for ". IN NS" (id 0x5049, RD set).
const DNS_PROBE: [u8; 17] = [
    0x50, 0x49, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01,
];

/// The health check `a` asks for, against `service` (or `--health-addr`); without `--health`, the default
/// that follows the service (SPEC.md §10.3): TCP connect; UDP port 53 a DNS query; other UDP the port
/// check.
fn health_check(a: &Args, service: SocketAddr) -> anyhow::Result<HealthCheck> {
    let addr = a.health_addr.unwrap_or(service);
    let kind = a.health.unwrap_or(match (a.group.proto, service.port()) {
        _ if a.health_command.is_some() => Health::Command,
        (IpProtocol::Tcp, _) => Health::Tcp,
        (_, 53) => Health::Udp,
        _ if a.health_udp_payload.is_some() => Health::Udp,
        _ => Health::UdpPort,
    });
    if a.health_command.is_some() && kind != Health::Command {
        anyhow::bail!("--health-command needs --health command");
    }
    let hexarg = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<Vec<u8>>> {
        v.as_deref()
            .map(|h| hex(h).with_context(|| format!("{flag}: write an even number of hex digits")))
            .transpose()
    };
    let payload = hexarg("--health-udp-payload", &a.health_udp_payload)?;
    let expect = hexarg("--health-udp-expect", &a.health_udp_expect)?;
    Ok(match kind {
        Health::Tcp => HealthCheck::Tcp { addr },
        Health::Udp | Health::UdpPort => HealthCheck::Udp {
            addr,
            payload: payload.unwrap_or_else(|| match kind {
                Health::Udp => DNS_PROBE.to_vec(),
                _ => Vec::new(),
            }),
            expect,
            silence_passes: kind == Health::UdpPort,
        },
        Health::Http => HealthCheck::Http {
            addr,
            host: a.health_http_host.clone().unwrap_or_else(|| addr.to_string()),
            path: a.health_http_path.clone(),
            status: a.health_http_status,
        },
        Health::Command => HealthCheck::Command {
            command: a
                .health_command
                .clone()
                .context("--health command needs --health-command CMD")?,
        },
    })
}

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
    cfg.check = a.check;
    // A check tests the registration path, so it registers whatever the service's health.
    let health = if a.check || a.no_health_check {
        None
    } else {
        Some(health_check(&a, service)?)
    };
    cfg.health = health.as_ref().map(|_| HealthSchedule {
        interval_ms: a.health_interval_ms,
        timeout_ms: a.health_timeout_ms,
        rise: a.health_rise,
        fall: a.health_fall,
    });
    cfg.validate().map_err(|e| {
        let flag = match e.field {
            "service" => "--service",
            "refresh_ms" => "--refresh-ms",
            "hold_ms" => "--hold-ms",
            "health.interval_ms" => "--health-interval-ms",
            "health.timeout_ms" => "--health-timeout-ms",
            "health.rise" => "--health-rise",
            "health.fall" => "--health-fall",
            f => f,
        };
        anyhow::anyhow!("{flag}: {}", e.fix)
    })?;
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

    fn args(extra: &[&str]) -> Args {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        let mut v = vec![
            "t",
            "--service",
            "10.2.0.1:53",
            "--key-file",
            "k",
            "--registration",
            "10.99.0.250",
        ];
        v.extend_from_slice(extra);
        <T as clap::Parser>::try_parse_from(v).unwrap().a
    }

    fn check(extra: &[&str]) -> anyhow::Result<HealthCheck> {
        let a = args(extra);
        let svc = a.service.parse().unwrap();
        health_check(&a, svc)
    }

    #[test]
    fn the_default_health_check_follows_the_service() {
        let svc: SocketAddr = "10.2.0.1:53".parse().unwrap();
        assert_eq!(
            check(&["--group", "10.99.0.1:53/tcp"]).unwrap(),
            HealthCheck::Tcp { addr: svc }
        );
        let dns = check(&["--group", "10.99.0.1:53/udp"]).unwrap();
        assert_eq!(
            dns,
            HealthCheck::Udp {
                addr: svc,
                payload: DNS_PROBE.to_vec(),
                expect: None,
                silence_passes: false
            }
        );
        let a = args(&["--group", "10.99.0.1:53/udp"]);
        let other: SocketAddr = "10.2.0.1:7".parse().unwrap();
        assert_eq!(health_check(&a, other).unwrap().kind(), "udp-port");
        let http = check(&[
            "--group",
            "10.99.0.1:80/tcp",
            "--health",
            "http",
            "--health-http-path",
            "/h",
        ])
        .unwrap();
        assert!(matches!(http, HealthCheck::Http { ref path, status: 200, .. } if path == "/h"));
        let cmd = check(&["--group", "10.99.0.1:80/tcp", "--health-command", "true"]).unwrap();
        assert_eq!(
            cmd,
            HealthCheck::Command {
                command: "true".into()
            }
        );
        let udp = check(&[
            "--group",
            "10.99.0.1:9/udp",
            "--health",
            "udp",
            "--health-udp-payload",
            "0102",
            "--health-udp-expect",
            "03",
            "--health-addr",
            "127.0.0.1:9",
        ])
        .unwrap();
        assert_eq!(
            udp,
            HealthCheck::Udp {
                addr: "127.0.0.1:9".parse().unwrap(),
                payload: vec![1, 2],
                expect: Some(vec![3]),
                silence_passes: false
            }
        );
        assert!(check(&["--group", "10.99.0.1:80/tcp", "--health", "command"]).is_err());
        assert!(
            check(&[
                "--group",
                "10.99.0.1:80/tcp",
                "--health",
                "tcp",
                "--health-command",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn hex_parses() {
        assert_eq!(hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
    }
}
