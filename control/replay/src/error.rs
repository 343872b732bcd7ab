//! Everything that stops a replay, each as one line that names the file or argument at fault.

use std::path::PathBuf;

use model::state::StateError;
use model::translate::TranslateError;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The state directory could not be loaded (the StateError names the file).
    #[error("loading state from {}: {source}", .dir.display())]
    State {
        dir: PathBuf,
        source: Box<StateError>,
    },
    /// The state loaded but could not be turned into tables for this node.
    #[error("translating state for node {node:?}: {source}")]
    Translate {
        node: String,
        source: TranslateError,
    },
    #[error("--in {port}={}: unknown port {port:?} (known ports: {known})", .file.display())]
    UnknownPort {
        port: String,
        file: PathBuf,
        known: String,
    },
    /// An input file that cannot be opened or is not a capture at all.
    #[error("{}: {message}", .file.display())]
    Input { file: PathBuf, message: String },
    /// A capture that breaks off or is malformed at packet `index` (0-based).
    #[error("{}: corrupt capture at packet index {index}: {message}", .file.display())]
    Corrupt {
        file: PathBuf,
        index: usize,
        message: String,
    },
    /// Writing an output file failed.
    #[error("{}: {message}", .path.display())]
    Output { path: PathBuf, message: String },
}

/// A `--in` or `--update` argument that does not have its shape (clap prints it after the
/// argument's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("{0:?} is not PORT=FILE.pcap")]
    Input(String),
    #[error("{0:?} is not AT=DIR (AT in seconds, e.g. 1700000000.5)")]
    Update(String),
}
