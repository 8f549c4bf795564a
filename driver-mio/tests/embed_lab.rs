//! The `embed` example in a namespace lab: two host programs, each running its own UDP echo and timer
//! *and* a PIAS proxy in one mio loop, one in each of two proxy namespaces; a target agent driven through
//! [`driver_mio::MioAgent`] (its own small loop, in-process) next to a UDP echo server; a client in a third
//! namespace. The client must get answers from both hosts' own echoes and from the PIAS group address.
//!
//! Needs root (namespaces, TUN, routes) and iproute2: without root it FAILS, never skips. It makes three
//! namespaces `pemNNNN-{c,a,b}`, two veth pairs, addresses in 10.252.1.0/24 only, and a temporary
//! directory, all removed by a guard (also on failure). Bounded: every wait has a deadline; a few dozen
//! datagrams.
//!
//! ```text
//!  client ns (c)          host 1 ns (a)                       host 2 ns (b)
//!  .1 ── veth ── .2 | .5 ── veth ── .6         (overlay 6081 on .5 and .6; prefix 10.252.1.0/24)
//!                 embed: echo .5:7000, PIAS p1   embed: echo .6:7000, PIAS p2
//!                                                agent (MioAgent) + echo server .6:7777
//! ```
//! Group 10.252.1.129:7777/udp: the client's packets reach p1 (IAP) by routing; p2 is the JAP.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use driver_mio::{AgentDriverConfig, AgentTokens, MioAgent, timeout_until};
use pias_proto::auth::MasterKey;
use pias_proto::control::DeliveryMode;
use pias_proto::{IpProtocol, TransportAddr};
use pias_state::agent::AgentConfig;

const NET: &str = "10.252.1";
const MASTER: [u8; 32] = [0x5a; 32];

fn ip(h: &str) -> String {
    format!("{NET}.{h}")
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

/// The `embed` example next to this test binary (`cargo test -p driver-mio` and `cargo test --workspace`
/// build a package's examples; `cargo test --test embed_lab` alone does not).
fn embed_exe() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    let dir = me.parent().and_then(|d| d.parent()).expect("target dir");
    let exe = dir.join("examples").join("embed");
    let build =
        "build it with `cargo build -p driver-mio --example embed` (or run `cargo test -p driver-mio`)";
    let built = fs::metadata(&exe)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} missing: {build}", exe.display()));
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/embed.rs");
    if let Ok(changed) = fs::metadata(&src).and_then(|m| m.modified()) {
        assert!(
            changed <= built,
            "{} is older than its source: {build}",
            exe.display()
        );
    }
    exe
}

/// Everything the test made; removed on drop.
struct Lab {
    ns: [String; 3],
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn new() -> Lab {
        let tag = format!("pem{:04}", std::process::id() % 10_000);
        let lab = Lab {
            ns: [format!("{tag}-c"), format!("{tag}-a"), format!("{tag}-b")],
            dir: std::env::temp_dir().join(format!("{tag}-embed")),
            children: Vec::new(),
        };
        lab.teardown_net();
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).expect("temp dir");
        for n in &lab.ns {
            must("ip", &["netns", "add", n]);
            must("ip", &["-n", n, "link", "set", "lo", "up"]);
        }
        let [c, a, b] = [&lab.ns[0], &lab.ns[1], &lab.ns[2]];
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
            (c, "v-ca", ip("1/30")),
            (a, "v-ac", ip("2/30")),
            (a, "v-ab", ip("5/30")),
            (b, "v-ba", ip("6/30")),
        ] {
            must("ip", &["-n", n, "addr", "add", &addr, "dev", dev]);
            must("ip", &["-n", n, "link", "set", dev, "up"]);
        }
        must("ip", &["-n", c, "route", "add", &ip("0/24"), "via", &ip("2")]);
        must("ip", &["-n", b, "route", "add", &ip("0/30"), "via", &ip("5")]);
        // The JAP's replies carry the group address as source and enter host 1's namespace on v-ab, where
        // that address routes into host 1's own TUN: strict reverse-path filtering would drop them.
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

    fn spawn(&mut self, name: &str, ns: &str, prog: &PathBuf, args: &[String]) {
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(prog)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.children.push((name.to_owned(), child));
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.children
            .iter()
            .map(|(n, _)| format!("----- {n} -----\n{}\n", self.log(n)))
            .collect()
    }

    fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("child")
            .1
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

