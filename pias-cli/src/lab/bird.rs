//! BIRD 2 configuration: OSPFv2 (IPv4) and OSPFv3 (IPv6) with hello 1 s / dead 3 s on every router and proxy.
//!
//! Routers export every OSPF route (intra-area and external, `RTS_OSPF_EXT1/2`) to the kernel. A proxy learns the
//! kernel routes into its TUN (`learn`) for the anycast prefixes and its NAT pool, with preference 200 (above
//! OSPF's, so it keeps announcing its own route while it hears the others), and exports exactly those into OSPF
//! as type-1 externals, so the cost to a proxy adds up along the path: "nearest" is what the link costs say.
//! When the proxy process exits, its TUN and the routes vanish, BIRD withdraws them, and the routers move on.

use std::fmt::Write as _;

use super::topo::{Kind, Node, Plan};

const OSPF_ROUTES: &str = "[RTS_OSPF, RTS_OSPF_IA, RTS_OSPF_EXT1, RTS_OSPF_EXT2]";

/// The config file for one router or proxy node; `log` is the log file path.
pub(crate) fn config(plan: &Plan, node: &Node, log: &str) -> String {
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
