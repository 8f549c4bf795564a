//! The lab's topology: a small TOML description (with a built-in default) and the plan derived from it —
//! namespaces, veth links, addresses, OSPF costs, proxies, target sites and groups.
//!
//! Routing (`routing = "ospf"`, the default, or `"bgp"`): with OSPF the routers form one domain (link costs
//! decide "nearest"); with BGP every router is its own AS (`asn`), the links carry eBGP sessions whose `rel`
//! (`"customer"`: `b` buys transit from `a`; `"peer"`: settlement-free) gives Gao-Rexford policy, and every
//! proxy is a customer of its router's AS with its own private ASN (`64600 + N` unless given).
//!
//! Addressing (derived, so a topology file names only nodes and costs):
//! - router–router link `k` (1-based, in file order): `10.0.k.0/24`, `fd00:k::/64`; side `a` is `.1`, `b` is `.2`;
//! - the attachment of node `n` (proxies, then clients, then sites, 1-based) to its router: `10.1.n.0/24`,
//!   `fd01:n::/64`; the router is `.1`, the node `.2`;
//! - proxy `j`: overlay address = its attachment address, NAT pool `10.98.j.1` and `fd98:j::1` (prefixes
//!   `10.98.j.0/24`, `fd98:j::/64`, routed into its TUN and announced (OSPF or BGP) with the anycast prefixes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The built-in OSPF topology (`pias lab up --routing ospf`).
pub(crate) const DEFAULT_TOML: &str = r#"# PIAS lab OSPF topology: three ISPs in a line, r1 -- r2 -- r3 (cost 10 per hop).
# Each ISP router has a client (cN) and a proxy (pN) attached; target sites t1 (at r1) and t3 (at r3).
name = "pias"
driver = "tokio"   # or "mio": the user-space driver of every proxy and target agent; or "xdp" (proxies: XDP fast path on their router-facing veth, slow path tokio; agents: tokio); or "xdp-tc" (the same program at the veth's TC ingress)
routing = "ospf"   # or "bgp" (then every router needs an asn; see `pias lab topology --routing bgp`)
anycast4 = "10.99.0.0/24"
anycast6 = "fd99::/64"
registration4 = "10.99.0.1"
registration6 = "fd99::1"
routers = ["r1", "r2", "r3"]
links = [
  { a = "r1", b = "r2", cost = 10 },
  { a = "r2", b = "r3", cost = 10 },
]
proxies = [
  { name = "p1", router = "r1", cost = 10 },
  { name = "p2", router = "r2", cost = 10 },
  { name = "p3", router = "r3", cost = 10 },
]
clients = [
  { name = "c1", router = "r1" },
  { name = "c2", router = "r2" },
  { name = "c3", router = "r3" },
]
sites = [
  { name = "t1", router = "r1" },
  { name = "t3", router = "r3" },
]
# service: dns (dnsmasq :53), http (python3 http.server :80), iperf (iperf3 :5201), echo (pias lab udp-echo :7).
groups = [
  { addr = "10.99.0.53:53/udp", service = "dns", exclude_sender = true },
  { addr = "[fd99::53]:53/udp", service = "dns" },
  { addr = "10.99.0.80:80/tcp", service = "http", policy = "affinity" },
  { addr = "10.99.0.52:5201/tcp", service = "iperf", sites = ["t1"] },
  { addr = "10.99.0.52:5201/udp", service = "iperf", sites = ["t1"] },
  { addr = "10.99.0.7:7/udp", service = "echo", sites = ["t1"] },
]
"#;

