/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* The overlay frame an IAP sends to a JAP: outer IPv4 + UDP + Geneve header + PIAS data option, the data
 * header exactly as pias-proto's DataHeader::emit writes it for flags 0, hops 2, tagged as
 * pias_proto::tunnel::write_tag tags it (SPEC.md §4.1); and the tag check of a received data frame. */
#ifndef PIAS_ENCAP_H
#define PIAS_ENCAP_H

#include "csum.h"
#include "parse.h"
#include "hook.h"
#include "siphash.h"

/* The tag of the data frame whose Geneve header is at `g` (its 20 authenticated bytes) and whose inner
 * packet, `inner_len` bytes, starts at g + 28, under key `k`. Every hashed byte is read straight from the
 * packet (the caller made the whole frame directly readable): the first 16 only to pick the state to start
 * from (SipHash's state after them is precomputed per inner family, see struct pias_tag_key; the family is
 * the protocol type's, and a frame whose words are not the precomputed ones starts from an earlier state,
 * so the choice never changes the tag), then whole words, then, for an inner packet shorter than 48 bytes,
 * its last bytes as the top of the 8-byte word that ends with them (the bytes before are the header's or
 * the inner packet's: in the packet). Returns -1 (and no tag) when the bytes are not there; an inner packet
 * is never shorter than an IP header.
 *
 * Inlined: inside the program's body few registers are free and SipHash's state spills to the stack in
 * every round, but a BPF-to-BPF call that keeps it in registers measured no faster (BENCHMARKS.md: a
 * SipRound is some 38 instructions, 24 of them its six rotations, which BPF has no instruction for). */
static __always_inline int frame_tag(const __u8 *g, void *end, __u32 inner_len, const struct pias_tag_key *k,
				     __u64 *tag)
{
	const struct pias_tag_prefix *p;
	const __u8 *inner = g + PIAS_DATA_HEADER_LEN;
	__u64 v0, v1, v2, v3, w0, w1, m, last = 0;
	__u32 n, full, r;
	int i;

	if ((void *)(inner + 8) > end || inner_len < 8)
		return -1;
	p = &k->fam[g[2] == 0x86];
	w0 = *(const __u64 *)g;
	w1 = *(const __u64 *)(g + 8);
	if (w0 == p->w0 && w1 == p->w1) {
		/* The common frame: an IAP's (flags 0, hops 2) under this key. */
		v0 = p->s2[0];
		v1 = p->s2[1];
		v2 = p->s2[2];
		v3 = p->s2[3];
	} else {
		if (w0 == p->w0) {
			v0 = p->s1[0];
			v1 = p->s1[1];
			v2 = p->s1[2];
			v3 = p->s1[3];
		} else {
			v0 = k->s0[0];
			v1 = k->s0[1];
			v2 = k->s0[2];
			v3 = k->s0[3];
			SIP_COMPRESS(w0);
		}
		SIP_COMPRESS(w1);
	}
	/* The header's last 4 bytes and the inner packet's first 4. */
	m = (__u64)*(const __u32 *)(g + 16) | ((__u64)*(const __u32 *)inner << 32);
	SIP_COMPRESS(m);
	if (inner_len >= PIAS_TAG_INNER) {
		if ((void *)(inner + PIAS_TAG_INNER) > end)
			return -1;
#pragma unroll
		for (i = 0; i < 5; i++) {
			m = *(const __u64 *)(inner + 4 + 8 * i);
			SIP_COMPRESS(m);
		}
		last = *(const __u32 *)(inner + 44);
		n = PIAS_TAG_INNER;
	} else {
		n = inner_len;
		full = (PIAS_TAG_OFFSET + n) / 8;
#pragma unroll
		for (i = 0; i < 5; i++) {
			if (3 + i < full) {
				if ((void *)(inner + 12 + 8 * i) > end)
					return -1;
				m = *(const __u64 *)(inner + 4 + 8 * i);
				SIP_COMPRESS(m);
			}
		}
		r = (PIAS_TAG_OFFSET + n) % 8;
		if (r) {
			/* n is 8..47 here; the mask keeps the bound where the verifier sees it (a spilled copy of n
			 * loses the range the checks above gave it). */
			__u32 off = n - 8;
			const __u8 *t;

			asm volatile("" : "+r"(off));
			t = inner + (off & 63);
			if ((void *)(t + 8) > end)
				return -1;
			last = *(const __u64 *)t >> (64 - 8 * r);
		}
	}
	*tag = SIP_FINISH(last, PIAS_TAG_OFFSET + n);
	return 0;
}

/* Sum (pias_proto::checksum::add) of the whole inner IP header, 20 or 40 bytes, read before moving it. */
static __always_inline __u64 inner_header_sum(void *data, void *end, __u32 off, __u8 family)
{
	__u32 *w = data + off;
	__u64 acc = 0;
	int i;

	if (family == 4) {
		if ((void *)(w + 5) > end)
			return 0;
#pragma unroll
		for (i = 0; i < 5; i++)
			acc += bpf_ntohl(w[i]);
	} else {
		if ((void *)(w + 10) > end)
			return 0;
#pragma unroll
		for (i = 0; i < 10; i++)
			acc += bpf_ntohl(w[i]);
	}
	return acc;
}

