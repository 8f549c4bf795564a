//! Health that follows the service (SPEC.md §10.3): a dead or hung service behind a live agent is no black
//! hole. Two target sites (t1, t3) serve DNS (dnsmasq) and HTTP (python3 http.server); every site agent
//! checks its service (DNS: a query; HTTP: `GET /whoami`, see `pias lab`'s services).
//!
//! 1. SIGKILL one site's dnsmasq, its agent alive: queries (a new flow every 10 ms) are answered by the
//!    other site within 1 s, and none is lost after that; the agent says "service down" and its target is
//!    gone from the JAPs.
//! 2. Restart that dnsmasq: the target is registered again and answers queries (from a client whose
//!    ingress did not cache the group while the target was away).
//! 3. SIGSTOP t1's HTTP server (the kernel still completes TCP handshakes for it): new connections started
//!    1 s or more after the stop are all answered by t3.
//! 4. SIGCONT: t1 is registered again and answers connections (again from a client with a cold cache).
//!
//! Run one at a time, as root: `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_service_health`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::*;

#[test]
fn lab_service_health_tokio() {
    service_health("tokio");
}

#[test]
fn lab_service_health_mio() {
    service_health("mio");
}

/// Whether any proxy lists `service` (IP:PORT) among its registrations (a whole word, or with its
/// protocol: an agent's source address `IP:53xxx` is not the service `IP:53`).
fn registered(service: &str) -> bool {
    let with_proto = format!("{service}/");
    PROXIES.iter().any(|p| {
        let sock = format!("{DIR}/{p}/ctl.sock");
        text(&run(PIAS, &["ctl", "--socket", &sock, "registrations"]))
            .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
            .any(|w| w == service || w.starts_with(&with_proto))
    })
}

/// Waits up to `t` for `cond`.
fn wait(t: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + t;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `sig` (STOP, CONT, …) to a lab daemon.
fn signal(node: &str, daemon: &str, sig: &str) {
    let pid = pid_of(node, daemon);
    assert!(pid > 1, "{node}/{daemon}: bad pid");
    let o = run("bash", &["-c", &format!("kill -s {sig} {pid}")]);
    assert!(o.status.success(), "kill -s {sig} {node}/{daemon} (pid {pid})");
}

/// Whether a lab daemon's process still exists.
fn alive(node: &str, daemon: &str) -> bool {
    let pid = pid_of(node, daemon);
    run("bash", &["-c", &format!("kill -0 {pid}")]).status.success()
}

fn agent_log(site: &str, group: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{site}/agent-{group}.log")).unwrap_or_default()
}

/// `curl http://HTTP4/whoami` from c1, one new connection every `every` for `total`, each in a thread of
/// its own (a connection to a hung server blocks until its `--max-time`); returns (start ms, the site that
/// answered or None), and the time of the first start.
fn curl_series(total: Duration, every: Duration) -> (Vec<(u64, Option<String>)>, u64) {
    let url = format!("http://{HTTP4}/whoami");
    let ns = format!("{NAME}-c1");
    let t0 = unix_ms();
    let mut handles = Vec::new();
    let end = Instant::now() + total;
    while Instant::now() < end {
        let (url, ns) = (url.clone(), ns.clone());
        handles.push(std::thread::spawn(move || {
            let at = unix_ms();
            let o = Command::new("ip")
                .args(["netns", "exec", &ns, "curl", "-sS", "--max-time", "2.5", &url])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .expect("curl");
            let body = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            (at, (o.status.success() && !body.is_empty()).then_some(body))
        }));
        std::thread::sleep(every);
    }
    let mut v: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("curl thread"))
        .collect();
    v.sort();
    (v, t0)
}

