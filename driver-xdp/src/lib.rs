//! The PIAS XDP fast path (issue 7): a kernel-resident cache of the core's decisions.
//!
//! The data plane is `bpf/pias_xdp.c`, compiled by `build.rs` with Debian's clang; this crate loads it with
//! aya ([`XdpProgram`]), and [`MapSync`] mirrors the core's events (IAP cache entries, NAT bindings,
//! members) into its maps. The program serves three hits and passes everything else to the user-space core
//! unchanged:
//!
//! - **IAP hit**: client TCP/UDP packet (not SYN) to a group with a resolved entry → the overlay data frame
//!   `DataHeader::encapsulate` makes (flags 0, hops 2), in outer IPv4/UDP from this proxy's overlay socket
//!   address to the JAP `table[flow_hash mod 251]` names;
//! - **JAP forward hit**: a data frame (not TO_RAP/TO_TARGET) from a member, inner flow with a NAT binding →
//!   decapsulated and rewritten as `IpPacket::set_src_dst` does;
//! - **JAP reverse hit**: a target's reply matching a binding → rewritten to come from the group.
//!
//! Map layouts: see [`maps`] (mirrors `bpf/structs.h`).

pub mod fastpath;
pub mod loader;
pub mod maps;
pub mod sync;

pub use fastpath::XdpFastPath;
pub use loader::{Maps, RunResult, Sizes, XdpError, XdpProgram, verdict};
pub use sync::{Activity, MapSync, SyncCounters, ktime_now};
