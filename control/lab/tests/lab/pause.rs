//! `kxdp-lab pause`, the containerd mode's sandbox (infra) container: it stops with exit 0
//! on SIGTERM, and reaps a child that exits while it waits. No root needed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::wait::wait_until;

const KXDP_LAB: &str = env!("CARGO_BIN_EXE_kxdp-lab");
const DEADLINE: Duration = Duration::from_secs(5);

/// Whether `pid` has a handler for `signal`, from the SigCgt mask in /proc/PID/status: a
/// signal sent before that would meet the default action, not the pause's.
fn catches(pid: u32, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// A pause this test started, killed if the test ends before it does: left running, it
/// would hold the test runner's output open.
struct Pause(Child);

impl Drop for Pause {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SIGTERM once the handler is there; the exit status within DEADLINE.
fn terminate(Pause(child): &mut Pause) -> std::process::ExitStatus {
    let pid = child.id();
    wait_until("the pause's SIGTERM handler", DEADLINE, || {
        catches(pid, libc::SIGTERM)
    });
    let pid_t = i32::try_from(pid).expect("a pid fits in pid_t");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid_t, libc::SIGTERM) }, 0);
    let mut status = None;
    wait_until("the pause to exit on SIGTERM", DEADLINE, || {
        status = child.try_wait().expect("waitpid");
        status.is_some()
    });
    status.expect("waited for")
}

#[test]
fn pause_exits_0_on_sigterm() {
    let mut pause = Pause(
        Command::new(KXDP_LAB)
            .arg("pause")
            .stdin(Stdio::null())
            .spawn()
            .expect("start kxdp-lab pause"),
    );
    let status = terminate(&mut pause);
    assert!(status.success(), "kxdp-lab pause: {status}");
}

/// A shell starts a child and then becomes the pause (exec), as PID 1 inherits orphans: the
/// child's exit must not leave a zombie behind.
#[test]
fn pause_reaps_an_exited_child() {
    let script = format!("sleep 0.2 & echo $!; exec {KXDP_LAB} pause");
    let mut pause = Pause(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sh -c ... kxdp-lab pause"),
    );
    let mut line = String::new();
    BufReader::new(pause.0.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the child's pid");
    let child: u32 = line.trim().parse().expect("a pid");
    // Reaped, it is gone from /proc; unreaped, it stays there as a zombie.
    wait_until("the pause to reap its exited child", DEADLINE, || {
        !std::path::Path::new(&format!("/proc/{child}")).exists()
    });
    let status = terminate(&mut pause);
    assert!(status.success(), "kxdp-lab pause: {status}");
}
