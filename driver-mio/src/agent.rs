//! The target agent on mio: [`MioAgent`] (embeddable: its socket and the service's health probe on the
//! host's registry) and [`run_agent`] (a loop of its own with signals).
//!
//! What a wake-up does with the agent is `driver_common::AgentLoop`'s, shared with the tokio driver. What
//! is here is how mio waits and the probe: when the agent says a health check is due, it runs inside the
//! loop, one at a time — a non-blocking TCP connect (passes when it completes), a UDP request on a
//! connected socket (passes on the expected answer; the port check also on silence, failing only on a
//! refusal), an HTTP GET (passes on the expected status), or a command (polled every
//! `health::COMMAND_POLL` until it exits); each ends at the time the agent gives it (`timeout_ms`).

use core::time::Duration;
use std::io;
use std::time::Instant as StdInstant;

use driver_common::agent_loop::AGENT_BUFFER;
use driver_common::{AgentDriverConfig, AgentLoop, HealthCheck, health, unspecified};
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
    /// The health probe (a short-lived socket; unused without a health check or for a command).
    pub probe: Token,
}

#[derive(Debug)]
enum Probe {
    Tcp(TcpStream),
    Udp {
        socket: UdpSocket,
        expect: Option<Vec<u8>>,
        silence_passes: bool,
    },
    Http {
        stream: TcpStream,
        request: Vec<u8>,
        written: usize,
        head: Vec<u8>,
        status: u16,
        /// Known once the status line is in; the check ends when the response does (or its time is up).
        verdict: Option<bool>,
        /// Response bytes read.
        read: usize,
    },
    Command(health::CommandProbe),
}

impl Probe {
    /// The verdict when its time is up: only the UDP port check passes on silence.
    fn timed_out(&self) -> bool {
        match self {
            Probe::Udp { silence_passes, .. } => *silence_passes,
            Probe::Http { verdict, .. } => verdict.unwrap_or(false),
            _ => false,
        }
    }
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

    /// When the host must call [`MioAgent::handle_timeout`] next (a running command check is polled every
    /// [`health::COMMAND_POLL`]).
    pub fn next_deadline(&self) -> StdInstant {
        let d = self.core.deadline();
        match &self.probe {
            None => d,
            Some((Probe::Command(_), until)) => d.min(*until).min(StdInstant::now() + health::COMMAND_POLL),
            Some((_, until)) => d.min(*until),
        }
    }

