//! Background processes the lab starts in its namespaces (agents, probe servers): started
//! through nsenter with stdout and stderr in files, recorded in `DIR/procs/<label>.json`
//! (PID and start time), so `kxdp-lab down`, from any process, stops exactly them.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cmd;
use super::error::LabError;

/// What identifies a process we started, even after our own process is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    pub label: String,
    pub pid: i32,
    /// `/proc/PID/stat` field 22 (clock ticks since boot): a recycled PID has another one.
    pub start_time: u64,
    pub netns: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// How often files and /proc are polled while waiting for something.
const POLL: Duration = Duration::from_millis(20);

/// Starts `program args` in `netns`, stdout and stderr into the given files, and records it.
pub fn spawn(
    procs_dir: &Path,
    label: &str,
    netns: &str,
    program: &Path,
    args: &[String],
    stdout: &Path,
    stderr: &Path,
) -> Result<ProcRecord, LabError> {
    let files = Output { stdout, stderr };
    spawn_with_env(procs_dir, label, netns, program, args, &files, &[])
}

/// Where a spawned process writes.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub stdout: &'a Path,
    pub stderr: &'a Path,
}

/// [`spawn`] with `env` added to the process's environment.
pub fn spawn_with_env(
    procs_dir: &Path,
    label: &str,
    netns: &str,
    program: &Path,
    args: &[String],
    files: &Output<'_>,
    env: &[(&str, &str)],
) -> Result<ProcRecord, LabError> {
    let (stdout, stderr) = (files.stdout, files.stderr);
    fs::create_dir_all(procs_dir).map_err(|e| LabError::io(procs_dir, e))?;
    let out = File::create(stdout).map_err(|e| LabError::io(stdout, e))?;
    let err = File::create(stderr).map_err(|e| LabError::io(stderr, e))?;
    let mut c = cmd::in_netns(netns, program);
    c.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let child = c.spawn().map_err(|e| LabError::Command {
        command: cmd::describe(&c),
        detail: format!("cannot start: {e}"),
    })?;
    let pid = i32::try_from(child.id())
        .map_err(|_| LabError::Setup(format!("{label}: pid {} out of range", child.id())))?;
    // The Child is dropped without waiting: the process outlives this one when
    // `kxdp-lab up` returns; `stop` reaps it if it is still our child.
    drop(child);
    let start_time = start_time(pid).unwrap_or(0);
    let rec = ProcRecord {
        label: label.to_string(),
        pid,
        start_time,
        netns: netns.to_string(),
        stdout: stdout.to_path_buf(),
        stderr: stderr.to_path_buf(),
    };
    let path = record_path(procs_dir, label);
    let json = serde_json::to_vec_pretty(&rec).map_err(|e| LabError::Setup(e.to_string()))?;
    fs::write(&path, json).map_err(|e| LabError::io(&path, e))?;
    Ok(rec)
}

fn record_path(procs_dir: &Path, label: &str) -> PathBuf {
    procs_dir.join(format!("{label}.json"))
}

/// Every record in `procs_dir` (none when it does not exist).
pub fn records(procs_dir: &Path) -> Vec<ProcRecord> {
    let Ok(entries) = fs::read_dir(procs_dir) else {
        return Vec::new();
    };
    let mut out: Vec<ProcRecord> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a.label.cmp(&b.label));
    out
}

/// Waits until the process prints a line starting with `prefix` on stdout, and returns
/// it. Fails at once if the process exits first, and at `timeout`; both errors carry the
/// end of its stderr.
pub fn wait_for_line(
    rec: &ProcRecord,
    prefix: &str,
    timeout: Duration,
) -> Result<String, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(&rec.stdout).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
            return Ok(line.to_string());
        }
        if !is_alive(rec) {
            return Err(LabError::Setup(format!(
                "{} exited before printing {prefix:?}; its stderr ends with:\n{}",
                rec.label,
                tail(&rec.stderr, 20)
            )));
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("{} to print {prefix:?}", rec.label),
                detail: format!("its stderr ends with:\n{}", tail(&rec.stderr, 20)),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The last `n` lines of a file ("" when unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The start time of `pid` and whether it is a zombie, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(u64, bool)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it start
    // after its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is starttime.
    let zombie = fields.first() == Some(&"Z");
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((start, zombie))
}

fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(s, _)| s)
}

/// Whether the recorded process still runs (a zombie does not; a recycled PID is not it).
pub fn is_alive(rec: &ProcRecord) -> bool {
    reap(rec.pid);
    match stat(rec.pid) {
        Some((start, zombie)) => !zombie && (rec.start_time == 0 || start == rec.start_time),
        None => false,
    }
}

/// Collects the exit status if the process is our child and has exited (so it does not
/// linger as a zombie); a no-op for other processes.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a single PID only reads and writes `status`.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; the caller checked the PID is ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Stops the process: SIGTERM, up to `grace` for it to exit, then SIGKILL. Removes its
/// record. Safe to call for a process that is already gone.
pub fn stop(procs_dir: &Path, rec: &ProcRecord, grace: Duration) -> Result<(), LabError> {
    let mut result = Ok(());
    if is_alive(rec) {
        signal(rec.pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while is_alive(rec) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if is_alive(rec) {
            signal(rec.pid, libc::SIGKILL);
            result = Err(LabError::Timeout {
                what: format!("{} (pid {}) to exit after SIGTERM", rec.label, rec.pid),
                detail: "killed it".into(),
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_alive(rec) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
    }
    let path = record_path(procs_dir, &rec.label);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            result = result.and(Err(LabError::io(&path, e)));
        }
        _ => {}
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let (start, zombie) = stat(pid).unwrap();
        assert!(!zombie);
        let mut rec = ProcRecord {
            label: "self".into(),
            pid,
            start_time: start,
            netns: String::new(),
            stdout: PathBuf::new(),
            stderr: PathBuf::new(),
        };
        assert!(is_alive(&rec));
        rec.start_time = start + 1;
        assert!(!is_alive(&rec), "a recycled PID is not our process");
    }
}
