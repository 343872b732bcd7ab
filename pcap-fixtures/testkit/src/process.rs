//! Processes a test started: their stdout line by line, and stopping them as an init
//! system does.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// SIGTERM to a process this test started (an agent); asserts it exits 0 within 20 s
/// (showing its log otherwise) and returns the exit status.
pub fn stop_agent(mut agent: Child, log: &Path) -> ExitStatus {
    let pid = i32::try_from(agent.id()).expect("a pid fits in pid_t");
    // SAFETY: plain kill(2) on the pid of the child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().expect("waitpid") {
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

/// The lines `child` writes to its (piped) stdout, read on a thread of their own: a
/// readiness line arrives here.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
