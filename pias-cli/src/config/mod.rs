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

mod apply;
mod example;
mod keys;
#[cfg(test)]
mod tests;

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

use apply::{apply_limits, apply_nat, apply_nat_limits, apply_timers, policy};
pub(crate) use example::EXAMPLE;
use keys::toml_key;

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
    data_key_epoch: Option<u32>,
    #[serde(default)]
    anycast_prefixes: Vec<String>,
    #[serde(default)]
    registration: Vec<String>,
    #[serde(default)]
    nat_pool: Vec<String>,
    /// The rest of the overlay's space (other proxies' NAT pools): refused as client sources.
    #[serde(default)]
    overlay_prefixes: Vec<String>,
    #[serde(default)]
    seeds: Vec<String>,
    driver: Option<String>,
    overlay_mtu: Option<u16>,
    seed: Option<u64>,
    /// Accept a master key file its group or others can access (refused by default, SPEC.md §8.6).
    insecure_key_file_permissions: Option<bool>,
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
    /// A group whose members may use the socket too (mode 0660 instead of 0600).
    group: Option<String>,
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
    replay_skew_ms: Option<u64>,
    max_answer_ttl_ms: Option<u64>,
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
    /// How long an IAP keeps a draining JAP's connections pinned to it (SPEC.md §9.6).
    drain_hold_ms: Option<u64>,
    /// How long a proxy that cannot serve waits before it withdraws its prefixes (SPEC.md §7.7).
    announce_hold_down_ms: Option<u64>,
    /// How long it must be healthy again before it announces them again (SPEC.md §7.7).
    announce_hold_up_ms: Option<u64>,
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
    udp_transitory_timeout_s: Option<u64>,
    tcp_half_open_timeout_s: Option<u64>,
    new_per_prefix: Option<u32>,
    prefix_len_v4: Option<u8>,
    prefix_len_v6: Option<u8>,
    /// Addresses the NAT takes from each IPv6 prefix of `proxy.nat_pool`.
    prefix_addrs: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    members: Option<usize>,
    iap_cache_entries: Option<usize>,
    rap_groups: Option<usize>,
    japs_per_group: Option<usize>,
    rap_groups_per_jap: Option<usize>,
    registrations: Option<usize>,
    targets_per_group: Option<usize>,
    /// New flows per second this proxy takes as JAP before it sheds them (SPEC.md §9.6); unset: no
    /// capacity.
    capacity_flows_per_s: Option<u32>,
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
    /// `[control] group`: the socket is 0660 and owned by this group (else 0600).
    pub(crate) control_group: Option<String>,
    /// The master key file, checked for group/other access by [`load`] unless
    /// `insecure_key_file_permissions` allows it.
    pub(crate) master_key_file: PathBuf,
    pub(crate) insecure_key_file_permissions: bool,
}

