//! `pias ctl` and the control socket it talks to.
//!
//! Protocol (`driver_common::control`, shared by every driver): a Unix stream socket; each request is one
//! line, either a bare word (`members`) or JSON (`{"cmd":"nat","limit":100}`); each answer is one line of
//! JSON: `{"ok":true,"cmd":..,"data":..}` or `{"ok":false,"error":".."}`. This module is the client
//! (`pias ctl`, with human tables) and binds the socket; each driver serves it (`driver_tokio::admin`,
//! driver-mio's admin).

use core::time::Duration;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// `--help`'s description (clap replaces a subcommand struct's doc comment with its variant's, so it
/// goes in `before_long_help`, placed by [`crate::proxy::HELP_TEMPLATE`]).
const LONG_ABOUT: &str = "\nShows a running proxy's state: members, groups as RAP, registrations as JAP, IAP cache, NAT table, counters, announcement. Human tables by default, --json for machines.\n\n`announce off|on|auto` is the one command that changes something: `off` withdraws the proxy's anycast prefixes (maintenance without stopping it), `on` announces them whatever its health says (not while it leaves), `auto` returns to the health rule (SPEC.md §7.7). The mode lasts until the process exits.";

/// Shows a running proxy's state: members, groups as RAP, registrations as JAP, IAP cache, NAT table,
/// counters, announcement; `announce off|on|auto` sets the operator's say over the announcement. Human
/// tables by default, --json for machines.
#[derive(Debug, ClapArgs)]
#[command(help_template = crate::proxy::HELP_TEMPLATE, before_help = "\nMore with --help.", before_long_help = LONG_ABOUT, after_help = "\
Examples:
  pias ctl --socket /run/pias/pias0.sock members
  pias ctl --socket /run/pias/pias0.sock cache           # which JAPs this IAP uses per group
  pias ctl --socket /run/pias/pias0.sock nat --limit 20
  pias ctl --socket /run/pias/pias0.sock counters --json | jq .iap_to_rap
  pias ctl --socket /run/pias/pias0.sock announce off    # withdraw the anycast prefixes (maintenance)
  pias ctl --socket /run/pias/pias0.sock announce auto   # back to the health rule

The socket path is [control] socket in the proxy's configuration. Protocol: one request line (a command
word, or JSON {\"cmd\":\"nat\",\"limit\":20}) → one JSON line.")]
pub(crate) struct Args {
    /// The proxy's control socket ([control] socket in its configuration).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// What to show.
    #[arg(value_enum)]
    what: What,
    /// With `announce`: set the operator's mode (off: withdraw, on: announce, auto: the health rule).
    #[arg(value_enum)]
    mode: Option<Mode>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    /// At most this many NAT bindings (fetched in pages of at most 1000; other tables are shown whole,
    /// also page by page).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum What {
    /// Every proxy this one knows, with status and overlay address.
    Members,
    /// Groups this proxy is a RAP for, and the JAPs that reported targets.
    Groups,
    /// Targets registered with this proxy (it is their JAP), and its group counts.
    Registrations,
    /// The IAP cache: group → JAP set.
    Cache,
    /// NAT bindings (client flow → target flow).
    Nat,
    /// Every counter.
    Counters,
    /// Whether the anycast prefixes are announced, why, and the operator's mode (SPEC.md §7.7).
    Announce,
}

/// The operator's say over the announcement (`pias ctl announce MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Withdraw the anycast prefixes.
    Off,
    /// Announce them whatever the health rule says.
    On,
    /// The health rule decides.
    Auto,
}

impl Mode {
    fn word(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Auto => "auto",
        }
    }
}

impl What {
    fn word(self) -> &'static str {
        match self {
            What::Members => "members",
            What::Groups => "groups",
            What::Registrations => "registrations",
            What::Cache => "cache",
            What::Nat => "nat",
            What::Counters => "counters",
            What::Announce => "announce",
        }
    }

    #[cfg(test)]
    fn query(self) -> driver_common::control::Query {
        driver_common::control::Query::from_word(self.word()).expect("every What is a control query")
    }
}

// ----- client -----

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    if a.mode.is_some() && a.what != What::Announce {
        anyhow::bail!("a mode (off, on, auto) goes only with `announce`");
    }
    let data = rt.block_on(request(&a.socket, a.what, a.mode, a.limit))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print!("{}", format(a.what, &data));
    }
    Ok(())
}

/// Rows still wanted: every row, but for `nat` at most `limit` (the proxy caps each page at
/// `driver_common::control::MAX_PAGE` and says where the next one starts).
fn wanted(what: What, limit: usize) -> usize {
    if what == What::Nat { limit } else { usize::MAX }
}

