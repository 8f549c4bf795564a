//! Fuzz entry points: one function per target in `fuzz/fuzz_targets/`, each taking arbitrary bytes.
//!
//! Each function feeds its bytes to one parser and, when the parser accepts them, checks properties that must
//! hold for *every* accepted input: emitting what was parsed succeeds, parsing what was emitted gives back
//! the same value (parse → emit → parse is stable), emitting is canonical, a too-small output buffer is an
//! error that leaves the buffer untouched, and checksums survive NAT rewrites.
//!
//! **These functions panic on purpose.** A panic here is the oracle: libFuzzer reports it as a crash and
//! saves the input. Rejected input is never a failure; only an accepted input that breaks a property, or a
//! panic inside the parser itself, is. The same functions replay the committed corpus in
//! `tests/corpus.rs`, so every target also runs under `cargo test`.
//!
//! The module is compiled in every build (it is small and allocates only on accepted input) so that the
//! fuzz crate, the corpus test and the corpus generator share one definition; it is hidden from the docs
//! and is not part of the crate's API.
// The oracle is made of assertions and `expect`s: panicking is this module's job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{FlowKey, IpProtocol, ProxyId, TransportAddr};
use crate::auth::{MacKey, TAG_LEN};
use crate::control::{self, Binding, ControlHeader, ControlPacket, MAX_BODY_LEN, MAX_MESSAGE_LEN, Message};
use crate::error::WireError;
use crate::geneve::{
    ETHERTYPE_IPV6, ETHERTYPE_PIAS_CONTROL, GenevePacket, GeneveRepr, HEADER_LEN as GENEVE_HEADER_LEN,
    MAX_OPTIONS_LEN,
};
use crate::packet::{IpPacket, IpVersion, emit_packet_too_big};
use crate::tcp::TcpPacket;
use crate::tunnel::{DATA_HEADER_LEN, DataFrame, Frame, flags};
use crate::{checksum, icmp};

/// A fuzz target: its name (the file in `fuzz/fuzz_targets/` and the directory in `fuzz/corpus/`) and its
/// entry function.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target. The corpus test and the corpus generator iterate over this list, so a target added
/// here without a corpus fails `cargo test`.
pub const TARGETS: &[Target] = &[
    ("tunnel_frame", tunnel_frame),
    ("control", control),
    ("control_body", control_body),
    ("geneve", geneve),
    ("transport_addr", transport_addr),
    ("ip_packet", ip_packet),
];

/// The fixed key every re-emitted control message is tagged with (and the corpus is generated with).
pub fn test_key() -> MacKey {
    MacKey::from_bytes([0x5a; 32])
}

/// Sender of the frames [`control_body`] builds.
pub const BODY_SENDER: ProxyId = ProxyId(0x0102_0304);
/// Sequence number of the frames [`control_body`] builds.
pub const BODY_SEQ: u64 = 0x1122_3344_5566_7788;
/// The timestamp of every message [`control_body`] builds.
pub const BODY_TIME: u64 = 0x0102_0304_0506;

/// The message types [`control_body`] chooses from: its first input byte, modulo the length, indexes this.
pub const CONTROL_KINDS: [u8; 16] = [
    control::kind::PROBE,
    control::kind::PROBE_ACK,
    control::kind::RECORDS,
    control::kind::DIGEST,
    control::kind::PULL,
    control::kind::JOIN,
    control::kind::REPORT,
    control::kind::REPORT_ACK,
    control::kind::RESOLVE,
    control::kind::ANSWER,
    control::kind::INVALIDATE,
    control::kind::REGISTER,
    control::kind::CHALLENGE,
    control::kind::REGISTER_ACK,
    control::kind::REFRESH,
    control::kind::DEREGISTER,
];

