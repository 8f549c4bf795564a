//! The namespace lab's test harness, shared by the lab test binaries (`lab_e2e`, `lab_attack_*`): bring a
//! lab up under a lock (one lab at a time, across processes), run commands in its nodes, read every
//! proxy's counters, and tear it down on drop (also on panic).
//!
//! OSPF topology (see `pias lab topology --routing ospf`): r1 — r2 — r3 (OSPF cost 10 per hop); client cN and proxy pN
//! on rN; target sites t1 on r1 and t3 on r3; groups 10.99.0.53:53/udp (exclude_sender), [fd99::53]:53/udp,
//! 10.99.0.80:80/tcp (affinity); registration 10.99.0.1 / fd99::1.
//!
//! [`Lab::up_with`] brings up the BGP topology instead (`pias lab topology --routing bgp`): seven ASes, one
//! router each, with p1..p3, c1..c3, t1 and t3 at the same routers and link 1 = r1–r2, so a test written for
//! the OSPF lab runs on it too; only the sites' addresses differ ([`site_addrs`]), and clients c4..c7 are
//! added.
#![allow(dead_code)] // each test binary uses part of the harness

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) const PIAS: &str = env!("CARGO_BIN_EXE_pias");
pub(crate) const NAME: &str = "pe2e";
pub(crate) const DIR: &str = "/tmp/pe2e-lab";
pub(crate) const DNS4: &str = "10.99.0.53";
pub(crate) const DNS6: &str = "fd99::53";
pub(crate) const HTTP4: &str = "10.99.0.80";
pub(crate) const CLIENTS: [&str; 3] = ["c1", "c2", "c3"];
pub(crate) const PROXIES: [&str; 3] = ["p1", "p2", "p3"];
/// Site addresses in the default topology (attachments 7 and 8).
pub(crate) const T1: (&str, &str) = ("10.1.7.2", "fd01:7::2");
pub(crate) const T3: (&str, &str) = ("10.1.8.2", "fd01:8::2");

pub(crate) static LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn topo_file() -> String {
    format!("/tmp/{NAME}-topology.toml")
}

pub(crate) fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

pub(crate) fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `pias lab --topology T --dir D ARGS…`
pub(crate) fn lab(args: &[&str]) -> Output {
    let t = topo_file();
    let mut a = vec!["lab", "--topology", &t, "--dir", DIR];
    a.extend_from_slice(args);
    run(PIAS, &a)
}

