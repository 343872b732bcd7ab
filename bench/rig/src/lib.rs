//! `kxdp-bench`: the throughput rig. In one run, on the same two CPUs (the generator on
//! one, node A's forwarding on the other), it measures what node A forwards from a client
//! pod towards backends on node B through (a) the AF_XDP engine doing nothing but a MAC
//! swap, (b) kxdp's full path (ClusterIP DNAT, NetworkPolicy, VXLAN), (c) the kernel as
//! kube-proxy (iptables mode) and Flannel configure it, (d) the same with kube-proxy's
//! nftables mode; then the request/response round trip over b, c and d, idle and beside a
//! background load. Prints the table with the ratios b/a, b/c, b/d and writes the raw
//! numbers (JSON) and a bar chart (SVG).
//!
//! plan.rs has the topology, rig.rs builds it and switches node A between kxdp and the
//! kernel, measure.rs measures, kernel_path.rs is the kube-proxy + Flannel configuration,
//! report.rs and plot.rs present. The traffic is the rig's own: [`traffic`] (generators
//! and sink, with their XDP program `bpf/pktgen.bpf.c`, built by build.rs) and
//! [`ceiling`] (path a's forwarder, on xdp-redirect's workers); [`traffic_cli`] is the
//! `pktgen` / `pktsink` front end to them.

pub mod ceiling;
pub mod error;
pub mod kernel_path;
pub mod measure;
pub mod plan;
pub mod plot;
pub mod report;
pub mod rig;
pub mod traffic;
pub mod traffic_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use xdp_redirect::Interface;

use crate::ceiling::CeilingForwarder;
pub use crate::error::{BenchError, SettingsError};
use crate::traffic::{GenMode, GenRequest};
use crate::traffic_cli::{in_netns, parse_duration};
use kernel_path::ProxyMode;
use lab::layout::UPLINK;
use lab::{Lab, LabError, Runtime, StateSource, cmd};
use measure::{Latency, Throughput};
use report::{BenchReport, GeneratorUsed, Machine, PathId, PathResult, Settings};
use rig::Rig;

pub const DEFAULT_DIR: &str = "/run/kxdp-bench";
pub const DEFAULT_PREFIX: &str = "kxb";

/// `kxdp-bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Where the bench keeps its state dir, logs, PIDs, and writes bench.json / bench.svg.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Start of every namespace name (a lowercase letter, then letters or digits, <= 8).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Pod frame sizes in bytes (Ethernet header included); above the pod MTU's largest
    /// frame (1464 B: 1450 MTU + 14) means a full-MTU packet.
    #[arg(long, value_delimiter = ',', default_value = "64,512,1500")]
    pub sizes: Vec<u16>,
    /// Distinct flows (source ports) the generator cycles through.
    #[arg(long, default_value_t = 1024)]
    pub flows: u32,
    /// Load before counting starts (flows set up, rings and queues at steady state).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long the sink counts for each cell of the table.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub window: Duration,
    /// Measure every cell this many times (warm-up and window each) and report the median
    /// (all of them are in the JSON): on a shared machine one window can be an outlier.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Request/response round trips per latency measurement.
    #[arg(long, default_value_t = 2000)]
    pub requests: u32,
    /// Background packets/s for the "moderate load" latency (64 B, to the Service).
    #[arg(long, default_value_t = 50_000)]
    pub background_pps: u64,
    /// Which paths to measure (a,b,c,d).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d")]
    pub paths: Vec<char>,
    /// The generator: auto (the fastest the kernel allows: live frames, else the fan-out),
    /// live, fanout or afxdp.
    #[arg(long, default_value = "auto")]
    pub generator: GenRequest,
    /// CPU of the generator (and of the veth work its sends cause).
    #[arg(long, default_value_t = 0)]
    pub generator_cpu: usize,
    /// The one CPU node A forwards on: kxdp's worker, the ceiling's worker, the kernel
    /// path's receive work (RPS). Default: the last CPU.
    #[arg(long)]
    pub forwarding_cpu: Option<usize>,
    /// Where to write the raw numbers (default DIR/bench.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to write the bar chart (default DIR/bench.svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Leave the namespaces and processes up afterwards (remove with `kxdp-bench --down`).
    #[arg(long)]
    pub keep: bool,
    /// Only remove what an earlier `--keep` run left.
    #[arg(long)]
    pub down: bool,
}

fn progress(msg: &str) {
    eprintln!("kxdp-bench: {msg}");
}

