//! `pias proxy`'s TOML configuration: parsing, the translation into the core's `ProxyConfig` and the
//! driver's settings, and errors that name the bad key and the fix.
//!
//! The core validates its configuration (`ProxyConfig::validate`, one path through every sub-config); this
//! module only checks what the core cannot see — required keys, syntax, file paths, interface and TUN names,
//! and how the NAT pool relates to the anycast prefixes — and translates the core's field names into this
//! file's keys (`nat.udp_timeout` is `[nat] udp_timeout_s`, see [`toml_key`]).
//!
//! Every table rejects unknown keys (a typo is an error naming the key, not a silently ignored setting).
//! Durations are integers with their unit in the key (`_ms`, `_s`). Relative paths are relative to the
//! configuration file's directory. See [`EXAMPLE`] for every key.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::path::{Path, PathBuf};

use driver_common::{HostSetup, Prefix, ProxyDriverConfig};
use pias_proto::auth::MasterKey;
use pias_proto::{IpProtocol, ProxyId};
use pias_state::policy::{GroupMatch, GroupPolicy, PolicyTable};
use pias_state::proxy::{ConfigError as CoreConfigError, ConfigPart, DEFAULT_OVERLAY_PORT, ProxyConfig};
use pias_state::rap::RapPolicy;
use pias_state::registry::TargetOptions;
use serde::Deserialize;

/// A complete, commented configuration (also `pias proxy --example-config`).
pub(crate) const EXAMPLE: &str = r#"# pias proxy configuration. Only [proxy] is required; every other table has defaults.
[proxy]
id = 1                                  # unique, non-zero, like a router id
overlay = "10.251.0.5:6081"             # this proxy's unicast address (port 6081 if omitted)
vni = 1                                 # overlay id (24 bits), the same on every proxy
master_key_file = "master.key"          # 64 hex digits (`pias key generate`), the same on every proxy
anycast_prefixes = ["10.251.0.128/28"]  # routed into the TUN; groups live here
registration = ["10.251.0.150"]         # registration anycast addresses (targets register here, port 6082)
nat_pool = ["10.251.0.161"]             # this proxy's own NAT source addresses (unique per proxy)
seeds = ["10.251.0.6:6081"]             # overlay addresses to join through; empty for the first proxy
driver = "tokio"                        # "tokio", "mio" (one mio Poll, recvmmsg/sendmmsg batches) or "xdp" (see [xdp])
overlay_mtu = 1500                      # MTU of the path between proxies
# seed = 42                             # seed of random choices (default: from the OS)

[tun]
name = "pias0"                          # created by the process, gone when it exits
mtu = 1500                              # at least overlay_mtu, so the proxy sees (and answers) big packets
sysctls = true                          # set ip_forward (and IPv6 forwarding) and loose rp_filter on the TUN

# [xdp]                                 # with driver = "xdp": the XDP fast path (driver-xdp) on these interfaces
# interfaces = ["eth0"]                 # native mode, else generic (skb) mode with a log line; detached on exit
# slow_path = "tokio"                   # what runs everything the program passes: "tokio" or "mio"
# hook = "xdp"                          # "xdp" for NICs with an XDP driver; "tc" (TC ingress) for veth and
#                                       # other virtual interfaces, where XDP copies every packet; "auto": tc
#                                       # when every interface is a veth, else xdp

[metrics]
listen = "127.0.0.1:9851"               # Prometheus text format on http://ADDR/metrics; omit to disable

[control]
socket = "/run/pias/pias0.sock"         # `pias ctl --socket PATH`; omit to disable

[timers]                                # SPEC.md §14; all optional
probe_interval_ms = 200
suspect_timeout_ms = 1000
drain_time_ms = 2000                    # graceful leave: Left at half, exit at the end
refresh_ms = 200                        # told to targets
hold_ms = 700                           # a target silent this long is dead
cache_ttl_ms = 60000

[nat]                                   # all optional
port_min = 1024
port_max = 65535
max_entries = 1000000
udp_timeout_s = 120

[default_policy]                        # for groups no [[policy]] matches
rap = "proximity"                       # proximity | load | affinity | random

[[policy]]                              # first match wins
group = "10.251.0.128/28"               # group prefix
port = 80                               # optional
proto = "tcp"                           # optional: udp | tcp
rap = "affinity"                        # a flow keeps its JAP across an ingress change
exclude_sender = false                  # never send a client's packets to itself
# scope_prefix = 24                     # prefer targets sharing this many bits with the client
# random = false                        # random target instead of per-flow hash
# replicate = 2                         # UDP: copy to this many targets (2..4)
"#;