/// A command in a lab node's namespace.
pub(crate) fn exec(node: &str, args: &[&str]) -> Output {
    let ns = format!("{NAME}-{node}");
    let mut a = vec!["netns", "exec", &ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// The running lab; tears it down when dropped (also on panic).
pub(crate) struct Lab {
    _lock: std::sync::MutexGuard<'static, ()>,
    /// `flock` on [`LOCK_FILE`]: other test processes (another target dir, another session) wait too.
    _flock: std::fs::File,
}

/// Held (flock) while a lab named [`NAME`] is up, across processes.
pub(crate) const LOCK_FILE: &str = "/tmp/pe2e-lab.lock";

pub(crate) fn flock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(LOCK_FILE).expect("lock file");
    // SAFETY: a valid open descriptor; LOCK_EX blocks until the other holder closes it.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock {LOCK_FILE}: {}", std::io::Error::last_os_error());
    f
}

impl Lab {
    /// Brings the lab up with every proxy and agent on `driver` ("tokio" or "mio").
    pub(crate) fn up(driver: &str) -> Lab {
        Self::up_with(driver, "ospf")
    }

    /// Brings up the built-in topology of `routing` ("ospf" or "bgp") with every proxy and agent on
    /// `driver`.
    pub(crate) fn up_with(driver: &str, routing: &str) -> Lab {
        let lock = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let fl = flock();
        preflight();
        let topo = text(&run(PIAS, &["lab", "topology", "--routing", routing]))
            .replace("name = \"pias\"", &format!("name = \"{NAME}\""))
            .replace("driver = \"tokio\"", &format!("driver = \"{driver}\""));
        assert!(
            topo.contains(&format!("driver = \"{driver}\"")),
            "the lab topology names no driver"
        );
        assert_eq!(
            topo.contains("routing = \"bgp\""),
            routing == "bgp",
            "the {routing} topology"
        );
        std::fs::write(topo_file(), topo).expect("writing the test topology");
        let _ = lab(&["down"]);
        let l = Lab {
            _lock: lock,
            _flock: fl,
        };
        let t0 = Instant::now();
        let o = lab(&["up"]);
        assert!(
            o.status.success(),
            "pias lab up failed after {:?}:\n{}\n{}\n{}",
            t0.elapsed(),
            text(&o),
            String::from_utf8_lossy(&o.stderr),
            logs()
        );
        eprintln!("lab up in {:.1} s", t0.elapsed().as_secs_f64());
        l
    }

    /// Starts whatever is not running (after a kill) and waits until everything is registered again.
    pub(crate) fn restore(&self) {
        let o = lab(&["up"]);
        assert!(
            o.status.success(),
            "pias lab up (restore): {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            logs()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", logs());
        }
        let o = lab(&["down"]);
        if !o.status.success() {
            eprintln!("pias lab down failed: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

/// The tail of every proxy and agent log, for failure messages.
pub(crate) fn logs() -> String {
    let mut s = String::new();
    for n in PROXIES.iter().chain(["t1", "t3"].iter()) {
        let Ok(rd) = std::fs::read_dir(format!("{DIR}/{n}")) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                s.push_str(&format!("--- {} (last lines)\n", p.display()));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
    }
    s
}

/// Root and every tool, or a failing test that says what to install.
pub(crate) fn preflight() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .flatten();
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "the lab tests need root (network namespaces, veth, TUN); CI runs as root"
    );
    let mut missing = Vec::new();
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("bird", "bird2"),
        ("birdc", "bird2"),
        ("dnsmasq", "dnsmasq"),
        ("dig", "dnsutils"),
        ("curl", "curl"),
        ("python3", "python3"),
        ("sha256sum", "coreutils"),
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
            .iter()
            .any(|d| std::path::Path::new(&format!("{d}/{tool}")).exists());
        if !found {
            missing.push(pkg);
        }
    }
    assert!(
        missing.is_empty(),
        "lab tools missing: apt-get install -y {}",
        missing.join(" ")
    );
}

/// `proxy → counter → value` for every proxy.
pub(crate) fn counters() -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for l in text(&lab(&["counters"])).lines() {
        let v: Vec<&str> = l.split_whitespace().collect();
        if let [p, n, x] = v[..]
            && let Ok(x) = x.parse()
        {
            m.entry(p.to_owned()).or_default().insert(n.to_owned(), x);
        }
    }
    m
}

pub(crate) fn delta(
    a: &BTreeMap<String, BTreeMap<String, u64>>,
    b: &BTreeMap<String, BTreeMap<String, u64>>,
    p: &str,
    n: &str,
) -> u64 {
    let g =
        |m: &BTreeMap<String, BTreeMap<String, u64>>| m.get(p).and_then(|c| c.get(n)).copied().unwrap_or(0);
    g(b).saturating_sub(g(a))
}

/// Every counter that changed between two scrapes, per proxy, for a failure message.
pub(crate) fn changed(
    a: &BTreeMap<String, BTreeMap<String, u64>>,
    b: &BTreeMap<String, BTreeMap<String, u64>>,
) -> String {
    let mut out = String::new();
    for (p, c) in b {
        for (n, v) in c {
            let before = a.get(p).and_then(|c| c.get(n)).copied();
            if before != Some(*v) {
                out.push_str(&format!(
                    "\n  {p} {n} {} -> {v}",
                    before.map_or("-".into(), |x| x.to_string())
                ));
            }
        }
    }
    out
}

/// Proxies whose counter `n` grew.
pub(crate) fn grew(
    a: &BTreeMap<String, BTreeMap<String, u64>>,
    b: &BTreeMap<String, BTreeMap<String, u64>>,
    n: &str,
) -> Vec<String> {
    PROXIES
        .iter()
        .filter(|p| delta(a, b, p, n) > 0)
        .map(|p| p.to_string())
        .collect()
}

/// The proxy a client reaches for an anycast address (kernel routes, hop by hop, as `pias lab status`).
pub(crate) fn ingress(client: &str) -> String {
    let out = text(&lab(&["status"]));
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(client))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .unwrap_or_default()
}

/// `dig` through a group from a node; returns the full output.
pub(crate) fn dig(node: &str, server: &str, qtype: &str) -> String {
    let at = format!("@{server}");
    let o = exec(node, &["dig", &at, "+time=1", "+tries=2", "www.demo.pias", qtype]);
    text(&o)
}

