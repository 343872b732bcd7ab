// SPDX-License-Identifier: Apache-2.0
//
// Test-only traffic generator for the AF_XDP worker tests: every packet is the next of 32
// frame templates (filled by the test), written over the frame. kxsk_gen runs with
// BPF_PROG_TEST_RUN in live-frames mode and transmits with XDP_TX on the test run's ingress
// interface (a veth whose peer holds the worker's socket); live mode recycles pages that
// keep whatever was written into them, so the whole frame is rewritten on every run.
// kxsk_gen_copy is the same as a devmap program, for the fan-out generator
// (rig::traffic::FanOut) on kernels that refuse live frames.
//
// Compiled by the test itself (bpf_build::compile), not by build.rs: it is no part of
// the datapath.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SLOTS 32
#define FRAME_LEN 64

struct template {
	__u8 bytes[FRAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, struct template);
} templates SEC(".maps");

// Which template comes next, per CPU (the generator runs on one CPU at a time).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cursor SEC(".maps");

// Writes the next template over the frame; false when it cannot.
static __always_inline int write_next(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct template *t;
	__u32 zero = 0, slot;
	__u64 *next;

	next = bpf_map_lookup_elem(&cursor, &zero);
	if (!next)
		return 0;
	slot = (__u32)(*next & (SLOTS - 1));
	*next += 1;
	t = bpf_map_lookup_elem(&templates, &slot);
	if (!t)
		return 0;
	if (data + FRAME_LEN > data_end)
		return 0;
	__builtin_memcpy(data, t->bytes, FRAME_LEN);
	return 1;
}

SEC("xdp")
int kxsk_gen(struct xdp_md *ctx)
{
	return write_next(ctx) ? XDP_TX : XDP_ABORTED;
}

SEC("xdp/devmap")
int kxsk_gen_copy(struct xdp_md *ctx)
{
	return write_next(ctx) ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
