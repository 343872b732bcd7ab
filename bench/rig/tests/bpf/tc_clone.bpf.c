// SPDX-License-Identifier: Apache-2.0
//
// Candidate packet generator for the pktgen measurement (tests/candidates, TcCloneGenerator):
// on the generating interface's tc egress, every IPv4/UDP packet a socket sends becomes
// `copies` + 1 packets. The program marks the packet, then clones it back out of the same
// interface `copies` times with bpf_clone_redirect, moving the UDP source port one step
// through the spec's port range between clones so that the copies are different flows; the
// original passes last. A clone re-enters this hook (bpf_clone_redirect to egress goes
// through dev_queue_xmit again) carrying the mark, and passes without cloning again.
//
// The UDP checksum is 0 ("none" over IPv4) and the IPv4 header is untouched, so rewriting
// the port needs no checksum update.
//
// Compiled by the test itself (bpf_build::compile), not by build.rs: it is no part of
// the rig's tools.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// What a clone carries in skb->mark ("kx" 0x6b78, "tc" 0x7463).
#define CLONE_MARK 0x6b787463
// The most clones per packet (the verifier needs a bound; the veth ring holds 256).
#define MAX_COPIES 255
// Offsets in the frames PacketSpec builds: Ethernet, a 20-byte IPv4 header, UDP.
#define IP_PROTO_OFF (ETH_HLEN + 9)
#define SPORT_OFF (ETH_HLEN + 20)

struct clone_cfg {
	__u32 ifindex;    // where clones go (the interface this program is on)
	__u32 copies;     // clones per packet sent
	__u32 port_lo;    // the spec's first source port
	__u32 port_count; // source ports per address in the spec
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clone_cfg);
} clone_cfg SEC(".maps");

// [0]: clones the kernel took; [1]: clones it refused (bpf_clone_redirect < 0).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} clone_stats SEC(".maps");

static __always_inline void count(__u32 key)
{
	__u64 *n = bpf_map_lookup_elem(&clone_stats, &key);

	if (n)
		*n += 1;
}

SEC("classifier")
int kxg_tc_clone(struct __sk_buff *skb)
{
	struct clone_cfg *cfg;
	__u32 zero = 0, offset, i;
	__u16 sport;
	__u8 proto;

	// A clone of ours coming round again: out it goes.
	if (skb->mark == CLONE_MARK)
		return TC_ACT_OK;
	cfg = bpf_map_lookup_elem(&clone_cfg, &zero);
	if (!cfg || cfg->port_count == 0)
		return TC_ACT_OK;
	if (skb->protocol != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, IP_PROTO_OFF, &proto, 1) || proto != IPPROTO_UDP ||
	    bpf_skb_load_bytes(skb, SPORT_OFF, &sport, 2))
		return TC_ACT_OK;
	// Where the packet's port is in the spec's range; the clones take the next ones.
	offset = bpf_ntohs(sport) - cfg->port_lo;
	skb->mark = CLONE_MARK;
	for (i = 1; i <= MAX_COPIES && i <= cfg->copies; i++) {
		// Clone i - 1 goes out with the port written before it (the first with the
		// packet's own), and the next port is written for the one after.
		count(bpf_clone_redirect(skb, cfg->ifindex, 0) < 0);
		sport = bpf_htons(cfg->port_lo + (offset + i) % cfg->port_count);
		if (bpf_skb_store_bytes(skb, SPORT_OFF, &sport, 2, 0))
			break;
	}
	// The original, last, with the port after the last clone's.
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
