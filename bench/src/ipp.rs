//! Instructions per packet, counted by callgrind on the deterministic workload.
//!
//! For each path the workload binary runs twice under `valgrind --tool=callgrind`, both
//! times preparing the same `large` frames and then processing `small` or `large` of them.
//! Everything but the processed packets is identical between the two runs, so
//! `(Ir(large) - Ir(small)) / (large - small)` is the cost of one packet: `process` plus the
//! driver's few instructions per frame (wrap the buffer in a `Frame`, check the verdict).
//! Instruction counts do not depend on the machine's load, which is why this, not time,
//! is what the regression test compares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workload::PacketPath;

/// Packets processed in the short and the long run (the difference is what is counted).
pub const DEFAULT_SMALL: usize = 64;
pub const DEFAULT_LARGE: usize = 64 + 2048;

#[derive(Debug, thiserror::Error)]
pub enum IppError {
    #[error("valgrind is not usable: {0}")]
    NoValgrind(String),
    #[error("{path}: valgrind run ({packets} packets) failed: {detail}")]
    Run {
        path: &'static str,
        packets: usize,
        detail: String,
    },
    #[error("{file}: no `summary:`/`totals:` line (is this a callgrind output?)")]
    NoTotal { file: PathBuf },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("small ({small}) must be below large ({large})")]
    Sizes { small: usize, large: usize },
    #[error("baseline {file}: {message}")]
    Baseline { file: PathBuf, message: String },
}

/// What to measure and where the workload binary is.
#[derive(Debug, Clone)]
pub struct IppOptions {
    /// A binary that understands `workload --path P --packets N --capacity C` (the
    /// `profile` binary itself).
    pub exe: PathBuf,
    pub paths: Vec<PacketPath>,
    pub small: usize,
    pub large: usize,
    /// Independent repetitions, to show the spread (0 for a deterministic workload).
    pub runs: usize,
    /// Where callgrind writes its output files (removed after reading).
    pub work_dir: PathBuf,
}

/// One path's instructions per packet, one value per run.
#[derive(Debug, Clone, PartialEq)]
pub struct PathIpp {
    pub path: &'static str,
    pub runs: Vec<f64>,
}

impl PathIpp {
    pub fn mean(&self) -> f64 {
        self.runs.iter().sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// Largest minus smallest over the runs.
    pub fn spread(&self) -> f64 {
        let max = self.runs.iter().copied().fold(f64::MIN, f64::max);
        let min = self.runs.iter().copied().fold(f64::MAX, f64::min);
        if self.runs.is_empty() { 0.0 } else { max - min }
    }
}

/// `"release"` or `"debug"`: instruction counts differ by build, so baselines are per build.
/// Reported by the workload binary for itself (it is the binary being counted).
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// `Ok(version)` when `valgrind` runs.
pub fn valgrind_version() -> Result<String, IppError> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(IppError::NoValgrind(format!(
            "`valgrind --version` exited with {}",
            out.status
        ))),
        Err(e) => Err(IppError::NoValgrind(format!("cannot run `valgrind`: {e}"))),
    }
}

/// Runs the measurement: `runs` x paths x 2 callgrind runs, sequentially.
pub fn measure(opts: &IppOptions) -> Result<Vec<PathIpp>, IppError> {
    if opts.small >= opts.large {
        return Err(IppError::Sizes {
            small: opts.small,
            large: opts.large,
        });
    }
    valgrind_version()?;
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| IppError::Io(opts.work_dir.clone(), e))?;
    let mut results: Vec<PathIpp> = opts
        .paths
        .iter()
        .map(|p| PathIpp {
            path: p.name(),
            runs: Vec::new(),
        })
        .collect();
    for run in 0..opts.runs {
        for (path, result) in opts.paths.iter().zip(results.iter_mut()) {
            let short = count(opts, *path, opts.small, run)?;
            let long = count(opts, *path, opts.large, run)?;
            let per_packet = (long as f64 - short as f64) / (opts.large - opts.small) as f64;
            result.runs.push(per_packet);
        }
    }
    Ok(results)
}