/// Runs `f` on a thread that has entered network namespace `ns`.
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

type Answers = Vec<(String, String, SocketAddr)>;

/// Sends requests to `to` from `from`, one at a time, until `n` answers or `limit`; returns the answers
/// `(sent, got, answered from)`.
fn ask(from: SocketAddr, to: SocketAddr, n: usize, limit: Duration) -> Answers {
    let s = UdpSocket::bind(from).expect("bind client");
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + limit;
    let mut i = 0;
    while out.len() < n && Instant::now() < end && i < 80 {
        let msg = format!("ping {i}");
        i += 1;
        s.send_to(msg.as_bytes(), to).unwrap();
        if let Ok((len, src)) = s.recv_from(&mut buf) {
            out.push((msg, String::from_utf8_lossy(&buf[..len]).into_owned(), src));
        }
    }
    out
}

/// The target agent on MioAgent's embedding API, in a loop of the test's own, until `stop` (then it
/// deregisters). Returns whether it deregistered and how many acks it got.
fn agent_loop(cfg: AgentDriverConfig, stop: Arc<AtomicBool>) -> (bool, u64) {
    let mut poll = mio::Poll::new().unwrap();
    let mut agent = MioAgent::bind(cfg).unwrap();
    let tokens = AgentTokens {
        socket: mio::Token(7),
        probe: mio::Token(8),
    };
    agent.register(poll.registry(), tokens).unwrap();
    let mut events = mio::Events::with_capacity(8);
    let end = Instant::now() + Duration::from_secs(40);
    let mut stop_by: Option<Instant> = None;
    while Instant::now() < end {
        if stop_by.is_none() && stop.load(Ordering::Relaxed) {
            agent.shutdown();
            stop_by = Some(Instant::now() + Duration::from_secs(3));
        }
        if agent.is_done() || stop_by.is_some_and(|t| Instant::now() > t) {
            break;
        }
        let deadline = agent
            .next_deadline()
            .min(Instant::now() + Duration::from_millis(100));
        poll.poll(&mut events, Some(timeout_until(deadline))).unwrap();
        for ev in &events {
            agent.handle_ready(ev.token());
        }
        if Instant::now() >= deadline {
            agent.handle_timeout();
        }
    }
    (agent.is_done(), agent.counters().acks_ok)
}

