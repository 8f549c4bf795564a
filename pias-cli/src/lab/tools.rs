//! Small helpers the lab runs inside its namespaces: a UDP echo server (a target service for round-trip
//! measurements) and a UDP round-trip probe.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Echoes every datagram back to its sender, forever.
pub(crate) fn udp_echo(bind: SocketAddr) -> Result<()> {
    let s = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = s.recv_from(&mut buf)?;
        let _ = s.send_to(&buf[..n], from);
    }
}

/// Round-trip times of one probe run.
#[derive(Debug, Clone)]
pub(crate) struct Rtt {
    pub sent: u32,
    pub lost: u32,
    pub median_us: f64,
    pub p99_us: f64,
}

impl Rtt {
    pub(crate) fn line(&self) -> String {
        format!("sent={} lost={} median_us={:.1} p99_us={:.1}", self.sent, self.lost, self.median_us, self.p99_us)
    }

    pub(crate) fn parse(line: &str) -> Option<Rtt> {
        let mut r = Rtt { sent: 0, lost: 0, median_us: 0.0, p99_us: 0.0 };
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "sent" => r.sent = v.parse().ok()?,
                "lost" => r.lost = v.parse().ok()?,
                "median_us" => r.median_us = v.parse().ok()?,
                "p99_us" => r.p99_us = v.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }
}

/// Sends `count` 64-byte requests one after another (each waits for its echo or `timeout`).
pub(crate) fn udp_ping(to: SocketAddr, count: u32, timeout: Duration) -> Result<Rtt> {
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let s = UdpSocket::bind(bind)?;
    s.connect(to)?;
    s.set_read_timeout(Some(timeout))?;
    let mut rtts = Vec::with_capacity(count as usize);
    let mut lost = 0;
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let mut req = [0u8; 64];
        req[..4].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        s.send(&req)?;
        loop {
            match s.recv(&mut buf) {
                Ok(n) if n >= 4 && buf[..4] == req[..4] => {
                    rtts.push(t0.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    if rtts.is_empty() {
        bail!("no echo came back from {to}");
    }
    rtts.sort_by(f64::total_cmp);
    let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    Ok(Rtt { sent: count, lost, median_us: q(0.5), p99_us: q(0.99) })
}
