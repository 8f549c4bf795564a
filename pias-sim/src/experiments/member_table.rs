//! Experiment 3: one proxy's membership table at 10^3 … 10^5 members: memory (the table's own accounting,
//! deterministic, and the process's resident-set growth) and CPU per membership update (a superseding record
//! applied to the real `pias_state::membership::Membership`: table replace, digest tree, ring index, flood
//! queues), timed with the wall clock.

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::hint::black_box;

use pias_proto::ProxyId;
use pias_proto::auth::SipKey;
use pias_proto::control::{MemberStatus, ProxyRecord};
use pias_state::Instant;
use pias_state::membership::{Membership, MembershipConfig};

use super::plot::{Chart, Series, Style};
use super::{Output, csv_line, params};

params! {
    /// Parameters of the member-table experiment.
    pub struct MemberTableParams {
        seed: u64 = 1,
        sizes: Vec<usize> = vec![1000, 10_000, 100_000],
        /// Superseding updates timed per size.
        updates: usize = 200_000,
    }
}

impl MemberTableParams {
    /// A small version (tests).
    pub fn small() -> Self {
        MemberTableParams {
            sizes: vec![100, 1000],
            updates: 2000,
            ..Self::default()
        }
    }
}

fn rec(id: u32, version: u32, seed: u64) -> ProxyRecord {
    let _ = seed;
    ProxyRecord {
        id: ProxyId(id),
        incarnation: 1,
        version,
        status: MemberStatus::Alive,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | id)), 6081),
        coord: [0; 16],
    }
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs the member-table experiment.
pub fn member_table(p: &MemberTableParams, log: &mut dyn FnMut(&str)) -> Result<Output, String> {
    let mut o = Output::new("member_table");
    let key = SipKey {
        k0: p.seed ^ 0x0123_4567_89ab_cdef,
        k1: 0xfedc_ba98_7654_3210,
    };
    let mut csv = String::from("members,table_bytes,bytes_per_member\n");
    let mut timing = String::from("members,rss_growth_bytes,build_ns_per_record,update_ns\n");
    let mut mem_pts = Vec::new();
    let mut cpu_pts = Vec::new();
    let mut md = String::from(
        "## 3. One proxy at 10^5 members\n\nThe real membership table (`pias_state::membership::Membership`) filled \
         with n records, then superseding records applied round-robin (each one replaces a record, updates the \
         incremental digest tree and the ring index, and queues a flood to the neighbours). Memory is the \
         table's own accounting (`memory_bytes`, deterministic) and the growth of the process's resident set \
         (`/proc/self/statm`); CPU is wall-clock time per update on this machine (in `member_table-timing.csv`).\n\n\
         | members | table memory | bytes/member | RSS growth | build ns/record | ns/update |\n|---|---|---|---|---|---|\n",
    );
    for &n in &p.sizes {
        log(&format!("member_table: {n} members"));
        let n32 = n as u32;
        let rss0 = rss_bytes();
        let t0 = std::time::Instant::now();
        let mut m = Membership::new(
            MembershipConfig::default(),
            rec(1, 1, p.seed),
            key,
            pias_state::secrets::Secrets::from_seed_for_tests(p.seed).nonce_key(),
            p.seed,
            Instant::ZERO,
        );
        for id in 2..=n32 {
            m.apply_record_for_test(Instant::ZERO, rec(id, 1, p.seed));
            while m.poll_event().is_some() {}
        }
        let build_ns = t0.elapsed().as_nanos() as f64 / n as f64;
        let rss1 = rss_bytes();
        let bytes = m.memory_bytes();
        let mut id = 1u32;
        let mut version = 1u32;
        let t1 = std::time::Instant::now();
        for _ in 0..p.updates {
            id = if id >= n32 { 2 } else { id + 1 };
            if id == 2 {
                version += 1;
            }
            m.apply_record_for_test(Instant::ZERO, black_box(rec(id, version, p.seed)));
            while m.poll_event().is_some() {}
        }
        let ns = t1.elapsed().as_nanos() as f64 / p.updates.max(1) as f64;
        let rss = match (rss0, rss1) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        csv.push_str(&csv_line(&[
            n.to_string(),
            bytes.to_string(),
            format!("{:.1}", bytes as f64 / n as f64),
        ]));
        timing.push_str(&csv_line(&[
            n.to_string(),
            rss.to_string(),
            format!("{build_ns:.0}"),
            format!("{ns:.0}"),
        ]));
        let _ = writeln!(
            md,
            "| {n} | {:.2} MB | {:.0} | {:.2} MB | {build_ns:.0} | {ns:.0} |",
            bytes as f64 / 1e6,
            bytes as f64 / n as f64,
            rss as f64 / 1e6
        );
        mem_pts.push((n as f64, bytes as f64 / 1e6));
        cpu_pts.push((n as f64, ns));
        drop(m);
    }
    let mut c = Chart::new("Membership table memory", "members", "MB (memory_bytes)");
    c.log_x = true;
    c.log_y = true;
    c.series
        .push(Series::new("table memory", mem_pts, Style::LinePoints));
    o.file("member_table.csv", csv);
    o.file("member_table-memory.svg", c.svg());
    let mut c = Chart::new(
        "CPU per membership update (this machine)",
        "members",
        "ns per superseding record",
    );
    c.log_x = true;
    c.series
        .push(Series::new("ns/update", cpu_pts, Style::LinePoints));
    o.timing.push(("member_table-timing.csv".into(), timing));
    o.timing.push(("member_table-timing-cpu.svg".into(), c.svg()));
    md.push_str(
        "\nTarget: a table at 10^5 proxies in tens of MB.\n\n![memory](member_table-memory.svg)\n\n\
         ![cpu](member_table-timing-cpu.svg)\n",
    );
    // The timing numbers in the table above vary run to run; keep the deterministic summary separate.
    let det: String = md
        .lines()
        .map(|l| {
            if l.starts_with("| ") && !l.starts_with("| members") {
                let cells: Vec<&str> = l.split('|').collect();
                format!(
                    "|{}|{}|{}| see timing | see timing | see timing |",
                    cells[1], cells[2], cells[3]
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    o.timing.push(("member_table-timing.md".into(), md.clone()));
    let mut out = o.finish(det + "\n");
    // The README gets the full table with timings.
    out.summary = md;
    Ok(out)
}
