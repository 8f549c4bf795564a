//! Configuration tests: the example, defaults, errors naming the key and the fix, and policies.

use super::*;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn read_key(_: &Path) -> std::io::Result<String> {
    Ok(KEY.to_owned())
}

fn minimal() -> String {
    r#"
[proxy]
id = 7
overlay = "10.251.0.5"
master_key_file = "m.key"
anycast_prefixes = ["10.251.0.128/28"]
registration = ["10.251.0.150"]
nat_pool = ["10.251.0.161"]
"#
    .to_owned()
}

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(s, Path::new("/etc/pias"), &read_key)
}

fn field_of(s: &str) -> String {
    parse_str(s).unwrap_err().field
}

#[test]
fn example_parses() {
    let c = parse_str(EXAMPLE).unwrap();
    let p = &c.driver.proxy;
    assert_eq!(p.id, ProxyId(1));
    assert_eq!(p.overlay_addr, "10.251.0.5:6081".parse().unwrap());
    assert_eq!(p.membership.seeds, vec!["10.251.0.6:6081".parse().unwrap()]);
    assert_eq!(c.metrics, Some("127.0.0.1:9851".parse().unwrap()));
    assert_eq!(c.control, Some(PathBuf::from("/run/pias/pias0.sock")));
    assert_eq!(p.policies.rules.len(), 1);
    assert_eq!(p.policies.rules[0].1.rap, RapPolicy::Affinity);
    assert_eq!(p.policies.rules[0].0.port, Some(80));
    assert_eq!(c.driver.host.routes().count(), 3);
    assert_eq!(c.driver.host.tun, "pias0");
    assert_eq!(p.announce.hold_down, Duration::from_secs(2));
    assert_eq!(p.announce.hold_up, Duration::from_secs(5));
    let c = parse_str(&format!(
        "{}[timers]\nannounce_hold_down_ms = 3000\nannounce_hold_up_ms = 9000\n",
        minimal()
    ))
    .unwrap();
    let a = c.driver.proxy.announce;
    assert_eq!(
        (a.hold_down, a.hold_up),
        (Duration::from_secs(3), Duration::from_secs(9))
    );
}

#[test]
fn minimal_gets_defaults() {
    let c = parse_str(&minimal()).unwrap();
    let p = &c.driver.proxy;
    assert_eq!(p.overlay_addr.port(), 6081);
    assert_eq!(p.vni, 1);
    assert!(p.incarnation > 1_600_000_000);
    assert_eq!(p.registry.incarnation, p.incarnation);
    assert_eq!(c.driver.host.mtu, 1500);
    assert!(c.metrics.is_none() && c.control.is_none());
    let routes: Vec<String> = c.driver.host.routes().map(|r| r.to_string()).collect();
    assert_eq!(routes, ["10.251.0.128/28", "10.251.0.150/32", "10.251.0.161/32"]);
}

/// The filters' overlay space (SPEC.md §8.5): the anycast prefixes, registration and pool by default, plus
/// the operator's `overlay_prefixes`.
#[test]
fn overlay_space_comes_from_the_addresses_and_overlay_prefixes() {
    let space = |c: &Config| -> Vec<String> {
        c.driver
            .proxy
            .overlay_space()
            .prefixes()
            .iter()
            .map(|p| p.to_string())
            .collect()
    };
    let c = parse_str(&minimal()).unwrap();
    assert_eq!(
        space(&c),
        ["10.251.0.128/28", "10.251.0.150/32", "10.251.0.161/32"]
    );
    let c = parse_str(&minimal().replace(
        "id = 7",
        "id = 7\noverlay_prefixes = [\"10.98.0.0/16\", \"fd98::/16\"]",
    ))
    .unwrap();
    assert_eq!(
        space(&c),
        [
            "10.251.0.128/28",
            "10.251.0.150/32",
            "10.251.0.161/32",
            "10.98.0.0/16",
            "fd98::/16"
        ]
    );
    assert_eq!(
        field_of(&minimal().replace("id = 7", "id = 7\noverlay_prefixes = [\"10.98.0.0/99\"]")),
        "proxy.overlay_prefixes[0]"
    );
    let c = parse_str(EXAMPLE).unwrap();
    assert!(space(&c).contains(&"10.251.0.160/28".to_owned()));
}

