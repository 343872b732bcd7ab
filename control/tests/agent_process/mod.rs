//! Shared by the tests that run a real `kxdp agent` in a network namespace (agent.rs,
//! metrics.rs): entering a namespace from a thread, waiting for a condition with a deadline,
//! and stopping the agent the way an init system does.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own inside network namespace `ns` (setns moves only the
/// calling thread): sockets it opens live there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns(2) on an open namespace file; moves only this thread.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// Polls `cond` until it holds, failing the test after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the agent this test started; asserts it exits 0 within 20 s (showing its log
/// otherwise) and returns the exit status.
pub fn stop_agent(mut agent: Child, log: &Path) -> ExitStatus {
    // SAFETY: plain kill(2) on the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "agent exit: {status}; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    status
}
