//! The PIAS XDP fast path: a kernel-resident cache of the core's decisions (Katran's lesson: the
//! data plane only applies what user space decided).
//!
//! The data plane is `bpf/pias_xdp.c` (headers by concern: `parse.h`, `csum.h`, `siphash.h`, `rewrite.h`,
//! `encap.h`, `maps.h`, `structs.h`, `hook.h`), compiled by `build.rs` with Debian's clang (`-O2 -g -target
//! bpf`) twice: for XDP and for TC ingress ([`Hook`]: the same decisions and bytes, proven by running every
//! kernel test and the differential property test on both);
//! this crate loads it with aya ([`XdpProgram`]), [`MapSync`] mirrors the core's events into its maps, and
//! [`XdpFastPath`] is what a driver holds. Three hits; everything else is `XDP_PASS`, unchanged, counted by
//! reason, to the user-space driver's slow path:
//!
//! - **IAP hit**: a client's TCP/UDP packet (not a SYN: the core clamps the MSS) to a group with a fresh
//!   resolved entry → `SipHash-1-3(flow key, 37-byte flow layout)` → `slots[h mod 251]` → JAP → the overlay
//!   data frame the core makes (flags 0, hops 2, ingress = this proxy, tagged with SipHash-1-3 under the data
//!   key of the configured epoch, SPEC.md §4.1) in outer IPv4/UDP from this proxy's overlay socket address
//!   to the JAP's. The outer UDP checksum is derived from the inner
//!   packet's checksum (as Linux's local checksum offload does), never by reading the payload.
//! - **Data tag check**: every data frame of the exact layout and our VNI, except a tunnel-mode target's
//!   TO_TARGET reply, has its tag checked first, under the current or the previous epoch's key; a wrong tag
//!   is dropped here (`xdp_drop_bad_tag`), so forgeries never reach the slow path. The proxy's own address
//!   is not accepted as a member's.
//! - **JAP forward hit**: a tagged data frame (exact layout, our VNI, not TO_RAP/TO_TARGET) from a member's
//!   overlay socket, for a flow with a NAT binding → decapsulated and rewritten as `IpPacket::set_src_dst` does
//!   (same RFC 1624 arithmetic, so byte-identical, zero UDP checksums included).
//! - **JAP reverse hit**: a target's reply matching a binding → rewritten to come from the group.
//! - **JAP tunnel hit**: a data frame for a flow bound to a tunnel-mode target (IPv4) → the frame's headers
//!   rewritten in place to the TO_TARGET frame the core sends (hops 0, ingress = this proxy, tagged anew),
//!   inner untouched.
//!
//! # Maps (`bpf/structs.h`, mirrored in [`maps`])
//!
//! | map | type | key | value |
//! |---|---|---|---|
//! | `pias_cfg` | array (1 entry) | 0 | flow key, VNI, own id, overlay address, inner MTU, flags (enabled, FIB), data tag keys of the current and previous epoch — 88 B |
//! | `pias_groups` | hash (65 536) | group TA, SPEC §3 encoding — 20 B | deadline, last use, hits, JAPs (≤ 16 × overlay address), 251 slots — 608 B |
//! | `pias_nat_fwd` / `pias_nat_rev` | hash | 5-tuple as received — 40 B | new src/dst address and port, flags (TCP fast), last use, packets, bytes — 64 B |
//! | `pias_members` | hash (4096) | member overlay socket address — 20 B | proxy id |
//! | `pias_filter` | LPM trie (1024) | family byte + address, prefix length + 8 — 21 B | 1 overlay space, 2 martian (SPEC §8.5) |
//! | `pias_counters` | per-CPU array | [`maps::COUNTER_NAMES`] | u64 |
//!
//! Hash maps, not LRU: the core decides what is cached; an insert into a full map is counted
//! (`xdp_sync_map_full`) and the entry stays on the slow path.
//!
//! # What stays with the core
//! Client packets whose source the core refuses (in `pias_filter`: the overlay's space, martian ranges;
//! counted `xdp_pass_filtered`, then dropped and counted by the core), first packets (misses), TCP SYN/FIN/RST (MSS clamp, NAT state) and TCP bindings until the core saw them
//! established, ICMP (echo and errors), fragments, IP options, IPv6 extension headers, expired entries (the
//! core re-resolves), JAPs that are this proxy, tunnel-mode targets' replies, IPv6 tunnel targets, UDP flows
//! of `replicate` groups (the core copies them), overlay over IPv6, oversize packets, partial (offloaded)
//! checksums, TTL ≤ 1 when routing. Which bindings are NAT, tunnel or replicated is the core's decision,
//! carried by its events (`pias_state::proxy::Delivery`).
//!
//! # Deployment notes
//! - Hook: `xdp` for NICs with an XDP driver. On a veth, "native" XDP copies every socket buffer into an
//!   XDP frame and the peer rebuilds one (the lab measured 1.3 µs per proxy hop, against 0.5 µs for the
//!   kernel's own forwarding): use `tc` there, which works on the kernel's socket buffer and hands a frame
//!   going back out of its veth straight to the peer (`bpf_redirect_peer`, [`maps::CFG_PEER`]).
//! - Routing uses `bpf_fib_lookup`, which requires IP forwarding on the ingress device (a proxy host has it
//!   for its TUN) and a resolved neighbour; otherwise the packet passes (counted `xdp_pass_fib`).
//! - `XDP_TX`/redirect on a veth needs NAPI on the peer: an XDP program (any) attached to the peer (the lab
//!   attaches this object, unconfigured, which passes everything). GRO on the peer also gives it NAPI, but
//!   in the lab (kernel 6.18) the proxy's veth then stalled under load: its transmit queue stayed stopped
//!   and every local send failed with ENOBUFS (OSPF included) — use an XDP program.
//! - Locally generated packets crossing a veth carry only a partial checksum; the program passes them
//!   (`xdp_pass_partial_checksum`). Traffic generators in a lab should send from devices with `tx` checksum
//!   offload off (`ethtool -K DEV tx off`) to exercise the fast path.
//! - A routed hit takes one hop like the kernel's forwarding would (TTL − 1).

include!("build_packages.rs");

pub mod fastpath;
pub mod loader;
pub mod maps;
pub mod sync;

pub use aya::programs::XdpMode;
pub use fastpath::XdpFastPath;
pub use loader::{Hook, Maps, RunResult, Sizes, XdpError, XdpProgram, tc_act, verdict};
pub use sync::{Activity, MapSync, SyncCounters, ktime_now};