#[test]
fn bad_fields_are_named() {
    let m = minimal();
    let cases: Vec<(String, &str)> = vec![
        (m.replace("id = 7", "id = 0"), "proxy.id"),
        (m.replace("id = 7\n", ""), "proxy.id"),
        (m.replace("\"10.251.0.5\"", "\"nowhere\""), "proxy.overlay"),
        (m.replace("id = 7", "id = 7\nvni = 16777216"), "proxy.vni"),
        (m.replace("id = 7", "id = 7\ndriver = \"xdp\""), "xdp.interfaces"),
        (m.replace("id = 7", "id = 7\ndriver = \"dpdk\""), "proxy.driver"),
        (format!("{m}\n[xdp]\ninterfaces = [\"eth0\"]\n"), "xdp"),
        (
            format!(
                "{}\n[xdp]\ninterfaces = [\"eth0\"]\nslow_path = \"dpdk\"\n",
                m.replace("id = 7", "id = 7\ndriver = \"xdp\"")
            ),
            "xdp.slow_path",
        ),
        (
            format!(
                "{}\n[xdp]\ninterfaces = [\"a/b\"]\n",
                m.replace("id = 7", "id = 7\ndriver = \"xdp\"")
            ),
            "xdp.interfaces[0]",
        ),
        (
            m.replace("10.251.0.128/28", "10.251.0.128/40"),
            "proxy.anycast_prefixes[0]",
        ),
        (m.replace("[\"10.251.0.161\"]", "[]"), "proxy.nat_pool"),
        (
            m.replace("[\"10.251.0.161\"]", "[\"10.251.0.130\"]"),
            "proxy.nat_pool[0]",
        ),
        (m.replace("[\"10.251.0.161\"]", "[\"fd00::1\"]"), "proxy.nat_pool"),
        (
            m.replace("[\"10.251.0.150\"]", "[\"x\"]"),
            "proxy.registration[0]",
        ),
        (
            m.replace("id = 7", "id = 7\nseeds = [\"10.251.0.5:6081\"]"),
            "proxy.seeds[0]",
        ),
        (
            m.replace("id = 7", "id = 7\noverlay_mtu = 1000"),
            "proxy.overlay_mtu",
        ),
        (m.replace("id = 7", "id = 7\nwat = 1"), "(syntax)"),
        (format!("{m}[tun]\nname = \"a-very-long-tun-name\"\n"), "tun.name"),
        (format!("{m}[tun]\nmtu = 576\n"), "tun.mtu"),
        (
            format!("{m}[metrics]\nlisten = \"localhost\"\n"),
            "metrics.listen",
        ),
        (
            format!("{m}[timers]\nprobe_interval_ms = 0\n"),
            "timers.probe_interval_ms",
        ),
        (format!("{m}[timers]\nhold_ms = 100\n"), "timers.hold_ms"),
        (
            format!("{m}[timers]\nreport_refresh_ms = 100000\n"),
            "timers.report_expiry_ms",
        ),
        (
            format!("{m}[nat]\nport_min = 2000\nport_max = 1000\n"),
            "nat.port_min",
        ),
        (format!("{m}[nat]\nudp_timeout_s = 0\n"), "nat.udp_timeout_s"),
        (format!("{m}[[policy]]\nrap = \"load\"\n"), "policy[0].group"),
        (
            format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nrap = \"nearest\"\n"),
            "policy[0].rap",
        ),
        (
            format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nproto = \"sctp\"\n"),
            "policy[0].proto",
        ),
        (
            format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nreplicate = 9\n"),
            "policy[0].replicate",
        ),
        (
            format!("{m}[default_policy]\nport = 53\n"),
            "default_policy.group",
        ),
    ];
    for (text, field) in cases {
        assert_eq!(field_of(&text), field, "config:\n{text}");
    }
}

