//! Internet-like topologies for the simulator: a seeded transit-stub generator in the style of GT-ITM
//! (Zegura, Calvert, Bhattacharjee 1996, the generator the PIAS paper used) and a latency matrix loaded
//! from a CSV file, so a user can bring a measured one.
//!
//! Nodes that hosts and proxies attach to are the *stub routers* (for a matrix: every row). The latency
//! between two of them is the shortest path over the graph. For a transit-stub graph the path between two
//! stubs goes node → stub gateway → transit core → gateway → node (stubs are single-homed, as in GT-ITM's
//! default), so memory is O(stub size² × stubs + transit nodes²) instead of O(nodes²): a 10,000-router graph
//! takes well under a megabyte.

use core::fmt;

use pias_state::rng::SplitMix;

/// A seeded 64-bit generator (the core's SplitMix64), so topologies depend only on their seed.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix::new(seed ^ 0x7470_6f6c_6f67_7921))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        self.0.unit_f64()
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Parameters of the transit-stub generator. Distances are in milliseconds of one-way latency.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitStubParams {
    pub seed: u64,
    /// Transit domains (backbone ISPs).
    pub transit_domains: usize,
    /// Routers per transit domain.
    pub transit_nodes: usize,
    /// Stub domains hanging off each transit router.
    pub stubs_per_transit: usize,
    /// Routers per stub domain.
    pub stub_nodes: usize,
    /// Side of the square the transit domains are placed in (ms).
    pub world_ms: f64,
    /// Radius of a transit domain around its centre (ms).
    pub transit_radius_ms: f64,
    /// Distance of a stub from its transit router (ms, at most).
    pub stub_distance_ms: f64,
    /// Radius of a stub domain (ms).
    pub stub_radius_ms: f64,
    /// Probability of each extra edge beyond a spanning tree, inside a transit domain.
    pub transit_extra_edge: f64,
    /// Probability of each extra edge between two transit domains beyond a spanning tree.
    pub interdomain_extra_edge: f64,
    /// Probability of each extra edge beyond a spanning tree, inside a stub domain.
    pub stub_extra_edge: f64,
    /// Per-hop router delay added to every edge (ms).
    pub hop_ms: f64,
}

impl Default for TransitStubParams {
    /// 4 transit domains × 8 routers, 4 stubs per transit router, 8 routers per stub: 1,024 stub routers
    /// in 128 stubs; a continent-sized world (30 ms side; one-way latencies up to about 60 ms along the
    /// graph's paths, so round trips stay under the default 200 ms membership probe interval).
    fn default() -> Self {
        TransitStubParams {
            seed: 1,
            transit_domains: 4,
            transit_nodes: 8,
            stubs_per_transit: 4,
            stub_nodes: 8,
            world_ms: 30.0,
            transit_radius_ms: 6.0,
            stub_distance_ms: 3.0,
            stub_radius_ms: 1.0,
            transit_extra_edge: 0.3,
            interdomain_extra_edge: 0.4,
            stub_extra_edge: 0.2,
            hop_ms: 0.1,
        }
    }
}

#[derive(Debug, Clone)]
struct Stub {
    /// Index of the transit router the gateway (stub node 0) attaches to.
    transit: usize,
    /// Latency of the gateway–transit edge.
    uplink_ms: f32,
    /// All-pairs shortest paths inside the stub, `stub_nodes²`, row-major.
    apsp: Vec<f32>,
    /// First global node index of the stub.
    first: usize,
    /// Transit domain of the stub's transit router.
    domain: usize,
}