/// The built-in BGP topology (`pias lab up --routing bgp`): a small Internet of seven ASes, one router each.
/// Node names, the link r1--r2 (link 1) and the places of p1..p3, c1..c3, t1 and t3 are those of the OSPF
/// topology, so every lab test runs on both.
pub(crate) const BGP_TOML: &str = r#"# PIAS lab BGP topology: seven ASes, one router each, eBGP between them (Gao-Rexford policy).
#
#          AS65001 r1 ===peer=== r2 AS65002          tier-1 pair; p1, c1, t1 at r1; p2, c2 at r2
#               |                  |
#          AS65010 r4            r5 AS65020          transit (customers of one tier-1 each); c4, c5
#             /     \            /     \
#   AS65101 r3       r7 AS65103       r6 AS65102     stubs; r7 is multi-homed (customer of r4 and r5)
#   p3, c3, t3          c7                  c6
#
# Every proxy is a customer of its router's AS with its own private ASN (64600 + N), so the anycast prefix
# has three origin ASes; r7 hears it from both its providers. Local preference: customer 200 > peer 150 >
# provider 100; routes from peers and providers are exported only to customers. Timers: keepalive 1 s,
# hold 3 s.
name = "pias"
driver = "tokio"   # or "mio", "xdp", "xdp-tc" (see `pias lab topology --routing ospf`)
routing = "bgp"
anycast4 = "10.99.0.0/24"
anycast6 = "fd99::/64"
registration4 = "10.99.0.1"
registration6 = "fd99::1"
routers = [
  { name = "r1", asn = 65001 },
  { name = "r2", asn = 65002 },
  { name = "r3", asn = 65101 },
  { name = "r4", asn = 65010 },
  { name = "r5", asn = 65020 },
  { name = "r6", asn = 65102 },
  { name = "r7", asn = 65103 },
]
# rel = "customer": b is a customer of a; rel = "peer": settlement-free peers.
links = [
  { a = "r1", b = "r2", rel = "peer" },
  { a = "r1", b = "r4", rel = "customer" },
  { a = "r2", b = "r5", rel = "customer" },
  { a = "r4", b = "r3", rel = "customer" },
  { a = "r5", b = "r6", rel = "customer" },
  { a = "r4", b = "r7", rel = "customer" },
  { a = "r5", b = "r7", rel = "customer" },
]
proxies = [
  { name = "p1", router = "r1" },
  { name = "p2", router = "r2" },
  { name = "p3", router = "r3" },
]
clients = [
  { name = "c1", router = "r1" },
  { name = "c2", router = "r2" },
  { name = "c3", router = "r3" },
  { name = "c4", router = "r4" },
  { name = "c5", router = "r5" },
  { name = "c6", router = "r6" },
  { name = "c7", router = "r7" },
]
sites = [
  { name = "t1", router = "r1" },
  { name = "t3", router = "r3" },
]
groups = [
  { addr = "10.99.0.53:53/udp", service = "dns", exclude_sender = true },
  { addr = "[fd99::53]:53/udp", service = "dns" },
  { addr = "10.99.0.80:80/tcp", service = "http", policy = "affinity" },
  { addr = "10.99.0.52:5201/tcp", service = "iperf", sites = ["t1"] },
  { addr = "10.99.0.52:5201/udp", service = "iperf", sites = ["t1"] },
  { addr = "10.99.0.7:7/udp", service = "echo", sites = ["t1"] },
]
"#;

/// How the lab's routers route: one OSPF domain, or one AS per router speaking eBGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Routing {
    #[default]
    Ospf,
    Bgp,
}

impl Routing {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Routing::Ospf => "OSPF",
            Routing::Bgp => "BGP",
        }
    }
    /// The built-in lab of `pias lab` without `--routing` or `--topology` (`bench` excepted: its baselines
    /// and BENCHMARKS.md are the OSPF lab's). A topology *file* without `routing` is OSPF.
    pub(crate) const CLI_DEFAULT: Routing = Routing::Bgp;

    /// The built-in topology of this routing.
    pub(crate) fn builtin(self) -> &'static str {
        match self {
            Routing::Ospf => DEFAULT_TOML,
            Routing::Bgp => BGP_TOML,
        }
    }
}

/// The business relationship of a BGP link, seen from its `a` end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LinkRel {
    /// `b` is a customer of `a`.
    Customer,
    /// Settlement-free peers.
    #[default]
    Peer,
}

/// What the node at the other end of an interface is to this node (BGP policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rel {
    /// The other end buys transit from us: its routes are preferred and exported to everyone.
    Customer,
    Peer,
    /// We buy transit from the other end: its routes are the last resort and go only to our customers.
    Provider,
}

impl Rel {
    /// BGP local preference of routes learned over a session of this relationship.
    pub(crate) fn local_pref(self) -> u32 {
        match self {
            Rel::Customer => 200,
            Rel::Peer => 150,
            Rel::Provider => 100,
        }
    }
}

/// A router: a name (OSPF topologies) or a name and an AS number (BGP).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RouterSpec {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        asn: Option<u32>,
    },
}

