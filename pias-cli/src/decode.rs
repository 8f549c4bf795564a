//! `pias decode`: print a capture as PIAS sees it.
//!
//! For each IP packet: the flow; for UDP to or from the overlay port, the Geneve frame (data: flags, hops,
//! key epoch, ingress proxy and the client packet inside; control: the message); for UDP to or from the
//! registration port, the target message. With `--key`, MACs are checked under the overlay key or the
//! group's key, and data tags under the data key of the frame's epoch (SPEC.md §4.1; the epoch byte is
//! taken as the epoch, so a deployment past epoch 255 names it with `--data-epoch`).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use pias_proto::auth::MasterKey;
use pias_proto::control::{Binding, ControlPacket, Message, REGISTRATION_PORT};
use pias_proto::geneve::{HEADER_LEN as GENEVE_HEADER_LEN, UDP_PORT as OVERLAY_PORT};
use pias_proto::packet::IpPacket;
use pias_proto::pcap::PcapReader;
use pias_proto::tunnel::{DataKeys, Frame, flags};
use pias_proto::{FlowKey, IpProtocol};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  pias decode capture.pcap --key master.key\n\n\
Capture PIAS traffic with `tcpdump -w capture.pcap -s 0 udp port 6081 or udp port 6082` on a proxy, or \
on the TUN device for client and target packets.")]
pub(crate) struct Args {
    /// A classic pcap file (tcpdump -w).
    pub pcap: PathBuf,
    /// The operator's master key file (64 hex digits): check every MAC.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The data key epoch to check data tags under (with `--key`; default: the frame's epoch byte). Frames
    /// of this epoch and the one before are checked, as a proxy configured with it would.
    #[arg(long)]
    pub data_epoch: Option<u32>,
    /// Print at most this many packets.
    #[arg(long)]
    pub count: Option<usize>,
}

pub(crate) fn run(a: Args) -> Result<()> {
    let bytes = std::fs::read(&a.pcap).with_context(|| format!("reading {}", a.pcap.display()))?;
    let key = match &a.key {
        Some(p) => {
            let s =
                std::fs::read_to_string(p).with_context(|| format!("reading key file {}", p.display()))?;
            Some(
                MasterKey::from_hex(&s)
                    .with_context(|| format!("key file {}: expected 64 hex digits", p.display()))?,
            )
        }
        None => None,
    };
    let reader =
        PcapReader::new(&bytes).with_context(|| format!("{}: not a pcap capture", a.pcap.display()))?;
    let mut first = None;
    for (i, rec) in reader.enumerate() {
        if a.count.is_some_and(|c| i >= c) {
            break;
        }
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                println!("#{:<4} capture ends early: {e}", i + 1);
                break;
            }
        };
        let t0 = *first.get_or_insert(rec.time_ns);
        let t = (rec.time_ns - t0) as f64 / 1e9;
        let line = match rec.ip() {
            Some(ip) => describe_with(ip, key.as_ref(), a.data_epoch),
            None => format!("link type {}: not an IP frame", rec.link_type),
        };
        println!("#{:<4} {t:>10.6} {line}", i + 1);
    }
    Ok(())
}

fn flow_str(f: &FlowKey) -> String {
    let ep = |ip: std::net::IpAddr, port: u16| match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    };
    format!(
        "{} {} > {}",
        f.proto,
        ep(f.src, f.src_port),
        ep(f.dst, f.dst_port)
    )
}

/// One line for one IP packet (and what it carries).
pub(crate) fn describe(ip: &[u8], key: Option<&MasterKey>) -> String {
    describe_with(ip, key, None)
}

/// [`describe`], checking data tags under the keys of `data_epoch` (default: each frame's epoch byte).
fn describe_with(ip: &[u8], key: Option<&MasterKey>, data_epoch: Option<u32>) -> String {
    let p = match IpPacket::new_checked(ip) {
        Ok(p) => p,
        Err(e) => return format!("malformed IP packet: {e}"),
    };
    let mut s = String::new();
    let v = if p.src_addr().is_ipv4() { "IPv4" } else { "IPv6" };
    match p.flow() {
        Some(f) => {
            let _ = write!(s, "{v} {} len {}", flow_str(&f), p.total_len());
            if let Some(fl) = p.tcp_flags() {
                let _ = write!(s, " tcp[{}]", tcp_flags(fl.bits()));
            }
            if f.proto == IpProtocol::Udp {
                let payload = p.l4_bytes().get(8..).unwrap_or(&[]);
                if f.dst_port == OVERLAY_PORT || f.src_port == OVERLAY_PORT {
                    s.push_str(" | ");
                    s.push_str(&overlay(
                        payload,
                        key,
                        data_epoch,
                        std::net::SocketAddr::new(f.dst, f.dst_port),
                    ));
                } else if f.dst_port == REGISTRATION_PORT || f.src_port == REGISTRATION_PORT {
                    s.push_str(" | target ");
                    s.push_str(&control(payload, key, None));
                }
            }
        }
        None if p.is_icmp_error() => {
            let inner = p
                .icmp_error_inner_flow()
                .map(|f| flow_str(&f))
                .unwrap_or_else(|e| e.to_string());
            let (t, c) = p.icmp_type_code().unwrap_or((0, 0));
            let _ = write!(
                s,
                "{v} icmp error type {t} code {c} {} > {} about [{inner}]",
                p.src_addr(),
                p.dst_addr()
            );
        }
        None => {
            let _ = write!(
                s,
                "{v} {} {} > {} len {}",
                p.l4_protocol(),
                p.src_addr(),
                p.dst_addr(),
                p.total_len()
            );
        }
    }
    s
}

