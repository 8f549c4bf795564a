//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`.
//!
//! ```text
//! cargo run -p pias-proto --example gen_corpus [-- OUT_DIR]
//! cargo run -p pias-proto --example gen_corpus -- --add TARGET FILE...
//! ```
//!
//! Seeds are real, valid inputs built with the crate's own emitters (and, for IP packets, taken from the
//! pcap fixtures in `pias-proto/tests/fixtures/` when there are any), so libFuzzer starts past every
//! length and version check. Files are named by the BLAKE3 hash of their content (40 hex digits), so
//! running the generator again adds nothing new and never removes a file added by hand (a crash
//! reproducer, for example). `--add` puts such files in the corpus under the same naming, once they pass
//! their target. Seeds are kept small: libFuzzer mutates small inputs fastest.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use pias_proto::auth::MacKey;
use pias_proto::control::{
    Answer, AnswerEntry, COOKIE_LEN, Challenge, ControlHeader, DeliveryMode, Digest, Invalidate,
    MemberStatus, Message, Probe, ProxyRecord, Pull, Records, RegAckStatus, Register, RegisterAck, ReportAck,
    ReportEntry, Reports, Resolve, TargetOp,
};
use pias_proto::fuzzing;
use pias_proto::tunnel::{DataHeader, flags};
use pias_proto::{IpProtocol, ProxyId, TransportAddr};

type Corpus = BTreeMap<&'static str, Vec<Vec<u8>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest);
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--add") {
        return add(&root.join("fuzz/corpus"), &args[1..]);
    }
    let out = match args.first() {
        Some(p) => PathBuf::from(p),
        None => root.join("fuzz/corpus"),
    };
    let mut corpus = Corpus::new();
    let key = fuzzing::test_key();

    let messages = messages();
    let hdr = ControlHeader {
        sender: ProxyId(3),
        seq: 1000,
        time_ms: 1_700_000_000_000,
    };
    for m in &messages {
        let msg = emit(m, hdr, &key)?;
        corpus.entry("control").or_default().push(msg.clone());
        // control_body: the selector byte, then the body alone (header and tag are the target's job).
        let sel = fuzzing::control_body_selector(m.kind()).ok_or("kind missing from CONTROL_KINDS")?;
        let body = &msg[pias_proto::control::HEADER_LEN..msg.len() - pias_proto::auth::TAG_LEN];
        let mut input = vec![sel];
        input.extend_from_slice(body);
        corpus.entry("control_body").or_default().push(input);
    }

    for t in transport_addrs() {
        corpus
            .entry("transport_addr")
            .or_default()
            .push(t.to_bytes().to_vec());
    }

    // Overlay frames: data frames around IPv4 and IPv6 packets, and control frames.
    let inner = built_packets();
    let headers = [
        DataHeader {
            vni: 0x00_0102,
            flags: flags::WANT_ANSWER,
            hops: 2,
            epoch: 1,
            ingress: ProxyId(7),
        },
        DataHeader {
            vni: 0xff_fffe,
            flags: flags::VIA_RAP | flags::TO_TARGET,
            hops: 0,
            epoch: 0,
            ingress: ProxyId(u32::MAX),
        },
    ];
    // Tagged under the fuzz targets' data keys (epoch 1; the epoch-0 frames under the previous key).
    let keys = pias_proto::fuzzing::fuzz_data_keys();
    for (i, p) in inner.iter().enumerate() {
        let h = headers[i % headers.len()];
        let key = keys.for_wire_epoch(h.epoch).unwrap_or(keys.current());
        let mut frame = vec![0u8; pias_proto::tunnel::DATA_HEADER_LEN + p.len()];
        let n = h.encapsulate_tagged(key, p, &mut frame)?;
        frame.truncate(n);
        corpus.entry("tunnel_frame").or_default().push(frame.clone());
        corpus.entry("geneve").or_default().push(frame);
    }
    for m in messages.iter().take(3) {
        let mut frame = vec![0u8; 8 + m.buffer_len()];
        let n = m.emit_frame(0x00_0102, "192.0.2.1:6081".parse()?, hdr, &key, &mut frame)?;
        frame.truncate(n);
        corpus.entry("tunnel_frame").or_default().push(frame.clone());
        corpus.entry("geneve").or_default().push(frame);
    }
    // A Geneve frame with several options, one critical and unknown, in front of the PIAS one.
    let mut g = vec![0x09, 0x40, 0x08, 0x00, 0x00, 0x00, 0x05, 0x00];
    g.extend_from_slice(&[0x01, 0x02, 0x03, 0x00]); // class 0x0102, type 3, no data
    g.extend_from_slice(&[0xff, 0x50, 0x81, 0x04, 0x02, 0x02, 1, 0, 0, 0, 0, 9]); // PIAS data option
    g.extend_from_slice(&[0; 8]); // its (zero) tag
    g.extend_from_slice(&[0xab, 0xcd, 0x85, 0x02, 1, 2, 3, 4, 5, 6, 7, 8]); // critical, 8 bytes of data
    g.extend_from_slice(&inner[0]);
    corpus.entry("geneve").or_default().push(g.clone());
    corpus.entry("tunnel_frame").or_default().push(g);

    for p in inner.into_iter().chain(pcap_fixtures()) {
        corpus.entry("ip_packet").or_default().push(p);
    }

    write(&out, &corpus)
}

