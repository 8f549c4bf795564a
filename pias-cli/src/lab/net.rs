//! Namespaces, veth links, addresses and routes: everything `ip` does for the lab. Every object is created
//! by name, inside namespaces the lab made, and never attached to the host's interfaces.

use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use super::topo::{Kind, Plan};

/// Runs a command, returning its output whatever its exit status.
pub(crate) fn output(prog: &str, args: &[&str]) -> Result<Output> {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog} (is it installed?)"))
}

/// Runs a command and fails with its stderr when it fails.
pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String> {
    let o = output(prog, args)?;
    if !o.status.success() {
        bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs a command inside a namespace and fails when it fails.
pub(crate) fn ns_run(ns: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// Runs a command inside a namespace, returning its output whatever its exit status.
pub(crate) fn ns_output(ns: &str, args: &[&str]) -> Result<Output> {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    output("ip", &a)
}

/// The lab's namespaces that exist now.
pub(crate) fn existing_namespaces(prefix: &str) -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    let want = format!("{prefix}-");
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&want))
        .map(str::to_owned)
        .collect())
}

fn link_exists(ns: &str, ifname: &str) -> bool {
    output("ip", &["-n", ns, "link", "show", "dev", ifname]).is_ok_and(|o| o.status.success())
}

/// Writes `/proc/sys` entries inside a namespace (its own `net` tree); no dependency on procps' sysctl.
fn set_sysctls(ns: &str, kv: &[(&str, &str)]) -> Result<()> {
    let script: Vec<String> = kv
        .iter()
        .map(|(k, v)| format!("echo '{v}' > /proc/sys/{k}"))
        .collect();
    ns_run(ns, &["sh", "-c", &script.join(" && ")])?;
    Ok(())
}

/// Creates the namespaces, links, addresses and static routes of the plan (idempotent).
pub(crate) fn build(plan: &Plan) -> Result<()> {
    let have = existing_namespaces(&plan.topo.name)?;
    for n in &plan.nodes {
        if !have.contains(&n.ns) {
            run("ip", &["netns", "add", &n.ns])?;
        }
        // Before any interface exists, so that new interfaces inherit the defaults.
        set_sysctls(
            &n.ns,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
                ("net/ipv4/conf/all/rp_filter", "0"),
                ("net/ipv4/conf/default/rp_filter", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
                ("net/ipv6/conf/all/accept_dad", "0"),
                ("net/ipv4/ping_group_range", "0 2147483647"),
            ],
        )?;
        run("ip", &["-n", &n.ns, "link", "set", "lo", "up"])?;
    }
    for (a, ia, b, ib) in &plan.links {
        let (na, nb) = (
            plan.node(a).context("link end")?,
            plan.node(b).context("link end")?,
        );
        if link_exists(&na.ns, ia) {
            continue;
        }
        if link_exists(&nb.ns, ib) {
            run("ip", &["-n", &nb.ns, "link", "del", ib])?;
        }
        run(
            "ip",
            &[
                "link", "add", ia, "netns", &na.ns, "type", "veth", "peer", "name", ib, "netns", &nb.ns,
            ],
        )?;
    }
    for n in &plan.nodes {
        for i in &n.ifaces {
            set_sysctls(&n.ns, &[(&format!("net/ipv4/conf/{}/rp_filter", i.name), "0")])?;
            run(
                "ip",
                &[
                    "-n",
                    &n.ns,
                    "addr",
                    "replace",
                    &format!("{}/24", i.v4),
                    "dev",
                    &i.name,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &n.ns,
                    "-6",
                    "addr",
                    "replace",
                    &format!("{}/64", i.v6),
                    "dev",
                    &i.name,
                    "nodad",
                ],
            )?;
            run("ip", &["-n", &n.ns, "link", "set", &i.name, "up"])?;
        }
        if matches!(n.kind, Kind::Client | Kind::Site) {
            run(
                "ip",
                &[
                    "-n",
                    &n.ns,
                    "route",
                    "replace",
                    "default",
                    "via",
                    &n.gw4().to_string(),
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &n.ns,
                    "-6",
                    "route",
                    "replace",
                    "default",
                    "via",
                    &n.gw6().to_string(),
                ],
            )?;
        }
    }
    Ok(())
}

