//! How long kxdp-cni's ADD (and DEL) takes, as a runtime sees it: the built binary started
//! in a node namespace this benchmark creates, `CNI_*` in the environment, the
//! configuration on stdin, a pod namespace it creates, the real host-local IPAM plugin and
//! a fake agent (tests/support) answering on the agent_api socket from a thread.
//!
//! `cargo bench -p cni --bench add` (root; builds kxdp-cni in the release profile).
//! `KXDP_CNI_BENCH_ADDS` sets how many ADD/DEL rounds are timed (50), `KXDP_CNI_BIN` which
//! kxdp-cni runs (the static build, say). Each ADD is followed by a DEL of the same
//! attachment, timed separately; a few untimed rounds first warm the page cache.
//! Prints the CPU model and the kernel beside the numbers.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::TempDir;
use testkit::netns::Netns;

#[allow(
    dead_code,
    reason = "shared with tests/cni.rs, which uses all of it; the benchmark only a part"
)]
#[path = "../tests/support/mod.rs"]
mod support;
use support::{FakeAgent, Pod, Runtime, config, host_local, plugin_binary};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const WARM_UP: usize = 3;

fn main() {
    if !testkit::root::is_root() {
        println!("cni add benchmark: needs root (network namespaces); not run");
        return;
    }
    if !std::path::Path::new(HOST_LOCAL).is_file() {
        println!(
            "cni add benchmark: needs {HOST_LOCAL} (scripts/install-deps.sh installs \
             containernetworking-plugins); not run"
        );
        return;
    }
    let rounds: usize = std::env::var("KXDP_CNI_BENCH_ADDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(50);
    // Measured alone: the other root tests share the two vCPUs.
    let _lock = testkit::root::exclusive();

    let dir = TempDir::new("cni-bench");
    let node = Netns::with_ipv6("kcnib", "node");
    let pod_ns = Netns::with_ipv6("kcnib", "pod");
    let agent = FakeAgent::start(dir.path(), &node);
    let rt = Runtime { node: &node };
    let network = format!("kcnib-{}", std::process::id());
    let ipam = host_local(dir.path(), json!({"subnet": "10.244.1.0/24"}));
    let conf = config("1.0.0", &network, dir.path(), &agent.socket, ipam);
    let pod = Pod {
        name: "bench",
        netns_path: pod_ns.path(),
    };

    let mut adds = Vec::with_capacity(rounds);
    let mut dels = Vec::with_capacity(rounds);
    for round in 0..WARM_UP + rounds {
        let container = format!("kcnib-ctr-{round}");
        let started = Instant::now();
        rt.attachment("ADD", &container, &pod, &conf).expect_ok();
        let added = started.elapsed();
        let started = Instant::now();
        rt.attachment("DEL", &container, &pod, &conf).expect_ok();
        let deleted = started.elapsed();
        if round >= WARM_UP {
            adds.push(added);
            dels.push(deleted);
        }
    }
    drop(agent);

    let binary = plugin_binary();
    let size = std::fs::metadata(&binary).map_or(0, |m| m.len());
    println!("kxdp-cni ADD/DEL benchmark");
    println!("cpu:    {}", cpu_model());
    println!("kernel: {}", kernel());
    println!("binary: {} ({size} bytes)", binary.display());
    println!("load:   {} (/proc/loadavg after the runs)", loadavg());
    println!("rounds: {rounds} (after {WARM_UP} untimed)");
    println!("ADD     {}", Summary::of(&mut adds));
    println!("DEL     {}", Summary::of(&mut dels));
}

/// Nearest-rank percentiles of the samples, in milliseconds.
struct Summary {
    min: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: &mut [Duration]) -> Summary {
        samples.sort();
        let rank = |p: f64| {
            let n = samples.len();
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[i]
        };
        Summary {
            min: samples[0],
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "p50 {:7.2} ms  p99 {:7.2} ms  min {:7.2} ms  max {:7.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.min),
            ms(self.max)
        )
    }
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split_once(':')?
                    .1
                    .trim()
                    .to_string(),
            )
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

/// Other work on the machine shows in the numbers; this says how much there was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}