impl RouterSpec {
    pub(crate) fn name(&self) -> &str {
        match self {
            RouterSpec::Name(n) | RouterSpec::Full { name: n, .. } => n,
        }
    }
    fn asn(&self) -> Option<u32> {
        match self {
            RouterSpec::Name(_) => None,
            RouterSpec::Full { asn, .. } => *asn,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Topology {
    /// Prefix of every namespace (`NAME-r1`, …) and of the lab directory.
    pub name: String,
    /// The user-space driver every `pias proxy` and `pias target` of the lab runs: "tokio" or "mio".
    #[serde(default = "default_driver")]
    pub driver: String,
    /// "ospf" (default) or "bgp".
    #[serde(default)]
    pub routing: Routing,
    pub anycast4: String,
    pub anycast6: String,
    pub registration4: Ipv4Addr,
    pub registration6: Ipv6Addr,
    pub routers: Vec<RouterSpec>,
    pub links: Vec<LinkSpec>,
    pub proxies: Vec<Attach>,
    pub clients: Vec<Attach>,
    pub sites: Vec<Attach>,
    pub groups: Vec<GroupSpec>,
}

fn default_driver() -> String {
    "tokio".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkSpec {
    pub a: String,
    pub b: String,
    #[serde(default = "default_cost")]
    pub cost: u32,
    /// BGP: the relationship of the two ASes (ignored by OSPF).
    #[serde(default)]
    pub rel: LinkRel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attach {
    pub name: String,
    pub router: String,
    #[serde(default = "default_cost")]
    pub cost: u32,
    /// BGP, proxies only: the proxy's own AS number (default 64600 + its number).
    #[serde(default)]
    pub asn: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSpec {
    /// `IP:PORT/udp` or `[IPv6]:PORT/tcp`.
    pub addr: String,
    pub service: Service,
    /// Sites serving the group (default: all).
    #[serde(default)]
    pub sites: Option<Vec<String>>,
    /// RAP policy (proximity, load, affinity, random); default proximity.
    #[serde(default)]
    pub policy: Option<String>,
    /// A target that is also a client of the group is not sent its own packets.
    #[serde(default)]
    pub exclude_sender: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Service {
    Dns,
    Http,
    Iperf,
    Echo,
}

impl Service {
    pub(crate) fn port(self) -> u16 {
        match self {
            Service::Dns => 53,
            Service::Http => 80,
            Service::Iperf => 5201,
            Service::Echo => 7,
        }
    }
}

fn default_cost() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Router,
    Proxy,
    Client,
    Site,
}

/// One end of a veth link, inside a node's namespace. The interface is named after the peer node.
#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub name: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub cost: u32,
    /// A link to a client or site: OSPF stub on the router side.
    pub stub: bool,
    /// BGP: what the node at the other end is to this one (`None`: no session, a client or site).
    pub rel: Option<Rel>,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: String,
    pub kind: Kind,
    pub ns: String,
    pub router_id: Ipv4Addr,
    pub ifaces: Vec<Iface>,
    /// Proxies: 1-based proxy number (also the proxy id); sites and clients: 1-based number of their kind.
    pub index: u32,
    /// The router a proxy, client or site hangs off.
    pub router: Option<String>,
    /// BGP: the AS of a router or proxy.
    pub asn: Option<u32>,
}

impl Node {
    /// The node's own address on its (first) link.
    pub(crate) fn addr4(&self) -> Ipv4Addr {
        self.ifaces[0].v4
    }
    pub(crate) fn addr6(&self) -> Ipv6Addr {
        self.ifaces[0].v6
    }
    /// The router's address on this node's link (its default gateway).
    pub(crate) fn gw4(&self) -> Ipv4Addr {
        let o = self.addr4().octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    }
    pub(crate) fn gw6(&self) -> Ipv6Addr {
        let s = self.addr6().segments();
        Ipv6Addr::new(s[0], s[1], 0, 0, 0, 0, 0, 1)
    }
    pub(crate) fn pool4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.index as u8, 1)
    }
    pub(crate) fn pool6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd98, self.index as u16, 0, 0, 0, 0, 0, 1)
    }
    pub(crate) fn pool4_prefix(&self) -> String {
        format!("10.98.{}.0/24", self.index)
    }
    pub(crate) fn pool6_prefix(&self) -> String {
        format!("fd98:{:x}::/64", self.index)
    }
}

/// A group with its parsed address and the sites that serve it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub spec: String,
    pub addr: SocketAddr,
    pub udp: bool,
    pub service: Service,
    pub sites: Vec<String>,
    pub policy: Option<String>,
    pub exclude_sender: bool,
}

impl Group {
    pub(crate) fn proto(&self) -> &'static str {
        if self.udp { "udp" } else { "tcp" }
    }
    /// A file-name-safe tag: `10.99.0.53-53-udp`.
    pub(crate) fn tag(&self) -> String {
        format!("{}-{}-{}", self.addr.ip(), self.addr.port(), self.proto()).replace(':', "_")
    }
}

