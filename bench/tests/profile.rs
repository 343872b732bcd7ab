//! The profiles as regression tests: instructions per packet under callgrind against the
//! checked-in baseline (bench/ipp-baseline.json), and a perf flame graph of the workload
//! that must show the pipeline's functions.
//!
//! Without valgrind / perf these skip with the reason, except under `CI=true`, where CI has
//! installed both (scripts/install-deps.sh): there a missing valgrind or perf fails, and
//! only a perf that is installed but cannot sample on the kernel skips.

use std::path::PathBuf;
use std::time::Duration;

use bench::flame::{self, FlameError};
use bench::ipp::{self, Baseline, IppError, IppOptions};
use bench::workload::PacketPath;

const EXE: &str = env!("CARGO_BIN_EXE_profile");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kxdp-profile-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn instructions_per_packet_stay_within_the_baseline() {
    match ipp::valgrind_version() {
        Ok(v) => eprintln!("using {v}"),
        Err(e) if in_ci() => panic!("{e} (CI=true: install-deps.sh installs valgrind)"),
        Err(e) => {
            eprintln!("SKIP instructions_per_packet_stay_within_the_baseline: {e}");
            return;
        }
    }
    let dir = work_dir("ipp");
    let opts = IppOptions {
        exe: PathBuf::from(EXE),
        paths: PacketPath::ALL.to_vec(),
        small: ipp::DEFAULT_SMALL,
        large: ipp::DEFAULT_LARGE,
        // Two runs, to check that the counts repeat.
        runs: 2,
        work_dir: dir.clone(),
    };
    let results = ipp::measure(&opts).unwrap_or_else(|e: IppError| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let profile = ipp::build_profile();
    eprint!("{}", ipp::table(&results, profile));
    for r in &results {
        // Everything in the workload is fixed (packets, time, the flow table's seed) but
        // the seeds of the tables' foldhash maps, random per process (the product keeps
        // them random against hash flooding): probe sequences differ between runs. Usually
        // by <= 2 of ~3000-8000 instructions (0.06%), but a fresh-root CI-style run on
        // 2026-12-07 measured 160 of 5000 (3.2%) on policy_new_denied_tcp, so 0.5% failed
        // for no fault of the code. 5% still catches a workload that does not repeat (one
        // that depends on time or on state left by an earlier run differs far more).
        assert!(
            r.spread() <= r.mean() * 0.05,
            "{}: runs differ by more than 5% ({:?}); the workload is meant to repeat",
            r.path,
            r.runs
        );
        assert!(r.mean() > 50.0, "{}: implausibly few instructions", r.path);
    }
    let baseline = Baseline::load(&ipp::baseline_path()).unwrap_or_else(|e| panic!("{e}"));
    let cmp = baseline.compare(profile, &results);
    for c in &cmp {
        eprintln!("{c}");
    }
    let bad: Vec<String> = cmp
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "instructions per packet above the baseline (+{:.0}% allowed) for the {profile} build:\n{}\n\
         If the increase is intended, update the baseline: \
         cargo run{} -p bench --bin profile -- ipp --write-baseline",
        baseline.tolerance * 100.0,
        bad.join("\n"),
        if profile == "release" {
            " --release"
        } else {
            ""
        }
    );
}

#[test]
fn flame_graph_of_the_workload_shows_the_pipeline() {
    let dir = work_dir("flame");
    match flame::perf_usable(&dir) {
        Ok(v) => eprintln!("using {v}"),
        Err(e @ FlameError::NotInstalled(_)) if in_ci() => {
            panic!("{e} (CI=true: install-deps.sh installs linux-perf)")
        }
        Err(e) => {
            // Also under CI: perf is there but this kernel (or its settings) refuses it.
            eprintln!("SKIP flame_graph_of_the_workload_shows_the_pipeline: {e}");
            return;
        }
    }
    let out = dir.join("flame.svg");
    let opts = flame::Options {
        target: flame::Target::Workload {
            exe: PathBuf::from(EXE),
        },
        duration: Duration::from_secs(2),
        out: out.clone(),
        call_graph: flame::CallGraph::Dwarf,
        frequency: 499,
        work_dir: dir.clone(),
        title: "test".into(),
    };
    let report = flame::record(&opts).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{} ns of CPU sampled in {} stacks -> {}",
        report.cpu_ns,
        report.stacks,
        out.display()
    );
    let svg = std::fs::read_to_string(&out).expect("svg written");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        svg.starts_with("<?xml") && svg.contains("<svg"),
        "not an SVG"
    );
    for name in [
        "datapath::pipeline::process",
        "bench::workload::Workload::run",
    ] {
        assert!(
            svg.contains(name),
            "the flame graph lacks {name}; {} ns sampled in {} stacks",
            report.cpu_ns,
            report.stacks
        );
    }
}
