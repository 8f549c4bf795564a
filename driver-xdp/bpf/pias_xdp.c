/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* PIAS XDP fast path: a kernel-resident cache of the core's decisions (Katran's lesson).
 *
 * - IAP hit: a client's TCP/UDP packet to a group whose entry is in pias_groups is encapsulated in the
 *   overlay frame pias-proto emits (Geneve + PIAS data option, flags 0, hops 2, tagged under the data key,
 *   SPEC.md §4.1) towards the JAP the core's slot table names for the flow (SipHash-1-3 flow hash, SPEC.md
 *   §13.2/§13.3).
 * - Data frames: the tag is checked first (after layout and VNI); a wrong one is dropped here, counted.
 * - JAP hit: a tagged data frame from a member, for a flow with a forward NAT entry, is decapsulated and
 *   rewritten (addresses, ports, incremental checksums as pias-proto does); a target's reply matching a
 *   reverse entry is rewritten to come from the group and go to the client.
 * - Everything else is XDP_PASS, unchanged, to the user-space core (counted by reason) — including a client
 *   packet whose source is in pias_filter (SPEC.md §8.5), which the core then drops and counts.
 *
 * No decision is made here that the core did not make: the maps are the core's state, mirrored by MapSync. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "structs.h"
#include "maps.h"
#include "siphash.h"
#include "csum.h"
#include "parse.h"
#include "rewrite.h"
#include "encap.h"
#include "hook.h"

#define AF_INET 2
#define AF_INET6 10

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return ACT_PASS;
}

/* Next hop for an IPv4/IPv6 destination. Returns the egress ifindex with MACs in `mac` (dst then src), or
 * 0 when the kernel has no complete route/neighbour (the slow path then handles the packet). */
static __always_inline __u32 fib_next_hop(pias_ctx *ctx, __u8 family, const __u8 *src, const __u8 *dst,
					  __u8 proto, __u16 len, __u8 mac[12])
{
	struct bpf_fib_lookup p;
	__builtin_memset(&p, 0, sizeof(p));
	p.ifindex = ctx->ingress_ifindex;
	p.l4_protocol = proto;
	p.tot_len = len;
	if (family == 4) {
		p.family = AF_INET;
		__builtin_memcpy(&p.ipv4_src, src, 4);
		__builtin_memcpy(&p.ipv4_dst, dst, 4);
	} else {
		p.family = AF_INET6;
		__builtin_memcpy(p.ipv6_src, src, 16);
		__builtin_memcpy(p.ipv6_dst, dst, 16);
	}
	/* The kernel answers FWD_DISABLED unless forwarding is on for the ingress device (a proxy host forwards
	 * anyway: its slow path routes through a TUN). OUTPUT: the frame leaves as this host's own (an overlay datagram from our socket address, or a NAT'd
	 * packet from our pool), so the route is the host's output route and the ingress device's forwarding
	 * setting does not apply. */
	if (bpf_fib_lookup(ctx, &p, sizeof(p), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return 0;
	__builtin_memcpy(mac, p.dmac, 6);
	__builtin_memcpy(mac + 6, p.smac, 6);
	return p.ifindex;
}

/* Writes the Ethernet header at the (new) start of the frame. */
static __always_inline int write_eth(pias_ctx *ctx, const __u8 mac[12], __u16 proto)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(eth->h_dest, mac, 6);
	__builtin_memcpy(eth->h_source, mac + 6, 6);
	eth->h_proto = proto;
	return 0;
}

/* Activity for the core (NatTable::touch). Plain increments, not atomics: a flow's packets arrive on one
 * CPU (RSS), and a lost increment under a race only under-reports activity that is reported anyway. */
static __always_inline void touch_nat(struct pias_nat *n, __u32 len)
{
	n->last_used_ns = bpf_ktime_get_coarse_ns();
	n->packets += 1;
	n->bytes += len;
}

/* TCP segments that change connection state (SYN: MSS clamp, FIN/RST: NAT state) go to the core. */
static __always_inline int tcp_control(const struct pkt_info *pi)
{
	return pi->flow.proto == IPPROTO_TCP && (pi->tcp_flags & (TCPF_SYN | TCPF_FIN | TCPF_RST));
}

/* ---- JAP: data frame → tunnel-mode target (SPEC.md §11.6) ----
 * The client's packet, unchanged, in a data frame with TO_TARGET, hops 0, ingress = this proxy, from our
 * overlay socket to the target's address at the overlay port: the received frame's headers are rewritten in
 * place (same sizes), the inner packet is not touched (its TTL neither: the slow path delivers it from a
 * socket, not by forwarding). */
static __always_inline int jap_tunnel(pias_ctx *ctx, const struct pias_cfg *cfg, struct pias_nat *nat,
				      const struct pkt_info *pi, __u8 mac[12])
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 ifindex = 0;
	__u64 sum;

	if (cfg->flags & CFG_FIB) {
		ifindex = fib_next_hop(ctx, 4, cfg->overlay_addr, nat->dst, IPPROTO_UDP,
				       pi->ip_len + PIAS_ENCAP_V4_LEN, mac);
		if (!ifindex)
			return pass(C_PASS_FIB);
	}
	if (hook_trim(ctx, ETH_HLEN + PIAS_ENCAP_V4_LEN + pi->ip_len))
		return pass(C_PASS_ADJUST);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	sum = inner_header_sum(data, end, ETH_HLEN + PIAS_ENCAP_V4_LEN, pi->family) +
	      (__u16)~csum_fold64(inner_pseudo_sum(pi));
	if (write_eth(ctx, mac, bpf_htons(ETH_P_IP)))
		return ACT_ABORTED;
	if (write_encap_v4(ctx, data, end, cfg, nat->dst, nat->dport, pi->family, pi->ip_len, sum, PIAS_FLAG_TO_TARGET, 0))
		return ACT_ABORTED;
	touch_nat(nat, pi->ip_len);
	count(C_JAP_TUNNEL_HIT);
	hook_rewritten(ctx);
	return hook_send(ctx, cfg, ifindex);
}