/// A configuration error: the field (as written in the file) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) field: String,
    pub(crate) fix: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.field, self.fix)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(field: impl Into<String>, fix: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        fix: fix.into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    proxy: RawProxy,
    #[serde(default)]
    tun: RawTun,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    nat: RawNat,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    default_policy: RawPolicy,
    #[serde(default)]
    policy: Vec<RawPolicy>,
    xdp: Option<RawXdp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXdp {
    #[serde(default)]
    interfaces: Vec<String>,
    slow_path: Option<String>,
    hook: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    id: Option<u32>,
    overlay: Option<String>,
    vni: Option<u32>,
    master_key_file: Option<PathBuf>,
    #[serde(default)]
    anycast_prefixes: Vec<String>,
    #[serde(default)]
    registration: Vec<String>,
    #[serde(default)]
    nat_pool: Vec<String>,
    #[serde(default)]
    seeds: Vec<String>,
    driver: Option<String>,
    overlay_mtu: Option<u16>,
    seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTun {
    name: Option<String>,
    mtu: Option<u32>,
    sysctls: Option<bool>,
    socket_buffer: Option<usize>,
    batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    probe_interval_ms: Option<u64>,
    suspect_after: Option<u32>,
    suspect_timeout_ms: Option<u64>,
    flood_interval_ms: Option<u64>,
    ae_interval_ms: Option<u64>,
    join_retry_ms: Option<u64>,
    drain_time_ms: Option<u64>,
    tombstone_time_ms: Option<u64>,
    report_delay_ms: Option<u64>,
    report_rto_ms: Option<u64>,
    report_refresh_ms: Option<u64>,
    report_expiry_ms: Option<u64>,
    cache_ttl_ms: Option<u64>,
    negative_ttl_ms: Option<u64>,
    stale_grace_ms: Option<u64>,
    answer_interval_ms: Option<u64>,
    resolve_retry_ms: Option<u64>,
    invalidate_interval_ms: Option<u64>,
    refresh_ms: Option<u32>,
    hold_ms: Option<u32>,
    cookie_period_ms: Option<u32>,
    icmp_rate: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNat {
    port_min: Option<u16>,
    port_max: Option<u16>,
    max_entries: Option<u32>,
    udp_timeout_s: Option<u64>,
    icmp_timeout_s: Option<u64>,
    tcp_established_timeout_s: Option<u64>,
    tcp_transitory_timeout_s: Option<u64>,
    tcp_closed_timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    members: Option<usize>,
    iap_cache_entries: Option<usize>,
    rap_groups: Option<usize>,
    japs_per_group: Option<usize>,
    registrations: Option<usize>,
    targets_per_group: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    group: Option<String>,
    port: Option<u16>,
    proto: Option<String>,
    rap: Option<String>,
    exclude_sender: Option<bool>,
    scope_prefix: Option<u8>,
    random: Option<bool>,
    replicate: Option<u8>,
}

/// Which driver runs the proxy (`proxy.driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    /// `driver-tokio`: a current-thread tokio runtime.
    Tokio,
    /// `driver-mio`: one mio `Poll`, recvmmsg/sendmmsg batches.
    Mio,
}

/// `driver = "xdp"`: the XDP fast path's settings (`[xdp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XdpSettings {
    /// Interfaces the program is attached to.
    pub(crate) interfaces: Vec<String>,
    /// Where: XDP (NICs with an XDP driver) or TC ingress (veth and other virtual interfaces); None:
    /// `hook = "auto"`, TC when every interface is a veth at start, else XDP.
    pub(crate) hook: Option<driver_xdp::Hook>,
}

/// A validated configuration, ready for the driver.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The user-space driver: the one `proxy.driver` names, or with `driver = "xdp"` its `xdp.slow_path`.
    pub(crate) runtime: Driver,
    /// `driver = "xdp"`: the fast path in front of `runtime`.
    pub(crate) xdp: Option<XdpSettings>,
    pub(crate) driver: ProxyDriverConfig,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) control: Option<PathBuf>,
}

/// Reads and validates a configuration file.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let cfg = parse(&text, base, &|p| std::fs::read_to_string(p))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cfg)
}

/// Parses and validates configuration text; `read` reads the master key file (a test passes its own).
pub(crate) fn parse(
    text: &str,
    base: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError {
        field: "(syntax)".into(),
        fix: e.to_string().trim().to_owned(),
    })?;
    build(raw, base, read)
}

