/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* Map keys, values and constants shared with the Rust side (driver-xdp/src/maps.rs mirrors every struct
 * byte for byte; a layout test there checks the sizes). All multi-byte fields marked "BE" are in network
 * order, everything else in host order. */
#ifndef PIAS_STRUCTS_H
#define PIAS_STRUCTS_H

#include <linux/types.h>

#define PIAS_MAX_JAPS 16
#define PIAS_SLOTS 251
#define PIAS_SLOTS_PADDED 256
#define PIAS_FLOW_BYTES 37

/* Geneve + PIAS data option (SPEC.md §4.1): 20 authenticated bytes, the 8-byte tag, then the inner packet. */
#define PIAS_DATA_HEADER_LEN 28
#define PIAS_TAG_OFFSET 20
/* Inner bytes the tag covers at most. */
#define PIAS_TAG_INNER 48
#define PIAS_OPTION_CLASS 0xFF50
#define PIAS_OPTION_TYPE_DATA 0x81
#define PIAS_FLAG_TO_TARGET 0x04
#define PIAS_FLAG_TO_RAP 0x08
#define PIAS_INITIAL_HOPS 2
/* Outer IPv4 (20) + UDP (8) + data header (28). */
#define PIAS_ENCAP_V4_LEN 56

/* pias_cfg.flags */
#define CFG_ENABLED 0x01
/* Route hits with bpf_fib_lookup + XDP_TX/bpf_redirect. Without it a hit returns XDP_TX with the
 * received Ethernet addresses (what BPF_PROG_TEST_RUN fixtures compare). */
#define CFG_FIB 0x02
/* TC hook on a veth: a frame going back out of its interface is handed to the peer's receive path
 * (bpf_redirect_peer) instead of being transmitted. */
#define CFG_PEER 0x04

/* A data tag key as the program uses it (SPEC.md §4.1, §8.1): SipHash-1-3's state (v0..v3) after keying,
 * and, per inner family, after the frame's first 8 bytes (the Geneve header, the same in every data frame
 * of that family and VNI) and after its first 16 when they are what an IAP encapsulation writes (option
 * class, type and length, flags 0, hops 2, this key's epoch). User space computes them when the keys are
 * loaded; a frame starts from the latest state whose words it begins with, one SipRound fewer per word,
 * and its tag is the same as from the key. */
struct pias_tag_prefix {
	__u64 w0;    /* the first 8 bytes, as SipHash reads them (little-endian) */
	__u64 w1;    /* the next 8 */
	__u64 s1[4]; /* the state after w0 */
	__u64 s2[4]; /* the state after w0, w1 */
};

struct pias_tag_key {
	__u64 s0[4];                   /* the state after keying */
	struct pias_tag_prefix fam[2]; /* inner IPv4, inner IPv6 */
};

/* The one configuration entry (ARRAY map "pias_cfg", key 0). */
struct pias_cfg {
	__u64 sip_k0;          /* flow hash key (SPEC.md §13.2) */
	__u64 sip_k1;
	__u32 vni;             /* overlay id, host order */
	__u32 self_id;         /* this proxy's id: the data option's ingress */
	__u8 overlay_addr[16]; /* this proxy's overlay address; IPv4 in the first 4 bytes */
	__u16 overlay_port;    /* BE */
	__u8 overlay_family;   /* 4 or 6 */
	__u8 flags;            /* CFG_* */
	__u16 inner_mtu;       /* largest client packet sent on the overlay (SPEC.md §12) */
	__u16 pad;
	__u8 tag_epoch;        /* the epoch byte frames are sent with */
	__u8 prev_epoch;
	__u8 has_prev;
	__u8 pad2[5];
	struct pias_tag_key tag;  /* data tag key of the configured epoch (SPEC.md §8.1): frames are sent under it */
	struct pias_tag_key prev; /* the previous epoch's key, accepted too (if has_prev) */
};

/* A group: its transport address as SPEC.md §3 encodes it (20 bytes). */
struct pias_ta {
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u16 port;  /* BE */
	__u8 addr[16];
};