fn tcp_flags(bits: u16) -> String {
    let names = [(0x02, 'S'), (0x10, '.'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P')];
    names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// `to`: the datagram's destination, which the MAC of a control frame is bound to (SPEC.md §8.2).
fn overlay(
    payload: &[u8],
    key: Option<&MasterKey>,
    data_epoch: Option<u32>,
    to: std::net::SocketAddr,
) -> String {
    match Frame::parse(payload) {
        Ok(Frame::Data(d)) => {
            let h = d.header();
            let mut names = Vec::new();
            for (bit, n) in [
                (flags::TO_RAP, "TO_RAP"),
                (flags::WANT_ANSWER, "WANT_ANSWER"),
                (flags::VIA_RAP, "VIA_RAP"),
                (flags::TO_TARGET, "TO_TARGET"),
            ] {
                if h.flags & bit != 0 {
                    names.push(n);
                }
            }
            let fl = if names.is_empty() {
                "-".to_string()
            } else {
                names.join("|")
            };
            let tag = match key {
                None => String::new(),
                // A tunnel-mode target holds no data key and sends a zero tag (SPEC.md §11.6).
                Some(_) if h.flags & flags::TO_TARGET != 0 && d.tag() == 0 => " [untagged]".into(),
                Some(k) => {
                    let keys = DataKeys::new(k, data_epoch.unwrap_or(u32::from(h.epoch)));
                    match d.verify_tag(&keys) {
                        Ok(()) => " [tag ok]".into(),
                        Err(_) => format!(" [TAG BAD {:#018x}]", d.tag()),
                    }
                }
            };
            format!(
                "geneve vni {} data [{fl}] hops {} epoch {} ingress {}{tag} | {}",
                h.vni,
                h.hops,
                h.epoch,
                h.ingress,
                describe(d.inner(), key)
            )
        }
        Ok(Frame::Control(g)) => {
            format!(
                "geneve vni {} control | {}",
                g.vni(),
                control(
                    &payload[GENEVE_HEADER_LEN..],
                    key,
                    Some(Binding::Overlay {
                        vni: g.vni(),
                        receiver: to,
                    })
                )
            )
        }
        Err(e) => format!("not a PIAS frame: {e}"),
    }
}

/// `overlay`: the binding of a proxy-to-proxy message; `None` for a target message.
fn control(payload: &[u8], key: Option<&MasterKey>, overlay: Option<Binding>) -> String {
    let cp = match ControlPacket::new_checked(payload) {
        Ok(c) => c,
        Err(e) => return format!("malformed control message: {e}"),
    };
    let h = cp.header();
    let msg = match cp.message() {
        Ok(m) => m,
        Err(e) => return format!("type {:#04x} from {} seq {:#x}: {e}", cp.kind(), h.sender, h.seq),
    };
    let mac = match key {
        None => "",
        Some(k) => {
            let mk = match overlay {
                Some(b) => Some((k.overlay_key(), b)),
                None => msg.target_group().map(|g| (k.group_key(&g), Binding::Target)),
            };
            match mk.map(|(mk, b)| cp.verify(&mk, b)) {
                Some(Ok(())) => " [mac ok]",
                _ => " [MAC BAD]",
            }
        }
    };
    format!("{} from {} seq {:#x}{mac}", summary(&msg), h.sender, h.seq)
}

fn summary(m: &Message<'_>) -> String {
    match m {
        Message::Probe(p) => format!(
            "Probe nonce {:#x} incarnation {} version {}",
            p.nonce, p.incarnation, p.version
        ),
        Message::ProbeAck(p) => format!("ProbeAck nonce {:#x}", p.nonce),
        Message::Records(r) => {
            let ids: Vec<String> = r
                .iter()
                .map(|x| format!("{}:{:?}@{}", x.id, x.status, x.addr))
                .collect();
            format!("Records [{}]", ids.join(", "))
        }
        Message::Digest(d) => format!("Digest depth {} prefix {:#x}", d.depth, d.prefix),
        Message::Pull(p) => format!("Pull depth {} prefix {:#x}", p.depth, p.prefix),
        Message::Join(r) => format!("Join {} at {}", r.id, r.addr),
        Message::Report(r) => {
            let e: Vec<String> = r.iter().map(|e| format!("{}={}", e.group, e.count)).collect();
            format!("Report [{}]", e.join(", "))
        }
        Message::ReportAck(a) => format!("ReportAck {:#x}", a.acked_seq),
        Message::Resolve(r) => format!("Resolve {}", r.group),
        Message::Answer(a) => {
            let j: Vec<String> = a
                .japs()
                .iter()
                .map(|e| format!("{}x{}", e.jap, e.weight))
                .collect();
            format!("Answer {} ttl {} ms [{}]", a.group, a.ttl_ms, j.join(", "))
        }
        Message::Invalidate(i) => format!("Invalidate {} reason {}", i.group, i.reason),
        Message::Register(r) => format!(
            "Register {} service {} {:?} weight {}",
            r.group, r.service, r.mode, r.weight
        ),
        Message::Challenge(c) => format!("Challenge {}", c.group),
        Message::RegisterAck(a) => format!(
            "RegisterAck {} {:?} jap {} refresh {} ms",
            a.group, a.status, a.jap, a.refresh_ms
        ),
        Message::Refresh(o) => format!("Refresh {} service {}", o.group, o.service),
        Message::Deregister(o) => format!("Deregister {} service {}", o.group, o.service),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pias_proto::ProxyId;
    use pias_proto::build::udp_packet;
    use pias_proto::control::{ControlHeader, Resolve};
    use pias_proto::tunnel::DataHeader;

    #[test]
    fn describes_data_and_control_frames() {
        let master = MasterKey::from_bytes([1; 32]);
        let mut inner = [0u8; 128];
        let n = udp_packet(
            "10.1.0.1:4000".parse().unwrap(),
            "10.99.0.1:53".parse().unwrap(),
            b"q",
            &mut inner,
        )
        .unwrap();
        let mut frame = [0u8; 256];
        let h = DataHeader {
            vni: 7,
            flags: flags::TO_RAP | flags::WANT_ANSWER,
            hops: 2,
            epoch: 3,
            ingress: ProxyId(3),
        };
        let fl = h
            .encapsulate_tagged(&master.data_key(3), &inner[..n], &mut frame)
            .unwrap();
        let mut outer = [0u8; 512];
        let m = udp_packet(
            "10.0.0.3:6081".parse().unwrap(),
            "10.0.0.5:6081".parse().unwrap(),
            &frame[..fl],
            &mut outer,
        )
        .unwrap();
        let line = describe(&outer[..m], Some(&master));
        assert!(
            line.contains("data [TO_RAP|WANT_ANSWER] hops 2 epoch 3 ingress p3 [tag ok]"),
            "{line}"
        );
        assert!(line.contains("udp 10.1.0.1:4000 > 10.99.0.1:53"), "{line}");
        // Under another master key, or another configured epoch, or without a key.
        let bad = describe(&outer[..m], Some(&MasterKey::from_bytes([2; 32])));
        assert!(bad.contains("[TAG BAD 0x"), "{bad}");
        let old = describe_with(&outer[..m], Some(&master), Some(5));
        assert!(old.contains("[TAG BAD"), "{old}");
        let prev = describe_with(&outer[..m], Some(&master), Some(4));
        assert!(prev.contains("[tag ok]"), "{prev}");
        assert!(!describe(&outer[..m], None).contains("tag"));

        let g = pias_proto::TransportAddr::new("10.99.0.1".parse().unwrap(), 53, IpProtocol::Udp);
        let c = Message::Resolve(Resolve { group: g })
            .emit_frame(
                7,
                "10.0.0.5:6081".parse().unwrap(),
                ControlHeader {
                    sender: ProxyId(3),
                    seq: 5,
                    time_ms: 1,
                },
                &master.overlay_key(),
                &mut frame,
            )
            .unwrap();
        let m = udp_packet(
            "10.0.0.3:6081".parse().unwrap(),
            "10.0.0.5:6081".parse().unwrap(),
            &frame[..c],
            &mut outer,
        )
        .unwrap();
        let line = describe(&outer[..m], Some(&master));
        assert!(
            line.contains("Resolve 10.99.0.1:53/udp from p3 seq 0x5 [mac ok]"),
            "{line}"
        );
        let line = describe(&outer[..m], Some(&MasterKey::from_bytes([2; 32])));
        assert!(line.contains("[MAC BAD]"), "{line}");
        assert!(describe(&[0x45, 0, 0], None).starts_with("malformed"));
    }
}
