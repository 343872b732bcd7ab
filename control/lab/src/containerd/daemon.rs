//! One containerd per lab node: started by the lab inside the node's network namespace, with
//! its own root, state, socket and configuration under `DIR/nodeN/containerd` (never the
//! machine's containerd, never /run/containerd or /var/lib/containerd), its CRI plugin
//! reading the node's CNI directories, and pod network namespaces kept under its state
//! directory (`netns_mounts_under_state_dir`), so nothing of it lands in /run/netns.
//!
//! Stopped by its recorded PID. What outlives it by design (the shims and the containers
//! they hold, the mounts it made) is found from its own directories and removed by
//! [`sweep`]: pid files in its state directory, mount points under its directory, cgroups
//! under the node's cgroup parent.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::Lab;
use super::super::error::LabError;
use super::super::layout::NodePlan;
use super::super::procs::{self, ProcRecord};
use super::mounts;

/// How long containerd gets to answer CRI Version after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// containerd stops its plugins and exits on SIGTERM; the shims and containers stay.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// The cgroup controllers' mount points: each gets the node's cgroup parent.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where one node's containerd keeps everything.
#[derive(Debug, Clone)]
pub struct NodeRuntime {
    pub node: NodePlan,
    /// DIR/nodeN/containerd
    pub dir: PathBuf,
    /// The cgroup under which runc puts the node's containers ("/kxdp-lab-PREFIX-nodeN").
    pub cgroup_parent: String,
}

impl NodeRuntime {
    pub fn of(lab: &Lab, node: NodePlan) -> NodeRuntime {
        NodeRuntime {
            node,
            dir: lab.node_dir(node).join("containerd"),
            cgroup_parent: format!("/kxdp-lab-{}-{}", lab.prefix, node.name()),
        }
    }

