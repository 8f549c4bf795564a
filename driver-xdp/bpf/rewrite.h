/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* NAT rewrite in place: what IpPacket::set_src_dst does in pias-proto/src/packet.rs, including its RFC 1624
 * incremental checksum updates, integer for integer. */
#ifndef PIAS_REWRITE_H
#define PIAS_REWRITE_H

#include "csum.h"
#include "parse.h"

/* Rewrites the TCP/UDP packet at data + off (already parsed into pi) to nat's addresses and ports.
 * Returns 0, or -1 if a bound check fails (nothing written then). */
static __always_inline int nat_rewrite(void *data, void *end, __u32 off, const struct pkt_info *pi,
				       const struct pias_nat *nat)
{
	__u64 daddr = 0, dport;
	void *l4;
	__u16 *l4_csum;
	int udp = pi->flow.proto == IPPROTO_UDP;

	if (pi->family == 4) {
		struct iphdr *ip = data + off;
		__u32 ns, nd;
		if ((void *)(ip + 1) > end)
			return -1;
		l4 = ip + 1;
		__builtin_memcpy(&ns, nat->src, 4);
		__builtin_memcpy(&nd, nat->dst, 4);
		daddr = delta_word32(bpf_ntohl(ip->saddr), bpf_ntohl(ns)) +
			delta_word32(bpf_ntohl(ip->daddr), bpf_ntohl(nd));
		ip->saddr = ns;
		ip->daddr = nd;
		csum_apply_at(&ip->check, daddr, 0);
	} else {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end)
			return -1;
		l4 = ip6 + 1;
		daddr = delta_addr16((__u8 *)&ip6->saddr, nat->src) + delta_addr16((__u8 *)&ip6->daddr, nat->dst);
		__builtin_memcpy(&ip6->saddr, nat->src, 16);
		__builtin_memcpy(&ip6->daddr, nat->dst, 16);
	}
	/* Source and destination ports are the first two words of both TCP and UDP. */
	if (l4 + 8 > end)
		return -1;
	{
		__u16 *ports = l4;
		dport = delta_word(bpf_ntohs(ports[0]), bpf_ntohs(nat->sport)) +
			delta_word(bpf_ntohs(ports[1]), bpf_ntohs(nat->dport));
		ports[0] = nat->sport;
		ports[1] = nat->dport;
	}
	if (udp) {
		l4_csum = l4 + 6;
	} else {
		if (l4 + 20 > end)
			return -1;
		l4_csum = l4 + 16;
	}
	csum_apply_at(l4_csum, daddr + dport, udp);
	return 0;
}

/* One router hop: what the kernel's forwarding does to the slow path's packets on their way into and out of
 * the TUN (ip_decrease_ttl). Only when the program routes (CFG_FIB); the caller checked ttl > 1. */
static __always_inline void ttl_decrement(void *data, void *end, __u32 off, __u8 family)
{
	if (family == 4) {
		struct iphdr *ip = data + off;
		__u16 old, new;
		if ((void *)(ip + 1) > end)
			return;
		old = bpf_ntohs(*(__u16 *)&ip->ttl);
		ip->ttl -= 1;
		new = bpf_ntohs(*(__u16 *)&ip->ttl);
		csum_apply_at(&ip->check, delta_word(old, new), 0);
	} else {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end)
			return;
		ip6->hop_limit -= 1;
	}
}

#endif
