// SPDX-License-Identifier: Apache-2.0
//
// kxdp's XDP programs: the only kernel code of the datapath. They classify, they never
// rewrite: a packet is either handed whole to the AF_XDP socket of the queue it arrived on
// (the userspace workers do all packet logic) or passed to the kernel untouched.
//
// Scope for now: Ethernet II + IPv4 only. VLAN-tagged frames and IPv6 are passed to the
// kernel on the uplink (and redirected like everything else on pod ports).
//
// Every map shared with Rust has a `#[repr(C)]` twin in `src/maps.rs` with a size assert;
// change both together.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Rust twin: `VxlanCfg`. Our underlay address (network order) and the VXLAN UDP port (host
// order, so the agent writes a plain u16).
struct vxlan_cfg {
	__u32 node_ip;
	__u16 port;
	__u16 pad;
};

// Rust twin: `FrontendKey`. A NodePort / ExternalIP / LoadBalancer frontend: address
// (network order), port (host order), IP protocol number. `pad` must be zero: it is part of
// the hash key.
struct frontend_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

// Why each program decided what it did, counted per CPU. Beyond observability these make
// the redirect path visible when no socket is bound: bpf_redirect_map then falls back to
// XDP_PASS, and the return value alone cannot tell the paths apart.
// Rust twin: `Reason` (indices must match).
enum reason {
	REASON_UPLINK_VXLAN = 0,
	REASON_UPLINK_FRONTEND = 1,
	REASON_UPLINK_PASS = 2,
	REASON_POD_REDIRECT = 3,
	REASON_POD_TO_NODE = 4,
	REASON_MAX = 5,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} node_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vxlan_cfg);
} vxlan_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct frontend_key);
	__type(value, __u8);
} frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} reasons SEC(".maps");

static __always_inline void count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&reasons, &reason);

	if (n)
		*n += 1; // per-CPU slot: no atomics needed
}

// The XDP_PASS flag makes a queue without a bound socket fall back to the kernel instead
// of dropping: an agent that is not (yet) running must not black-hole the node.
static __always_inline int to_socket(struct xdp_md *ctx, __u32 reason)
{
	count(reason);
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

// Returns the IPv4 header of an untagged Ethernet frame whose header and whole datagram
// (tot_len) lie inside the frame, or NULL. Checking tot_len too means a truncated frame is
// never redirected: the workers only get complete datagrams from the uplink.
static __always_inline struct iphdr *ipv4_header(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl_bytes, tot_len;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return NULL;
	if (ip->version != 4 || ip->ihl < 5)
		return NULL;
	ihl_bytes = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < ihl_bytes || (void *)ip + tot_len > data_end)
		return NULL;
	return ip;
}

// Uplink (the node's underlay NIC): redirect only what the datapath owns: VXLAN to our
// node address and port, and traffic to a Service frontend. Everything else (ARP, ssh,
// kubelet, IPv6, VLAN, malformed) goes to the kernel.
SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(data, data_end);
	struct frontend_key fk = {};
	struct vxlan_cfg *cfg;
	__u32 zero = 0;
	__u16 *ports;
	__u32 l4_min;

	if (!ip)
		goto pass;
	// Fragments: only the first carries ports, and the workers do not reassemble; the
	// kernel does.
	if (ip->frag_off & bpf_htons(0x3fff))
		goto pass;
	switch (ip->protocol) {
	case IPPROTO_UDP:
		l4_min = 8;
		break;
	case IPPROTO_TCP:
		l4_min = 20;
		break;
	case IPPROTO_SCTP:
		l4_min = 12;
		break;
	default:
		goto pass;
	}
	ports = (void *)ip + ip->ihl * 4;
	// Both the frame and the datagram must hold the fixed L4 header (the ports are the
	// first four bytes of all three protocols).
	if ((void *)ports + l4_min > data_end ||
	    ip->ihl * 4 + l4_min > bpf_ntohs(ip->tot_len))
		goto pass;

	cfg = bpf_map_lookup_elem(&vxlan_cfg, &zero);
	if (cfg && ip->protocol == IPPROTO_UDP && cfg->node_ip != 0 &&
	    ip->daddr == cfg->node_ip && bpf_ntohs(ports[1]) == cfg->port)
		return to_socket(ctx, REASON_UPLINK_VXLAN);

	fk.addr = ip->daddr;
	fk.port = bpf_ntohs(ports[1]);
	fk.proto = ip->protocol;
	if (bpf_map_lookup_elem(&frontends, &fk))
		return to_socket(ctx, REASON_UPLINK_FRONTEND);
pass:
	count(REASON_UPLINK_PASS);
	return XDP_PASS;
}

// Pod port (host side of a pod's veth): the datapath owns everything the pod sends except
// IPv4 to the node's own addresses, which the kernel answers directly so node <-> pod
// traffic (kubelet probes) never depends on the datapath (ARCHITECTURE.md §2, walk 6).
// Malformed frames are redirected too: the workers drop them with a reason.
SEC("xdp")
int xdp_pod(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(data, data_end);

	if (ip && bpf_map_lookup_elem(&node_addrs, &ip->daddr)) {
		count(REASON_POD_TO_NODE);
		return XDP_PASS;
	}
	return to_socket(ctx, REASON_POD_REDIRECT);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
