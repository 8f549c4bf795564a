//! Lab: a JAP over its capacity sheds new flows (SPEC.md §9.6), over the real overlay.
//!
//! p3 is restarted with `[limits] capacity_flows_per_s = 3`. Client c2 (ingress p2) holds a few paced HTTP
//! downloads of the 20 MiB file through the group 10.99.0.80:80/tcp (policy affinity: JAPs p1 and p3, each
//! with one target), at least one of them served by p3. Then c2 opens 60 new HTTP connections in a row (a
//! crowd of tens of new flows per second): p3 goes over its capacity, sends Invalidate(draining) to p2 over the
//! overlay and reports itself full, and p2 sends the rest of the crowd to p1.
//!
//! Asserted: every connection of the crowd is answered; p3's `drain_invalidations_sent` and p2's
//! `iap_drains` rose; the second half of the crowd went to t1 (p1), not t3; the downloads that were running
//! at p3 stayed there (p2's `iap_drain_pinned` rose) and every download completed with the served file's
//! checksum.
//!
//! Needs root and the lab's tools; run under the cross-helper lock:
//! `flock /tmp/pias-netns.lock cargo test -p pias-cli --test lab_load_shed`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::*;

const CAPACITY: u32 = 3;
const CROWD: usize = 60;
const DOWNLOADS: usize = 4;

#[test]
fn lab_load_shed_tokio() {
    load_shed("tokio");
}

#[test]
fn lab_load_shed_mio() {
    load_shed("mio");
}

/// A process the test started that `pias lab down` stops (through its pid file): reaped when dropped, after
/// the lab (declare it before the [`Lab`]), killed if it outlived the lab by a few seconds.
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        let Some(mut c) = self.0.take() else { return };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if c.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Restarts `proxy` with its lab configuration plus a capacity, under the lab's pid file (so `pias lab down`
/// stops it like any lab process).
fn restart_with_capacity(proxy: &str, capacity: u32) -> Child {
    kill9(proxy, "proxy");
    let dir = format!("{DIR}/{proxy}");
    let base = std::fs::read_to_string(format!("{dir}/proxy.toml")).expect("proxy.toml");
    assert!(
        !base.contains("[limits]"),
        "the lab's proxy.toml has its own [limits]"
    );
    let cfg = format!("{dir}/proxy-capacity.toml");
    std::fs::write(
        &cfg,
        format!("{base}\n[limits]\ncapacity_flows_per_s = {capacity}\n"),
    )
    .expect("writing the capacity config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{dir}/proxy.log"))
        .expect("proxy.log");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{NAME}-{proxy}"),
            PIAS,
            "proxy",
            "--config",
            &cfg,
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting the proxy");
    std::fs::write(format!("{dir}/proxy.pid"), format!("{}\n", child.id())).expect("pid file");
    child
}

/// `curl` of `path` on the HTTP group from c2, one new connection.
fn whoami() -> Option<String> {
    let o = exec(
        "c2",
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &format!("http://{HTTP4}/whoami"),
        ],
    );
    o.status.success().then(|| text(&o).trim().to_owned())
}

fn shape_c2(args: &[&str]) {
    let r2 = format!("{NAME}-r2");
    let mut a = vec!["-n", r2.as_str(), "qdisc"];
    a.extend_from_slice(args);
    let o = run("tc", &a);
    assert!(
        o.status.success() || args.first() == Some(&"del"),
        "tc on r2/c2: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn start_downloads() -> Vec<(Child, String)> {
    (0..DOWNLOADS)
        .map(|i| {
            let f = format!("{DIR}/shed-download-{i}.bin");
            let _ = std::fs::remove_file(&f);
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &format!("{NAME}-c2"),
                    "curl",
                    "-sS",
                    "--max-time",
                    "60",
                    "-o",
                    &f,
                ])
                .arg(format!("http://{HTTP4}/big.bin"))
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl");
            (child, f)
        })
        .collect()
}

