//! The user-space drivers end to end on a real kernel, one test source for both: for each driver (tokio,
//! mio) two `pias proxy` processes with `driver = "<name>"`, each in its own network namespace with its
//! own TUN device, a `pias target --driver <name>` agent next to a UDP echo server, and a client in a
//! third namespace that sends to the group's anycast address and gets the answer *from* that address.
//! A third test runs `driver-mio`'s `embed` example (a host loop with its own UDP echo and timer that
//! drives a PIAS proxy in the same thread) as proxy 2, and checks both its own service and PIAS traffic.
//!
//! Needs root (network namespaces, TUN, routes) and iproute2. Without root it FAILS with a message: it
//! never skips. Everything it makes — three namespaces `<tag>NNNN-{c,a,b}` (NNNN from the process id, tag
//! per test), one veth pair between each neighbour, addresses in one /24 per test (tokio 10.251.0.0/24,
//! mio 10.252.0.0/24, embed 10.252.1.0/24), a temporary directory — is removed by a guard, also when the
//! test fails. Bounded: every wait has a deadline, each test takes a few seconds and sends a few dozen
//! datagrams. The tests may run in parallel: they share nothing.
//!
//! ```text
//!  client ns (c)         proxy 1 ns (a)                     proxy 2 ns (b)
//!  N.1 ── veth ── N.2 | N.5 ── veth ── N.6   (overlay 6081 on .5 and .6)
//!                 TUN pias0: anycast N.128/28,        TUN pias0: same anycast prefix,
//!                 registration .150, NAT pool .161    registration .150, pool .162
//!                                                     echo server N.6:7777
//!                                                     pias target (registers via .150)
//! ```
//! Group N.129:7777/udp. The client's packets reach proxy 1 (IAP) by routing; proxy 2 is the JAP.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PIAS: &str = env!("CARGO_BIN_EXE_pias");

/// One run's driver and network.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// `proxy.driver` and `pias target --driver`.
    driver: &'static str,
    /// The first three octets of the run's /24.
    net: &'static str,
    /// Namespace name prefix (3 characters).
    tag: &'static str,
}

impl Setup {
    fn ip(&self, host: &str) -> String {
        format!("{}.{host}", self.net)
    }
    fn group(&self) -> String {
        self.ip("129:7777")
    }
    fn service(&self) -> String {
        self.ip("6:7777")
    }
}

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} {args:?}: {e}"))
}