/* ---- JAP: data frame → target ---- */
static __always_inline int jap_forward(pias_ctx *ctx, const struct pias_cfg *cfg, struct ethhdr *eth,
				       struct iphdr *oip, struct udphdr *ouh)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 *g = (void *)(ouh + 1);
	struct pias_sockaddr from;
	struct pkt_info pi;
	struct pias_nat *nat;
	__u8 mac[12];
	__u32 ifindex = 0, r, vni;
	__u16 inner_proto;

	if ((void *)(g + PIAS_DATA_HEADER_LEN) > end)
		return pass(C_PASS_TRUNCATED);
	/* Exactly our layout: version 0, 5 option words, O clear, one PIAS data option of 4 words, our VNI.
	 * Anything else is the core's. A tunnel-mode target's reply (TO_TARGET) carries no tag (SPEC.md §11.6):
	 * the core judges it. */
	vni = ((__u32)g[4] << 16) | ((__u32)g[5] << 8) | g[6];
	if (g[0] != 0x05 || (g[1] & 0x80) || vni != cfg->vni || g[8] != 0xff || g[9] != 0x50 ||
	    g[10] != PIAS_OPTION_TYPE_DATA || g[11] != 4 || (g[12] & PIAS_FLAG_TO_TARGET))
		return pass(C_PASS_FRAME_OTHER);
	inner_proto = *(__u16 *)(g + 2);
	if (inner_proto != bpf_htons(ETH_P_IP) && inner_proto != bpf_htons(ETH_P_IPV6))
		return pass(C_PASS_FRAME_OTHER);

	r = parse_ip(data, end, ETH_HLEN + PIAS_ENCAP_V4_LEN, inner_proto, &pi);
	if (r != PARSE_OK)
		return pass(r);
	/* The inner packet fills the datagram exactly. */
	if (pi.ip_len + PIAS_ENCAP_V4_LEN != bpf_ntohs(oip->tot_len))
		return pass(C_PASS_FRAME_OTHER);

	/* The tag before anything else (SPEC.md §4.1): under the key of the frame's epoch, current or previous.
	 * A forged or altered frame never reaches the slow path. */
	{
		const struct pias_tag_key *k = 0;
		__u8 epoch = g[14];
		__u64 tag, want;
		int bad;

		if (epoch == cfg->tag_epoch)
			k = &cfg->tag;
		else if (cfg->has_prev && epoch == cfg->prev_epoch)
			k = &cfg->prev;
		bad = !k || frame_tag(g, end, pi.ip_len, k, &want);
		__builtin_memcpy(&tag, g + PIAS_TAG_OFFSET, 8);
		if (bad || bpf_be64_to_cpu(tag) != want) {
			count(C_DROP_BAD_TAG);
			return ACT_DROP;
		}
	}
	/* Then a member's overlay address only (SPEC.md §4.1): never our own, we send ourselves nothing. */
	__builtin_memset(&from, 0, sizeof(from));
	__builtin_memcpy(from.addr, &oip->saddr, 4);
	from.port = ouh->source;
	from.family = 4;
	if (!bpf_map_lookup_elem(&pias_members, &from))
		return pass(C_PASS_STRANGER);
	/* Frames addressed to a RAP are the core's. */
	if (g[12] & PIAS_FLAG_TO_RAP)
		return pass(C_PASS_FRAME_OTHER);
	if (tcp_control(&pi))
		return pass(C_PASS_TCP_CONTROL);
	if (csum_partial_suspect(&pi))
		return pass(C_PASS_PARTIAL_CSUM);
	nat = bpf_map_lookup_elem(&pias_nat_fwd, &pi.flow);
	if (!nat)
		return pass(C_PASS_NAT_MISS);
	if (pi.flow.proto == IPPROTO_TCP && !(nat->flags & NAT_TCP_FAST))
		return pass(C_PASS_TCP_NOT_FAST);

	__builtin_memcpy(mac, eth->h_dest, 6);
	__builtin_memcpy(mac + 6, eth->h_source, 6);
	if (nat->flags & NAT_TUNNEL)
		return jap_tunnel(ctx, cfg, nat, &pi, mac);
	if (cfg->flags & CFG_FIB) {
		if (pi.ttl <= 1)
			return pass(C_PASS_TTL); /* the kernel answers with ICMP time exceeded */
		ifindex = fib_next_hop(ctx, pi.family, nat->src, nat->dst, pi.flow.proto, pi.ip_len, mac);
		if (!ifindex)
			return pass(C_PASS_FIB);
	}
	/* Commit: drop Ethernet padding, strip the outer headers, rewrite, send. */
	if (hook_trim(ctx, ETH_HLEN + PIAS_ENCAP_V4_LEN + pi.ip_len))
		return pass(C_PASS_ADJUST);
	if (hook_pop(ctx, PIAS_ENCAP_V4_LEN, pi.family))
		return pass(C_PASS_ADJUST);
	if (write_eth(ctx, mac, inner_proto))
		return ACT_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (nat_rewrite(data, end, ETH_HLEN, &pi, nat))
		return ACT_ABORTED;
	if (ifindex)
		ttl_decrement(data, end, ETH_HLEN, pi.family);
	touch_nat(nat, pi.ip_len);
	count(C_JAP_FWD_HIT);
	hook_rewritten(ctx);
	return hook_send(ctx, cfg, ifindex);
}