fn build(
    raw: RawFile,
    base: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
    let p = &raw.proxy;
    let (runtime, xdp) = match p.driver.as_deref() {
        None | Some("tokio") => (Driver::Tokio, None),
        Some("mio") => (Driver::Mio, None),
        Some("xdp") => xdp_settings(raw.xdp.as_ref())?,
        Some(other) => {
            return err(
                "proxy.driver",
                format!("unknown driver {other:?}: use \"tokio\", \"mio\" or \"xdp\""),
            );
        }
    };
    if xdp.is_none() && raw.xdp.is_some() {
        return err(
            "xdp",
            "[xdp] is for the XDP driver: set driver = \"xdp\" in [proxy], or remove [xdp]",
        );
    }
    let id = match p.id {
        None => {
            return err(
                "proxy.id",
                "missing: give every proxy a unique non-zero id (id = 1)",
            );
        }
        Some(n) => ProxyId(n),
    };
    let overlay = match &p.overlay {
        None => {
            return err(
                "proxy.overlay",
                "missing: this proxy's unicast address, e.g. overlay = \"10.0.0.1:6081\"",
            );
        }
        Some(s) => sockaddr(s, DEFAULT_OVERLAY_PORT).ok_or_else(|| ConfigError {
            field: "proxy.overlay".into(),
            fix: format!("{s:?} is not an address: write IP or IP:PORT, e.g. \"10.0.0.1:6081\""),
        })?,
    };
    let vni = p.vni.unwrap_or(1);
    let key_path = match &p.master_key_file {
        None => {
            return err(
                "proxy.master_key_file",
                "missing: a file with the operator's master key (make one with `pias key generate`)",
            );
        }
        Some(k) => base.join(k),
    };
    let key_text = read(&key_path).map_err(|e| ConfigError {
        field: "proxy.master_key_file".into(),
        fix: format!("cannot read {}: {e}", key_path.display()),
    })?;
    let master = MasterKey::from_hex(&key_text).map_err(|_| ConfigError {
        field: "proxy.master_key_file".into(),
        fix: format!(
            "{} must hold 64 hex digits (make one with `pias key generate`)",
            key_path.display()
        ),
    })?;
    if p.anycast_prefixes.is_empty() {
        return err(
            "proxy.anycast_prefixes",
            "give at least one prefix to route into the TUN, e.g. [\"10.99.0.0/24\"]",
        );
    }
    let mut anycast = Vec::new();
    for (i, s) in p.anycast_prefixes.iter().enumerate() {
        let pre: Prefix = s.parse().map_err(|e: String| ConfigError {
            field: format!("proxy.anycast_prefixes[{i}]"),
            fix: e,
        })?;
        anycast.push(pre);
    }
    if p.registration.is_empty() {
        return err(
            "proxy.registration",
            "give at least one registration anycast address, e.g. [\"10.99.0.250\"] (targets register there)",
        );
    }
    let registration = ip_list("proxy.registration", &p.registration)?;
    if p.nat_pool.is_empty() {
        return err(
            "proxy.nat_pool",
            "give at least one NAT source address routed to this proxy, e.g. [\"10.98.1.1\"]",
        );
    }
    let pool = ip_list("proxy.nat_pool", &p.nat_pool)?;
    // The pool's own rules (size, duplicates, unicast) are the core's; how it relates to the anycast
    // prefixes, which only the driver's host setup knows, is checked here.
    for (i, a) in pool.iter().enumerate() {
        if anycast
            .iter()
            .any(|pre| pias_state::policy::prefix_match(pre.addr, pre.len, *a))
        {
            return err(
                format!("proxy.nat_pool[{i}]"),
                format!("{a} lies inside an anycast prefix: NAT pool addresses must be this proxy's own"),
            );
        }
    }
    for fam_v4 in [true, false] {
        let group_fam = anycast.iter().any(|x| x.addr.is_ipv4() == fam_v4);
        let pool_fam = pool.iter().any(|x| x.is_ipv4() == fam_v4);
        if group_fam && !pool_fam {
            let fam = if fam_v4 { "IPv4" } else { "IPv6" };
            return err(
                "proxy.nat_pool",
                format!("an anycast prefix is {fam} but no pool address is: add an {fam} pool address"),
            );
        }
    }
    let mut seeds = Vec::new();
    for (i, s) in p.seeds.iter().enumerate() {
        let a = sockaddr(s, DEFAULT_OVERLAY_PORT).ok_or_else(|| ConfigError {
            field: format!("proxy.seeds[{i}]"),
            fix: format!("{s:?} is not an address: write IP or IP:PORT of another proxy's overlay"),
        })?;
        seeds.push(a);
    }
    let overlay_mtu = p.overlay_mtu.unwrap_or(1500);

    let mut cfg = ProxyConfig::new(id, overlay, master, pool, registration.clone());
    cfg.vni = vni;
    cfg.overlay_mtu = overlay_mtu;
    cfg.incarnation = driver_common::wall_clock_incarnation();
    cfg.seed = p.seed.unwrap_or_else(crate::key::random_u64);
    cfg.registry.incarnation = cfg.incarnation;
    cfg.membership.seeds = seeds;
    apply_timers(&raw.timers, &mut cfg);
    apply_nat(&raw.nat, &mut cfg);
    apply_limits(&raw.limits, &mut cfg);
    cfg.policies = PolicyTable {
        rules: Vec::new(),
        default: policy("default_policy", &raw.default_policy, false)?.1,
    };
    for (i, rp) in raw.policy.iter().enumerate() {
        let (m, gp) = policy(&format!("policy[{i}]"), rp, true)?;
        if let Some(m) = m {
            cfg.policies.rules.push((m, gp));
        }
    }
    if let Err(e) = cfg.validate() {
        return err(toml_key(&e), e.fix);
    }

    let t = &raw.tun;
    let tun_name = t.name.clone().unwrap_or_else(|| "pias0".to_owned());
    if tun_name.is_empty() || tun_name.len() > 15 || tun_name.contains(['/', ' ', '\0']) {
        return err(
            "tun.name",
            "use 1 to 15 characters without '/' or spaces, e.g. \"pias0\"",
        );
    }
    let tun_mtu = t.mtu.unwrap_or(u32::from(overlay_mtu));
    if !(1280..=65_535).contains(&tun_mtu) {
        return err("tun.mtu", "must be 1280..=65535 (default: proxy.overlay_mtu)");
    }
    let batch = t.batch.unwrap_or(64);
    if batch == 0 || batch > 4096 {
        return err("tun.batch", "packets per wake-up: 1..=4096 (default 64)");
    }
    let mut anycast = anycast.clone();
    anycast.extend(registration.iter().map(|a| Prefix::host(*a)));
    let host = HostSetup {
        tun: tun_name,
        mtu: tun_mtu as u16,
        anycast,
        pool: cfg.nat.pool.iter().map(|a| Prefix::host(*a)).collect(),
        sysctls: t.sysctls.unwrap_or(true),
    };
    let mut driver = ProxyDriverConfig::new(cfg, host);
    if let Some(b) = t.socket_buffer {
        driver.socket_buffer = b;
    }
    driver.batch = batch;

    let metrics = match &raw.metrics.listen {
        None => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| ConfigError {
            field: "metrics.listen".into(),
            fix: format!("{s:?} is not IP:PORT, e.g. \"127.0.0.1:9851\""),
        })?),
    };
    let control = match &raw.control.socket {
        Some(s) if s.as_os_str().is_empty() => {
            return err(
                "control.socket",
                "give a path, e.g. \"/run/pias/pias0.sock\", or omit the key",
            );
        }
        Some(s) => Some(base.join(s)),
        None => None,
    };
    Ok(Config {
        runtime,
        xdp,
        driver,
        metrics,
        control,
    })
}

