//! PIAS wire formats.
//!
//! This crate knows bytes and nothing else: it holds no state, reads no clock and opens no socket. For each
//! structure on the wire it offers a zero-copy *view* over a byte slice (`Foo<T: AsRef<[u8]>>`, checked once
//! at construction so that no accessor can panic afterwards) and, where a structure is built as well as read,
//! an owned *representation* (`FooRepr`) with `parse`, `buffer_len` and `emit`.
//!
//! `SPEC.md` at the top of the repository is the normative text; every byte parsed here is described there.
//!
//! Layers:
//! - [`addr`]: proxy ids, transport addresses (groups) and flow keys;
//! - IP headers for the data path: [`checksum`], [`ipv4`], [`ipv6`], [`udp`], [`tcp`], [`icmp`], and
//!   [`packet`], which ties them into a parsed IP packet that NAT rewrites in place;
//! - the overlay: [`geneve`] (RFC 8926 frame), [`tunnel`] (PIAS data frames), [`control`] (authenticated
//!   control messages) and [`auth`] (MAC and key derivation).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod addr;
pub mod auth;
pub mod build;
pub mod checksum;
pub mod control;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod geneve;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod packet;
pub mod pcap;
pub mod tcp;
pub mod tunnel;
pub mod udp;

pub use addr::{FlowKey, IpProtocol, ProxyId, TransportAddr};
pub use error::{Result, WireError};