/// Reads and validates a configuration file.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let cfg = parse(&text, base, &|p| std::fs::read_to_string(p))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    crate::key::check_private(
        &cfg.master_key_file,
        cfg.insecure_key_file_permissions,
        "set insecure_key_file_permissions = true in [proxy]",
    )
    .map_err(|e| anyhow::anyhow!("{}: proxy.master_key_file: {e}", path.display()))?;
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
    let seed = p.seed.unwrap_or_else(crate::key::random_u64);
    let (pool, pool_routes) = nat_pool(&p.nat_pool, raw.nat.prefix_addrs, seed)?;
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
    let mut overlay_prefixes = Vec::new();
    for (i, s) in p.overlay_prefixes.iter().enumerate() {
        let pre: Prefix = s.parse().map_err(|e: String| ConfigError {
            field: format!("proxy.overlay_prefixes[{i}]"),
            fix: e,
        })?;
        overlay_prefixes.push(ip_prefix(pre));
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
    cfg.data_key_epoch = p.data_key_epoch.unwrap_or(0);
    cfg.incarnation = driver_common::wall_clock_incarnation();
    cfg.seed = seed;
    cfg.registry.incarnation = cfg.incarnation;
    if xdp.is_some() {
        // The fast path translates targets' replies in the kernel, so the core never sees a binding's
        // first reply: the passive watch (SPEC.md §10.4) would take every target for dead.
        cfg.registry.watch.udp_flows = 0;
        cfg.registry.watch.tcp_flows = 0;
    }
    cfg.membership.seeds = seeds;
    // The filters' overlay space (SPEC.md §8.5): the prefixes routed into the TUN are the proxy's own; the
    // registration addresses and the pool the core adds itself.
    cfg.anycast_prefixes = anycast.iter().map(|p| ip_prefix(*p)).collect();
    cfg.overlay_prefixes = overlay_prefixes;
    apply_timers(&raw.timers, &mut cfg);
    apply_nat(&raw.nat, &mut cfg);
    apply_nat_limits(&raw.nat, &mut cfg);
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
        pool: pool_routes,
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
    if let Some(g) = &raw.control.group
        && g.is_empty()
    {
        return err(
            "control.group",
            "give a group name, e.g. \"pias\", or omit the key",
        );
    }
    Ok(Config {
        runtime,
        xdp,
        driver,
        metrics,
        control,
        control_group: raw.control.group.clone(),
        master_key_file: key_path,
        insecure_key_file_permissions: p.insecure_key_file_permissions.unwrap_or(false),
    })
}

fn ip_prefix(p: Prefix) -> pias_state::filter::IpPrefix {
    pias_state::filter::IpPrefix {
        addr: p.addr,
        len: p.len,
    }
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

/// `IP:PORT`, `[V6]:PORT`, or a bare IP (with `default_port`).
pub(crate) fn sockaddr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: IpAddr = s.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, default_port))
}

/// `proxy.nat_pool`: addresses, and IPv6 prefixes (`2001:db8:98::/96`) from which the NAT takes
/// `nat.prefix_addrs` addresses (default 64, spread by the seed). Returns the pool and its routes into the TUN
/// (a host route per address, the whole prefix for a prefix).
fn nat_pool(
    v: &[String],
    prefix_addrs: Option<u16>,
    seed: u64,
) -> Result<(Vec<IpAddr>, Vec<Prefix>), ConfigError> {
    let per_prefix = usize::from(prefix_addrs.unwrap_or(64));
    if per_prefix == 0 || per_prefix > pias_state::nat::MAX_POOL_ADDRS {
        return err(
            "nat.prefix_addrs",
            format!(
                "addresses taken from each pool prefix: 1..={}",
                pias_state::nat::MAX_POOL_ADDRS
            ),
        );
    }
    let (mut pool, mut routes) = (Vec::new(), Vec::new());
    for (i, s) in v.iter().enumerate() {
        let field = format!("proxy.nat_pool[{i}]");
        if s.contains('/') {
            let pre: Prefix = s.parse().map_err(|e: String| ConfigError {
                field: field.clone(),
                fix: e,
            })?;
            let IpAddr::V6(a) = pre.addr else {
                return err(
                    field,
                    format!(
                        "{s:?}: prefixes are for IPv6 (e.g. a /96 or /64); list IPv4 pool addresses one by one"
                    ),
                );
            };
            let addrs =
                pias_state::nat::NatConfig::addresses_in_prefix(a, pre.len, per_prefix, seed ^ i as u64)
                    .ok_or_else(|| ConfigError {
                        field: field.clone(),
                        fix: format!("{s:?}: use a prefix of at most /120"),
                    })?;
            pool.extend(addrs);
            // The route names the network (host bits cleared: `ip route` refuses them).
            let net = u128::from(a) & !(u128::MAX.checked_shr(u32::from(pre.len)).unwrap_or(0));
            routes.push(Prefix {
                addr: IpAddr::V6(std::net::Ipv6Addr::from(net)),
                len: pre.len,
            });
        } else {
            let a = s.parse::<IpAddr>().map_err(|_| ConfigError {
                field,
                fix: format!("{s:?} is not an IP address or IPv6 prefix"),
            })?;
            pool.push(a);
            routes.push(Prefix::host(a));
        }
    }
    Ok((pool, routes))
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