    /// Runs the agent's timer, ends an overdue health probe (or a command that exited), starts a due one.
    pub fn handle_timeout(&mut self) {
        self.core.handle_timeout();
        let now = StdInstant::now();
        let verdict = match &mut self.probe {
            Some((Probe::Command(c), _)) => c.poll(now),
            Some((p, until)) if now >= *until => Some(p.timed_out()),
            _ => None,
        };
        if let Some(ok) = verdict {
            self.finish_probe(ok);
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

    /// The last health check's result; `None` before the first (or without a health check).
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
            HealthCheck::Udp {
                addr,
                payload,
                expect,
                silence_passes,
            } => {
                let mut s = UdpSocket::bind(unspecified(addr.ip()))?;
                s.connect(addr)?;
                s.send(&payload)?;
                r.register(&mut s, t.probe, Interest::READABLE)?;
                Ok(Probe::Udp {
                    socket: s,
                    expect,
                    silence_passes,
                })
            }
            HealthCheck::Http {
                addr,
                host,
                path,
                status,
            } => {
                let mut s = TcpStream::connect(addr)?;
                r.register(&mut s, t.probe, Interest::WRITABLE | Interest::READABLE)?;
                Ok(Probe::Http {
                    stream: s,
                    request: health::http_request(&host, &path),
                    written: 0,
                    head: Vec::with_capacity(256),
                    status,
                    verdict: None,
                    read: 0,
                })
            }
            HealthCheck::Command { command } => Ok(Probe::Command(health::CommandProbe::start(
                &command,
                StdInstant::now() + limit,
            )?)),
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
        let verdict = match &mut self.probe {
            None | Some((Probe::Command(_), _)) => return,
            Some((Probe::Tcp(s), _)) => tcp_connected(s),
            Some((Probe::Udp { socket, expect, .. }, _)) => {
                let mut b = [0u8; 2048];
                loop {
                    match socket.recv(&mut b) {
                        Ok(n) if health::udp_answer_ok(&b[..n], expect.as_deref()) => break Some(true),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                        // ICMP port unreachable (ECONNREFUSED) and other errors: the port is closed.
                        Err(_) => break Some(false),
                    }
                }
            }
            Some((
                Probe::Http {
                    stream,
                    request,
                    written,
                    head,
                    status,
                    verdict,
                    read,
                },
                _,
            )) => http_progress(stream, request, written, head, *status, verdict, read),
        };
        if let Some(ok) = verdict {
            self.finish_probe(ok);
        }
    }

    fn finish_probe(&mut self, ok: bool) {
        self.abandon_probe();
        self.core.on_health(ok);
    }

    /// Closes the running probe, if any (its result no longer matters once stopping; a command is killed).
    fn abandon_probe(&mut self) {
        if let (Some((p, _)), Some(r)) = (self.probe.take(), &self.registry) {
            let _ = match p {
                Probe::Tcp(mut s) | Probe::Http { stream: mut s, .. } => r.deregister(&mut s),
                Probe::Udp { mut socket, .. } => r.deregister(&mut socket),
                Probe::Command(mut c) => {
                    c.abandon();
                    Ok(())
                }
            };
        }
    }
}

/// A non-blocking connect's outcome once the socket is ready: `Some(true)` connected, `Some(false)`
/// refused or failed, `None` not yet.
fn tcp_connected(s: &TcpStream) -> Option<bool> {
    match s.take_error() {
        Ok(Some(_)) | Err(_) => Some(false),
        Ok(None) => match s.peer_addr() {
            Ok(_) => Some(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(_) => Some(false),
        },
    }
}

/// Moves an HTTP check on: once connected, writes the request, then reads the response: the verdict comes
/// with the status line, and is returned once the response ended (the peer closed, or
/// `health::HTTP_DRAIN_LIMIT` bytes were read: a server cut off mid-write logs errors); `None` while the
/// socket would block.
fn http_progress(
    s: &mut TcpStream,
    request: &[u8],
    written: &mut usize,
    head: &mut Vec<u8>,
    status: u16,
    verdict: &mut Option<bool>,
    read: &mut usize,
) -> Option<bool> {
    use std::io::{Read as _, Write as _};
    if *written < request.len() {
        match tcp_connected(s) {
            Some(true) => {}
            other => return other,
        }
        while *written < request.len() {
            match s.write(&request[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => return Some(false),
            }
        }
    }
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(n) => {
                *read += n;
                if verdict.is_none() {
                    head.extend_from_slice(&b[..n]);
                    *verdict = health::http_verdict(head, n == 0, status);
                }
                if n == 0 || verdict.is_some() && *read >= health::HTTP_DRAIN_LIMIT {
                    return Some(verdict.unwrap_or(false));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => return Some(verdict.unwrap_or(false)),
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
    use pias_state::agent::{AgentConfig, HealthSchedule};
    use std::io::{Read as _, Write as _};

    /// An agent checking `h`, run in its own poll loop until its first health result (bounded).
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
        agent.health = Some(HealthSchedule::default());
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

    fn udp(addr: std::net::SocketAddr, expect: Option<&[u8]>, silence_passes: bool) -> HealthCheck {
        HealthCheck::Udp {
            addr,
            payload: b"ping".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            silence_passes,
        }
    }

    #[test]
    fn tcp_checks_pass_and_fail_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = l.local_addr().unwrap();
        assert_eq!(first_health(HealthCheck::Tcp { addr: up }), Some(true));
        drop(l);
        assert_eq!(first_health(HealthCheck::Tcp { addr: up }), Some(false));
    }

    #[test]
    fn udp_checks_pass_on_the_expected_answer_and_fail_otherwise() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 64];
            for _ in 0..3 {
                if let Ok((n, from)) = echo.recv_from(&mut b) {
                    let _ = echo.send_to(&b[..n], from);
                }
            }
        });
        assert_eq!(first_health(udp(addr, None, false)), Some(true));
        assert_eq!(first_health(udp(addr, Some(b"pi"), false)), Some(true));
        assert_eq!(
            first_health(udp(addr, Some(b"pong"), false)),
            Some(false),
            "wrong answer"
        );
        t.join().unwrap();
        // A silent service: fails the answer check, passes the port check.
        let mute = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let quiet = mute.local_addr().unwrap();
        assert_eq!(first_health(udp(quiet, None, false)), Some(false));
        assert_eq!(first_health(udp(quiet, None, true)), Some(true));
        // A closed port (ICMP port unreachable): both fail.
        drop(mute);
        assert_eq!(first_health(udp(quiet, None, false)), Some(false));
        assert_eq!(first_health(udp(quiet, None, true)), Some(false));
    }

    /// An HTTP server answering each connection with `status`, or (None) accepting and never answering.
    fn http_server(status: Option<u16>) -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                match status {
                    Some(st) => {
                        let r = format!("HTTP/1.0 {st} X\r\nContent-Length: 0\r\n\r\n");
                        let _ = s.write_all(r.as_bytes());
                    }
                    None => held.push(s),
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        addr
    }

    fn http(addr: std::net::SocketAddr) -> HealthCheck {
        HealthCheck::Http {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            status: 200,
        }
    }

    #[test]
    fn http_checks_want_the_status_in_time() {
        assert_eq!(first_health(http(http_server(Some(200)))), Some(true));
        assert_eq!(first_health(http(http_server(Some(503)))), Some(false));
        assert_eq!(first_health(http(http_server(None))), Some(false), "hung");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert_eq!(first_health(http(addr)), Some(false), "refused");
    }

    #[test]
    fn command_checks_follow_the_exit_status_and_the_timeout() {
        let c = |s: &str| HealthCheck::Command { command: s.into() };
        assert_eq!(first_health(c("exit 0")), Some(true));
        assert_eq!(first_health(c("exit 1")), Some(false));
        let t = StdInstant::now();
        assert_eq!(first_health(c("sleep 5")), Some(false));
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