/// Total instructions (Ir) of one workload run under callgrind.
fn count(opts: &IppOptions, path: PacketPath, packets: usize, run: usize) -> Result<u64, IppError> {
    let out_file = opts.work_dir.join(format!(
        "callgrind.{}.{}.{packets}.{run}",
        std::process::id(),
        path.name()
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&opts.exe)
        .args(["workload", "--path", path.name()])
        .args(["--packets", &packets.to_string()])
        .args(["--capacity", &opts.large.to_string()])
        .output()
        .map_err(|e| IppError::Run {
            path: path.name(),
            packets,
            detail: format!("cannot start valgrind: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(IppError::Run {
            path: path.name(),
            packets,
            detail: format!("{}; stderr ends:\n{}", output.status, tail.join("\n")),
        });
    }
    let text = std::fs::read_to_string(&out_file).map_err(|e| IppError::Io(out_file.clone(), e))?;
    let _ = std::fs::remove_file(&out_file);
    total_instructions(&text).ok_or(IppError::NoTotal { file: out_file })
}

/// The run's total Ir from a callgrind output file (`summary:` in older formats, `totals:`).
pub fn total_instructions(callgrind_out: &str) -> Option<u64> {
    callgrind_out.lines().find_map(|line| {
        let rest = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A table: path, instructions/packet (mean), each run, spread.
pub fn table(results: &[PathIpp], profile: &str) -> String {
    let mut s = format!(
        "{:<30} {:>12}  {:<30} {:>7}\n",
        format!("path ({profile} build)"),
        "instr/packet",
        "runs",
        "spread"
    );
    s.push_str(&"-".repeat(84));
    s.push('\n');
    for r in results {
        let runs: Vec<String> = r.runs.iter().map(|v| format!("{v:.1}")).collect();
        s.push_str(&format!(
            "{:<30} {:>12.1}  {:<30} {:>7.1}\n",
            r.path,
            r.mean(),
            runs.join(" "),
            r.spread()
        ));
    }
    s
}

pub fn to_json(results: &[PathIpp], opts: &IppOptions, profile: &str) -> serde_json::Value {
    serde_json::json!({
        "profile": profile,
        "small": opts.small,
        "large": opts.large,
        "paths": results.iter().map(|r| serde_json::json!({
            "path": r.path,
            "instructions_per_packet": r.mean(),
            "runs": r.runs,
            "spread": r.spread(),
        })).collect::<Vec<_>>(),
    })
}

/// The checked-in expectations: per build profile, per path, instructions per packet, and
/// how much more a change may cost before the regression test fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Allowed increase as a fraction (0.10 = +10%).
    pub tolerance: f64,
    pub profiles: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The baseline file in the repository.
pub fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ipp-baseline.json")
}

impl Baseline {
    pub fn load(file: &Path) -> Result<Baseline, IppError> {
        let bad = |message: String| IppError::Baseline {
            file: file.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let tolerance = json["tolerance"]
            .as_f64()
            .ok_or_else(|| bad("no number `tolerance`".into()))?;
        let mut profiles = BTreeMap::new();
        let Some(obj) = json["profiles"].as_object() else {
            return Err(bad("no object `profiles`".into()));
        };
        for (profile, paths) in obj {
            let Some(paths) = paths.as_object() else {
                return Err(bad(format!("profiles.{profile} is not an object")));
            };
            let mut m = BTreeMap::new();
            for (path, v) in paths {
                let v = v
                    .as_f64()
                    .ok_or_else(|| bad(format!("profiles.{profile}.{path} is not a number")))?;
                m.insert(path.clone(), v);
            }
            profiles.insert(profile.clone(), m);
        }
        Ok(Baseline {
            tolerance,
            profiles,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "comment": "instructions per packet (callgrind Ir) of `profile ipp`, per build; \
                        update with `cargo run [--release] -p bench --bin profile -- ipp --write-baseline`",
            "tolerance": self.tolerance,
            "profiles": self.profiles,
        })
    }

    /// Replaces `profile`'s numbers with `results` (rounded to 0.1).
    pub fn set(&mut self, profile: &str, results: &[PathIpp]) {
        let m = results
            .iter()
            .map(|r| (r.path.to_string(), (r.mean() * 10.0).round() / 10.0))
            .collect();
        self.profiles.insert(profile.to_string(), m);
    }

    /// One line per measured path against the baseline; paths the baseline lacks fail
    /// (a new path needs its number checked in).
    pub fn compare(&self, profile: &str, results: &[PathIpp]) -> Vec<Comparison> {
        let expected = self.profiles.get(profile);
        results
            .iter()
            .map(|r| {
                let baseline = expected.and_then(|m| m.get(r.path)).copied();
                let measured = r.mean();
                let ok = baseline.is_some_and(|b| measured <= b * (1.0 + self.tolerance));
                Comparison {
                    path: r.path,
                    measured,
                    baseline,
                    ok,
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub path: &'static str,
    pub measured: f64,
    pub baseline: Option<f64>,
    pub ok: bool,
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.baseline {
            Some(b) => write!(
                f,
                "{:<30} {:>10.1} vs baseline {:>10.1} ({:+.1}%) {}",
                self.path,
                self.measured,
                b,
                (self.measured / b - 1.0) * 100.0,
                if self.ok { "ok" } else { "REGRESSION" }
            ),
            None => write!(
                f,
                "{:<30} {:>10.1}, no baseline for this path: MISSING",
                self.path, self.measured
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_from_callgrind_output() {
        let out = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 123456\n\nfn=(1) main\n0 5\ntotals: 123456\n";
        assert_eq!(total_instructions(out), Some(123456));
        assert_eq!(total_instructions("events: Ir\n"), None);
    }

    #[test]
    fn compare_flags_increases_beyond_the_tolerance_and_missing_paths() {
        let mut b = Baseline {
            tolerance: 0.10,
            profiles: BTreeMap::new(),
        };
        b.set(
            "debug",
            &[PathIpp {
                path: "a",
                runs: vec![100.0],
            }],
        );
        let measured = |v: f64| {
            vec![
                PathIpp {
                    path: "a",
                    runs: vec![v],
                },
                PathIpp {
                    path: "b",
                    runs: vec![1.0],
                },
            ]
        };
        let c = b.compare("debug", &measured(109.0));
        assert!(c[0].ok && !c[1].ok);
        assert!(!b.compare("debug", &measured(111.0))[0].ok);
        assert!(!b.compare("release", &measured(50.0))[0].ok);
    }
}
