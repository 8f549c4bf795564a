//! The target agent on tokio: one UDP socket to the registration address, one timer, and in surrogate mode
//! the health check on a task of its own.
//!
//! What a wake-up does with the agent is `driver_common::AgentLoop`'s, shared with the mio driver: the
//! socket sends what the agent writes to the registration address (port 6082 of an anycast address:
//! routing picks the nearest proxy) and feeds every datagram it receives to the agent; the agent says when
//! a health check is due and how long it is given. Here the check (TCP connect, or a UDP request that must
//! draw any answer) runs on a task with that timeout, and its result comes back over a channel.

use core::pin::pin;
use core::time::Duration;
use std::io;
use std::os::fd::AsFd;

use driver_common::agent_loop::AGENT_BUFFER;
use driver_common::{AgentDriverConfig, AgentLoop, HealthCheck, unspecified};
use pias_state::agent::AgentCounters;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::{Signals, deadline};

/// Runs a surrogate's health check once, bounded by `timeout`.
pub async fn check_health(h: &HealthCheck, timeout: Duration) -> bool {
    match h {
        HealthCheck::Tcp { addr } => matches!(
            tokio::time::timeout(timeout, TcpStream::connect(*addr)).await,
            Ok(Ok(_))
        ),
        HealthCheck::Udp { addr, payload } => {
            let probe = async {
                let s = UdpSocket::bind(unspecified(addr.ip())).await?;
                s.connect(*addr).await?;
                s.send(payload).await?;
                let mut buf = [0u8; 2048];
                s.recv(&mut buf).await
            };
            matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(_)))
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

    #[tokio::test]
    async fn health_checks_pass_and_fail_on_loopback() {
        let t = Duration::from_millis(300);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = l.local_addr().unwrap();
        assert!(check_health(&HealthCheck::Tcp { addr: up }, t).await);
        drop(l);
        assert!(!check_health(&HealthCheck::Tcp { addr: up }, t).await);

        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            if let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let payload = b"ping".to_vec();
        assert!(
            check_health(
                &HealthCheck::Udp {
                    addr,
                    payload: payload.clone()
                },
                t
            )
            .await
        );
        // The echo answered once and is gone: no answer (or port unreachable) fails.
        assert!(!check_health(&HealthCheck::Udp { addr, payload }, t).await);
    }
}
