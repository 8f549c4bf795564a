//! The program attached to a veth in namespaces this test creates (removed by a guard): native mode (or the
//! logged generic fallback), a client's UDP datagram to a group encapsulated by XDP and routed with
//! `bpf_fib_lookup` to the JAP's overlay socket, where the kernel's own UDP stack receives it (so the outer
//! checksums are checked by the kernel too); a data frame decapsulated, NATed to a real target socket, and
//! the target's answer NATed back to the client's socket from the group address; detached when the program is dropped, nothing pinned. Needs
//! root; no traffic leaves the two namespaces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use driver_xdp::maps::{CFG_ENABLED, CFG_FIB, Config, counter};
use driver_xdp::{MapSync, Sizes, XdpProgram, ktime_now};
use pias_proto::auth::SipKey;
use pias_proto::control::{Answer, AnswerEntry};
use pias_proto::tunnel::{DATA_HEADER_LEN, DataHeader, DataKeys, Frame};
use pias_proto::{FlowKey, IpProtocol, ProxyId, TransportAddr};
use pias_state::iap::{IapCache, IapConfig};
use pias_state::nat::{NatConfig, NatTable};
use pias_state::proxy::Delivery;
use pias_state::time::Instant;

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the `ip` tool (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair; deleted on drop (which removes the veths too).
struct Lab {
    a: String,
    b: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd; it changes only this thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

const KEY: SipKey = SipKey { k0: 1, k1: 2 };

/// The program's data tag keys.
fn data_keys() -> DataKeys {
    DataKeys::new(&pias_proto::auth::MasterKey::from_bytes([0x44; 32]), 0)
}

#[test]
fn native_xdp_on_veth_serves_iap_and_jap_hits_between_real_sockets() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs it as root)"
    );
    let pid = std::process::id();
    let lab = Lab {
        a: format!("xdpt-a-{pid}"),
        b: format!("xdpt-b-{pid}"),
    };
    let (va, vb) = (format!("xa{pid}"), format!("xb{pid}"));
    ip(&["netns", "add", &lab.a]);
    ip(&["netns", "add", &lab.b]);
    ip(&[
        "link", "add", &va, "netns", &lab.a, "type", "veth", "peer", "name", &vb, "netns", &lab.b,
    ]);
    // A: the proxy (overlay 10.9.0.1); B: the client (10.77.0.2) and the JAP's overlay socket (10.9.0.2).
    ip(&["-n", &lab.a, "addr", "add", "10.77.0.1/24", "dev", &va]);
    ip(&["-n", &lab.a, "addr", "add", "10.9.0.1/32", "dev", "lo"]);
    ip(&["-n", &lab.b, "addr", "add", "10.77.0.2/24", "dev", &vb]);
    ip(&["-n", &lab.b, "addr", "add", "10.9.0.2/32", "dev", "lo"]);
    for (n, v) in [(&lab.a, &va), (&lab.b, &vb)] {
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&["-n", n, "link", "set", v, "up"]);
    }
    ip(&["-n", &lab.a, "route", "add", "10.9.0.2/32", "via", "10.77.0.2"]);
    // A proxy host forwards (its slow path routes through a TUN); bpf_fib_lookup requires it.
    let fwd = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.a,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
        ])
        .status()
        .expect("sysctl");
    assert!(fwd.success());
    ip(&["-n", &lab.b, "route", "add", "192.0.2.0/24", "via", "10.77.0.1"]);
    ip(&["-n", &lab.b, "route", "add", "10.9.0.1/32", "via", "10.77.0.1"]);
    // The JAP side: a target 10.1.0.5 behind B, the NAT pool 100.64.0.1 routed to A.
    ip(&["-n", &lab.b, "addr", "add", "10.1.0.5/32", "dev", "lo"]);
    ip(&["-n", &lab.a, "route", "add", "10.1.0.5/32", "via", "10.77.0.2"]);
    ip(&["-n", &lab.b, "route", "add", "100.64.0.0/24", "via", "10.77.0.1"]);
    let mac_b = ip_out(&["-n", &lab.b, "-br", "link", "show", &vb])
        .split_whitespace()
        .nth(2)
        .expect("b's MAC")
        .to_string();
    ip(&[
        "-n",
        &lab.a,
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        &mac_b,
        "dev",
        &va,
    ]);

    let group = TransportAddr {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 53,
        proto: IpProtocol::Udp,
    };
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (ns_a, va2) = (lab.a.clone(), va.clone());
    let proxy = std::thread::spawn(move || {
        enter(&ns_a);
        let (mut prog, maps) = XdpProgram::load(Sizes {
            groups: 16,
            nat: 16,
            members: 16,
        })
        .expect("load");
        let mut sync = MapSync::new(maps);
        let overlay: SocketAddr = "10.9.0.1:6081".parse().unwrap();
        let cfg = Config::new(
            &KEY,
            &data_keys(),
            1,
            ProxyId(1),
            overlay,
            1452,
            CFG_ENABLED | CFG_FIB,
        );
        sync.maps_mut().config.set(0, cfg, 0).unwrap();
        let mut cache = IapCache::new(
            IapConfig::default(),
            KEY,
            pias_state::secrets::table_key_for_tests(1),
        );
        let now = Instant::from_secs(10);
        let answer = Answer::new(
            group,
            60_000,
            &[AnswerEntry {
                jap: ProxyId(2),
                weight: 1,
            }],
        );
        cache.install(now, &answer, |_| true);
        sync.install_group(
            &group,
            cache.get(&group),
            ProxyId(1),
            |_| Some("10.9.0.2:6081".parse().unwrap()),
            now,
            ktime_now(),
        );
        // A NAT binding for the client's flow towards the target, and B's overlay socket as a member.
        sync.member_up(ProxyId(2), "10.9.0.2:6081".parse().unwrap());
        let mut nat = NatTable::new(
            NatConfig::with_pool(vec!["100.64.0.1".parse().unwrap()]),
            pias_state::secrets::table_key_for_tests(3),
        )
        .unwrap();
        let flow = FlowKey {
            proto: IpProtocol::Udp,
            src: "10.77.0.2".parse().unwrap(),
            src_port: 40000,
            dst: group.ip,
            dst_port: group.port,
        };
        nat.create(&flow, ("10.1.0.5".parse().unwrap(), 5353), 0, now)
            .unwrap();
        while let Some(ev) = nat.poll_event() {
            sync.apply_nat(&ev, Delivery::Nat);
        }
        let mode = prog.attach(&va2).expect("attach");
        println!("driver-xdp: attached to {va2} in {mode:?} mode");
        let shown = ip_out(&["-d", "link", "show", &va2]);
        assert!(shown.contains("xdp"), "{shown}");
        ready_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        let c = sync.maps().counters().unwrap();
        drop(prog); // detaches
        let shown = ip_out(&["-d", "link", "show", &va2]);
        assert!(!shown.contains("prog/xdp"), "detached on drop: {shown}");
        c
    });

    // B needs NAPI on its veth end to receive XDP_TX frames: attach a program there too, disabled (passes all).
    let ns_b = lab.b.clone();
    let vb2 = vb.clone();
    let client = std::thread::spawn(move || {
        enter(&ns_b);
        let (mut pass_all, _maps) = XdpProgram::load(Sizes {
            groups: 1,
            nat: 1,
            members: 1,
        })
        .expect("load");
        pass_all.attach(&vb2).expect("attach on b");
        ready_rx.recv().unwrap();
        let jap = UdpSocket::bind("10.9.0.2:6081").unwrap();
        jap.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let cl = UdpSocket::bind("10.77.0.2:40000").unwrap();
        // A local sender's datagram crosses the veth with a partial (offloaded) checksum: the program
        // must leave it to the slow path (there is none here: it is lost, and counted).
        cl.send_to(b"partial", "192.0.2.10:53").unwrap();
        let mut buf = [0u8; 2048];
        jap.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(
            jap.recv_from(&mut buf).is_err(),
            "a partial checksum must not be encapsulated"
        );
        jap.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // With checksums computed by the sender (as on a wire), every datagram takes the fast path.
        let tx_off = Command::new("ethtool")
            .args(["-K", &vb2, "tx", "off"])
            .output()
            .expect("ethtool");
        assert!(
            tx_off.status.success(),
            "{}",
            String::from_utf8_lossy(&tx_off.stderr)
        );
        let mut got = Vec::new();
        for i in 0..5u8 {
            cl.send_to(&[b'q', i], "192.0.2.10:53").unwrap();
            let mut buf = [0u8; 2048];
            match jap.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, "10.9.0.1:6081".parse::<SocketAddr>().unwrap());
                    got.push(buf[..n].to_vec());
                }
                Err(e) => {
                    eprintln!("driver-xdp: no encapsulated datagram for packet {i}: {e}");
                    break;
                }
            }
        }
        // JAP: a data frame from B's overlay socket (a member) for the bound flow is decapsulated, NATed and
        // routed to the target; the target's answer to the pool comes back to the client from the group.
        let target = UdpSocket::bind("10.1.0.5:5353").unwrap();
        target.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut inner = vec![0u8; 128];
        let n = pias_proto::build::udp_packet(
            "10.77.0.2:40000".parse().unwrap(),
            "192.0.2.10:53".parse().unwrap(),
            b"via the JAP",
            &mut inner,
        )
        .unwrap();
        let h = DataHeader {
            vni: 1,
            flags: 0,
            hops: 2,
            epoch: 0,
            ingress: ProxyId(2),
        };
        let mut frame = vec![0u8; n + DATA_HEADER_LEN];
        h.encapsulate_tagged(data_keys().current(), &inner[..n], &mut frame)
            .unwrap();
        jap.send_to(&frame, "10.9.0.1:6081").unwrap();
        let (n, pool) = target
            .recv_from(&mut buf)
            .expect("the target gets the NATed datagram");
        assert_eq!(&buf[..n], b"via the JAP");
        assert_eq!(
            pool.ip(),
            "100.64.0.1".parse::<IpAddr>().unwrap(),
            "from the NAT pool"
        );
        target.send_to(b"answer", pool).unwrap();
        cl.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, from) = cl.recv_from(&mut buf).expect("the client gets the answer");
        assert_eq!(&buf[..n], b"answer");
        assert_eq!(
            from,
            "192.0.2.10:53".parse::<SocketAddr>().unwrap(),
            "from the group"
        );
        done_tx.send(()).unwrap();
        got
    });
    let got = client.join().expect("client thread");
    let counters = proxy.join().expect("proxy thread");
    let named: Vec<_> = driver_xdp::maps::COUNTER_NAMES
        .iter()
        .zip(counters)
        .filter(|(_, v)| *v > 0)
        .collect();
    if got.len() != 5 {
        let st = Command::new("ip")
            .args(["netns", "exec", &lab.b, "nstat", "-az"])
            .output()
            .unwrap();
        let st = String::from_utf8_lossy(&st.stdout);
        let st: Vec<&str> = st
            .lines()
            .filter(|l| l.contains("Udp") || l.contains("IpIn"))
            .collect();
        panic!(
            "received {} of 5; program counters: {named:?}; B: {st:?}",
            got.len()
        );
    }
    for (i, g) in got.iter().enumerate() {
        match Frame::parse(&g[..]).expect("a PIAS frame") {
            Frame::Data(d) => {
                assert_eq!(d.header().ingress, ProxyId(1));
                d.verify_tag(&data_keys()).expect("tagged by the program");
                let p = pias_proto::packet::IpPacket::new_checked(d.inner()).unwrap();
                p.verify_checksums().unwrap();
                assert_eq!(
                    p.ttl(),
                    63,
                    "one router hop, as the kernel forwarding into the TUN"
                );
                assert_eq!(&p.l4_bytes()[8..], &[b'q', i as u8]);
            }
            Frame::Control(_) => panic!("data frame expected"),
        }
    }
    assert_eq!(counters[counter("xdp_iap_hit")], 5);
    assert_eq!(counters[counter("xdp_jap_forward_hit")], 1);
    assert_eq!(counters[counter("xdp_jap_reverse_hit")], 1);
    assert_eq!(counters[counter("xdp_pass_partial_checksum")], 1);
    drop(lab);
    assert!(!std::path::Path::new(&format!("/var/run/netns/xdpt-a-{pid}")).exists());
}
