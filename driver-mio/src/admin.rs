//! The Prometheus endpoint and the control socket, served inside the proxy's own loop (the proxy is never
//! shared with another thread; the tokio driver's `admin` serves them on tasks). Requests are answered by
//! `driver_common::{metrics, control}` through `ProxyLoop::{metrics, answer}`; this module
//! only moves bytes: non-blocking accept, read until a request is whole, write the answer (waiting for
//! writability if it is large), close. At most [`MAX_CONNS`] connections, each given [`CONN_TIME`].

use core::time::Duration;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::time::Instant as StdInstant;

use driver_common::{control, metrics};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use tracing::debug;

use driver_common::ProxyLoop;

const METRICS: Token = Token(8);
const CONTROL: Token = Token(9);
/// Tokens of connections start here.
const CONN_BASE: usize = 16;
const MAX_CONNS: usize = 32;
const CONN_TIME: Duration = Duration::from_secs(5);
/// Control requests answered per connection and wake-up.
const MAX_LINES: usize = 8;

#[derive(Debug)]
enum Stream {
    Http(TcpStream),
    Control(UnixStream),
}

#[derive(Debug)]
struct Conn {
    stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    closing: bool,
    expires: StdInstant,
}

#[derive(Debug, Default)]
pub(crate) struct Admin {
    metrics: Option<TcpListener>,
    control: Option<UnixListener>,
    /// Who may use the control socket (checked on every accepted connection, SPEC.md §8.5).
    access: Option<control::Access>,
    conns: Vec<Option<Conn>>,
}

impl Admin {
    pub(crate) fn set_metrics(&mut self, l: std::net::TcpListener) -> io::Result<()> {
        l.set_nonblocking(true)?;
        self.metrics = Some(TcpListener::from_std(l));
        Ok(())
    }

    pub(crate) fn set_control(&mut self, l: StdUnixListener, access: control::Access) -> io::Result<()> {
        l.set_nonblocking(true)?;
        self.control = Some(UnixListener::from_std(l));
        self.access = Some(access);
        Ok(())
    }

    pub(crate) fn register(&mut self, r: &Registry) -> io::Result<()> {
        if let Some(l) = &mut self.metrics {
            r.register(l, METRICS, Interest::READABLE)?;
        }
        if let Some(l) = &mut self.control {
            r.register(l, CONTROL, Interest::READABLE)?;
        }
        Ok(())
    }

    /// The earliest connection deadline (far away when there is none).
    pub(crate) fn next_deadline(&self) -> StdInstant {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.expires)
            .min()
            .unwrap_or_else(|| StdInstant::now() + driver_common::IDLE_TIMER)
    }

    /// Closes connections past their time.
    pub(crate) fn handle_timeout(&mut self, r: &Registry, now: StdInstant) {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| now >= c.expires) {
                self.close(r, i);
            }
        }
    }

    pub(crate) fn handle_ready(&mut self, r: &Registry, t: Token, p: &mut ProxyLoop) {
        if t == METRICS || t == CONTROL {
            self.accept(r, t == METRICS, p);
        } else if t.0 >= CONN_BASE && t.0 - CONN_BASE < self.conns.len() {
            self.serve(r, t.0 - CONN_BASE, p);
        }
    }

    fn accept(&mut self, r: &Registry, http: bool, p: &mut ProxyLoop) {
        loop {
            let stream = if http {
                match self.metrics.as_ref().map(|l| l.accept()) {
                    Some(Ok((s, _))) => Stream::Http(s),
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) => {
                        debug!(error = %e, "metrics accept failed");
                        return;
                    }
                    None => return,
                }
            } else {
                match self.control.as_ref().map(|l| l.accept()) {
                    Some(Ok((s, _))) => {
                        use std::os::fd::AsFd;
                        if !self.access.is_some_and(|a| a.admit(s.as_fd())) {
                            continue; // refused (counted, logged): dropping closes it
                        }
                        Stream::Control(s)
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) => {
                        debug!(error = %e, "control accept failed");
                        return;
                    }
                    None => return,
                }
            };
            let i = match self.conns.iter().position(Option::is_none) {
                Some(i) => i,
                None if self.conns.len() < MAX_CONNS => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
                None => {
                    debug!("too many admin connections: closing the new one");
                    continue;
                }
            };
            let mut c = Conn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                closing: false,
                expires: StdInstant::now() + CONN_TIME,
            };
            let tok = Token(CONN_BASE + i);
            let reg = match &mut c.stream {
                Stream::Http(s) => r.register(s, tok, Interest::READABLE | Interest::WRITABLE),
                Stream::Control(s) => r.register(s, tok, Interest::READABLE | Interest::WRITABLE),
            };
            if reg.is_err() {
                continue;
            }
            self.conns[i] = Some(c);
            self.serve(r, i, p);
        }
    }

    fn serve(&mut self, r: &Registry, i: usize, p: &mut ProxyLoop) {
        let Some(c) = self.conns[i].as_mut() else { return };
        let done = c.step(p).unwrap_or(true);
        if done {
            self.close(r, i);
        }
    }

    fn close(&mut self, r: &Registry, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = match &mut c.stream {
                Stream::Http(s) => r.deregister(s),
                Stream::Control(s) => r.deregister(s),
            };
        }
    }
}

impl Conn {
    /// Reads what is there, answers whole requests, writes what it can; `Ok(true)` when finished.
    fn step(&mut self, p: &mut ProxyLoop) -> io::Result<bool> {
        let limit = match self.stream {
            Stream::Http(_) => metrics::MAX_REQUEST,
            Stream::Control(_) => control::MAX_REQUEST,
        };
        let mut buf = [0u8; 4096];
        while !self.closing && self.input.len() < limit {
            let n = match self.read(&mut buf) {
                Ok(0) => {
                    self.closing = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.input.extend_from_slice(&buf[..n]);
        }
        match self.stream {
            Stream::Http(_) => {
                if self.output.is_empty() && metrics::request_complete(&self.input) {
                    self.output = metrics::respond(&self.input, || Some(p.metrics()));
                    self.closing = true;
                }
            }
            Stream::Control(_) => {
                // At most MAX_LINES answers per wake-up: each is bounded (a capped page), and so is their
                // number, so a client pipelining requests cannot hold the proxy's loop (SPEC.md §8.5).
                let mut answered = 0;
                while let Some(nl) = self.input.iter().position(|&b| b == b'\n') {
                    if answered == MAX_LINES {
                        self.output.extend_from_slice(
                            control::error_line("too many requests at once: send one, read its answer")
                                .as_bytes(),
                        );
                        self.input.clear();
                        self.closing = true;
                        break;
                    }
                    let line = String::from_utf8_lossy(&self.input[..nl]).into_owned();
                    self.input.drain(..=nl);
                    let a = p.answer(&line);
                    self.output.extend_from_slice(a.as_bytes());
                    answered += 1;
                }
                if self.input.len() >= limit {
                    self.output
                        .extend_from_slice(control::error_line("request line too long").as_bytes());
                    self.closing = true;
                }
            }
        }
        while self.written < self.output.len() {
            let out = &self.output[self.written..];
            let r = match &mut self.stream {
                Stream::Http(s) => s.write(out),
                Stream::Control(s) => s.write(out),
            };
            match r {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(self.closing)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Http(s) => s.read(buf),
            Stream::Control(s) => s.read(buf),
        }
    }
}
