//! How the lab runs PIAS itself: key files (`pias key`), proxy config files (`pias proxy --config`), target
//! agent command lines (`pias target`), and reading a proxy's counters (`pias ctl`, or its Prometheus page).
//! This is the only part of the lab that knows those interfaces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use anyhow::{Result, bail};

use super::topo::{Group, Kind, Node};
use super::{Lab, net};

/// Where each proxy serves Prometheus counters (inside its own namespace).
pub(crate) const METRICS: &str = "127.0.0.1:9851";

fn pias(lab: &Lab, args: &[&str]) -> Result<String> {
    net::run(&lab.pias.display().to_string(), args)
}

pub(crate) fn master_file(lab: &Lab) -> PathBuf {
    lab.dir.join("master.key")
}

pub(crate) fn key_file(lab: &Lab, g: &Group) -> PathBuf {
    lab.dir.join("keys").join(format!("{}.key", g.tag()))
}

/// Writes a key file readable by its owner only (`pias proxy` and `pias target` refuse others, §8.5).
fn write_private(p: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(p, text)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A master key for the overlay and each group's registration key (kept across `up`s of a running lab;
/// made private again each time, for a lab directory an older version wrote).
pub(crate) fn write_keys(lab: &Lab) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = master_file(lab);
    if !m.exists() {
        write_private(&m, &pias(lab, &["key", "generate"])?)?;
    }
    fs::set_permissions(&m, fs::Permissions::from_mode(0o600))?;
    fs::create_dir_all(lab.dir.join("keys"))?;
    let ms = m.display().to_string();
    for g in &lab.plan.groups {
        let k = key_file(lab, g);
        if !k.exists() {
            write_private(
                &k,
                &pias(lab, &["key", "derive", "--master-file", &ms, "--group", &g.spec])?,
            )?;
        }
        fs::set_permissions(&k, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub(crate) fn ctl_socket(lab: &Lab, p: &Node) -> PathBuf {
    lab.node_dir(&p.name).join("ctl.sock")
}

/// The proxy's configuration file.
pub(crate) fn proxy_config(lab: &Lab, p: &Node) -> String {
    let t = &lab.plan.topo;
    let q = |v: Vec<String>| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let seeds: Vec<String> = lab
        .plan
        .of(Kind::Proxy)
        .filter(|o| o.name != p.name)
        .map(|o| format!("{}:6081", o.addr4()))
        .collect();
    let mut c = String::new();
    let _ = writeln!(c, "# written by `pias lab up` for {}", p.name);
    let _ = writeln!(c, "[proxy]");
    let _ = writeln!(c, "id = {}", p.index);
    let _ = writeln!(c, "overlay = \"{}:6081\"", p.addr4());
    let _ = writeln!(c, "vni = 1");
    let _ = writeln!(c, "master_key_file = \"{}\"", master_file(lab).display());
    let _ = writeln!(
        c,
        "anycast_prefixes = [{}]",
        q(vec![t.anycast4.clone(), t.anycast6.clone()])
    );
    let _ = writeln!(
        c,
        "registration = [{}]",
        q(vec![t.registration4.to_string(), t.registration6.to_string()])
    );
    // Two IPv4 pool addresses and an IPv6 /96 the NAT takes addresses from (SPEC.md §11.2): all inside the
    // proxy's pool prefixes, which its bird announces once they are routed into the TUN.
    let second = std::net::Ipv4Addr::from(u32::from(p.pool4()) + 1);
    let _ = writeln!(
        c,
        "nat_pool = [{}]",
        q(vec![
            p.pool4().to_string(),
            second.to_string(),
            format!("fd98:{:x}::/96", p.index)
        ])
    );
    // The other proxies' pools are overlay space this proxy cannot learn: client sources there are refused.
    let others: Vec<String> = lab
        .plan
        .of(Kind::Proxy)
        .filter(|o| o.name != p.name)
        .flat_map(|o| [o.pool4_prefix(), o.pool6_prefix()])
        .collect();
    let _ = writeln!(c, "overlay_prefixes = [{}]", q(others));
    let _ = writeln!(c, "seeds = [{}]", q(seeds));
    let _ = writeln!(c, "seed = {}", p.index);
    if let Some(hook) = lab.plan.fast_path_hook() {
        // The program on the proxy's only interface (towards its router); everything it passes goes to tokio.
        // xdp-tc asks for "auto", which must find the veth and choose TC (the e2e suite checks the log).
        let hook = if hook == "tc" { "auto" } else { hook };
        let _ = writeln!(c, "driver = \"xdp\"");
        let _ = writeln!(
            c,
            "\n[xdp]\ninterfaces = [\"{}\"]\nslow_path = \"tokio\"\nhook = \"{hook}\"",
            p.ifaces[0].name
        );
    } else {
        let _ = writeln!(c, "driver = \"{}\"", t.driver);
    }
    let _ = writeln!(c, "\n[tun]\nname = \"pias0\"\nmtu = 1500\nsysctls = true");
    let _ = writeln!(c, "\n[metrics]\nlisten = \"{METRICS}\"");
    let _ = writeln!(c, "\n[control]\nsocket = \"{}\"", ctl_socket(lab, p).display());
    for g in &lab.plan.groups {
        if g.policy.is_none() && !g.exclude_sender {
            continue;
        }
        let len = if g.addr.is_ipv4() { 32 } else { 128 };
        let _ = writeln!(c, "\n[[policy]]\ngroup = \"{}/{len}\"", g.addr.ip());
        let _ = writeln!(c, "port = {}\nproto = \"{}\"", g.addr.port(), g.proto());
        let _ = writeln!(c, "rap = \"{}\"", g.policy.as_deref().unwrap_or("proximity"));
        let _ = writeln!(c, "exclude_sender = {}", g.exclude_sender);
    }
    c
}

/// Writes the proxy's config and returns the command that runs it.
pub(crate) fn proxy_argv(lab: &Lab, p: &Node) -> Result<Vec<String>> {
    let f = lab.node_dir(&p.name).join("proxy.toml");
    fs::write(&f, proxy_config(lab, p))?;
    Ok(vec![
        lab.pias.display().to_string(),
        "proxy".into(),
        "--config".into(),
        f.display().to_string(),
    ])
}

/// The agent registering `site`'s service for `g` (with another key file when `key` is given).
pub(crate) fn agent_argv(lab: &Lab, s: &Node, g: &Group, key: Option<&str>) -> Result<Vec<String>> {
    let svc = lab.plan.service_addr(s, g);
    let key = key
        .map(str::to_owned)
        .unwrap_or_else(|| key_file(lab, g).display().to_string());
    Ok(vec![
        lab.pias.display().to_string(),
        "target".into(),
        "--group".into(),
        g.spec.clone(),
        "--service".into(),
        svc.to_string(),
        "--key-file".into(),
        key,
        "--registration".into(),
        lab.plan.registration(g).to_string(),
        "--driver".into(),
        lab.plan.agent_driver().to_owned(),
    ])
}

/// `pias ctl` against a proxy's control socket (run from the host: the socket is a file).
pub(crate) fn ctl(lab: &Lab, p: &Node, args: &[&str]) -> Result<String> {
    let sock = ctl_socket(lab, p).display().to_string();
    let mut a = vec!["ctl", "--socket", &sock];
    a.extend_from_slice(args);
    pias(lab, &a)
}

/// The ids of the members a proxy sees alive (itself included), from `pias ctl members --json`.
pub(crate) fn alive_members(lab: &Lab, p: &Node) -> Result<Vec<u32>> {
    let s = ctl(lab, p, &["members", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&s)?;
    // `pias ctl --json` prints the answer's data (an array of members); accept the whole answer too.
    let list = v
        .get("data")
        .unwrap_or(&v)
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(list
        .iter()
        .filter(|m| m.get("status").and_then(|s| s.as_str()) == Some("alive"))
        .filter_map(|m| m.get("id").and_then(|i| i.as_u64()).map(|i| i as u32))
        .collect())
}

/// A proxy's counters by name (`iap_to_rap`, `jap_delivered`, `reg_bad_mac`, `registrations`, …), from
/// `pias ctl counters --json`, or else from its Prometheus page.
pub(crate) fn counters(lab: &Lab, p: &Node) -> Result<BTreeMap<String, u64>> {
    if let Ok(s) = ctl(lab, p, &["counters", "--json"])
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&s)
    {
        let mut m = BTreeMap::new();
        flatten(&v, &mut m);
        if !m.is_empty() {
            return Ok(m);
        }
    }
    let o = net::ns_output(
        &p.ns,
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            &format!("http://{METRICS}/metrics"),
        ],
    )?;
    if !o.status.success() {
        bail!(
            "{}: neither `pias ctl` nor http://{METRICS}/metrics answered",
            p.name
        );
    }
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let mut it = l.split_whitespace();
        let (Some(name), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name);
        let name = name.strip_prefix("pias_").unwrap_or(name);
        let name = name.strip_suffix("_total").unwrap_or(name);
        if let Ok(v) = v.parse::<f64>() {
            *m.entry(name.to_owned()).or_insert(0) += v as u64;
        }
    }
    if m.is_empty() {
        bail!("{}: no counters in its metrics page", p.name);
    }
    Ok(m)
}

/// Collects every numeric leaf as `name → value` (`{"iap_to_rap": 3}` or `[{"name": …, "value": …}]`).
fn flatten(v: &serde_json::Value, m: &mut BTreeMap<String, u64>) {
    match v {
        serde_json::Value::Object(o) => {
            if let (Some(n), Some(x)) = (
                o.get("name").and_then(|n| n.as_str()),
                o.get("value").and_then(|x| x.as_u64()),
            ) {
                m.insert(n.to_owned(), x);
                return;
            }
            for (k, x) in o {
                if let Some(n) = x.as_u64() {
                    m.insert(k.clone(), n);
                } else {
                    flatten(x, m);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, m)),
        _ => {}
    }
}

/// Counters of every proxy that answers.
pub(crate) fn all_counters(lab: &Lab) -> BTreeMap<String, BTreeMap<String, u64>> {
    lab.plan
        .of(Kind::Proxy)
        .filter_map(|p| counters(lab, p).ok().map(|c| (p.name.clone(), c)))
        .collect()
}

/// `after - before` of one counter at one proxy.
pub(crate) fn delta(
    before: &BTreeMap<String, BTreeMap<String, u64>>,
    after: &BTreeMap<String, BTreeMap<String, u64>>,
    proxy: &str,
    name: &str,
) -> u64 {
    let get = |m: &BTreeMap<String, BTreeMap<String, u64>>| {
        m.get(proxy).and_then(|c| c.get(name)).copied().unwrap_or(0)
    };
    get(after).saturating_sub(get(before))
}

/// The path counters show between two snapshots: (IAP, RAP, JAP) names; RAP only on a 4-segment path.
pub(crate) fn path(
    before: &BTreeMap<String, BTreeMap<String, u64>>,
    after: &BTreeMap<String, BTreeMap<String, u64>>,
) -> Path {
    let with = |name: &str| -> Vec<String> {
        after
            .keys()
            .filter(|p| delta(before, after, p, name) > 0)
            .cloned()
            .collect()
    };
    Path {
        via_rap: with("iap_to_rap"),
        direct: with("iap_to_jap"),
        rap: with("rap_relayed"),
        jap: with("jap_delivered"),
    }
}

/// Which proxies' counters moved between two snapshots.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path {
    /// IAPs that sent to a RAP (first packet, 4 segments).
    pub via_rap: Vec<String>,
    /// IAPs that sent straight to a JAP (3 segments).
    pub direct: Vec<String>,
    pub rap: Vec<String>,
    pub jap: Vec<String>,
}

impl Path {
    pub(crate) fn describe(&self, client: &str, target: &str) -> String {
        let j = |v: &Vec<String>| if v.is_empty() { "?".to_owned() } else { v.join("+") };
        let four = format!(
            "{client} → {} (IAP) → {} (RAP) → {} (JAP) → {target}",
            j(&self.via_rap),
            j(&self.rap),
            j(&self.jap)
        );
        let three = format!(
            "{client} → {} (IAP) → {} (JAP) → {target}",
            j(&self.direct),
            j(&self.jap)
        );
        match (self.via_rap.is_empty(), self.direct.is_empty()) {
            (false, true) => format!("{four}   [4 segments]"),
            (false, false) => format!("{four}   [4 segments for the first packet, then 3: IAP → JAP]"),
            _ => format!("{three}   [3 segments]"),
        }
    }
}

/// Sum of one counter over all proxies.
pub(crate) fn sum(all: &BTreeMap<String, BTreeMap<String, u64>>, name: &str) -> u64 {
    all.values().filter_map(|c| c.get(name)).sum()
}

/// Registrations the topology expects (one per group and serving site).
pub(crate) fn expected_registrations(lab: &Lab) -> u64 {
    lab.plan.groups.iter().map(|g| g.sites.len() as u64).sum()
}
