//! `pias proxy`: runs one proxy with the driver its configuration names (`tokio`, `mio`, or `xdp`: the
//! XDP fast path in front of either), its Prometheus endpoint and its control socket.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use driver_common::DriverCounters;
use driver_tokio::{ProxyDriver, Signals};
use tracing::{info, warn};

/// `--help`'s description (clap replaces a subcommand struct's doc comment with its variant's, so it
/// goes in `before_long_help`, placed by [`crate::proxy::HELP_TEMPLATE`]).
const LONG_ABOUT: &str = "\nRuns a PIAS proxy: every role (IAP, RAP, JAP) for every group, on one TUN device and one overlay socket.\n\nAt start the proxy creates its TUN device (it vanishes when the process exits), routes the anycast prefixes, the registration addresses and its NAT pool into it, sets the forwarding sysctls, binds the overlay socket (UDP 6081) and joins the overlay through its seeds. Needs CAP_NET_ADMIN (root, or the capability: see docs/deploy.md).\n\nHealth-gated announcement (SPEC.md §7.7): while the proxy cannot serve — no probe round trip with any member for 2 s, or overlay sends failing — it moves its anycast and registration routes out of the main table as on a leave, and puts them back after 5 s of health; `pias ctl announce off|on|auto` overrides.\n\nSIGINT/SIGTERM (maintenance): the proxy moves its anycast and registration routes from the main table to table local (a routing daemon redistributing main withdraws the prefix; what still arrives is forwarded), answers its targets' refreshes with Draining so they register with another proxy, stays their JAP meanwhile, floods Left at half of drain_time, keeps forwarding for drain_time, then exits; a second signal exits at once.";

/// Runs a PIAS proxy: every role (IAP, RAP, JAP) for every group, on one TUN device and one overlay socket.
///
/// At start the proxy creates its TUN device (it vanishes when the process exits), routes the anycast
/// prefixes, the registration addresses and its NAT pool into it, sets the forwarding sysctls, binds the
/// overlay socket (UDP 6081) and joins the overlay through its seeds. Needs root (CAP_NET_ADMIN).
///
/// SIGINT/SIGTERM: a graceful leave (SPEC.md §7.6): routes withdrawn, targets sent elsewhere, Left
/// flooded at half of drain_time, forwarding until drain_time, then exit; a second signal exits at once.
#[derive(Debug, ClapArgs)]
#[command(help_template = crate::proxy::HELP_TEMPLATE, before_help = "\nMore with --help.", before_long_help = LONG_ABOUT, after_help = "\
Examples:
  pias proxy --example-config > /etc/pias/p1.toml     # every key, commented
  (umask 077; pias key generate > /etc/pias/master.key)  # private: others' access is refused
  pias proxy --config /etc/pias/p1.toml
  RUST_LOG=debug pias proxy --config /etc/pias/p1.toml  # NAT and cache events too
  pias proxy --config /etc/pias/p1.toml --check         # validate only

While it runs:
  pias ctl --socket /run/pias/pias0.sock members
  curl -s http://127.0.0.1:9851/metrics | grep pias_iap_to_rap_total")]
pub(crate) struct Args {
    /// The TOML configuration file (see --example-config).
    #[arg(long, value_name = "FILE", required_unless_present = "example_config")]
    config: Option<PathBuf>,
    /// Print a complete, commented configuration and exit.
    #[arg(long)]
    example_config: bool,
    /// Validate the configuration and exit (prints the routes it would install).
    #[arg(long)]
    check: bool,
    /// Log filter (tracing's EnvFilter syntax, e.g. "info" or "driver_common=debug"; RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log: String,
}

/// The help layout of the subcommands: their long description (`before_long_help`) under the one-line
/// summary. `-h` shows the summary only.
pub(crate) const HELP_TEMPLATE: &str =
    "{about-with-newline}{before-help}{usage-heading} {usage}\n\n{all-args}{after-help}";

/// Logs to stderr, filtered by RUST_LOG or `default`.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    if a.example_config {
        print!("{}", crate::config::EXAMPLE);
        return Ok(());
    }
    let Some(path) = a.config else {
        anyhow::bail!("--config FILE is required");
    };
    let cfg = crate::config::load(&path)?;
    if a.check {
        println!("{}: ok", path.display());
        println!(
            "proxy {} overlay {}",
            cfg.driver.proxy.id, cfg.driver.proxy.overlay_addr
        );
        for r in cfg.driver.host.routes() {
            println!("route {r} dev {}", cfg.driver.host.tun);
        }
        return Ok(());
    }
    init_logging(&a.log);
    let r = match cfg.runtime {
        crate::config::Driver::Tokio => run_tokio(&cfg),
        crate::config::Driver::Mio => run_mio(&cfg),
    };
    if let Some(p) = &cfg.control
        && let Err(e) = std::fs::remove_file(p)
    {
        warn!(path = %p.display(), error = %e, "cannot remove control socket");
    }
    let c = r?;
    info!(
        tun_rx = c.tun_rx,
        tun_tx = c.tun_tx,
        overlay_rx = c.overlay_rx,
        overlay_tx = c.overlay_tx,
        "proxy stopped"
    );
    Ok(())
}

