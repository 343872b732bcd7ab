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
        Netns::create(prefix, tag, false)
    }

    /// Like [`Netns::with_prefix`], with IPv6 left on: for tests of dual-stack addressing
    /// (kxdp-cni's), which must see what a pod's namespace really gets.
    pub fn with_ipv6(prefix: &str, tag: &str) -> Netns {
        Netns::create(prefix, tag, true)
    }

    fn create(prefix: &str, tag: &str, ipv6: bool) -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}-{tag}", std::process::id());
        // A leftover from a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        // Through procfs from a thread inside the namespace (/proc/sys/net is the opening
        // thread's namespace's): no sysctl(8), which a bare Debian root lacks (procps).
        if !ipv6 {
            ns.within(|| {
                for conf in ["all", "default"] {
                    let key = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                    std::fs::write(&key, "1").unwrap_or_else(|e| panic!("{key}: {e}"));
                }
            });
        }
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
        Veth::new(a, b)
            .queues(queues)
            .peer_queues(queues)
            .add(&self.name);
    }

    /// Adds a veth pair whose end `a` is here and `b` in `peer_ns`, with `queues` rx and
    /// tx queues on each end, both up.
    pub fn veth_pair_to(&self, a: &str, peer_ns: &Netns, b: &str, queues: u32) {
        Veth::new(a, b)
            .queues(queues)
            .peer_queues(queues)
            .peer_in(&peer_ns.name)
            .add(&self.name);
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

/// A veth pair to add, described end by end; [`Veth::add`] creates it and sets both ends
/// up. What is not said is the kernel's default (a random MAC, one queue each way).
#[derive(Debug, Clone, Copy)]
pub struct Veth<'a> {
    name: &'a str,
    peer: &'a str,
    peer_ns: Option<&'a str>,
    mac: Option<&'a str>,
    queues: Option<u32>,
    peer_queues: Option<u32>,
}

impl<'a> Veth<'a> {
    /// The pair `name`/`peer`, both ends in the namespace it is added to.
    pub fn new(name: &'a str, peer: &'a str) -> Veth<'a> {
        Veth {
            name,
            peer,
            peer_ns: None,
            mac: None,
            queues: None,
            peer_queues: None,
        }
    }

    /// The peer goes to the namespace named `ns` (`/run/netns/<ns>`).
    pub fn peer_in(self, ns: &'a str) -> Veth<'a> {
        Veth {
            peer_ns: Some(ns),
            ..self
        }
    }

    /// The MAC address of the end `name`.
    pub fn mac(self, mac: &'a str) -> Veth<'a> {
        Veth {
            mac: Some(mac),
            ..self
        }
    }

    /// Rx and tx queues of the end `name` (an XDP program on a veth wants the receiving
    /// end to have as many rx queues as the sending end has tx queues).
    pub fn queues(self, n: u32) -> Veth<'a> {
        Veth {
            queues: Some(n),
            ..self
        }
    }

    /// Rx and tx queues of the peer.
    pub fn peer_queues(self, n: u32) -> Veth<'a> {
        Veth {
            peer_queues: Some(n),
            ..self
        }
    }

    /// Adds the pair in the namespace named `ns` and sets both ends up.
    pub fn add(&self, ns: &str) {
        let queue_args = |n: Option<u32>| match n {
            Some(n) => vec![
                "numtxqueues".to_string(),
                n.to_string(),
                "numrxqueues".to_string(),
                n.to_string(),
            ],
            None => Vec::new(),
        };
        let mut args: Vec<String> = ["link", "add", self.name].map(String::from).to_vec();
        if let Some(mac) = self.mac {
            args.extend(["address".to_string(), mac.to_string()]);
        }
        args.extend(queue_args(self.queues));
        args.extend(["type", "veth", "peer", "name", self.peer].map(String::from));
        args.extend(queue_args(self.peer_queues));
        if let Some(peer_ns) = self.peer_ns {
            args.extend(["netns".to_string(), peer_ns.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ip_in(ns, &args);
        ip_in(ns, &["link", "set", self.name, "up"]);
        ip_in(
            self.peer_ns.unwrap_or(ns),
            &["link", "set", self.peer, "up"],
        );
    }
}

/// The uplink of a test node: veth `up0` in the node's namespace, with the node's MAC and
/// address, its queues and an address on it, whose peer `up0peer` is the segment outside
/// the node (in `outside`, or beside `up0` when `None`). Both ends are up.
#[derive(Debug, Clone, Copy)]
pub struct Uplink<'a> {
    pub mac: &'a str,
    /// The node's address on it, with its prefix length (`192.168.77.1/24`).
    pub addr: &'a str,
    /// Rx and tx queues of `up0` and of its peer.
    pub queues: u32,
    pub outside: Option<&'a str>,
}

impl Uplink<'_> {
    /// The node's end.
    pub const NAME: &'static str = "up0";
    /// The outside end.
    pub const PEER: &'static str = "up0peer";

    /// Adds it to the node namespace named `node`.
    pub fn add(&self, node: &str) {
        // Both ends: the outside sends on any of its tx queues (an AF_XDP socket binds one),
        // which lands on the same rx queue of the node's end.
        let mut veth = Veth::new(Self::NAME, Self::PEER)
            .mac(self.mac)
            .queues(self.queues)
            .peer_queues(self.queues);
        if let Some(outside) = self.outside {
            veth = veth.peer_in(outside);
        }
        veth.add(node);
        ip_in(node, &["addr", "add", self.addr, "dev", Self::NAME]);
    }
}

/// Runs `ip args...` in the namespace named `ns`, panicking with its stderr on failure
/// (through nsenter, as [`Netns::exec`]).
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let net = format!("--net=/run/netns/{ns}");
    let mut all = vec![net.as_str(), "ip"];
    all.extend_from_slice(args);
    run("nsenter", &all)
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
