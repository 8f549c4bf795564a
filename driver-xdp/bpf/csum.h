/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* One's complement arithmetic, integer for integer what pias-proto's checksum.rs does (RFC 1071/1624), so a
 * rewritten packet is byte-identical to the slow path's: same sums, same fold, same ±0 outcome. */
#ifndef PIAS_CSUM_H
#define PIAS_CSUM_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

/* pias_proto::checksum::fold */
static __always_inline __u16 csum_fold64(__u64 acc)
{
	acc = (acc & 0xffffffffULL) + (acc >> 32);
	acc = (acc & 0xffffffffULL) + (acc >> 32);
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)acc;
}

/* pias_proto::checksum::add over 16 bytes (four big-endian 32-bit words). */
static __always_inline __u64 csum_add16(const __u8 *p)
{
	__u32 w[4];
	__builtin_memcpy(w, p, 16);
	return (__u64)bpf_ntohl(w[0]) + bpf_ntohl(w[1]) + bpf_ntohl(w[2]) + bpf_ntohl(w[3]);
}

/* Delta::word */
static __always_inline __u64 delta_word(__u16 old, __u16 new)
{
	return old == new ? 0 : (__u64)(__u16)~old + new;
}

/* Delta::word32 */
static __always_inline __u64 delta_word32(__u32 old, __u32 new)
{
	return old == new ? 0 : (__u64)(__u32)~old + new;
}

/* Delta::bytes over a 16-byte address */
static __always_inline __u64 delta_addr16(const __u8 *old, const __u8 *new)
{
	__u64 o[2], n[2];
	__builtin_memcpy(o, old, 16);
	__builtin_memcpy(n, new, 16);
	if (o[0] == n[0] && o[1] == n[1])
		return 0;
	return (__u64)(__u16)~csum_fold64(csum_add16(old)) + csum_add16(new);
}

/* Delta::apply */
static __always_inline __u16 csum_apply(__u16 hc, __u64 delta)
{
	return (__u16)~csum_fold64((__u64)(__u16)~hc + delta);
}

/* apply_at(…, udp) on a big-endian checksum field in the packet */
static __always_inline void csum_apply_at(__u16 *field, __u64 delta, int udp)
{
	__u16 old = bpf_ntohs(*field);
	__u16 new;
	if (udp && old == 0)
		return; /* UDP over IPv4 without checksum stays so */
	new = csum_apply(old, delta);
	if (udp && new == 0)
		new = 0xffff;
	*field = bpf_htons(new);
}

#endif