/// A generated transit-stub graph, reduced to what latency queries need.
#[derive(Debug, Clone)]
pub struct TransitStub {
    params: TransitStubParams,
    /// Transit all-pairs shortest paths, row-major.
    transit_apsp: Vec<f32>,
    n_transit: usize,
    stubs: Vec<Stub>,
    /// For every stub router: its stub.
    stub_of: Vec<u32>,
    edges: usize,
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

fn near(rng: &mut Rng, c: (f64, f64), r: f64) -> (f64, f64) {
    // Uniform in a disc.
    let a = rng.f64() * core::f64::consts::TAU;
    let d = r * rng.f64().sqrt();
    (c.0 + d * a.cos(), c.1 + d * a.sin())
}

/// Floyd–Warshall in place on an `n × n` matrix (`f32::INFINITY` for no edge).
fn floyd(m: &mut [f32], n: usize) {
    for k in 0..n {
        for i in 0..n {
            let ik = m[i * n + k];
            if !ik.is_finite() {
                continue;
            }
            for j in 0..n {
                let via = ik + m[k * n + j];
                if via < m[i * n + j] {
                    m[i * n + j] = via;
                }
            }
        }
    }
}

/// A connected random graph on `pos`: a random spanning tree (each node to a random earlier one) plus each
/// other pair with probability `extra`. Returns the edge count; fills `m` (n × n, diagonal 0).
fn random_graph(rng: &mut Rng, pos: &[(f64, f64)], extra: f64, hop: f64, m: &mut [f32]) -> usize {
    let n = pos.len();
    m.fill(f32::INFINITY);
    for i in 0..n {
        m[i * n + i] = 0.0;
    }
    let mut edges = 0;
    let link = |m: &mut [f32], i: usize, j: usize| {
        let w = (dist(pos[i], pos[j]) + hop) as f32;
        m[i * n + j] = w;
        m[j * n + i] = w;
    };
    for i in 1..n {
        let j = rng.below(i);
        link(m, i, j);
        edges += 1;
    }
    for i in 0..n {
        for j in i + 1..n {
            if m[i * n + j].is_infinite() && rng.f64() < extra {
                link(m, i, j);
                edges += 1;
            }
        }
    }
    edges
}

impl TransitStub {
    /// Generates a graph. Same parameters, same graph.
    pub fn generate(p: &TransitStubParams) -> Self {
        let mut rng = Rng::new(p.seed);
        let (td, tn) = (p.transit_domains.max(1), p.transit_nodes.max(1));
        let nt = td * tn;
        // Transit routers.
        let mut tpos = Vec::with_capacity(nt);
        let mut transit_apsp = vec![f32::INFINITY; nt * nt];
        let mut edges = 0;
        for _ in 0..td {
            let c = (rng.f64() * p.world_ms, rng.f64() * p.world_ms);
            for _ in 0..tn {
                tpos.push(near(&mut rng, c, p.transit_radius_ms));
            }
        }
        for d in 0..td {
            let pos = &tpos[d * tn..(d + 1) * tn];
            let mut m = vec![0f32; tn * tn];
            edges += random_graph(&mut rng, pos, p.transit_extra_edge, p.hop_ms, &mut m);
            for i in 0..tn {
                for j in 0..tn {
                    transit_apsp[(d * tn + i) * nt + d * tn + j] = m[i * tn + j];
                }
            }
        }
        // Inter-domain edges: a spanning tree over domains plus extra domain pairs, each between random
        // routers of the two domains.
        let inter = |rng: &mut Rng, a: usize, b: usize, m: &mut [f32]| {
            let i = a * tn + rng.below(tn);
            let j = b * tn + rng.below(tn);
            let w = (dist(tpos[i], tpos[j]) + p.hop_ms) as f32;
            if w < m[i * nt + j] {
                m[i * nt + j] = w;
                m[j * nt + i] = w;
            }
        };
        for d in 1..td {
            let e = rng.below(d);
            inter(&mut rng, d, e, &mut transit_apsp);
            edges += 1;
        }
        for a in 0..td {
            for b in a + 1..td {
                if rng.f64() < p.interdomain_extra_edge {
                    inter(&mut rng, a, b, &mut transit_apsp);
                    edges += 1;
                }
            }
        }
        floyd(&mut transit_apsp, nt);
        // Stubs.
        let sn = p.stub_nodes.max(1);
        let mut stubs = Vec::with_capacity(nt * p.stubs_per_transit);
        let mut stub_of = Vec::with_capacity(nt * p.stubs_per_transit * sn);
        for (t, &tp) in tpos.iter().enumerate() {
            for _ in 0..p.stubs_per_transit {
                let c = near(&mut rng, tp, p.stub_distance_ms);
                let pos: Vec<(f64, f64)> = (0..sn).map(|_| near(&mut rng, c, p.stub_radius_ms)).collect();
                let mut apsp = vec![0f32; sn * sn];
                edges += random_graph(&mut rng, &pos, p.stub_extra_edge, p.hop_ms, &mut apsp) + 1;
                floyd(&mut apsp, sn);
                let first = stub_of.len();
                stub_of.extend(core::iter::repeat_n(stubs.len() as u32, sn));
                stubs.push(Stub {
                    transit: t,
                    uplink_ms: (dist(pos[0], tp) + p.hop_ms) as f32,
                    apsp,
                    first,
                    domain: t / tn,
                });
            }
        }
        TransitStub {
            params: p.clone(),
            transit_apsp,
            n_transit: nt,
            stubs,
            stub_of,
            edges,
        }
    }

    pub fn params(&self) -> &TransitStubParams {
        &self.params
    }

    /// Edges in the generated graph (transit, inter-domain, stub and uplinks).
    pub fn edges(&self) -> usize {
        self.edges
    }

