//! Conntrack table cost per operation: lookup hit, lookup miss, insert + remove, at 1k
//! entries (cache-resident) and 1M entries (the default capacity's working size, far
//! larger than any cache: every probe is a memory access).
//!
//! Each bench iteration runs a batch of `BATCH` operations over keys in shuffled order (the
//! probe keys are stored pre-shuffled so reading them is sequential and the figure is the
//! table's own). Hits alternate original and reply tuples. The 1M table is built once.
//! At the end a table of ns/op is printed from criterion's estimates.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use datapath::addr::IpKey;
use datapath::conntrack::{ConntrackConfig, FlowKey, Flows, NewFlow};

const BATCH: usize = 1024;
const TCP: u8 = 6;
const VIP: IpKey = IpKey::v4([10, 96, 0, 10]);

/// Client flow `i` to the VIP, DNATed to one of 256 backends.
fn flow(i: u32) -> NewFlow {
    let [a, b, c, d] = i.to_be_bytes();
    let client = IpKey::v4([10, 128 | a, b, c]);
    let port = 1024 + u16::from(d) * 200;
    let original = FlowKey {
        src: client,
        dst: VIP,
        src_port: port,
        dst_port: 443,
        proto: TCP,
    };
    let reply = FlowKey {
        src: IpKey::v4([10, 244, (i % 7) as u8, (i % 256) as u8]),
        dst: client,
        src_port: 8443,
        dst_port: port,
        proto: TCP,
    };
    NewFlow {
        original,
        reply,
        service: i % 100,
        return_port: 2,
        return_mac: [0x0a, 0x58, 10, 244, 1, 5],
        flags: 0,
    }
}

/// A deterministic shuffle (Fisher-Yates over xorshift).
fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

struct Case {
    label: &'static str,
    flows: Flows,
    hits: Vec<FlowKey>,
    misses: Vec<FlowKey>,
    fresh: Vec<NewFlow>,
}

fn build(label: &'static str, n: u32) -> Case {
    let mut flows = Flows::with_seed(ConntrackConfig::default(), 1);
    let start = Instant::now();
    for i in 0..n {
        flows.insert(flow(i), 0).expect("table has room");
    }
    let took = start.elapsed();
    println!(
        "built {label}: {n} flows in {:.1} ms ({:.0} ns/insert incl. growth), {} MiB allocated, {} B/entry at capacity",
        took.as_secs_f64() * 1e3,
        took.as_nanos() as f64 / f64::from(n),
        flows.allocated_bytes() >> 20,
        flows.bytes_per_entry(),
    );
    // At least a few batches of probes, so a small table is probed in varying order too.
    let probes = n.max(4 * BATCH as u32);
    let mut hits: Vec<FlowKey> = (0..probes)
        .map(|i| {
            let f = flow(i % n);
            if i % 2 == 0 { f.original } else { f.reply }
        })
        .collect();
    shuffle(&mut hits);
    let misses = hits
        .iter()
        .map(|k| FlowKey {
            dst_port: k.dst_port ^ 0x5a5a,
            ..*k
        })
        .collect();
    let fresh = (0..BATCH as u32).map(|i| flow(n + 1 + i)).collect();
    Case {
        label,
        flows,
        hits,
        misses,
        fresh,
    }
}

fn bench_case(c: &mut Criterion, case: &mut Case) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(BATCH as u64));
    let label = case.label;
    let mut at = 0usize;
    let (flows, hits, misses, fresh) = (&mut case.flows, &case.hits, &case.misses, &case.fresh);
    g.bench_function(format!("lookup_hit_{label}"), |b| {
        b.iter(|| {
            if at + BATCH > hits.len() {
                at = 0;
            }
            for k in &hits[at..at + BATCH] {
                black_box(flows.lookup(black_box(k), 1));
            }
            at += BATCH;
        });
    });
    at = 0;
    g.bench_function(format!("lookup_miss_{label}"), |b| {
        b.iter(|| {
            if at + BATCH > misses.len() {
                at = 0;
            }
            for k in &misses[at..at + BATCH] {
                black_box(flows.lookup(black_box(k), 1));
            }
            at += BATCH;
        });
    });
    g.bench_function(format!("insert_remove_{label}"), |b| {
        b.iter(|| {
            for f in fresh {
                let id = flows.insert(*black_box(f), 1).expect("room");
                flows.remove(id);
            }
        });
    });
    g.finish();
}

/// Reads criterion's mean estimate for each bench and prints ns/op.
fn print_ns_per_op(dir: &Path) {
    println!("\n{:<40} {:>10}", "bench", "ns/op");
    let Ok(entries) = std::fs::read_dir(dir.join("conntrack")) else {
        return;
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let Ok(text) = std::fs::read_to_string(path.join("new/estimates.json")) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(mean) = json["mean"]["point_estimate"].as_f64() {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            println!(
                "{:<40} {:>10.1}",
                format!("conntrack/{name}"),
                mean / BATCH as f64
            );
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
    let mut small = build("1k", 1000);
    bench_case(&mut c, &mut small);
    drop(small);
    let mut large = build("1m", 1_000_000);
    bench_case(&mut c, &mut large);
    c.final_summary();
    print_ns_per_op(&dir);
}
