//! What the drivers' health checks share (SPEC.md §10.3): the HTTP request and the reading of its status
//! line, the UDP answer's test, and the command check (a child process polled without blocking, so the
//! tokio and mio drivers both run it inside their loops).

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Most bytes of an HTTP response read before its status line must have ended.
pub const HTTP_HEAD_LIMIT: usize = 1024;

/// The request an HTTP check sends: `GET path HTTP/1.0` with `Host` and `Connection: close`.
pub fn http_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pias-health\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// The verdict on the response bytes read so far: `Some(pass)` once the status line is complete (pass
/// when its status is `want`), or once `eof` or [`HTTP_HEAD_LIMIT`] is reached without one (fail);
/// `None` while more is needed.
pub fn http_verdict(head: &[u8], eof: bool, want: u16) -> Option<bool> {
    let Some(end) = head.windows(2).position(|w| w == b"\r\n") else {
        return (eof || head.len() >= HTTP_HEAD_LIMIT).then_some(false);
    };
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    Some(version.starts_with("HTTP/") && status == Some(want))
}

/// Most bytes of an HTTP response a check reads to its end (so the server is not cut off mid-write and
/// logs no error); beyond, the connection is closed with the verdict already known.
pub const HTTP_DRAIN_LIMIT: usize = 64 * 1024;

/// Whether a UDP answer passes: it begins with `expect` (any answer, without one).
pub fn udp_answer_ok(answer: &[u8], expect: Option<&[u8]>) -> bool {
    expect.is_none_or(|e| answer.starts_with(e))
}

/// A running command check: `sh -c command`, its output discarded.
#[derive(Debug)]
pub struct CommandProbe {
    child: Child,
    until: Instant,
}

impl CommandProbe {
    /// Starts `sh -c command`; it fails (and is killed) if it has not exited by `until`.
    pub fn start(command: &str, until: Instant) -> io::Result<CommandProbe> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(CommandProbe { child, until })
    }

    /// `Some(pass)` once the command exited (pass: status 0) or its time is up (fail; killed and
    /// reaped); `None` while it runs. Never blocks (but for reaping a killed child).
    pub fn poll(&mut self, now: Instant) -> Option<bool> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.success()),
            Ok(None) if now < self.until => None,
            Ok(None) | Err(_) => {
                self.abandon();
                Some(false)
            }
        }
    }

    /// Kills the command (if it still runs) and reaps it.
    pub fn abandon(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for CommandProbe {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// How often a driver polls a running command check.
pub const COMMAND_POLL: core::time::Duration = core::time::Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn http_status_lines_are_read() {
        assert_eq!(http_verdict(b"HTTP/1.0 200 OK\r\n", false, 200), Some(true));
        assert_eq!(
            http_verdict(b"HTTP/1.1 200 OK\r\nServer: x", false, 200),
            Some(true)
        );
        assert_eq!(http_verdict(b"HTTP/1.1 503 Busy\r\n", false, 200), Some(false));
        assert_eq!(http_verdict(b"HTTP/1.1 204\r\n", false, 204), Some(true));
        assert_eq!(http_verdict(b"SSH-2.0-x\r\n", false, 200), Some(false));
        assert_eq!(http_verdict(b"HTTP/1.1 20", false, 200), None);
        assert_eq!(http_verdict(b"HTTP/1.1 20", true, 200), Some(false));
        assert_eq!(http_verdict(&[b'x'; HTTP_HEAD_LIMIT], false, 200), Some(false));
    }

    #[test]
    fn udp_answers_are_tested_by_their_start() {
        assert!(udp_answer_ok(b"anything", None));
        assert!(udp_answer_ok(b"PONG!", Some(b"PONG")));
        assert!(!udp_answer_ok(b"PING", Some(b"PONG")));
        assert!(!udp_answer_ok(b"", Some(b"P")));
    }

    fn run(cmd: &str, limit: Duration) -> bool {
        let mut p = CommandProbe::start(cmd, Instant::now() + limit).unwrap();
        loop {
            if let Some(v) = p.poll(Instant::now()) {
                return v;
            }
            std::thread::sleep(COMMAND_POLL);
        }
    }

    #[test]
    fn commands_pass_on_status_zero_and_fail_otherwise_or_at_the_timeout() {
        assert!(run("true", Duration::from_secs(5)));
        assert!(!run("exit 3", Duration::from_secs(5)));
        let t = Instant::now();
        assert!(!run("sleep 5", Duration::from_millis(200)));
        assert!(t.elapsed() < Duration::from_secs(2), "killed at the timeout");
    }
}
