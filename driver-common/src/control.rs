//! The control socket's protocol, without the socket: each request is one line, either a bare word
//! (`members`) or JSON (`{"cmd":"nat","limit":100}`); each answer is one line of JSON:
//! `{"ok":true,"cmd":..,"data":..}` or `{"ok":false,"error":".."}`. Commands: `members`, `groups` (this proxy
//! as RAP: JAPs per group), `registrations` (as JAP: groups and targets registered here), `cache` (as IAP:
//! group → JAPs), `nat` (NAT bindings), `counters`. Times are milliseconds relative to the proxy's `now` (ages
//! positive, deadlines as "in" values). Tables come in pages of at most `limit` rows (capped to
//! [`MAX_PAGE`]) from `cursor`; an answer with more after it carries `"next"`. The socket is private and
//! checks its peers ([`bind_socket`], [`Access`], SPEC.md §8.5).
//!
//! Each driver serves the socket its own way and answers every line with [`answer`] (or, when the proxy
//! lives on another task, [`parse_request`], [`dump`] there, and [`ok_line`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use pias_state::Instant;
use pias_state::proxy::{AnnounceMode, Proxy};
use serde_json::{Value, json};
use tracing::warn;

use crate::DriverCounters;

// ----- who may connect (SPEC.md §8.5) -----

/// Connections refused by [`Access::admit`] since start (exported as `driver_control_refused`).
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Connections the control socket refused since the process started.
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Who may use the control socket: root, the account the proxy runs as, and with `[control] group` that
/// group. The socket file's mode says the same (0600, or 0660 owned by the group); the peer check holds
/// even if the file's mode is changed or the socket is reached through a descriptor passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub owner: u32,
    pub group: Option<u32>,
}

/// A connected peer's credentials (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

impl Access {
    /// The process's own account, and `group` (a gid) if configured.
    pub fn for_this_process(group: Option<u32>) -> Access {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let owner = unsafe { libc::geteuid() };
        Access { owner, group }
    }

    /// Whether `peer` may use the socket.
    pub fn allows(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.owner || self.group.is_some_and(|g| peer.gid == g)
    }

    /// Checks a freshly accepted connection: `true` to serve it; `false` (counted, logged) to close it.
    /// A peer whose credentials cannot be read is refused.
    pub fn admit(&self, conn: BorrowedFd<'_>) -> bool {
        match peer_of(conn) {
            Ok(p) if self.allows(&p) => true,
            Ok(p) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                warn!(
                    pid = p.pid,
                    uid = p.uid,
                    gid = p.gid,
                    "control socket: connection refused"
                );
                false
            }
            Err(e) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "control socket: peer credentials unreadable, connection refused");
                false
            }
        }
    }
}

/// The credentials of the process at the other end of a Unix stream socket.
pub fn peer_of(conn: BorrowedFd<'_>) -> io::Result<Peer> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` is a writable ucred and `len` its size, as SO_PEERCRED requires.
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut c).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// The gid of a group name (or a decimal gid).
pub fn gid_of(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero `group` is a valid value (null pointers, gid 0); getgrnam_r overwrites it.
    let mut grp: libc::group = unsafe { core::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = core::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    if out.is_null() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    Ok(grp.gr_gid)
}

/// Binds the control socket at `path` (which must not exist): mode 0600, or with `group` 0660 and owned by
/// that group. The file is created under a umask that leaves it private from the start, so there is no
/// moment at which the umask's mode (often 0755) applies.
pub fn bind_socket(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask has no preconditions; the old mask is restored below. The process is starting (no
    // other thread creates files now).
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l?;
    if let Some(g) = group {
        std::os::unix::fs::chown(path, None, Some(g))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(l)
}

/// Longest request line a server accepts, bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
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
    /// Whether the anycast prefixes are announced, why, and the operator's mode (SPEC.md §7.7). The one
    /// request that can also change something: `announce off|on|auto` (see [`parse_announce`]).
    Announce,
}

impl Query {
    /// Every query.
    pub const ALL: [Query; 7] = [
        Query::Members,
        Query::Groups,
        Query::Registrations,
        Query::Cache,
        Query::Nat,
        Query::Counters,
        Query::Announce,
    ];

    /// The request word.
    pub fn word(self) -> &'static str {
        match self {
            Query::Members => "members",
            Query::Groups => "groups",
            Query::Registrations => "registrations",
            Query::Cache => "cache",
            Query::Nat => "nat",
            Query::Counters => "counters",
            Query::Announce => "announce",
        }
    }

    /// The query of a request word (case-insensitive).
    pub fn from_word(s: &str) -> Option<Query> {
        Query::ALL.into_iter().find(|q| q.word().eq_ignore_ascii_case(s))
    }
}

/// Most rows one answer carries (`limit` is capped to it): an answer is built on the proxy's own loop (or
/// task), so its work must be bounded whatever a client asks (SPEC.md §8.5). Larger tables are read page by
/// page with `cursor`.
pub const MAX_PAGE: usize = 1000;

/// One request: what, how many rows at most (1..=[`MAX_PAGE`]), from which row of the table's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub query: Query,
    pub limit: usize,
    pub cursor: usize,
}

