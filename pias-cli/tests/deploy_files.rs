//! The deployment files under deploy/ are real: each passes its own tool's check, and the monitoring files
//! name only metrics a proxy exposes.
//!
//! - deploy/systemd: `systemd-analyze verify` on the units (the drop-in for XDP included), with `ExecStart`
//!   pointed at this build's `pias`; any warning fails (verify exits 0 on unknown keys and bad values, so
//!   its output is what tells);
//! - deploy/prometheus: `promtool check rules`;
//! - deploy/bird: `bird -p -c` (parse only); deploy/frr: `vtysh --dryrun --inputfile`;
//! - every metric in the rules' and the dashboard's queries is on the `/metrics` page of a proxy, rendered
//!   by the code the endpoint serves (`driver_common::metrics`) from a real `Proxy` and driver counters
//!   (`lab_health_gate` checks the same against a running proxy's HTTP endpoint).
//!
//! The tools come from scripts/apt-packages.txt (systemd, prometheus, bird2, frr): a missing one FAILS with
//! the package to install — never a silent skip.

#[path = "support/metric_names.rs"]
mod metric_names;

use std::path::{Path, PathBuf};
use std::process::Command;

use metric_names::*;

/// The path of `tool`, or a failure naming its package.
fn tool(tool: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{tool} is missing: apt-get install -y {package} (scripts/apt-packages.txt lists it)")
        })
}

/// Runs a check; it must succeed and, if `quiet`, print nothing on stderr.
fn check(cmd: &mut Command, quiet: bool) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && (!quiet || err.trim().is_empty()),
        "{cmd:?} failed ({}):\n{out}\n{err}",
        o.status
    );
}

#[test]
fn systemd_units_verify() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = std::env::temp_dir().join(format!("pias-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pias-proxy.service.d")).unwrap();
    let src = deploy("systemd");
    let mut units = Vec::new();
    for f in [
        "pias-proxy.service",
        "pias-target@.service",
        "pias-proxy.service.d/xdp.conf",
    ] {
        let text = std::fs::read_to_string(src.join(f)).unwrap_or_else(|e| panic!("deploy/systemd/{f}: {e}"));
        assert!(
            f.ends_with(".conf") || text.contains("ExecStart=/usr/local/bin/pias "),
            "{f}: ExecStart runs /usr/local/bin/pias"
        );
        // verify checks that ExecStart's binary exists: point it at this build's.
        let text = text.replace("/usr/local/bin/pias", env!("CARGO_BIN_EXE_pias"));
        std::fs::write(dir.join(f), text).unwrap();
        if f.ends_with(".service") {
            units.push(dir.join(f));
        }
    }
    // A template is verified as an instance of it.
    std::fs::copy(
        dir.join("pias-target@.service"),
        dir.join("pias-target@dns.service"),
    )
    .unwrap();
    units.retain(|u| !u.ends_with("pias-target@.service"));
    units.push(dir.join("pias-target@dns.service"));
    for u in &units {
        check(
            Command::new(&analyze).arg("verify").arg(u).current_dir(&dir),
            true,
        );
    }
    // The check has teeth: a bad key in the drop-in is reported.
    std::fs::write(
        dir.join("pias-proxy.service.d/bad.conf"),
        "[Service]\nNoSuchKey=1\n",
    )
    .unwrap();
    let o = Command::new(&analyze)
        .arg("verify")
        .arg(dir.join("pias-proxy.service"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NoSuchKey"),
        "systemd-analyze verify reads the drop-in directory"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_rules_check() {
    let promtool = tool("promtool", "prometheus");
    check(
        Command::new(promtool)
            .args(["check", "rules"])
            .arg(deploy("prometheus/pias-alerts.yml")),
        false,
    );
}

#[test]
fn routing_daemon_configs_parse() {
    let bird = tool("bird", "bird2");
    check(
        Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(deploy("bird/bird.conf")),
        true,
    );
    let vtysh = tool("vtysh", "frr");
    check(
        Command::new(vtysh)
            .arg("--dryrun")
            .arg("--inputfile")
            .arg(deploy("frr/frr.conf")),
        true,
    );
}

/// The /metrics page of a proxy as its endpoint renders it.
fn rendered_metrics() -> String {
    use pias_proto::ProxyId;
    use pias_proto::auth::MasterKey;
    use pias_state::Instant;
    use pias_state::proxy::{Proxy, ProxyConfig};
    let cfg = ProxyConfig::new(
        ProxyId(7),
        "10.0.0.7:6081".parse().unwrap(),
        MasterKey::from_bytes([7; 32]),
        vec!["10.98.0.7".parse().unwrap()],
        vec!["10.99.0.250".parse().unwrap()],
    );
    let p = Proxy::new(
        cfg,
        &pias_state::secrets::Secrets::from_seed_for_tests(7),
        Instant::ZERO,
    )
    .unwrap();
    driver_common::metrics::render(&p, &driver_common::DriverCounters::default())
}

#[test]
fn monitoring_files_name_only_exposed_metrics() {
    let page = rendered_metrics();
    assert!(page.contains("\npias_announced 1\n"), "{page}");
    let bad = unknown_names(&page);
    assert!(
        bad.is_empty(),
        "metrics the proxy does not expose:\n{}",
        bad.join("\n")
    );
    // And the check has teeth: a page without the announcement gauge fails it.
    let without: String = page
        .lines()
        .filter(|l| !l.starts_with("pias_announced "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        unknown_names(&without)
            .iter()
            .any(|b| b.contains("pias_announced")),
        "a missing metric is caught"
    );
}
#[test]
fn names_are_read_from_promql() {
    assert_eq!(
        names_in(r#"rate(pias_a_total{instance=~"$instance", x="pias_b"}[5m]) / pias_c + up{job="j"}"#),
        ["pias_a_total", "pias_c", "up"]
    );
    assert_eq!(
        names_in("label_values(pias_proxy_info, instance)"),
        ["pias_proxy_info"]
    );
    let y = "      - alert: A\n        expr: pias_x == 0\n      - alert: B\n        expr: |\n          rate(pias_y[5m])\n          > 1\n        for: 1m\n";
    assert_eq!(rule_exprs(y), ["pias_x == 0", "rate(pias_y[5m])\n> 1\n"]);
    assert_eq!(
        exposed("# TYPE pias_a gauge\npias_a 1\npias_b{id=\"1\"} 2\n"),
        ["pias_a".to_owned(), "pias_b".to_owned()].into()
    );
}
