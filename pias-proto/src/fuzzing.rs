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

use crate::addr::{ProxyId, TransportAddr};
use crate::auth::{MacKey, TAG_LEN};
use crate::control::{self, ControlHeader, ControlPacket, MAX_BODY_LEN, MAX_MESSAGE_LEN, Message};
use crate::error::WireError;
use crate::geneve::{
    ETHERTYPE_IPV6, ETHERTYPE_PIAS_CONTROL, GenevePacket, GeneveRepr, HEADER_LEN as GENEVE_HEADER_LEN,
    MAX_OPTIONS_LEN,
};
use crate::tunnel::{DATA_HEADER_LEN, DataFrame, Frame, flags};

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
];

/// The fixed key every re-emitted control message is tagged with (and the corpus is generated with).
pub fn test_key() -> MacKey {
    MacKey::from_bytes([0x5a; 32])
}

/// Sender of the frames [`control_body`] builds.
pub const BODY_SENDER: ProxyId = ProxyId(0x0102_0304);
/// Sequence number of the frames [`control_body`] builds.
pub const BODY_SEQ: u64 = 0x1122_3344_5566_7788;

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
                let _ = p.verify(&test_key());
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

            // The relay's in-place rewrite touches flags and hops only.
            let mut copy = data.to_vec();
            let mut d3 = DataFrame::new_checked(&mut copy[..]).expect("checked frame re-checks");
            let (fl, hops) = (!h.flags, h.hops.wrapping_sub(1));
            d3.set_flags_hops(fl, hops);
            assert_eq!(d3.header().flags, fl & flags::KNOWN);
            assert_eq!(d3.header().hops, hops);
            assert_eq!((d3.vni(), d3.ingress()), (h.vni, h.ingress));
            assert_eq!(d3.inner(), inner);
        }
    }
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
    let _ = p.verify(&test_key());
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
            seq: BODY_SEQ
        }
    );
    p.verify(&test_key())
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

/// The whole control message [`control_body`] builds from its input: header (version 1, the chosen type,
/// [`BODY_SENDER`], [`BODY_SEQ`], body length), body (at most 65535 bytes of the input), and the tag under
/// [`test_key`]. `None` for empty input.
pub fn control_body_input(data: &[u8]) -> Option<Vec<u8>> {
    let (&sel, body) = data.split_first()?;
    let kind = CONTROL_KINDS[usize::from(sel) % CONTROL_KINDS.len()];
    let body = &body[..body.len().min(usize::from(u16::MAX))];
    let mut msg = Vec::with_capacity(control::HEADER_LEN + body.len() + TAG_LEN);
    // Layout per `control` module docs: version, type, flags, reserved, sender, seq, body length, reserved.
    msg.extend_from_slice(&[control::VERSION, kind, 0, 0]);
    msg.extend_from_slice(&BODY_SENDER.0.to_be_bytes());
    msg.extend_from_slice(&BODY_SEQ.to_be_bytes());
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(body);
    let tag = test_key().tag(&msg);
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
        let r = m.emit(hdr, &key, &mut out);
        assert!(
            matches!(r, Err(WireError::BadLength { .. })),
            "emitting an oversized body gave {r:?}"
        );
        return;
    }
    let n = m.buffer_len();
    assert_short_buffer_untouched("control emit", &mut out[..n - 1], |b| m.emit(hdr, &key, b));
    let n2 = m
        .emit(hdr, &key, &mut out)
        .unwrap_or_else(|e| panic!("re-emitting {m:?} failed: {e}"));
    assert_eq!(n2, n, "emit length differs from buffer_len");
    let out = &out[..n];

    let p =
        ControlPacket::new_checked(out).unwrap_or_else(|e| panic!("re-emitted {m:?} does not check: {e}"));
    assert_eq!(p.header(), hdr);
    assert_eq!(p.kind(), m.kind());
    assert_eq!(p.body().len(), m.body_len());
    p.verify(&key).expect("re-emitted message does not verify");
    let m2 = p
        .message()
        .unwrap_or_else(|e| panic!("re-emitted {m:?} does not decode: {e}"));
    assert_same_message(m, &m2);

    // Emission is canonical: emitting the re-parsed message gives the same bytes.
    let mut again = [0u8; MAX_MESSAGE_LEN];
    let n3 = m2.emit(hdr, &key, &mut again).expect("second emission failed");
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
