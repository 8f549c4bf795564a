/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* Header parsing with every access bounds-checked first. Only the shapes the fast path serves are accepted;
 * anything else names the counter of its reason and goes to the slow path unchanged. */
#ifndef PIAS_PARSE_H
#define PIAS_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "structs.h"

#define PARSE_OK C_MAX

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04

/* An IP packet with TCP or UDP directly after a fixed-size header. */
struct pkt_info {
	struct pias_flow flow; /* as received */
	__u32 ip_len;          /* total length of the IP packet */
	__u16 l4_len;          /* ip_len minus the IP header */
	__u8 family;
	__u8 tcp_flags;
	__u16 l4_csum;         /* host order, as received */
	__u8 ttl;              /* TTL or hop limit */
	__u8 pad;
};

/* Parses the IP packet at data + off (off a constant at every call site). */
static __always_inline __u32 parse_ip(void *data, void *end, __u32 off, __u16 eth_proto, struct pkt_info *pi)
{
	void *l4;
	__u8 proto;

	__builtin_memset(pi, 0, sizeof(*pi));
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		if ((void *)(ip + 1) > end)
			return C_PASS_TRUNCATED;
		if (ip->version != 4)
			return C_PASS_NOT_IP;
		if (ip->ihl != 5)
			return C_PASS_IP_OPTIONS;
		if (ip->frag_off & bpf_htons(0x3fff))
			return C_PASS_FRAGMENT;
		pi->ip_len = bpf_ntohs(ip->tot_len);
		if (pi->ip_len < sizeof(*ip) || data + off + pi->ip_len > end)
			return C_PASS_TRUNCATED;
		pi->l4_len = pi->ip_len - sizeof(*ip);
		pi->family = 4;
		proto = ip->protocol;
		pi->ttl = ip->ttl;
		__builtin_memcpy(pi->flow.src, &ip->saddr, 4);
		__builtin_memcpy(pi->flow.dst, &ip->daddr, 4);
		l4 = ip + 1;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > end)
			return C_PASS_TRUNCATED;
		if (ip6->version != 6)
			return C_PASS_NOT_IP;
		pi->l4_len = bpf_ntohs(ip6->payload_len);
		pi->ip_len = sizeof(*ip6) + pi->l4_len;
		if (data + off + pi->ip_len > end)
			return C_PASS_TRUNCATED;
		pi->family = 6;
		proto = ip6->nexthdr; /* extension headers and ICMPv6 are not TCP/UDP: slow path */
		pi->ttl = ip6->hop_limit;
		__builtin_memcpy(pi->flow.src, &ip6->saddr, 16);
		__builtin_memcpy(pi->flow.dst, &ip6->daddr, 16);
		l4 = ip6 + 1;
	} else {
		return C_PASS_NOT_IP;
	}
	pi->flow.proto = proto;
	pi->flow.family = pi->family;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end || pi->l4_len < sizeof(*th))
			return C_PASS_TRUNCATED;
		if (th->doff < 5 || th->doff * 4 > pi->l4_len)
			return C_PASS_TRUNCATED;
		pi->flow.sport = th->source;
		pi->flow.dport = th->dest;
		pi->tcp_flags = ((__u8 *)th)[13];
		pi->l4_csum = bpf_ntohs(th->check);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end || pi->l4_len < sizeof(*uh))
			return C_PASS_TRUNCATED;
		pi->flow.sport = uh->source;
		pi->flow.dport = uh->dest;
		pi->l4_csum = bpf_ntohs(uh->check);
	} else {
		return C_PASS_L4_OTHER;
	}
	return PARSE_OK;
}

/* The 37-byte flow layout of SPEC.md §13.2 as five little-endian words (see siphash.h). */
static __always_inline void flow_words(const struct pias_flow *f, __u64 m[5])
{
	__u8 b[40];
	__builtin_memset(b, 0, sizeof(b));
	b[0] = f->proto;
	__builtin_memcpy(&b[1], f->src, 16);
	__builtin_memcpy(&b[17], &f->sport, 2);
	__builtin_memcpy(&b[19], f->dst, 16);
	__builtin_memcpy(&b[35], &f->dport, 2);
	__builtin_memcpy(m, b, 40);
}

#endif
