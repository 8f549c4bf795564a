//! The target agent on mio: [`MioAgent`] (embeddable: its socket and, in surrogate mode, the health probe
//! on the host's registry) and [`run_agent`] (a loop of its own with signals).
//!
//! The socket sends what `TargetAgent::poll_transmit` writes to the registration address and feeds every
//! datagram to `TargetAgent::handle_datagram`. The surrogate's health check runs inside the loop, one at a
//! time, every refresh interval: a non-blocking TCP connect (passes when it completes), or a UDP request
//! on a connected socket (passes on any answer); either fails after one refresh interval.

use core::time::Duration;
use std::io;
use std::time::Instant as StdInstant;

use driver_common::events::log_agent_event;
use driver_common::{AgentDriverConfig, Clock, HealthCheck, unspecified};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};
use pias_state::agent::{AgentCounters, AgentEvent, AgentState, TargetAgent};
use tracing::{debug, info, warn};

use crate::signals::Signals;
use crate::timeout_until;

/// The host's tokens for an agent's sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTokens {
    /// The agent's UDP socket.
    pub socket: Token,
    /// The surrogate's health probe (a short-lived socket; unused without a health check).
    pub probe: Token,
}

#[derive(Debug)]
enum Probe {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// A target agent driven by a host's mio loop.
#[derive(Debug)]
pub struct MioAgent {
    agent: TargetAgent,
    clock: Clock,
    socket: UdpSocket,
    health: Option<HealthCheck>,
    refresh: Duration,
    registry: Option<Registry>,
    tokens: Option<AgentTokens>,
    probe: Option<(Probe, StdInstant)>,
    next_check: StdInstant,
    last_health: Option<bool>,
    stopping: bool,
    done: bool,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl MioAgent {
    /// Validates the agent's configuration and binds its socket.
    pub fn bind(cfg: AgentDriverConfig) -> io::Result<MioAgent> {
        let agent = TargetAgent::new(cfg.agent.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let local = cfg.local_addr();
        let socket = UdpSocket::bind(local)
            .map_err(|e| io::Error::new(e.kind(), format!("bind agent socket {local}: {e}")))?;
        info!(
            group = %cfg.agent.group,
            service = %cfg.agent.service,
            registration = %cfg.agent.registration,
            local = %socket.local_addr()?,
            surrogate = cfg.agent.surrogate,
            driver = "mio",
            "target agent started"
        );
        let refresh = Duration::from_millis(u64::from(agent.config().refresh_ms.max(1)));
        Ok(MioAgent {
            agent,
            clock: Clock::new(),
            socket,
            health: cfg.health,
            refresh,
            registry: None,
            tokens: None,
            probe: None,
            next_check: StdInstant::now(),
            last_health: None,
            stopping: false,
            done: false,
            rx: vec![0; 2048],
            tx: vec![0; 2048],
        })
    }

    /// Registers the socket on `registry` under the host's tokens (the probe registers there when it
    /// runs), and sends the first Register.
    pub fn register(&mut self, registry: &Registry, tokens: AgentTokens) -> io::Result<()> {
        registry.register(&mut self.socket, tokens.socket, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        self.tokens = Some(tokens);
        self.drain();
        Ok(())
    }

    /// Handles a readiness event; `false` if `token` is not the agent's.
    pub fn handle_ready(&mut self, token: Token) -> bool {
        let Some(t) = self.tokens else { return false };
        if token == t.socket {
            for _ in 0..64 {
                match self.socket.recv_from(&mut self.rx) {
                    Ok((n, from)) => {
                        if let Err(e) = self.agent.handle_datagram(self.clock.now(), from, &self.rx[..n]) {
                            debug!(error = %e, %from, "reply ignored");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => debug!(error = %e, "agent receive error"),
                }
            }
        } else if token == t.probe {
            self.probe_ready();
        } else {
            return false;
        }
        self.drain();
        true
    }

    /// When the host must call [`MioAgent::handle_timeout`] next.
    pub fn next_deadline(&self) -> StdInstant {
        let mut d = self.clock.deadline(self.agent.poll_timeout());
        if let Some((_, until)) = &self.probe {
            d = d.min(*until);
        } else if self.health.is_some() && !self.stopping {
            d = d.min(self.next_check);
        }
        d
    }

    /// Runs the agent's timer, starts a due health check, fails an overdue one.
    pub fn handle_timeout(&mut self) {
        let now = StdInstant::now();
        let t = self.clock.now();
        if self.agent.poll_timeout().is_some_and(|d| d <= t) {
            self.agent.handle_timeout(t);
        }
        if self.probe.as_ref().is_some_and(|(_, until)| now >= *until) {
            self.finish_probe(false);
        } else if self.probe.is_none() && self.health.is_some() && !self.stopping && now >= self.next_check {
            self.next_check = now + self.refresh;
            self.start_probe(now);
        }
        self.drain();
    }

    /// Starts deregistering; [`MioAgent::is_done`] says when it is over.
    pub fn shutdown(&mut self) {
        info!("deregistering");
        self.stopping = true;
        if let Some((p, _)) = self.probe.take() {
            self.drop_probe(p);
        }
        self.agent.shutdown(self.clock.now());
        self.drain();
    }

    /// Whether the agent deregistered (or stopped) after [`MioAgent::shutdown`].
    pub fn is_done(&self) -> bool {
        // Stopped: deregistered after a signal, or a check (`AgentConfig::check`) ended.
        self.done || self.agent.state() == AgentState::Stopped
    }

    /// The agent, for inspection.
    pub fn agent(&self) -> &TargetAgent {
        &self.agent
    }

    /// The agent's counters.
    pub fn counters(&self) -> &AgentCounters {
        self.agent.counters()
    }

    /// The last health check's result (surrogate mode); `None` before the first.
    pub fn last_health(&self) -> Option<bool> {
        self.last_health
    }

    fn drain(&mut self) {
        let now = self.clock.now();
        let registration = self.agent.config().registration;
        while let Some(n) = self.agent.poll_transmit(now, &mut self.tx) {
            if let Err(e) = self.socket.send_to(&self.tx[..n], registration) {
                debug!(error = %e, %registration, "agent send failed");
            }
        }
        while let Some(ev) = self.agent.poll_event() {
            log_agent_event(&ev);
            if self.stopping && ev == AgentEvent::Deregistered {
                self.done = true;
            }
        }
    }

    fn start_probe(&mut self, now: StdInstant) {
        let (Some(h), Some(r), Some(t)) = (self.health.clone(), self.registry.as_ref(), self.tokens) else {
            return;
        };
        let started: io::Result<Probe> = (|| match h {
            HealthCheck::Tcp { addr } => {
                let mut s = TcpStream::connect(addr)?;
                r.register(&mut s, t.probe, Interest::WRITABLE)?;
                Ok(Probe::Tcp(s))
            }
            HealthCheck::Udp { addr, payload } => {
                let mut s = UdpSocket::bind(unspecified(addr.ip()))?;
                s.connect(addr)?;
                s.send(&payload)?;
                r.register(&mut s, t.probe, Interest::READABLE)?;
                Ok(Probe::Udp(s))
            }
        })();
        match started {
            Ok(p) => self.probe = Some((p, now + self.refresh)),
            Err(e) => {
                debug!(error = %e, "health probe could not start");
                self.report(false);
            }
        }
    }

    fn probe_ready(&mut self) {
        let verdict = match &self.probe {
            None => return,
            Some((Probe::Tcp(s), _)) => match s.take_error() {
                Ok(Some(_)) | Err(_) => Some(false),
                Ok(None) => match s.peer_addr() {
                    Ok(_) => Some(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                    Err(_) => Some(false),
                },
            },
            Some((Probe::Udp(s), _)) => {
                let mut b = [0u8; 2048];
                match s.recv(&mut b) {
                    Ok(_) => Some(true),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(false),
                }
            }
        };
        if let Some(ok) = verdict {
            self.finish_probe(ok);
        }
    }

    fn finish_probe(&mut self, ok: bool) {
        if let Some((p, _)) = self.probe.take() {
            self.drop_probe(p);
        }
        self.report(ok);
    }

    fn drop_probe(&mut self, p: Probe) {
        if let Some(r) = &self.registry {
            let _ = match p {
                Probe::Tcp(mut s) => r.deregister(&mut s),
                Probe::Udp(mut s) => r.deregister(&mut s),
            };
        }
    }

    fn report(&mut self, ok: bool) {
        if self.last_health != Some(ok) {
            if ok {
                info!("health check passes");
            } else {
                warn!("health check fails");
            }
            self.last_health = Some(ok);
        }
        if !self.stopping {
            self.agent.set_health(self.clock.now(), ok);
        }
    }
}

/// Runs an agent in a loop of its own until deregistered after a signal (or a second signal). `signals`
/// must have been created on this thread. Returns the agent's counters.
pub fn run_agent(cfg: AgentDriverConfig, mut signals: Signals) -> io::Result<AgentCounters> {
    const SOCKET: Token = Token(0);
    const PROBE: Token = Token(1);
    const SIGNALS: Token = Token(2);
    let mut agent = MioAgent::bind(cfg)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    agent.register(
        poll.registry(),
        AgentTokens {
            socket: SOCKET,
            probe: PROBE,
        },
    )?;
    let mut events = Events::with_capacity(16);
    loop {
        if agent.is_done() {
            info!("deregistered: stopping");
            return Ok(*agent.counters());
        }
        let deadline = agent.next_deadline();
        match poll.poll(&mut events, Some(timeout_until(deadline))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            if agent.handle_ready(ev.token()) {
                continue;
            }
            if ev.token() == SIGNALS {
                while let Some(sig) = signals.recv() {
                    if agent.stopping {
                        warn!(signal = sig, "second signal: stopping now");
                        return Ok(*agent.counters());
                    }
                    info!(signal = sig, "signal");
                    agent.shutdown();
                }
            }
        }
        if StdInstant::now() >= deadline {
            agent.handle_timeout();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pias_proto::control::DeliveryMode;
    use pias_proto::{IpProtocol, TransportAddr};
    use pias_state::agent::AgentConfig;

    /// A surrogate agent checking `h`, run in its own poll loop until its first health result (bounded).
    fn first_health(h: HealthCheck) -> Option<bool> {
        let g = TransportAddr::new("10.99.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        let svc = TransportAddr::new("127.0.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        let mut agent = AgentConfig::new(
            g,
            svc,
            DeliveryMode::Nat,
            // Nobody listens there: the agent's own traffic goes nowhere, only the probe matters.
            "127.0.0.1:9".parse().unwrap(),
            pias_proto::auth::MasterKey::from_bytes([3; 32]).group_key(&g),
            1,
            1,
        );
        agent.surrogate = true;
        agent.refresh_ms = 300;
        let mut a = MioAgent::bind(AgentDriverConfig {
            agent,
            bind: Some("127.0.0.1:0".parse().unwrap()),
            health: Some(h),
        })
        .unwrap();
        let mut poll = Poll::new().unwrap();
        a.register(
            poll.registry(),
            AgentTokens {
                socket: Token(1),
                probe: Token(2),
            },
        )
        .unwrap();
        let mut events = Events::with_capacity(8);
        let end = StdInstant::now() + Duration::from_secs(3);
        while a.last_health().is_none() && StdInstant::now() < end {
            let deadline = a.next_deadline();
            poll.poll(&mut events, Some(timeout_until(deadline))).unwrap();
            for ev in &events {
                a.handle_ready(ev.token());
            }
            if StdInstant::now() >= deadline {
                a.handle_timeout();
            }
        }
        a.last_health()
    }

    #[test]
    fn health_checks_pass_and_fail_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = l.local_addr().unwrap();
        assert_eq!(first_health(HealthCheck::Tcp { addr: up }), Some(true));
        drop(l);
        assert_eq!(first_health(HealthCheck::Tcp { addr: up }), Some(false));

        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut b = [0u8; 64];
            if let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let payload = b"ping".to_vec();
        let h = HealthCheck::Udp {
            addr,
            payload: payload.clone(),
        };
        assert_eq!(first_health(h), Some(true));
        t.join().unwrap();
        // The echo answered once and is gone: port unreachable (or silence until the timeout) fails.
        assert_eq!(first_health(HealthCheck::Udp { addr, payload }), Some(false));
    }
}
