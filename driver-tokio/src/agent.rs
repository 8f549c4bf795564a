//! The target agent loop: one UDP socket to the registration address, one timer, and in surrogate mode a
//! health check of the service every refresh interval.
//!
//! The socket sends what `TargetAgent::poll_transmit` writes to the registration address (port 6082 of an
//! anycast address: routing picks the nearest proxy) and feeds every datagram it receives to
//! `TargetAgent::handle_datagram` (the agent itself refuses anything not from the registration address).
//! The health check (TCP connect, or a UDP request that must draw any answer) runs on its own task with a
//! timeout of one refresh interval, at most one at a time, and its result goes to `TargetAgent::set_health`.
//!
//! Stop: the first SIGINT/SIGTERM calls `TargetAgent::shutdown` (Deregister until the JAP acknowledges or
//! `hold_ms` passes), a second stops at once.

use core::pin::pin;
use core::time::Duration;
use std::io;

use driver_common::events::log_agent_event as log_event;
use driver_common::{AgentDriverConfig, Clock, HealthCheck, unspecified};
use pias_state::agent::{AgentCounters, AgentEvent, AgentState, TargetAgent};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

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
    agent: TargetAgent,
    clock: Clock,
    socket: UdpSocket,
    health: Option<HealthCheck>,
}

impl AgentDriver {
    /// Validates the agent's configuration and binds its socket (inside a tokio runtime).
    pub async fn bind(cfg: AgentDriverConfig) -> io::Result<AgentDriver> {
        let agent = TargetAgent::new(cfg.agent.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let local = cfg.local_addr();
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("bind agent socket {local}: {e}")))?;
        info!(
            group = %cfg.agent.group,
            service = %cfg.agent.service,
            registration = %cfg.agent.registration,
            local = %socket.local_addr()?,
            surrogate = cfg.agent.surrogate,
            "target agent started"
        );
        Ok(AgentDriver {
            agent,
            clock: Clock::new(),
            socket,
            health: cfg.health,
        })
    }

    /// Runs until deregistered after a signal (or a second signal). Returns the agent's counters.
    pub async fn run(self, mut signals: Signals) -> io::Result<AgentCounters> {
        let AgentDriver {
            mut agent,
            clock,
            socket,
            health,
        } = self;
        let registration = agent.config().registration;
        let refresh = Duration::from_millis(u64::from(agent.config().refresh_ms.max(1)));
        let mut rx = vec![0u8; 2048];
        let mut tx = vec![0u8; 2048];
        let (htx, mut hrx) = mpsc::channel::<bool>(4);
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checking = false;
        let mut last_health: Option<bool> = None;
        let mut stopping = false;
        let mut timer = pin!(tokio::time::sleep_until(deadline(&clock, agent.poll_timeout())));
        loop {
            let now = clock.now();
            while let Some(n) = agent.poll_transmit(now, &mut tx) {
                if let Err(e) = socket.send_to(&tx[..n], registration).await {
                    debug!(error = %e, %registration, "agent send failed");
                }
            }
            while let Some(ev) = agent.poll_event() {
                log_event(&ev);
                if stopping && ev == AgentEvent::Deregistered {
                    info!("deregistered: stopping");
                    return Ok(*agent.counters());
                }
            }
            // Stopped: deregistered after a signal, or a check (`AgentConfig::check`) ended.
            if agent.state() == AgentState::Stopped {
                return Ok(*agent.counters());
            }
            timer.as_mut().reset(deadline(&clock, agent.poll_timeout()));
            tokio::select! {
                r = socket.recv_from(&mut rx) => match r {
                    Ok((n, from)) => {
                        if let Err(e) = agent.handle_datagram(clock.now(), from, &rx[..n]) {
                            debug!(error = %e, %from, "reply ignored");
                        }
                    }
                    Err(e) => debug!(error = %e, "agent receive error"),
                },
                () = &mut timer => agent.handle_timeout(clock.now()),
                _ = tick.tick(), if health.is_some() && !checking && !stopping => {
                    if let Some(h) = health.clone() {
                        checking = true;
                        let tx = htx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(check_health(&h, refresh).await).await;
                        });
                    }
                }
                Some(ok) = hrx.recv() => {
                    checking = false;
                    if last_health != Some(ok) {
                        if ok {
                            info!("health check passes");
                        } else {
                            warn!("health check fails");
                        }
                        last_health = Some(ok);
                    }
                    if !stopping {
                        agent.set_health(clock.now(), ok);
                    }
                }
                sig = signals.recv() => {
                    if stopping {
                        warn!(signal = sig, "second signal: stopping now");
                        return Ok(*agent.counters());
                    }
                    info!(signal = sig, "deregistering");
                    stopping = true;
                    agent.shutdown(clock.now());
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