/* ---- NAT of a plain IP packet, in place: a target's reply, or a client's packet whose JAP is us ----
 * Routes to the binding's new destination, rewrites addresses, ports and checksums as pias-proto does, and
 * sends. `grp`, if any, is the group entry whose use this hit is (IAP activity), `hit` the counter. */
static __always_inline int nat_in_place(pias_ctx *ctx, const struct pias_cfg *cfg, struct pias_nat *nat,
					const struct pkt_info *pi, struct pias_group *grp, __u64 now, __u32 hit)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[12];
	__u32 ifindex = 0;
	__u16 eth_proto;

	if ((void *)(eth + 1) > end)
		return pass(C_PASS_TRUNCATED);
	eth_proto = eth->h_proto;
	__builtin_memcpy(mac, eth->h_dest, 6);
	__builtin_memcpy(mac + 6, eth->h_source, 6);
	if (cfg->flags & CFG_FIB) {
		if (pi->ttl <= 1)
			return pass(C_PASS_TTL); /* the kernel answers with ICMP time exceeded */
		ifindex = fib_next_hop(ctx, pi->family, nat->src, nat->dst, pi->flow.proto, pi->ip_len, mac);
		if (!ifindex)
			return pass(C_PASS_FIB);
	}
	if (hook_trim(ctx, ETH_HLEN + pi->ip_len))
		return pass(C_PASS_ADJUST);
	if (ifindex && write_eth(ctx, mac, eth_proto))
		return ACT_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (nat_rewrite(data, end, ETH_HLEN, pi, nat))
		return ACT_ABORTED;
	if (ifindex)
		ttl_decrement(data, end, ETH_HLEN, pi->family);
	touch_nat(nat, pi->ip_len);
	if (grp) {
		grp->last_used_ns = now;
		grp->packets += 1;
	}
	count(hit);
	hook_rewritten(ctx);
	return hook_send(ctx, cfg, ifindex);
}

