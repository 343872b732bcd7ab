// SPDX-License-Identifier: Apache-2.0
//
// kxdp's XDP programs: the only kernel code of the datapath. They classify, they never
// rewrite: a packet is either handed whole to the AF_XDP socket of the queue it arrived on
// (the userspace workers do all packet logic) or passed to the kernel untouched.
//
// One XSKMAP serves every port. Each port (uplink, host, every pod veth) owns a range of
// slots, one per rx queue, starting at a base the agent writes into `port_slots` (ifindex ->
// base and queue count); the socket serving the port's queue q sits at base + q. A map
// indexed by queue alone would not do: every pod veth has queues 0..W-1, so their sockets
// would collide. Ranges differ in width: a NIC's uplink has as many queues as its channels.
//
// Scope for now: Ethernet II + IPv4 only. VLAN-tagged frames and IPv6 are passed to the
// kernel on the uplink (and redirected like everything else on pod and host ports).
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
	// The program chose to redirect, but the receiving interface has no entry in
	// `port_slots`, or the packet's rx queue lies beyond the port's range (channels added
	// and not yet served), or the range falls outside `xsks`: passed to the kernel
	// instead. Counted in place of the redirect reason, so every packet bumps exactly one
	// counter.
	REASON_NO_SLOT = 5,
	// A pod sent TCP/UDP/SCTP to one of the node's addresses on a frontend (its own
	// node's NodePort): the datapath load-balances it.
	REASON_POD_NODEPORT = 6,
	// Whatever the kernel routed into kxdp-host, seen on kxdp-dp.
	REASON_HOST_REDIRECT = 7,
	REASON_MAX = 8,
};

// Rust twin: `XSKS_ENTRIES`.
#define XSKS_ENTRIES 4096

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSKS_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// Rust twin: `PortRange`. A port's range in `xsks`: slots base .. base + queues - 1.
struct port_range {
	__u32 base;
	__u32 queues;
};

// ifindex of a port -> its range in `xsks`. Rust twin: `PORT_SLOTS_ENTRIES`.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct port_range);
} port_slots SEC(".maps");

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

// Hands the frame to the socket of its port's slot for the queue it arrived on, counting
// `reason`. A port the agent has not (yet) given slots, a queue beyond its range, and a
// slot without a socket (the XDP_PASS flag of bpf_redirect_map) fall back to the kernel
// instead of dropping: an agent that is not (yet) running must not black-hole the node,
// and a queue the agent does not serve yet must not land in another port's slot (whose
// socket, bound to another device, would make the kernel drop it).
static __always_inline int to_socket(struct xdp_md *ctx, __u32 reason)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 queue = ctx->rx_queue_index;
	struct port_range *slots = bpf_map_lookup_elem(&port_slots, &ifindex);
	__u32 base;

	if (!slots || queue >= slots->queues) {
		count(REASON_NO_SLOT);
		return XDP_PASS;
	}
	base = slots->base;
	// Written so that base + queue cannot wrap around.
	if (base >= XSKS_ENTRIES || queue >= XSKS_ENTRIES - base) {
		count(REASON_NO_SLOT);
		return XDP_PASS;
	}
	count(reason);
	return bpf_redirect_map(&xsks, base + queue, XDP_PASS);
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

// The destination port (host order) of a TCP, UDP or SCTP datagram whose fixed L4 header
// lies inside both the frame and the datagram (the ports are the first four bytes of all
// three), or -1. Fragments are the caller's business.
static __always_inline int l4_dst_port(struct iphdr *ip, void *data_end)
{
	__u16 *ports;
	__u32 l4_min;

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
		return -1;
	}
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)ports + l4_min > data_end ||
	    ip->ihl * 4 + l4_min > bpf_ntohs(ip->tot_len))
		return -1;
	return bpf_ntohs(ports[1]);
}

static __always_inline int is_frontend(struct iphdr *ip, __u16 dport)
{
	struct frontend_key fk = {};

	fk.addr = ip->daddr;
	fk.port = dport;
	fk.proto = ip->protocol;
	return bpf_map_lookup_elem(&frontends, &fk) != NULL;
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
	struct vxlan_cfg *cfg;
	__u32 zero = 0;
	int dport;

	if (!ip)
		goto pass;
	// Fragments: only the first carries ports, and the workers do not reassemble; the
	// kernel does.
	if (ip->frag_off & bpf_htons(0x3fff))
		goto pass;
	dport = l4_dst_port(ip, data_end);
	if (dport < 0)
		goto pass;

	cfg = bpf_map_lookup_elem(&vxlan_cfg, &zero);
	if (cfg && ip->protocol == IPPROTO_UDP && cfg->node_ip != 0 &&
	    ip->daddr == cfg->node_ip && dport == cfg->port)
		return to_socket(ctx, REASON_UPLINK_VXLAN);

	if (is_frontend(ip, dport))
		return to_socket(ctx, REASON_UPLINK_FRONTEND);
pass:
	count(REASON_UPLINK_PASS);
	return XDP_PASS;
}

// Pod port (host side of a pod's veth): the datapath owns everything the pod sends except
// IPv4 to the node's own addresses, which the kernel answers directly so node <-> pod
// traffic (kubelet probes) never depends on the datapath (ARCHITECTURE.md §2, walk 6).
// The exception to the exception is a pod reaching its own node's NodePort: the datapath
// must load-balance that, so a first fragment (offset 0; it carries the ports) to a
// frontend is redirected. Later fragments carry no ports and go to the kernel.
// Malformed frames are redirected too: the workers drop them with a reason.
SEC("xdp")
int xdp_pod(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(data, data_end);
	int dport;

	if (!ip || !bpf_map_lookup_elem(&node_addrs, &ip->daddr))
		return to_socket(ctx, REASON_POD_REDIRECT);
	if (!(ip->frag_off & bpf_htons(0x1fff))) {
		dport = l4_dst_port(ip, data_end);
		if (dport >= 0 && is_frontend(ip, dport))
			return to_socket(ctx, REASON_POD_NODEPORT);
	}
	count(REASON_POD_TO_NODE);
	return XDP_PASS;
}

// Datapath side (kxdp-dp) of the host veth pair: the kernel routes into kxdp-host only what
// the datapath owns (host-network clients reaching the Service and cluster CIDRs, walk 8),
// and ARP for those next hops, which the datapath answers; so everything arriving here is
// redirected.
SEC("xdp")
int xdp_host(struct xdp_md *ctx)
{
	return to_socket(ctx, REASON_HOST_REDIRECT);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