/// Writes every seed of every target that [`fuzzing::TARGETS`] knows; seeds for targets it does not
/// know (yet) are skipped with a note.
fn write(out: &Path, corpus: &Corpus) -> Result<(), Box<dyn std::error::Error>> {
    for (target, _) in fuzzing::TARGETS {
        if !corpus.contains_key(target) {
            return Err(format!("no seeds for fuzz target {target}").into());
        }
    }
    for (target, seeds) in corpus {
        let Some((_, check)) = fuzzing::TARGETS.iter().find(|(t, _)| t == target) else {
            eprintln!("skipping {} seeds of unknown target {target}", seeds.len());
            continue;
        };
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        let mut new = 0;
        for s in seeds {
            // A seed must pass its own target: the generator is also a test of the oracle.
            check(s);
            let name = blake3::hash(s).to_hex()[..40].to_string();
            let path = dir.join(name);
            if !path.exists() {
                std::fs::write(&path, s)?;
                new += 1;
            }
        }
        println!("{target}: {} seeds, {new} new, in {}", seeds.len(), dir.display());
    }
    Ok(())
}

/// `--add TARGET FILE…`: copies inputs (a fixed crash reproducer, a find of a long run) into the corpus
/// of TARGET under their content hash, after checking that they pass the target.
fn add(corpus: &Path, args: &[std::ffi::OsString]) -> Result<(), Box<dyn std::error::Error>> {
    let [target, files @ ..] = args else {
        return Err("usage: gen_corpus --add TARGET FILE...".into());
    };
    let target = target.to_string_lossy();
    let (name, check) = fuzzing::TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .ok_or_else(|| format!("unknown fuzz target {target}"))?;
    let dir = corpus.join(name);
    std::fs::create_dir_all(&dir)?;
    for f in files {
        let data = std::fs::read(f)?;
        check(&data);
        let path = dir.join(&blake3::hash(&data).to_hex()[..40]);
        std::fs::write(&path, &data)?;
        println!("{} -> {}", Path::new(f).display(), path.display());
    }
    Ok(())
}

fn emit(m: &Message<'_>, hdr: ControlHeader, key: &MacKey) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut b = vec![0u8; m.buffer_len()];
    let n = m.emit(hdr, key, pias_proto::control::Binding::Target, &mut b)?;
    b.truncate(n);
    Ok(b)
}

fn transport_addrs() -> Vec<TransportAddr> {
    vec![
        TransportAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 53, IpProtocol::Udp),
        TransportAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 443, IpProtocol::Tcp),
        TransportAddr::new(
            "2001:db8::80".parse().unwrap_or(Ipv6Addr::LOCALHOST).into(),
            80,
            IpProtocol::Tcp,
        ),
        TransportAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0, IpProtocol::Other(132)),
    ]
}

