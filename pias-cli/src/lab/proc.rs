//! Background processes inside lab namespaces, each with a pid file and a log under the lab directory.
//!
//! A pid file is trusted only while that pid is alive *in the lab namespace it was started in*, so a stale file
//! never leads to signalling some other process.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::net::{pid_in_ns, send_signal};

/// A managed process: `NAME.pid` and `NAME.log` in `dir`, running in `ns`.
#[derive(Debug, Clone)]
pub(crate) struct Daemon {
    pub ns: String,
    pub dir: PathBuf,
    pub name: String,
}

impl Daemon {
    pub(crate) fn new(ns: &str, dir: &Path, name: &str) -> Daemon {
        Daemon {
            ns: ns.to_owned(),
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The pid, if the process is alive in its namespace.
    pub(crate) fn pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()?;
        pid_in_ns(pid, &self.ns).then_some(pid)
    }

    pub(crate) fn running(&self) -> bool {
        self.pid().is_some()
    }

    /// Starts `argv` in the namespace unless it already runs. The process stays in the foreground of its own
    /// process group (so it outlives the command that started it and is reaped by init).
    pub(crate) fn start(&self, argv: &[String]) -> Result<u32> {
        if let Some(pid) = self.pid() {
            return Ok(pid);
        }
        fs::create_dir_all(&self.dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} in {}", argv[0], self.ns))?;
        let pid = child.id();
        fs::write(self.pid_file(), format!("{pid}\n"))?;
        // `ip netns exec` execs the program, so this pid becomes the program's once the exec has happened.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if pid_in_ns(pid, &self.ns) {
                return Ok(pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "{} did not start in {}; see {}",
            argv[0],
            self.ns,
            self.log_file().display()
        )
    }

    /// Sends a signal (`"TERM"`, `"KILL"`) if the process is alive.
    pub(crate) fn signal(&self, sig: &str) -> Option<u32> {
        let pid = self.pid()?;
        send_signal(pid, sig);
        Some(pid)
    }

    /// SIGKILL now (a crash, for failover tests). Returns the pid killed.
    pub(crate) fn kill(&self) -> Option<u32> {
        let pid = self.signal("KILL")?;
        self.wait_gone(pid, Duration::from_secs(2));
        let _ = fs::remove_file(self.pid_file());
        Some(pid)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub(crate) fn stop(&self, grace: Duration) {
        if let Some(pid) = self.signal("TERM")
            && !self.wait_gone(pid, grace)
        {
            send_signal(pid, "KILL");
            self.wait_gone(pid, Duration::from_secs(1));
        }
        let _ = fs::remove_file(self.pid_file());
    }

    fn wait_gone(&self, pid: u32, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if !pid_in_ns(pid, &self.ns) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// Waits until `f` holds, polling every 50 ms; false on timeout.
pub(crate) fn wait_for(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + t;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