/// Fills `buf` with a marker, calls `f` on it, and checks that `f` failed with `BufferTooSmall` and wrote
/// nothing (STYLE rule 4: a too-small buffer is an error that leaves it untouched).
fn assert_short_buffer_untouched<T: core::fmt::Debug>(
    what: &str,
    buf: &mut [u8],
    f: impl FnOnce(&mut [u8]) -> crate::Result<T>,
) {
    buf.fill(0xA5);
    let r = f(buf);
    assert!(
        matches!(r, Err(WireError::BufferTooSmall { .. })),
        "{what}: short buffer gave {r:?}"
    );
    assert!(
        buf.iter().all(|&b| b == 0xA5),
        "{what}: short buffer was written to"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Overlay frames

/// `Frame::parse`; a data frame is re-encapsulated from its header and inner packet and parsed again.
pub fn tunnel_frame(data: &[u8]) {
    match Frame::parse(data) {
        Err(_) => {}
        Ok(Frame::Control(g)) => {
            assert!(g.oam(), "control frame without the O bit");
            assert_eq!(g.protocol_type(), ETHERTYPE_PIAS_CONTROL);
            // What a proxy does next with a control frame; the payload is untrusted too.
            if let Ok(p) = ControlPacket::new_checked(g.payload()) {
                let _ = p.header();
                let _ = p.verify(&test_key(), Binding::Target);
                let _ = p.message();
            }
        }
        Ok(Frame::Data(d)) => {
            let h = d.header();
            let inner = d.inner();
            assert_eq!(d.inner_offset() + inner.len(), data.len());
            assert_eq!(h.flags & !flags::KNOWN, 0, "header() must mask unknown flags");
            assert!(h.vni <= 0x00ff_ffff);
            let want_v = if g_protocol(data) == ETHERTYPE_IPV6 { 6 } else { 4 };
            assert_eq!(inner[0] >> 4, want_v, "inner IP version not checked");

            let total = DATA_HEADER_LEN + inner.len();
            let mut out = vec![0u8; total];
            assert_short_buffer_untouched("encapsulate", &mut out[..total - 1], |b| h.encapsulate(inner, b));
            let n = h
                .encapsulate(inner, &mut out)
                .unwrap_or_else(|e| panic!("re-encapsulating {h:?} failed: {e}"));
            assert_eq!(n, total);
            match Frame::parse(&out[..n]) {
                Ok(Frame::Data(d2)) => {
                    assert_eq!(d2.header(), h, "header changed through encapsulate/parse");
                    assert_eq!(
                        d2.inner(),
                        inner,
                        "inner packet changed through encapsulate/parse"
                    );
                    assert_eq!(d2.inner_offset(), DATA_HEADER_LEN);
                }
                other => panic!("re-encapsulated data frame parsed as {other:?}"),
            }

            // The tag check never panics, and a frame re-tagged under the fuzz key verifies.
            let keys = fuzz_data_keys();
            let _ = d.verify_tag(&keys);
            let mut tagged = out[..n].to_vec();
            crate::tunnel::write_tag(
                keys.for_wire_epoch(h.epoch).unwrap_or(keys.current()),
                &mut tagged,
            )
            .expect("room for the tag");
            if keys.for_wire_epoch(h.epoch).is_some() {
                let dt = DataFrame::new_checked(&tagged[..]).expect("re-tagged frame re-checks");
                assert!(dt.verify_tag(&keys).is_ok(), "re-tagged frame must verify");
            }

            // The relay's in-place rewrite touches flags, hops and epoch only, and re-tags.
            let mut copy = data.to_vec();
            let mut d3 = DataFrame::new_checked(&mut copy[..]).expect("checked frame re-checks");
            let (fl, hops) = (!h.flags, h.hops.wrapping_sub(1));
            d3.set_flags_hops(fl, hops, keys.wire_epoch(), keys.current());
            assert_eq!(d3.header().flags, fl & flags::KNOWN);
            assert_eq!(d3.header().hops, hops);
            assert_eq!((d3.vni(), d3.ingress()), (h.vni, h.ingress));
            assert_eq!(d3.inner(), inner);
            assert!(d3.verify_tag(&keys).is_ok(), "relayed frame must verify");
        }
    }
}

/// The data keys the fuzz targets (and the corpus generator) tag frames with: master key of bytes 0x42,
/// epoch 1.
pub fn fuzz_data_keys() -> crate::tunnel::DataKeys {
    crate::tunnel::DataKeys::new(&crate::auth::MasterKey::from_bytes([0x42; 32]), 1)
}

/// The protocol type of a frame that passed `GenevePacket::new_checked`.
fn g_protocol(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[2], frame[3]])
}

