//! The tokio driver's Prometheus endpoint: a minimal HTTP/1.1 responder (`GET /metrics`; one response per
//! connection) around `driver_common::metrics`, which renders the text and answers the request.

use core::time::Duration;

use driver_common::metrics;
use driver_tokio::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let mut buf = [0u8; metrics::MAX_REQUEST];
    let mut n = 0;
    while !metrics::request_complete(&buf[..n]) {
        let m = s.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let body = match metrics::route(&String::from_utf8_lossy(&buf[..n])) {
        metrics::Route::Metrics => h.metrics().await,
        _ => None,
    };
    let out = metrics::respond(&buf[..n], || body);
    s.write_all(&out).await?;
    s.shutdown().await
}
