//! BIRD 2 configuration, for `routing = "ospf"` ([`config`] → OSPF) or `"bgp"` ([`bgp_config`]).
//!
//! OSPF: OSPFv2 (IPv4) and OSPFv3 (IPv6) with hello 1 s / dead 3 s on every router and proxy.
//!
//! Routers export every OSPF route (intra-area and external, `RTS_OSPF_EXT1/2`) to the kernel. A proxy learns the
//! kernel routes into its TUN (`learn`) for the anycast prefixes and its NAT pool, with preference 200 (above
//! OSPF's, so it keeps announcing its own route while it hears the others), and exports exactly those into OSPF
//! as type-1 externals, so the cost to a proxy adds up along the path: "nearest" is what the link costs say.
//! When the proxy process exits, its TUN and the routes vanish, BIRD withdraws them, and the routers move on.

use std::fmt::Write as _;

use super::topo::{Kind, Node, Plan, Rel, Routing};

const OSPF_ROUTES: &str = "[RTS_OSPF, RTS_OSPF_IA, RTS_OSPF_EXT1, RTS_OSPF_EXT2]";

/// The config file for one router or proxy node; `log` is the log file path.
pub(crate) fn config(plan: &Plan, node: &Node, log: &str) -> String {
    if plan.routing() == Routing::Bgp {
        return bgp_config(plan, node, log);
    }
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# written by `pias lab up` for {} ({:?})",
        node.name, node.kind
    );
    let _ = writeln!(c, "router id {};", node.router_id);
    let _ = writeln!(
        c,
        "log \"{log}\" {{ info, remote, warning, error, auth, fatal, bug }};"
    );
    let _ = writeln!(c, "protocol device {{ scan time 5; }}");
    let proxy = node.kind == Kind::Proxy;
    let (own4, own6) = if proxy {
        (
            format!("[ {}+, {}+ ]", plan.topo.anycast4, node.pool4_prefix()),
            format!("[ {}+, {}+ ]", plan.topo.anycast6, node.pool6_prefix()),
        )
    } else {
        (String::new(), String::new())
    };
    for (v, own, any) in [
        ("4", &own4, &plan.topo.anycast4),
        ("6", &own6, &plan.topo.anycast6),
    ] {
        let _ = writeln!(c, "protocol kernel kernel{v} {{");
        if proxy {
            let _ = writeln!(c, "  learn;\n  scan time 2;");
            let _ = writeln!(c, "  ipv{v} {{");
            let _ = writeln!(c, "    preference 200;");
            let _ = writeln!(c, "    import filter {{ if net ~ {own} then accept; reject; }};");
            let _ = writeln!(
                c,
                "    export filter {{ if net ~ [ {any}+ ] then reject; if source ~ {OSPF_ROUTES} then accept; reject; }};"
            );
        } else {
            let _ = writeln!(c, "  scan time 10;");
            let _ = writeln!(c, "  ipv{v} {{");
            let _ = writeln!(c, "    import none;");
            let _ = writeln!(
                c,
                "    export filter {{ if source ~ {OSPF_ROUTES} then accept; reject; }};"
            );
        }
        let _ = writeln!(c, "  }};\n  merge paths on;\n}}");
    }
    for (v, ver, own) in [("4", "v2", &own4), ("6", "v3", &own6)] {
        let _ = writeln!(c, "protocol ospf {ver} ospf{v} {{");
        let _ = writeln!(c, "  ecmp yes;");
        let _ = writeln!(c, "  ipv{v} {{");
        let _ = writeln!(c, "    import all;");
        if proxy {
            let _ = writeln!(
                c,
                "    export filter {{ if source = RTS_INHERIT && net ~ {own} then {{ ospf_metric1 = 1; accept; }} reject; }};"
            );
        } else {
            let _ = writeln!(c, "    export none;");
        }
        let _ = writeln!(c, "  }};\n  area 0 {{");
        for i in &node.ifaces {
            if i.stub {
                let _ = writeln!(c, "    interface \"{}\" {{ stub yes; }};", i.name);
            } else {
                let _ = writeln!(
                    c,
                    "    interface \"{}\" {{ type ptp; cost {}; hello 1; dead 3; retransmit 2; }};",
                    i.name, i.cost
                );
            }
        }
        let _ = writeln!(c, "  }};\n}}");
    }
    c
}