pub fn main(args: BenchArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kxdp-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &BenchArgs) -> Result<(), BenchError> {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BenchError::NotRoot);
    }
    let lab = Lab::new(
        &args.dir,
        &args.prefix,
        1,
        StateSource::Dir,
        Runtime::Namespaces,
        None,
        false,
    )?;
    if args.down {
        return Ok(rig::down(&lab)?);
    }
    let settings = settings(args)?;
    progress(&format!(
        "generator: {} ({})",
        settings.generator.mode, settings.generator.why
    ));
    lab.cni_binary()?;
    let load_before = load_average();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    progress(&format!(
        "building the topology in namespaces {}-* (node A: kxdp agent, node B: Flannel-style kernel node)",
        args.prefix
    ));
    let mut rig = Rig::up(lab.clone(), settings.generator_cpu, settings.forwarding_cpu).map_err(
        |source| BenchError::Up {
            dir: args.dir.clone(),
            source,
        },
    )?;
    let measured = measure_all(&mut rig, args, &settings);
    if args.keep {
        progress(&format!(
            "left up (--keep): `kxdp-bench --down --dir {}` removes it",
            args.dir.display()
        ));
    } else {
        rig::down(&lab).map_err(BenchError::Down)?;
    }
    let paths = measured?;
    let report = BenchReport::new(started_unix, machine(load_before), settings, paths);
    print!("{}", report::render(&report));
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| args.dir.join("bench.json"));
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| args.dir.join("bench.svg"));
    let json = serde_json::to_string_pretty(&report).map_err(BenchError::Json)?;
    write(&json_path, json)?;
    let title = format!(
        "node A forwarding, Mpps ({} flows, 1 forwarding CPU, kernel {})",
        report.settings.flows, report.machine.kernel
    );
    write(&svg_path, plot::svg(&report, &title))?;
    println!(
        "raw numbers: {}\nchart: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

fn write(path: &std::path::Path, contents: String) -> Result<(), BenchError> {
    std::fs::write(path, contents).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn settings(args: &BenchArgs) -> Result<Settings, BenchError> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let forwarding_cpu = args.forwarding_cpu.unwrap_or(ncpu - 1);
    for cpu in [args.generator_cpu, forwarding_cpu] {
        if cpu >= ncpu {
            return Err(SettingsError::Cpu { cpu, ncpu }.into());
        }
    }
    if args.sizes.is_empty() || args.sizes.len() > 12 || args.sizes.iter().any(|&s| s < 64) {
        return Err(SettingsError::Sizes(args.sizes.clone()).into());
    }
    if let Some(p) = args.paths.iter().find(|p| !"abcd".contains(**p)) {
        return Err(SettingsError::Path(*p).into());
    }
    if args.repeat == 0 || args.repeat > 100 {
        return Err(SettingsError::Repeat(args.repeat).into());
    }
    if args.flows == 0 || args.flows > 20_000 {
        return Err(SettingsError::Flows(args.flows).into());
    }
    let choice = crate::traffic::choose(args.generator).map_err(BenchError::Generator)?;
    Ok(Settings {
        generator: GeneratorUsed {
            kind: choice.mode,
            mode: choice.mode.to_string(),
            why: choice.why,
        },
        sizes: args.sizes.clone(),
        flows: args.flows,
        warmup_s: args.warmup.as_secs_f64(),
        window_s: args.window.as_secs_f64(),
        requests: args.requests,
        repeat: args.repeat,
        generator_cpu: args.generator_cpu,
        forwarding_cpu,
    })
}

/// Every path in the only order the rig allows (kxdp while its agent runs, then the
/// ceiling on the same ports, then the kernel), reported in a, b, c, d order.
fn measure_all(
    rig: &mut Rig,
    args: &BenchArgs,
    s: &Settings,
) -> Result<Vec<PathResult>, BenchError> {
    let wanted = |p: PathId| args.paths.contains(&p.letter());
    let mut results: Vec<PathResult> = PathId::ALL.iter().map(|&p| PathResult::new(p)).collect();
    let slot = |id: PathId| PathId::ALL.iter().position(|&p| p == id).unwrap_or(0);

    if wanted(PathId::Kxdp) {
        let r = &mut results[slot(PathId::Kxdp)];
        r.throughput = sweep(rig, args, s, PathId::Kxdp)?;
        r.latency = latencies(rig, args, s, PathId::Kxdp)?;
    }
    rig.stop_agent()?;
    if wanted(PathId::AfXdpCeiling) {
        let forwarder = start_ceiling(rig)?;
        let t = sweep(rig, args, s, PathId::AfXdpCeiling);
        let stats = forwarder.stop().map_err(BenchError::Ceiling)?;
        progress(&format!(
            "ceiling worker: {} received, {} forwarded",
            stats.rx_packets, stats.forwarded
        ));
        results[slot(PathId::AfXdpCeiling)].throughput = t?;
    }
    for (id, mode) in [
        (PathId::KernelIptables, ProxyMode::Iptables),
        (PathId::KernelNftables, ProxyMode::Nftables),
    ] {
        if !wanted(id) {
            continue;
        }
        let r = &mut results[slot(id)];
        if let Some(why) = kernel_path::unavailable(mode) {
            r.skipped = Some(why);
            continue;
        }
        rig.enter_kernel_mode(mode)?;
        let measured = sweep(rig, args, s, id).and_then(|t| Ok((t, latencies(rig, args, s, id)?)));
        rig.leave_kernel_mode(mode)?;
        (r.throughput, r.latency) = measured?;
    }
    for r in &mut results {
        if !wanted(r.path) && r.skipped.is_none() {
            r.skipped = Some("not asked for (--paths)".into());
        }
    }
    Ok(results)
}

/// The running number of a measurement: path `path`, size `i` (0..12) or latency level
/// `12 + i`: each gets source ports of its own.
fn cell(path: PathId, i: usize) -> usize {
    PathId::ALL.iter().position(|&p| p == path).unwrap_or(0) * 16 + i
}

fn sweep(
    rig: &Rig,
    args: &BenchArgs,
    s: &Settings,
    path: PathId,
) -> Result<Vec<Throughput>, BenchError> {
    s.sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let port = measure::first_src_port(cell(path, i), s.flows);
            let spec = measure::packet_spec(rig.client_ip, size, s.flows, port);
            let samples = (0..args.repeat)
                .map(|_| {
                    measure::throughput(
                        rig,
                        generator_mode(s),
                        &spec,
                        args.warmup,
                        args.window,
                        path.wire_overhead(),
                    )
                    .map_err(|source| BenchError::Throughput {
                        path: path.letter(),
                        size,
                        source,
                    })
                })
                .collect::<Result<Vec<_>, BenchError>>()?;
            let t = measure::median(samples);
            progress(&format!(
                "({}) {:>4} B: {}{:.3} Mpps delivered ({:.3} Mpps reached node A, the generator sent {:.3}){}",
                path.letter(),
                size,
                if t.generator_bound { ">=" } else { "" },
                t.delivered_pps / 1e6,
                t.offered_pps / 1e6,
                t.generator_pps / 1e6,
                if t.samples_mpps.len() > 1 {
                    format!(", median of {:?}", t.samples_mpps)
                } else {
                    String::new()
                }
            ));
            Ok(t)
        })
        .collect()
}