/// Asks for `what` page by page on one connection and returns the pages' data merged.
async fn request(socket: &Path, what: What, mode: Option<Mode>, limit: usize) -> anyhow::Result<Value> {
    let s = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(socket))
        .await
        .context("connecting took over 5 s")?
        .with_context(|| {
            format!(
                "cannot connect to {} (is the proxy running, with [control] socket set? are you root or \
                 the proxy's user, or in its [control] group?)",
                socket.display()
            )
        })?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut left = wanted(what, limit);
    let mut cursor = 0usize;
    let mut data: Option<Value> = None;
    loop {
        let page = left.clamp(1, driver_common::control::MAX_PAGE);
        let mut req = json!({"cmd": what.word(), "limit": page, "cursor": cursor});
        if let Some(m) = mode {
            req["mode"] = json!(m.word());
        }
        let req = req.to_string();
        let fut = async {
            w.write_all(req.as_bytes()).await?;
            w.write_all(b"\n").await?;
            let mut line = String::new();
            r.read_line(&mut line).await?;
            anyhow::Ok(line)
        };
        let line = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .context("the proxy did not answer within 5 s")??;
        if line.is_empty() {
            anyhow::bail!("the proxy closed the connection (not allowed to use its control socket?)");
        }
        let v: Value = serde_json::from_str(&line).context("the proxy's answer is not JSON")?;
        if v["ok"] != Value::Bool(true) {
            anyhow::bail!("proxy: {}", v["error"].as_str().unwrap_or("error"));
        }
        let rows = merge(&mut data, v["data"].clone());
        left = left.saturating_sub(rows);
        match v["next"].as_u64() {
            Some(n) if left > 0 => cursor = n as usize,
            _ => break,
        }
    }
    Ok(data.unwrap_or(Value::Null))
}

/// Appends one page to what came before; returns the rows it held.
fn merge(acc: &mut Option<Value>, page: Value) -> usize {
    let rows = |v: &Value| match v {
        Value::Array(a) => a.len(),
        Value::Object(o) => ["bindings", "targets", "groups"]
            .iter()
            .map(|k| o.get(*k).and_then(Value::as_array).map_or(0, Vec::len))
            .max()
            .unwrap_or(0),
        _ => 0,
    };
    let n = rows(&page);
    match acc {
        None => *acc = Some(page),
        Some(Value::Array(a)) => {
            if let Value::Array(b) = page {
                a.extend(b);
            }
        }
        Some(Value::Object(o)) => {
            if let Value::Object(b) = page {
                for k in ["bindings", "targets", "groups"] {
                    if let (Some(Value::Array(x)), Some(Value::Array(y))) = (o.get_mut(k), b.get(k)) {
                        x.extend(y.iter().cloned());
                    }
                }
                if let Some(t) = b.get("total") {
                    o.insert("total".into(), t.clone());
                }
                let shown = o.get("bindings").and_then(Value::as_array).map(Vec::len);
                if let Some(s) = shown {
                    o.insert("shown".into(), json!(s));
                }
            }
        }
        Some(_) => {}
    }
    n
}

// ----- server -----

/// Binds the control socket, replacing a stale one (a socket file no process listens on): mode 0600, or
/// 0660 owned by `group` (SPEC.md §8.6). Returns it with who may connect (checked per connection).
pub(crate) fn bind(
    path: &Path,
    group: Option<&str>,
) -> anyhow::Result<(std::os::unix::net::UnixListener, driver_common::control::Access)> {
    let gid = group
        .map(|g| {
            driver_common::control::gid_of(g)
                .with_context(|| format!("control.group: no group named {g:?} (see /etc/group)"))
        })
        .transpose()?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another process answers on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))?;
    }
    let l = driver_common::control::bind_socket(path, gid)?;
    Ok((l, driver_common::control::Access::for_this_process(gid)))
}

// ----- human output -----

/// Aligns columns; the first row is the header.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        v => v.to_string(),
    }
}

