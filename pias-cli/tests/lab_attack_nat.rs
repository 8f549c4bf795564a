//! Lab attack: NAT exhaustion by spoofed new flows (SPEC.md §11.3-11.4).
//!
//! From client c1's namespace, `pias lab flood` sends 5,000 spoofed new UDP flows per second for 60 s (one DNS
//! query each to the group 10.99.0.53:53, sources random in 198.18.0.0/15 with random ports) — 300,000 new
//! flows against the JAP that serves c1 (t3's DNS agent is stopped first, so that t1 is the group's only target
//! and p1 its only JAP: all of the flood goes to one NAT). Nothing is configured smaller: at 5,000/s the one IPv4 pool address's
//! 64,512 UDP ports run out after ~13 s even with the 30 s transitory timeout, so the JAP must drop early for
//! the rest of the run. Meanwhile c1 keeps one long-lived DNS flow (one source port, a query every 100 ms:
//! assured) and makes a legitimate new flow (a new source port) every 100 ms.
//!
//! Asserted: at least 99% of the legitimate new flows are answered; the long-lived flow's binding is the same
//! binding (same pool endpoint) after the flood as before it, still assured; the JAP's `nat_early_drop` rose
//! and no flow was refused because the table was full of protected bindings.
//!
//! The replies to spoofed sources must not leave the lab: 198.18.0.0/15 is routed to a blackhole in every
//! proxy and router namespace before the flood (the JAP writes them to its TUN, where the kernel drops
//! them), and the flood tool refuses any non-lab address.
//!
//! Needs root and the lab's tools; run under the cross-helper lock:
//! `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_attack_nat`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::*;

const FLOOD_SOURCES: &str = "198.18.0.0/15";
const RATE: u32 = 5000;
const FLOOD_S: u64 = 60;
/// The long-lived flow's source port.
const STREAM_PORT: u16 = 45353;

#[test]
fn lab_attack_nat_flood_tokio() {
    lab_attack_nat_flood("tokio");
}

#[test]
fn lab_attack_nat_flood_mio() {
    lab_attack_nat_flood("mio");
}

#[test]
fn lab_attack_nat_prefix_cap_tokio() {
    lab_attack_nat_prefix_cap("tokio");
}

/// A flood from one /24 only (198.18.5.0/24, 5,000/s for 10 s): the JAP admits `nat.new_per_prefix` (4,096)
/// new bindings from it and refuses the rest (`nat_prefix_refused`), without early drop (the ports are far
/// from exhausted), while a legitimate client in another prefix keeps making new flows.
fn lab_attack_nat_prefix_cap(driver: &str) {
    let _lab = Lab::up(driver);
    one_jap_and_blackholed_sources();
    let a = counters();
    let legit = spawn_in(
        "c1",
        &[
            PIAS,
            "lab",
            "dns-watch",
            "--server",
            &format!("{DNS4}:53"),
            "--duration-ms",
            "10000",
            "--interval-ms",
            "100",
            "--timeout-ms",
            "1000",
        ],
    );
    let flood = spawn_in(
        "c1",
        &[
            PIAS,
            "lab",
            "flood",
            "--server",
            &format!("{DNS4}:53"),
            "--sources",
            "198.18.5.0/24",
            "--rate",
            "5000",
            "--duration-ms",
            "10000",
        ],
    );
    let f = flood.wait_with_output().expect("flood");
    let l = legit.wait_with_output().expect("legit dns-watch");
    let b = counters();
    assert!(
        f.status.success(),
        "flood: {}",
        String::from_utf8_lossy(&f.stderr)
    );
    let (created, refused) = (
        delta(&a, &b, "p1", "nat_created"),
        delta(&a, &b, "p1", "nat_prefix_refused"),
    );
    eprintln!(
        "{}; p1: nat_created +{created}, nat_prefix_refused +{refused}",
        text(&f).trim()
    );
    // 4,096 from the /24 at most (plus the legitimate ~100), the other ~45,000 refused.
    assert!(
        created <= 4096 + 200,
        "p1 created {created} bindings{}",
        changed(&a, &b)
    );
    assert!(
        refused >= 40_000,
        "p1 refused only {refused} new flows of the /24{}",
        changed(&a, &b)
    );
    assert_eq!(delta(&a, &b, "p1", "nat_early_drop"), 0, "no early drop needed");
    let (ok, n) = answered(&text(&l));
    eprintln!("legitimate new flows: {ok} of {n} answered");
    assert!(
        n >= 80 && ok * 100 >= n * 99,
        "{ok} of {n} legitimate new flows answered"
    );
}