/* pias_jap.flags */
#define JAP_LOCAL 0x01 /* this proxy: the slow path delivers locally */

struct pias_jap {
	__u8 addr[16]; /* overlay address */
	__u16 port;    /* BE */
	__u8 family;   /* 4 or 6; 0 = unresolved (slow path) */
	__u8 flags;    /* JAP_* */
};

/* An IAP cache entry (HASH map "pias_groups", key pias_ta). */
struct pias_group {
	__u64 deadline_ns;  /* CLOCK_MONOTONIC ns (bpf_ktime_get_coarse_ns) after which the slow path takes over (expiry); 0 = none */
	__u64 last_used_ns; /* written by XDP on each hit */
	__u64 packets;      /* hits */
	__u8 n_japs;
	__u8 pad[7];
	struct pias_jap japs[PIAS_MAX_JAPS];
	__u8 slots[PIAS_SLOTS_PADDED]; /* slots[h % 251] = index into japs */
};

/* A NAT key: the 5-tuple of the packet as received (HASH maps "pias_nat_fwd" and "pias_nat_rev"). */
struct pias_flow {
	__u8 proto;
	__u8 family;
	__u16 sport; /* BE */
	__u16 dport; /* BE */
	__u16 pad;
	__u8 src[16];
	__u8 dst[16];
};

/* pias_nat.flags */
#define NAT_TCP_FAST 0x01 /* a TCP binding the core saw established: data segments may take the fast path */
#define NAT_TUNNEL 0x02   /* tunnel-mode target (SPEC.md §11.6): the packet goes unchanged in a TO_TARGET data
			   * frame to dst:dport (IPv4, port 6081); src/sport unused */

/* A NAT rewrite: the packet's new source and destination. */
struct pias_nat {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; /* BE */
	__u16 dport; /* BE */
	__u8 flags;  /* NAT_* */
	__u8 pad[3];
	__u64 last_used_ns;
	__u64 packets;
	__u64 bytes;
};

/* A member's overlay socket address (HASH map "pias_members", value: proxy id). */
struct pias_sockaddr {
	__u8 addr[16];
	__u16 port; /* BE */
	__u8 family;
	__u8 pad;
};

/* A source filter prefix (LPM_TRIE "pias_filter", SPEC.md §8.5): the family byte, then the address (IPv4 in
 * the first 4 bytes); prefixlen counts the family's 8 bits too, so the families never match each other. */
struct pias_filter_key {
	__u32 prefixlen;
	__u8 family; /* 4 or 6 */
	__u8 addr[16];
} __attribute__((packed));

/* pias_filter values: why a source is refused (the core's drop reason; the program only passes). */
#define FILTER_OVERLAY 1
#define FILTER_MARTIAN 2

/* Per-CPU counters (PERCPU_ARRAY "pias_counters"), index = enum. Keep in sync with COUNTER_NAMES. */
enum pias_counter {
	C_IAP_HIT,
	C_JAP_FWD_HIT,
	C_JAP_REV_HIT,
	C_PASS_NO_CFG,
	C_PASS_NOT_IP,
	C_PASS_TRUNCATED,
	C_PASS_IP_OPTIONS,
	C_PASS_FRAGMENT,
	C_PASS_L4_OTHER,
	C_PASS_GROUP_MISS,
	C_PASS_GROUP_EXPIRED,
	C_PASS_LOCAL_JAP,
	C_PASS_TCP_CONTROL,
	C_PASS_TOO_BIG,
	C_PASS_UDP_NO_CSUM,
	C_PASS_JAP_FAMILY,
	C_PASS_FRAME_OTHER,
	C_PASS_STRANGER,
	C_PASS_NAT_MISS,
	C_PASS_TCP_NOT_FAST,
	C_PASS_FIB,
	C_PASS_ADJUST,
	C_PASS_PARTIAL_CSUM,
	C_PASS_TTL,
	C_JAP_TUNNEL_HIT,
	C_PASS_GSO,
	C_IAP_LOCAL_HIT,
	C_PASS_FILTERED,
	C_DROP_BAD_TAG,
	C_MAX,
};

#endif