fn header(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

/// The human form of a command's data.
pub(crate) fn format(what: What, data: &Value) -> String {
    let empty = Vec::new();
    let arr = |v: &Value| v.as_array().unwrap_or(&empty).clone();
    match what {
        What::Members => {
            let mut rows = vec![header(&[
                "ID",
                "STATUS",
                "ADDRESS",
                "INCARNATION",
                "VERSION",
                "SINCE",
            ])];
            for m in arr(data) {
                let id = if m["self"] == Value::Bool(true) {
                    format!("{} (self)", s(&m["id"]))
                } else {
                    s(&m["id"])
                };
                rows.push(vec![
                    id,
                    s(&m["status"]),
                    s(&m["addr"]),
                    s(&m["incarnation"]),
                    s(&m["version"]),
                    format!("{}s ago", m["since_ms"].as_u64().unwrap_or(0) / 1000),
                ]);
            }
            table(&rows)
        }
        What::Groups => {
            let mut rows = vec![header(&["GROUP", "RAPS", "JAP", "COUNT", "TUNNEL", "REPORTED"])];
            for g in arr(data) {
                let raps = arr(&g["raps"]).iter().map(s).collect::<Vec<_>>().join(",");
                let japs = arr(&g["japs"]);
                if japs.is_empty() {
                    rows.push(vec![
                        s(&g["group"]),
                        raps.clone(),
                        "-".into(),
                        "0".into(),
                        "-".into(),
                        "-".into(),
                    ]);
                }
                for (i, j) in japs.iter().enumerate() {
                    let (grp, r) = if i == 0 {
                        (s(&g["group"]), raps.clone())
                    } else {
                        (String::new(), String::new())
                    };
                    rows.push(vec![
                        grp,
                        r,
                        s(&j["jap"]),
                        s(&j["count"]),
                        if j["tunnel"] == Value::Bool(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        format!("{}ms ago", s(&j["report_age_ms"])),
                    ]);
                }
            }
            table(&rows)
        }
        What::Registrations => {
            let mut out = String::new();
            let mut rows = vec![header(&["GROUP", "TARGETS", "TUNNEL", "REPORTED"])];
            for g in arr(&data["groups"]) {
                rows.push(vec![
                    s(&g["group"]),
                    s(&g["targets"]),
                    s(&g["tunnel"]),
                    s(&g["reported"]),
                ]);
            }
            out.push_str(&table(&rows));
            out.push('\n');
            let mut rows = vec![header(&[
                "GROUP",
                "SERVICE",
                "MODE",
                "WEIGHT",
                "AGENT",
                "REFRESHED",
            ])];
            for t in arr(&data["targets"]) {
                rows.push(vec![
                    s(&t["group"]),
                    s(&t["service"]),
                    s(&t["mode"]),
                    s(&t["weight"]),
                    s(&t["source"]),
                    format!("{}ms ago", s(&t["refresh_age_ms"])),
                ]);
            }
            out.push_str(&table(&rows));
            out
        }
        What::Cache => {
            let mut rows = vec![header(&["GROUP", "STATE", "JAPS (id:weight)", "EXPIRES"])];
            for e in arr(data) {
                let japs = arr(&e["japs"])
                    .iter()
                    .map(|j| format!("{}:{}", s(&j["jap"]), s(&j["weight"])))
                    .collect::<Vec<_>>()
                    .join(" ");
                let exp = match e["expires_in_ms"].as_u64() {
                    Some(ms) => format!("in {ms}ms"),
                    None => "-".into(),
                };
                rows.push(vec![
                    s(&e["group"]),
                    s(&e["state"]),
                    if japs.is_empty() { "-".into() } else { japs },
                    exp,
                ]);
            }
            table(&rows)
        }
        What::Nat => {
            let mut rows = vec![header(&[
                "CLIENT",
                "GROUP",
                "TARGET",
                "POOL",
                "STATE",
                "IDLE",
                "PKTS IN/OUT",
            ])];
            for b in arr(&data["bindings"]) {
                let state = match &b["tcp"] {
                    Value::String(t) => format!("{} {t}", s(&b["class"])),
                    _ => s(&b["class"]),
                };
                rows.push(vec![
                    s(&b["client"]),
                    s(&b["group"]),
                    s(&b["target"]),
                    s(&b["pool"]),
                    state,
                    format!("{}ms", s(&b["idle_ms"])),
                    format!("{}/{}", s(&b["packets_in"]), s(&b["packets_out"])),
                ]);
            }
            let mut out = table(&rows);
            let _ = writeln!(
                out,
                "{} of {} bindings shown",
                s(&data["shown"]),
                s(&data["total"])
            );
            out
        }
        What::Counters => {
            let mut rows = vec![header(&["COUNTER", "VALUE"])];
            if let Some(m) = data.as_object() {
                for (k, v) in m {
                    rows.push(vec![k.clone(), s(v)]);
                }
            }
            table(&rows)
        }
        What::Announce => {
            let state = if data["up"] == Value::Bool(true) {
                "announced"
            } else {
                "withdrawn"
            };
            table(&[
                header(&["STATE", "REASON", "MODE"]),
                vec![state.to_owned(), s(&data["reason"]), s(&data["mode"])],
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driver_common::DriverCounters;
    use pias_proto::ProxyId;
    use pias_proto::auth::MasterKey;
    use pias_state::Instant;
    use pias_state::proxy::{Proxy, ProxyConfig};

    fn dump(w: What, limit: usize, p: &Proxy, d: &DriverCounters, now: Instant) -> Value {
        driver_common::control::dump(w.query(), limit, p, d, now)
    }

    fn proxy() -> Proxy {
        let cfg = ProxyConfig::new(
            ProxyId(4),
            "10.0.0.4:6081".parse().unwrap(),
            MasterKey::from_bytes([2; 32]),
            vec!["10.98.0.4".parse().unwrap()],
            vec!["10.99.0.250".parse().unwrap()],
        );
        Proxy::new(
            cfg,
            &pias_state::secrets::Secrets::from_seed_for_tests(1),
            Instant::ZERO,
        )
        .unwrap()
    }

    #[test]
    fn pages_merge() {
        let mut acc = None;
        assert_eq!(merge(&mut acc, json!([{"id": 1}, {"id": 2}])), 2);
        assert_eq!(merge(&mut acc, json!([{"id": 3}])), 1);
        assert_eq!(acc, Some(json!([{"id": 1}, {"id": 2}, {"id": 3}])));
        let mut acc = None;
        let nat =
            |n: usize, total: usize| json!({"total": total, "shown": n, "bindings": vec![json!({}); n]});
        assert_eq!(merge(&mut acc, nat(1000, 2500)), 1000);
        assert_eq!(merge(&mut acc, nat(500, 2501)), 500);
        let a = acc.unwrap();
        assert_eq!(
            (a["shown"].clone(), a["total"].clone()),
            (json!(1500), json!(2501))
        );
        assert_eq!(wanted(What::Nat, 20), 20);
        assert_eq!(wanted(What::Members, 20), usize::MAX);
    }

    #[test]
    fn members_dump_and_table() {
        let p = proxy();
        let now = Instant::from_secs(3);
        let d = dump(What::Members, 10, &p, &DriverCounters::default(), now);
        assert_eq!(d[0]["id"], json!(4));
        assert_eq!(d[0]["self"], json!(true));
        assert_eq!(d[0]["status"], json!("alive"));
        let t = format(What::Members, &d);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID"), "{t}");
        assert!(lines[1].starts_with("4 (self)"), "{t}");
        assert!(lines[1].contains("10.0.0.4:6081"), "{t}");
        // Columns line up: ADDRESS starts at the same offset in both lines.
        assert_eq!(lines[0].find("ADDRESS"), lines[1].find("10.0.0.4"));
    }

    #[test]
    fn every_table_formats_empty_and_filled_state() {
        let p = proxy();
        for w in [
            What::Members,
            What::Groups,
            What::Registrations,
            What::Cache,
            What::Nat,
            What::Counters,
            What::Announce,
        ] {
            let d = dump(w, 10, &p, &DriverCounters::default(), Instant::ZERO);
            let t = format(w, &d);
            assert!(!t.is_empty(), "{w:?}");
            assert!(
                t.lines()
                    .next()
                    .unwrap()
                    .starts_with(|c: char| c.is_ascii_uppercase()),
                "{t}"
            );
        }
        let d = dump(What::Counters, 10, &p, &DriverCounters::default(), Instant::ZERO);
        assert_eq!(d["driver_tun_rx"], json!(0));
        assert_eq!(d["members"], json!(1));
        let nat = format(
            What::Nat,
            &dump(What::Nat, 10, &p, &DriverCounters::default(), Instant::ZERO),
        );
        assert!(nat.ends_with("0 of 0 bindings shown\n"), "{nat}");
        let a = format(
            What::Announce,
            &dump(What::Announce, 10, &p, &DriverCounters::default(), Instant::ZERO),
        );
        assert_eq!(a.lines().nth(1), Some("announced  alone   auto"), "{a}");
    }

    #[test]
    fn synthetic_rows_format() {
        let cache = json!([{"group": "10.99.0.1:53/udp", "state": "resolved", "expires_in_ms": 1500,
                            "japs": [{"jap": 2, "weight": 3}, {"jap": 5, "weight": 1}]}]);
        let t = format(What::Cache, &cache);
        assert!(t.contains("10.99.0.1:53/udp  resolved  2:3 5:1"), "{t}");
        assert!(t.contains("in 1500ms"), "{t}");
        let groups = json!([{"group": "g", "raps": [1, 2, 3],
                             "japs": [{"jap": 2, "count": 4, "tunnel": false, "report_age_ms": 10}]}]);
        let t = format(What::Groups, &groups);
        assert!(t.lines().nth(1).unwrap().starts_with("g      1,2,3  2"), "{t}");
    }
}