/// The topology with every address worked out.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub topo: Topology,
    pub nodes: Vec<Node>,
    pub groups: Vec<Group>,
    /// Inter-router links and attachments: (node a, iface in a, node b, iface in b).
    pub links: Vec<(String, String, String, String)>,
}

pub(crate) fn parse_group(s: &str) -> Result<(SocketAddr, bool)> {
    let (a, p) = s
        .rsplit_once('/')
        .with_context(|| format!("group {s:?}: expected ADDR:PORT/udp or /tcp"))?;
    let udp = match p {
        "udp" => true,
        "tcp" => false,
        _ => bail!("group {s:?}: protocol must be udp or tcp"),
    };
    let addr: SocketAddr = a
        .parse()
        .with_context(|| format!("group {s:?}: bad address (IPv6 needs [brackets])"))?;
    Ok((addr, udp))
}

impl Topology {
    /// The topology in `path`, or the built-in one of `routing` ([`Routing::CLI_DEFAULT`]'s without it). A
    /// `routing` given with a file overrides the file's own.
    pub(crate) fn load(path: Option<&Path>, routing: Option<Routing>) -> Result<Topology> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            None => routing.unwrap_or(Routing::CLI_DEFAULT).builtin().to_owned(),
        };
        let mut t: Topology = toml::from_str(&text).context("topology TOML")?;
        if let Some(r) = routing {
            t.routing = r;
        }
        Ok(t)
    }

    pub(crate) fn plan(&self) -> Result<Plan> {
        let mut nodes: Vec<Node> = Vec::new();
        if self.name.is_empty()
            || self.name.len() > 8
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            bail!("name: use 1-8 letters or digits (it prefixes every namespace)");
        }
        if !matches!(self.driver.as_str(), "tokio" | "mio" | "xdp" | "xdp-tc") {
            bail!(
                "driver: {:?} is not a driver of the lab; use \"tokio\", \"mio\", \"xdp\" or \"xdp-tc\"",
                self.driver
            );
        }
        let bgp = self.routing == Routing::Bgp;
        for (i, r) in self.routers.iter().enumerate() {
            let asn = r.asn();
            if bgp {
                let Some(a) = asn else {
                    bail!("routers: {} needs an asn with routing = \"bgp\"", r.name());
                };
                if self.routers[..i].iter().any(|o| o.asn() == Some(a)) {
                    bail!("routers: AS {a} has two routers; the BGP lab runs one router per AS (no iBGP)");
                }
            }
            nodes.push(Node {
                name: r.name().to_owned(),
                kind: Kind::Router,
                ns: format!("{}-{}", self.name, r.name()),
                router_id: Ipv4Addr::new(10, 255, 0, i as u8 + 1),
                ifaces: Vec::new(),
                index: i as u32 + 1,
                router: None,
                asn,
            });
        }
        let mut links = Vec::new();
        let find = |nodes: &Vec<Node>, n: &str| nodes.iter().position(|x| x.name == n);
        for (k, l) in self.links.iter().enumerate() {
            let k = k as u8 + 1;
            let (Some(a), Some(b)) = (find(&nodes, &l.a), find(&nodes, &l.b)) else {
                bail!("links: {}--{} names an unknown router", l.a, l.b);
            };
            let (rel_a, rel_b) = match l.rel {
                LinkRel::Customer => (Rel::Customer, Rel::Provider),
                LinkRel::Peer => (Rel::Peer, Rel::Peer),
            };
            for (me, peer, host, rel) in [(a, &l.b, 1u8, rel_a), (b, &l.a, 2u8, rel_b)] {
                nodes[me].ifaces.push(Iface {
                    name: peer.clone(),
                    v4: Ipv4Addr::new(10, 0, k, host),
                    v6: Ipv6Addr::new(0xfd00, k as u16, 0, 0, 0, 0, 0, host as u16),
                    cost: l.cost,
                    stub: false,
                    rel: bgp.then_some(rel),
                });
            }
            links.push((l.a.clone(), l.b.clone(), l.b.clone(), l.a.clone()));
        }
        let mut n = 0u8;
        for (kind, list) in [
            (Kind::Proxy, &self.proxies),
            (Kind::Client, &self.clients),
            (Kind::Site, &self.sites),
        ] {
            for (i, at) in list.iter().enumerate() {
                n += 1;
                let Some(r) = find(&nodes, &at.router) else {
                    bail!("{}: router {} is not in routers", at.name, at.router);
                };
                if find(&nodes, &at.name).is_some() {
                    bail!("{}: node names must be unique", at.name);
                }
                let stub = kind != Kind::Proxy;
                let idx = i as u32 + 1;
                if at.asn.is_some() && kind != Kind::Proxy {
                    bail!("{}: only proxies have an asn", at.name);
                }
                // A proxy is a customer of its router's AS, with an AS of its own.
                let asn = (bgp && !stub).then(|| at.asn.unwrap_or(64600 + idx));
                if let Some(a) = asn
                    && nodes.iter().any(|x| x.asn == Some(a))
                {
                    bail!("{}: AS {a} is taken", at.name);
                }
                let rel = |r: Rel| (bgp && !stub).then_some(r);
                nodes[r].ifaces.push(Iface {
                    name: at.name.clone(),
                    v4: Ipv4Addr::new(10, 1, n, 1),
                    v6: Ipv6Addr::new(0xfd01, n as u16, 0, 0, 0, 0, 0, 1),
                    cost: at.cost,
                    stub,
                    rel: rel(Rel::Customer),
                });
                nodes.push(Node {
                    name: at.name.clone(),
                    kind,
                    ns: format!("{}-{}", self.name, at.name),
                    router_id: Ipv4Addr::new(10, 255, 1, n),
                    ifaces: vec![Iface {
                        name: at.router.clone(),
                        v4: Ipv4Addr::new(10, 1, n, 2),
                        v6: Ipv6Addr::new(0xfd01, n as u16, 0, 0, 0, 0, 0, 2),
                        cost: at.cost,
                        stub,
                        rel: rel(Rel::Provider),
                    }],
                    index: idx,
                    router: Some(at.router.clone()),
                    asn,
                });
                links.push((
                    at.router.clone(),
                    at.name.clone(),
                    at.name.clone(),
                    at.router.clone(),
                ));
            }
        }
        let site_names: Vec<String> = self.sites.iter().map(|s| s.name.clone()).collect();
        let mut groups = Vec::new();
        for g in &self.groups {
            let (addr, udp) = parse_group(&g.addr)?;
            let sites = g.sites.clone().unwrap_or_else(|| site_names.clone());
            for s in &sites {
                if !site_names.contains(s) {
                    bail!("group {}: site {s} is not in sites", g.addr);
                }
            }
            groups.push(Group {
                spec: g.addr.clone(),
                addr,
                udp,
                service: g.service,
                sites,
                policy: g.policy.clone(),
                exclude_sender: g.exclude_sender,
            });
        }
        Ok(Plan {
            topo: self.clone(),
            nodes,
            groups,
            links,
        })
    }
}

