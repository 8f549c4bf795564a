//! Prometheus text exposition (format 0.0.4) of every counter of a running proxy, over a minimal HTTP/1.1
//! responder (`GET /metrics`; one response per connection).
//!
//! Counters are `pias_<name>_total`; table sizes are gauges `pias_<name>` (no `_total`). Driver counters
//! are named `pias_driver_<name>_total`.

use core::time::Duration;
use std::fmt::Write as _;

use driver_tokio::{DriverCounters, ProxyHandle};
use pias_state::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Names `Proxy::for_each_counter` walks that are current sizes, not running totals.
const GAUGES: &[&str] = &[
    "iap_entries",
    "rap_groups",
    "nat_bindings",
    "members",
    "registrations",
];

/// Renders every counter as Prometheus text.
pub(crate) fn render(p: &Proxy, d: &DriverCounters) -> String {
    let mut rows: Vec<(&'static str, u64)> = Vec::with_capacity(160);
    p.for_each_counter(|n, v| rows.push((n, v)));
    d.for_each(|n, v| rows.push((n, v)));
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

/// Serves `GET /metrics` until the proxy stops.
pub(crate) async fn serve(l: TcpListener, h: ProxyHandle) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let h = h.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), respond(s, &h)).await;
        });
    }
}

async fn respond(mut s: TcpStream, h: &ProxyHandle) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let m = s.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = match route(&req) {
        Route::Metrics => match h.inspect(|p, d, _| render(p, d)).await {
            Some(b) => ("200 OK", b),
            None => ("503 Service Unavailable", "proxy stopped\n".to_owned()),
        },
        Route::NotFound => ("404 Not Found", "try /metrics\n".to_owned()),
        Route::BadMethod => ("405 Method Not Allowed", "GET only\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
}

fn route(req: &str) -> Route {
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
        let p = Proxy::new(cfg, pias_state::Instant::ZERO).unwrap();
        let s = render(&p, &DriverCounters::default());
        let mut names = 0;
        p.for_each_counter(|_, _| names += 1);
        let samples = s.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, names + 10 + 1);
        assert!(s.contains("pias_members 1\n"), "{s}");
        assert!(s.contains("pias_drop_bad_mac_total 0\n"));
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET /x HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
    }
}
