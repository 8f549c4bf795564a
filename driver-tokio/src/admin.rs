//! The Prometheus endpoint and the control socket on tasks of the proxy's runtime (beside the mio driver's
//! `admin`, which serves them inside its poll loop). Requests are answered by `driver_common::{metrics,
//! control}` through a [`ProxyHandle`] (the proxy stays on its own task); this module only moves bytes.
//! Each metrics connection gets one response and [`CONN_TIME`]; a control connection answers one line per
//! request line until the client closes it.

use core::time::Duration;

use driver_common::{control, metrics};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::ProxyHandle;

/// Time a metrics connection is given.
const CONN_TIME: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `l` until the proxy stops (spawn it on the proxy's runtime).
pub async fn serve_metrics(l: TcpListener, h: ProxyHandle) {
    accept_each(l, h, |s, h| async move {
        let _ = tokio::time::timeout(CONN_TIME, respond(s, &h)).await;
    })
    .await
}

/// Answers control requests on `l` until the proxy stops (spawn it on the proxy's runtime). Each connection
/// is first checked against `access` (SPEC.md §8.5): a refused peer is counted, logged and closed.
pub async fn serve_control(l: UnixListener, h: ProxyHandle, access: control::Access) {
    accept_each(l, h, move |s, h| async move {
        use std::os::fd::AsFd;
        if access.admit(s.as_fd()) {
            let _ = connection(s, h).await;
        }
    })
    .await
}

/// A listening socket of either server.
trait Listener: Send + Sync {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts connections for ever, each served on a task of its own. A failed accept (e.g. out of file
/// descriptors) is retried after a pause, so it cannot spin.
async fn accept_each<L: Listener, F>(l: L, h: ProxyHandle, serve: impl Fn(L::Stream, ProxyHandle) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match l.accept_one().await {
            Ok(s) => drop(tokio::spawn(serve(s, h.clone()))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
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

async fn connection(s: UnixStream, h: ProxyHandle) -> std::io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r.take(control::MAX_REQUEST as u64)).lines();
    while let Some(line) = lines.next_line().await? {
        let out = match h.answer(line).await {
            Some(a) => a,
            None => control::error_line("proxy stopped"),
        };
        w.write_all(out.as_bytes()).await?;
    }
    Ok(())
}