impl Plan {
    pub(crate) fn routing(&self) -> Routing {
        self.topo.routing
    }

    /// The user-space driver of the target agents (with `driver = "xdp"`: tokio, the proxies' slow path).
    pub(crate) fn agent_driver(&self) -> &str {
        match self.topo.driver.as_str() {
            "xdp" | "xdp-tc" => "tokio",
            d => d,
        }
    }

    /// The proxies' fast-path hook: `Some("xdp")` with `driver = "xdp"`, `Some("tc")` with `"xdp-tc"`.
    pub(crate) fn fast_path_hook(&self) -> Option<&'static str> {
        match self.topo.driver.as_str() {
            "xdp" => Some("xdp"),
            "xdp-tc" => Some("tc"),
            _ => None,
        }
    }

    pub(crate) fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub(crate) fn of(&self, kind: Kind) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.kind == kind)
    }
    /// The address of a site that serves `g` (same family as the group).
    pub(crate) fn service_addr(&self, site: &Node, g: &Group) -> SocketAddr {
        let ip: IpAddr = if g.addr.is_ipv4() {
            site.addr4().into()
        } else {
            site.addr6().into()
        };
        SocketAddr::new(ip, g.service.port())
    }
    /// The group's registration address (same family as the group).
    pub(crate) fn registration(&self, g: &Group) -> SocketAddr {
        let ip: IpAddr = if g.addr.is_ipv4() {
            self.topo.registration4.into()
        } else {
            self.topo.registration6.into()
        };
        SocketAddr::new(ip, 6082)
    }
    /// Which node owns an address (a link address or a proxy's NAT pool).
    pub(crate) fn owner_of(&self, ip: IpAddr) -> Option<&Node> {
        self.nodes.iter().find(|n| {
            n.ifaces
                .iter()
                .any(|i| IpAddr::V4(i.v4) == ip || IpAddr::V6(i.v6) == ip)
                && (n.kind != Kind::Router || n.ifaces.iter().any(|i| IpAddr::V4(i.v4) == ip))
        })
    }
    /// The first group of a service and family.
    pub(crate) fn group(&self, service: Service, v4: bool, udp: bool) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.service == service && g.addr.is_ipv4() == v4 && g.udp == udp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan() {
        let p = Topology::load(None, Some(Routing::Ospf)).unwrap().plan().unwrap();
        assert_eq!(p.topo.routing, Routing::Ospf);
        assert_eq!(p.nodes.len(), 11);
        let p1 = p.node("p1").unwrap();
        assert_eq!(p1.addr4(), Ipv4Addr::new(10, 1, 1, 2));
        assert_eq!(p1.gw4(), Ipv4Addr::new(10, 1, 1, 1));
        assert_eq!(p1.pool6_prefix(), "fd98:1::/64");
        let t3 = p.node("t3").unwrap();
        assert_eq!(t3.addr6(), "fd01:8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.groups.len(), 6);
        assert_eq!(p.groups[1].tag(), "fd99__53-53-udp");
        assert_eq!(p.owner_of("10.1.8.2".parse().unwrap()).unwrap().name, "t3");
    }

    /// The BGP topology keeps what the lab tests rely on in the OSPF one: the same proxies, clients c1..c3
    /// and sites at the same routers, link 1 = r1--r2; and its policy is what the picture says.
    #[test]
    fn bgp_plan() {
        let o = Topology::load(None, Some(Routing::Ospf)).unwrap().plan().unwrap();
        let p = Topology::load(None, None).unwrap().plan().unwrap();
        assert_eq!(p.routing(), Routing::Bgp);
        assert!(p.nodes.len() < 30);
        for n in ["p1", "p2", "p3", "c1", "c2", "c3", "t1", "t3"] {
            assert_eq!(p.node(n).unwrap().router, o.node(n).unwrap().router, "{n}");
        }
        for n in ["p1", "p2", "p3"] {
            assert_eq!(p.node(n).unwrap().addr4(), o.node(n).unwrap().addr4());
        }
        assert_eq!(p.links[0].0, "r1");
        assert_eq!(p.links[0].1, "r2");
        let r1 = p.node("r1").unwrap();
        assert_eq!(r1.asn, Some(65001));
        assert_eq!(r1.ifaces[0].v4, Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(r1.ifaces[0].rel, Some(Rel::Peer));
        let r7 = p.node("r7").unwrap();
        let providers: Vec<&str> = r7
            .ifaces
            .iter()
            .filter(|i| i.rel == Some(Rel::Provider))
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(providers, ["r4", "r5"], "r7 is multi-homed");
        let p3 = p.node("p3").unwrap();
        assert_eq!(p3.asn, Some(64603));
        assert_eq!(p3.ifaces[0].rel, Some(Rel::Provider));
        let r3 = p.node("r3").unwrap();
        assert_eq!(
            r3.ifaces.iter().find(|i| i.name == "p3").unwrap().rel,
            Some(Rel::Customer)
        );
        assert_eq!(r3.ifaces.iter().find(|i| i.name == "c3").unwrap().rel, None);
        // The OSPF topology has no BGP relationships at all.
        assert!(
            o.nodes
                .iter()
                .all(|n| n.asn.is_none() && n.ifaces.iter().all(|i| i.rel.is_none()))
        );
    }

    #[test]
    fn a_file_without_routing_is_ospf() {
        let text = DEFAULT_TOML.replace("routing = \"ospf\"", "");
        let t: Topology = toml::from_str(&text).unwrap();
        assert_eq!(t.routing, Routing::Ospf);
        assert_eq!(Topology::load(None, None).unwrap().routing, Routing::CLI_DEFAULT);
    }

    #[test]
    fn bgp_needs_an_asn_per_router() {
        let mut t = Topology::load(None, Some(Routing::Ospf)).unwrap();
        t.routing = Routing::Bgp;
        let e = t.plan().unwrap_err().to_string();
        assert!(e.contains("needs an asn"), "{e}");
        let mut t = Topology::load(None, Some(Routing::Bgp)).unwrap();
        t.routers[1] = RouterSpec::Full {
            name: "r2".into(),
            asn: Some(65001),
        };
        let e = t.plan().unwrap_err().to_string();
        assert!(e.contains("two routers"), "{e}");
    }
}
