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

use crate::pcapio::{self, Packet};
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

/// Why a case could not be run at all (as opposed to running and differing).
#[derive(Debug)]
pub enum CaseError {
    /// The case directory is incomplete or unreadable.
    Case { dir: PathBuf, message: String },
    /// `kxdp replay` refused the case (bad state, unknown port, unreadable input).
    Replay { dir: PathBuf, error: ReplayError },
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Case { dir, message } => write!(f, "{}: {message}", dir.display()),
            CaseError::Replay { dir, error } => {
                write!(f, "{}: replay failed: {error}", dir.display())
            }
        }
    }
}

impl std::error::Error for CaseError {}

/// Reads a case's `case.json`.
pub fn read_case_file(dir: &Path) -> Result<CaseFile, CaseError> {
    let path = dir.join(CASE_FILE);
    let err = |message: String| CaseError::Case {
        dir: dir.to_path_buf(),
        message,
    };
    let text = fs::read_to_string(&path).map_err(|e| err(format!("{CASE_FILE}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| err(format!("{CASE_FILE}: {e}")))
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
                |message| CaseError::Case {
                    dir: dir.to_path_buf(),
                    message,
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
fn pcaps_in(dir: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pcap") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Compares every expected pcap and verdicts.jsonl with the run's; adds what differs.
pub fn compare_dirs(expected: &Path, got: &Path, out: &mut Vec<String>) -> Result<(), String> {
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

fn compare_verdicts(want: &Path, got: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let read = |p: &Path| fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
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
        let wv: serde_json::Value = serde_json::from_str(w)
            .map_err(|e| format!("{} line {}: {e}", want.display(), i + 1))?;
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
pub fn case_dirs(cases_root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(cases_root).map_err(|e| format!("{}: {e}", cases_root.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.join(CASE_FILE).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}