/// Parses one request line (`{"cmd":"nat","limit":100,"cursor":200}` or a bare word).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let line = line.trim();
    let bad = || {
        format!(
            "unknown request {line:?}: send one of members, groups, registrations, cache, nat, counters, \
             announce [off|on|auto] (or JSON {{\"cmd\":\"nat\",\"limit\":100,\"cursor\":0}})"
        )
    };
    let page = |query, limit: Option<u64>, cursor: Option<u64>| Request {
        query,
        limit: limit
            .map_or(MAX_PAGE, |n| usize::try_from(n).unwrap_or(MAX_PAGE))
            .clamp(1, MAX_PAGE),
        cursor: cursor.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
        let what = v["cmd"].as_str().and_then(Query::from_word).ok_or_else(bad)?;
        return Ok(page(what, v["limit"].as_u64(), v["cursor"].as_u64()));
    }
    Query::from_word(line)
        .map(|w| page(w, None, None))
        .ok_or_else(bad)
}

/// Parses the one request that changes the proxy: `announce off|on|auto`, or JSON
/// `{"cmd":"announce","mode":"off"}`. `None` if the line is not an announce request with a mode (a bare
/// `announce` is a read, answered by [`dump_page`]); `Some(Err)` for a bad mode.
pub fn parse_announce(line: &str) -> Option<Result<AnnounceMode, String>> {
    let line = line.trim();
    let mode = if line.starts_with('{') {
        let v: Value = serde_json::from_str(line).ok()?;
        if !v["cmd"].as_str()?.eq_ignore_ascii_case("announce") {
            return None;
        }
        match &v["mode"] {
            Value::Null => return None,
            m => m.as_str().unwrap_or_default().to_owned(),
        }
    } else {
        let mut w = line.split_whitespace();
        if !w.next()?.eq_ignore_ascii_case("announce") {
            return None;
        }
        let m = w.next()?.to_owned();
        if w.next().is_some() {
            return Some(Err(format!("{line:?}: announce takes one mode: off, on or auto")));
        }
        m
    };
    Some(AnnounceMode::from_word(&mode).ok_or_else(|| format!("announce mode {mode:?}: use off, on or auto")))
}

/// The JSON of [`Query::Announce`]: `{"up":..,"reason":..,"mode":..}`.
pub fn announce_data(p: &Proxy) -> Value {
    let a = p.announce();
    json!({"up": a.up, "reason": a.reason.word(), "mode": p.announce_mode().word()})
}

/// The answer line (with its newline) carrying `data` for `what`.
pub fn ok_line(what: Query, data: Value) -> String {
    page_line(what, data, None)
}