    /// Number of transit routers.
    pub fn transit_count(&self) -> usize {
        self.n_transit
    }

    /// Shortest-path latency between transit routers `a` and `b` (ms).
    pub fn transit_latency_ms(&self, a: usize, b: usize) -> f64 {
        f64::from(self.transit_apsp[a * self.n_transit + b])
    }

    /// The transit router stub `s` hangs off.
    pub fn stub_transit(&self, s: usize) -> usize {
        self.stubs[s].transit
    }

    fn latency(&self, a: usize, b: usize) -> f64 {
        let (sa, sb) = (self.stub_of[a] as usize, self.stub_of[b] as usize);
        let (x, y) = (&self.stubs[sa], &self.stubs[sb]);
        let sn = self.params.stub_nodes.max(1);
        let (la, lb) = (a - x.first, b - y.first);
        if sa == sb {
            return f64::from(x.apsp[la * sn + lb]);
        }
        // Summed so that a→b and b→a add the same numbers in the same order (exactly symmetric).
        let out_a = x.apsp[la * sn] + x.uplink_ms;
        let out_b = y.apsp[lb * sn] + y.uplink_ms;
        f64::from((out_a + out_b) + self.transit_apsp[x.transit * self.n_transit + y.transit])
    }
}

/// A latency matrix (ms), completed by shortest paths.
#[derive(Debug, Clone)]
pub struct LatencyMatrix {
    n: usize,
    m: Vec<f32>,
}

/// Why a latency matrix could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError(pub String);

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "latency matrix: {}", self.0)
    }
}

impl std::error::Error for MatrixError {}

impl LatencyMatrix {
    /// Parses a CSV matrix: `n` rows of `n` one-way latencies in milliseconds. An empty cell, `-1` or `inf`
    /// means "no direct link"; missing entries are completed by shortest paths and the result is made
    /// symmetric (the smaller of the two directions). Lines starting with `#` and a first row that is not
    /// numeric (a header) are skipped.
    pub fn from_csv(text: &str) -> Result<Self, MatrixError> {
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for (ln, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let parsed: Result<Vec<f32>, _> = cells
                .iter()
                .map(|c| match *c {
                    "" | "inf" | "-" => Ok(f32::INFINITY),
                    s => s.parse::<f32>().map(|v| if v < 0.0 { f32::INFINITY } else { v }),
                })
                .collect();
            match parsed {
                Ok(r) => rows.push(r),
                Err(_) if rows.is_empty() => continue, // header
                Err(e) => return Err(MatrixError(format!("line {}: {e}", ln + 1))),
            }
        }
        let n = rows.len();
        if n == 0 {
            return Err(MatrixError("no rows".into()));
        }
        let mut m = vec![f32::INFINITY; n * n];
        for (i, r) in rows.iter().enumerate() {
            if r.len() != n {
                return Err(MatrixError(format!(
                    "row {} has {} cells, expected {n}",
                    i + 1,
                    r.len()
                )));
            }
            for (j, &v) in r.iter().enumerate() {
                m[i * n + j] = if i == j { 0.0 } else { v };
            }
        }
        for i in 0..n {
            for j in i + 1..n {
                let v = m[i * n + j].min(m[j * n + i]);
                m[i * n + j] = v;
                m[j * n + i] = v;
            }
        }
        floyd(&mut m, n);
        if m.iter().any(|v| !v.is_finite()) {
            return Err(MatrixError("the graph is not connected".into()));
        }
        Ok(LatencyMatrix { n, m })
    }

    /// Loads [`LatencyMatrix::from_csv`] from a file.
    pub fn load(path: &std::path::Path) -> Result<Self, MatrixError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| MatrixError(format!("{}: {e}", path.display())))?;
        Self::from_csv(&text)
    }
}

/// A topology the simulator computes latencies on.
#[derive(Debug, Clone)]
pub enum Topology {
    TransitStub(TransitStub),
    Matrix(LatencyMatrix),
}

impl Topology {
    /// Attachment points (stub routers, or matrix rows).
    pub fn nodes(&self) -> usize {
        match self {
            Topology::TransitStub(t) => t.stub_of.len(),
            Topology::Matrix(m) => m.n,
        }
    }

    /// Shortest-path latency between attachment points `a` and `b` (ms).
    pub fn latency_ms(&self, a: usize, b: usize) -> f64 {
        match self {
            Topology::TransitStub(t) => t.latency(a, b),
            Topology::Matrix(m) => f64::from(m.m[a * m.n + b]),
        }
    }

    /// Number of stub domains (for a matrix: one per node).
    pub fn stubs(&self) -> usize {
        match self {
            Topology::TransitStub(t) => t.stubs.len(),
            Topology::Matrix(m) => m.n,
        }
    }

