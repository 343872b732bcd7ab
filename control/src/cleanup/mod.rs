//! `kxdp cleanup`: takes off a node what a kxdp agent that is no longer running left on it
//! (after a crash, or when leaving kxdp), and, on request, what kube-proxy and Flannel
//! leave (when moving to kxdp). Every step looks first and removes only what is there, so
//! a second run removes nothing; each removal is reported as one line.
//!
//! Everything acts in the network namespace the command runs in, as the agent does.

mod agent_state;
mod cni_files;
pub mod iptables;
mod kube_flannel;
mod nft;
mod tool;

use std::path::PathBuf;

/// What to remove, and where the agent kept its files.
#[derive(Debug, Clone)]
pub struct CleanupOptions {
    /// The agent's local API socket: a live agent answering there stops the cleanup.
    pub api_socket: PathBuf,
    /// Remove even though an agent answers on the socket.
    pub force: bool,
    /// Also remove the CNI files the agent and the DaemonSet installed.
    pub cni: bool,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// Remove kube-proxy's leftovers (iptables, nftables and ipvs modes).
    pub kube_proxy: bool,
    /// Remove Flannel's leftovers.
    pub flannel: bool,
    /// Flannel's runtime directory (its subnet.env).
    pub flannel_run_dir: PathBuf,
}

/// Why a step could not finish. The other steps still run; the command then fails.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(
        "an agent answers on {0}: stop it first (it removes its own state when it stops), \
         or pass --force"
    )]
    AgentRunning(PathBuf),
    #[error(transparent)]
    Kernel(#[from] ::netdev::NetdevError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("reading the loaded BPF programs: {0}")]
    Bpf(String),
}

/// What one run did: each line names one thing removed; `notes` are what was skipped and
/// why (a missing tool), `errors` what failed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    pub removed: Vec<String>,
    pub notes: Vec<String>,
    pub errors: Vec<CleanupError>,
}

impl CleanupReport {
    fn removed(&mut self, what: impl Into<String>) {
        let line = what.into();
        println!("removed {line}");
        self.removed.push(line);
    }

    fn note(&mut self, what: impl Into<String>) {
        let line = what.into();
        eprintln!("kxdp cleanup: {line}");
        self.notes.push(line);
    }

    fn step(&mut self, result: Result<(), CleanupError>) {
        if let Err(e) = result {
            eprintln!("kxdp cleanup: error: {e}");
            self.errors.push(e);
        }
    }
}

/// Runs the cleanup. Refuses (before touching anything) when an agent answers on the API
/// socket and `force` is not set.
pub fn run(opts: &CleanupOptions) -> Result<CleanupReport, CleanupError> {
    let live = agent_state::agent_answers(&opts.api_socket);
    if live && !opts.force {
        return Err(CleanupError::AgentRunning(opts.api_socket.clone()));
    }
    let mut report = CleanupReport::default();
    agent_state::remove(opts, live, &mut report);
    if opts.cni {
        cni_files::remove_kxdp(opts, &mut report);
    }
    if opts.kube_proxy {
        kube_flannel::remove_kube_proxy(&mut report);
    }
    if opts.flannel {
        kube_flannel::remove_flannel(opts, &mut report);
    }
    if report.removed.is_empty() && report.errors.is_empty() {
        println!("nothing to remove");
    }
    Ok(report)
}