/* Pseudo-header sum of the inner packet (addresses, protocol, L4 length). */
static __always_inline __u64 inner_pseudo_sum(const struct pkt_info *pi)
{
	__u64 acc = (__u64)pi->flow.proto + pi->l4_len;
	if (pi->family == 4) {
		__u32 s, d;
		__builtin_memcpy(&s, pi->flow.src, 4);
		__builtin_memcpy(&d, pi->flow.dst, 4);
		acc += (__u64)bpf_ntohl(s) + bpf_ntohl(d);
	} else {
		acc += csum_add16(pi->flow.src) + csum_add16(pi->flow.dst);
	}
	return acc;
}

/* Whether the L4 checksum field holds only the folded pseudo-header sum: the checksum of a packet whose
 * sender left it to offload (CHECKSUM_PARTIAL), as locally generated packets crossing a veth are. Such a
 * packet goes to the slow path, where the kernel completes the checksum; a complete checksum equal to that
 * value (1 in 65 535) costs only a trip through the slow path. */
static __always_inline int csum_partial_suspect(const struct pkt_info *pi)
{
	return pi->l4_csum == csum_fold64(inner_pseudo_sum(pi));
}

/* The 10 big-endian words of the data header in front of the tag. */
static __always_inline void data_header_words(__u16 w[10], __u8 family, __u32 vni, __u32 ingress, __u8 flags,
					      __u8 hops, __u8 epoch)
{
	w[0] = 0x0540; /* ver 0, 5 option words; O=0, C=1 */
	w[1] = family == 4 ? ETH_P_IP : ETH_P_IPV6;
	w[2] = (vni >> 8) & 0xffff;
	w[3] = (vni & 0xff) << 8;
	w[4] = PIAS_OPTION_CLASS;
	w[5] = (PIAS_OPTION_TYPE_DATA << 8) | 4;
	w[6] = ((__u16)flags << 8) | hops;
	w[7] = (__u16)epoch << 8;
	w[8] = ingress >> 16;
	w[9] = ingress & 0xffff;
}

/* Writes outer IPv4, UDP (to dst_addr, IPv4, and dst_port, BE) and the data header (flags, hops, ingress =
 * this proxy, tagged under the configured epoch's key over the inner packet behind it) at data + ETH_HLEN (the caller made PIAS_ENCAP_V4_LEN bytes of room in front of the inner
 * packet, or reuses a received frame's). `l4_sum` is the inner packet's one's complement sum (header words plus
 * the L4 part derived from its valid checksum): the outer UDP checksum comes from it without reading the
 * payload, as Linux's local checksum offload does. */
static __always_inline int write_encap_v4(pias_ctx *ctx, void *data, void *end, const struct pias_cfg *cfg,
					  const __u8 *dst_addr,
					  __u16 dst_port, __u8 inner_family, __u32 inner_len, __u64 inner_sum,
					  __u8 flags, __u8 hops)
{
	struct iphdr *ip = data + ETH_HLEN;
	struct udphdr *uh = (void *)(ip + 1);
	__u16 *g = (void *)(uh + 1);
	__u16 w[10];
	__u32 saddr, daddr, *ipw;
	__u64 acc = 0, tag;
	__u16 udp_len = sizeof(*uh) + PIAS_DATA_HEADER_LEN + inner_len;
	int i;

	if ((void *)(g + 14) > end)
		return -1;
	__builtin_memcpy(&saddr, cfg->overlay_addr, 4);
	__builtin_memcpy(&daddr, dst_addr, 4);

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF: the overlay path MTU is configured (SPEC.md §12) */
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ipw = (void *)ip;
#pragma unroll
	for (i = 0; i < 5; i++)
		acc += bpf_ntohl(ipw[i]);
	ip->check = bpf_htons((__u16)~csum_fold64(acc));

	data_header_words(w, inner_family, cfg->vni, cfg->self_id, flags, hops, cfg->tag_epoch);
	acc = inner_sum;
#pragma unroll
	for (i = 0; i < 10; i++) {
		g[i] = bpf_htons(w[i]);
		acc += w[i];
	}
	if (frame_tag((const __u8 *)g, end, inner_len, &cfg->tag, &tag))
		return -1;
	/* The tag, big-endian, in one store; into the checksum by halves (2^16 is 1 in a one's complement sum,
	 * so a 32-bit half counts as its two 16-bit words). */
	*(__u64 *)(g + 10) = bpf_cpu_to_be64(tag);
	acc += (tag >> 32) + (tag & 0xffffffff);
	uh->source = cfg->overlay_port;
	uh->dest = dst_port;
	uh->len = bpf_htons(udp_len);
	uh->check = 0;
	acc += (__u64)bpf_ntohl(saddr) + bpf_ntohl(daddr) + IPPROTO_UDP + udp_len; /* pseudo-header */
	acc += (__u64)bpf_ntohs(uh->source) + bpf_ntohs(uh->dest) + udp_len;
	{
		__u16 c = (__u16)~csum_fold64(acc);
		uh->check = bpf_htons(c == 0 ? 0xffff : c);
	}
	return 0;
}

#endif
