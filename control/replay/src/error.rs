//! Everything that stops a replay, each as one line that names the file or argument at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The state directory could not be loaded; `message` is the StateError's own text.
    #[error("loading state from {}: {message}", .dir.display())]
    State { dir: PathBuf, message: String },
    /// The state loaded but could not be turned into tables for this node.
    #[error("translating state for node {node:?}: {message}")]
    Translate { node: String, message: String },
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