/// The answer line carrying one page of `what`; `next` is the cursor of the next page (absent: the last).
pub fn page_line(what: Query, data: Value, next: Option<usize>) -> String {
    let mut v = json!({"ok": true, "cmd": what.word(), "data": data});
    if let Some(n) = next {
        v["next"] = json!(n);
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// The answer line (with its newline) reporting an error.
pub fn error_line(e: &str) -> String {
    let mut s = json!({"ok": false, "error": e}).to_string();
    s.push('\n');
    s
}

/// The answer to one request line, read from the proxy.
pub fn answer(line: &str, p: &Proxy, d: &DriverCounters, now: Instant) -> String {
    answer_with(line, p, d, None, now)
}

/// [`answer`], with the fast path's counters (if any) in `counters`.
pub fn answer_with(
    line: &str,
    p: &Proxy,
    d: &DriverCounters,
    fast: Option<&dyn crate::FastPath>,
    now: Instant,
) -> String {
    match parse_request(line) {
        Ok(r) => {
            let (data, next) = dump_page(r, p, d, fast, now);
            page_line(r.query, data, next)
        }
        Err(e) => error_line(&e),
    }
}

fn ms_since(now: Instant, t: Instant) -> u64 {
    now.saturating_since(t).as_millis() as u64
}

fn ms_until(now: Instant, t: Instant) -> Option<u64> {
    (t != Instant::FAR_FUTURE).then(|| t.saturating_since(now).as_millis() as u64)
}

/// The JSON data of the first page (at most `limit` rows, capped to [`MAX_PAGE`]) of one command.
pub fn dump(what: Query, limit: usize, p: &Proxy, d: &DriverCounters, now: Instant) -> Value {
    let r = Request {
        query: what,
        limit: limit.clamp(1, MAX_PAGE),
        cursor: 0,
    };
    dump_page(r, p, d, None, now).0
}

/// Rows `cursor..cursor + limit` of `rows` (the table's own order), and the next page's cursor if any.
/// Skipped rows cost an iterator step each, no formatting; the page is sorted by `key` within itself.
fn page<T>(
    rows: impl Iterator<Item = T>,
    r: Request,
    row: impl Fn(T) -> Value,
    key: impl Fn(&Value) -> String,
) -> (Vec<Value>, Option<usize>) {
    let mut it = rows.skip(r.cursor);
    let mut v: Vec<Value> = it.by_ref().take(r.limit).map(row).collect();
    let more = it.next().is_some();
    v.sort_by_cached_key(|x| key(x));
    (v, more.then_some(r.cursor.saturating_add(r.limit)))
}

/// Members sort by id (zero-padded so the text order is numeric).
fn by_id(v: &Value) -> String {
    format!("{:010}", v["id"].as_u64().unwrap_or(0))
}

fn by_group(v: &Value) -> String {
    v["group"].as_str().unwrap_or_default().to_owned()
}

/// One page of one command's JSON data, and the cursor of the next page (`None` after the last). The work
/// is bounded by `r.cursor + r.limit` iterator steps and `r.limit` rows (SPEC.md §8.5). Pages follow the
/// table's internal order: a table changing between pages may show an entry twice or not at all.
pub fn dump_page(
    r: Request,
    p: &Proxy,
    d: &DriverCounters,
    fast: Option<&dyn crate::FastPath>,
    now: Instant,
) -> (Value, Option<usize>) {
    match r.query {
        Query::Members => {
            let me = p.id();
            let (v, next) = page(
                p.membership().iter(),
                r,
                |m| {
                    let rec = m.record();
                    json!({
                        "id": rec.id.0,
                        "status": format!("{:?}", rec.status).to_lowercase(),
                        "addr": rec.addr.to_string(),
                        "incarnation": rec.incarnation,
                        "version": rec.version,
                        "since_ms": ms_since(now, m.since()),
                        "self": rec.id == me,
                    })
                },
                by_id,
            );
            (Value::Array(v), next)
        }
        Query::Groups => {
            let (v, next) = page(
                p.rap().iter(),
                r,
                |(g, japs)| {
                    let raps: Vec<u32> = p.raps_of(g).iter().map(|x| x.0).collect();
                    json!({
                        "group": g.to_string(),
                        "raps": raps,
                        "japs": japs.iter().map(|j| json!({
                            "jap": j.jap.0,
                            "count": j.count,
                            "tunnel": j.flags & 1 != 0,
                            "report_age_ms": ms_since(now, j.last_report),
                        })).collect::<Vec<_>>(),
                    })
                },
                by_group,
            );
            (Value::Array(v), next)
        }
        Query::Registrations => {
            // Both lists from the same cursor: a page holds up to `limit` of each.
            let (groups, g_next) = page(
                p.registry().groups(),
                r,
                |g| {
                    json!({
                        "group": g.group.to_string(),
                        "targets": g.count,
                        "tunnel": g.tunnel,
                        "reported": g.reported,
                    })
                },
                by_group,
            );
            let (targets, t_next) = page(
                p.registry().iter(),
                r,
                |t| {
                    json!({
                        "group": t.group.to_string(),
                        "service": t.service.to_string(),
                        "mode": format!("{:?}", t.mode).to_lowercase(),
                        "weight": t.weight,
                        "source": t.source.to_string(),
                        "via": t.local.to_string(),
                        "refresh_age_ms": ms_since(now, t.last_refresh),
                    })
                },
                |v| format!("{} {}", by_group(v), v["service"].as_str().unwrap_or_default()),
            );
            (json!({"groups": groups, "targets": targets}), g_next.or(t_next))
        }
        Query::Cache => {
            let (v, next) = page(
                p.iap().iter(),
                r,
                |(g, e)| {
                    let state = if e.is_pending() {
                        "pending"
                    } else if e.is_negative() {
                        "negative"
                    } else {
                        "resolved"
                    };
                    json!({
                        "group": g.to_string(),
                        "state": state,
                        "expires_in_ms": ms_until(now, e.expires()),
                        "japs": e.japs().map(|(j, w)| json!({"jap": j.0, "weight": w})).collect::<Vec<_>>(),
                    })
                },
                by_group,
            );
            (Value::Array(v), next)
        }
        Query::Nat => {
            let total = p.nat().len();
            let (bindings, next) = page(
                p.nat().iter(),
                r,
                |b| {
                    json!({
                        "client": format!("{}:{}", b.forward.src, b.forward.src_port),
                        "group": b.forward.dst_ta().to_string(),
                        "target": format!("{}:{}", b.reverse.src, b.reverse.src_port),
                        "pool": format!("{}:{}", b.reverse.dst, b.reverse.dst_port),
                        "class": format!("{:?}", b.class),
                        "tcp": b.tcp.map(|t| format!("{t:?}")),
                        "age_ms": ms_since(now, b.created),
                        "idle_ms": ms_since(now, b.last_seen),
                        "expires_in_ms": ms_until(now, b.expires),
                        "packets_in": b.forward_packets,
                        "packets_out": b.reverse_packets,
                        "bytes_in": b.forward_bytes,
                        "bytes_out": b.reverse_bytes,
                    })
                },
                |_| String::new(), // the table's order (stable sort: unchanged)
            );
            (
                json!({"total": total, "shown": bindings.len(), "bindings": bindings}),
                next,
            )
        }
        Query::Counters => {
            let mut m = serde_json::Map::new();
            p.for_each_counter(|n, v| {
                m.insert(n.to_owned(), json!(v));
            });
            d.for_each(|n, v| {
                m.insert(n.to_owned(), json!(v));
            });
            if let Some(f) = fast {
                f.for_each_counter(&mut |n, v| {
                    m.insert(n.to_owned(), json!(v));
                });
            }
            (Value::Object(m), None)
        }
        Query::Announce => (announce_data(p), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> Proxy {
        Proxy::new(
            crate::test_proxy_config(4),
            &pias_state::secrets::Secrets::from_seed_for_tests(4),
            Instant::ZERO,
        )
        .unwrap()
    }

    #[test]
    fn socket_is_private_and_peers_are_checked() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pias-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&path);
        // 0600, not what the umask gives a socket (0777 & !umask: 0755 under the usual 022).
        let l = bind_socket(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The peer of a connection is this process.
        let c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (s, _) = l.accept().unwrap();
        let me = peer_of(s.as_fd()).unwrap();
        assert_eq!(me.pid as u32, std::process::id());
        let a = Access::for_this_process(None);
        assert_eq!(me.uid, a.owner);
        assert!(a.admit(s.as_fd()));
        drop((c, s, l));
        // With a group: 0660, owned by it.
        std::fs::remove_file(&path).unwrap();
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let _l = bind_socket(&path, Some(gid)).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&md), gid);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pages_cover_a_table_once_with_bounded_rows() {
        let rows = || 0..2500u64;
        let r = |cursor| Request {
            query: Query::Members,
            limit: MAX_PAGE,
            cursor,
        };
        let id = |v: &Value| by_id(v);
        let mut seen = Vec::new();
        let mut cursor = Some(0);
        let mut pages = 0;
        while let Some(c) = cursor {
            let (v, next) = page(rows(), r(c), |x| json!({ "id": x }), id);
            assert!(v.len() <= MAX_PAGE);
            seen.extend(v.iter().map(|x| x["id"].as_u64().unwrap()));
            cursor = next;
            pages += 1;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, rows().collect::<Vec<_>>());
        // Past the end: nothing, and no next page.
        assert_eq!(page(rows(), r(5000), |x| json!({ "id": x }), id), (vec![], None));
        // Exactly one page: no next.
        assert_eq!(page(0..MAX_PAGE as u64, r(0), |x| json!({ "id": x }), id).1, None);
        // Through the socket protocol: a huge limit is one capped page; `next` says where to go on.
        let p = proxy();
        let d = DriverCounters::default();
        let a: Value = serde_json::from_str(&answer(
            "{\"cmd\":\"members\",\"limit\":99999999}",
            &p,
            &d,
            Instant::ZERO,
        ))
        .unwrap();
        assert_eq!(a["data"].as_array().unwrap().len(), 1);
        assert!(a.get("next").is_none(), "{a}");
        let a: Value = serde_json::from_str(&answer(
            "{\"cmd\":\"members\",\"cursor\":1}",
            &p,
            &d,
            Instant::ZERO,
        ))
        .unwrap();
        assert_eq!(a["data"], json!([]));
    }

    #[test]
    fn access_rules() {
        let peer = |uid, gid| Peer { pid: 1, uid, gid };
        let a = Access {
            owner: 1000,
            group: None,
        };
        assert!(a.allows(&peer(0, 0)), "root");
        assert!(a.allows(&peer(1000, 1000)), "the owner");
        assert!(
            !a.allows(&peer(1001, 1000)),
            "not the owner's group without [control] group"
        );
        let g = Access {
            owner: 1000,
            group: Some(50),
        };
        assert!(g.allows(&peer(1001, 50)));
        assert!(!g.allows(&peer(1001, 51)));
        assert_eq!(gid_of("0").unwrap(), 0);
        assert_eq!(gid_of("root").unwrap(), 0);
        assert!(gid_of("no-such-group-pias").is_err());
    }

    #[test]
    fn requests_parse() {
        let req = |query, limit, cursor| Ok(Request { query, limit, cursor });
        assert_eq!(parse_request("members\n"), req(Query::Members, MAX_PAGE, 0));
        assert_eq!(parse_request("COUNTERS"), req(Query::Counters, MAX_PAGE, 0));
        assert_eq!(
            parse_request("{\"cmd\":\"nat\",\"limit\":5}"),
            req(Query::Nat, 5, 0)
        );
        // An uncapped limit is capped; a zero one is one row; the cursor is where the page starts.
        assert_eq!(
            parse_request("{\"cmd\":\"nat\",\"limit\":100000000000,\"cursor\":3000}"),
            req(Query::Nat, MAX_PAGE, 3000)
        );
        assert_eq!(
            parse_request("{\"cmd\":\"members\",\"limit\":0}"),
            req(Query::Members, 1, 0)
        );
        assert!(parse_request("shutdown").unwrap_err().contains("members, groups"));
        assert!(parse_request("{\"cmd\":1}").is_err());
        assert!(parse_request("{nope").unwrap_err().starts_with("bad JSON"));
    }

    #[test]
    fn answers_are_one_json_line() {
        let p = proxy();
        let d = DriverCounters::default();
        let a = answer("members", &p, &d, Instant::from_secs(3));
        assert!(a.ends_with('\n') && a.matches('\n').count() == 1, "{a}");
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["ok"], json!(true));
        assert_eq!(v["data"][0]["id"], json!(4));
        assert_eq!(v["data"][0]["self"], json!(true));
        assert_eq!(v["data"][0]["status"], json!("alive"));
        let c: Value = serde_json::from_str(&answer("counters", &p, &d, Instant::ZERO)).unwrap();
        assert_eq!(c["data"]["driver_tun_rx"], json!(0));
        assert_eq!(c["data"]["members"], json!(1));
        let e: Value = serde_json::from_str(&answer("reboot", &p, &d, Instant::ZERO)).unwrap();
        assert_eq!(e["ok"], json!(false));
        for q in Query::ALL {
            assert_eq!(Query::from_word(q.word()), Some(q));
        }
        let a: Value = serde_json::from_str(&answer("announce", &p, &d, Instant::ZERO)).unwrap();
        assert_eq!(a["data"], json!({"up": true, "reason": "alone", "mode": "auto"}));
    }

    #[test]
    fn announce_requests_parse() {
        assert_eq!(parse_announce("announce off\n"), Some(Ok(AnnounceMode::Off)));
        assert_eq!(parse_announce("ANNOUNCE Auto"), Some(Ok(AnnounceMode::Auto)));
        assert_eq!(
            parse_announce(r#"{"cmd":"announce","mode":"on"}"#),
            Some(Ok(AnnounceMode::On))
        );
        assert_eq!(parse_announce("announce"), None, "a bare announce is a read");
        assert_eq!(parse_announce(r#"{"cmd":"announce"}"#), None);
        assert_eq!(parse_announce("members"), None);
        assert!(parse_announce("announce maybe").unwrap().is_err());
        assert!(parse_announce("announce off now").unwrap().is_err());
        assert!(parse_announce(r#"{"cmd":"announce","mode":1}"#).unwrap().is_err());
    }
}