/// Round trips idle and beside the background load, new flows and one flow each.
fn latencies(
    rig: &Rig,
    args: &BenchArgs,
    s: &Settings,
    path: PathId,
) -> Result<Vec<Latency>, BenchError> {
    let levels = [0, args.background_pps];
    let mut out = Vec::new();
    for (i, &bg) in levels.iter().enumerate() {
        for one_flow in [false, true] {
            let l = measure::latency(
                rig,
                generator_mode(s),
                args.requests,
                bg,
                one_flow,
                cell(path, 12 + i),
            )
            .map_err(|source| BenchError::Latency {
                path: path.letter(),
                source,
            })?;
            progress(&format!(
                "({}) round trips, {}, {bg} pps beside: {}/{} answered, {}",
                path.letter(),
                if one_flow {
                    "one flow"
                } else {
                    "a new flow each"
                },
                l.answered,
                l.requests,
                l.rtt_us.map_or("no answers".into(), |r| format!(
                    "p50 {} us, p99 {} us",
                    r.p50, r.p99
                ))
            ));
            out.push(l);
        }
    }
    Ok(out)
}

/// The ceiling's forwarder in node A: the client's veth in, the uplink out, its worker on
/// the forwarding CPU.
fn start_ceiling(rig: &Rig) -> Result<CeilingForwarder, BenchError> {
    let node = rig.node_a();
    let (ingress, cpu) = (rig.client_host_veth.as_str(), rig.forward_cpu);
    in_netns(Some(&node), || {
        let ingress = Interface::by_name(ingress).map_err(BenchError::Interface)?;
        let egress = Interface::by_name(UPLINK).map_err(BenchError::Interface)?;
        CeilingForwarder::start(&ingress, &egress, Some(cpu)).map_err(BenchError::Ceiling)
    })
}

/// The generator the settings chose.
fn generator_mode(s: &Settings) -> GenMode {
    s.generator.kind
}

/// The 1-minute load average (0 when /proc/loadavg cannot be read).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn machine(load_before: f64) -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
    let iptables = cmd::run(std::process::Command::new("iptables").arg("--version")).map_or_else(
        |e: LabError| format!("unavailable: {e}"),
        |s| s.trim().to_string(),
    );
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        kernel,
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iptables,
        load_before,
        load_after: load_average(),
    }
}
