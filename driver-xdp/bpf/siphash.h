/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* SipHash-1-3 over the 37-byte flow layout (SPEC.md §13.2), equal to the Rust `siphasher::SipHasher13`, and
 * its pieces for the data tag (SPEC.md §4.1, computed in encap.h from a precomputed state). */
#ifndef PIAS_SIPHASH_H
#define PIAS_SIPHASH_H

#include <linux/types.h>

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                                                            \
	do {                                                                                                \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);                               \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                                                    \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                                                    \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);                               \
	} while (0)

/* m[0..4] are the little-endian 8-byte words of the flow bytes; m[4] holds bytes 32..36 and zeros. */
static __always_inline __u64 siphash13_flow(__u64 k0, __u64 k1, const __u64 m[5])
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	__u64 b;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		v3 ^= m[i];
		SIPROUND;
		v0 ^= m[i];
	}
	b = m[4] | ((__u64)PIAS_FLOW_BYTES << 56);
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* One message word `m` (8 bytes, little-endian) compressed into the state v0..v3 (the caller's locals). */
#define SIP_COMPRESS(m)                                                                                     \
	do {                                                                                                \
		v3 ^= (m);                                                                                  \
		SIPROUND;                                                                                   \
		v0 ^= (m);                                                                                  \
	} while (0)

/* The hash of a message after its whole words: `last` holds its remaining bytes (fewer than 8, zero
 * padded) and `len` its length. */
#define SIP_FINISH(last, len)                                                                               \
	({                                                                                                  \
		__u64 b_ = (last) | ((__u64)(len) << 56);                                                   \
		SIP_COMPRESS(b_);                                                                           \
		v2 ^= 0xff;                                                                                 \
		SIPROUND;                                                                                   \
		SIPROUND;                                                                                   \
		SIPROUND;                                                                                   \
		v0 ^ v1 ^ v2 ^ v3;                                                                          \
	})

#endif
