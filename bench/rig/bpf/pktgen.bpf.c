// SPDX-License-Identifier: Apache-2.0
//
// The throughput rig's kernel side (rig::traffic): packet generators and a sink.
// None of it is part of the datapath.
//
// Two ways to generate, both writing each packet with write_next_packet() (below):
//
// - kxdp_gen runs under BPF_PROG_TEST_RUN in live-frames mode (where the kernel allows it):
//   every run turns the test frame into the next generated packet and sends it back out of
//   the run's ingress interface (XDP_TX, which live mode turns into a redirect to that
//   device). Userspace runs it with 4 bytes of XDP metadata in front of the frame; a packet
//   without metadata is a real one received where the program is also attached (userspace
//   attaches it to the generating interface so that the kernel's XDP dispatcher keeps it,
//   which spares every BPF_PROG_TEST_RUN call two synchronize_rcu()), and passes untouched.
//
// - The fan-out, for kernels that refuse live frames: userspace injects one frame into a
//   veth pair of its own; kxdp_fanout, on the pair's far end, redirects it with
//   BPF_F_BROADCAST to every entry of a devmap (fan_many), each entry being the generating
//   interface again, or to the one entry of fan_one; the kernel copies the frame once per
//   entry and runs kxdp_gen_copy (a devmap program) on each copy before transmitting it, so
//   each copy becomes the next generated packet. One injected frame, `copies` packets, all
//   as XDP frames (no socket buffers), like live frames.
//
// Both write the whole header on every packet (live mode recycles its pages without
// re-initialising them, so whatever the receiver wrote into a page is still there). The
// payload is left as it is (UDP goes without a checksum, TCP SYNs carry no payload: their
// IPv4 length ends at the TCP header and the rest of the frame is Ethernet padding).
//
// Flows: flow f = (per-CPU counter) mod `flows`; its source port is src_port + f mod
// src_ports and its source address src_ip + f / src_ports.
//
// kxdp_probe drops everything: a one-packet live-frames test run of it asks the kernel
// whether it allows live frames at all, without sending anything.
//
// kxdp_sink counts what arrives on an interface per CPU (packets, bytes, smallest and
// largest frame, UDP / TCP SYN / other) and, when asked, per (source address, source port,
// protocol); then drops or passes the frame.
//
// Every struct shared with Rust has a `#[repr(C)]` twin in `src/traffic/maps.rs` with a
// size assert; change both together.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Bytes of the header template: Ethernet + IPv4 + TCP (54) rounded up; the smallest frame.
#define HEADER_LEN 64
#define L3_OFF 14
#define L4_OFF 34

// Rust twin: `GenCfg`.
struct gen_cfg {
	__u8 header[HEADER_LEN]; // Ethernet + IPv4 + UDP/TCP, checksums zero
	__u32 flows;             // >= 1
	__u32 src_ports;         // >= 1
	__u32 src_ip;            // host order
	__u16 src_port;          // host order
	__u8 proto;              // IPPROTO_UDP or IPPROTO_TCP
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_cfg);
} gen_cfg SEC(".maps");

// Packets generated on each CPU: the flow counter.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_cursor SEC(".maps");

// Folds a 32-bit one's complement sum into 16 bits and complements it.
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// One's complement sum of `words` 16-bit words at `p` (taken as they lie in memory).
static __always_inline __u32 csum_words(const __u16 *p, int words)
{
	__u32 sum = 0;
	for (int i = 0; i < words; i++)
		sum += p[i];
	return sum;
}

// Writes the next generated packet over the frame at [data, data_end); false when the
// configuration is missing or the frame is shorter than the header template.
static __always_inline int write_next_packet(void *data, void *data_end)
{
	struct gen_cfg *cfg;
	__u32 zero = 0, flow, port;
	__u64 *cursor;

	cfg = bpf_map_lookup_elem(&gen_cfg, &zero);
	cursor = bpf_map_lookup_elem(&gen_cursor, &zero);
	if (!cfg || !cursor || cfg->flows == 0 || cfg->src_ports == 0)
		return 0;
	if (data + HEADER_LEN > data_end)
		return 0;
	flow = (__u32)(*cursor % cfg->flows);
	*cursor += 1;
	__builtin_memcpy(data, cfg->header, HEADER_LEN);

	struct iphdr *ip = data + L3_OFF;
	port = cfg->src_port + flow % cfg->src_ports;
	ip->saddr = bpf_htonl(cfg->src_ip + flow / cfg->src_ports);
	ip->check = csum_fold(csum_words((const __u16 *)ip, 10));

	if (cfg->proto == IPPROTO_UDP) {
		struct udphdr *udp = data + L4_OFF;
		udp->source = bpf_htons((__u16)port);
	} else {
		struct tcphdr *tcp = data + L4_OFF;
		__u32 sum;

		tcp->source = bpf_htons((__u16)port);
		// Pseudo-header (addresses, protocol, TCP length 20) + the 20-byte header.
		sum = csum_words((const __u16 *)&ip->saddr, 4);
		sum += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(struct tcphdr));
		sum += csum_words((const __u16 *)tcp, 10);
		tcp->check = csum_fold(sum);
	}
	return 1;
}

