/* SPDX-License-Identifier: (Apache-2.0 OR MIT) */
/* The maps: user space (driver-xdp's MapSync) owns their contents; the program only reads them, and writes
 * last-use times and counters. Sizes here are defaults; the loader resizes them to the core's bounds. */
#ifndef PIAS_MAPS_H
#define PIAS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pias_cfg);
} pias_cfg SEC(".maps");

/* Plain hash, not LRU: the core decides what is cached; a full map makes MapSync count a degradation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pias_ta);
	__type(value, struct pias_group);
} pias_groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct pias_flow);
	__type(value, struct pias_nat);
} pias_nat_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct pias_flow);
	__type(value, struct pias_nat);
} pias_nat_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pias_sockaddr);
	__type(value, __u32);
} pias_members SEC(".maps");

/* Client sources the core refuses (SPEC.md §8.5): the overlay's space and the martian ranges, written once
 * by MapSync from the core's configuration. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pias_filter_key);
	__type(value, __u8);
} pias_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pias_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&pias_counters, &which);
	if (c)
		*c += 1;
}

#endif