/// The core validates (`ProxyConfig::validate`); the CLI names the key. One bad value per part of the
/// core's configuration, reported under the key the operator wrote, with the core's fix.
#[test]
fn core_errors_name_the_toml_key() {
    let m = minimal();
    let cases: Vec<(String, &str, &str)> = vec![
        // proxy
        (
            m.replace("\"10.251.0.5\"", "\"0.0.0.0\""),
            "proxy.overlay",
            "concrete unicast",
        ),
        (
            m.replace("id = 7", "id = 7\nvni = 16777216"),
            "proxy.vni",
            "24 bits",
        ),
        (
            m.replace("10.251.0.128/28", "127.0.0.0/8"),
            "proxy.anycast_prefixes[0]",
            "loopback",
        ),
        (
            m.replace(
                "id = 7",
                "id = 7\noverlay_prefixes = [\"10.98.0.0/16\", \"0.0.0.0/0\"]",
            ),
            "proxy.overlay_prefixes[1]",
            "shorter than /8",
        ),
        // membership
        (
            format!("{m}[timers]\nsuspect_after = 0\n"),
            "timers.suspect_after",
            "at least 1",
        ),
        (
            format!("{m}[timers]\ntombstone_time_ms = 10\n"),
            "timers.tombstone_time_ms",
            "suspect_timeout",
        ),
        (
            format!("{m}[timers]\nmax_answer_ttl_ms = 0\n"),
            "timers.max_answer_ttl_ms",
            "at least 1 ms",
        ),
        (
            format!("{m}[limits]\nrap_groups_per_jap = 0\n"),
            "limits.rap_groups_per_jap",
            "at least 1",
        ),
        (
            format!("{m}[timers]\nreplay_skew_ms = 300000\n"),
            "timers.replay_skew_ms",
            "below membership.tombstone_time",
        ),
        (
            format!("{m}[limits]\nmembers = 0\n"),
            "limits.members",
            "1 ..= 4194304",
        ),
        (
            m.replace("id = 7", "id = 7\nseeds = [\"10.251.0.6\", \"10.251.0.5:6081\"]"),
            "proxy.seeds[1]",
            "own overlay address",
        ),
        // iap
        (
            format!("{m}[limits]\niap_cache_entries = 0\n"),
            "limits.iap_cache_entries",
            "at least 1",
        ),
        (
            format!("{m}[timers]\nresolve_retry_ms = 0\n"),
            "timers.resolve_retry_ms",
            "at least 1 ms",
        ),
        (
            format!("{m}[timers]\ndrain_hold_ms = 0\n"),
            "timers.drain_hold_ms",
            "at least 1 ms",
        ),
        (
            format!("{m}[timers]\nannounce_hold_down_ms = 500\n"),
            "timers.announce_hold_down_ms",
            "(suspect_after + 1) probe intervals",
        ),
        (
            format!("{m}[limits]\ncapacity_flows_per_s = 0\n"),
            "limits.capacity_flows_per_s",
            "at least 1 new flow per second",
        ),
        // rap
        (
            format!("{m}[limits]\nrap_groups = 0\n"),
            "limits.rap_groups",
            "at least 1",
        ),
        (
            format!("{m}[limits]\njaps_per_group = 0\n"),
            "limits.japs_per_group",
            "at least 1",
        ),
        (
            format!("{m}[timers]\nnegative_ttl_ms = 0\n"),
            "timers.negative_ttl_ms",
            "at least 1 ms",
        ),
        // reports
        (
            format!("{m}[timers]\nreport_rto_ms = 0\n"),
            "timers.report_rto_ms",
            "at least 1 ms",
        ),
        (
            format!("{m}[timers]\nreport_delay_ms = 0\n"),
            "timers.report_delay_ms",
            "at least 1 ms",
        ),
        // registry
        (
            format!("{m}[limits]\nregistrations = 0\n"),
            "limits.registrations",
            "between 1",
        ),
        (
            format!("{m}[limits]\ntargets_per_group = 5000\n"),
            "limits.targets_per_group",
            "4095",
        ),
        (
            format!("{m}[timers]\ncookie_period_ms = 10\n"),
            "timers.cookie_period_ms",
            "at least 1000",
        ),
        // nat
        (
            format!("{m}[nat]\nmax_entries = 0\n"),
            "nat.max_entries",
            "at least 1",
        ),
        (
            format!("{m}[nat]\nmax_entries = 300000000\n"),
            "nat.max_entries",
            "lower it",
        ),
        (
            format!("{m}[nat]\nport_max = 0\n"),
            "nat.port_min",
            "port_min <= port_max",
        ),
        (
            format!("{m}[nat]\ntcp_closed_timeout_s = 0\n"),
            "nat.tcp_closed_timeout_s",
            "positive duration",
        ),
        (
            format!("{m}[nat]\nudp_transitory_timeout_s = 0\n"),
            "nat.udp_transitory_timeout_s",
            "positive duration",
        ),
        (
            format!("{m}[nat]\ntcp_half_open_timeout_s = 0\n"),
            "nat.tcp_half_open_timeout_s",
            "positive duration",
        ),
        (
            format!("{m}[nat]\nnew_per_prefix = 0\n"),
            "nat.new_per_prefix",
            "positive count",
        ),
        (
            format!("{m}[nat]\nprefix_len_v4 = 33\n"),
            "nat.prefix_len_v4",
            "exceeds 32",
        ),
        (
            format!("{m}[nat]\nprefix_addrs = 0\n"),
            "nat.prefix_addrs",
            "1..=256",
        ),
        (
            m.replace("[\"10.251.0.161\"]", "[\"10.251.0.161\", \"10.98.0.0/24\"]"),
            "proxy.nat_pool[1]",
            "prefixes are for IPv6",
        ),
        (
            m.replace("[\"10.251.0.161\"]", "[\"10.251.0.161\", \"fd00:98::/126\"]"),
            "proxy.nat_pool[1]",
            "at most /120",
        ),
        (
            m.replace("[\"10.251.0.161\"]", "[\"10.251.0.161\", \"10.251.0.161\"]"),
            "proxy.nat_pool[1]",
            "listed twice",
        ),
        (
            m.replace("[\"10.251.0.161\"]", "[\"224.0.0.1\"]"),
            "proxy.nat_pool[0]",
            "unicast",
        ),
        // policies
        (
            format!("{m}[default_policy]\nscope_prefix = 200\n"),
            "default_policy.scope_prefix",
            "0..=128",
        ),
        (
            format!(
                "{m}[[policy]]\ngroup = \"10.0.0.0/8\"\n[[policy]]\ngroup = \"10.0.0.0/8\"\nscope_prefix = 33\n"
            ),
            "policy[1].scope_prefix",
            "0..=32",
        ),
        (
            format!("{m}[[policy]]\ngroup = \"10.0.0.0/8\"\nreplicate = 9\n"),
            "policy[0].replicate",
            "0..=4",
        ),
    ];
    for (text, key, hint) in cases {
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.field, key, "config:\n{text}");
        assert!(e.fix.contains(hint), "{key}: {e}");
        assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
    }
}