/// The binding of c1's long-lived flow, from every proxy's NAT dump: (proxy, pool endpoint, class).
fn stream_binding() -> Option<(String, String, String)> {
    for p in PROXIES {
        let sock = format!("{DIR}/{p}/ctl.sock");
        let o = run(
            PIAS,
            &["ctl", "--socket", &sock, "nat", "--json", "--limit", "2000"],
        );
        let v: serde_json::Value = serde_json::from_str(&text(&o)).unwrap_or_default();
        for b in v["bindings"].as_array().into_iter().flatten() {
            let client = b["client"].as_str().unwrap_or_default();
            if client.ends_with(&format!(":{STREAM_PORT}"))
                && b["group"].as_str() == Some("10.99.0.53:53/udp")
            {
                return Some((
                    p.to_string(),
                    b["pool"].as_str().unwrap_or_default().to_owned(),
                    b["class"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    None
}

fn spawn_in(node: &str, args: &[&str]) -> std::process::Child {
    let ns = format!("{NAME}-{node}");
    Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn in lab namespace")
}

/// (answered, total) of a `dns-watch` output.
fn answered(out: &str) -> (usize, usize) {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.split_whitespace().count() == 3)
        .collect();
    let ok = lines.iter().filter(|l| !l.ends_with(" timeout")).count();
    (ok, lines.len())
}

fn lab_attack_nat_flood(driver: &str) {
    let _lab = Lab::up(driver);
    one_jap_and_blackholed_sources();

    // The long-lived flow: one source port, a query every 100 ms, for the whole run and the cool-down.
    let total_ms = (5 + FLOOD_S + 40) * 1000;
    let stream = spawn_in(
        "c1",
        &[
            PIAS,
            "lab",
            "dns-watch",
            "--server",
            &format!("{DNS4}:53"),
            "--duration-ms",
            &total_ms.to_string(),
            "--interval-ms",
            "100",
            "--timeout-ms",
            "1000",
            "--src-port",
            &STREAM_PORT.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    let before = stream_binding().expect("the long-lived flow has a binding at its JAP");
    assert_eq!(
        before.2, "Udp",
        "the long-lived flow is assured before the flood: {before:?}"
    );
    let jap = before.0.clone();
    eprintln!("long-lived flow at {jap}, pool endpoint {}", before.1);

    let a = counters();
    let legit = spawn_in(
        "c1",
        &[
            PIAS,
            "lab",
            "dns-watch",
            "--server",
            &format!("{DNS4}:53"),
            "--duration-ms",
            &(FLOOD_S * 1000).to_string(),
            "--interval-ms",
            "100",
            "--timeout-ms",
            "1000",
        ],
    );
    let flood = spawn_in(
        "c1",
        &[
            PIAS,
            "lab",
            "flood",
            "--server",
            &format!("{DNS4}:53"),
            "--sources",
            FLOOD_SOURCES,
            "--rate",
            &RATE.to_string(),
            "--duration-ms",
            &(FLOOD_S * 1000).to_string(),
        ],
    );
    let f = flood.wait_with_output().expect("flood");
    let l = legit.wait_with_output().expect("legit dns-watch");
    let b = counters();
    let f_out = text(&f);
    assert!(
        f.status.success(),
        "flood: {f_out} {}",
        String::from_utf8_lossy(&f.stderr)
    );
    let sent: u64 = f_out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sent="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let want = u64::from(RATE) * FLOOD_S;
    assert!(sent >= want * 97 / 100, "the flood sent {sent} of {want}");
    let created = delta(&a, &b, &jap, "nat_created");
    let early = delta(&a, &b, &jap, "nat_early_drop");
    eprintln!(
        "flood sent {sent}; {jap}: nat_created +{created}, nat_early_drop +{early}, port_exhausted +{}, refused_full +{}",
        delta(&a, &b, &jap, "nat_port_exhausted"),
        delta(&a, &b, &jap, "nat_refused_full")
    );
    let (ok, n) = answered(&text(&l));
    eprintln!("legitimate new flows: {ok} of {n} answered");
    assert!(n >= 500, "the legitimate client made {n} flows");
    assert!(
        ok * 100 >= n * 99,
        "only {ok} of {n} legitimate new flows answered during the flood{}",
        changed(&a, &b)
    );
    assert!(
        created >= sent * 95 / 100,
        "the flood reached {jap}'s NAT: +{created} bindings{}",
        changed(&a, &b)
    );
    assert!(
        early > 0,
        "{jap} dropped transitory bindings early{}",
        changed(&a, &b)
    );
    assert_eq!(
        delta(&a, &b, &jap, "nat_refused_full"),
        0,
        "no flow refused for a full table"
    );

    // Once the flood's bindings have timed out (30 s), the long-lived flow's binding is still the one it had.
    std::thread::sleep(Duration::from_secs(33));
    let after = stream_binding().expect("the long-lived flow's binding survived the flood");
    assert_eq!(
        after, before,
        "the long-lived flow kept its binding (JAP, pool endpoint, class)"
    );
    let s = stream.wait_with_output().expect("stream");
    let (ok, n) = answered(&text(&s));
    eprintln!("long-lived flow: {ok} of {n} queries answered");
    assert!(
        ok * 100 >= n * 99,
        "the long-lived flow lost {} of {n} queries",
        n - ok
    );
}

/// The set-up both floods share. Replies to spoofed sources die where they are written: no namespace forwards
/// the flood's source range anywhere. One JAP: with t3's DNS agent gone, t1 is the group's only target and p1
/// its only JAP, so the whole flood (not half of it, as proximity would otherwise share it between p1 and
/// p3) hits one NAT. DNS must work before the flood starts.
fn one_jap_and_blackholed_sources() {
    for n in PROXIES.iter().chain(["r1", "r2", "r3"].iter()) {
        let o = exec(n, &["ip", "route", "replace", "blackhole", FLOOD_SOURCES]);
        assert!(
            o.status.success(),
            "blackhole route in {n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    kill9("t3", "agent-10.99.0.53-53-udp");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        answer(&dig("c1", DNS4, "A")).is_some(),
        "DNS through the lab works before the flood"
    );
}
