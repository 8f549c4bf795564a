//! The health-gated announcement on the namespace lab (SPEC.md §7.7): a proxy that is up but cannot reach
//! any member withdraws its anycast prefixes, and an operator can withdraw and restore them by hand.
//!
//! 1. *Isolation.* The overlay path of the proxy that client c1 enters at is cut at its router: policy rules
//!    in the router's namespace blackhole forwarded packets between that proxy's overlay address and every
//!    other proxy's, so its router link, OSPF (BIRD) and the client traffic stay up — the proxy is running,
//!    announced, and unable to carry anything to another JAP. A DNS watcher at c1 (a query every 10 ms) must
//!    see service again within convergence time (asserted generously: < 10 s; the rule's hold-down is
//!    2 s, OSPF's reaction to a withdrawn route a few hundred ms), c1 must enter elsewhere, and the proxy
//!    must say it is withdrawn because it is isolated. The cut is then lifted: the proxy rejoins, waits out
//!    its hold-up and announces again, and c1 comes back to it.
//! 2. *Operator.* `pias ctl announce off` withdraws (c1 moves, with the graceful leave's table-local copy:
//!    nearly no loss), `auto` restores at once (healthy), `on` is reported as the operator's.
//! 3. *Metrics.* The proxy's real `/metrics` (scraped over HTTP in its namespace) carries the announcement's
//!    gauge and counter with the values the test expects, and every metric deploy/'s alerting rules and
//!    Grafana dashboard use.
//!
//! Needs root and the lab's tools; runs under the lab's lock (one lab at a time, across processes).
mod common;
#[path = "support/metric_names.rs"]
mod metric_names;

use std::time::{Duration, Instant};

use common::lab::*;
use serde_json::Value;

#[test]
fn lab_health_gate_tokio() {
    health_gate("tokio");
}

#[test]
fn lab_health_gate_mio() {
    health_gate("mio");
}

