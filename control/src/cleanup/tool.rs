//! Running the netfilter tools (`nft`, `iptables-save`, `iptables-restore`): the agent
//! installs its table with `nft` too, and kube-proxy itself cleans up through
//! iptables-save/-restore. A tool that is not installed is not an error: what it would
//! manage cannot be there in a form we could read, and the step says it skipped.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::CleanupError;

/// What running a tool gave.
pub(super) enum Ran {
    /// It ran and succeeded: its stdout.
    Ok(String),
    /// It is not installed.
    Missing,
}

/// Runs `program args`, feeding `stdin` when given; a non-zero exit is an error with the
/// tool's stderr.
pub(super) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Ran, CleanupError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let fail = |message: String| CleanupError::Command {
        command: command.clone(),
        message,
    };
    let spawned = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ran::Missing),
        Err(e) => return Err(fail(e.to_string())),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(Ran::Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