fn last_tick(log: &str) -> String {
    log.lines()
        .rfind(|l| l.starts_with("tick "))
        .unwrap_or("")
        .to_owned()
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn embed_example_serves_its_own_echo_and_pias() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (network namespaces, TUN devices, routes): run it as root, as CI does"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "this test needs the `ip` tool: apt-get install iproute2"
    );
    let exe = embed_exe();
    let mut lab = Lab::new();
    let (c, a, b) = (lab.ns[0].clone(), lab.ns[1].clone(), lab.ns[2].clone());
    let master = MasterKey::from_bytes(MASTER);
    let key_file = lab.dir.join("master.key");
    fs::write(&key_file, master.to_hex()).unwrap();
    // Key files are private (pias proxy / pias target refuse others, SPEC.md §8.5).
    fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for (name, ns, id, me, seed, pool) in [("h1", &a, "1", "5", "6", "161"), ("h2", &b, "2", "6", "5", "162")]
    {
        let args: Vec<String> = vec![
            "--id".into(),
            id.into(),
            "--overlay".into(),
            ip(&format!("{me}:6081")),
            "--seed".into(),
            ip(&format!("{seed}:6081")),
            "--master-key-file".into(),
            key_file.to_str().unwrap().into(),
            "--anycast".into(),
            ip("128/28"),
            "--registration".into(),
            ip("150"),
            "--nat-pool".into(),
            ip(pool),
            "--echo".into(),
            ip(&format!("{me}:7000")),
            "--tick-ms".into(),
            "200".into(),
        ];
        lab.spawn(name, ns, &exe, &args);
    }

    // The group's service: a UDP echo next to host 2, and its target agent.
    let stop = Arc::new(AtomicBool::new(false));
    let service: SocketAddr = ip("6:7777").parse().unwrap();
    let stop_echo = stop.clone();
    let echo = in_netns(&b, move || {
        let s = UdpSocket::bind(service).expect("bind echo");
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let end = Instant::now() + Duration::from_secs(40);
        let mut buf = [0u8; 2048];
        let mut served = 0;
        while served < 200 && Instant::now() < end && !stop_echo.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
                served += 1;
            }
        }
        served
    });
    let group: SocketAddr = ip("129:7777").parse().unwrap();
    let group_ta = TransportAddr::new(group.ip(), group.port(), IpProtocol::Udp);
    let agent_cfg = AgentDriverConfig {
        agent: AgentConfig::new(
            group_ta,
            TransportAddr::new(service.ip(), service.port(), IpProtocol::Udp),
            DeliveryMode::Nat,
            ip("150:6082").parse().unwrap(),
            master.group_key(&group_ta),
            1,
            7,
        ),
        bind: None,
        health: None,
    };
    let stop_agent = stop.clone();
    let agent = in_netns(&b, move || agent_loop(agent_cfg, stop_agent));

    // The client: both hosts' own echoes, then the group.
    let (h1_echo, h2_echo): (SocketAddr, SocketAddr) =
        (ip("5:7000").parse().unwrap(), ip("6:7000").parse().unwrap());
    let client: SocketAddr = ip("1:0").parse().unwrap();
    let (own1, own2, pias) = in_netns(&c, move || {
        (
            ask(client, h1_echo, 3, Duration::from_secs(10)),
            ask(client, h2_echo, 3, Duration::from_secs(10)),
            ask(client, group, 11, Duration::from_secs(15)),
        )
    })
    .join()
    .expect("client thread");
    for (who, answers, from) in [("host 1", &own1, h1_echo), ("host 2", &own2, h2_echo)] {
        assert!(
            answers.len() >= 3,
            "{who}'s own echo answered {} times:\n{}",
            answers.len(),
            lab.logs()
        );
        for (sent, got, src) in answers {
            assert_eq!(sent, got);
            assert_eq!(*src, from);
        }
    }
    assert!(
        pias.len() >= 11,
        "the group answered {} times (wanted 11):\n{}",
        pias.len(),
        lab.logs()
    );
    for (sent, got, src) in &pias {
        assert_eq!(sent, got, "echo mismatch");
        assert_eq!(*src, group, "the answer must come from the group address");
    }

    // The hosts' own timers ran beside PIAS, and PIAS moved the traffic: wait (bounded) for status lines
    // printed after the traffic.
    let ok = |lab: &Lab| {
        let (h1, h2) = (last_tick(&lab.log("h1")), last_tick(&lab.log("h2")));
        // At least 3 timer ticks each: the host's own timer keeps running beside PIAS.
        field(&h1, "tick") >= 3
            && field(&h2, "tick") >= 3
            && field(&h1, "members") == 2
            && field(&h2, "members") == 2
            && field(&h1, "echoed") >= 3
            && field(&h2, "echoed") >= 3
            && field(&h1, "overlay_tx") >= 11
            && field(&h2, "tun_rx") >= 11
    };
    let end = Instant::now() + Duration::from_secs(3);
    while !ok(&lab) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ok(&lab),
        "status lines (tick >= 3): host 1 (the IAP) must show members=2, echoed>=3, overlay_tx>=11; host 2 (the JAP) \
         members=2, echoed>=3, tun_rx>=11 (the echo's replies):\n{}\n{}",
        last_tick(&lab.log("h1")),
        last_tick(&lab.log("h2"))
    );
    // Graceful stop: the agent deregisters; each host's proxy leaves, drains and exits, and its TUN goes.
    stop.store(true, Ordering::Relaxed);
    let (deregistered, acks) = agent.join().expect("agent thread");
    assert!(
        acks >= 1 && deregistered,
        "agent: deregistered={deregistered} acks={acks}"
    );
    for h in ["h1", "h2"] {
        let pid = lab.child(h).id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the example).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    for (h, ns) in [("h1", &a), ("h2", &b)] {
        let end = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Ok(Some(st)) = lab.child(h).try_wait() {
                break st;
            }
            assert!(
                Instant::now() < end,
                "{h} did not exit after SIGTERM:\n{}",
                lab.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{h} exit: {status}\n{}", lab.logs());
        assert!(lab.log(h).contains("drained: exiting"), "{h}:\n{}", lab.log(h));
        let o = run("ip", &["-n", ns, "link", "show", "pias0"]);
        assert!(!o.status.success(), "pias0 still exists in {ns}");
    }
    let served = echo.join().unwrap();
    assert!(served >= 11);
}
