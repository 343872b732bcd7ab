//! The control plane at scale (issue 6): on a synthetic cluster (`bench::scale_cluster`),
//! how long the first build of one node's tables takes, how much memory they hold, and how
//! long one endpoint change takes from "applied to the input" to "published".
//!
//! ```sh
//! cargo run -p bench --release --bin scale -- --services 10000 --endpoints 10 \
//!     --policies 1000 --pods 5000 --nodes 50 --changes 20 --json scale.json
//! ```
//!
//! Build times are reported as min/median over `--runs` builds (the VM is shared). The
//! breakdown builds the same cluster without its NetworkPolicies (services only), compiles
//! the policies alone, and rebuilds every Maglev table of the generation (the Maglev share).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bench::scale_cluster::{ScaleSpec, SpecError, generate};
use bench::scale_harness::{
    ChangePath, ChangeSample, Elapsed, FullTranslate, HarnessError, Incremental, MemStatus,
    Stopwatch, TablesSize, measure_changes, mem_status, percentile, rebuild_maglev, reset_peak_rss,
    tables_size,
};
use clap::Parser;
use model::translate::{TranslateError, policy, translate};
use serde_json::{Value, json};

/// What stops the scale run.
#[derive(Debug, thiserror::Error)]
enum ScaleError {
    #[error("generating the cluster: {0}")]
    Spec(#[from] SpecError),
    #[error("translate: {0}")]
    Translate(#[from] TranslateError),
    /// The synthetic cluster is meant to translate cleanly; a warning means the generator
    /// made something translate skips, and the timings would not be of the whole cluster.
    #[error("translate warned ({count}), the generator is off: {first}")]
    TranslateWarned { count: usize, first: String },
    #[error("policy compile warned: {0}")]
    PolicyWarned(String),
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Parser)]
#[command(about = "Time and weigh translate on a synthetic cluster")]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Endpoint changes to time through the incremental translator.
    #[arg(long, default_value_t = 1000)]
    changes: usize,
    /// Endpoint changes to time through a full translate each (seconds apiece at scale).
    #[arg(long, default_value_t = 20)]
    full_changes: usize,
    /// Builds per measurement (min and median are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Maglev table size (a prime; kxdp's default is 65537).
    #[arg(long)]
    maglev_size: Option<u32>,
    /// `tableSize: auto`: each Maglev table sized by its endpoint count (at most the size).
    #[arg(long)]
    maglev_auto: bool,
    #[arg(long, default_value_t = ScaleSpec::default().seed)]
    seed: u64,
    /// Skip the services-only / policy-only / Maglev breakdown.
    #[arg(long)]
    no_breakdown: bool,
    /// Also write the numbers as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// min and median of `runs` timings, wall clock and on-CPU.
#[derive(Debug, Clone, Copy)]
struct Timing {
    min: Duration,
    median: Duration,
    cpu_min: Option<Duration>,
    cpu_median: Option<Duration>,
    runs: usize,
}

fn min_median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (
        v.first().copied().unwrap_or_default(),
        percentile(&v, 50.0).unwrap_or_default(),
    )
}

impl Timing {
    fn of(v: Vec<Elapsed>) -> Timing {
        let (min, median) = min_median(v.iter().map(|e| e.wall).collect());
        let cpu: Option<Vec<Duration>> = v.iter().map(|e| e.cpu).collect();
        let cpu = cpu.map(min_median);
        Timing {
            min,
            median,
            cpu_min: cpu.map(|c| c.0),
            cpu_median: cpu.map(|c| c.1),
            runs: v.len(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "min_ms": ms(self.min), "median_ms": ms(self.median),
            "cpu_min_ms": self.cpu_min.map(ms), "cpu_median_ms": self.cpu_median.map(ms),
            "runs": self.runs,
        })
    }

    fn row(&self, what: &str) {
        let cpu = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", ms(d)));
        println!(
            "  {what:<44} {:>9.1} {:>9.1}   {:>9} {:>9}   {}",
            ms(self.min),
            ms(self.median),
            cpu(self.cpu_min),
            cpu(self.cpu_median),
            self.runs
        );
    }
}