#[test]
fn messages_say_what_to_do() {
    let e = parse_str(&minimal().replace("id = 7", "id = 0")).unwrap_err();
    assert!(e.to_string().starts_with("proxy.id: must not be 0"), "{e}");
    let e = parse_str(&minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")).unwrap_err();
    assert!(e.to_string().starts_with("xdp.interfaces: missing"), "{e}");
    let c = parse_str(&format!(
        "{}\n[xdp]\ninterfaces = [\"eth0\", \"eth1\"]\nslow_path = \"mio\"\n",
        minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
    ))
    .unwrap();
    assert_eq!(c.runtime, Driver::Mio);
    let x = c.xdp.unwrap();
    assert_eq!(x.interfaces, ["eth0", "eth1"]);
    assert_eq!(x.hook, Some(driver_xdp::Hook::Xdp));
    let c = parse_str(&format!(
        "{}\n[xdp]\ninterfaces = [\"veth0\"]\nhook = \"tc\"\n",
        minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
    ))
    .unwrap();
    assert_eq!(c.xdp.unwrap().hook, Some(driver_xdp::Hook::Tc));
    let c = parse_str(&format!(
        "{}\n[xdp]\ninterfaces = [\"veth0\"]\nhook = \"auto\"\n",
        minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
    ))
    .unwrap();
    assert_eq!(c.xdp.unwrap().hook, None);
    let e = parse_str(&format!(
        "{}\n[xdp]\ninterfaces = [\"veth0\"]\nhook = \"egress\"\n",
        minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
    ))
    .unwrap_err();
    assert!(e.to_string().starts_with("xdp.hook: unknown hook"), "{e}");
    let c = parse_str(&format!(
        "{}\n[xdp]\ninterfaces = [\"eth0\"]\n",
        minimal().replace("id = 7", "id = 7\ndriver = \"xdp\"")
    ))
    .unwrap();
    assert_eq!(c.runtime, Driver::Tokio);
    assert!(parse_str(&minimal()).unwrap().xdp.is_none());
    let c = parse_str(&minimal().replace("id = 7", "id = 7\ndriver = \"mio\"")).unwrap();
    assert_eq!(c.runtime, Driver::Mio);
    assert_eq!(parse_str(&minimal()).unwrap().runtime, Driver::Tokio);
    let e = parse_str(&minimal().replace("id = 7", "id = 7\nwat = 1")).unwrap_err();
    assert!(e.fix.contains("wat"), "{e}");
}

#[test]
fn bad_key_file_is_named() {
    let e = parse(&minimal(), Path::new("."), &|_| Ok("xyz".to_owned())).unwrap_err();
    assert_eq!(e.field, "proxy.master_key_file");
    let e = parse(&minimal(), Path::new("."), &|_| {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    })
    .unwrap_err();
    assert_eq!(e.field, "proxy.master_key_file");
}

#[test]
fn policies_translate() {
    let text = format!(
        "{}[default_policy]\nrap = \"load\"\n[[policy]]\ngroup = \"10.251.0.129/32\"\nport = 53\nproto = \"udp\"\nexclude_sender = true\nscope_prefix = 24\nreplicate = 2\n",
        minimal()
    );
    let c = parse_str(&text).unwrap();
    let t = &c.driver.proxy.policies;
    assert_eq!(t.default.rap, RapPolicy::Load);
    let (m, p) = t.rules[0];
    assert_eq!(m.proto, Some(IpProtocol::Udp));
    assert_eq!(m.len, 32);
    assert!(p.target.exclude_sender);
    assert_eq!(p.target.scope_prefix, Some(24));
    assert_eq!(p.target.replicate, 2);
    assert_eq!(p.rap, RapPolicy::Proximity);
}

/// Several IPv4 pool addresses and an IPv6 prefix: the NAT takes `nat.prefix_addrs` addresses of the prefix
/// (the same ones for the same seed), and the whole prefix is routed into the TUN; the flood-defence keys
/// reach the NAT.
#[test]
fn nat_pool_prefix_and_flood_keys() {
    let m = minimal()
        .replace(
            "[\"10.251.0.161\"]",
            "[\"10.251.0.161\", \"10.251.0.162\", \"fd00:98::7/96\"]\nseed = 5",
        )
        .replace("[\"10.251.0.128/28\"]", "[\"10.251.0.128/28\", \"fd00:99::/64\"]");
    let s = format!(
        "{m}[nat]\nprefix_addrs = 8\nnew_per_prefix = 100\nprefix_len_v4 = 20\nprefix_len_v6 = 48\nudp_transitory_timeout_s = 20\ntcp_half_open_timeout_s = 25\n"
    );
    let c = parse_str(&s).unwrap();
    let n = &c.driver.proxy.nat;
    assert_eq!(n.pool.len(), 10);
    assert_eq!(
        &n.pool[..2],
        &[
            "10.251.0.161".parse::<IpAddr>().unwrap(),
            "10.251.0.162".parse().unwrap()
        ]
    );
    let pre: Prefix = "fd00:98::/96".parse().unwrap();
    for a in &n.pool[2..] {
        assert!(pias_state::policy::prefix_match(pre.addr, pre.len, *a), "{a}");
    }
    assert_eq!(
        parse_str(&s).unwrap().driver.proxy.nat.pool,
        n.pool,
        "same seed, same addresses"
    );
    let routes: Vec<String> = c.driver.host.pool.iter().map(|r| r.to_string()).collect();
    assert_eq!(routes, ["10.251.0.161/32", "10.251.0.162/32", "fd00:98::/96"]);
    assert_eq!(
        (n.new_per_prefix, n.prefix_len_v4, n.prefix_len_v6),
        (100, 20, 48)
    );
    assert_eq!(n.udp_transitory_timeout, Duration::from_secs(20));
    assert_eq!(n.tcp_half_open_timeout, Duration::from_secs(25));
}

#[test]
fn key_file_open_to_others_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("pias-keyperm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("m.key");
    std::fs::write(&key, KEY).unwrap();
    let cfg = dir.join("proxy.toml");
    std::fs::write(&cfg, minimal()).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = load(&cfg).unwrap_err().to_string();
        assert!(
            e.contains(&format!("chmod 600 {}", key.display())),
            "{mode:o}: {e}"
        );
        assert!(
            e.contains("proxy.master_key_file") && e.contains("insecure_key_file_permissions"),
            "{e}"
        );
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&cfg).is_ok());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let allowed = minimal().replace("id = 7", "id = 7\ninsecure_key_file_permissions = true");
    std::fs::write(&cfg, allowed).unwrap();
    assert!(load(&cfg).is_ok(), "explicitly allowed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn control_group_is_read() {
    assert_eq!(parse_str(&minimal()).unwrap().control_group, None);
    let c = parse_str(&format!(
        "{}[control]\nsocket = \"c.sock\"\ngroup = \"pias\"\n",
        minimal()
    ))
    .unwrap();
    assert_eq!(c.control_group.as_deref(), Some("pias"));
    assert_eq!(
        field_of(&format!("{}[control]\ngroup = \"\"\n", minimal())),
        "control.group"
    );
}