/// `GenevePacket::new_checked`, the option walk, and re-emission of the fixed header.
pub fn geneve(data: &[u8]) {
    let Ok(g) = GenevePacket::new_checked(data) else {
        return;
    };
    let repr = GeneveRepr::parse(&g);
    assert!(repr.options_len.is_multiple_of(4) && repr.options_len <= MAX_OPTIONS_LEN);
    assert_eq!(
        GENEVE_HEADER_LEN + g.options().len() + g.payload().len(),
        data.len()
    );

    // Options tile the option area until the first error, which ends the walk.
    let mut consumed = 0;
    let mut errors = 0;
    for o in g.option_iter() {
        assert_eq!(errors, 0, "option iterator went on after an error");
        match o {
            Ok(o) => {
                assert!(o.data.len() <= 31 * 4);
                assert_eq!(o.is_critical(), o.kind & 0x80 != 0);
                consumed += 4 + o.data.len();
            }
            Err(_) => errors += 1,
        }
    }
    assert!(consumed <= g.options_len());
    assert!(
        errors == 1 || consumed == g.options_len(),
        "options do not tile the area"
    );

    // Re-emit the fixed header in front of the same options and payload.
    let mut out = data.to_vec();
    assert_short_buffer_untouched("geneve emit", &mut [0u8; GENEVE_HEADER_LEN - 1], |b| repr.emit(b));
    repr.emit(&mut out)
        .unwrap_or_else(|e| panic!("re-emitting {repr:?} failed: {e}"));
    assert_eq!(out[1] & 0x3f, 0, "reserved flag bits not zeroed");
    assert_eq!(out[7], 0, "reserved byte not zeroed");
    let g2 = GenevePacket::new_checked(&out[..]).expect("re-emitted header does not parse");
    assert_eq!(GeneveRepr::parse(&g2), repr);
    assert!(g.option_iter().eq(g2.option_iter()));
    assert_eq!(g2.payload(), g.payload());
    // Only reserved bits may differ from the input.
    let mask = [0xff, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
    for i in 0..GENEVE_HEADER_LEN {
        assert_eq!(out[i], data[i] & mask[i], "header byte {i} changed");
    }
}

/// `TransportAddr::parse`: accepted input is canonical (re-encodes to the same 20 bytes).
pub fn transport_addr(data: &[u8]) {
    if let Ok(ta) = TransportAddr::parse(data) {
        assert_eq!(
            &ta.to_bytes()[..],
            &data[..TransportAddr::WIRE_LEN],
            "non-canonical address accepted"
        );
        let _ = ta.to_string();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Control messages

/// `ControlPacket::new_checked` → `message()`; a decoded message is re-emitted under [`test_key`] with the
/// same header and must decode to the same message.
pub fn control(data: &[u8]) {
    let Ok(p) = ControlPacket::new_checked(data) else {
        return;
    };
    assert_eq!(control::HEADER_LEN + p.body().len() + TAG_LEN, data.len());
    let _ = p.verify(&test_key(), Binding::Target);
    if let Ok(m) = p.message() {
        assert_eq!(m.kind(), p.kind());
        assert!(
            m.body_len() <= p.body().len(),
            "message claims more body than it had"
        );
        check_reemit(p.header(), &m);
    }
}

/// First byte picks a message type from [`CONTROL_KINDS`], the rest is its body: the function wraps it in
/// a correctly tagged control message so that every body parser is reached past authentication.
pub fn control_body(data: &[u8]) {
    let Some(msg) = control_body_input(data) else {
        return;
    };
    let p = ControlPacket::new_checked(&msg).expect("built control message does not check");
    assert_eq!(
        p.header(),
        ControlHeader {
            sender: BODY_SENDER,
            seq: BODY_SEQ,
            time_ms: BODY_TIME,
        }
    );
    p.verify(&test_key(), Binding::Target)
        .expect("built control message does not verify");
    assert_eq!(p.body(), &data[1..msg.len() - TAG_LEN - control::HEADER_LEN + 1]);
    if let Ok(m) = p.message() {
        assert_eq!(m.kind(), p.kind());
        assert!(
            m.body_len() <= p.body().len(),
            "message claims more body than it had"
        );
        check_reemit(p.header(), &m);
    }
}

/// The whole control message [`control_body`] builds from its input: header (version 2, the chosen type,
/// [`BODY_SENDER`], [`BODY_SEQ`], body length, [`BODY_TIME`]), body (at most 65535 bytes of the input), and the tag under
/// [`test_key`]. `None` for empty input.
pub fn control_body_input(data: &[u8]) -> Option<Vec<u8>> {
    let (&sel, body) = data.split_first()?;
    let kind = CONTROL_KINDS[usize::from(sel) % CONTROL_KINDS.len()];
    let body = &body[..body.len().min(usize::from(u16::MAX))];
    let mut msg = Vec::with_capacity(control::HEADER_LEN + body.len() + TAG_LEN);
    // Layout per `control` module docs: version, type, flags, reserved, sender, seq, body length, reserved,
    // timestamp.
    msg.extend_from_slice(&[control::VERSION, kind, 0, 0]);
    msg.extend_from_slice(&BODY_SENDER.0.to_be_bytes());
    msg.extend_from_slice(&BODY_SEQ.to_be_bytes());
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&BODY_TIME.to_be_bytes());
    msg.extend_from_slice(body);
    let (b, n) = Binding::Target.encode();
    let tag = test_key().tag_parts(&[&b[..n], &msg]);
    msg.extend_from_slice(&tag);
    Some(msg)
}

/// The selector byte [`control_body`] maps to `kind`, if it is one of [`CONTROL_KINDS`].
pub fn control_body_selector(kind: u8) -> Option<u8> {
    CONTROL_KINDS.iter().position(|&k| k == kind).map(|i| i as u8)
}

/// Emits `m` with `hdr` under [`test_key`], and checks the result: it parses, verifies, has the same header
/// and decodes to the same message, whose own emission is byte-identical.
fn check_reemit(hdr: ControlHeader, m: &Message<'_>) {
    let key = test_key();
    let mut out = [0u8; MAX_MESSAGE_LEN];
    if m.body_len() > MAX_BODY_LEN {
        // A message larger than a sender may emit can still be received (the length field allows 64 KiB).
        let r = m.emit(hdr, &key, Binding::Target, &mut out);
        assert!(
            matches!(r, Err(WireError::BadLength { .. })),
            "emitting an oversized body gave {r:?}"
        );
        return;
    }
    let n = m.buffer_len();
    assert_short_buffer_untouched("control emit", &mut out[..n - 1], |b| {
        m.emit(hdr, &key, Binding::Target, b)
    });
    let n2 = m
        .emit(hdr, &key, Binding::Target, &mut out)
        .unwrap_or_else(|e| panic!("re-emitting {m:?} failed: {e}"));
    assert_eq!(n2, n, "emit length differs from buffer_len");
    let out = &out[..n];

    let p =
        ControlPacket::new_checked(out).unwrap_or_else(|e| panic!("re-emitted {m:?} does not check: {e}"));
    assert_eq!(p.header(), hdr);
    assert_eq!(p.kind(), m.kind());
    assert_eq!(p.body().len(), m.body_len());
    p.verify(&key, Binding::Target)
        .expect("re-emitted message does not verify");
    let m2 = p
        .message()
        .unwrap_or_else(|e| panic!("re-emitted {m:?} does not decode: {e}"));
    assert_same_message(m, &m2);

    // Emission is canonical: emitting the re-parsed message gives the same bytes.
    let mut again = [0u8; MAX_MESSAGE_LEN];
    let n3 = m2
        .emit(hdr, &key, Binding::Target, &mut again)
        .expect("second emission failed");
    assert_eq!(&again[..n3], out, "emission is not canonical");
}

/// Equality of two messages; lists are compared by what they iterate (one side may borrow wire bytes and
/// the other a slice), and every entry of a parsed list must be reachable by iteration.
fn assert_same_message(a: &Message<'_>, b: &Message<'_>) {
    match (a, b) {
        (Message::Records(x), Message::Records(y)) => {
            assert_eq!(x.iter().count(), x.len(), "records lost in iteration");
            assert_eq!(y.iter().count(), y.len(), "records lost in iteration");
            assert!(x.iter().eq(y.iter()), "records differ: {x:?} vs {y:?}");
        }
        (Message::Report(x), Message::Report(y)) => {
            assert_eq!(x.iter().count(), x.len(), "reports lost in iteration");
            assert_eq!(y.iter().count(), y.len(), "reports lost in iteration");
            assert!(x.iter().eq(y.iter()), "reports differ: {x:?} vs {y:?}");
        }
        _ => assert_eq!(a, b, "message changed through emit/parse"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// IP packets (the NAT's input)

/// The addresses [`ip_packet`] rewrites to: a "NAT pool" source and a "target" destination.
fn nat_addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x64)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)),
        )
    }
}

