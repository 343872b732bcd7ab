//! Waiting for a condition with a deadline: polled, never a fixed sleep.

use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `timeout` passes (then panics with `what`).
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(eventually(timeout, cond), "timed out waiting for {what}");
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held (for callers
/// that report their own diagnostics, or that go on either way).
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` every 50 ms until it holds, failing the test after `deadline`: for
/// conditions that cost a request each (an HTTP GET, a call to an agent).
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