fn times<T>(
    runs: usize,
    mut f: impl FnMut() -> Result<T, ScaleError>,
) -> Result<Timing, ScaleError> {
    let mut v = Vec::new();
    for _ in 0..runs.max(1) {
        let watch = Stopwatch::start();
        let out = f()?;
        v.push(watch.stop());
        // The result is freed outside the timing, as a published generation is.
        drop(out);
    }
    Ok(Timing::of(v))
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_total = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|m| m.trim().to_string())
        .unwrap_or_default();
    json!({
        "cpu": model,
        "cpus": cpus,
        "mem_total": mem_total,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": read("/proc/loadavg").trim(),
    })
}

struct ChangeReport {
    name: String,
    samples: Vec<ChangeSample>,
}

impl ChangeReport {
    fn stat(&self, part: impl Fn(&ChangeSample) -> Duration) -> (Duration, Duration, Duration) {
        let mut v: Vec<Duration> = self.samples.iter().map(part).collect();
        v.sort();
        (
            percentile(&v, 50.0).unwrap_or_default(),
            percentile(&v, 99.0).unwrap_or_default(),
            v.last().copied().unwrap_or_default(),
        )
    }

    fn json(&self) -> Value {
        let part = |f: &dyn Fn(&ChangeSample) -> Duration| {
            let (p50, p99, max) = self.stat(f);
            json!({"p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max)})
        };
        json!({
            "path": self.name,
            "changes": self.samples.len(),
            "total": part(&|s| s.total),
            "build": part(&|s| s.build),
            "publish": part(&|s| s.publish),
            "cpu": part(&|s| s.cpu.unwrap_or_default()),
        })
    }
}

fn run(args: &Args) -> Result<(), ScaleError> {
    let spec = ScaleSpec {
        nodes: args.nodes,
        namespaces: args.namespaces,
        pods: args.pods,
        services: args.services,
        endpoints: args.endpoints,
        policies: args.policies,
        seed: args.seed,
    };
    let machine = machine();
    println!("machine: {machine}");
    println!("spec: {spec:?}");

    let before_gen = mem_status().unwrap_or_default();
    let start = Instant::now();
    let mut scale = generate(&spec)?;
    let generate_time = start.elapsed();
    if let Some(size) = args.maglev_size {
        scale.config.maglev.table_size = size;
    }
    scale.config.maglev.by_backends = args.maglev_auto;
    let node = scale.node_under_test.clone();
    let config = scale.config.clone();
    let input = mem_status().unwrap_or_default();
    println!(
        "generated in {:.0} ms: {} nodes, {} pods, {} Services ({} ports), {} EndpointSlices, \
         {} NetworkPolicies; RSS {:.0} MiB (cluster objects {:.0} MiB)",
        ms(generate_time),
        scale.cluster.nodes.len(),
        scale.cluster.pods.len(),
        scale.cluster.services.len(),
        scale.service_ports,
        scale.cluster.endpoint_slices.len(),
        scale.cluster.network_policies.len(),
        input.rss_kib as f64 / 1024.0,
        input.rss_kib.saturating_sub(before_gen.rss_kib) as f64 / 1024.0,
    );

    // The first build: timed, weighed, and kept as the published generation.
    let peak_reset = reset_peak_rss();
    let watch = Stopwatch::start();
    let first = translate(&scale.cluster, &config, &node, 1)?;
    let first_build = watch.stop();
    let built = mem_status().unwrap_or_default();
    if !first.warnings.is_empty() {
        return Err(ScaleError::TranslateWarned {
            count: first.warnings.len(),
            first: first.warnings[0].to_string(),
        });
    }
    let size = tables_size(&first.tables);
    let ports = first.tables.service_ports.len();
    let local_pods = first.tables.local_pods.len();
    let published = ArcSwap::from_pointee(first.tables);

    // More builds of the same for min/median (each freed before the next).
    let mut builds = vec![first_build];
    for _ in 1..args.runs.max(1) {
        let watch = Stopwatch::start();
        let t = translate(&scale.cluster, &config, &node, 1)?;
        builds.push(watch.stop());
        drop(t);
    }
    let build = Timing::of(builds);

    let breakdown = if args.no_breakdown {
        None
    } else {
        Some(breakdown(args, &scale, &published)?)
    };

    let mut paths: Vec<(Box<dyn ChangePath>, usize)> = vec![
        (
            Box::new(FullTranslate {
                config: config.clone(),
                node: node.clone(),
            }),
            args.full_changes,
        ),
        (
            Box::new(Incremental::new(config.clone(), &node)),
            args.changes,
        ),
    ];
    let mut reports = Vec::new();
    for (path, changes) in &mut paths {
        let mut cluster = scale.clone();
        // The same seed: both paths see the same changes (the first `changes` of them).
        let samples = measure_changes(
            path.as_mut(),
            &mut cluster,
            &published,
            *changes,
            args.seed ^ 0xc4a9,
        )?;
        reports.push(ChangeReport {
            name: path.name().to_string(),
            samples,
        });
    }
    let after_changes = mem_status().unwrap_or_default();

    let report = Report {
        build,
        input,
        built,
        peak_reset,
        after_changes,
        size,
        ports,
        local_pods,
        breakdown: breakdown.as_ref(),
        changes: &reports,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let mut doc = report_json(&machine, &spec, &report);
        doc["maglev_table_size"] = json!(config.maglev.table_size);
        doc["maglev_auto"] = json!(config.maglev.by_backends);
        doc["generate_ms"] = json!(ms(generate_time));
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text).map_err(|source| ScaleError::Write {
            path: path.clone(),
            source,
        })?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

struct Breakdown {
    services_only: Timing,
    policy_only: Timing,
    maglev: Timing,
    /// `Tables::clone` of the whole generation: what copy-then-patch would cost per change
    /// without sharing unchanged parts between generations.
    clone: Timing,
}

fn breakdown(
    args: &Args,
    scale: &bench::scale_cluster::ScaleCluster,
    published: &ArcSwap<datapath::tables::Tables>,
) -> Result<Breakdown, ScaleError> {
    let node = &scale.node_under_test;
    let mut no_policies = scale.cluster.clone();
    no_policies.network_policies.clear();
    let services_only = times(args.runs, || {
        Ok(translate(&no_policies, &scale.config, node, 1)?)
    })?;
    drop(no_policies);

    let tables = published.load_full();
    let policy_only = times(args.runs, || {
        let mut warnings = Vec::new();
        let p = policy::build(&scale.cluster, &tables.local_pods, &mut warnings);
        if warnings.is_empty() {
            Ok(p)
        } else {
            Err(ScaleError::PolicyWarned(warnings[0].to_string()))
        }
    })?;
    let mut maglev = Vec::new();
    for _ in 0..args.runs.max(1) {
        maglev.push(rebuild_maglev(&tables, 97)?);
    }
    let clone = times(args.runs, || Ok(tables.as_ref().clone()))?;
    Ok(Breakdown {
        services_only,
        policy_only,
        maglev: Timing::of(maglev),
        clone,
    })
}

struct Report<'a> {
    build: Timing,
    input: MemStatus,
    built: MemStatus,
    peak_reset: bool,
    after_changes: MemStatus,
    size: TablesSize,
    ports: usize,
    local_pods: usize,
    breakdown: Option<&'a Breakdown>,
    changes: &'a [ChangeReport],
}

impl Report<'_> {
    /// RSS the build added, bytes.
    fn rss_added(&self) -> f64 {
        self.built.rss_kib.saturating_sub(self.input.rss_kib) as f64 * 1024.0
    }
}

fn print_report(r: &Report<'_>) {
    println!();
    println!(
        "initial build (translate for one node: {} local pods, {} Service ports)",
        r.local_pods, r.ports
    );
    println!(
        "  {:<44} {:>9} {:>9}   {:>9} {:>9}   runs",
        "ms", "wall min", "median", "CPU min", "median"
    );
    r.build.row("translate");
    if let Some(b) = r.breakdown {
        b.services_only
            .row("  services only (NetworkPolicies removed)");
        b.policy_only.row("  policy compile only (policy::build)");
        b.maglev.row(&format!(
            "  Maglev tables only ({} tables)",
            r.size.maglev_tables
        ));
        let share = |part: Option<Duration>, whole: Option<Duration>| match (part, whole) {
            (Some(p), Some(w)) => format!(
                "{:.0} %",
                100.0 * p.as_secs_f64() / w.as_secs_f64().max(1e-9)
            ),
            _ => "-".to_string(),
        };
        println!(
            "  {:<44} {:>9} of the wall median, {} of the CPU median",
            "  Maglev share",
            share(Some(b.maglev.median), Some(r.build.median)),
            share(b.maglev.cpu_median, r.build.cpu_median)
        );
        b.clone.row("Tables::clone of the generation (for scale)");
    }
    println!();
    println!("memory");
    println!(
        "  {:<44} {:>10.0} MiB",
        "RSS before the build (cluster objects)",
        r.input.rss_kib as f64 / 1024.0
    );
    println!(
        "  {:<44} {:>10.0} MiB (+{:.0} MiB)",
        "RSS after the build",
        r.built.rss_kib as f64 / 1024.0,
        mib(r.rss_added())
    );
    println!(
        "  {:<44} {:>10.0} MiB{}",
        "peak RSS during the build (VmHWM)",
        r.built.hwm_kib as f64 / 1024.0,
        if r.peak_reset {
            ""
        } else {
            " (not reset: since start)"
        }
    );
    println!(
        "  {:<44} {:>10.0} MiB",
        "peak RSS by the end (VmHWM)",
        r.after_changes.hwm_kib as f64 / 1024.0
    );
    let s = &r.size;
    println!(
        "  {:<44} {:>10.1} MiB = Maglev {:.1} + service ports {:.1} + frontends {:.1} + policy {:.1} + other {:.1}",
        "tables, estimated from contents",
        mib(s.total() as f64),
        mib(s.maglev as f64),
        mib(s.service_ports as f64),
        mib(s.frontends as f64),
        mib(s.policy as f64),
        mib(s.other as f64)
    );
    let ports = r.ports.max(1) as f64;
    println!(
        "  {:<44} {:>10.1} KiB by RSS, {:.1} KiB estimated ({:.1} KiB without Maglev)",
        "per Service port",
        r.rss_added() / ports / 1024.0,
        (s.maglev + s.service_ports + s.frontends) as f64 / ports / 1024.0,
        (s.service_ports + s.frontends) as f64 / ports / 1024.0,
    );
    println!();
    println!("one endpoint change -> published (ArcSwap::store returned)");
    println!(
        "  {:<20} {:>8} {:>12} {:>12} {:>12}   {:>12} {:>12} {:>12}",
        "path", "changes", "p50 ms", "p99 ms", "max ms", "build p50", "publish p50", "CPU p50"
    );
    for c in r.changes {
        let (p50, p99, max) = c.stat(|s| s.total);
        let (b50, _, _) = c.stat(|s| s.build);
        let (s50, _, _) = c.stat(|s| s.publish);
        let (c50, _, _) = c.stat(|s| s.cpu.unwrap_or_default());
        println!(
            "  {:<20} {:>8} {:>12.3} {:>12.3} {:>12.3}   {:>12.3} {:>12.3} {:>12.3}",
            c.name,
            c.samples.len(),
            ms(p50),
            ms(p99),
            ms(max),
            ms(b50),
            ms(s50),
            ms(c50)
        );
    }
}

fn report_json(machine: &Value, spec: &ScaleSpec, r: &Report<'_>) -> Value {
    let s = &r.size;
    json!({
        "machine": machine,
        "spec": {
            "nodes": spec.nodes, "namespaces": spec.namespaces, "pods": spec.pods,
            "services": spec.services, "endpoints": spec.endpoints,
            "policies": spec.policies, "seed": spec.seed,
        },
        "local_pods": r.local_pods,
        "service_ports": r.ports,
        "initial_build": r.build.json(),
        "breakdown": r.breakdown.map(|b| json!({
            "services_only": b.services_only.json(),
            "policy_only": b.policy_only.json(),
            "maglev_only": b.maglev.json(),
            "maglev_tables": s.maglev_tables,
            "tables_clone": b.clone.json(),
        })),
        "memory": {
            "rss_before_build_kib": r.input.rss_kib,
            "rss_after_build_kib": r.built.rss_kib,
            "hwm_after_build_kib": r.built.hwm_kib,
            "hwm_reset_before_build": r.peak_reset,
            "hwm_at_end_kib": r.after_changes.hwm_kib,
            "tables_estimate_bytes": {
                "total": s.total(), "maglev": s.maglev, "service_ports": s.service_ports,
                "frontends": s.frontends, "policy": s.policy, "other": s.other,
            },
            "per_service_port_rss_bytes": r.rss_added() / r.ports.max(1) as f64,
        },
        "changes": r.changes.iter().map(ChangeReport::json).collect::<Vec<_>>(),
    })
}
