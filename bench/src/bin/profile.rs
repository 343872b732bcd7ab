//! Profiles of the pure pipeline: instructions per packet under callgrind (`ipp`), flame
//! graphs from perf (`flame`), and the workload both of them run (`workload`).
//!
//!     cargo run --release -p bench --bin profile -- ipp [--runs 3] [--json]
//!     cargo run --release -p bench --bin profile -- flame [--pid PID] --duration 5s --out flame.svg

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::workload::{MAX_PACKETS, PacketPath, Workload, WorkloadError};
use bench::{flame, ipp};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "profile", about = "Profiles of kxdp's pure packet pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Instructions per packet for each path, counted by callgrind (spawns valgrind on
    /// this binary's `workload`).
    Ipp {
        /// Paths to measure (default: all).
        #[arg(long = "path", value_parser = parse_path)]
        paths: Vec<PacketPath>,
        #[arg(long, default_value_t = 1)]
        runs: usize,
        #[arg(long, default_value_t = ipp::DEFAULT_SMALL)]
        small: usize,
        #[arg(long, default_value_t = ipp::DEFAULT_LARGE)]
        large: usize,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Compare with this baseline file (exit status 1 on a regression).
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Write this build's numbers into the checked-in baseline (bench/ipp-baseline.json).
        #[arg(long)]
        write_baseline: bool,
        #[arg(long, default_value = "/tmp/kxdp-profile")]
        work_dir: PathBuf,
    },
    /// Samples with `perf record -e cpu-clock` and draws a flame graph (SVG) with inferno.
    Flame {
        /// A running process to sample (all threads), e.g. `kxdp agent`; without it, this
        /// binary's workload loops over every path.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "flame.svg")]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = CallGraphArg::Dwarf)]
        call_graph: CallGraphArg,
        #[arg(long, default_value_t = 999)]
        frequency: u32,
        #[arg(long, default_value = "/tmp/kxdp-profile")]
        work_dir: PathBuf,
    },
    /// Runs the workload: `--packets N` of `--capacity C` prepared frames once (what ipp
    /// counts), or `--duration D` of every frame again and again (what flame samples).
    Workload {
        /// A path name, or `all` (only with --duration).
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 1024)]
        packets: usize,
        #[arg(long)]
        capacity: Option<usize>,
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CallGraphArg {
    Dwarf,
    Fp,
}

/// What stops `profile`. Clap reports the value parsers' errors itself.
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    #[error("unknown path {name:?}; paths: {}", path_names())]
    UnknownPath { name: String },
    #[error("bad duration {0:?} (e.g. 5s, 500ms)")]
    Duration(String),
    #[error("duration {0:?} must be positive")]
    DurationNotPositive(String),
    #[error("own executable: {0}")]
    OwnExecutable(#[source] std::io::Error),
    #[error(transparent)]
    Ipp(#[from] ipp::IppError),
    #[error(transparent)]
    Flame(#[from] flame::FlameError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("encoding the baseline: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn parse_path(s: &str) -> Result<PacketPath, ProfileError> {
    PacketPath::from_name(s).ok_or_else(|| ProfileError::UnknownPath {
        name: s.to_string(),
    })
}

fn path_names() -> String {
    let names: Vec<&str> = PacketPath::ALL.iter().map(|p| p.name()).collect();
    names.join(", ")
}

/// `5s`, `500ms`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, ProfileError> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| ProfileError::Duration(s.to_string()))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(ProfileError::DurationNotPositive(s.to_string()));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("profile: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, ProfileError> {
    match cli.command {
        Cmd::Workload {
            path,
            packets,
            capacity,
            duration,
        } => workload(&path, packets, capacity, duration),
        Cmd::Ipp {
            paths,
            runs,
            small,
            large,
            json,
            baseline,
            write_baseline,
            work_dir,
        } => {
            let exe = std::env::current_exe().map_err(ProfileError::OwnExecutable)?;
            let opts = ipp::IppOptions {
                exe,
                paths: if paths.is_empty() {
                    PacketPath::ALL.to_vec()
                } else {
                    paths
                },
                small,
                large: large.min(MAX_PACKETS),
                runs: runs.max(1),
                work_dir,
            };
            let results = ipp::measure(&opts)?;
            let profile = ipp::build_profile();
            if json {
                println!("{}", ipp::to_json(&results, &opts, profile));
            } else {
                print!("{}", ipp::table(&results, profile));
            }
            if write_baseline {
                let file = ipp::baseline_path();
                let mut b = ipp::Baseline::load(&file).unwrap_or(ipp::Baseline {
                    tolerance: 0.10,
                    profiles: Default::default(),
                });
                b.set(profile, &results);
                let text = serde_json::to_string_pretty(&b.to_json())?;
                std::fs::write(&file, text + "\n").map_err(|source| ProfileError::Write {
                    path: file.clone(),
                    source,
                })?;
                eprintln!("wrote {} ({profile})", file.display());
            }
            if let Some(file) = baseline {
                let b = ipp::Baseline::load(&file)?;
                let cmp = b.compare(profile, &results);
                for c in &cmp {
                    eprintln!("{c}");
                }
                if cmp.iter().any(|c| !c.ok) {
                    return Ok(ExitCode::from(1));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Flame {
            pid,
            duration,
            out,
            call_graph,
            frequency,
            work_dir,
        } => {
            let target = match pid {
                Some(pid) => flame::Target::Pid(pid),
                None => flame::Target::Workload {
                    exe: std::env::current_exe().map_err(ProfileError::OwnExecutable)?,
                },
            };
            let title = match &target {
                flame::Target::Pid(pid) => format!("pid {pid}, {:?} of cpu-clock", duration),
                flame::Target::Workload { .. } => {
                    format!("profile workload (all paths), {:?} of cpu-clock", duration)
                }
            };
            let opts = flame::Options {
                target,
                duration,
                out,
                call_graph: match call_graph {
                    CallGraphArg::Dwarf => flame::CallGraph::Dwarf,
                    CallGraphArg::Fp => flame::CallGraph::FramePointer,
                },
                frequency,
                work_dir,
                title,
            };
            let report = flame::record(&opts)?;
            println!(
                "{}: {:.3} s of CPU sampled in {} distinct stacks (perf data {}, folded stacks {})",
                report.svg.display(),
                report.cpu_ns as f64 / 1e9,
                report.stacks,
                report.perf_data.display(),
                report.collapsed.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn workload(
    path: &str,
    packets: usize,
    capacity: Option<usize>,
    duration: Option<Duration>,
) -> Result<ExitCode, ProfileError> {
    let paths = if path == "all" && duration.is_some() {
        PacketPath::ALL.to_vec()
    } else {
        vec![parse_path(path)?]
    };
    match duration {
        None => {
            // One pass, nothing printed on success: the output must not depend on
            // `packets`, or it would show up in the instruction difference.
            let mut w = Workload::prepare(paths[0], capacity.unwrap_or(packets))?;
            w.run(packets)?;
        }
        Some(d) => {
            let mut ws = paths
                .iter()
                .map(|p| Workload::prepare(*p, capacity.unwrap_or(packets)))
                .collect::<Result<Vec<_>, _>>()?;
            let start = Instant::now();
            let mut passes = 0u64;
            while start.elapsed() < d {
                for w in &mut ws {
                    w.rerun()?;
                }
                passes += 1;
            }
            eprintln!(
                "workload: {passes} passes of {} packets over {} path(s) in {:?}",
                capacity.unwrap_or(packets),
                ws.len(),
                start.elapsed()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