fn records() -> &'static [ProxyRecord] {
    let v = vec![
        ProxyRecord {
            id: ProxyId(1),
            incarnation: 3,
            version: 7,
            status: MemberStatus::Alive,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 6081),
            coord: [
                0x3f, 0x80, 0, 0, 0, 0, 0, 0, 0x3c, 0x23, 0xd7, 0x0a, 0x3f, 0, 0, 0,
            ],
        },
        ProxyRecord {
            id: ProxyId(2),
            incarnation: 1,
            version: 1,
            status: MemberStatus::Suspect,
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)), 6081),
            coord: [0; 16],
        },
    ];
    v.leak()
}

fn reports(groups: &[TransportAddr]) -> &'static [ReportEntry] {
    let v: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(i, &group)| ReportEntry {
            group,
            count: i as u32 + 1,
            flags: if i == 0 { ReportEntry::FLAG_TUNNEL } else { 0 },
            load: if i == 1 { ReportEntry::LOAD_FULL + 1 } else { 0 },
        })
        .collect();
    v.leak()
}

/// One or more messages of every type.
fn messages() -> Vec<Message<'static>> {
    let g = transport_addrs();
    let probe = Probe {
        nonce: 0x0102_0304_0506_0708,
        incarnation: 3,
        version: 7,
        digest: 0xdead_beef_0000_0001,
        coord: [1; 16],
    };
    let recs = records();
    let mut hashes = [0u64; 16];
    let mut counts = [0u16; 16];
    for i in 0..16 {
        hashes[i] = (i as u64 + 1) * 0x0101_0101_0101_0101;
        counts[i] = i as u16;
    }
    let cookie = [0x77; COOKIE_LEN];
    vec![
        Message::Probe(probe),
        Message::ProbeAck(probe),
        Message::Records(Records::Slice(recs)),
        Message::Records(Records::Slice(&[])),
        Message::Digest(Digest {
            depth: 0,
            prefix: 0,
            hashes,
            counts,
        }),
        Message::Digest(Digest {
            depth: 3,
            prefix: 0x5a5,
            hashes,
            counts,
        }),
        Message::Pull(Pull {
            depth: 7,
            prefix: 0x0fed_cba9,
        }),
        Message::Join(recs[0]),
        Message::Report(Reports::Slice(reports(&g[..2]))),
        Message::ReportAck(ReportAck { acked_seq: 999 }),
        Message::Resolve(Resolve { group: g[0] }),
        Message::Answer(Answer::new(
            g[0],
            30_000,
            &[
                AnswerEntry {
                    jap: ProxyId(4),
                    weight: 100,
                },
                AnswerEntry {
                    jap: ProxyId(5),
                    weight: 1,
                },
            ],
        )),
        Message::Answer(Answer::new(g[1], 500, &[])),
        Message::Invalidate(Invalidate {
            group: g[1],
            reason: Invalidate::REASON_NO_TARGETS,
        }),
        Message::Register(Register {
            group: g[0],
            service: TransportAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 5353, IpProtocol::Udp),
            mode: DeliveryMode::Nat,
            weight: 10,
            cookie: [0; COOKIE_LEN],
        }),
        Message::Register(Register {
            group: g[2],
            service: TransportAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6)), 8080, IpProtocol::Tcp),
            mode: DeliveryMode::Tunnel,
            weight: 1,
            cookie,
        }),
        Message::Challenge(Challenge { group: g[0], cookie }),
        Message::RegisterAck(RegisterAck {
            group: g[0],
            service: g[1],
            status: RegAckStatus::Ok,
            jap: ProxyId(4),
            refresh_ms: 10_000,
            hold_ms: 35_000,
        }),
        Message::Refresh(TargetOp {
            group: g[0],
            service: g[1],
        }),
        Message::Deregister(TargetOp {
            group: g[2],
            service: g[3],
        }),
    ]
}