/* ---- JAP: target's reply → client ---- */
static __always_inline int jap_reverse(pias_ctx *ctx, const struct pias_cfg *cfg, struct pias_nat *nat,
				       const struct pkt_info *pi)
{
	if (pi->flow.proto == IPPROTO_TCP && !(nat->flags & NAT_TCP_FAST))
		return pass(C_PASS_TCP_NOT_FAST);
	if (csum_partial_suspect(pi))
		return pass(C_PASS_PARTIAL_CSUM);
	return nat_in_place(ctx, cfg, nat, pi, 0, 0, C_JAP_REV_HIT);
}

/* ---- IAP: client packet → JAP ---- */
/* Whether the client's source is in pias_filter (the overlay's space or a martian range). */
static __always_inline int source_refused(const struct pkt_info *pi)
{
	struct pias_filter_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.family = pi->family;
	k.prefixlen = 8 + (pi->family == 4 ? 32 : 128);
	__builtin_memcpy(k.addr, pi->flow.src, 16);
	return bpf_map_lookup_elem(&pias_filter, &k) != 0;
}

/* The group entry of a client's packet (its destination transport address), if cached. */
static __always_inline struct pias_group *group_of(const struct pkt_info *pi)
{
	struct pias_ta ta;

	__builtin_memset(&ta, 0, sizeof(ta));
	ta.family = pi->family;
	ta.proto = pi->flow.proto;
	ta.port = pi->flow.dport;
	__builtin_memcpy(ta.addr, pi->flow.dst, 16);
	return bpf_map_lookup_elem(&pias_groups, &ta);
}

/* ---- IAP whose JAP is this proxy: client packet → target, no overlay ----
 * The core hands such a packet to its own JAP step (Proxy::jap_deliver with ingress = itself), which meets
 * the same binding a data frame from another IAP would: the NAT forward entry keyed by the client's flow as
 * received. So the hit is the JAP's rewrite applied to the client's packet itself. No binding yet (the
 * flow's first packet), a tunnel-mode target or a TCP binding not yet established: the core's. */
static __always_inline int iap_local_jap(pias_ctx *ctx, const struct pias_cfg *cfg, struct pias_group *grp,
					 const struct pkt_info *pi, __u64 now)
{
	struct pias_nat *nat = bpf_map_lookup_elem(&pias_nat_fwd, &pi->flow);

	if (!nat || (nat->flags & NAT_TUNNEL))
		return pass(C_PASS_LOCAL_JAP);
	if (pi->flow.proto == IPPROTO_TCP && !(nat->flags & NAT_TCP_FAST))
		return pass(C_PASS_TCP_NOT_FAST);
	return nat_in_place(ctx, cfg, nat, pi, grp, now, C_IAP_LOCAL_HIT);
}

