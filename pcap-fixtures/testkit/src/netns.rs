//! Network namespaces for tests: a guard that deletes its namespace on drop (taking its
//! interfaces and their XDP programs with it, also when the test fails), threads inside a
//! namespace, and the leftovers of a run.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use crate::cmd::run;

/// A network namespace `<prefix>-<pid>-<n>-<tag>` with lo up and IPv6 off (no router
/// solicitations or DAD in the counters), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A namespace `<prefix>-<pid>-<n>-<tag>`: each test file passes its own prefix, so
    /// whose a namespace is stays visible; the pid keeps test binaries running at the same
    /// time apart, the counter the namespaces of one binary.
    pub fn with_prefix(prefix: &str, tag: &str) -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}-{tag}", std::process::id());
        // A leftover from a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        // Through procfs from a thread inside the namespace (/proc/sys/net is the opening
        // thread's namespace's): no sysctl(8), which a bare Debian root lacks (procps).
        ns.within(|| {
            for conf in ["all", "default"] {
                let key = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                std::fs::write(&key, "1").unwrap_or_else(|e| panic!("{key}: {e}"));
            }
        });
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip args...` in the namespace, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.exec("ip", args)
    }

    /// `ip -s -d link show dev <ifname>` in the namespace: the interface's XDP attachment
    /// (`prog/xdp`) and its counters.
    pub fn link_details(&self, ifname: &str) -> String {
        self.ip(&["-s", "-d", "link", "show", "dev", ifname])
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

    /// Runs a command inside the namespace, panicking with its stderr on failure.
    /// nsenter, not `ip netns exec` (or `ip -n`): that remounts /sys, which hides bpffs,
    /// and fails where / is no mount point.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let net = format!("--net={}", self.path());
        let mut all = vec![net.as_str(), cmd];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Runs a command inside the namespace; returns whether it succeeded (for commands
    /// expected to fail).
    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> bool {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .arg(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                enter(&path);
                f()
            });
            match t.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let ok = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// Moves the calling thread into the network namespace at `path` (setns moves only the
/// calling thread: sockets it opens afterwards live there).
pub fn enter(path: &str) {
    let ns = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread of its own inside the named namespace (`/run/netns/<ns>`).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            enter(&path);
            f()
        });
        match t.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The network namespaces named `<prefix>-...` that exist now.
pub fn netns_left(prefix: &str) -> Vec<String> {
    let out = run("ip", &["netns", "list"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}
