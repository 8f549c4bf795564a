//! Host setup around the TUN: link up and MTU, routes into it, and the sysctls forwarding needs.
//!
//! Routes and link state are set with the `ip` tool (iproute2) through [`std::process::Command`], once at
//! start: the driver runs as root in the lab and on proxies, `ip` is on every such host, its commands are the
//! ones an operator types to check (`ip route show dev pias0`), and a netlink library would add a large
//! dependency for six commands run once. Every route is `replace`d, so a restart over a leftover route works.
//! No teardown is needed: the TUN is not persistent, and when the process exits the kernel deletes it and
//! every route through it — which is what withdraws the proxy from routing. A graceful leave withdraws
//! earlier ([`HostSetup::withdraw`], SPEC.md §7.6): the anycast routes leave the `main` table at the start of
//! the drain, so a routing daemon that redistributes them (the lab's BIRD does) moves clients and
//! re-registering targets to other proxies, while a copy in the `local` table keeps delivering what still
//! arrives; the NAT pool routes stay until exit. A proxy that is running but cannot serve withdraws the same
//! way, and announces again with [`HostSetup::announce`] (the health-gated announcement, SPEC.md §7.7).
//!
//! Sysctls (when enabled): `net.ipv4.ip_forward=1` (client packets arrive on a host interface and leave
//! into the TUN; the JAP's packets to targets leave the TUN towards a host interface), and
//! `net.ipv6.conf.all.forwarding=1` when an IPv6 prefix is routed; `rp_filter=2` (loose) on the TUN, since
//! packets written into it carry sources (clients, the group address) that strict reverse-path filtering
//! may reject. The kernel applies max(`conf.all.rp_filter`, `conf.<if>.rp_filter`), so loose on the TUN holds
//! even when `all` is strict. Interfaces on the *reverse* path (where the JAP's replies, whose source is the
//! anycast group address, enter another proxy host) need loose or no rp_filter too; that is the
//! operator's (or the lab's) setting, not this process's.

use core::net::IpAddr;
use std::io;
use std::process::Command;

/// An IP prefix `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// A host route for one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl core::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: not an IP prefix (write e.g. 10.99.0.0/24 or fd99::/64)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Prefix { addr, len })
    }
}

/// What to set up around the TUN.
#[derive(Debug, Clone)]
pub struct HostSetup {
    pub tun: String,
    pub mtu: u16,
    /// Routed into the TUN and shared by every proxy: the anycast prefixes and the registration addresses.
    /// Withdrawn when the proxy starts leaving.
    pub anycast: Vec<Prefix>,
    /// Routed into the TUN and this proxy's own: its NAT pool addresses. Kept until the process exits.
    pub pool: Vec<Prefix>,
    /// Set the forwarding and rp_filter sysctls (see the module documentation).
    pub sysctls: bool,
}

impl HostSetup {
    /// Brings the TUN up with its MTU, writes the sysctls, installs the routes.
    pub fn apply(&self) -> io::Result<()> {
        let mtu = self.mtu.to_string();
        ip(&["link", "set", "dev", &self.tun, "mtu", &mtu, "up"])?;
        if self.sysctls {
            sysctl("net/ipv4/ip_forward", "1")?;
            sysctl(&format!("net/ipv4/conf/{}/rp_filter", self.tun), "2")?;
            if self.routes().any(|p| p.addr.is_ipv6()) {
                sysctl("net/ipv6/conf/all/forwarding", "1")?;
            }
        }
        for p in self.routes() {
            ip(&[family(p), "route", "replace", &p.to_string(), "dev", &self.tun])?;
            tracing::info!(route = %p, dev = %self.tun, "route installed");
        }
        Ok(())
    }

    /// Every route [`HostSetup::apply`] installs: the anycast ones, then the pool.
    pub fn routes(&self) -> impl Iterator<Item = &Prefix> + '_ {
        self.anycast.iter().chain(&self.pool)
    }

    /// Withdraws the anycast routes (the start of a graceful leave) without dropping what still arrives:
    /// each route is first copied into the kernel's `local` table (looked up before `main` by the default
    /// rule, and not a table routing daemons redistribute), then deleted from `main`. The routing daemon
    /// sees the deletion and withdraws the prefix; packets routers still send here while that converges are
    /// still delivered into the TUN, and the proxy, still running, forwards them. The copies go with the TUN
    /// when the process exits. Each failure is logged and the rest are still tried (a route an operator
    /// already removed by hand is not a reason to keep the others). Returns how many were withdrawn.
    /// Blocking: two `ip` runs per route, a few milliseconds each, once per process.
    pub fn withdraw(&self) -> usize {
        let mut n = 0;
        for p in &self.anycast {
            let (fam, net) = (family(p), p.to_string());
            if let Err(e) = ip(&[fam, "route", "replace", &net, "dev", &self.tun, "table", "local"]) {
                tracing::warn!(route = %p, error = %e, "no local copy: packets arriving while routing converges will not reach the TUN");
            }
            match ip(&[fam, "route", "del", &net, "dev", &self.tun, "table", "main"]) {
                Ok(()) => {
                    n += 1;
                    tracing::info!(route = %p, dev = %self.tun, "route withdrawn (kept in table local until exit)");
                }
                Err(e) => tracing::warn!(route = %p, error = %e, "route not withdrawn"),
            }
        }
        n
    }
}

impl HostSetup {
    /// Announces the anycast routes again after [`HostSetup::withdraw`]: each goes back into `main` (the
    /// routing daemon sees it and announces the prefix), then its copy leaves `local`. Failures are logged
    /// and the rest still tried. Returns how many are in `main` again. Blocking, like `withdraw`.
    pub fn announce(&self) -> usize {
        let mut n = 0;
        for p in &self.anycast {
            let (fam, net) = (family(p), p.to_string());
            match ip(&[fam, "route", "replace", &net, "dev", &self.tun]) {
                Ok(()) => {
                    n += 1;
                    tracing::info!(route = %p, dev = %self.tun, "route announced");
                }
                Err(e) => tracing::warn!(route = %p, error = %e, "route not announced"),
            }
            // No copy (withdraw could not make one) is fine: nothing to remove.
            let _ = ip(&[fam, "route", "del", &net, "dev", &self.tun, "table", "local"]);
        }
        n
    }
}

fn family(p: &Prefix) -> &'static str {
    if p.addr.is_ipv4() { "-4" } else { "-6" }
}

/// Runs `ip ARGS`; the error carries the command and its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (install iproute2): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Writes `/proc/sys/<key>`.
fn sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {path} = {value}: {e}")))?;
    tracing::debug!(%path, %value, "sysctl set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_print() {
        let p: Prefix = "10.99.0.0/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.99.0.0/24");
        let h: Prefix = "fd99::1".parse().unwrap();
        assert_eq!(h.len, 128);
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("nope/8".parse::<Prefix>().is_err());
        assert_eq!(
            Prefix::host("10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1/32"
        );
    }
}
