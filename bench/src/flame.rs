//! Flame graphs from `perf record -e cpu-clock` (this VM has no PMU, so no `cycles`), drawn
//! with inferno: either a live process (`--pid`, e.g. a running `kxdp agent`, all its
//! threads) or the profiling workload looping over every packet path.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use inferno::collapse::Collapse;
use inferno::collapse::perf::{Folder, Options as CollapseOptions};
use inferno::flamegraph::{self, Options as FlameOptions};

#[derive(Debug, thiserror::Error)]
pub enum FlameError {
    /// No `perf` binary at all (Debian: package linux-perf).
    #[error("perf is not installed: {0}")]
    NotInstalled(String),
    /// perf is there but cannot sample here (kernel, perf_event_paranoid, container).
    #[error("perf cannot sample on this kernel: {0}")]
    NoPerf(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("perf recorded no samples (is the process busy? is the duration long enough?)")]
    NoSamples,
}

/// What to sample.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process, every thread of it.
    Pid(u32),
    /// `exe workload --path all --duration D`: the profiling workload in a loop.
    Workload { exe: PathBuf },
}

/// How perf unwinds stacks: `dwarf` works on binaries built without frame pointers (ours,
/// by default); `fp` is cheaper but gives broken stacks there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallGraph {
    Dwarf,
    FramePointer,
}

impl CallGraph {
    fn perf_arg(self) -> &'static str {
        match self {
            CallGraph::Dwarf => "dwarf",
            CallGraph::FramePointer => "fp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub duration: Duration,
    /// The SVG to write.
    pub out: PathBuf,
    pub call_graph: CallGraph,
    /// Samples per second.
    pub frequency: u32,
    /// Where perf.data and the collapsed stacks go (kept, for `perf report`).
    pub work_dir: PathBuf,
    pub title: String,
}

/// What a recording produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub perf_data: PathBuf,
    pub collapsed: PathBuf,
    pub svg: PathBuf,
    /// Distinct stacks in the collapsed output, and the CPU time they add up to: perf
    /// weighs each cpu-clock sample by its period, in nanoseconds, and so does the graph.
    pub stacks: usize,
    pub cpu_ns: u64,
}

/// Checks that perf can sample on this kernel: a 0.1 s cpu-clock recording of `true`.
pub fn perf_usable(work_dir: &Path) -> Result<String, FlameError> {
    let version = Command::new("perf")
        .arg("--version")
        .output()
        .map_err(|e| FlameError::NotInstalled(format!("cannot run `perf`: {e}")))?;
    if !version.status.success() {
        return Err(FlameError::NoPerf(format!(
            "`perf --version` exited with {} (Debian's wrapper says this when no perf \
             matches the kernel): {}",
            version.status,
            String::from_utf8_lossy(&version.stderr).trim()
        )));
    }
    std::fs::create_dir_all(work_dir).map_err(|e| FlameError::Io(work_dir.to_path_buf(), e))?;
    let data = work_dir.join("perf-check.data");
    let out = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-g", "-o"])
        .arg(&data)
        .args(["--", "true"])
        .output()
        .map_err(|e| FlameError::NoPerf(e.to_string()))?;
    let _ = std::fs::remove_file(&data);
    if !out.status.success() {
        return Err(FlameError::NoPerf(format!(
            "`perf record -e cpu-clock -g -- true` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&version.stdout).trim().to_string())
}

/// Records, collapses and draws.
pub fn record(opts: &Options) -> Result<Report, FlameError> {
    perf_usable(&opts.work_dir)?;
    let perf_data = opts.work_dir.join("perf.data");
    let secs = format!("{:.3}", opts.duration.as_secs_f64());
    let mut perf = Command::new("perf");
    perf.args(["record", "-e", "cpu-clock", "-F"])
        .arg(opts.frequency.to_string())
        .args(["--call-graph", opts.call_graph.perf_arg(), "-o"])
        .arg(&perf_data);
    match &opts.target {
        // perf stops recording when the command after `--` exits.
        Target::Pid(pid) => perf.args(["-p", &pid.to_string(), "--", "sleep", &secs]),
        Target::Workload { exe } => {
            perf.arg("--")
                .arg(exe)
                .args(["workload", "--path", "all", "--duration", &secs])
        }
    };
    run(&mut perf, "perf record")?;

    // perf script | collapse (inferno's port of stackcollapse-perf).
    let collapsed = opts.work_dir.join("stacks.folded");
    let mut script = Command::new("perf")
        .args(["script", "--no-inline", "-i"])
        .arg(&perf_data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| FlameError::Command {
            command: "perf script".into(),
            detail: e.to_string(),
        })?;
    let stdout = script.stdout.take().ok_or_else(|| FlameError::Command {
        command: "perf script".into(),
        detail: "no stdout".into(),
    })?;
    let folded =
        std::fs::File::create(&collapsed).map_err(|e| FlameError::Io(collapsed.clone(), e))?;
    let collapse_result = Folder::from(CollapseOptions::default())
        .collapse(BufReader::new(stdout), BufWriter::new(folded));
    let status = script.wait().map_err(|e| FlameError::Command {
        command: "perf script".into(),
        detail: e.to_string(),
    })?;
    collapse_result.map_err(|e| FlameError::Io(collapsed.clone(), e))?;
    if !status.success() {
        return Err(FlameError::Command {
            command: "perf script".into(),
            detail: status.to_string(),
        });
    }

    let text =
        std::fs::read_to_string(&collapsed).map_err(|e| FlameError::Io(collapsed.clone(), e))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let cpu_ns: u64 = lines
        .iter()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    if lines.is_empty() || cpu_ns == 0 {
        return Err(FlameError::NoSamples);
    }
    let svg = std::fs::File::create(&opts.out).map_err(|e| FlameError::Io(opts.out.clone(), e))?;
    let mut fg = FlameOptions::default();
    fg.title = opts.title.clone();
    fg.count_name = "ns (cpu-clock)".into();
    flamegraph::from_lines(&mut fg, lines.iter().copied(), BufWriter::new(svg))
        .map_err(|e| FlameError::Io(opts.out.clone(), e))?;
    Ok(Report {
        perf_data,
        collapsed,
        svg: opts.out.clone(),
        stacks: lines.len(),
        cpu_ns,
    })
}

fn run(cmd: &mut Command, name: &str) -> Result<(), FlameError> {
    let out = cmd.output().map_err(|e| FlameError::Command {
        command: name.into(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FlameError::Command {
            command: name.into(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}
