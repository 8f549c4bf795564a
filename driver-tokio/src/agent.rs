//! The target agent on tokio: one UDP socket to the registration address, one timer, and the service's
//! health check on a task of its own.
//!
//! What a wake-up does with the agent is `driver_common::AgentLoop`'s, shared with the mio driver: the
//! socket sends what the agent writes to the registration address (port 6082 of an anycast address:
//! routing picks the nearest proxy) and feeds every datagram it receives to the agent; the agent says when
//! a health check is due and how long it is given. Here the check (a TCP connect, a UDP request, an HTTP
//! GET, a command) runs on a task with that timeout, and its result comes back over a channel.

use core::pin::pin;
use core::time::Duration;
use std::io;
use std::os::fd::AsFd;

use driver_common::agent_loop::AGENT_BUFFER;
use driver_common::{AgentDriverConfig, AgentLoop, HealthCheck, health, unspecified};
use pias_state::agent::AgentCounters;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::{Signals, deadline};

/// Runs a health check once, bounded by `timeout` (SPEC.md §10.3).
pub async fn check_health(h: &HealthCheck, timeout: Duration) -> bool {
    match h {
        HealthCheck::Tcp { addr } => matches!(
            tokio::time::timeout(timeout, TcpStream::connect(*addr)).await,
            Ok(Ok(_))
        ),
        HealthCheck::Udp {
            addr,
            payload,
            expect,
            silence_passes,
        } => {
            let probe = async {
                let s = UdpSocket::bind(unspecified(addr.ip())).await?;
                s.connect(*addr).await?;
                s.send(payload).await?;
                let mut buf = [0u8; 2048];
                loop {
                    let n = s.recv(&mut buf).await?;
                    if health::udp_answer_ok(&buf[..n], expect.as_deref()) {
                        return io::Result::Ok(());
                    }
                }
            };
            match tokio::time::timeout(timeout, probe).await {
                Ok(r) => r.is_ok(),
                Err(_) => *silence_passes,
            }
        }
        HealthCheck::Http {
            addr,
            host,
            path,
            status,
        } => {
            let probe = async {
                let mut s = TcpStream::connect(*addr).await?;
                s.write_all(&health::http_request(host, path)).await?;
                let mut head = Vec::with_capacity(256);
                let mut buf = [0u8; 512];
                let verdict = loop {
                    let n = s.read(&mut buf).await?;
                    head.extend_from_slice(&buf[..n]);
                    if let Some(v) = health::http_verdict(&head, n == 0, *status) {
                        break v;
                    }
                };
                io::Result::Ok((s, head.len(), verdict))
            };
            let start = tokio::time::Instant::now();
            let Ok(Ok((mut s, mut read, verdict))) = tokio::time::timeout(timeout, probe).await else {
                return false;
            };
            // Read the rest (bounded, within what is left of the timeout) so the server is not cut off
            // mid-write: a health check should not fill its logs with broken pipes.
            let rest = async {
                let mut buf = [0u8; 4096];
                while read < health::HTTP_DRAIN_LIMIT {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            };
            let _ = tokio::time::timeout(timeout.saturating_sub(start.elapsed()), rest).await;
            verdict
        }
        HealthCheck::Command { command } => {
            let until = std::time::Instant::now() + timeout;
            let Ok(mut p) = health::CommandProbe::start(command, until) else {
                return false;
            };
            loop {
                if let Some(v) = p.poll(std::time::Instant::now()) {
                    return v;
                }
                tokio::time::sleep(health::COMMAND_POLL).await;
            }
        }
    }
}

/// A bound agent, ready to [`AgentDriver::run`].
#[derive(Debug)]
pub struct AgentDriver {
    core: AgentLoop,
    socket: UdpSocket,
}

impl AgentDriver {
    /// Validates the agent's configuration and binds its socket (inside a tokio runtime).
    pub async fn bind(cfg: AgentDriverConfig) -> io::Result<AgentDriver> {
        let core = AgentLoop::new(&cfg)?;
        let local = cfg.local_addr();
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("bind agent socket {local}: {e}")))?;
        core.log_start(socket.local_addr()?, "tokio");
        Ok(AgentDriver { core, socket })
    }

    /// Runs until deregistered after a signal (or a second signal), or until a check ends. Returns the
    /// agent's counters.
    pub async fn run(self, mut signals: Signals) -> io::Result<AgentCounters> {
        let AgentDriver { mut core, socket } = self;
        let mut rx = vec![0u8; AGENT_BUFFER];
        let (htx, mut hrx) = mpsc::channel::<bool>(4);
        let mut timer = pin!(tokio::time::sleep_until(deadline(core.deadline())));
        loop {
            core.drain(|b, to| driver_common::overlay::send_to(socket.as_fd(), b, to));
            if let Some((h, limit)) = core.poll_health_check() {
                let tx = htx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(check_health(&h, limit).await).await;
                });
            }
            if core.is_done() {
                return Ok(*core.counters());
            }
            timer.as_mut().reset(deadline(core.deadline()));
            tokio::select! {
                r = socket.recv_from(&mut rx) => match r {
                    Ok((n, from)) => core.on_datagram(from, &rx[..n]),
                    Err(e) => core.on_recv_error(&e),
                },
                () = &mut timer => core.handle_timeout(),
                Some(ok) = hrx.recv() => core.on_health(ok),
                sig = signals.recv() => {
                    if core.on_signal(sig) {
                        return Ok(*core.counters());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(300);

    fn udp(addr: core::net::SocketAddr, expect: Option<&[u8]>, silence_passes: bool) -> HealthCheck {
        HealthCheck::Udp {
            addr,
            payload: b"ping".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            silence_passes,
        }
    }

    #[tokio::test]
    async fn tcp_checks_pass_and_fail_on_loopback() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = l.local_addr().unwrap();
        assert!(check_health(&HealthCheck::Tcp { addr: up }, T).await);
        drop(l);
        assert!(!check_health(&HealthCheck::Tcp { addr: up }, T).await);
    }

    #[tokio::test]
    async fn udp_checks_pass_on_the_expected_answer_and_fail_otherwise() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        assert!(check_health(&udp(addr, None, false), T).await);
        assert!(check_health(&udp(addr, Some(b"pi"), false), T).await);
        assert!(
            !check_health(&udp(addr, Some(b"pong"), false), T).await,
            "wrong answer"
        );
        // A silent service: fails the answer check, passes the port check.
        let mute = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let quiet = mute.local_addr().unwrap();
        assert!(!check_health(&udp(quiet, None, false), T).await);
        assert!(check_health(&udp(quiet, None, true), T).await);
        // A closed port (ICMP port unreachable): both fail.
        drop(mute);
        assert!(!check_health(&udp(quiet, None, false), T).await);
        assert!(!check_health(&udp(quiet, None, true), T).await);
    }

    /// A one-shot HTTP server answering every connection with `status`, or (None) accepting and never
    /// answering (a hung server).
    async fn http_server(status: Option<u16>) -> core::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                match status {
                    Some(st) => {
                        let r = format!("HTTP/1.0 {st} X\r\nContent-Length: 0\r\n\r\n");
                        let _ = s.write_all(r.as_bytes()).await;
                    }
                    None => held.push(s),
                }
            }
        });
        addr
    }

    fn http(addr: core::net::SocketAddr) -> HealthCheck {
        HealthCheck::Http {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            status: 200,
        }
    }

    #[tokio::test]
    async fn http_checks_want_the_status_in_time() {
        assert!(check_health(&http(http_server(Some(200)).await), T).await);
        assert!(!check_health(&http(http_server(Some(503)).await), T).await);
        assert!(!check_health(&http(http_server(None).await), T).await, "hung");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(!check_health(&http(addr), T).await, "refused");
    }

    #[tokio::test]
    async fn command_checks_follow_the_exit_status_and_the_timeout() {
        let c = |s: &str| HealthCheck::Command { command: s.into() };
        assert!(check_health(&c("exit 0"), T).await);
        assert!(!check_health(&c("exit 1"), T).await);
        let t = std::time::Instant::now();
        assert!(!check_health(&c("sleep 5"), T).await);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