/// The config-file key of a field the core's validation names (`ConfigError::part` and `field`). Fields no
/// key sets (built-in bounds) keep the core's name, which then reads `registry.max_tombstones`.
fn toml_key(e: &CoreConfigError) -> String {
    use ConfigPart as P;
    let indexed = |key: &str| match e.index {
        Some(i) => format!("{key}[{i}]"),
        None => key.to_owned(),
    };
    let key = match (e.part, e.field) {
        (P::Proxy, "id") => "proxy.id",
        (P::Proxy, "overlay_addr") => "proxy.overlay",
        (P::Proxy, "vni") => "proxy.vni",
        (P::Proxy, "overlay_mtu") => "proxy.overlay_mtu",
        (P::Proxy, "registration_addrs") => return indexed("proxy.registration"),
        (P::Proxy, "icmp_rate") => "timers.icmp_rate",
        (P::Proxy, "answer_interval") => "timers.answer_interval_ms",
        (P::Proxy, "invalidate_interval") => "timers.invalidate_interval_ms",
        (P::Membership, "seeds") => return indexed("proxy.seeds"),
        (P::Membership, "max_members") => "limits.members",
        (P::Membership, "suspect_after") => "timers.suspect_after",
        (
            P::Membership,
            f @ ("probe_interval" | "suspect_timeout" | "flood_interval" | "ae_interval" | "join_retry"
            | "drain_time" | "tombstone_time"),
        ) => return format!("timers.{f}_ms"),
        (P::Iap, "cache_entries") => "limits.iap_cache_entries",
        (P::Iap, f @ ("stale_grace" | "resolve_retry")) => return format!("timers.{f}_ms"),
        (P::Rap, "max_groups") => "limits.rap_groups",
        (P::Rap, "max_japs_per_group") => "limits.japs_per_group",
        (P::Rap, f @ ("report_expiry" | "cache_ttl" | "negative_ttl")) => return format!("timers.{f}_ms"),
        (P::Reports, f @ ("delay" | "rto" | "refresh")) => return format!("timers.report_{f}_ms"),
        (P::Registry, "max_registrations") => "limits.registrations",
        (P::Registry, "max_targets_per_group") => "limits.targets_per_group",
        (P::Registry, f @ ("refresh_ms" | "hold_ms" | "cookie_period_ms")) => return format!("timers.{f}"),
        (P::Nat, "pool") => return indexed("proxy.nat_pool"),
        (P::Nat, f @ ("port_min" | "port_max" | "max_entries")) => return format!("nat.{f}"),
        (
            P::Nat,
            f @ ("udp_timeout"
            | "icmp_timeout"
            | "tcp_established_timeout"
            | "tcp_transitory_timeout"
            | "tcp_closed_timeout"),
        ) => return format!("nat.{f}_s"),
        (P::Policies, f) => {
            return match e.index {
                Some(i) => format!("policy[{i}].{f}"),
                None => format!("default_policy.{f}"),
            };
        }
        _ => return e.path(),
    };
    key.to_owned()
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// `[xdp]` for `driver = "xdp"`: the interfaces (required) and the slow path (default tokio).
fn xdp_settings(x: Option<&RawXdp>) -> Result<(Driver, Option<XdpSettings>), ConfigError> {
    let Some(x) = x.filter(|x| !x.interfaces.is_empty()) else {
        return err(
            "xdp.interfaces",
            "missing: driver = \"xdp\" needs the interfaces clients' and members' packets arrive on, \
             e.g. [xdp] interfaces = [\"eth0\"]",
        );
    };
    for (i, name) in x.interfaces.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() < 16
            && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
        if !ok || x.interfaces[..i].contains(name) {
            return err(
                format!("xdp.interfaces[{i}]"),
                format!(
                    "{name:?} is not an interface name (1-15 characters, no '/', ':' or spaces, listed once)"
                ),
            );
        }
    }
    let slow = match x.slow_path.as_deref() {
        None | Some("tokio") => Driver::Tokio,
        Some("mio") => Driver::Mio,
        Some(other) => {
            return err(
                "xdp.slow_path",
                format!("unknown slow path {other:?}: use \"tokio\" or \"mio\""),
            );
        }
    };
    let hook = match x.hook.as_deref() {
        None => Some(driver_xdp::Hook::Xdp),
        Some("auto") => None,
        Some(h) => Some(h.parse().or_else(|e: String| {
            err(
                "xdp.hook",
                format!(
                    "{e} (xdp for NICs with an XDP driver, tc for veth and other virtual interfaces, auto \
                     to choose tc when every interface is a veth)"
                ),
            )
        })?),
    };
    Ok((
        slow,
        Some(XdpSettings {
            interfaces: x.interfaces.clone(),
            hook,
        }),
    ))
}

