//! Commands a test needs to succeed.

use std::process::{Command, Output};

/// Runs a command, returning its stdout; panics with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = output(Command::new(cmd).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How a finished process ended and what it printed (stdout, then stderr), for a failure
/// message or a log.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `command` to its end and returns what it printed; panics, showing the command and
/// its output, if it cannot start or fails.
pub fn output(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}
