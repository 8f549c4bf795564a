//! The metric names the shipped monitoring files use (deploy/prometheus's rules, deploy/grafana's dashboard)
//! and the names a Prometheus text page exposes: what `deploy_files` checks against the proxy's renderer and
//! `lab_health_gate` against a running proxy's real `/metrics`. Included with `#[path]` by both.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Series Prometheus makes itself (not on any /metrics page) that the rules may use.
pub(crate) const PROMETHEUS_MADE: &[&str] = &["up"];

/// `deploy/…` in the workspace.
pub(crate) fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Every `pias_…` identifier in a PromQL expression (label values and `$variables` are not names).
pub(crate) fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut quoted = false;
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            quoted = !quoted;
            i += 1;
            continue;
        }
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        if !quoted && ident(c) && (i == 0 || !(ident(b[i - 1]) || b[i - 1] == b'$')) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let w = &expr[start..i];
            if w.starts_with("pias_") || PROMETHEUS_MADE.contains(&w) {
                out.push(w.to_owned());
            }
            continue;
        }
        i += 1;
    }
    out
}

/// The `expr` of every rule in a Prometheus rules file: plain (`expr: …`) or a block (`expr: |` and the
/// lines indented below it). The structure is checked by `promtool check rules`; this only reads it.
pub(crate) fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(v) = t.strip_prefix("expr:") {
            let v = v.trim();
            if v == "|" || v == ">" || v == "|-" || v == ">-" {
                let indent = l.len() - t.len();
                let mut e = String::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    e.push_str(lines[i].trim());
                    e.push('\n');
                    i += 1;
                }
                out.push(e);
                continue;
            }
            out.push(v.to_owned());
        }
        i += 1;
    }
    out
}

/// Every query of a Grafana dashboard: each target's `expr` and each templating variable's query.
pub(crate) fn dashboard_exprs(json: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("query", serde_json::Value::Object(q)) => {
                            if let Some(serde_json::Value::String(s)) = q.get("query") {
                                out.push(s.clone());
                            }
                        }
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(json, &mut out);
    out
}

/// The metric names a Prometheus text page exposes.
pub(crate) fn exposed(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every metric name the shipped rules and dashboard use that `page` does not expose, with where it is
/// used; also each query that names no metric at all (a check of nothing).
pub(crate) fn unknown_names(page: &str) -> Vec<String> {
    let have = exposed(page);
    let rules = std::fs::read_to_string(deploy("prometheus/pias-alerts.yml")).expect("rules file");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/pias-dashboard.json")).expect("dashboard file"),
    )
    .expect("the dashboard is JSON");
    let mut bad = Vec::new();
    let sets = [
        ("rules", rule_exprs(&rules)),
        ("dashboard", dashboard_exprs(&dash)),
    ];
    for (file, exprs) in sets {
        assert!(
            exprs.len() >= 5,
            "{file}: too few queries found ({})",
            exprs.len()
        );
        for e in exprs {
            let names = names_in(&e);
            if names.is_empty() {
                bad.push(format!("{file}: a query names no metric: {e}"));
            }
            for n in names {
                if !have.contains(&n) && !PROMETHEUS_MADE.contains(&n.as_str()) {
                    bad.push(format!("{file}: {n} (in {e:?}) is not on /metrics"));
                }
            }
        }
    }
    bad
}