/// Where a checksum field may sit in `p`: the IPv4 header checksum, the transport checksum, and any even
/// offset inside the packet an ICMP error quotes (its IPv4 header and transport checksums).
fn is_checksum_field(p: &IpPacket<&[u8]>, at: usize) -> bool {
    let l4 = p.ip_header_len();
    if p.version() == IpVersion::V4 && at == 10 {
        return true;
    }
    let l4_csum = match p.l4_protocol() {
        // Located transport headers only (a non-first fragment has none; a first fragment has one).
        IpProtocol::Tcp if p.tcp_flags().is_some() => Some(16),
        IpProtocol::Udp if p.flow().is_some() => Some(6),
        IpProtocol::Icmp | IpProtocol::Icmpv6 if p.icmp_type_code().is_some() => Some(2),
        _ => None,
    };
    l4_csum.is_some_and(|c| at == l4 + c) || (p.is_icmp_error() && at >= l4 + icmp::HEADER_LEN)
}

/// Asserts that `after` equals `before` except that a checksum field may have turned from `0xFFFF` into
/// `0x0000` or back: the two are the same number in one's complement ("negative zero"), RFC 1624's eqn. 3
/// only ever yields `0x0000`, so a non-canonical `0xFFFF` in the input cannot survive a rewrite and its
/// inverse byte for byte. Every other byte must be restored.
fn assert_restored(p: &IpPacket<&[u8]>, before: &[u8], after: &[u8], what: &str) {
    assert_eq!(before.len(), after.len());
    if before == after {
        return;
    }
    for at in (0..before.len()).step_by(2) {
        let (x, y) = (
            &before[at..before.len().min(at + 2)],
            &after[at..after.len().min(at + 2)],
        );
        if x == y {
            continue;
        }
        let zeros = |w: &[u8]| w == [0xff, 0xff] || w == [0, 0];
        assert!(
            is_checksum_field(p, at) && zeros(x) && zeros(y),
            "{what}: byte {at} not restored: {x:02x?} became {y:02x?}"
        );
    }
}

