//! The manifest-directory source: the agent re-reads the state directory when its files
//! change and builds the next table generation from it.
//!
//! Change detection compares a fingerprint (name, size, modification time of every file
//! the loader would read) taken at each tick. Polling a handful of files a few times a
//! second costs nothing measurable and, unlike inotify, sees changes made through symlink
//! swaps (a mounted ConfigMap) and on any filesystem.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use datapath::tables::Tables;

use crate::config::AgentConfig;
use crate::state::load_state_dir;
use crate::translate::translate;

/// What the directory looked like: enough to tell that something changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

pub fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            // metadata() follows symlinks, as the loader does.
            let meta = std::fs::metadata(entry.path()).ok();
            files.push((
                name,
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            ));
        }
    }
    files.sort();
    Fingerprint(files)
}

/// One built generation.
#[derive(Debug)]
pub struct Built {
    pub tables: Tables,
    pub config: AgentConfig,
    pub warnings: Vec<String>,
}

/// Loads `dir` and translates it for `node`. Errors are one line naming the file or object.
pub fn build(dir: &Path, node: &str, generation: u64) -> Result<Built, String> {
    let state = load_state_dir(dir).map_err(|e| e.to_string())?;
    let translated =
        translate(&state.cluster, &state.config, node, generation).map_err(|e| e.to_string())?;
    let mut warnings = state.warnings;
    warnings.extend(translated.warnings);
    Ok(Built {
        tables: translated.tables,
        config: state.config,
        warnings,
    })
}

/// Watches one state directory.
#[derive(Debug)]
pub struct DirSource {
    pub dir: PathBuf,
    seen: Fingerprint,
}

impl DirSource {
    pub fn new(dir: PathBuf) -> DirSource {
        DirSource {
            dir,
            seen: Fingerprint::default(),
        }
    }

    /// True (once) when the directory differs from the last time this returned true.
    pub fn changed(&mut self) -> bool {
        let now = fingerprint(&self.dir);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}
