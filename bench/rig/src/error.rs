//! What can stop `kxdp-bench` (the bench run itself; `pktgen` / `pktsink` have
//! [`crate::traffic_cli::CliError`], one measurement [`crate::measure::MeasureError`]).

use std::path::PathBuf;

use lab::LabError;
use xdp_redirect::XdpError;

use crate::ceiling::CeilingError;
use crate::measure::MeasureError;
use crate::traffic::PktgenError;
use crate::traffic_cli::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the bench creates namespaces and attaches XDP programs: run it as root")]
    NotRoot,
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Building the topology failed part way; `dir` is the bench's `--dir`, which `--down`
    /// needs to find what was left.
    #[error("{source} (`kxdp-bench --down --dir {}` removes what was built)", dir.display())]
    Up { dir: PathBuf, source: LabError },
    #[error("removing the topology: {0}")]
    Down(#[source] LabError),
    #[error("choosing the generator: {0}")]
    Generator(#[source] PktgenError),
    /// `path` is the table's letter (a, b, c, d).
    #[error("({path}) {size} B: {source}")]
    Throughput {
        path: char,
        size: u16,
        source: MeasureError,
    },
    #[error("({path}) latency: {source}")]
    Latency { path: char, source: MeasureError },
    #[error("ceiling: {0}")]
    Ceiling(#[source] CeilingError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// An interface of node A is not there (the error names it).
    #[error(transparent)]
    Interface(XdpError),
    #[error("encoding the report: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A command-line setting the bench cannot run with; the message names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("CPU {cpu}: this machine has {ncpu}")]
    Cpu { cpu: usize, ncpu: usize },
    #[error("--sizes {0:?}: want 1 to 12 sizes of at least 64 bytes")]
    Sizes(Vec<u16>),
    #[error("--paths: unknown path {0:?} (a, b, c, d)")]
    Path(char),
    #[error("--repeat {0}: want 1..=100")]
    Repeat(u32),
    #[error("--flows {0}: want 1..=20000")]
    Flows(u32),
}