/// Client packets as a NAT sees them: IPv4 and IPv6, UDP, TCP (with options) and ICMP echo and errors.
fn built_packets() -> Vec<Vec<u8>> {
    use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
    use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder, TcpOptionElement};

    /// Serialises one builder step (the step types differ per transport, hence a macro).
    macro_rules! build {
        ($b:expr, $payload:expr) => {{
            let (b, payload) = ($b, $payload);
            let mut buf = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut buf, payload).map(|()| buf)
        }};
    }

    let c4 = [198, 51, 100, 7];
    let g4 = [192, 0, 2, 53];
    let router4 = [203, 0, 113, 254];
    let c6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    let g6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80];
    let router6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];
    let syn_opts = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::WindowScale(7),
    ];
    let udp4 = build!(
        PacketBuilder::ipv4(c4, g4, 64).udp(40000, 53),
        b"\x12\x34\x01\x00\x00\x01"
    );
    let udp6 = build!(
        PacketBuilder::ipv6(c6, g6, 64).udp(40001, 53),
        b"\x12\x35\x01\x00\x00\x01"
    );
    let mut out = vec![
        build!(
            PacketBuilder::ipv4(c4, g4, 64)
                .tcp(40002, 443, 1000, 64240)
                .syn()
                .options(&syn_opts)
                .expect("options fit"),
            &[]
        ),
        build!(
            PacketBuilder::ipv6(c6, g6, 64)
                .tcp(40003, 443, 2000, 64800)
                .syn()
                .options(&[TcpOptionElement::MaximumSegmentSize(1440)])
                .expect("options fit"),
            &[]
        ),
        build!(
            PacketBuilder::ipv4(g4, c4, 64)
                .tcp(443, 40002, 5000, 65535)
                .ack(1001)
                .psh(),
            b"HTTP/1.1 200 OK\r\n"
        ),
        build!(
            PacketBuilder::ipv4(c4, g4, 64)
                .icmpv4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 0x4242, seq: 1 })),
            b"ping"
        ),
        build!(
            PacketBuilder::ipv6(c6, g6, 64)
                .icmpv6(Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 0x4343, seq: 2 })),
            b"ping6"
        ),
    ];
    // ICMP errors quoting a packet of the flow (what a router sends back toward the client).
    if let (Ok(q4), Ok(q6)) = (&udp4, &udp6) {
        out.push(build!(
            PacketBuilder::ipv4(router4, c4, 64).icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            )),
            q4
        ));
        out.push(build!(
            PacketBuilder::ipv4(router4, c4, 64)
                .icmpv4(Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)),
            q4
        ));
        out.push(build!(
            PacketBuilder::ipv6(router6, c6, 64).icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 }),
            q6
        ));
    }
    out.insert(0, udp6);
    out.insert(0, udp4);
    out.into_iter().filter_map(Result::ok).collect()
}

/// IP packets of the classic-pcap fixtures in `pias-proto/tests/fixtures/`, link-layer header stripped;
/// at most a few per file, smallest first. Other files (and pcapng) are ignored.
fn pcap_fixtures() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        let mut pkts = pcap_packets(&bytes);
        pkts.sort_by_key(Vec::len);
        pkts.dedup();
        out.extend(pkts.into_iter().filter(|p| p.len() <= 1500).take(4));
    }
    out
}

/// The IP packets of a classic pcap file (either byte order, micro- or nanosecond), for the link types
/// Ethernet (1, with up to two VLAN tags), raw IP (101), Linux cooked (113) and BSD loopback (0).
fn pcap_packets(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if b.len() < 24 {
        return out;
    }
    let magic = [b[0], b[1], b[2], b[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return out,
    };
    let u32_at = |at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(20) & 0xffff;
    let mut at = 24;
    while at + 16 <= b.len() {
        let caplen = u32_at(at + 8) as usize;
        let start = at + 16;
        let Some(frame) = b.get(start..start + caplen) else {
            break;
        };
        at = start + caplen;
        let ip = match linktype {
            1 => {
                let mut off = 12;
                let mut ty = frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
                while matches!(ty, Some(0x8100 | 0x88a8)) {
                    off += 4;
                    ty = frame.get(off..off + 2).map(|t| u16::from_be_bytes([t[0], t[1]]));
                }
                frame.get(off + 2..)
            }
            101 => Some(frame),
            113 => frame.get(16..),
            0 => frame.get(4..),
            _ => None,
        };
        if let Some(ip) = ip.filter(|ip| matches!(ip.first().map(|v| v >> 4), Some(4 | 6))) {
            out.push(ip.to_vec());
        }
    }
    out
}
