//! Prometheus text exposition (format 0.0.4) of every counter of a running proxy, and the answer to an
//! HTTP/1.1 request for it (`GET /metrics`; one response per connection). Each driver serves the
//! listening socket its own way.
//!
//! Counters are `pias_<name>_total`; table sizes are gauges `pias_<name>` (no `_total`). Driver counters
//! are named `pias_driver_<name>_total`.

use std::fmt::Write as _;

use pias_state::proxy::{GAUGES, Proxy};

use crate::DriverCounters;

/// Longest request head a server reads, bytes.
pub const MAX_REQUEST: usize = 4096;

/// Renders every counter as Prometheus text.
pub fn render(p: &Proxy, d: &DriverCounters) -> String {
    render_with(p, d, None)
}

/// Renders every counter as Prometheus text, the fast path's (if any) included.
pub fn render_with(p: &Proxy, d: &DriverCounters, fast: Option<&dyn crate::FastPath>) -> String {
    let mut rows: Vec<(&'static str, u64)> = Vec::with_capacity(200);
    p.for_each_counter(|n, v| rows.push((n, v)));
    d.for_each(|n, v| rows.push((n, v)));
    if let Some(f) = fast {
        f.for_each_counter(&mut |n, v| rows.push((n, v)));
    }
    render_rows(&rows, p.id().0)
}

fn render_rows(rows: &[(&'static str, u64)], proxy_id: u32) -> String {
    let mut out = String::with_capacity(rows.len() * 80);
    let _ = writeln!(out, "# HELP pias_proxy_info The proxy's id.");
    let _ = writeln!(out, "# TYPE pias_proxy_info gauge");
    let _ = writeln!(out, "pias_proxy_info{{id=\"{proxy_id}\"}} 1");
    for &(name, v) in rows {
        let name = sanitize(name);
        if GAUGES.contains(&name.as_str()) {
            let _ = writeln!(out, "# TYPE pias_{name} gauge");
            let _ = writeln!(out, "pias_{name} {v}");
        } else {
            let _ = writeln!(out, "# TYPE pias_{name}_total counter");
            let _ = writeln!(out, "pias_{name}_total {v}");
        }
    }
    out
}

/// Metric names allow `[a-zA-Z0-9_]`; anything else becomes `_`.
fn sanitize(n: &str) -> String {
    n.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `req` holds a whole request head (or as much as a server reads).
pub fn request_complete(req: &[u8]) -> bool {
    req.len() >= MAX_REQUEST || req.windows(4).any(|w| w == b"\r\n\r\n")
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    BadMethod,
}

/// Routes a request head.
pub fn route(req: &str) -> Route {
    let mut parts = req.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return Route::BadMethod;
    }
    match path.split('?').next() {
        Some("/metrics") | Some("/") => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// The whole HTTP response to the request head `req`. `body` renders the metrics (`None`: the proxy
/// stopped); it is called only for a metrics request.
pub fn respond(req: &[u8], body: impl FnOnce() -> Option<String>) -> Vec<u8> {
    let req = String::from_utf8_lossy(req);
    let (status, body) = match route(&req) {
        Route::Metrics => match body() {
            Some(b) => ("200 OK", b),
            None => ("503 Service Unavailable", "proxy stopped\n".to_owned()),
        },
        Route::NotFound => ("404 Not Found", "try /metrics\n".to_owned()),
        Route::BadMethod => ("405 Method Not Allowed", "GET only\n".to_owned()),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render() {
        let s = render_rows(
            &[
                ("iap_to_rap", 3),
                ("nat_bindings", 2),
                ("driver_tun_rx", 9),
                ("a-b", 1),
            ],
            7,
        );
        assert!(s.contains("pias_proxy_info{id=\"7\"} 1\n"), "{s}");
        assert!(s.contains("# TYPE pias_iap_to_rap_total counter\npias_iap_to_rap_total 3\n"));
        assert!(s.contains("# TYPE pias_nat_bindings gauge\npias_nat_bindings 2\n"));
        assert!(s.contains("pias_driver_tun_rx_total 9\n"));
        assert!(s.contains("pias_a_b_total 1\n"));
        // Every sample line is `name value` with a valid metric name.
        for line in s.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<u64>().is_ok(), "{line}");
            let bare = name.split('{').next().unwrap();
            assert!(
                bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
        }
    }

    #[test]
    fn real_proxy_renders_every_counter() {
        let cfg = crate::test_proxy_config(3);
        let p = Proxy::new(
            cfg,
            &pias_state::secrets::Secrets::from_seed_for_tests(1),
            pias_state::Instant::ZERO,
        )
        .unwrap();
        let s = render(&p, &DriverCounters::default());
        let mut names = 0;
        p.for_each_counter(|_, _| names += 1);
        let samples = s.lines().filter(|l| !l.starts_with('#')).count();
        let mut driver = 0;
        DriverCounters::default().for_each(|_, _| driver += 1);
        assert_eq!(samples, names + driver + 1);
        assert!(s.contains("pias_members 1\n"), "{s}");
        assert!(s.contains("pias_drop_bad_mac_total 0\n"));
    }

    /// Every counter the core defines appears in /metrics under its name, and nothing else of the core's
    /// does: a counter added to a counters struct cannot be left out of the scrape.
    #[test]
    fn metrics_render_exactly_the_defined_counters() {
        use pias_proto::ProxyId;
        use pias_proto::auth::MasterKey;
        use pias_state::proxy::ProxyConfig;
        let cfg = ProxyConfig::new(
            ProxyId(3),
            "10.0.0.3:6081".parse().unwrap(),
            MasterKey::from_bytes([1; 32]),
            vec!["10.98.0.3".parse().unwrap()],
            vec!["10.99.0.250".parse().unwrap()],
        );
        let p = Proxy::new(
            cfg,
            &pias_state::secrets::Secrets::from_seed_for_tests(1),
            pias_state::Instant::ZERO,
        )
        .unwrap();
        let d = DriverCounters::default();
        let s = render(&p, &d);
        let mut rendered: Vec<String> = s
            .lines()
            .filter(|l| {
                !l.starts_with('#') && !l.starts_with("pias_proxy_info") && !l.starts_with("pias_driver_")
            })
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
        rendered.sort();
        let mut defined: Vec<String> = Proxy::counter_names()
            .map(|n| {
                if GAUGES.contains(&n) {
                    format!("pias_{n}")
                } else {
                    format!("pias_{n}_total")
                }
            })
            .collect();
        defined.sort();
        assert_eq!(rendered, defined);
        // Counters that were defined but never exported before the one-definition rule.
        for n in [
            "pias_member_probes_received_total",
            "pias_reg_not_target_message_total",
            "pias_nat_forward_hits_total",
            "pias_nat_expired_udp_total",
            "pias_iap_answers_ignored_total",
            "pias_drop_no_headroom_total",
        ] {
            assert!(s.contains(&format!("{n} 0\n")), "{n}");
        }
    }

    #[test]
    fn routes_and_responses() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET /x HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert!(!request_complete(b"GET /metrics HTTP/1.1\r\n"));
        assert!(request_complete(b"GET /metrics HTTP/1.1\r\n\r\n"));
        let r = respond(b"GET /metrics HTTP/1.1\r\n\r\n", || Some("x 1\n".into()));
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\nx 1\n"
        );
        let r = respond(b"GET /metrics HTTP/1.1\r\n\r\n", || None);
        assert!(r.starts_with(b"HTTP/1.1 503"));
        let r = respond(b"GET /nope HTTP/1.1\r\n\r\n", || unreachable!());
        assert!(r.starts_with(b"HTTP/1.1 404"));
    }
}