fn load_shed(driver: &str) {
    let mut p3 = Reaped(None);
    let _lab = Lab::up(driver);
    assert_eq!(ingress("c2"), "p2", "c2 enters at p2");
    p3.0 = Some(restart_with_capacity("p3", CAPACITY));
    // p3 is back once c2's connections reach t1 and, through p3, t3: p2's cache entry for the group must
    // name both JAPs. While p3 was down, t3's agents registered with p2 and p2 (as its own IAP) took itself out of
    // its entry when they went back; and a restarted RAP knows only the JAPs that reported to it since. An
    // entry that names one JAP lasts until it expires (`cache_ttl`, 60 s). Probing at 2 new flows/s keeps p3
    // under its capacity.
    let deadline = Instant::now() + Duration::from_secs(130);
    let (mut t1, mut t3) = (false, false);
    while !(t1 && t3) {
        // t3 counts only when p3 delivered it: right after the restart t3 is registered with p2 for a while.
        let a = counters();
        match whoami().as_deref() {
            Some("t1") => t1 = true,
            Some("t3") => t3 |= delta(&a, &counters(), "p3", "jap_delivered") > 0,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "c2 does not reach both sites after p3's restart (t1 {t1}, t3 {t3}):\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let p3's load decay to nothing.
    std::thread::sleep(Duration::from_secs(4));

    // Downloads paced at 64 Mbit/s in all on r2's link to c2 (~10 s for the four), at least one at p3.
    shape_c2(&[
        "replace", "dev", "c2", "root", "tbf", "rate", "64mbit", "burst", "64kb", "latency", "400ms",
    ]);
    let mut downloads = Vec::new();
    for attempt in 0..4 {
        let a = counters();
        downloads = start_downloads();
        std::thread::sleep(Duration::from_millis(1500));
        let b = counters();
        if delta(&a, &b, "p3", "jap_delivered") > 200 {
            break;
        }
        eprintln!("attempt {attempt}: no download at p3; again");
        for (mut c, _) in downloads.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    assert!(
        !downloads.is_empty(),
        "no download landed on p3 in four attempts of {DOWNLOADS}"
    );

    // The crowd.
    let before = counters();
    let o = exec(
        "c2",
        &[
            "bash",
            "-c",
            &format!(
                "for i in $(seq {CROWD}); do curl -s --max-time 5 http://{HTTP4}/whoami || echo FAIL; done"
            ),
        ],
    );
    let after = counters();
    let served: Vec<String> = text(&o).lines().map(str::to_owned).collect();
    let why = changed(&before, &after);
    assert_eq!(served.len(), CROWD, "{served:?}");
    assert!(
        served.iter().all(|s| s == "t1" || s == "t3"),
        "every new connection is served: {served:?}"
    );
    assert!(
        delta(&before, &after, "p3", "jap_over_capacity") > 0,
        "p3 went over its capacity:{why}"
    );
    let sent = delta(&before, &after, "p3", "drain_invalidations_sent");
    assert!(sent > 0, "p3 sent Invalidate(draining):{why}");
    assert!(delta(&before, &after, "p3", "invalidations_sent") >= sent);
    assert!(
        delta(&before, &after, "p2", "iap_drains") > 0,
        "p2 received the Invalidate over the overlay:{why}"
    );
    let late_t3 = served[CROWD / 2..].iter().filter(|s| *s == "t3").count();
    assert!(
        late_t3 <= 2,
        "the second half of the crowd should go to p1 (t1), {late_t3} went to t3: {served:?}"
    );

    // The downloads: the ones at p3 kept it (pinned by p2 while p3 drains), and all completed intact.
    let want = sha256(&format!("{DIR}/t1/www/big.bin"));
    for (c, f) in downloads {
        let out = c.wait_with_output().expect("curl");
        assert!(
            out.status.success(),
            "a download across the shedding failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256(&f), want, "{f}");
        let _ = std::fs::remove_file(&f);
    }
    let end = counters();
    assert!(
        delta(&before, &end, "p2", "iap_drain_pinned") > 0,
        "p2 kept the connections at p3 while it drained:{}",
        changed(&before, &end)
    );
    shape_c2(&["del", "dev", "c2", "root"]);
}