/// The tokio driver, with the metrics endpoint and the control socket on tasks of the same runtime.
fn run_tokio(cfg: &crate::config::Config) -> anyhow::Result<DriverCounters> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let signals = Signals::new().context("signal handlers")?;
        let (mut driver, handle) = ProxyDriver::bind(cfg.driver.clone()).context("starting the proxy")?;
        if let Some(x) = &cfg.xdp {
            let (p, now) = driver.proxy();
            driver.set_fast_path(start_xdp(x, p, now)?);
        }
        if let Some(addr) = cfg.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics.listen {addr}"))?;
            info!(%addr, "metrics on http://{addr}/metrics");
            tokio::spawn(driver_tokio::serve_metrics(l, handle.clone()));
        }
        if let Some(p) = &cfg.control {
            let (l, access) = crate::ctl::bind(p, cfg.control_group.as_deref())
                .with_context(|| format!("control.socket {}", p.display()))?;
            l.set_nonblocking(true)?;
            let l = tokio::net::UnixListener::from_std(l)?;
            info!(path = %p.display(), "control socket");
            tokio::spawn(driver_tokio::serve_control(l, handle.clone(), access));
        }
        drop(handle);
        Ok(driver.run(signals).await?)
    })
}

/// The mio driver: one thread, one `Poll` for the TUN, the overlay socket, signals, metrics and control.
fn run_mio(cfg: &crate::config::Config) -> anyhow::Result<DriverCounters> {
    let signals = driver_mio::Signals::new().context("signal handlers")?;
    let mut runner = driver_mio::ProxyRunner::bind(cfg.driver.clone()).context("starting the proxy")?;
    if let Some(x) = &cfg.xdp {
        let p = runner.proxy_mut();
        let f = start_xdp(x, p.proxy(), p.now())?;
        p.set_fast_path(f);
    }
    if let Some(addr) = cfg.metrics {
        let l = std::net::TcpListener::bind(addr).with_context(|| format!("metrics.listen {addr}"))?;
        runner.metrics(l)?;
        info!(%addr, "metrics on http://{addr}/metrics");
    }
    if let Some(p) = &cfg.control {
        let (l, access) = crate::ctl::bind(p, cfg.control_group.as_deref())
            .with_context(|| format!("control.socket {}", p.display()))?;
        runner.control(l, access)?;
        info!(path = %p.display(), "control socket");
    }
    Ok(runner.run(signals)?)
}

/// `driver = "xdp"`: loads the XDP program, fills its maps from the proxy's state, and attaches it to each
/// interface (XDP: native mode, else generic mode with a log line; or TC ingress). Detached when the driver
/// drops it.
fn start_xdp(
    x: &crate::config::XdpSettings,
    p: &pias_state::proxy::Proxy,
    now: pias_state::Instant,
) -> anyhow::Result<Box<dyn driver_common::FastPath>> {
    let ifaces: Vec<&str> = x.interfaces.iter().map(String::as_str).collect();
    let hook = x.hook.unwrap_or_else(|| {
        let h = driver_xdp::Hook::for_interfaces(&ifaces);
        info!(
            hook = h.name(),
            "hook = \"auto\": {}",
            if h == driver_xdp::Hook::Tc {
                "every interface is a veth"
            } else {
                "not every interface is a veth"
            }
        );
        h
    });
    let f = driver_xdp::XdpFastPath::start(p, &ifaces, driver_xdp::Sizes::default(), hook, now)
        .with_context(|| {
            format!(
                "starting the fast path ({} hook) on {}",
                hook.name(),
                x.interfaces.join(", ")
            )
        })?;
    for (iface, mode) in f.modes() {
        match mode {
            _ if hook == driver_xdp::Hook::Tc => {
                info!(%iface, hook = "tc", "fast path attached at TC ingress")
            }
            driver_xdp::XdpMode::Driver => info!(%iface, mode = "native", "XDP attached"),
            _ => warn!(
                %iface,
                mode = "generic (skb)",
                "XDP attached in generic mode: native attach failed, the fast path is slower"
            ),
        }
    }
    Ok(Box::new(f))
}