    /// The stub domain of a node.
    pub fn stub_of(&self, node: usize) -> usize {
        match self {
            Topology::TransitStub(t) => t.stub_of[node] as usize,
            Topology::Matrix(_) => node,
        }
    }

    /// The attachment points of stub `s`.
    pub fn stub_nodes(&self, s: usize) -> core::ops::Range<usize> {
        match self {
            Topology::TransitStub(t) => {
                let f = t.stubs[s].first;
                f..f + t.params.stub_nodes.max(1)
            }
            Topology::Matrix(_) => s..s + 1,
        }
    }

    /// The transit domain (backbone ISP) of a stub; a matrix has one.
    pub fn domain_of_stub(&self, s: usize) -> usize {
        match self {
            Topology::TransitStub(t) => t.stubs[s].domain,
            Topology::Matrix(_) => 0,
        }
    }
}

/// Where a proxy or host attaches: a node and the latency of its access link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attach {
    pub node: u32,
    /// One-way access latency in microseconds.
    pub access_us: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TransitStubParams {
        TransitStubParams {
            seed: 9,
            transit_domains: 3,
            transit_nodes: 4,
            stubs_per_transit: 2,
            stub_nodes: 5,
            ..TransitStubParams::default()
        }
    }

    #[test]
    fn transit_stub_is_connected_symmetric_positive_and_structured() {
        let t = TransitStub::generate(&small());
        let topo = Topology::TransitStub(t.clone());
        assert_eq!(t.transit_count(), 12);
        assert_eq!(topo.stubs(), 24);
        assert_eq!(topo.nodes(), 120);
        for a in 0..topo.nodes() {
            assert_eq!(topo.latency_ms(a, a), 0.0);
            for b in 0..topo.nodes() {
                let l = topo.latency_ms(a, b);
                assert!(l.is_finite(), "{a}→{b} not connected");
                assert_eq!(l, topo.latency_ms(b, a), "asymmetric {a}↔{b}");
                if a != b {
                    assert!(l > 0.0);
                }
            }
        }
        // Transit core is connected too.
        for a in 0..t.transit_count() {
            for b in 0..t.transit_count() {
                assert!(t.transit_latency_ms(a, b).is_finite());
            }
        }
        // Structure: each stub hangs off one transit router; stubs per transit router as asked; within a
        // stub paths are shorter than leaving it (the stub radius is small against the world).
        for s in 0..topo.stubs() {
            assert_eq!(t.stub_transit(s), s / 2);
            assert_eq!(topo.stub_nodes(s).len(), 5);
            for n in topo.stub_nodes(s) {
                assert_eq!(topo.stub_of(n), s);
            }
        }
        let inside = topo.latency_ms(0, 1);
        let other_domain = (0..topo.stubs())
            .find(|&s| topo.domain_of_stub(s) != topo.domain_of_stub(0))
            .unwrap();
        let outside = topo.latency_ms(0, topo.stub_nodes(other_domain).start);
        assert!(inside < outside, "{inside} vs {outside}");
        // Triangle inequality holds (shortest paths).
        for a in (0..120).step_by(7) {
            for b in (0..120).step_by(5) {
                for c in (0..120).step_by(11) {
                    let (ab, bc, ac) = (
                        topo.latency_ms(a, b),
                        topo.latency_ms(b, c),
                        topo.latency_ms(a, c),
                    );
                    assert!(ac <= ab + bc + 1e-3, "{a} {b} {c}");
                }
            }
        }
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let a = Topology::TransitStub(TransitStub::generate(&small()));
        let b = Topology::TransitStub(TransitStub::generate(&small()));
        let c = Topology::TransitStub(TransitStub::generate(&TransitStubParams { seed: 10, ..small() }));
        let row = |t: &Topology| (0..t.nodes()).map(|j| t.latency_ms(3, j)).collect::<Vec<_>>();
        assert_eq!(row(&a), row(&b));
        assert_ne!(row(&a), row(&c));
    }

    #[test]
    fn matrix_completes_by_shortest_paths() {
        let m = LatencyMatrix::from_csv("a,b,c\n0,10,\n10,0,5\n,5,0\n").unwrap();
        let t = Topology::Matrix(m);
        assert_eq!(t.nodes(), 3);
        assert_eq!(t.latency_ms(0, 2), 15.0);
        assert_eq!(t.latency_ms(2, 0), 15.0);
        assert!(LatencyMatrix::from_csv("0,1\n1,0,3\n").is_err());
        assert!(LatencyMatrix::from_csv("0,\n,0\n").is_err());
    }
}
