//! A host program that owns its event loop and runs a PIAS proxy beside its own work, in one thread.
//!
//! The host serves a UDP echo (its "own" service) and runs a periodic timer that prints a status line; the
//! proxy's TUN and overlay socket are registered on the host's `mio::Registry` under tokens the host
//! chose. The loop polls with the earlier of the host's and the proxy's deadlines, hands every event that
//! is not the host's to `MioProxy::handle_ready`, and calls `MioProxy::handle_timeout` when the proxy's
//! deadline passes. SIGTERM/SIGINT: the proxy leaves the overlay gracefully, and the host exits once it has
//! drained.
//!
//! ```text
//! embed --id 2 --overlay 10.252.1.6:6081 --seed 10.252.1.5:6081 --master-key-file master.key \
//!       --anycast 10.252.1.128/28 --registration 10.252.1.150 --nat-pool 10.252.1.162 \
//!       --echo 10.252.1.6:7000 --tick-ms 200
//! ```
//! As root (the proxy creates a TUN device and routes). Every status line starts with `tick`.

use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use driver_mio::{HostSetup, MioProxy, Prefix, ProxyDriverConfig, ProxyTokens, Signals, timeout_until};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use pias_proto::ProxyId;
use pias_proto::auth::MasterKey;
use pias_state::proxy::ProxyConfig;

// The host's own tokens ...
const ECHO: Token = Token(1);
const SIGNALS: Token = Token(2);
// ... and the ones it gives PIAS.
const PIAS: ProxyTokens = ProxyTokens {
    tun: Token(100),
    overlay: Token(101),
};

#[derive(Debug, Default)]
struct Args {
    id: u32,
    overlay: Option<std::net::SocketAddr>,
    seeds: Vec<std::net::SocketAddr>,
    master_key_file: String,
    anycast: Vec<Prefix>,
    registration: Vec<std::net::IpAddr>,
    nat_pool: Vec<std::net::IpAddr>,
    tun: String,
    echo: Option<std::net::SocketAddr>,
    tick_ms: u64,
    drain_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        tun: "pias0".into(),
        tick_ms: 1000,
        drain_ms: 500,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--id" => a.id = v.parse().map_err(|e| bad(&e))?,
            "--overlay" => a.overlay = Some(v.parse().map_err(|e| bad(&e))?),
            "--seed" => a.seeds.push(v.parse().map_err(|e| bad(&e))?),
            "--master-key-file" => a.master_key_file = v,
            "--anycast" => a.anycast.push(v.parse().map_err(|e: String| bad(&e))?),
            "--registration" => a.registration.push(v.parse().map_err(|e| bad(&e))?),
            "--nat-pool" => a.nat_pool.push(v.parse().map_err(|e| bad(&e))?),
            "--tun" => a.tun = v,
            "--echo" => a.echo = Some(v.parse().map_err(|e| bad(&e))?),
            "--tick-ms" => a.tick_ms = v.parse().map_err(|e| bad(&e))?,
            "--drain-ms" => a.drain_ms = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.id == 0 || a.overlay.is_none() || a.echo.is_none() || a.master_key_file.is_empty() {
        return Err("need --id, --overlay, --master-key-file and --echo (see the source's header)".into());
    }
    Ok(a)
}

fn proxy_config(a: &Args) -> Result<ProxyDriverConfig, String> {
    let key =
        std::fs::read_to_string(&a.master_key_file).map_err(|e| format!("{}: {e}", a.master_key_file))?;
    let master =
        MasterKey::from_hex(&key).map_err(|_| format!("{}: not 64 hex digits", a.master_key_file))?;
    let overlay = a.overlay.ok_or("--overlay")?;
    let mut cfg = ProxyConfig::new(
        ProxyId(a.id),
        overlay,
        master,
        a.nat_pool.clone(),
        a.registration.clone(),
    );
    cfg.incarnation = driver_common::wall_clock_incarnation();
    cfg.registry.incarnation = cfg.incarnation;
    cfg.seed = u64::from(std::process::id()) << 32 | u64::from(cfg.incarnation);
    cfg.membership.seeds = a.seeds.clone();
    cfg.membership.drain_time = Duration::from_millis(a.drain_ms);
    let mut anycast = a.anycast.clone();
    anycast.extend(a.registration.iter().map(|ip| Prefix::host(*ip)));
    let host = HostSetup {
        tun: a.tun.clone(),
        mtu: 1500,
        anycast,
        pool: a.nat_pool.iter().map(|ip| Prefix::host(*ip)).collect(),
        sysctls: true,
    };
    Ok(ProxyDriverConfig::new(cfg, host))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("embed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .with_ansi(false)
        .try_init();
    let args = parse_args()?;
    let io = |what: &'static str| move |e: io::Error| format!("{what}: {e}");
    // Signals first, before anything could start a thread.
    let mut signals = Signals::new().map_err(io("signals"))?;
    let mut poll = Poll::new().map_err(io("poll"))?;

    // The host's own service: a UDP echo.
    let echo_addr = args.echo.ok_or("--echo")?;
    let mut echo = UdpSocket::bind(echo_addr).map_err(io("bind echo"))?;
    poll.registry()
        .register(&mut echo, ECHO, Interest::READABLE)
        .map_err(io("register echo"))?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(io("register signals"))?;

    // PIAS, on the host's registry, under the host's tokens.
    let mut pias = MioProxy::bind(proxy_config(&args)?).map_err(io("start the proxy"))?;
    pias.register(poll.registry(), PIAS)
        .map_err(io("register the proxy"))?;

    // The host's own timer.
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let mut next_tick = Instant::now() + tick;
    let mut ticks = 0u64;
    let mut echoed = 0u64;
    let mut buf = vec![0u8; 65_536];
    let mut events = Events::with_capacity(256);
    let mut leaving = false;
    loop {
        let pias_deadline = pias.next_deadline();
        let deadline = pias_deadline.min(next_tick);
        match poll.poll(&mut events, Some(timeout_until(deadline))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in &events {
            match ev.token() {
                ECHO => loop {
                    match echo.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let _ = echo.send_to(&buf[..n], from);
                            echoed += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                },
                SIGNALS => {
                    while let Some(sig) = signals.recv() {
                        if leaving {
                            return Ok(());
                        }
                        println!("signal {sig}: leaving");
                        leaving = true;
                        pias.leave();
                    }
                }
                t => {
                    // Not the host's: PIAS's (or nobody's).
                    pias.handle_ready(t);
                }
            }
        }
        let now = Instant::now();
        if now >= pias_deadline {
            pias.handle_timeout();
        }
        if now >= next_tick {
            ticks += 1;
            next_tick = now + tick;
            let c = pias.counters();
            let mut members = 0;
            pias.proxy().for_each_counter(|n, v| {
                if n == "members" {
                    members = v;
                }
            });
            println!(
                "tick tick={ticks} echoed={echoed} members={members} tun_rx={} tun_tx={} overlay_rx={} overlay_tx={}",
                c.tun_rx, c.tun_tx, c.overlay_rx, c.overlay_tx
            );
            let _ = io::stdout().flush();
        }
        if pias.is_drained() {
            println!("drained: exiting after {ticks} ticks, {echoed} echoes");
            return Ok(());
        }
    }
}
