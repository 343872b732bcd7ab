//! ns/packet for each stage of the pure datapath and for the whole pipeline.
//!
//! Every pipeline bench processes batches of 64 frames, as a worker does per ring pass.
//! Each frame is re-copied into its buffer before processing (process rewrites in place),
//! so `copy_batch` measures that copy alone: subtract it for the datapath's own cost.
//! At the end a table of ns/packet is printed from criterion's estimates.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use datapath::conntrack::Flows;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::observer::NoObserver;
use datapath::overlay;
use datapath::pipeline::packet::{Family, parse_ip};
use datapath::tables::{PortId, Tables};
use datapath::wire::checksum;
use datapath::wire::vlan::walk_l2;
use datapath::{MacAddr, process};
use etherparse::PacketBuilder;

const BATCH: usize = 64;
const BUF: usize = 2048;

const GW_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
const CLIENT: [u8; 4] = [10, 244, 1, 5];
const WEB0: [u8; 4] = [10, 244, 1, 6];
const WEB1: [u8; 4] = [10, 244, 2, 7];
const VIP: [u8; 4] = [10, 96, 0, 10];

fn example_tables() -> Tables {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures/examples/two-node");
    let state = model::state::load_state_dir(&dir).expect("example state dir loads");
    model::translate::translate(&state.cluster, &state.config, "node-a", 1)
        .expect("example translates")
        .tables
}

fn port(t: &Tables, name: &str) -> PortId {
    t.port_by_name(name).expect("port exists")
}

/// 64 UDP packets of one pod, each its own flow (source ports differ).
fn udp_batch(src: [u8; 4], dst: [u8; 4], dport: u16, payload: usize) -> Vec<Vec<u8>> {
    (0..BATCH as u16)
        .map(|i| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2(MacAddr::for_ipv4(src).0, GW_MAC)
                .ipv4(src, dst, 64)
                .udp(40000 + i, dport)
                .write(&mut out, &vec![0u8; payload])
                .expect("packet builds");
            out
        })
        .collect()
}

fn tcp_batch(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<Vec<u8>> {
    (0..BATCH as u16)
        .map(|i| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2(MacAddr::for_ipv4(src).0, GW_MAC)
                .ipv4(src, dst, 64)
                .tcp(40000 + i, dport, 1, 64240)
                .ack(1)
                .write(&mut out, &[0u8; 6])
                .expect("packet builds");
            out
        })
        .collect()
}

/// Wraps node-b's encapsulation of `inner` towards node-a.
fn vxlan_from_node_b(inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    payload.extend_from_slice(inner);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(
        [2, 0, 0xc0, 0xa8, 0x32, 0x0b],
        [2, 0, 0xc0, 0xa8, 0x32, 0x0a],
    )
    .ipv4([192, 168, 50, 11], [192, 168, 50, 10], 64)
    .udp(50000, 4789)
    .write(&mut out, &payload)
    .expect("packet builds");
    out
}

struct Buffers(Vec<Vec<u8>>);

impl Buffers {
    fn new() -> Buffers {
        Buffers((0..BATCH).map(|_| vec![0u8; BUF]).collect())
    }
}

/// Runs `process` over a batch, re-loading each packet first.
fn run_batch(
    t: &Tables,
    flows: &mut Flows,
    in_port: PortId,
    packets: &[Vec<u8>],
    bufs: &mut Buffers,
) -> usize {
    let mut forwarded = 0;
    for (pkt, buf) in packets.iter().zip(bufs.0.iter_mut()) {
        let Some(mut frame) = Frame::load(buf, DEFAULT_HEADROOM, pkt) else {
            continue;
        };
        let v = process(t, flows, 1, in_port, &mut frame, &mut NoObserver);
        forwarded += usize::from(matches!(v, datapath::Verdict::Forward(_)));
    }
    forwarded
}

