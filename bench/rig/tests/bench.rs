//! `kxdp-bench` end to end (root): a short run of all four paths in one process, as a user
//! runs it, read back from its JSON: every path measured and delivering against the same
//! run's ceiling, the generator named, what reached node A counted, the ratios printed,
//! round trips answered over kxdp and both kernel paths, and nothing left behind.
//!
//! It runs the fan-out generator on every kernel: the one kernels that refuse live frames
//! run (CI's), so a machine that allows them tests the same path.
//!
//! Root tests print why and skip when not root, unless CI=true (then they fail).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use testkit::netns::netns_left;
use testkit::root::root_test;

const KXDP_BENCH: &str = env!("CARGO_BIN_EXE_kxdp-bench");

/// Runs `kxdp-bench --down` for the run's directory and prefix even when the test fails.
struct Cleanup {
    dir: PathBuf,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(KXDP_BENCH)
            .args(["--down", "--dir"])
            .arg(&self.dir)
            .args(["--prefix", &self.prefix])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn bench_measures_every_path_in_one_run() {
    let Some(_lock) = root_test("the bench test (namespaces, XDP programs)") else {
        return;
    };
    let prefix = format!("kxb{}t", std::process::id() % 1000);
    let guard = Cleanup {
        dir: PathBuf::from(format!("/run/kxdp-bench-{prefix}")),
        prefix: prefix.clone(),
    };
    let out = Command::new(KXDP_BENCH)
        .args(["--dir"])
        .arg(&guard.dir)
        .args([
            "--prefix",
            &prefix,
            "--sizes",
            "64,1500",
            "--warmup",
            "300ms",
            "--window",
            "700ms",
            "--requests",
            "100",
            "--background-pps",
            "5000",
            "--generator",
            "fanout",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run kxdp-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "== kxdp-bench: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kxdp-bench failed");
    assert!(
        netns_left(&prefix).is_empty(),
        "left: {:?}",
        netns_left(&prefix)
    );

    for line in [
        "(a) AF_XDP ceiling",
        "(b) kxdp",
        "(c) kernel",
        "(d) kernel",
        "b/a",
        "b/c",
    ] {
        assert!(stdout.contains(line), "no {line:?} in the table");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(guard.dir.join("bench.json")).unwrap()).unwrap();
    let svg = std::fs::read_to_string(guard.dir.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");

    assert_eq!(report["settings"]["generator"]["mode"], "fanout");
    assert_eq!(report["settings"]["generator"]["why"], "asked for");
    assert!(stdout.contains("generator: fanout"), "the generator named");
    assert!(
        report["machine"]["cpu_model"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        report["machine"]
    );
    assert_eq!(report["ratios"].as_array().map(Vec::len), Some(3));

    let paths = report["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 4);
    let delivered =
        |p: &serde_json::Value, i: usize| p["throughput"][i]["delivered_pps"].as_f64().unwrap();
    let ceiling = &paths[0];
    assert_eq!(ceiling["path"], "af-xdp-ceiling");
    for p in paths {
        let name = p["path"].as_str().unwrap();
        assert!(p["skipped"].is_null(), "{name} skipped: {}", p["skipped"]);
        let cells = p["throughput"].as_array().unwrap();
        assert_eq!(cells.len(), 2, "{name}");
        for (i, t) in cells.iter().enumerate() {
            let got = t["delivered_pps"].as_f64().unwrap();
            let offered = t["offered_pps"].as_f64().unwrap();
            let bound = t["generator_bound"].as_bool().unwrap();
            // Nothing is delivered that did not reach node A; node A forwarding (nearly)
            // all of it is what "generator-bound" means.
            assert!(got <= offered * 1.02, "{name}: {t}");
            assert_eq!(bound, got >= offered * 0.97, "{name}: {t}");
            // Against the same run's ceiling (same generator, same CPUs, same minute):
            // kxdp did 0.73-0.87 of it in every run so far, the kernel paths 0.23-0.3. A
            // path that forwards nothing, or a several-fold regression, fails here.
            let floor = if name == "kxdp" { 0.4 } else { 0.05 };
            assert!(
                got >= floor * delivered(ceiling, i),
                "{name} at {} B: {got:.0} pps < {floor} x the ceiling's {:.0}",
                t["frame_bytes"],
                delivered(ceiling, i)
            );
        }
        // The full-MTU cell really was full MTU: 1464 B from the pod, 1514 B on the uplink
        // for the VXLAN paths.
        assert_eq!(cells[1]["frame_bytes"], 1464, "{name}");
        if name == "af-xdp-ceiling" {
            assert!(p["latency"].as_array().unwrap().is_empty());
            continue;
        }
        assert_eq!(cells[1]["wire_bytes"], 1514, "{name}");
        let latency = p["latency"].as_array().unwrap();
        // Idle and beside the background, a new flow per request and one flow for all.
        assert_eq!(latency.len(), 4, "{name}");
        let kinds: Vec<(u64, bool)> = latency
            .iter()
            .map(|l| {
                (
                    l["background_pps"].as_u64().unwrap(),
                    l["one_flow"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [(0, false), (0, true), (5000, false), (5000, true)],
            "{name}"
        );
        for l in latency {
            // Every request through kxdp's ClusterIP is answered by a backend on node B.
            // The kernel paths are the baseline, not under test: a datagram lost there on
            // a loaded CI machine (the kernel drops on full backlogs) must not fail us.
            let answered = l["answered"].as_u64().unwrap();
            if name == "kxdp" {
                assert_eq!(answered, 100, "{name}: {l}");
            } else {
                assert!(answered >= 98, "{name}: {l}");
            }
            assert!(l["rtt_us"]["p50"].as_u64().unwrap() > 0, "{name}: {l}");
        }
    }
}
