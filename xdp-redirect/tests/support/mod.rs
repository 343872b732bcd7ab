//! Shared by the root tests: the root check and a network namespace guard.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

// The skip log, shared with the other crates' tests.
#[path = "../../../control/tests/harness/mod.rs"]
mod harness;

/// Whether to run a root test: true as root; false (with a message) otherwise, unless
/// `CI=true`, where a skip would hide a broken datapath and so fails instead.
pub fn root_or_skip(what: &str) -> bool {
    let euid_is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false);
    if !euid_is_root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {what} needs root and must not be skipped"
        );
        harness::skipped(what, "needs root");
    }
    euid_is_root
}

/// A network namespace `kxld-<pid>-<n>`, deleted (with every interface in it, and so every
/// XDP program attached to them) when dropped, even if the test failed.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("kxld-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip args...` in the namespace, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        // nsenter, not `ip -n`: that remounts / and fails where / is no mount point.
        let net = format!("--net=/run/netns/{}", self.name);
        let mut all = vec![net.as_str(), "ip"];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Adds a veth pair `a`/`b` with `queues` rx and tx queues on each end, both up.
    pub fn veth_pair(&self, a: &str, b: &str, queues: u32) {
        let q = queues.to_string();
        self.ip(&[
            "link",
            "add",
            a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
    }

    /// Runs `f` on a new thread that has entered this namespace (threads have their own
    /// network namespace), so interface names and indexes, XDP attach and
    /// BPF_PROG_TEST_RUN's ingress_ifindex all resolve here. A panic in `f` is re-raised.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: a valid namespace fd; setns changes only this thread's netns.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            });
            match worker.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not delete netns {}: {status:?}", self.name);
        }
    }
}

/// Runs a command, returning its stdout; panics with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
