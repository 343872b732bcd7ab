//! Shared by the tests that run a real `kxdp agent` in a network namespace (agent.rs, cni.rs,
//! metrics.rs, churn.rs): whether they may run, entering a namespace from a thread, waiting
//! for a condition with a deadline, an HTTP request from inside a namespace, and stopping
//! the agent the way an init system does.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
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

/// Whether this process runs as root (effective uid 0, from /proc/self/status).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A test that cannot run here says why and is skipped (returns false); under CI=true it
/// fails instead: CI has what these tests need.
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {test} {why} and must not be skipped"
    );
    crate::harness::skipped(test, why);
    false
}

pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request to `addr` from inside network namespace `ns`.
pub fn http(ns: &str, method: &str, addr: &str, path: &str) -> HttpReply {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let addr = addr.parse().unwrap();
    in_netns(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .expect("a blank line after the head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line: {head}"));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("Content-Length");
        assert_eq!(length, body.len(), "Content-Length matches the body");
        HttpReply {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    })
}

/// The lines `agent` writes to its (piped) stdout, read on a thread of their own: the
/// readiness line arrives here.
pub fn stdout_lines(agent: &mut Child) -> mpsc::Receiver<String> {
    let stdout = agent.stdout.take().expect("the agent's stdout is piped");
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
