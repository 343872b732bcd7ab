//! Running the tools the lab drives (`ip`, `bridge`, `ethtool`, `nsenter`, `ping`), with
//! their stderr in the error when they fail.

use std::ffi::OsStr;
use std::process::{Command, Output};

use super::error::LabError;

/// The bind mount `ip netns add` makes for a namespace named `netns`; an absolute path
/// (a namespace containerd made under its state directory) is taken as it is.
pub fn netns_path(netns: &str) -> String {
    if netns.starts_with('/') {
        netns.to_string()
    } else {
        format!("/run/netns/{netns}")
    }
}

pub fn netns_exists(netns: &str) -> bool {
    std::path::Path::new(&netns_path(netns)).exists()
}

/// `nsenter --net=/run/netns/NS PROGRAM`: nsenter execs the program (it forks only for
/// PID namespaces), so the child's PID is the program's. Unlike `ip netns exec` it leaves
/// /sys (and bpffs) alone.
pub fn in_netns(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns_path(netns))).arg(program);
    c
}

/// How a command is shown in errors: program and arguments, space-separated.
pub fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs to completion; Ok(stdout) on exit status 0.
pub fn run(c: &mut Command) -> Result<String, LabError> {
    let out = output(c)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: describe(c),
            detail: failure_detail(&out),
        })
    }
}

/// Runs to completion whatever the exit status.
pub fn output(c: &mut Command) -> Result<Output, LabError> {
    c.stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            command: describe(c),
            detail: format!("cannot start: {e}"),
        })
}

/// The exit status and what the command said on stderr (or stdout when stderr is empty).
pub fn failure_detail(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        stderr
    };
    format!("{}: {}", out.status, text.trim())
}

/// `ip ARGS`
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

/// `ip ARGS` inside namespace NS. Entered with nsenter rather than `ip -n`, which (like `ip
/// netns exec`) remounts / as a slave and so fails where / is not a mount point (a chroot).
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String, LabError> {
    run(Command::new("nsenter")
        .arg(format!("--net={}", netns_path(netns)))
        .arg("ip")
        .args(args))
}

/// Runs to completion with `input` on stdin; Ok(stdout) on exit status 0.
pub fn run_with_stdin(c: &mut Command, input: &str) -> Result<String, LabError> {
    use std::io::Write;
    use std::process::Stdio;
    let fail = |c: &Command, detail: String| LabError::Command {
        command: describe(c),
        detail,
    };
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(c, format!("cannot start: {e}")))?;
    // Written before reading: the inputs are small and these tools read all of stdin first.
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(c, format!("writing stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(c, format!("waiting: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(c, failure_detail(&out)))
    }
}

/// Whether network namespace `netns` has an interface named `dev`; Err when `ip` cannot
/// list them (no such namespace).
pub fn link_exists(netns: &str, dev: &str) -> Result<bool, LabError> {
    let out = ip_in(netns, &["-o", "link", "show"])?;
    Ok(out.lines().any(|l| {
        l.split(':')
            .nth(1)
            .map(|name| name.trim().split('@').next() == Some(dev))
            .unwrap_or(false)
    }))
}
