/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* The overlay frame an IAP sends to a JAP: outer IPv4 + UDP + Geneve header + PIAS data option, the data
 * header exactly as pias-proto's DataHeader::emit writes it for flags 0, hops 2 (SPEC.md §4.1). */
#ifndef PIAS_ENCAP_H
#define PIAS_ENCAP_H

#include "csum.h"
#include "parse.h"

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

/* The 10 big-endian words of the data header. */
static __always_inline void data_header_words(__u16 w[10], __u8 family, __u32 vni, __u32 ingress, __u8 flags,
					      __u8 hops)
{
	w[0] = 0x0340; /* ver 0, 3 option words; O=0, C=1 */
	w[1] = family == 4 ? ETH_P_IP : ETH_P_IPV6;
	w[2] = (vni >> 8) & 0xffff;
	w[3] = (vni & 0xff) << 8;
	w[4] = PIAS_OPTION_CLASS;
	w[5] = (PIAS_OPTION_TYPE_DATA << 8) | 2;
	w[6] = ((__u16)flags << 8) | hops;
	w[7] = 0;
	w[8] = ingress >> 16;
	w[9] = ingress & 0xffff;
}

/* Writes outer IPv4, UDP (to dst_addr, IPv4, and dst_port, BE) and the data header (flags, hops, ingress =
 * this proxy) at data + ETH_HLEN (the caller made PIAS_ENCAP_V4_LEN bytes of room in front of the inner
 * packet, or reuses a received frame's). `l4_sum` is the inner packet's one's complement sum (header words plus
 * the L4 part derived from its valid checksum): the outer UDP checksum comes from it without reading the
 * payload, as Linux's local checksum offload does. */
static __always_inline int write_encap_v4(void *data, void *end, const struct pias_cfg *cfg, const __u8 *dst_addr,
					  __u16 dst_port, __u8 inner_family, __u32 inner_len, __u64 inner_sum,
					  __u8 flags, __u8 hops)
{
	struct iphdr *ip = data + ETH_HLEN;
	struct udphdr *uh = (void *)(ip + 1);
	__u16 *g = (void *)(uh + 1);
	__u16 w[10];
	__u32 saddr, daddr, *ipw;
	__u64 acc = 0;
	__u16 udp_len = sizeof(*uh) + PIAS_DATA_HEADER_LEN + inner_len;
	int i;

	if ((void *)(g + 10) > end)
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

	data_header_words(w, inner_family, cfg->vni, cfg->self_id, flags, hops);
	acc = inner_sum;
#pragma unroll
	for (i = 0; i < 10; i++) {
		g[i] = bpf_htons(w[i]);
		acc += w[i];
	}
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