/// The first answer address of a dig output.
pub(crate) fn answer(out: &str) -> Option<String> {
    out.lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .nth(1)
        .and_then(|l| l.split_whitespace().last().map(str::to_owned))
}

pub(crate) fn pid_of(node: &str, daemon: &str) -> u32 {
    let p = format!("{DIR}/{node}/{daemon}.pid");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .parse()
        .expect("pid file")
}

pub(crate) fn kill9(node: &str, daemon: &str) {
    let pid = pid_of(node, daemon);
    assert!(pid > 1, "{node}/{daemon}: bad pid");
    // bash's builtin kill: procps may not be installed.
    let o = run("bash", &["-c", &format!("kill -s KILL {pid}")]);
    assert!(o.status.success(), "kill {node}/{daemon} (pid {pid})");
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Runs a DNS watcher (a query every 10 ms, 60 ms timeout, new source port each) in `client` for
/// `total`, calls `event` after `lead`; returns (probes, event time). Probe: (sent ms, answer or None).
pub(crate) fn watch(
    client: &str,
    server: &str,
    total: Duration,
    lead: Duration,
    event: impl FnOnce(),
) -> (Vec<(u64, Option<String>)>, u64) {
    let ns = format!("{NAME}-{client}");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            PIAS,
            "lab",
            "dns-watch",
            "--server",
            &format!("{server}:53"),
        ])
        .args([
            "--duration-ms",
            &total.as_millis().to_string(),
            "--interval-ms",
            "10",
            "--timeout-ms",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dns-watch");
    std::thread::sleep(lead);
    let at = unix_ms();
    event();
    let out = child.wait_with_output().expect("dns-watch output");
    let probes = text(&out)
        .lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            let sent = v.first()?.parse().ok()?;
            let a = v.get(2).filter(|a| **a != "timeout").map(|a| a.to_string());
            Some((sent, a))
        })
        .collect();
    (probes, at)
}

/// From `at` to the sending of the first good query after the last run of at least `min_run` consecutive
/// bad ones (a timeout, or an answer `good` rejects); also the number of bad queries outside such runs
/// (isolated losses). `min_run = 1` is the strict measure: every query after the returned time succeeded.
pub(crate) fn outage(
    probes: &[(u64, Option<String>)],
    at: u64,
    min_run: usize,
    good: impl Fn(&str) -> bool,
) -> Option<(u64, usize)> {
    let after: Vec<_> = probes.iter().filter(|p| p.0 >= at).collect();
    let ok: Vec<bool> = after.iter().map(|p| p.1.as_deref().is_some_and(&good)).collect();
    if ok.last() != Some(&true) {
        return None; // still failing at the end of the watch
    }
    // Index of the first good query after the last run of >= min_run bad ones (0 if there was none).
    let (mut start, mut run) = (0, 0);
    for (i, &g) in ok.iter().enumerate() {
        if g {
            if run >= min_run {
                start = i;
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    let isolated = ok[start..].iter().filter(|g| !**g).count();
    Some((after[start].0 - at, isolated))
}

pub(crate) fn sha256(path: &str) -> String {
    text(&run("sha256sum", &[path]))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Milliseconds since the Unix epoch of a log line's leading RFC 3339 UTC timestamp
/// (`2026-11-25T19:04:26.995756Z ...`, tracing's default format).
pub(crate) fn log_ms(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 24 + h) * 60 + min) * 60_000 + (sec * 1000.0) as i64;
    u64::try_from(ms).ok()
}

/// A site's (IPv4, IPv6) address in the running lab, from `pias lab status` ([`T1`] and [`T3`] in the OSPF
/// topology; the BGP topology numbers its attachments differently).
pub(crate) fn site_addrs(site: &str) -> (String, String) {
    let out = text(&lab(&["status"]));
    out.lines()
        .skip_while(|l| !l.starts_with("target sites:"))
        .find_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            (v.first() == Some(&site) && v.len() >= 3).then(|| (v[1].to_owned(), v[2].to_owned()))
        })
        .unwrap_or_else(|| panic!("{site} is not among the target sites of `pias lab status`:\n{out}"))
}

/// `birdc show route for PREFIX all` on a router or proxy of the lab.
pub(crate) fn bird_routes(node: &str, prefix: &str) -> String {
    let ctl = format!("{DIR}/{node}/bird.ctl");
    text(&run(
        "birdc",
        &["-s", &ctl, "show", "route", "for", prefix, "all"],
    ))
}
