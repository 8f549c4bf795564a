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
        format!(
            "sent={} lost={} median_us={:.1} p99_us={:.1}",
            self.sent, self.lost, self.median_us, self.p99_us
        )
    }
}

/// Sends `count` 64-byte requests one after another (each waits for its echo or `timeout`), from `from`
/// (a local address) if given.
pub(crate) fn udp_ping(
    to: SocketAddr,
    count: u32,
    timeout: Duration,
    from: Option<std::net::IpAddr>,
) -> Result<Rtt> {
    let bind: SocketAddr = match from {
        Some(ip) => SocketAddr::new(ip, 0),
        None if to.is_ipv4() => "0.0.0.0:0".parse()?,
        None => "[::]:0".parse()?,
    };
    let s = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
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
    Ok(Rtt {
        sent: count,
        lost,
        median_us: q(0.5),
        p99_us: q(0.99),
    })
}

/// A DNS query for `www.demo.pias` (A, or AAAA when `v6`), id `id`.
pub(crate) fn dns_query(id: u16, v6: bool) -> Vec<u8> {
    let mut q = Vec::with_capacity(40);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["www", "demo", "pias"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, if v6 { 28 } else { 1 }, 0, 1]);
    q
}

/// The first A or AAAA record of a DNS response with id `id`.
pub(crate) fn dns_answer(id: u16, r: &[u8]) -> Option<std::net::IpAddr> {
    if r.len() < 12 || r[..2] != id.to_be_bytes() || r[2] & 0x80 == 0 {
        return None;
    }
    let qd = u16::from_be_bytes([r[4], r[5]]);
    let an = u16::from_be_bytes([r[6], r[7]]);
    let mut i = 12;
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *r.get(i)? as usize;
            if l == 0 {
                return Some(i + 1);
            }
            if l & 0xC0 == 0xC0 {
                return Some(i + 2);
            }
            i += 1 + l;
        }
    };
    for _ in 0..qd {
        i = skip_name(i)? + 4;
    }
    for _ in 0..an {
        i = skip_name(i)?;
        let h = r.get(i..i + 10)?;
        let (ty, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[8], h[9]]) as usize,
        );
        let d = r.get(i + 10..i + 10 + len)?;
        match (ty, len) {
            (1, 4) => return Some(std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]).into()),
            (28, 16) => return Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?).into()),
            _ => i += 10 + len,
        }
    }
    None
}

/// Milliseconds since the Unix epoch (the clock `dns-watch` lines and failover kills share).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends a query (a new socket, so a new flow, like `dig`) every `interval` for `duration`, each waiting at
/// most `timeout`; prints `SENT_MS DONE_MS ANSWER` (Unix ms; ANSWER is an address or `timeout`) per query.
pub(crate) fn dns_watch(
    server: SocketAddr,
    duration: Duration,
    interval: Duration,
    timeout: Duration,
) -> Result<()> {
    use std::io::Write as _;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let end = Instant::now() + duration;
    let mut id: u16 = (unix_ms() & 0xFFFF) as u16;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        let t0 = Instant::now();
        let sent = unix_ms();
        id = id.wrapping_add(1);
        let s = UdpSocket::bind(bind)?;
        s.connect(server)?;
        s.set_read_timeout(Some(timeout))?;
        let _ = s.send(&dns_query(id, !server.is_ipv4()));
        let deadline = t0 + timeout;
        let mut answer = None;
        while answer.is_none() && Instant::now() < deadline {
            match s.recv(&mut buf) {
                Ok(n) => answer = dns_answer(id, &buf[..n]),
                Err(_) => break,
            }
        }
        match answer {
            Some(a) => writeln!(out, "{sent} {} {a}", unix_ms())?,
            None => writeln!(out, "{sent} {} timeout", unix_ms())?,
        }
        out.flush()?;
        if let Some(rest) = interval.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(())
}

/// One completed query of a `dns-watch` run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub sent_ms: u64,
    pub answer: Option<std::net::IpAddr>,
}

pub(crate) fn parse_watch(out: &str) -> Vec<Probe> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            // SENT_MS DONE_MS ANSWER
            let (s, _done, a) = (it.next()?, it.next()?, it.next()?);
            Some(Probe {
                sent_ms: s.parse().ok()?,
                answer: a.parse().ok(),
            })
        })
        .collect()
}

/// Service interruption after an event at `kill_ms`: from the event to the sending of the first good query
/// after the last bad one (a timeout, or an answer `good` rejects). `None` if service never came back.
pub(crate) fn outage_ms(
    probes: &[Probe],
    kill_ms: u64,
    good: impl Fn(std::net::IpAddr) -> bool,
) -> Option<u64> {
    let after: Vec<&Probe> = probes.iter().filter(|p| p.sent_ms >= kill_ms).collect();
    let is_good = |p: &Probe| p.answer.is_some_and(&good);
    let last_bad = after.iter().rposition(|p| !is_good(p));
    let first_good = match last_bad {
        Some(i) => after.get(i + 1)?,
        None => after.first()?,
    };
    Some(first_good.sent_ms.saturating_sub(kill_ms))
}
