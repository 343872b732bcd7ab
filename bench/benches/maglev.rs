//! Maglev table build time and lookup cost.
//!
//! Builds run at the default size (M = 65537) for 10, 100 and 1000 backends, unweighted,
//! plus 1000 backends with mixed weights and 1000 at the paper's large size (655373).
//! The paper reports 1.8-22.9 ms per build; our target is <= 5 ms at M = 65537, N = 1000.
//! Lookups run over a batch of precomputed flow hashes, so the figure is `lookup` alone.
//! At the end a table of ms per build and ns per lookup is printed from criterion's estimates.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use datapath::IpKey;
use datapath::lb::maglev::{DEFAULT_SEED, DEFAULT_TABLE_SIZE, MaglevTable, backend_key};

const LOOKUPS: usize = 1024;
const LARGE_TABLE_SIZE: u32 = 655_373;

fn keys(n: u32) -> Vec<[u8; 18]> {
    (0..n)
        .map(|i| {
            let [_, a, b, c] = i.to_be_bytes();
            backend_key(IpKey::v4([10, a, b, c]), 8080)
        })
        .collect()
}

fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(20);
    let cases: [(&str, u32, u32, bool); 5] = [
        ("m65537_n10", DEFAULT_TABLE_SIZE, 10, false),
        ("m65537_n100", DEFAULT_TABLE_SIZE, 100, false),
        ("m65537_n1000", DEFAULT_TABLE_SIZE, 1000, false),
        ("m65537_n1000_weighted", DEFAULT_TABLE_SIZE, 1000, true),
        ("m655373_n1000", LARGE_TABLE_SIZE, 1000, false),
    ];
    for (name, m, n, weighted) in cases {
        let keys = keys(n);
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        // Weights 1..=8: the counters run about 1.8 rounds per table's worth of slots.
        let weights: Vec<u32> = (0..n).map(|i| i % 8 + 1).collect();
        let w = weighted.then_some(weights.as_slice());
        g.bench_function(name, |b| {
            b.iter(|| MaglevTable::build(black_box(&refs), w, m, DEFAULT_SEED).expect("builds"))
        });
    }
    g.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let keys = keys(100);
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let table = MaglevTable::build(&refs, None, DEFAULT_TABLE_SIZE, DEFAULT_SEED).expect("builds");
    let mut x = 0x9e37_79b9u32;
    let hashes: Vec<u32> = (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect();
    let mut g = c.benchmark_group("maglev_lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.bench_function("m65537_n100", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for &h in black_box(&hashes) {
                sum = sum.wrapping_add(table.lookup(h).unwrap_or(0));
            }
            sum
        })
    });
    g.finish();
}

fn mean_ns(dir: &Path, group: &str, name: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(dir.join(group).join(name).join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Reads criterion's mean estimates and prints ms per build and ns per lookup.
fn print_summary(dir: &Path) {
    println!("\n{:<40} {:>12}", "maglev build", "ms/build");
    let Ok(entries) = std::fs::read_dir(dir.join("maglev_build")) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n != "report")
        .collect();
    names.sort();
    for name in names {
        if let Some(ns) = mean_ns(dir, "maglev_build", &name) {
            println!("{:<40} {:>12.3}", name, ns / 1e6);
        }
    }
    if let Some(ns) = mean_ns(dir, "maglev_lookup", "m65537_n100") {
        println!("{:<40} {:>12}", "maglev lookup", "ns/lookup");
        println!("{:<40} {:>12.2}", "m65537_n100", ns / LOOKUPS as f64);
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
    bench_build(&mut c);
    bench_lookup(&mut c);
    c.final_summary();
    print_summary(&dir);
}