fn apply_timers(t: &RawTimers, cfg: &mut ProxyConfig) {
    let m = &mut cfg.membership;
    let set = |d: &mut Duration, v: Option<u64>| {
        if let Some(v) = v {
            *d = ms(v);
        }
    };
    set(&mut m.probe_interval, t.probe_interval_ms);
    set(&mut m.suspect_timeout, t.suspect_timeout_ms);
    set(&mut m.flood_interval, t.flood_interval_ms);
    set(&mut m.ae_interval, t.ae_interval_ms);
    set(&mut m.join_retry, t.join_retry_ms);
    set(&mut m.drain_time, t.drain_time_ms);
    set(&mut m.tombstone_time, t.tombstone_time_ms);
    if let Some(v) = t.suspect_after {
        m.suspect_after = v;
    }
    set(&mut cfg.reports.delay, t.report_delay_ms);
    set(&mut cfg.reports.rto, t.report_rto_ms);
    set(&mut cfg.reports.refresh, t.report_refresh_ms);
    set(&mut cfg.rap.report_expiry, t.report_expiry_ms);
    set(&mut cfg.rap.cache_ttl, t.cache_ttl_ms);
    set(&mut cfg.rap.negative_ttl, t.negative_ttl_ms);
    set(&mut cfg.iap.stale_grace, t.stale_grace_ms);
    set(&mut cfg.iap.resolve_retry, t.resolve_retry_ms);
    set(&mut cfg.answer_interval, t.answer_interval_ms);
    set(&mut cfg.invalidate_interval, t.invalidate_interval_ms);
    if let Some(v) = t.refresh_ms {
        cfg.registry.refresh_ms = v;
    }
    if let Some(v) = t.hold_ms {
        cfg.registry.hold_ms = v;
    }
    if let Some(v) = t.cookie_period_ms {
        cfg.registry.cookie_period_ms = v;
    }
    if let Some(v) = t.icmp_rate {
        cfg.icmp_rate = v;
    }
}

fn apply_nat(n: &RawNat, cfg: &mut ProxyConfig) {
    let c = &mut cfg.nat;
    if let Some(v) = n.port_min {
        c.port_min = v;
    }
    if let Some(v) = n.port_max {
        c.port_max = v;
    }
    if let Some(v) = n.max_entries {
        c.max_entries = v;
    }
    for (slot, v) in [
        (&mut c.udp_timeout, n.udp_timeout_s),
        (&mut c.icmp_timeout, n.icmp_timeout_s),
        (&mut c.tcp_established_timeout, n.tcp_established_timeout_s),
        (&mut c.tcp_transitory_timeout, n.tcp_transitory_timeout_s),
        (&mut c.tcp_closed_timeout, n.tcp_closed_timeout_s),
    ] {
        if let Some(v) = v {
            *slot = Duration::from_secs(v);
        }
    }
}

fn apply_limits(l: &RawLimits, cfg: &mut ProxyConfig) {
    if let Some(v) = l.members {
        cfg.membership.max_members = v;
    }
    if let Some(v) = l.iap_cache_entries {
        cfg.iap.cache_entries = v;
    }
    if let Some(v) = l.rap_groups {
        cfg.rap.max_groups = v;
    }
    if let Some(v) = l.japs_per_group {
        cfg.rap.max_japs_per_group = v;
    }
    if let Some(v) = l.registrations {
        cfg.registry.max_registrations = v;
    }
    if let Some(v) = l.targets_per_group {
        cfg.registry.max_targets_per_group = v;
    }
}