fn bench_stages(c: &mut Criterion) {
    let packets = udp_batch(CLIENT, WEB1, 8080, 18);
    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &packets {
                let l2 = walk_l2(black_box(p)).expect("valid");
                let h = parse_ip(p, l2.l3_offset, Family::V4).expect("valid");
                n += usize::from(h.dst_port);
            }
            n
        })
    });
    g.bench_function("checksum_nat_update", |b| {
        b.iter(|| {
            let mut sum = 0x1234u16;
            for i in 0..BATCH as u16 {
                sum = checksum::update_bytes(black_box(sum), &VIP, &WEB0);
                sum = checksum::update_u16(sum, 80, 8080 + i);
            }
            sum
        })
    });
    let big = vec![0x5au8; 1500];
    g.bench_function("checksum_full_1500B", |b| {
        b.iter(|| {
            let mut acc = 0u16;
            for _ in 0..BATCH {
                acc ^= checksum::data(black_box(&big));
            }
            acc
        })
    });
    let mut bufs = Buffers::new();
    let encap = overlay::Encap {
        src_mac: MacAddr([2, 0, 0xc0, 0xa8, 0x32, 0x0a]),
        dst_mac: MacAddr([2, 0, 0xc0, 0xa8, 0x32, 0x0b]),
        src_ip: [192, 168, 50, 10],
        dst_ip: [192, 168, 50, 11],
        src_port: 50000,
        dst_port: 4789,
        vni: 1,
    };
    g.bench_function("copy_batch", |b| {
        b.iter(|| {
            let mut n = 0;
            for (p, buf) in packets.iter().zip(bufs.0.iter_mut()) {
                n += Frame::load(buf, DEFAULT_HEADROOM, p).map_or(0, |f| f.len());
            }
            n
        })
    });
    g.bench_function("encap", |b| {
        b.iter(|| {
            let mut n = 0;
            for (p, buf) in packets.iter().zip(bufs.0.iter_mut()) {
                if let Some(mut f) = Frame::load(buf, DEFAULT_HEADROOM, p) {
                    n += usize::from(overlay::encap(&mut f, &encap).is_ok());
                }
            }
            n
        })
    });
    let outer: Vec<Vec<u8>> = packets.iter().map(|p| vxlan_from_node_b(p)).collect();
    let ep = overlay::Endpoint {
        local_ip: [192, 168, 50, 10],
        udp_port: 4789,
        vni: 1,
    };
    g.bench_function("decap", |b| {
        b.iter(|| {
            let mut n = 0;
            for (p, buf) in outer.iter().zip(bufs.0.iter_mut()) {
                let Some(mut f) = Frame::load(buf, DEFAULT_HEADROOM, p) else {
                    continue;
                };
                if let Ok(l2) = walk_l2(f.data()) {
                    n += usize::from(overlay::decap(&mut f, &l2, &ep).is_ok());
                }
            }
            n
        })
    });
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let t = example_tables();
    let client = port(&t, "pod-demo-client");
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut bufs = Buffers::new();

    let cases: Vec<(&str, PortId, Vec<Vec<u8>>)> = vec![
        (
            "pod_to_local_pod",
            client,
            udp_batch(CLIENT, WEB0, 8080, 18),
        ),
        (
            "pod_to_remote_pod_vxlan",
            client,
            udp_batch(CLIENT, WEB1, 8080, 18),
        ),
        (
            "clusterip_established_tcp",
            client,
            tcp_batch(CLIENT, VIP, 80),
        ),
        (
            "vxlan_in_to_local_pod",
            PortId::UPLINK,
            udp_batch(WEB1, CLIENT, 5000, 18)
                .iter()
                .map(|p| vxlan_from_node_b(p))
                .collect(),
        ),
        (
            "pod_to_remote_pod_1500B",
            client,
            udp_batch(CLIENT, WEB1, 8080, 1400),
        ),
    ];
    for (name, in_port, packets) in &cases {
        let mut flows = Flows::default();
        // Warm conntrack so Service flows measure the established path.
        let forwarded = run_batch(&t, &mut flows, *in_port, packets, &mut bufs);
        assert_eq!(forwarded, BATCH, "{name}: every packet is forwarded");
        g.bench_function(*name, |b| {
            b.iter(|| run_batch(&t, &mut flows, *in_port, black_box(packets), &mut bufs))
        });
    }
    g.finish();
}

/// Reads criterion's mean estimate for each bench and prints ns/packet.
fn print_ns_per_packet(dir: &Path) {
    println!("\n{:<40} {:>12}", "bench (batches of 64)", "ns/packet");
    for group in ["stage", "pipeline"] {
        let Ok(entries) = std::fs::read_dir(dir.join(group)) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for path in names {
            let est = path.join("new/estimates.json");
            let Ok(text) = std::fs::read_to_string(&est) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(mean) = json["mean"]["point_estimate"].as_f64() {
                let name = format!(
                    "{group}/{}",
                    path.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                );
                println!("{:<40} {:>12.1}", name, mean / BATCH as f64);
            }
        }
    }
}

fn main() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_stages(&mut c);
    bench_pipeline(&mut c);
    c.final_summary();
    print_ns_per_packet(&dir);
}