/// BGP timers: a keepalive every second and a hold time of 3 s (BIRD's minimum), so a silent neighbour is
/// declared dead in 3 s, as OSPF's dead interval; retries after 1 s, so a restarted proxy is back at once
/// (BIRD's defaults wait 5 s to connect and 60 s after an error). No graceful restart: a neighbour that
/// goes away takes its routes with it.
const BGP_TIMERS: &str = "hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
                          error wait time 1, 3; graceful restart off;";

/// BGP (`routing = "bgp"`): every router is an AS of its own; every proxy an AS too, a customer of its
/// router's. Each link carries two eBGP sessions (IPv4 over the IPv4 addresses, IPv6 over the IPv6 ones).
///
/// Routers originate their connected networks (links and attachments, `protocol direct`) so the underlay is
/// reachable, and apply Gao-Rexford policy from the links' `rel`: local preference customer 200 > peer 150 >
/// provider 100 on import; on export, their own networks and customer routes go to everyone, routes from
/// peers and providers only to customers (valley-free). From a proxy a router accepts only the anycast
/// prefixes and that proxy's NAT pool. Best paths only (no `merge paths`): BGP picks one exit per prefix.
///
/// A proxy learns its kernel routes into its TUN exactly as under OSPF (`learn`, preference 200, only the
/// anycast prefixes and its NAT pool) and announces exactly those: when the proxy removes one, or its TUN
/// goes with its process, BIRD withdraws it by an UPDATE at once; only a proxy whose BIRD falls silent too
/// (a dead host) waits for the router's hold timer. The proxy installs what its router sends it except the
/// anycast prefixes and its own pool.
pub(crate) fn bgp_config(plan: &Plan, node: &Node, log: &str) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# written by `pias lab up` for {} ({:?}, AS {})",
        node.name,
        node.kind,
        node.asn.unwrap_or(0)
    );
    let _ = writeln!(c, "router id {};", node.router_id);
    let _ = writeln!(
        c,
        "log \"{log}\" {{ info, remote, warning, error, auth, fatal, bug }};"
    );
    let _ = writeln!(c, "protocol device {{ scan time 5; }}");
    let proxy = node.kind == Kind::Proxy;
    let own = |v: &str, pool: String| {
        let any = if v == "4" {
            &plan.topo.anycast4
        } else {
            &plan.topo.anycast6
        };
        format!("[ {any}+, {pool}+ ]")
    };
    if proxy {
        // Its own link's prefix, which its router announces too, must stay the kernel's connected route:
        // installed via the router (IPv6 connected routes have metric 256, BIRD's 32), the router's
        // address would resolve through itself and every other route fail with "No route to host".
        let _ = writeln!(
            c,
            "protocol direct {{ ipv4; ipv6; interface \"{}\"; }}",
            node.ifaces[0].name
        );
    } else {
        let _ = writeln!(c, "protocol direct {{ ipv4; ipv6; }}");
    }
    for v in ["4", "6"] {
        let _ = writeln!(c, "protocol kernel kernel{v} {{");
        if proxy {
            let mine = own(v, pool(node, v));
            let _ = writeln!(c, "  learn;\n  scan time 2;\n  ipv{v} {{");
            let _ = writeln!(c, "    preference 200;");
            let _ = writeln!(c, "    import filter {{ if net ~ {mine} then accept; reject; }};");
        } else {
            let _ = writeln!(c, "  scan time 10;\n  ipv{v} {{\n    import none;");
        }
        let _ = writeln!(
            c,
            "    export filter {{ if source = RTS_BGP then accept; reject; }};\n  }};\n}}"
        );
    }
    let lab = |v: &str| {
        if v == "4" {
            "[ 10.0.0.0/8+ ]"
        } else {
            "[ fd00::/8+ ]"
        }
    };
    for i in &node.ifaces {
        let Some(rel) = i.rel else { continue };
        let Some(peer) = plan.node(&i.name) else {
            continue;
        };
        let (Some(me), Some(them)) = (node.asn, peer.asn) else {
            continue;
        };
        let far = &peer.ifaces.iter().find(|x| x.name == node.name);
        let Some(far) = far else { continue };
        for v in ["4", "6"] {
            let (local, neighbor) = if v == "4" {
                (i.v4.to_string(), far.v4.to_string())
            } else {
                (i.v6.to_string(), far.v6.to_string())
            };
            let (import, export) = if proxy {
                (
                    format!("if net ~ {} then reject; accept;", own(v, pool(node, v))),
                    format!(
                        "if source = RTS_INHERIT && net ~ {} then accept; reject;",
                        own(v, pool(node, v))
                    ),
                )
            } else {
                let lp = rel.local_pref();
                let import = if peer.kind == Kind::Proxy {
                    format!(
                        "if net ~ {} then {{ bgp_local_pref = {lp}; accept; }} reject;",
                        own(v, pool(peer, v))
                    )
                } else {
                    format!("bgp_local_pref = {lp}; accept;")
                };
                let learned = if rel == Rel::Customer {
                    "accept;".to_owned()
                } else {
                    // Valley-free: to a peer or provider, only what our customers pay us to carry.
                    format!("if bgp_local_pref = {} then accept;", Rel::Customer.local_pref())
                };
                let export = format!(
                    "if source = RTS_DEVICE then {{ if net ~ {} then accept; reject; }} if source = RTS_BGP then {{ {learned} }} reject;",
                    lab(v)
                );
                (import, export)
            };
            let _ = writeln!(c, "protocol bgp bgp{v}_{} {{", i.name);
            let _ = writeln!(c, "  description \"{} {:?}: AS {them}\";", i.name, rel);
            let _ = writeln!(c, "  local {local} as {me};\n  neighbor {neighbor} as {them};");
            let _ = writeln!(c, "  {BGP_TIMERS}");
            let _ = writeln!(c, "  ipv{v} {{");
            let _ = writeln!(c, "    import filter {{ {import} }};");
            let _ = writeln!(c, "    export filter {{ {export} }};");
            let _ = writeln!(c, "  }};\n}}");
        }
    }
    c
}