SEC("xdp")
int kxdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;

	if ((void *)(long)ctx->data_meta >= data)
		return XDP_PASS;
	if (!write_next_packet(data, (void *)(long)ctx->data_end))
		return XDP_ABORTED;
	return XDP_TX;
}

SEC("xdp")
int kxdp_probe(struct xdp_md *ctx)
{
	return XDP_DROP;
}

// The fan-out. An injected frame is recognised by its EtherType (IEEE 802 local
// experimental, which nothing else on the pair sends) and says in the byte after the
// Ethernet header which devmap copies it: FAN_MANY or FAN_ONE. Anything else arriving on
// the pair (the kernel's own IPv6 chatter, say) is dropped rather than multiplied.
#define FANOUT_ETHERTYPE 0x88b5
#define FAN_MANY 0
#define FAN_ONE 1

// Up to 256 copies: a burst the size of a veth's receive ring.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} fan_many SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} fan_one SEC(".maps");

// Injected frames seen, per CPU: how userspace knows the kernel has taken them.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fan_seen SEC(".maps");

SEC("xdp")
int kxdp_fanout(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 *which = data + sizeof(struct ethhdr);
	__u32 zero = 0;
	__u64 *seen;

	if ((void *)(which + 1) > data_end || eth->h_proto != bpf_htons(FANOUT_ETHERTYPE))
		return XDP_DROP;
	seen = bpf_map_lookup_elem(&fan_seen, &zero);
	if (seen)
		*seen += 1;
	if (*which == FAN_ONE)
		return bpf_redirect_map(&fan_one, 0, 0);
	return bpf_redirect_map(&fan_many, 0, BPF_F_BROADCAST);
}

// Runs on each copy the fan-out makes, before the device transmits it.
SEC("xdp/devmap")
int kxdp_gen_copy(struct xdp_md *ctx)
{
	if (!write_next_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return XDP_DROP;
	return XDP_PASS;
}

// Rust twin: `SinkCfg`.
struct sink_cfg {
	__u32 action;      // XDP_DROP or XDP_PASS
	__u32 track_flows; // 1: count per flow in sink_flows
};

// Rust twin: `SinkStats`. Per CPU, so plain increments.
struct sink_stats {
	__u64 packets;
	__u64 bytes;
	__u64 udp;
	__u64 tcp_syn;
	__u64 other;
	__u32 min_len; // 0 until the first packet
	__u32 max_len;
};

// Rust twin: `FlowKey`.
struct flow_key {
	__u32 saddr; // network order
	__u16 sport; // host order
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_cfg);
} sink_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_stats);
} sink_stats SEC(".maps");

// Flows past the capacity are not tracked (the totals still count them).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u64);
} sink_flows SEC(".maps");

SEC("xdp")
int kxdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sink_stats *st;
	struct sink_cfg *cfg;
	__u32 zero = 0, len;
	struct flow_key key = {};
	int l4 = 0;

	cfg = bpf_map_lookup_elem(&sink_cfg, &zero);
	st = bpf_map_lookup_elem(&sink_stats, &zero);
	if (!cfg || !st)
		return XDP_ABORTED;
	len = (__u32)(data_end - data);
	st->packets++;
	st->bytes += len;
	if (st->min_len == 0 || len < st->min_len)
		st->min_len = len;
	if (len > st->max_len)
		st->max_len = len;

	struct ethhdr *eth = data;
	struct iphdr *ip = data + L3_OFF;
	if ((void *)(ip + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IP) && ip->ihl == 5) {
		key.saddr = ip->saddr;
		key.proto = ip->protocol;
		if (ip->protocol == IPPROTO_UDP) {
			struct udphdr *udp = data + L4_OFF;
			if ((void *)(udp + 1) <= data_end) {
				key.sport = bpf_ntohs(udp->source);
				st->udp++;
				l4 = 1;
			}
		} else if (ip->protocol == IPPROTO_TCP) {
			struct tcphdr *tcp = data + L4_OFF;
			if ((void *)(tcp + 1) <= data_end && tcp->syn && !tcp->ack) {
				key.sport = bpf_ntohs(tcp->source);
				st->tcp_syn++;
				l4 = 1;
			}
		}
	}
	if (!l4)
		st->other++;
	else if (cfg->track_flows) {
		__u64 *n = bpf_map_lookup_elem(&sink_flows, &key);
		if (n) {
			*n += 1;
		} else {
			__u64 one = 1;
			bpf_map_update_elem(&sink_flows, &key, &one, BPF_NOEXIST);
		}
	}
	return cfg->action == XDP_PASS ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
