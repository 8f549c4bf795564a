/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* The two hooks the one program is built for (build.rs compiles pias_xdp.c twice):
 *
 * - XDP (default): `struct xdp_md`, XDP_PASS/XDP_TX/bpf_redirect, bpf_xdp_adjust_head/tail. The hook for
 *   NICs with native XDP: the frame is seen before any socket buffer exists.
 * - TC ingress (-DPIAS_HOOK_TC): `struct __sk_buff`, TC_ACT_OK/bpf_redirect(_peer), bpf_skb_adjust_room and
 *   bpf_skb_change_tail. The hook for virtual interfaces (veth): there, "native" XDP first copies every
 *   socket buffer into an XDP frame and the receiving side rebuilds one (measured in the lab: 1.3 µs per
 *   hop against 0.5 µs for the kernel's own forwarding), while at TC the program works on the socket buffer
 *   the kernel already has, and a veth hop back to the peer is one `bpf_redirect_peer`.
 *
 * Everything the program decides is the same on both hooks; only these primitives differ. */
#ifndef PIAS_HOOK_H
#define PIAS_HOOK_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "structs.h"

#ifdef PIAS_HOOK_TC
#include <linux/pkt_cls.h>

typedef struct __sk_buff pias_ctx;
#define ACT_PASS TC_ACT_OK
#define ACT_DROP TC_ACT_SHOT
#define ACT_ABORTED TC_ACT_SHOT
#define PIAS_SECTION "classifier"
#define PIAS_PROGRAM pias_tc

/* Not in older UAPI headers (Linux 6.3+): the L3 protocol after a decapsulation. */
#define PIAS_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define PIAS_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

/* The frame's length, Ethernet header included (the socket buffer may hold part of it outside its linear
 * area: see hook_prepare). */
static __always_inline __u32 frame_len(pias_ctx *ctx)
{
	return ctx->len;
}

/* Makes the whole frame directly readable and writable. Segmentation-offload super-packets stay with the
 * kernel (they are segmented before the slow path sees them). Returns 0 or a C_PASS_* reason. */
static __always_inline __u32 hook_prepare(pias_ctx *ctx)
{
	if (ctx->gso_size)
		return C_PASS_GSO;
	if (ctx->data_end - ctx->data < ctx->len) {
		if (ctx->len > 0xffff || bpf_skb_pull_data(ctx, ctx->len))
			return C_PASS_TRUNCATED;
	}
	return 0;
}

/* Shortens the frame to `want` bytes. */
static __always_inline int hook_trim(pias_ctx *ctx, __u32 want)
{
	if (ctx->len > want)
		return bpf_skb_change_tail(ctx, want, 0);
	return 0;
}

/* Inserts `n` bytes after the Ethernet header (the caller rewrites both) for the outer headers of an
 * encapsulation, always IPv4 here, in front of an IP packet of `family`. The socket buffer's protocol must
 * become IPv4 (a peer redirect skips eth_type_trans): for an IPv6 packet the room is made 20 bytes larger
 * and bpf_skb_change_proto takes them back while switching the protocol. (The ENCAP_L3 flags would switch
 * it too, but they mark the buffer encapsulated, and a marked buffer refuses a later encapsulation.) */
static __always_inline int hook_push(pias_ctx *ctx, __u32 n, __u8 family)
{
	if (family == 4)
		return bpf_skb_adjust_room(ctx, n, BPF_ADJ_ROOM_MAC, 0);
	if (bpf_skb_adjust_room(ctx, n + 20, BPF_ADJ_ROOM_MAC, 0))
		return -1;
	return bpf_skb_change_proto(ctx, bpf_htons(ETH_P_IP), 0);
}

/* Removes the `n` bytes after the Ethernet header (outer headers) leaving an IP packet of `family`. */
static __always_inline int hook_pop(pias_ctx *ctx, __u32 n, __u8 family)
{
	return bpf_skb_adjust_room(ctx, -(int)n, BPF_ADJ_ROOM_MAC,
				   family == 4 ? PIAS_ADJ_ROOM_DECAP_L3_IPV4 : PIAS_ADJ_ROOM_DECAP_L3_IPV6);
}

/* The headers were rewritten with their checksums: whatever the socket buffer believed about them is void. */
static __always_inline void hook_rewritten(pias_ctx *ctx)
{
	bpf_csum_level(ctx, BPF_CSUM_LEVEL_RESET);
}

/* Out of the interface the frame came in on. On a veth, straight into the peer's receive path (the
 * kernel's own transmit would only queue it there). */
static __always_inline int hook_send_back(pias_ctx *ctx, const struct pias_cfg *cfg)
{
	if (cfg->flags & CFG_PEER)
		return bpf_redirect_peer(ctx->ifindex, 0);
	return bpf_redirect(ctx->ifindex, 0);
}

#else /* XDP */

typedef struct xdp_md pias_ctx;
#define ACT_PASS XDP_PASS
#define ACT_DROP XDP_DROP
#define ACT_ABORTED XDP_ABORTED
#define PIAS_SECTION "xdp"
#define PIAS_PROGRAM pias_xdp

static __always_inline __u32 frame_len(pias_ctx *ctx)
{
	return ctx->data_end - ctx->data;
}

static __always_inline __u32 hook_prepare(pias_ctx *ctx)
{
	return 0;
}

/* Drops bytes after the IP packet (Ethernet padding) so that what we forward is the packet itself. */
static __always_inline int hook_trim(pias_ctx *ctx, __u32 want)
{
	__u32 have = ctx->data_end - ctx->data;
	if (have > want)
		return bpf_xdp_adjust_tail(ctx, -(int)(have - want));
	return 0;
}

/* Grows the frame at its start by `n` bytes; the caller writes a new Ethernet header and the outer
 * headers over them and the old Ethernet header (the same layout as hook_push on TC). */
static __always_inline int hook_push(pias_ctx *ctx, __u32 n, __u8 family)
{
	return bpf_xdp_adjust_head(ctx, -(int)n);
}

/* Drops the frame's first `n` bytes; the caller writes a new Ethernet header over the end of the outer
 * headers. */
static __always_inline int hook_pop(pias_ctx *ctx, __u32 n, __u8 family)
{
	return bpf_xdp_adjust_head(ctx, n);
}

static __always_inline void hook_rewritten(pias_ctx *ctx)
{
}

static __always_inline int hook_send_back(pias_ctx *ctx, const struct pias_cfg *cfg)
{
	return XDP_TX;
}

#endif

/* Out of `ifindex` (0: the interface the frame came in on). */
static __always_inline int hook_send(pias_ctx *ctx, const struct pias_cfg *cfg, __u32 ifindex)
{
	if (ifindex == 0 || ifindex == ctx->ingress_ifindex)
		return hook_send_back(ctx, cfg);
	return bpf_redirect(ifindex, 0);
}

#endif