fn pool(n: &Node, v: &str) -> String {
    if v == "4" {
        n.pool4_prefix()
    } else {
        n.pool6_prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::topo::Topology;

    fn conf(node: &str) -> String {
        let p = Topology::load(None, Some(Routing::Bgp)).unwrap().plan().unwrap();
        config(&p, p.node(node).unwrap(), "/tmp/x.log")
    }

    /// The policy the BGP lab promises, in the text BIRD gets: two sessions per link, local preference by
    /// relationship, valley-free export, a proxy's announcements limited to what its kernel routes into
    /// its TUN.
    #[test]
    fn bgp_policy() {
        let r7 = conf("r7");
        assert!(r7.contains("protocol bgp bgp4_r4 {") && r7.contains("protocol bgp bgp6_r5 {"));
        assert!(r7.contains("local 10.0.6.2 as 65103;\n  neighbor 10.0.6.1 as 65010;"));
        assert!(r7.contains("bgp_local_pref = 100; accept;"), "providers: {r7}");
        assert_eq!(
            r7.matches("if bgp_local_pref = 200 then accept;").count(),
            4,
            "{r7}"
        );
        assert!(r7.contains("hold time 3; keepalive time 1;"));
        assert!(!r7.contains("ospf"));
        let r1 = conf("r1");
        assert!(r1.contains("bgp_local_pref = 150;"), "peer r2");
        assert!(
            r1.contains(
                "if net ~ [ 10.99.0.0/24+, 10.98.1.0/24+ ] then { bgp_local_pref = 200; accept; } reject;"
            ),
            "from p1: {r1}"
        );
        let p3 = conf("p3");
        assert!(p3.contains("local 10.1.3.2 as 64603;\n  neighbor 10.1.3.1 as 65101;"));
        assert!(p3.contains("learn;"));
        assert!(p3.contains(
            "export filter { if source = RTS_INHERIT && net ~ [ fd99::/64+, fd98:3::/64+ ] then accept; reject; };"
        ));
        assert!(p3.contains("protocol direct { ipv4; ipv6; interface \"r3\"; }"));
        let c = Topology::load(None, Some(Routing::Ospf)).unwrap().plan().unwrap();
        let o = config(&c, c.node("r1").unwrap(), "/tmp/x.log");
        assert!(o.contains("protocol ospf v2") && !o.contains("protocol bgp"));
    }
}