static __always_inline int iap_encap(pias_ctx *ctx, const struct pias_cfg *cfg, struct pias_group *grp,
				     const struct pkt_info *pi)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct pias_jap *jap;
	__u64 m[5], h, now, sum;
	__u32 idx, slot, ifindex = 0;
	__u8 mac[12];

	now = bpf_ktime_get_coarse_ns(); /* CLOCK_MONOTONIC at tick granularity: deadlines are seconds */
	if (grp->deadline_ns && now >= grp->deadline_ns)
		return pass(C_PASS_GROUP_EXPIRED);
	if (pi->flow.proto == IPPROTO_TCP && (pi->tcp_flags & TCPF_SYN))
		return pass(C_PASS_TCP_CONTROL); /* MSS clamp (SPEC.md §12) */
	if (pi->ip_len > cfg->inner_mtu)
		return pass(C_PASS_TOO_BIG);
	if (pi->l4_csum == 0)
		return pass(C_PASS_UDP_NO_CSUM); /* the outer checksum is derived from the inner one */
	if (csum_partial_suspect(pi))
		return pass(C_PASS_PARTIAL_CSUM);

	flow_words(&pi->flow, m);
	h = siphash13_flow(cfg->sip_k0, cfg->sip_k1, m);
	slot = h % PIAS_SLOTS;
	/* The verifier loses the bound of a 64-bit modulo; slots[] is padded to 256, so the mask is exact. */
	asm volatile("" : "+r"(slot));
	idx = grp->slots[slot & (PIAS_SLOTS_PADDED - 1)];
	if (idx >= PIAS_MAX_JAPS || idx >= grp->n_japs)
		return pass(C_PASS_GROUP_MISS);
	jap = &grp->japs[idx];
	if (jap->flags & JAP_LOCAL)
		return iap_local_jap(ctx, cfg, grp, pi, now);
	if (jap->family != 4 || cfg->overlay_family != 4)
		return pass(C_PASS_JAP_FAMILY);

	if ((void *)(eth + 1) > end)
		return pass(C_PASS_TRUNCATED);
	__builtin_memcpy(mac, eth->h_dest, 6);
	__builtin_memcpy(mac + 6, eth->h_source, 6);
	if (cfg->flags & CFG_FIB) {
		if (pi->ttl <= 1)
			return pass(C_PASS_TTL);
		ifindex = fib_next_hop(ctx, 4, cfg->overlay_addr, jap->addr, IPPROTO_UDP,
				       pi->ip_len + PIAS_ENCAP_V4_LEN, mac);
		if (!ifindex)
			return pass(C_PASS_FIB);
	}
	if (hook_trim(ctx, ETH_HLEN + pi->ip_len))
		return pass(C_PASS_ADJUST);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (ifindex)
		ttl_decrement(data, end, ETH_HLEN, pi->family); /* before the inner header is summed */
	sum = inner_header_sum(data, end, ETH_HLEN, pi->family) + (__u16)~csum_fold64(inner_pseudo_sum(pi));

	if (hook_push(ctx, PIAS_ENCAP_V4_LEN, pi->family))
		return pass(C_PASS_ADJUST);
	if (write_eth(ctx, mac, bpf_htons(ETH_P_IP)))
		return ACT_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (write_encap_v4(ctx, data, end, cfg, jap->addr, jap->port, pi->family, pi->ip_len, sum, 0, PIAS_INITIAL_HOPS))
		return ACT_ABORTED;
	grp->last_used_ns = now;
	grp->packets += 1;
	count(C_IAP_HIT);
	hook_rewritten(ctx);
	return hook_send(ctx, cfg, ifindex);
}

SEC(PIAS_SECTION)
int PIAS_PROGRAM(pias_ctx *ctx)
{
	void *data, *end;
	struct ethhdr *eth;
	struct pias_cfg *cfg;
	struct pias_group *grp;
	struct pias_nat *nat;
	struct pkt_info pi;
	__u32 zero = 0, r;
	__u16 eth_proto;

	cfg = bpf_map_lookup_elem(&pias_cfg, &zero);
	if (!cfg || !(cfg->flags & CFG_ENABLED))
		return pass(C_PASS_NO_CFG);
	r = hook_prepare(ctx);
	if (r)
		return pass(r);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return pass(C_PASS_TRUNCATED);
	eth_proto = eth->h_proto;
	r = parse_ip(data, end, ETH_HLEN, eth_proto, &pi);
	if (r != PARSE_OK)
		return pass(r);

	/* An overlay frame to our overlay socket. */
	if (pi.family == 4 && pi.flow.proto == IPPROTO_UDP && cfg->overlay_family == 4 &&
	    pi.flow.dport == cfg->overlay_port && *(__u32 *)pi.flow.dst == *(__u32 *)cfg->overlay_addr) {
		struct iphdr *oip = data + ETH_HLEN;
		struct udphdr *ouh = (void *)(oip + 1);
		if ((void *)(ouh + 1) > end)
			return pass(C_PASS_TRUNCATED);
		if ((void *)(eth + 1) > end)
			return pass(C_PASS_TRUNCATED);
		return jap_forward(ctx, cfg, eth, oip, ouh);
	}
	/* A client's packet to a group (looked up first: the IAP path is the busier and the costlier). A
	 * source the core refuses (SPEC.md §8.5) goes to the slow path, which drops and counts it: no hit may
	 * forward what the core would not. */
	grp = group_of(&pi);
	if (grp) {
		if (source_refused(&pi))
			return pass(C_PASS_FILTERED);
		return iap_encap(ctx, cfg, grp, &pi);
	}
	/* A target's reply to a NAT pool endpoint. */
	nat = bpf_map_lookup_elem(&pias_nat_rev, &pi.flow);
	if (nat) {
		if (tcp_control(&pi))
			return pass(C_PASS_TCP_CONTROL);
		return jap_reverse(ctx, cfg, nat, &pi);
	}
	return pass(C_PASS_GROUP_MISS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