    pub fn label(&self) -> String {
        format!("containerd-{}", self.node.name())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Where its CRI plugin bind-mounts pod network namespaces (`netns_mounts_under_state_dir`
    /// puts them under the CRI plugin's state directory).
    pub fn netns_dir(&self) -> PathBuf {
        self.state().join("io.containerd.grpc.v1.cri").join("netns")
    }

    /// The node's bpffs (a DaemonSet mounts the host's /sys/fs/bpf; each lab node has its own).
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    /// The task state of the shims: a directory per container with its pid files.
    fn tasks_dir(&self) -> PathBuf {
        self.state()
            .join("io.containerd.runtime.v2.task")
            .join(super::K8S_NAMESPACE)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// containerd's configuration: CRI with the node's CNI directories, the lab's pause
    /// image, no AppArmor profile (the lab loads none), plugins that would reach outside
    /// DIR (the /opt installer) or need absent kernels' filesystems disabled.
    pub fn config(&self, lab: &Lab) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        format!(
            r#"version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin_dir}
    conf_dir = {conf_dir}
    max_conf_num = 1
"#,
            root = q(&self.root()),
            state = q(&self.state()),
            socket = q(&self.socket()),
            ttrpc = q(&self.dir.join("containerd.sock.ttrpc")),
            pause = toml_string(&super::images::pause_image()),
            bin_dir = q(&super::cni_bin_dir(lab, self.node)),
            conf_dir = q(&lab.cni_conf_dir(self.node)),
        )
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prepares the node's directories and mounts (its bpffs, the netns directory as a shared
/// mount so HostToContainer mounts of it validate), writes the configuration and starts
/// containerd; returns once its CRI plugin answers.
pub fn start(lab: &Lab, rt: &NodeRuntime) -> Result<ProcRecord, LabError> {
    for d in [
        rt.dir.clone(),
        rt.netns_dir(),
        rt.bpffs(),
        super::cni_bin_dir(lab, rt.node),
        lab.cni_conf_dir(rt.node),
    ] {
        fs::create_dir_all(&d).map_err(|e| LabError::io(&d, e))?;
    }
    mounts::shared_bind(&rt.netns_dir())?;
    mounts::shared_bpffs(&rt.bpffs())?;
    fs::write(rt.config_path(), rt.config(lab)).map_err(|e| LabError::io(rt.config_path(), e))?;
    launch(lab, rt)
}

/// Starts containerd on the prepared directories (also after a restart) and waits for CRI.
pub fn launch(lab: &Lab, rt: &NodeRuntime) -> Result<ProcRecord, LabError> {
    let rec = procs::spawn(
        &lab.procs_dir(),
        &rt.label(),
        &lab.names().node(rt.node),
        Path::new("containerd"),
        &[
            "--config".to_string(),
            rt.config_path().display().to_string(),
        ],
        &rt.dir.join("containerd.out"),
        &rt.log(),
    )?;
    wait_ready(rt, &rec)?;
    Ok(rec)
}

/// Polls CRI Version until it answers, containerd exits, or the deadline passes.
fn wait_ready(rt: &NodeRuntime, rec: &ProcRecord) -> Result<(), LabError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match super::client(rt) {
            Ok(c) => match c.version() {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if !procs::is_alive(rec) {
            return Err(LabError::Setup(format!(
                "{} exited while starting; its log ends with:\n{}",
                rt.label(),
                procs::tail(&rt.log(), 20)
            )));
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("{} to answer CRI Version", rt.label()),
                detail: format!("{last}; its log ends with:\n{}", procs::tail(&rt.log(), 20)),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Stops the node's containerd by its recorded PID (containers keep running in their shims).
pub fn stop(lab: &Lab, rt: &NodeRuntime) -> Result<(), LabError> {
    match procs::records(&lab.procs_dir())
        .into_iter()
        .find(|r| r.label == rt.label())
    {
        Some(rec) => procs::stop(&lab.procs_dir(), &rec, STOP_GRACE),
        None => Ok(()),
    }
}

/// Removes what containerd leaves behind once it is stopped: container processes and shims
/// (by the PIDs in its state directory, each checked to be what the file says), mounts under
/// its directory, the node's cgroups. Safe to repeat.
pub fn sweep(rt: &NodeRuntime) -> Result<(), LabError> {
    // Containers' processes first (init.pid: each must be in the node's cgroup), then their
    // shims (shim.pid: each must name this containerd's socket), so a PID the kernel has
    // since given to another process is left alone.
    let socket = rt.socket().display().to_string();
    for pid in pid_files(&rt.tasks_dir(), "init.pid") {
        kill_if(pid, &format!("/proc/{pid}/cgroup"), &rt.cgroup_parent);
    }
    for pid in pid_files(&rt.tasks_dir(), "shim.pid") {
        kill_if(pid, &format!("/proc/{pid}/cmdline"), &socket);
    }
    let mut first_error = mounts::unmount_under(&rt.dir).err();
    if let Err(e) = remove_cgroups(&rt.cgroup_parent) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

/// The PIDs in `<tasks>/<id>/<file>`.
fn pid_files(tasks: &Path, file: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(tasks) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join(file)).ok())
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

/// SIGKILLs `pid` and waits briefly for it to go, when it still runs and its /proc file
/// `proof` contains `mention` (its cgroup, its command line).
fn kill_if(pid: i32, proof: &str, mention: &str) {
    let Ok(text) = fs::read(proof) else {
        return;
    };
    if !String::from_utf8_lossy(&text).contains(mention) {
        return;
    }
    // SAFETY: kill(2) has no memory effects; the PID comes from our containerd's state.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: reaps it if it is our child; otherwise a no-op.
        unsafe {
            libc::waitpid(pid, &mut status, libc::WNOHANG);
        }
        std::thread::sleep(POLL);
    }
}

/// rmdir of the cgroup parent and everything under it, in every hierarchy (v1 controllers
/// and a v2 root alike), deepest first. A cgroup with processes cannot go: that is an error.
fn remove_cgroups(parent: &str) -> Result<(), LabError> {
    let rel = parent.trim_start_matches('/');
    let mut roots = vec![PathBuf::from(CGROUP_ROOT)];
    if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut first_error = None;
    for root in roots {
        let top = root.join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if let Err(e) = fs::remove_dir(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                first_error.get_or_insert(LabError::io(&d, e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_quoted() {
        assert_eq!(toml_string("/run/kxdp-lab/x"), "\"/run/kxdp-lab/x\"");
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn pid_files_are_read_per_task() {
        let dir = std::env::temp_dir().join(format!("kxdp-lab-pidfiles-{}", std::process::id()));
        for (id, pid) in [("a", "12\n"), ("b", "x"), ("c", "34")] {
            fs::create_dir_all(dir.join(id)).unwrap();
            fs::write(dir.join(id).join("init.pid"), pid).unwrap();
        }
        let mut pids = pid_files(&dir, "init.pid");
        pids.sort();
        assert_eq!(pids, vec![12, 34]);
        assert!(pid_files(&dir.join("none"), "init.pid").is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
