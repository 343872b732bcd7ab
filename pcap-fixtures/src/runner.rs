//! Plays one case directory through `replay::run`, the library behind
//! `kxdp replay`, and compares what came out with the case's expected files.
//!
//! Output pcaps are compared packet by packet, byte for byte (with the first differing
//! offset and both packets in hex on a mismatch); verdicts.jsonl line by line as JSON
//! values, so key order and spacing never decide a case.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use replay::{InputSpec, ReplayError, ReplayOptions};

use crate::pcapio::{self, Packet, PcapError};
use crate::spec::{CASE_FILE, CaseFile, EXPECTED_DIR, VERDICTS_FILE};

/// What running a case found. An empty `mismatches` is a pass.
#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    pub name: String,
    pub description: String,
    /// Input packets replayed.
    pub packets: usize,
    /// One entry per difference, readable on its own.
    pub mismatches: Vec<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return write!(f, "case {}: ok ({} packets)", self.name, self.packets);
        }
        writeln!(
            f,
            "case {}: {} mismatch(es) ({})",
            self.name,
            self.mismatches.len(),
            self.description
        )?;
        for m in &self.mismatches {
            writeln!(f, "  - {m}")?;
        }
        Ok(())
    }
}

/// Why a case could not be run at all (as opposed to running and differing). `dir` is
/// the case directory.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{}: {CASE_FILE}: {source}", dir.display())]
    ReadCaseFile {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {CASE_FILE}: {source}", dir.display())]
    ParseCaseFile {
        dir: PathBuf,
        source: serde_json::Error,
    },
    /// The expected or the produced outputs could not be read.
    #[error("{}: {source}", dir.display())]
    Compare { dir: PathBuf, source: CompareError },
    /// `kxdp replay` refused the case (bad state, unknown port, unreadable input).
    #[error("{}: replay failed: {error}", dir.display())]
    Replay {
        dir: PathBuf,
        #[source]
        error: ReplayError,
    },
}

/// A directory could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", dir.display())]
pub struct DirError {
    pub dir: PathBuf,
    pub source: std::io::Error,
}