/// One `[[policy]]` (with `rule`) or `[default_policy]` (without).
fn policy(at: &str, p: &RawPolicy, rule: bool) -> Result<(Option<GroupMatch>, GroupPolicy), ConfigError> {
    let rap = match p.rap.as_deref() {
        None => RapPolicy::default(),
        Some(s) => s.parse().map_err(|e: &str| ConfigError {
            field: format!("{at}.rap"),
            fix: format!("{s:?}: {e}"),
        })?,
    };
    let replicate = p.replicate.unwrap_or(0);
    let target = TargetOptions {
        exclude_sender: p.exclude_sender.unwrap_or(false),
        scope_prefix: p.scope_prefix,
        random: p.random.unwrap_or(false),
        replicate,
    };
    let gp = GroupPolicy { rap, target };
    if !rule {
        if p.group.is_some() || p.port.is_some() || p.proto.is_some() {
            return err(
                format!("{at}.group"),
                "the default policy matches every group: move group/port/proto to a [[policy]]",
            );
        }
        return Ok((None, gp));
    }
    let Some(g) = &p.group else {
        return err(
            format!("{at}.group"),
            "missing: the group prefix this rule covers, e.g. \"10.99.0.0/24\"",
        );
    };
    let pre: Prefix = g.parse().map_err(|e: String| ConfigError {
        field: format!("{at}.group"),
        fix: e,
    })?;
    let proto = match p.proto.as_deref() {
        None => None,
        Some("udp") => Some(IpProtocol::Udp),
        Some("tcp") => Some(IpProtocol::Tcp),
        Some(s) => return err(format!("{at}.proto"), format!("{s:?}: use \"udp\" or \"tcp\"")),
    };
    Ok((
        Some(GroupMatch {
            prefix: pre.addr,
            len: pre.len,
            port: p.port,
            proto,
        }),
        gp,
    ))
}

/// `IP:PORT`, `[V6]:PORT`, or a bare IP (with `default_port`).
pub(crate) fn sockaddr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: IpAddr = s.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, default_port))
}