/// What the proxies' fast path needs from the rest of the lab (driver-xdp's deployment notes), set up by
/// `pias lab up` when `driver = "xdp"` or `"xdp-tc"`, and by `pias lab bench` for every driver:
/// - with `driver = "xdp"` only, the router end of each proxy's veth runs an XDP program too, so that it
///   receives the proxy program's
///   `XDP_TX` frames: driver-xdp's own object with no configuration (it passes every frame), attached with
///   `ip link set … xdpdrv` (so it stays without a process; it goes with the namespace). GRO on the router
///   end would give it NAPI as well, but on this kernel the proxy's veth then stalls for good under load
///   (its transmit queue stays stopped: ENOBUFS for every local send, OSPF included);
/// - senders compute their checksums (`tx` offload off on every client, site and proxy interface), as
///   on a wire; a locally sent packet crossing a veth carries a partial checksum and the program leaves it
///   to the slow path. IP forwarding (for `bpf_fib_lookup`) is on in every namespace already.
pub(crate) fn xdp_setup(plan: &Plan, dir: &std::path::Path) -> Result<()> {
    let obj = dir.join("xdp-pass.o");
    std::fs::write(&obj, driver_xdp::loader::object())
        .with_context(|| format!("writing {}", obj.display()))?;
    let obj = obj.display().to_string();
    for n in &plan.nodes {
        for i in &n.ifaces {
            let args: Vec<&str> = match n.kind {
                Kind::Router if plan.node(&i.name).is_some_and(|p| p.kind == Kind::Proxy) => {
                    // Only XDP_TX into a veth needs a program on the peer (the TC hook hands frames over
                    // as socket buffers; the user-space drivers and the kernel need none).
                    if plan.fast_path_hook() != Some("xdp") || link_has_xdp(&n.ns, &i.name) {
                        continue;
                    }
                    vec![
                        "ip", "link", "set", "dev", &i.name, "xdpdrv", "obj", &obj, "sec", "xdp",
                    ]
                }
                Kind::Router => continue,
                _ => vec!["ethtool", "-K", &i.name, "tx", "off"],
            };
            ns_run(&n.ns, &args).with_context(|| {
                format!(
                    "{} in {} (driver = \"xdp\" needs ethtool and iproute2 with BPF support)",
                    args.join(" "),
                    n.ns
                )
            })?;
        }
    }
    Ok(())
}

fn link_has_xdp(ns: &str, ifname: &str) -> bool {
    run("ip", &["-n", ns, "link", "show", "dev", ifname]).is_ok_and(|s| s.contains("prog/xdp"))
}

/// Deletes the lab's namespaces (their veths go with them).
pub(crate) fn destroy(prefix: &str) -> Result<Vec<String>> {
    let have = existing_namespaces(prefix)?;
    for ns in &have {
        run("ip", &["netns", "del", ns])?;
    }
    Ok(have)
}

/// The inode of a namespace's file, to compare with `/proc/PID/ns/net`.
pub(crate) fn ns_inode(ns: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{ns}"))
        .ok()
        .map(|m| m.ino())
}

/// Whether a process lives (not a zombie) in the given namespace.
pub(crate) fn pid_in_ns(pid: u32, ns: &str) -> bool {
    let Some(ino) = ns_inode(ns) else { return false };
    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
        return false;
    };
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| !r.starts_with('Z') && !r.starts_with('X'))
        })
        .unwrap_or(false);
    alive && link.to_string_lossy() == format!("net:[{ino}]")
}