fn service_health(driver: &str) {
    let _lab = Lab::up(driver);
    const DNS_GROUP: &str = "10.99.0.53-53-udp";
    const HTTP_GROUP: &str = "10.99.0.80-80-tcp";
    for t in [T1.0, T3.0] {
        for port in [53, 80] {
            let svc = format!("{t}:{port}");
            assert!(
                wait(Duration::from_secs(5), || registered(&svc)),
                "{svc} is not registered: its health check should pass\n{}",
                logs()
            );
        }
    }

    // 1. SIGKILL the dnsmasq that answers c1 (its agent keeps running).
    let served = answer(&dig("c1", DNS4, "A")).expect("c1 answered");
    let (site, other_site) = if served == T1.0 {
        ("t1", "t3")
    } else {
        ("t3", "t1")
    };
    let agent = format!("agent-{DNS_GROUP}");
    let (probes, at) = watch(
        "c1",
        DNS4,
        Duration::from_secs(4),
        Duration::from_millis(600),
        || kill9(site, "dnsmasq"),
    );
    let (ms, _) = outage(&probes, at, 1, |a| a != served)
        .unwrap_or_else(|| panic!("queries must be answered by {other_site} after {site}'s dnsmasq died"));
    eprintln!("{site}'s dnsmasq killed: every query answered by {other_site} from {ms} ms on");
    assert!(
        ms <= 1000,
        "dead DNS service: queries were answered by the other target only after {ms} ms (> 1 s)\n{}",
        logs()
    );
    assert!(alive(site, &agent), "{site}'s agent must still run");
    assert!(
        agent_log(site, DNS_GROUP).contains("service down"),
        "the agent must say why it deregistered:\n{}",
        agent_log(site, DNS_GROUP)
    );
    let svc = format!("{served}:53");
    assert!(
        wait(Duration::from_secs(2), || !registered(&svc)),
        "{svc} must be deregistered while its service is dead"
    );

    // 2. The service comes back (`lab up` starts what is not running): registered again, answering.
    let o = lab(&["up"]);
    assert!(
        o.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        wait(Duration::from_secs(5), || registered(&svc)),
        "{svc} must be registered again once dnsmasq answers\n{}",
        agent_log(site, DNS_GROUP)
    );
    assert!(
        agent_log(site, DNS_GROUP).contains("service up"),
        "the agent must say it registers again"
    );
    // From c2: c1's ingress cached the group's JAPs while the target was away (for cache_ttl, §9.3); c2's
    // ingress has not resolved the group yet, and (once the JAP's report is in, §9.1) gets both JAPs.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        (0..100).any(|_| answer(&dig("c2", DNS4, "A")).as_deref() == Some(served.as_str())),
        "{site} must answer queries again"
    );
    eprintln!("{site}'s dnsmasq restarted: registered and answering again");

    // 3. SIGSTOP t1's HTTP server: a hung service, whose kernel still accepts connections.
    let (site, me, other) = ("t1", "t1", "t3");
    let http_svc = format!("{}:80", T1.0);
    let (curls, t0) = {
        let stopper = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            let at = unix_ms();
            signal("t1", "http", "STOP");
            at
        });
        let (v, first) = curl_series(Duration::from_secs(4), Duration::from_millis(100));
        let at = stopper.join().expect("stopper");
        assert!(at >= first);
        (v, at)
    };
    let late: Vec<_> = curls.iter().filter(|c| c.0 >= t0 + 1000).collect();
    assert!(late.len() >= 20, "too few connections after the stop: {curls:?}");
    let bad: Vec<_> = late.iter().filter(|c| c.1.as_deref() != Some(other)).collect();
    assert!(
        bad.is_empty(),
        "connections started 1 s or more after {site}'s HTTP server hung must all be answered by {other}; \
         these were not (start ms after the stop, answer): {:?}\n{}",
        bad.iter().map(|c| (c.0 - t0, c.1.clone())).collect::<Vec<_>>(),
        logs()
    );
    // From when on every new connection was answered by the other site.
    let settled = curls
        .iter()
        .filter(|c| c.0 >= t0 && c.1.as_deref() != Some(other))
        .map(|c| c.0 - t0 + 1)
        .max()
        .unwrap_or(0);
    eprintln!(
        "{site}'s HTTP server stopped: every connection started from {settled} ms on answered by {other}"
    );
    assert!(alive(site, &format!("agent-{HTTP_GROUP}")));
    assert!(
        wait(Duration::from_secs(2), || !registered(&http_svc)),
        "{http_svc} must be deregistered while its server hangs"
    );

    // 4. SIGCONT: registered again, answering new connections.
    signal("t1", "http", "CONT");
    assert!(
        wait(Duration::from_secs(5), || registered(&http_svc)),
        "{http_svc} must be registered again once its server answers\n{}",
        agent_log(site, HTTP_GROUP)
    );
    let url = format!("http://{HTTP4}/whoami");
    // From c2, whose ingress has not resolved the HTTP group yet (c1's cached it without t1's JAP), once
    // t1's JAP reported its new count to the group's RAPs (report_delay, a round trip; §9.1): resolved
    // before that, c2's ingress would cache the JAPs without t1's too.
    std::thread::sleep(Duration::from_secs(1));
    let back = (0..100).any(|_| {
        let o = exec("c2", &["curl", "-sS", "--max-time", "2", &url]);
        text(&o).trim() == me
    });
    assert!(back, "{me} must answer connections again after SIGCONT");
    eprintln!("{site}'s HTTP server continued: registered and answering again");
}
