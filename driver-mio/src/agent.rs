//! The target agent on mio: [`MioAgent`] (embeddable: its socket and, in surrogate mode, the health probe
//! on the host's registry) and [`run_agent`] (a loop of its own with signals).
//!
//! What a wake-up does with the agent is `driver_common::AgentLoop`'s, shared with the tokio driver. What
//! is here is how mio waits and the probe: when the agent says a health check is due, it runs inside the
//! loop, one at a time — a non-blocking TCP connect (passes when it completes), or a UDP request on a
//! connected socket (passes on any answer); either fails after the time the agent gives it (one refresh
//! interval).

use core::time::Duration;
use std::io;
use std::time::Instant as StdInstant;

use driver_common::agent_loop::AGENT_BUFFER;
use driver_common::{AgentDriverConfig, AgentLoop, HealthCheck, unspecified};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};
use pias_state::agent::{AgentCounters, TargetAgent};
use tracing::debug;

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
    core: AgentLoop,
    socket: UdpSocket,
    registry: Option<Registry>,
    tokens: Option<AgentTokens>,
    /// The running health probe and when it fails.
    probe: Option<(Probe, StdInstant)>,
    rx: Vec<u8>,
}

impl MioAgent {
    /// Validates the agent's configuration and binds its socket.
    pub fn bind(cfg: AgentDriverConfig) -> io::Result<MioAgent> {
        let core = AgentLoop::new(&cfg)?;
        let local = cfg.local_addr();
        let socket = UdpSocket::bind(local)
            .map_err(|e| io::Error::new(e.kind(), format!("bind agent socket {local}: {e}")))?;
        core.log_start(socket.local_addr()?, "mio");
        Ok(MioAgent {
            core,
            socket,
            registry: None,
            tokens: None,
            probe: None,
            rx: vec![0; AGENT_BUFFER],
        })
    }

    /// Registers the socket on `registry` under the host's tokens (the probe registers there when it
    /// runs), and sends the first Register.
    pub fn register(&mut self, registry: &Registry, tokens: AgentTokens) -> io::Result<()> {
        registry.register(&mut self.socket, tokens.socket, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        self.tokens = Some(tokens);
        self.settle();
        Ok(())
    }

    /// Handles a readiness event; `false` if `token` is not the agent's.
    pub fn handle_ready(&mut self, token: Token) -> bool {
        let Some(t) = self.tokens else { return false };
        if token == t.socket {
            for _ in 0..64 {
                match self.socket.recv_from(&mut self.rx) {
                    Ok((n, from)) => self.core.on_datagram(from, &self.rx[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => self.core.on_recv_error(&e),
                }
            }
        } else if token == t.probe {
            self.probe_ready();
        } else {
            return false;
        }
        self.settle();
        true
    }

    /// When the host must call [`MioAgent::handle_timeout`] next.
    pub fn next_deadline(&self) -> StdInstant {
        let d = self.core.deadline();
        self.probe.as_ref().map_or(d, |(_, until)| d.min(*until))
    }

    /// Runs the agent's timer, fails an overdue health probe, starts a due one.
    pub fn handle_timeout(&mut self) {
        self.core.handle_timeout();
        if self
            .probe
            .as_ref()
            .is_some_and(|(_, until)| StdInstant::now() >= *until)
        {
            self.finish_probe(false);
        }
        self.settle();
    }

    /// Starts deregistering; [`MioAgent::is_done`] says when it is over.
    pub fn shutdown(&mut self) {
        self.core.shutdown();
        self.abandon_probe();
        self.settle();
    }

    /// A stop signal: the first starts deregistering, a second means stop now (`true`).
    pub fn on_signal(&mut self, sig: &str) -> bool {
        let now = self.core.on_signal(sig);
        self.abandon_probe();
        self.settle();
        now
    }

    /// Whether the agent deregistered after [`MioAgent::shutdown`], or stopped (a check ended).
    pub fn is_done(&self) -> bool {
        self.core.is_done()
    }

    /// The agent, for inspection.
    pub fn agent(&self) -> &TargetAgent {
        self.core.agent()
    }

    /// The agent's counters.
    pub fn counters(&self) -> &AgentCounters {
        self.core.counters()
    }

    /// The last health check's result (surrogate mode); `None` before the first.
    pub fn last_health(&self) -> Option<bool> {
        self.core.last_health()
    }

    /// After every input: the drain, then a health check if the agent says one is due.
    fn settle(&mut self) {
        let socket = &self.socket;
        self.core.drain(|b, to| socket.send_to(b, to));
        if let Some((h, limit)) = self.core.poll_health_check() {
            self.start_probe(h, limit);
        }
    }

    fn start_probe(&mut self, h: HealthCheck, limit: Duration) {
        let (Some(r), Some(t)) = (self.registry.as_ref(), self.tokens) else {
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
            Ok(p) => self.probe = Some((p, StdInstant::now() + limit)),
            Err(e) => {
                debug!(error = %e, "health probe could not start");
                self.core.on_health(false);
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
        self.abandon_probe();
        self.core.on_health(ok);
    }

    /// Closes the running probe, if any (its result no longer matters once stopping).
    fn abandon_probe(&mut self) {
        if let (Some((p, _)), Some(r)) = (self.probe.take(), &self.registry) {
            let _ = match p {
                Probe::Tcp(mut s) => r.deregister(&mut s),
                Probe::Udp(mut s) => r.deregister(&mut s),
            };
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
                    if agent.on_signal(sig) {
                        return Ok(*agent.counters());
                    }
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