fn ip_list(field: &str, v: &[String]) -> Result<Vec<IpAddr>, ConfigError> {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpAddr>().map_err(|_| ConfigError {
                field: format!("{field}[{i}]"),
                fix: format!("{s:?} is not an IP address"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn read_key(_: &Path) -> std::io::Result<String> {
        Ok(KEY.to_owned())
    }

    fn minimal() -> String {
        r#"
[proxy]
id = 7
overlay = "10.251.0.5"
master_key_file = "m.key"
anycast_prefixes = ["10.251.0.128/28"]
registration = ["10.251.0.150"]
nat_pool = ["10.251.0.161"]
"#
        .to_owned()
    }

    fn parse_str(s: &str) -> Result<Config, ConfigError> {
        parse(s, Path::new("/etc/pias"), &read_key)
    }

    fn field_of(s: &str) -> String {
        parse_str(s).unwrap_err().field
    }

    #[test]
    fn example_parses() {
        let c = parse_str(EXAMPLE).unwrap();
        let p = &c.driver.proxy;
        assert_eq!(p.id, ProxyId(1));
        assert_eq!(p.overlay_addr, "10.251.0.5:6081".parse().unwrap());
        assert_eq!(p.membership.seeds, vec!["10.251.0.6:6081".parse().unwrap()]);
        assert_eq!(c.metrics, Some("127.0.0.1:9851".parse().unwrap()));
        assert_eq!(c.control, Some(PathBuf::from("/run/pias/pias0.sock")));
        assert_eq!(p.policies.rules.len(), 1);
        assert_eq!(p.policies.rules[0].1.rap, RapPolicy::Affinity);
        assert_eq!(p.policies.rules[0].0.port, Some(80));
        assert_eq!(c.driver.host.routes().count(), 3);
        assert_eq!(c.driver.host.tun, "pias0");
    }

    #[test]
    fn minimal_gets_defaults() {
        let c = parse_str(&minimal()).unwrap();
        let p = &c.driver.proxy;
        assert_eq!(p.overlay_addr.port(), 6081);
        assert_eq!(p.vni, 1);
        assert!(p.incarnation > 1_600_000_000);
        assert_eq!(p.registry.incarnation, p.incarnation);
        assert_eq!(c.driver.host.mtu, 1500);
        assert!(c.metrics.is_none() && c.control.is_none());
        let routes: Vec<String> = c.driver.host.routes().map(|r| r.to_string()).collect();
        assert_eq!(routes, ["10.251.0.128/28", "10.251.0.150/32", "10.251.0.161/32"]);
    }

    #[test]
    fn bad_fields_are_named() {
        let m = minimal();
        let cases: Vec<(String, &str)> = vec![
            (m.replace("id = 7", "id = 0"), "proxy.id"),
            (m.replace("id = 7\n", ""), "proxy.id"),
            (m.replace("\"10.251.0.5\"", "\"nowhere\""), "proxy.overlay"),
            (m.replace("id = 7", "id = 7\nvni = 16777216"), "proxy.vni"),
            (m.replace("id = 7", "id = 7\ndriver = \"xdp\""), "xdp.interfaces"),
            (m.replace("id = 7", "id = 7\ndriver = \"dpdk\""), "proxy.driver"),
            (format!("{m}\n[xdp]\ninterfaces = [\"eth0\"]\n"), "xdp"),
            (
                format!(
                    "{}\n[xdp]\ninterfaces = [\"eth0\"]\nslow_path = \"dpdk\"\n",
                    m.replace("id = 7", "id = 7\ndriver = \"xdp\"")
                ),
                "xdp.slow_path",
            ),
            (
                format!(
                    "{}\n[xdp]\ninterfaces = [\"a/b\"]\n",
                    m.replace("id = 7", "id = 7\ndriver = \"xdp\"")
                ),
                "xdp.interfaces[0]",
            ),
            (
                m.replace("10.251.0.128/28", "10.251.0.128/40"),
                "proxy.anycast_prefixes[0]",
            ),
            (m.replace("[\"10.251.0.161\"]", "[]"), "proxy.nat_pool"),
            (
                m.replace("[\"10.251.0.161\"]", "[\"10.251.0.130\"]"),
                "proxy.nat_pool[0]",
            ),
            (m.replace("[\"10.251.0.161\"]", "[\"fd00::1\"]"), "proxy.nat_pool"),
            (
                m.replace("[\"10.251.0.150\"]", "[\"x\"]"),
                "proxy.registration[0]",
            ),
            (
                m.replace("id = 7", "id = 7\nseeds = [\"10.251.0.5:6081\"]"),
                "proxy.seeds[0]",
            ),
            (
                m.replace("id = 7", "id = 7\noverlay_mtu = 1000"),
                "proxy.overlay_mtu",
            ),
            (m.replace("id = 7", "id = 7\nwat = 1"), "(syntax)"),
            (format!("{m}[tun]\nname = \"a-very-long-tun-name\"\n"), "tun.name"),
            (format!("{m}[tun]\nmtu = 576\n"), "tun.mtu"),
            (
                format!("{m}[metrics]\nlisten = \"localhost\"\n"),
                "metrics.listen",
            ),
            (
                format!("{m}[timers]\nprobe_interval_ms = 0\n"),
                "timers.probe_interval_ms",
            ),
            (format!("{m}[timers]\nhold_ms = 100\n"), "timers.hold_ms"),
            (
                format!("{m}[timers]\nreport_refresh_ms = 100000\n"),
                "timers.report_expiry_ms",
            ),
            (
                format!("{m}[nat]\nport_min = 2000\nport_max = 1000\n"),
                "nat.port_min",
            ),
            (format!("{m}[nat]\nudp_timeout_s = 0\n"), "nat.udp_timeout_s"),
            (format!("{m}[[policy]]\nrap = \"load\"\n"), "policy[0].group"),
            (
                format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nrap = \"nearest\"\n"),
                "policy[0].rap",
            ),
            (
                format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nproto = \"sctp\"\n"),
                "policy[0].proto",
            ),
            (
                format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nreplicate = 9\n"),
                "policy[0].replicate",
            ),
            (
                format!("{m}[default_policy]\nport = 53\n"),
                "default_policy.group",
            ),
        ];
        for (text, field) in cases {
            assert_eq!(field_of(&text), field, "config:\n{text}");
        }
    }

    /// The core validates (`ProxyConfig::validate`); the CLI names the key. One bad value per part of the
    /// core's configuration, reported under the key the operator wrote, with the core's fix.
    #[test]
    fn core_errors_name_the_toml_key() {
        let m = minimal();
        let cases: Vec<(String, &str, &str)> = vec![
            // proxy
            (
                m.replace("\"10.251.0.5\"", "\"0.0.0.0\""),
                "proxy.overlay",
                "concrete unicast",
            ),
            (
                m.replace("id = 7", "id = 7\nvni = 16777216"),
                "proxy.vni",
                "24 bits",
            ),
            // membership
            (
                format!("{m}[timers]\nsuspect_after = 0\n"),
                "timers.suspect_after",
                "at least 1",
            ),
            (
                format!("{m}[timers]\ntombstone_time_ms = 10\n"),
                "timers.tombstone_time_ms",
                "suspect_timeout",
            ),
            (
                format!("{m}[limits]\nmembers = 0\n"),
                "limits.members",
                "1 ..= 4194304",
            ),
            (
                m.replace("id = 7", "id = 7\nseeds = [\"10.251.0.6\", \"10.251.0.5:6081\"]"),
                "proxy.seeds[1]",
                "own overlay address",
            ),
            // iap
            (
                format!("{m}[limits]\niap_cache_entries = 0\n"),
                "limits.iap_cache_entries",
                "at least 1",
            ),
            (
                format!("{m}[timers]\nresolve_retry_ms = 0\n"),
                "timers.resolve_retry_ms",
                "at least 1 ms",
            ),
            // rap
            (
                format!("{m}[limits]\nrap_groups = 0\n"),
                "limits.rap_groups",
                "at least 1",
            ),
            (
                format!("{m}[limits]\njaps_per_group = 0\n"),
                "limits.japs_per_group",
                "at least 1",
            ),
            (
                format!("{m}[timers]\nnegative_ttl_ms = 0\n"),
                "timers.negative_ttl_ms",
                "at least 1 ms",
            ),
            // reports
            (
                format!("{m}[timers]\nreport_rto_ms = 0\n"),
                "timers.report_rto_ms",
                "at least 1 ms",
            ),
            (
                format!("{m}[timers]\nreport_delay_ms = 0\n"),
                "timers.report_delay_ms",
                "at least 1 ms",
            ),
            // registry
            (
                format!("{m}[limits]\nregistrations = 0\n"),
                "limits.registrations",
                "between 1",
            ),
            (
                format!("{m}[limits]\ntargets_per_group = 5000\n"),
                "limits.targets_per_group",
                "4095",
            ),
            (
                format!("{m}[timers]\ncookie_period_ms = 10\n"),
                "timers.cookie_period_ms",
                "at least 1000",
            ),
            // nat
            (
                format!("{m}[nat]\nmax_entries = 0\n"),
                "nat.max_entries",
                "at least 1",
            ),
            (
                format!("{m}[nat]\nmax_entries = 300000000\n"),
                "nat.max_entries",
                "lower it",
            ),
            (
                format!("{m}[nat]\nport_max = 0\n"),
                "nat.port_min",
                "port_min <= port_max",
            ),
            (
                format!("{m}[nat]\ntcp_closed_timeout_s = 0\n"),
                "nat.tcp_closed_timeout_s",
                "positive duration",
            ),
            (
                m.replace("[\"10.251.0.161\"]", "[\"10.251.0.161\", \"10.251.0.161\"]"),
                "proxy.nat_pool[1]",
                "listed twice",
            ),
            (
                m.replace("[\"10.251.0.161\"]", "[\"224.0.0.1\"]"),
                "proxy.nat_pool[0]",
                "unicast",
            ),
            // policies
            (
                format!("{m}[default_policy]\nscope_prefix = 200\n"),
                "default_policy.scope_prefix",
                "0..=128",
            ),
            (
                format!(
                    "{m}[[policy]]\ngroup = \"10.0.0.0/8\"\n[[policy]]\ngroup = \"10.0.0.0/8\"\nscope_prefix = 33\n"
                ),
                "policy[1].scope_prefix",
                "0..=32",
            ),
            (
                format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nreplicate = 9\n"),
                "policy[0].replicate",
                "0..=4",
            ),
        ];
        for (text, key, hint) in cases {
            let e = parse_str(&text).unwrap_err();
            assert_eq!(e.field, key, "config:\n{text}");
            assert!(e.fix.contains(hint), "{key}: {e}");
            assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = parse_str(&minimal().replace("id = 7", "id = 0")).unwrap_err();
        assert!(e.to_string().starts_with("proxy.id: must not be 0"), "{e}");
        let e = parse_str(&minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")).unwrap_err();
        assert!(e.to_string().starts_with("xdp.interfaces: missing"), "{e}");
        let c = parse_str(&format!(
            "{}\n[xdp]\ninterfaces = [\"eth0\", \"eth1\"]\nslow_path = \"mio\"\n",
            minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
        ))
        .unwrap();
        assert_eq!(c.runtime, Driver::Mio);
        let x = c.xdp.unwrap();
        assert_eq!(x.interfaces, ["eth0", "eth1"]);
        assert_eq!(x.hook, Some(driver_xdp::Hook::Xdp));
        let c = parse_str(&format!(
            "{}\n[xdp]\ninterfaces = [\"veth0\"]\nhook = \"tc\"\n",
            minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
        ))
        .unwrap();
        assert_eq!(c.xdp.unwrap().hook, Some(driver_xdp::Hook::Tc));
        let c = parse_str(&format!(
            "{}\n[xdp]\ninterfaces = [\"veth0\"]\nhook = \"auto\"\n",
            minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
        ))
        .unwrap();
        assert_eq!(c.xdp.unwrap().hook, None);
        let e = parse_str(&format!(
            "{}\n[xdp]\ninterfaces = [\"veth0\"]\nhook = \"egress\"\n",
            minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
        ))
        .unwrap_err();
        assert!(e.to_string().starts_with("xdp.hook: unknown hook"), "{e}");
        let c = parse_str(&format!(
            "{}\n[xdp]\ninterfaces = [\"eth0\"]\n",
            minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
        ))
        .unwrap();
        assert_eq!(c.runtime, Driver::Tokio);
        assert!(parse_str(&minimal()).unwrap().xdp.is_none());
        let c = parse_str(&minimal().replace("id = 7", "id = 7\ndriver = \"mio\"")).unwrap();
        assert_eq!(c.runtime, Driver::Mio);
        assert_eq!(parse_str(&minimal()).unwrap().runtime, Driver::Tokio);
        let e = parse_str(&minimal().replace("id = 7", "id = 7\nwat = 1")).unwrap_err();
        assert!(e.fix.contains("wat"), "{e}");
    }

    #[test]
    fn bad_key_file_is_named() {
        let e = parse(&minimal(), Path::new("."), &|_| Ok("xyz".to_owned())).unwrap_err();
        assert_eq!(e.field, "proxy.master_key_file");
        let e = parse(&minimal(), Path::new("."), &|_| {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        })
        .unwrap_err();
        assert_eq!(e.field, "proxy.master_key_file");
    }

    #[test]
    fn policies_translate() {
        let text = format!(
            "{}[default_policy]\nrap = \"load\"\n[[policy]]\ngroup = \"10.251.0.129/32\"\nport = 53\nproto = \"udp\"\nexclude_sender = true\nscope_prefix = 24\nreplicate = 2\n",
            minimal()
        );
        let c = parse_str(&text).unwrap();
        let t = &c.driver.proxy.policies;
        assert_eq!(t.default.rap, RapPolicy::Load);
        let (m, p) = t.rules[0];
        assert_eq!(m.proto, Some(IpProtocol::Udp));
        assert_eq!(m.len, 32);
        assert!(p.target.exclude_sender);
        assert_eq!(p.target.scope_prefix, Some(24));
        assert_eq!(p.target.replicate, 2);
        assert_eq!(p.rap, RapPolicy::Proximity);
    }
}
