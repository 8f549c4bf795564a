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

/// Sends a query (a new socket, so a new flow, like `dig`; or always from `src_port`, one long-lived flow)
/// every `interval` for `duration`, each waiting at most `timeout`; prints `SENT_MS DONE_MS ANSWER` (Unix
/// ms; ANSWER is an address or `timeout`) per query.
pub(crate) fn dns_watch(
    server: SocketAddr,
    duration: Duration,
    interval: Duration,
    timeout: Duration,
    src_port: Option<u16>,
) -> Result<()> {
    use std::io::Write as _;
    let mut bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let one = match src_port {
        Some(p) => {
            bind.set_port(p);
            let s = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
            s.connect(server)?;
            s.set_read_timeout(Some(timeout))?;
            Some(s)
        }
        None => None,
    };
    let end = Instant::now() + duration;
    let mut id: u16 = (unix_ms() & 0xFFFF) as u16;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        let t0 = Instant::now();
        let sent = unix_ms();
        id = id.wrapping_add(1);
        let fresh;
        let s = match &one {
            Some(s) => s,
            None => {
                fresh = UdpSocket::bind(bind)?;
                fresh.connect(server)?;
                fresh.set_read_timeout(Some(timeout))?;
                &fresh
            }
        };
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

/// Most packets per second `flood` sends.
pub(crate) const FLOOD_MAX_RATE: u32 = 20_000;
/// Longest `flood` run.
pub(crate) const FLOOD_MAX_DURATION: Duration = Duration::from_secs(120);

/// Whether `a` is a lab address: private (RFC 1918) or benchmarking (RFC 2544, 198.18.0.0/15). The flood
/// refuses anything else, for its destination and its sources alike, so that it can only ever address the
/// lab's own namespaces.
fn lab_v4(a: std::net::Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_private() || (o[0] == 198 && (o[1] & 0xFE) == 18)
}

/// The ones' complement sum of `b` (RFC 1071), folded.
fn csum(mut sum: u32, b: &[u8]) -> u16 {
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// One IPv4/UDP packet carrying a DNS query from `src:sport` to `dst`, with correct checksums.
pub(crate) fn spoofed_query(
    src: std::net::Ipv4Addr,
    sport: u16,
    dst: std::net::SocketAddrV4,
    id: u16,
) -> Vec<u8> {
    let q = dns_query(id, false);
    let udp_len = 8 + q.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
    p.extend_from_slice(&id.to_be_bytes()); // IP id
    p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]); // DF, ttl 64, UDP, checksum below
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.ip().octets());
    let ipc = csum(0, &p[..20]);
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&q);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17, (udp_len >> 8) as u8, udp_len as u8]);
    let sum: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let mut uc = csum(sum, &p[20..]);
    if uc == 0 {
        uc = 0xFFFF;
    }
    p[26..28].copy_from_slice(&uc.to_be_bytes());
    p
}

/// Sends spoofed new UDP flows, one DNS query each from a random address of `sources` (and a random port), to
/// `server`, at `rate` per second for `duration`, through a raw socket (IP_HDRINCL); returns how many were
/// sent. Bounded: at most [`FLOOD_MAX_RATE`] per second for at most [`FLOOD_MAX_DURATION`], and only lab
/// addresses (private or 198.18.0.0/15) as destination and sources. Run it inside a lab namespace.
pub(crate) fn flood(
    server: std::net::SocketAddrV4,
    sources: (std::net::Ipv4Addr, u8),
    rate: u32,
    duration: Duration,
) -> Result<u64> {
    use std::net::Ipv4Addr;
    if rate == 0 || rate > FLOOD_MAX_RATE {
        bail!("--rate must be 1..={FLOOD_MAX_RATE}");
    }
    if duration > FLOOD_MAX_DURATION {
        bail!("--duration-ms must be at most {}", FLOOD_MAX_DURATION.as_millis());
    }
    let (net, len) = sources;
    if !(8..=32).contains(&len) {
        bail!("--sources: a prefix of length 8..=32");
    }
    let mask = if len == 32 { u32::MAX } else { !(u32::MAX >> len) };
    let net = u32::from(net) & mask;
    let last = Ipv4Addr::from(net | !mask);
    if !lab_v4(*server.ip()) || !lab_v4(Ipv4Addr::from(net)) || !lab_v4(last) {
        bail!("the flood only addresses lab addresses (10/8, 172.16/12, 192.168/16, 198.18/15)");
    }
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!(
            "raw socket: {} (needs CAP_NET_RAW)",
            std::io::Error::last_os_error()
        );
    }
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: server.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*server.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut x = unix_ms() | 1;
    let mut next = move || {
        // xorshift64: varied sources, no quality needed.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    while t0.elapsed() < duration {
        let due = (t0.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent + errors < due {
            let r = next();
            let src = Ipv4Addr::from(net | (r as u32 & !mask));
            let sport = 1024 + ((r >> 32) as u16 % 64_000);
            let p = spoofed_query(src, sport, server, (r >> 48) as u16);
            // SAFETY: `p` and `to` outlive the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&raw const to).cast(),
                    core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n < 0 {
                errors += 1;
            } else {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    println!("sent={sent} errors={errors}");
    Ok(sent)
}

#[cfg(test)]
mod flood_tests {
    use super::*;

    #[test]
    fn spoofed_query_checksums_verify() {
        let p = spoofed_query(
            "198.18.3.4".parse().unwrap(),
            40000,
            "10.99.0.53:53".parse().unwrap(),
            0x1234,
        );
        assert_eq!(csum(0, &p[..20]), 0, "IPv4 header checksum");
        let udp_len = p.len() - 20;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 17, (udp_len >> 8) as u8, udp_len as u8]);
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(csum(0, &pseudo), 0, "UDP checksum");
        assert_eq!(&p[28..30], &0x1234u16.to_be_bytes(), "DNS id");
    }

    #[test]
    fn flood_refuses_non_lab_addresses_and_unbounded_runs() {
        let lab = "10.99.0.53:53".parse().unwrap();
        let src = ("198.18.0.0".parse().unwrap(), 15);
        let d = Duration::from_millis(1);
        assert!(flood("8.8.8.8:53".parse().unwrap(), src, 10, d).is_err());
        assert!(flood(lab, ("1.0.0.0".parse().unwrap(), 8), 10, d).is_err());
        assert!(flood(lab, ("198.0.0.0".parse().unwrap(), 8), 10, d).is_err());
        assert!(flood(lab, src, FLOOD_MAX_RATE + 1, d).is_err());
        assert!(flood(lab, src, 10, Duration::from_secs(121)).is_err());
    }
}