/// Sends a signal (`"TERM"`, `"KILL"`) to a process with bash's builtin `kill` (bash is essential on Debian;
/// procps' kill may be absent); false if it is gone.
pub(crate) fn send_signal(pid: u32, sig: &str) -> bool {
    if pid <= 1 {
        return false;
    }
    let script = format!("kill -s {sig} {pid} 2>/dev/null");
    output("bash", &["-c", &script]).is_ok_and(|o| o.status.success())
}

/// Processes running in a namespace.
pub(crate) fn ns_pids(ns: &str) -> Vec<u32> {
    output("ip", &["netns", "pids", ns])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kernel IP forwarding over a PIAS path, for `pias lab bench`'s "kernel-same-path" baseline: traffic from a
/// second client address ([`SamePath::from`], `.3` on the client's attachment) is policy-routed through the
/// proxy namespaces acting as plain IP routers, hop for hop the way PIAS carries it: client → its router →
/// IAP proxy → the same router → … → JAP's router → JAP proxy → JAP's router → site, replies site → JAP's
/// router → JAP proxy → JAP's router → … → client. Only traffic from or to that address is affected (the PIAS
/// traffic uses the client's own address and the anycast groups). [`SamePath::down`] removes it all again.
#[derive(Debug)]
pub(crate) struct SamePath {
    /// The client's second address: traffic from it takes the path.
    pub from: std::net::Ipv4Addr,
    /// What to undo, in order: `ip` argument lists (run as they are) and sysctls to restore (ns, key, value).
    undo: Vec<Vec<String>>,
    sysctls: Vec<(String, String, String)>,
}

impl SamePath {
    /// Sets the path up for `client` (IAP `iap`, JAP `jap`, the site `site`). The IAP must hang off the
    /// client's router and the site off the JAP's router (as PIAS's nearest-proxy routing and registration
    /// give in the default lab); otherwise an error says why. Rule preferences and table numbers come from
    /// the client's number, so clients sharing a router do not collide.
    pub(crate) fn up(
        plan: &Plan,
        client: &super::topo::Node,
        iap: &super::topo::Node,
        jap: &super::topo::Node,
        site: &super::topo::Node,
    ) -> Result<SamePath> {
        let (Some(rc), Some(ri), Some(rj), Some(rs)) = (
            client.router.as_deref(),
            iap.router.as_deref(),
            jap.router.as_deref(),
            site.router.as_deref(),
        ) else {
            bail!("the client, the proxies and the site must all hang off routers");
        };
        if ri != rc {
            bail!(
                "the IAP {} hangs off {ri}, not off the client's router {rc}",
                iap.name
            );
        }
        if rs != rj {
            bail!(
                "the site {} hangs off {rs}, not off the JAP's router {rj}",
                site.name
            );
        }
        let (rc, rj) = (
            plan.node(rc).context("client router")?,
            plan.node(rj).context("JAP router")?,
        );
        let o = client.addr4().octets();
        let from = std::net::Ipv4Addr::new(o[0], o[1], o[2], 3);
        let mut sp = SamePath {
            from,
            undo: Vec::new(),
            sysctls: Vec::new(),
        };
        if let Err(e) = sp.apply(client, iap, jap, rc, rj) {
            sp.down();
            return Err(e);
        }
        Ok(sp)
    }

    fn apply(
        &mut self,
        client: &super::topo::Node,
        iap: &super::topo::Node,
        jap: &super::topo::Node,
        rc: &super::topo::Node,
        rj: &super::topo::Node,
    ) -> Result<()> {
        let from = self.from.to_string();
        let slot = client.index;
        let pref = |i: u32| (1000 + 10 * slot + i).to_string();
        // Table t_jap on the JAP's router sends to the JAP proxy, t_iap on the client's router to the IAP.
        let (t_jap, t_iap) = ((1000 + 2 * slot).to_string(), (1001 + 2 * slot).to_string());
        let ip = |me: &mut Self, ns: &str, add: &[&str], del: &[&str]| -> Result<()> {
            let mut a = vec!["-n", ns];
            a.extend_from_slice(add);
            run("ip", &a)?;
            let mut d: Vec<String> = vec!["-n".into(), ns.into()];
            d.extend(del.iter().map(|s| s.to_string()));
            me.undo.push(d);
            Ok(())
        };
        let client_if = &client.ifaces[0].name;
        let cidr = format!("{from}/24");
        ip(
            self,
            &client.ns,
            &["addr", "add", &cidr, "dev", client_if],
            &["addr", "del", &cidr, "dev", client_if],
        )?;
        // The client's router: packets from the second address arriving from the client go to the IAP
        // (when the JAP's router is the same router, before its own "from" rule below).
        let to_iap = iap.name != jap.name;
        if to_iap {
            let (p0, p2) = (pref(0), pref(2));
            if rc.name != rj.name {
                ip(
                    self,
                    &rc.ns,
                    &["rule", "add", "pref", &p0, "iif", &iap.name, "lookup", "main"],
                    &["rule", "del", "pref", &p0],
                )?;
            }
            ip(
                self,
                &rc.ns,
                &[
                    "rule",
                    "add",
                    "pref",
                    &p2,
                    "iif",
                    &client.name,
                    "from",
                    &from,
                    "lookup",
                    &t_iap,
                ],
                &["rule", "del", "pref", &p2],
            )?;
            let gw = iap.addr4().to_string();
            ip(
                self,
                &rc.ns,
                &[
                    "route", "add", "default", "via", &gw, "dev", &iap.name, "table", &t_iap,
                ],
                &["route", "del", "default", "table", &t_iap],
            )?;
        }
        // The JAP's router: everything back from the JAP takes the main table; from or to the second
        // address (from the client's side, from the IAP, from the site) goes to the JAP.
        let (p1, p3, p4) = (pref(1), pref(3), pref(4));
        ip(
            self,
            &rj.ns,
            &["rule", "add", "pref", &p1, "iif", &jap.name, "lookup", "main"],
            &["rule", "del", "pref", &p1],
        )?;
        ip(
            self,
            &rj.ns,
            &["rule", "add", "pref", &p3, "from", &from, "lookup", &t_jap],
            &["rule", "del", "pref", &p3],
        )?;
        ip(
            self,
            &rj.ns,
            &["rule", "add", "pref", &p4, "to", &from, "lookup", &t_jap],
            &["rule", "del", "pref", &p4],
        )?;
        let gw = jap.addr4().to_string();
        ip(
            self,
            &rj.ns,
            &[
                "route", "add", "default", "via", &gw, "dev", &jap.name, "table", &t_jap,
            ],
            &["route", "del", "default", "table", &t_jap],
        )?;
        // The proxies send forwarded packets back out the interface they came in on: no ICMP redirects.
        let mut proxies = vec![jap];
        if to_iap {
            proxies.push(iap);
        }
        for p in proxies {
            for key in [
                "net/ipv4/conf/all/send_redirects".to_owned(),
                format!("net/ipv4/conf/{}/send_redirects", p.ifaces[0].name),
            ] {
                let old = ns_run(&p.ns, &["cat", &format!("/proc/sys/{key}")])?;
                self.sysctls
                    .push((p.ns.clone(), key.clone(), old.trim().to_owned()));
                set_sysctls(&p.ns, &[(&key, "0")])?;
            }
        }
        Ok(())
    }

    /// Removes the rules, routes and address and restores the proxies' sysctls (best effort: the first
    /// failure is printed, the rest still runs).
    pub(crate) fn down(&mut self) {
        let mut first = None;
        for d in self.undo.drain(..).rev() {
            let a: Vec<&str> = d.iter().map(String::as_str).collect();
            if let Err(e) = run("ip", &a) {
                first.get_or_insert(e);
            }
        }
        for (ns, key, v) in self.sysctls.drain(..).rev() {
            if let Err(e) = set_sysctls(&ns, &[(&key, &v)]) {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            println!("  (cleaning up the same-path routing: {e:#})");
        }
    }
}