/// Why two output directories could not be compared (differences are not errors).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Line `line` (from 1) of an expected verdicts file.
    #[error("{} line {line}: {source}", path.display())]
    Verdict {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads a case's `case.json`.
pub fn read_case_file(dir: &Path) -> Result<CaseFile, CaseError> {
    let path = dir.join(CASE_FILE);
    let text = fs::read_to_string(&path).map_err(|source| CaseError::ReadCaseFile {
        dir: dir.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| CaseError::ParseCaseFile {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Replays the case in `dir` and compares its outputs with `dir/expected/`.
pub fn run_case(dir: &Path) -> Result<CaseReport, CaseError> {
    let spec = read_case_file(dir)?;
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let out = scratch_dir(&name);
    let opts = ReplayOptions {
        state: dir.join(&spec.state),
        node: spec.node.clone(),
        inputs: spec
            .inputs
            .iter()
            .map(|i| InputSpec {
                port: i.port.clone(),
                file: dir.join(&i.file),
            })
            .collect(),
        out: out.clone(),
        summary: false,
        updates: spec
            .updates
            .iter()
            .map(|u| replay::StateUpdate {
                at_ns: u.at_ns,
                state: dir.join(&u.state),
            })
            .collect(),
    };
    let result = replay::run(&opts);
    let report = result
        .map_err(|error| CaseError::Replay {
            dir: dir.to_path_buf(),
            error,
        })
        .and_then(|run| {
            let mut report = CaseReport {
                name,
                description: spec.description.clone(),
                packets: run.packets,
                mismatches: Vec::new(),
            };
            compare_dirs(&dir.join(EXPECTED_DIR), &out, &mut report.mismatches).map_err(
                |source| CaseError::Compare {
                    dir: dir.to_path_buf(),
                    source,
                },
            )?;
            Ok(report)
        });
    let _ = fs::remove_dir_all(&out);
    report
}

/// A fresh output directory per run, so parallel tests never share one.
fn scratch_dir(case: &str) -> PathBuf {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kxdp-case-{case}-{}-{n}", std::process::id()))
}

/// The `*.pcap` file names in a directory, sorted.
fn pcaps_in(dir: &Path) -> Result<Vec<String>, DirError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_error(dir))? {
        let entry = entry.map_err(dir_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pcap") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn dir_error(dir: &Path) -> impl Fn(std::io::Error) -> DirError + '_ {
    move |source| DirError {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Compares every expected pcap and verdicts.jsonl with the run's; adds what differs.
pub fn compare_dirs(
    expected: &Path,
    got: &Path,
    out: &mut Vec<String>,
) -> Result<(), CompareError> {
    let want = pcaps_in(expected)?;
    let have = pcaps_in(got)?;
    for name in have.iter().filter(|n| !want.contains(n)) {
        let packets = pcapio::read(&got.join(name))?;
        out.push(format!(
            "{name}: {} packet(s) sent on a port that should send nothing",
            packets.len()
        ));
        if let Some(p) = packets.first() {
            out.push(format!("{name}: first of them: {}", hex(&p.data)));
        }
    }
    for name in &want {
        let expected = pcapio::read(&expected.join(name))?;
        if !have.contains(name) {
            out.push(format!(
                "{name}: expected {} packet(s), the run wrote no such file",
                expected.len()
            ));
            continue;
        }
        compare_packets(name, &expected, &pcapio::read(&got.join(name))?, out);
    }
    compare_verdicts(&expected.join(VERDICTS_FILE), &got.join(VERDICTS_FILE), out)
}

/// Compares two packet lists in order: count, then each packet's bytes and timestamp.
pub fn compare_packets(name: &str, want: &[Packet], got: &[Packet], out: &mut Vec<String>) {
    if want.len() != got.len() {
        out.push(format!(
            "{name}: expected {} packet(s), got {}",
            want.len(),
            got.len()
        ));
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w.data != g.data {
            let offset = w
                .data
                .iter()
                .zip(&g.data)
                .position(|(a, b)| a != b)
                .unwrap_or(w.data.len().min(g.data.len()));
            out.push(format!(
                "{name} packet {i}: differs at byte {offset} (expected {} bytes, got {})\n    expected: {}\n    got:      {}",
                w.data.len(),
                g.data.len(),
                hex(&w.data),
                hex(&g.data)
            ));
        } else if w.ts_ns != g.ts_ns {
            out.push(format!(
                "{name} packet {i}: timestamp {} ns, expected {} ns",
                g.ts_ns, w.ts_ns
            ));
        }
    }
}

fn compare_verdicts(want: &Path, got: &Path, out: &mut Vec<String>) -> Result<(), CompareError> {
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|source| CompareError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (want_text, got_text) = (read(want)?, read(got)?);
    let want_lines: Vec<&str> = want_text.lines().collect();
    let got_lines: Vec<&str> = got_text.lines().collect();
    if want_lines.len() != got_lines.len() {
        out.push(format!(
            "verdicts.jsonl: expected {} line(s), got {}",
            want_lines.len(),
            got_lines.len()
        ));
    }
    for (i, (w, g)) in want_lines.iter().zip(&got_lines).enumerate() {
        let wv: serde_json::Value =
            serde_json::from_str(w).map_err(|source| CompareError::Verdict {
                path: want.to_path_buf(),
                line: i + 1,
                source,
            })?;
        match serde_json::from_str::<serde_json::Value>(g) {
            Ok(gv) if gv == wv => {}
            Ok(_) => out.push(format!(
                "verdicts.jsonl line {}:\n    expected: {w}\n    got:      {g}",
                i + 1
            )),
            Err(e) => out.push(format!(
                "verdicts.jsonl line {}: not JSON ({e}): {g}",
                i + 1
            )),
        }
    }
    Ok(())
}

/// Bytes as hex, 16-byte groups separated for reading.
pub fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2 + data.len() / 16);
    for (i, b) in data.iter().enumerate() {
        if i > 0 && i % 16 == 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Every case directory under `cases_root`, sorted by name.
pub fn case_dirs(cases_root: &Path) -> Result<Vec<PathBuf>, DirError> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(cases_root).map_err(dir_error(cases_root))? {
        let path = entry.map_err(dir_error(cases_root))?.path();
        if path.join(CASE_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}