/// The IPv4 header quoted by an ICMP error verifies its own checksum (`None` if there is none).
fn quoted_v4_header_verifies(pkt: &[u8], l4: usize) -> Option<bool> {
    let q = pkt.get(l4 + icmp::HEADER_LEN..)?;
    let hl = usize::from(q.first()? & 0x0f) * 4;
    Some(checksum::verifies(checksum::add(0, q.get(..hl)?)))
}

/// `IpPacket::new_checked`; for an accepted packet: NAT rewrites (address and port, address only, the flow
/// quoted by an ICMP error) keep every checksum that verified and are undone exactly by the inverse
/// rewrite; failed rewrites leave the packet untouched; TTL decrement, MSS clamping (never raises the MSS,
/// never changes the length), full checksum recomputation and the packet-too-big builder behave.
pub fn ip_packet(data: &[u8]) {
    let Ok(p) = IpPacket::new_checked(data) else {
        return;
    };
    let end = p.total_len();
    assert!(end <= data.len());
    assert_eq!(p.as_bytes(), &data[..end]);
    assert!(p.ip_header_len() <= end);
    assert_eq!(p.l4_bytes().len(), end - p.ip_header_len());
    let v6 = p.version() == IpVersion::V6;
    assert_eq!((p.src_addr().is_ipv6(), p.dst_addr().is_ipv6()), (v6, v6));
    let _ = (p.is_fragment(), p.has_ip_options(), p.ttl());
    let csum_ok = p.verify_checksums().is_ok();
    let flow = p.flow();
    if let Some(f) = flow {
        assert_eq!((f.src, f.dst), (p.src_addr(), p.dst_addr()));
        assert_eq!(f.proto, p.l4_protocol());
        assert!(
            f.proto.has_ports() || f.src_port == f.dst_port,
            "echo id differs in flow"
        );
    }
    let (a, b) = nat_addrs(v6);
    let (other_family, _) = nat_addrs(!v6);
    let l4 = p.ip_header_len();

    // Failed rewrites leave the packet untouched.
    let mut buf = data.to_vec();
    {
        let mut q = IpPacket::new_checked(&mut buf[..]).expect("accepted packet re-checks");
        assert!(q.set_src_addr(other_family).is_err());
        assert!(q.set_dst(other_family, 1).is_err());
        assert!(q.set_src_dst(a, 1, other_family, 2).is_err());
        assert!(q.set_icmp_inner_src(other_family, 1).is_err());
        if flow.is_none() {
            assert!(q.set_src(a, 1).is_err(), "port rewrite on a packet without ports");
            assert!(q.set_dst(b, 2).is_err(), "port rewrite on a packet without ports");
        }
        if p.icmp_error_inner_flow().is_err() {
            assert!(q.set_icmp_inner_src(a, 1).is_err());
            assert!(q.set_icmp_inner_dst(b, 1).is_err());
        }
    }
    assert_eq!(buf, data, "a failed rewrite changed the packet");

    // NAT rewrite, then its inverse.
    {
        let mut q = IpPacket::new_checked(&mut buf[..]).expect("accepted packet re-checks");
        match flow {
            Some(f) => {
                q.set_src_dst(a, 1111, b, 2222)
                    .unwrap_or_else(|e| panic!("NAT rewrite of {f} failed: {e}"));
                // ICMP echo: one identifier, and the destination's is written last.
                let sp = if f.proto.has_ports() { 1111 } else { 2222 };
                let want = FlowKey {
                    proto: f.proto,
                    src: a,
                    src_port: sp,
                    dst: b,
                    dst_port: 2222,
                };
                assert_eq!(q.flow(), Some(want));
                if csum_ok {
                    q.verify_checksums()
                        .unwrap_or_else(|e| panic!("NAT rewrite of {f} broke a checksum: {e}"));
                }
                q.set_src_dst(f.src, f.src_port, f.dst, f.dst_port)
                    .expect("inverse NAT rewrite failed");
                assert_eq!(q.flow(), Some(f));
            }
            None => {
                q.set_src_addr(a).expect("address rewrite failed");
                q.set_dst_addr(b).expect("address rewrite failed");
                assert_eq!((q.src_addr(), q.dst_addr()), (a, b));
                if csum_ok {
                    q.verify_checksums()
                        .unwrap_or_else(|e| panic!("address rewrite broke a checksum: {e}"));
                }
                q.set_src_addr(p.src_addr())
                    .expect("inverse address rewrite failed");
                q.set_dst_addr(p.dst_addr())
                    .expect("inverse address rewrite failed");
            }
        }
        if csum_ok {
            q.verify_checksums().expect("inverse rewrite broke a checksum");
        }
    }
    assert_restored(&p, data, &buf, "rewrite and inverse");

    // Source and destination one at a time give the same packet as both at once.
    if flow.is_some() {
        let mut one = data.to_vec();
        let mut both = data.to_vec();
        let mut q = IpPacket::new_checked(&mut one[..]).expect("accepted packet re-checks");
        q.set_src(a, 1111).expect("set_src failed");
        q.set_dst(b, 2222).expect("set_dst failed");
        let mut q = IpPacket::new_checked(&mut both[..]).expect("accepted packet re-checks");
        q.set_src_dst(a, 1111, b, 2222).expect("set_src_dst failed");
        let q = IpPacket::new_checked(&one[..]).expect("rewritten packet re-checks");
        assert_restored(&q, &both, &one, "set_src + set_dst vs set_src_dst");
    }

    // The flow quoted by an ICMP error: rewrite it, then back.
    if let Ok(inner) = p.icmp_error_inner_flow() {
        assert!(p.is_icmp_error());
        assert!(inner.proto.has_ports() || inner.src_port == inner.dst_port);
        let inner_hdr_ok = !v6 && quoted_v4_header_verifies(p.as_bytes(), l4) == Some(true);
        let mut buf = data.to_vec();
        {
            let mut q = IpPacket::new_checked(&mut buf[..]).expect("accepted packet re-checks");
            q.set_icmp_inner_src(a, 3333)
                .expect("quoted source rewrite failed");
            q.set_icmp_inner_dst(b, 4444)
                .expect("quoted destination rewrite failed");
            let sp = if inner.proto.has_ports() { 3333 } else { 4444 };
            let want = FlowKey {
                proto: inner.proto,
                src: a,
                src_port: sp,
                dst: b,
                dst_port: 4444,
            };
            assert_eq!(q.icmp_error_inner_flow(), Ok(want));
            assert_eq!((q.src_addr(), q.dst_addr()), (p.src_addr(), p.dst_addr()));
            if csum_ok {
                q.verify_checksums()
                    .unwrap_or_else(|e| panic!("quoted-flow rewrite broke a checksum: {e}"));
            }
            if inner_hdr_ok {
                assert_eq!(
                    quoted_v4_header_verifies(q.as_bytes(), l4),
                    Some(true),
                    "quoted-flow rewrite broke the quoted IPv4 header checksum"
                );
            }
            q.set_icmp_inner_src(inner.src, inner.src_port)
                .expect("inverse quoted rewrite failed");
            q.set_icmp_inner_dst(inner.dst, inner.dst_port)
                .expect("inverse quoted rewrite failed");
            assert_eq!(q.icmp_error_inner_flow(), Ok(inner));
            if csum_ok {
                q.verify_checksums()
                    .expect("inverse quoted rewrite broke a checksum");
            }
        }
        assert_restored(&p, data, &buf, "quoted-flow rewrite and inverse");
    }

    // TTL: one less, or untouched at zero.
    {
        let mut buf = data.to_vec();
        let mut q = IpPacket::new_checked(&mut buf[..]).expect("accepted packet re-checks");
        match q.decrement_ttl() {
            Some(t) => {
                assert_eq!(t.checked_add(1), Some(p.ttl()));
                assert_eq!(q.ttl(), t);
                if csum_ok {
                    q.verify_checksums().expect("TTL decrement broke a checksum");
                }
            }
            None => {
                assert_eq!(p.ttl(), 0);
                assert_eq!(buf, data, "TTL decrement at zero changed the packet");
            }
        }
    }

    // MSS clamp: lowers the MSS to the limit or changes nothing; never raises it, never resizes.
    {
        const LIMIT: u16 = 1200;
        let tcp_mss = |pkt: &[u8]| {
            p.tcp_flags()?;
            TcpPacket::new_checked(pkt.get(l4..end)?).ok()?.mss()
        };
        let before = tcp_mss(data);
        let mut buf = data.to_vec();
        let mut q = IpPacket::new_checked(&mut buf[..]).expect("accepted packet re-checks");
        let changed = q.clamp_mss(LIMIT);
        assert_eq!(q.total_len(), end);
        if csum_ok {
            q.verify_checksums().expect("MSS clamp broke a checksum");
        }
        let after = tcp_mss(&buf);
        assert_eq!(buf.len(), data.len());
        if changed {
            assert!(before.is_some_and(|m| m > LIMIT), "clamped an MSS of {before:?}");
            assert_eq!(after, Some(LIMIT));
        } else {
            assert!(
                before.is_none_or(|m| m <= LIMIT),
                "MSS {before:?} left above {LIMIT}"
            );
            assert_eq!(buf, data, "MSS clamp reported no change but changed the packet");
        }
    }

    // Full recomputation gives checksums that verify; on a packet that verified, the same ones.
    {
        let mut buf = data.to_vec();
        let mut q = IpPacket::new_checked(&mut buf[..]).expect("accepted packet re-checks");
        q.recompute_checksums();
        match q.verify_checksums() {
            Ok(()) => {}
            Err(WireError::BadLength {
                what: "udp length", ..
            }) => {}
            Err(e) => panic!("recomputed checksums do not verify: {e}"),
        }
        if csum_ok {
            assert_restored(&p, data, &buf, "recomputing valid checksums");
        }
    }

    // Packet too big: a valid ICMP error quoting this packet, or a refusal.
    let mut out = [0u8; 1280];
    if let Ok(n) = emit_packet_too_big(&p, a, 1280, &mut out) {
        assert!(n <= if v6 { 1280 } else { 576 }, "ICMP error of {n} bytes");
        let e = IpPacket::new_checked(&out[..n]).expect("built ICMP error does not parse");
        assert!(e.is_icmp_error());
        assert_eq!((e.src_addr(), e.dst_addr()), (a, p.src_addr()));
        e.verify_checksums().expect("built ICMP error has a bad checksum");
        if let Some(f) = flow {
            assert_eq!(e.icmp_error_inner_flow(), Ok(f), "ICMP error quotes another flow");
        }
        let mut short = [0u8; 1280];
        assert_short_buffer_untouched("packet too big", &mut short[..n - 1], |o| {
            emit_packet_too_big(&p, a, 1280, o)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Regression (oracle bug, found by the fuzzer): an IPv4 *first* fragment (MF set, offset 0) has its
    /// ICMP header located and rewritten, so its non-canonical `0xFFFF` checksum legitimately becomes
    /// `0x0000` after a rewrite and its inverse; the oracle had excluded every fragment from the checksum
    /// fields.
    #[test]
    fn first_fragment_checksum_is_a_checksum_field() {
        ip_packet(&unhex(
            "45000024000060007a01ffffff2a00000000000000ffffffff1dffff4d00650000fd0000ffffffffff43434343000000431f",
        ));
    }

    /// Regression (bug in `packet.rs`, found by this target, fixed in 7c2e9ba): an ICMPv4 echo reply whose
    /// bytes are all zero (id 0, seq 0, no payload) has the checksum `0xFFFF`; rewriting its identifier
    /// away and back left `0x0000`, which does not verify.
    #[test]
    fn all_zero_icmp_echo_reply_keeps_a_valid_checksum() {
        ip_packet(&unhex("4500001c00000000400164eb0afa00010afa00020000ffff00000000"));
    }

    #[test]
    fn control_body_builds_authenticated_messages() {
        let msg = control_body_input(&[3, 0, 0, 0, 0]).unwrap();
        let p = ControlPacket::new_checked(&msg).unwrap();
        assert_eq!(p.kind(), control::kind::DIGEST);
        assert!(p.verify(&test_key(), Binding::Target).is_ok());
        assert_eq!(control_body_selector(control::kind::DIGEST), Some(3));
        assert!(control_body_input(&[]).is_none());
    }

    #[test]
    fn empty_and_tiny_inputs_pass_every_target() {
        for (_, f) in TARGETS {
            for len in 0..64 {
                f(&vec![0u8; len]);
                f(&vec![0xffu8; len]);
            }
        }
    }
}