/// `pias ctl --json WHAT ARGS…` against a lab proxy's control socket, parsed.
fn ctl(proxy: &str, args: &[&str]) -> Value {
    let sock = format!("{DIR}/{proxy}/ctl.sock");
    let mut a = vec!["ctl", "--socket", &sock, "--json"];
    a.extend_from_slice(args);
    let o = run(PIAS, &a);
    assert!(
        o.status.success(),
        "pias ctl {args:?} at {proxy}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&text(&o)).unwrap_or_else(|e| panic!("pias ctl {args:?}: {e}: {}", text(&o)))
}

/// `(up, reason, mode)` of a proxy's announcement.
fn announce(proxy: &str) -> (bool, String, String) {
    let v = ctl(proxy, &["announce"]);
    (
        v["up"] == Value::Bool(true),
        v["reason"].as_str().unwrap_or_default().to_owned(),
        v["mode"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The overlay address (IP) of every member `proxy` lists: its own first.
fn overlay_ips(proxy: &str) -> (String, Vec<String>) {
    let members = ctl(proxy, &["members"]);
    let ip = |m: &Value| {
        let a = m["addr"].as_str().expect("member addr");
        a.rsplit_once(':').expect("ip:port").0.to_owned()
    };
    let arr = members.as_array().expect("members");
    let me = arr
        .iter()
        .find(|m| m["self"] == Value::Bool(true))
        .map(ip)
        .expect("self");
    let others: Vec<String> = arr
        .iter()
        .filter(|m| m["self"] != Value::Bool(true))
        .map(ip)
        .collect();
    (me, others)
}

/// Blackholes (`add`) or restores (`del`) the forwarded overlay traffic between `me` and each of `others`
/// in `router`'s namespace, both directions. Forwarded only: the router's own OSPF and every other flow
/// through it are untouched.
fn cut(router: &str, me: &str, others: &[String], add: bool) {
    for (i, o) in others.iter().enumerate() {
        for (j, (from, to)) in [(me, o.as_str()), (o.as_str(), me)].into_iter().enumerate() {
            let pref = (100 + 2 * i + j).to_string();
            let args: Vec<&str> = if add {
                vec![
                    "ip",
                    "rule",
                    "add",
                    "pref",
                    &pref,
                    "from",
                    from,
                    "to",
                    to,
                    "blackhole",
                ]
            } else {
                vec!["ip", "rule", "del", "pref", &pref]
            };
            let o = exec(router, &args);
            assert!(
                o.status.success() || !add,
                "{router}: {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// Polls `cond` every 200 ms for up to `limit`; how long it took, or `None`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// A metric's value in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

fn scrape(proxy: &str) -> String {
    text(&exec(
        proxy,
        &["curl", "-s", "--max-time", "5", "http://127.0.0.1:9851/metrics"],
    ))
}

fn health_gate(driver: &str) {
    let lab_ = Lab::up(driver);
    let victim = ingress("c1");
    assert!(victim.starts_with('p'), "c1 enters at a proxy: {victim:?}");
    let router = victim.replacen('p', "r", 1);
    assert!(
        answer(&dig("c1", DNS4, "A")).is_some(),
        "c1 is served before the test"
    );
    assert_eq!(
        announce(&victim),
        (true, "healthy".into(), "auto".into()),
        "{victim} announces, healthy, before the cut"
    );
    let page = scrape(&victim);
    assert_eq!(metric(&page, "pias_announced"), Some(1), "{page}");
    let withdrawals = metric(&page, "pias_announce_withdrawals_total").expect("withdrawals counter");
    let unknown = metric_names::unknown_names(&page);
    assert!(
        unknown.is_empty(),
        "deploy/ monitoring files use metrics {victim}'s /metrics lacks:\n{}",
        unknown.join("\n")
    );

    // 1. Isolation: the overlay path is cut, the router link stays up.
    let (me, others) = overlay_ips(&victim);
    assert_eq!(
        others.len(),
        PROXIES.len() - 1,
        "{victim} knows every other proxy"
    );
    let (probes, at) = watch(
        "c1",
        DNS4,
        Duration::from_secs(12),
        Duration::from_millis(600),
        || cut(&router, &me, &others, true),
    );
    let isolated = outage(&probes, at, 2, |_| true);
    let state = announce(&victim);
    let now_at = ingress("c1");
    let log = std::fs::read_to_string(format!("{DIR}/{victim}/proxy.log")).unwrap_or_default();
    cut(&router, &me, &others, false);
    let (ms, stray) = isolated.unwrap_or_else(|| {
        panic!("c1 was not served again within 11 s of isolating {victim} (its state: {state:?})")
    });
    eprintln!(
        "{driver}: {victim} isolated: withdrawn ({}), c1 now enters at {now_at}, answered again after {ms} ms \
         ({stray} isolated losses)",
        state.1
    );
    assert_eq!(
        (state.0, state.1.as_str()),
        (false, "isolated"),
        "{victim} must withdraw because it is isolated"
    );
    assert_ne!(now_at, victim, "c1 must enter at another proxy");
    assert!(
        ms < 10_000,
        "queries went into a black hole for {ms} ms after the isolation (> 10 s)"
    );
    assert!(
        log.contains("anycast routes withdrawn"),
        "{victim} logs the withdrawal"
    );
    let page = scrape(&victim);
    assert_eq!(metric(&page, "pias_announced"), Some(0), "{page}");
    assert_eq!(
        metric(&page, "pias_announce_withdrawals_total"),
        Some(withdrawals + 1),
        "one withdrawal counted"
    );

    // Restored: the proxy rejoins (reconnect probes every ae_interval), is healthy for the hold-up (5 s)
    // and announces again; c1 comes back.
    let back = wait_for(Duration::from_secs(40), || {
        announce(&victim).0 && ingress("c1") == victim
    })
    .unwrap_or_else(|| {
        panic!(
            "{victim} did not announce again within 40 s of the cut's end: {:?}",
            announce(&victim)
        )
    });
    eprintln!(
        "{driver}: cut lifted: {victim} announced and c1 back after {:.1} s",
        back.as_secs_f64()
    );
    assert!(
        back >= Duration::from_secs(5),
        "announced {back:?} after the cut's end: before the 5 s hold-up"
    );
    assert_eq!(announce(&victim).1, "healthy");
    let served = wait_for(Duration::from_secs(10), || {
        answer(&dig("c1", DNS4, "A")).is_some()
    });
    assert!(served.is_some(), "c1 is served through {victim} again");

    // 2. The operator: off withdraws (nearly no loss: the routes stay in table local while routing
    //    converges), auto restores at once, on is the operator's.
    let (probes, at) = watch(
        "c1",
        DNS4,
        Duration::from_secs(4),
        Duration::from_millis(600),
        || {
            let v = ctl(&victim, &["announce", "off"]);
            assert_eq!(v["up"], Value::Bool(false), "{v}");
        },
    );
    let (ms, stray) = outage(&probes, at, 2, |_| true).expect("c1 is served after `announce off`");
    let moved = ingress("c1");
    eprintln!(
        "{driver}: announce off: c1 enters at {moved}, answered again after {ms} ms ({stray} isolated losses)"
    );
    assert_ne!(moved, victim, "`announce off` moves c1 elsewhere");
    assert!(ms < 10_000, "`announce off`: {ms} ms without answers");
    assert_eq!(announce(&victim), (false, "operator".into(), "off".into()));
    let v = ctl(&victim, &["announce", "auto"]);
    assert_eq!(
        v["up"],
        Value::Bool(true),
        "healthy: `auto` announces at once: {v}"
    );
    let back = wait_for(Duration::from_secs(10), || ingress("c1") == victim);
    assert!(back.is_some(), "c1 comes back to {victim} after `announce auto`");
    let v = ctl(&victim, &["announce", "on"]);
    assert_eq!(
        (v["up"].clone(), v["reason"].clone()),
        (Value::Bool(true), Value::from("operator")),
        "{v}"
    );
    let v = ctl(&victim, &["announce", "auto"]);
    assert_eq!(v["reason"], Value::from("healthy"), "{v}");

    // 3. The real /metrics: every withdrawal counted (isolation, operator).
    let page = scrape(&victim);
    assert_eq!(metric(&page, "pias_announced"), Some(1), "{page}");
    assert_eq!(
        metric(&page, "pias_announce_withdrawals_total"),
        Some(withdrawals + 2)
    );
    drop(lab_);
}