fn must(prog: &str, args: &[&str]) -> String {
    let o = run(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Everything the test made; removed on drop (processes stopped, namespaces deleted, files removed).
struct Lab {
    ns: [String; 3],
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn c(&self) -> &str {
        &self.ns[0]
    }
    fn a(&self) -> &str {
        &self.ns[1]
    }
    fn b(&self) -> &str {
        &self.ns[2]
    }

    fn new(set: Setup) -> Lab {
        let tag = format!("{}{:04}", set.tag, std::process::id() % 10_000);
        let ns = [format!("{tag}-c"), format!("{tag}-a"), format!("{tag}-b")];
        let dir = std::env::temp_dir().join(format!("{tag}-{}-driver", set.driver));
        let lab = Lab {
            ns,
            dir,
            children: Vec::new(),
        };
        lab.teardown_net();
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).expect("temp dir");
        for n in &lab.ns {
            must("ip", &["netns", "add", n]);
            must("ip", &["-n", n, "link", "set", "lo", "up"]);
        }
        let (c, a, b) = (lab.c(), lab.a(), lab.b());
        must(
            "ip",
            &[
                "link", "add", "v-ca", "netns", c, "type", "veth", "peer", "name", "v-ac", "netns", a,
            ],
        );
        must(
            "ip",
            &[
                "link", "add", "v-ab", "netns", a, "type", "veth", "peer", "name", "v-ba", "netns", b,
            ],
        );
        for (n, dev, addr) in [
            (c, "v-ca", set.ip("1/30")),
            (a, "v-ac", set.ip("2/30")),
            (a, "v-ab", set.ip("5/30")),
            (b, "v-ba", set.ip("6/30")),
        ] {
            must("ip", &["-n", n, "addr", "add", &addr, "dev", dev]);
            must("ip", &["-n", n, "link", "set", dev, "up"]);
        }
        must(
            "ip",
            &["-n", c, "route", "add", &set.ip("0/24"), "via", &set.ip("2")],
        );
        must(
            "ip",
            &["-n", b, "route", "add", &set.ip("0/30"), "via", &set.ip("5")],
        );
        // The JAP's replies carry the group address as source and enter proxy 1's namespace on v-ab, where
        // that address routes into proxy 1's own TUN: strict reverse-path filtering would drop them.
        for n in [a, b] {
            in_netns(n, || {
                for key in ["all", "default", "v-ab", "v-ac", "v-ba"] {
                    let _ = fs::write(format!("/proc/sys/net/ipv4/conf/{key}/rp_filter"), "0");
                }
            })
            .join()
            .expect("rp_filter");
        }
        lab
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// Starts `pias ARGS` in namespace `ns`, logging to DIR/NAME.log.
    fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) {
        self.spawn_prog(name, ns, PIAS, args);
    }

    /// Starts `PROG ARGS` in namespace `ns`, logging to DIR/NAME.log.
    fn spawn_prog(&mut self, name: &str, ns: &str, prog: &str, args: &[&str]) {
        let log = fs::File::create(self.path(&format!("{name}.log"))).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, prog])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.children.push((name.to_owned(), child));
    }

    fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("child")
            .1
    }

    /// SIGTERM to a child (`ip netns exec` execs, so the child's pid is pias's).
    fn terminate(&mut self, name: &str) {
        let pid = self.child(name).id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits for a child to exit within `limit`; returns its success.
    fn wait_exit(&mut self, name: &str, limit: Duration) -> Option<bool> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child(name).try_wait() {
                return Some(st.success());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctl(&self, sock: &str, what: &str) -> serde_like::Json {
        let s = self.path(sock);
        let out = run(PIAS, &["ctl", "--socket", s.to_str().unwrap(), what, "--json"]);
        serde_like::Json(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (n, _) in &self.children {
            let t = fs::read_to_string(self.path(&format!("{n}.log"))).unwrap_or_default();
            s.push_str(&format!("----- {n} -----\n{t}\n"));
        }
        s
    }

    fn teardown_net(&self) {
        for n in &self.ns {
            let _ = run("ip", &["netns", "del", n]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for (_, c) in &mut self.children {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
        self.teardown_net();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Minimal reading of the JSON `pias ctl --json` prints (numbers by key), without a JSON dependency.
mod serde_like {
    #[derive(Debug)]
    pub(crate) struct Json(pub(crate) String);

    impl Json {
        /// The first number after `"key":`.
        pub(crate) fn num(&self, key: &str) -> Option<u64> {
            let pat = format!("\"{key}\":");
            let i = self.0.find(&pat)? + pat.len();
            let rest = self.0[i..].trim_start();
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            rest[..end].parse().ok()
        }
        pub(crate) fn contains(&self, s: &str) -> bool {
            self.0.contains(s)
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (sockets it makes live there).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) with a valid namespace fd; it changes only this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// One `#[test]` per driver, all from [`udp_through_two_proxies`].
macro_rules! driver_tests {
    ($($name:ident: $driver:literal, $net:literal, $tag:literal;)*) => {$(
        #[test]
        fn $name() {
            udp_through_two_proxies(Setup { driver: $driver, net: $net, tag: $tag });
        }
    )*};
}

driver_tests! {
    udp_through_two_tokio_proxies: "tokio", "10.251.0", "ptk";
    udp_through_two_mio_proxies: "mio", "10.252.0", "pmi";
}

/// The two-proxy set-up with driver `set.driver`, up to a registered target: namespaces, keys, both
/// proxies (members of each other, routes checked), the service `serve` (on its bound socket, in proxy 2's
/// namespace, until the flag is set) and the target agent. Returns the lab, the service thread and its stop
/// flag.
fn start(
    set: Setup,
    serve: impl FnOnce(UdpSocket, Arc<AtomicBool>) -> u64 + Send + 'static,
) -> (Lab, std::thread::JoinHandle<u64>, Arc<AtomicBool>) {
    let (group_s, service_s) = (set.group(), set.service());
    let (group, service) = (group_s.as_str(), service_s.as_str());
    assert!(
        is_root(),
        "this test needs root (network namespaces, TUN devices, routes): run it as root, as CI does"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "this test needs the `ip` tool: apt-get install iproute2"
    );
    let mut lab = Lab::new(set);

    // Keys and configuration.
    let master = must(PIAS, &["key", "generate"]);
    write_key(&lab.path("master.key"), &master);
    let gkey = must(
        PIAS,
        &[
            "key",
            "derive",
            "--master-file",
            lab.path("master.key").to_str().unwrap(),
            "--group",
            &format!("{group}/udp"),
        ],
    );
    write_key(&lab.path("group.key"), &gkey);
    for (i, overlay, seed, pool) in [
        (1, set.ip("5"), set.ip("6"), set.ip("161")),
        (2, set.ip("6"), set.ip("5"), set.ip("162")),
    ] {
        let (net, driver) = (set.net, set.driver);
        let cfg = format!(
            r#"[proxy]
id = {i}
overlay = "{overlay}:6081"
master_key_file = "master.key"
anycast_prefixes = ["{net}.128/28"]
registration = ["{net}.150"]
nat_pool = ["{pool}"]
seeds = ["{seed}:6081"]
driver = "{driver}"

[tun]
name = "pias0"

[metrics]
listen = "127.0.0.1:9851"

[control]
socket = "p{i}.sock"

[timers]
drain_time_ms = 500
"#
        );
        fs::write(lab.path(&format!("p{i}.toml")), cfg).unwrap();
    }
    let (a, b) = (lab.a().to_owned(), lab.b().to_owned());
    let p1cfg = lab.path("p1.toml");
    let p2cfg = lab.path("p2.toml");
    lab.spawn("p1", &a, &["proxy", "--config", p1cfg.to_str().unwrap()]);
    lab.spawn("p2", &b, &["proxy", "--config", p2cfg.to_str().unwrap()]);

    // The service next to proxy 2.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_serve = stop.clone();
    let service_addr = service.to_owned();
    let server = in_netns(&b, move || {
        let s = UdpSocket::bind(&service_addr).expect("bind service");
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        serve(s, stop_serve)
    });

    // Both proxies up and members of each other.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m1 = lab.ctl("p1.sock", "counters");
        let m2 = lab.ctl("p2.sock", "counters");
        if m1.num("members") == Some(2) && m2.num("members") == Some(2) {
            break;
        }
        assert!(
            Instant::now() < end,
            "proxies did not see each other within 10 s: {m1:?} {m2:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The TUN and its routes exist in proxy 1's namespace.
    let routes = must("ip", &["-n", &a, "route", "show", "dev", "pias0"]);
    for r in [set.ip("128/28"), set.ip("150"), set.ip("161")] {
        assert!(routes.contains(&r), "route {r} missing from pias0: {routes}");
    }

    // The target agent registers through the registration anycast address (proxy 2 is nearest).
    let key = lab.path("group.key");
    lab.spawn(
        "target",
        &b,
        &[
            "target",
            "--group",
            &format!("{group}/udp"),
            "--service",
            service,
            "--key-file",
            key.to_str().unwrap(),
            "--registration",
            &set.ip("150"),
            "--driver",
            set.driver,
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !lab.ctl("p2.sock", "registrations").contains(service) {
        assert!(
            Instant::now() < end,
            "the target did not register with proxy 2 within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (lab, server, stop)
}

fn udp_through_two_proxies(set: Setup) {
    let (group_s, service_s) = (set.group(), set.service());
    let (group, service) = (group_s.as_str(), service_s.as_str());
    let started = Instant::now();
    // A UDP echo server (bounded: it stops when told, after 200 datagrams, or after 40 s).
    let (mut lab, echo, stop) = start(set, |s, stop| {
        let end = Instant::now() + Duration::from_secs(40);
        let mut buf = [0u8; 2048];
        let mut served = 0;
        while served < 200 && Instant::now() < end && !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
                served += 1;
            }
        }
        served
    });
    let (a, b, c) = (lab.a().to_owned(), lab.b().to_owned(), lab.c().to_owned());

    // The client: requests to the group address, answers from the group address.
    let (client, group_addr): (SocketAddr, SocketAddr) =
        (set.ip("1:0").parse().unwrap(), group.parse().unwrap());
    let answers = in_netns(&c, move || {
        let s = UdpSocket::bind(client).expect("bind client");
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let group = group_addr;
        let mut answers = Vec::new();
        let mut buf = [0u8; 2048];
        // Until the first answer (the JAP's report may still be on its way to the RAP), then 10 more.
        let end = Instant::now() + Duration::from_secs(10);
        let mut i = 0;
        while answers.len() < 11 && Instant::now() < end && i < 60 {
            let msg = format!("ping {i}");
            i += 1;
            s.send_to(msg.as_bytes(), group).unwrap();
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                answers.push((msg, String::from_utf8_lossy(&buf[..n]).into_owned(), from));
            }
        }
        answers
    })
    .join()
    .expect("client thread");
    assert!(
        answers.len() >= 11,
        "the client got {} answers (wanted 11):\n{}",
        answers.len(),
        lab.logs()
    );
    for (sent, got, from) in &answers {
        assert_eq!(sent, got, "echo mismatch");
        assert_eq!(
            from.to_string(),
            group,
            "the answer must come from the group address"
        );
    }

    // Counters: proxy 1 was the IAP (first packet via a RAP, later ones straight to the JAP); proxy 2
    // delivered to the target and sent the replies.
    let c1 = lab.ctl("p1.sock", "counters");
    let c2 = lab.ctl("p2.sock", "counters");
    let iap_to_rap = c1.num("iap_to_rap").unwrap() + c2.num("iap_to_rap").unwrap();
    assert!(iap_to_rap >= 1, "no first packet through a RAP: {c1:?}");
    // Packets sent before the RAP's Answer reached the IAP also go through the RAP (the first reply comes
    // straight from the JAP and can beat the Answer); every other packet goes IAP->JAP.
    let (to_jap, to_rap) = (c1.num("iap_to_jap").unwrap(), c1.num("iap_to_rap").unwrap());
    assert!(
        to_jap + to_rap >= 11 && to_jap >= 5,
        "later packets not IAP->JAP: {c1:?}"
    );
    assert!(c2.num("jap_delivered").unwrap() >= 11, "{c2:?}");
    assert!(c2.num("jap_replies").unwrap() >= 11, "{c2:?}");
    assert!(c2.num("driver_tun_rx").unwrap() >= 11, "{c2:?}");

    // The Prometheus endpoint in proxy 1's namespace.
    let metrics = in_netns(&a, || {
        let mut s = TcpStream::connect("127.0.0.1:9851").expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    })
    .join()
    .unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(metrics.contains("\npias_iap_to_jap_total "), "{metrics}");
    assert!(metrics.contains("\npias_members 2\n"), "{metrics}");

    // Graceful stop: the agent deregisters (proxy 2 forgets the target), the proxies leave and exit, and
    // their TUN devices and routes disappear with them.
    lab.terminate("target");
    assert_eq!(
        lab.wait_exit("target", Duration::from_secs(5)),
        Some(true),
        "target exit"
    );
    assert!(
        !lab.ctl("p2.sock", "registrations").contains(service),
        "the target is still registered after deregistering"
    );
    lab.terminate("p1");
    lab.terminate("p2");
    assert_eq!(
        lab.wait_exit("p1", Duration::from_secs(5)),
        Some(true),
        "proxy 1 exit"
    );
    assert_eq!(
        lab.wait_exit("p2", Duration::from_secs(5)),
        Some(true),
        "proxy 2 exit"
    );
    for ns in [&a, &b] {
        let o = run("ip", &["-n", ns, "link", "show", "pias0"]);
        assert!(
            !o.status.success(),
            "pias0 still exists in {ns} after the proxy exited"
        );
        let routes = must("ip", &["-n", ns, "route"]);
        assert!(
            !routes.contains(&set.ip("128/28")),
            "anycast route left in {ns}: {routes}"
        );
    }
    assert!(
        !Path::new(&lab.path("p1.sock")).exists(),
        "control socket not removed"
    );
    stop.store(true, Ordering::Relaxed);
    let served = echo.join().unwrap();
    assert!(served >= 11);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// One driver's numbers: kernel forwarding to the service's unicast address and PIAS to the group, from
/// the same client in the same set-up.
#[derive(Debug, Clone, Copy, Default)]
struct BenchRow {
    kernel_gbps: f64,
    pias_gbps: f64,
    kernel_kpps: f64,
    pias_kpps: f64,
    kernel_rtt: (f64, f64),
    pias_rtt: (f64, f64),
}

/// Median and p99 of round trips (µs) of `n` sequential 32-byte requests from `s` to `to`.
fn rtts(s: &UdpSocket, to: SocketAddr, n: usize) -> (f64, f64) {
    let mut buf = [0u8; 2048];
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let msg = format!("rtt {i:>27}");
        let t = Instant::now();
        s.send_to(msg.as_bytes(), to).unwrap();
        // Skip stale answers (a late reply to an earlier, timed-out request).
        while let Ok((len, _)) = s.recv_from(&mut buf) {
            if buf[..len] == *msg.as_bytes() {
                v.push(t.elapsed().as_secs_f64() * 1e6);
                break;
            }
        }
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99))
}

/// Packets per second (thousands) the service receives while `s` sends 64-byte datagrams to `to` as fast
/// as it can for `secs`.
fn blast(s: &UdpSocket, to: SocketAddr, secs: f64, got: &AtomicU64) -> f64 {
    let payload = [b'B'; 64];
    let before = got.load(Ordering::Relaxed);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        for _ in 0..64 {
            let _ = s.send_to(&payload, to);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    (got.load(Ordering::Relaxed) - before) as f64 / secs / 1e3
}

fn bench_one(set: Setup, pings: usize, secs: f64) -> BenchRow {
    let got = Arc::new(AtomicU64::new(0));
    let count = got.clone();
    // The service: echoes requests, counts (and does not answer) the blast's 'B' datagrams. Bounded: 120 s.
    let (lab, server, stop) = start(set, move |s, stop| {
        let end = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 2048];
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if buf[0] == b'B' {
                    count.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }
        0
    });
    let mut lab = lab;
    // TCP: iperf3 next to proxy 2, registered as group N.130:5201/tcp.
    let (b, c) = (lab.b().to_owned(), lab.c().to_owned());
    let tcp_group = set.ip("130:5201");
    let tcp_service = set.ip("6:5201");
    lab.spawn_prog("iperf3", &b, "iperf3", &["-s", "-B", &set.ip("6"), "-p", "5201"]);
    let tkey = must(
        PIAS,
        &[
            "key",
            "derive",
            "--master-file",
            lab.path("master.key").to_str().unwrap(),
            "--group",
            &format!("{tcp_group}/tcp"),
        ],
    );
    write_key(&lab.path("tcp.key"), &tkey);
    let tkey = lab.path("tcp.key");
    lab.spawn(
        "tcp-target",
        &b,
        &[
            "target",
            "--group",
            &format!("{tcp_group}/tcp"),
            "--service",
            &tcp_service,
            "--key-file",
            tkey.to_str().unwrap(),
            "--registration",
            &set.ip("150"),
            "--driver",
            set.driver,
            // The default check (a TCP connect every 300 ms) would disturb iperf3's control port mid-run.
            "--no-health-check",
        ],
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !lab.ctl("p2.sock", "registrations").contains(&tcp_service) {
        assert!(Instant::now() < end, "the TCP target did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    let iperf = |to: &str| -> f64 {
        let o = run(
            "ip",
            &[
                "netns", "exec", &c, "timeout", "30", "iperf3", "-c", to, "-p", "5201", "-t", "2", "-J",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9
    };
    let client: SocketAddr = set.ip("1:0").parse().unwrap();
    let group: SocketAddr = set.group().parse().unwrap();
    let service: SocketAddr = set.service().parse().unwrap();
    let mut row = in_netns(lab.c(), move || {
        let s = UdpSocket::bind(client).expect("bind client");
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        // Warm up until the group answers (the IAP's cache entry installed).
        let end = Instant::now() + Duration::from_secs(10);
        let mut ok = 0;
        while ok < 20 && Instant::now() < end {
            let (m, _) = rtts(&s, group, 1);
            if m.is_finite() {
                ok += 1;
            }
        }
        assert!(ok >= 20, "the group does not answer");
        BenchRow {
            kernel_rtt: rtts(&s, service, pings),
            pias_rtt: rtts(&s, group, pings),
            kernel_kpps: blast(&s, service, secs, &got),
            pias_kpps: blast(&s, group, secs, &got),
            ..BenchRow::default()
        }
    })
    .join()
    .expect("client");
    row.kernel_gbps = iperf(&set.ip("6"));
    row.pias_gbps = iperf(&set.ip("130"));
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    drop(lab);
    row
}

/// Kernel forwarding, the tokio driver and the mio driver in one run, each driver in this file's
/// two-proxy set-up: UDP round trips (median, p99), 64-byte UDP packets received per second, and TCP
/// throughput (iperf3, one stream, 2 s; group N.130:5201/tcp), to the service's unicast address (the
/// kernel forwards) and to the group (IAP and JAP are `pias proxy` processes). Prints a Markdown table.
/// Needs root, iperf3, and a release build for meaningful numbers.
#[test]
#[ignore = "benchmark: cargo test --release -p pias-cli --test drivers -- --ignored --nocapture bench"]
fn bench_kernel_tokio_mio() {
    let pings = 2000;
    let secs = 2.0;
    let mut out = String::from(
        "| driver | kernel TCP Gbit/s | PIAS TCP Gbit/s | TCP ratio | kernel kpps | PIAS kpps | pps ratio | kernel RTT median / p99 µs | PIAS RTT median / p99 µs | added median / p99 µs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for set in [
        Setup {
            driver: "tokio",
            net: "10.252.2",
            tag: "pbt",
        },
        Setup {
            driver: "mio",
            net: "10.252.3",
            tag: "pbm",
        },
    ] {
        let r = bench_one(set, pings, secs);
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |\n",
            set.driver,
            r.kernel_gbps,
            r.pias_gbps,
            r.pias_gbps / r.kernel_gbps,
            r.kernel_kpps,
            r.pias_kpps,
            r.pias_kpps / r.kernel_kpps,
            r.kernel_rtt.0,
            r.kernel_rtt.1,
            r.pias_rtt.0,
            r.pias_rtt.1,
            r.pias_rtt.0 - r.kernel_rtt.0,
            r.pias_rtt.1 - r.kernel_rtt.1,
        ));
    }
    println!("\n{out}");
}

/// Writes a key file readable by its owner only (`pias proxy` and `pias target` refuse others, SPEC.md §8.5).
fn write_key(p: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(p, text).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
}
