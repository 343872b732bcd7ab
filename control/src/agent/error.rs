//! Why the agent could not start, or could not undo what it set up. Each variant names the
//! flag, file, socket, address or port at fault; `kxdp agent` prints the Display as its one
//! error line and exits 1.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::datapath_ports::PortError;
use super::netdev::NetdevError;
use super::source::BuildError;
use crate::cni_install::CniInstallError;
use crate::source::KubeSourceError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--workers {0}: must be 1..=64")]
    Workers(usize),
    /// Reading the chosen uplink (its rx queues) failed.
    #[error("uplink {uplink}: {source}")]
    Uplink { uplink: String, source: NetdevError },
    /// `--uplink` names an interface that does not exist or cannot be served: a flag is an
    /// operator's explicit choice, so this ends the start instead of waiting.
    #[error(transparent)]
    ChooseUplink(#[from] super::uplink::ChooseUplinkError),
    #[error("--cpus lists {cpus} cpus for {workers} workers")]
    Cpus { cpus: usize, workers: usize },
    #[error("give --state DIR (manifests) or --kubeconfig PATH / --in-cluster")]
    NoSource,
    #[error("Kubernetes API: {0}")]
    Kube(#[source] KubeSourceError),
    /// The first state could not be loaded or translated (a state directory: fatal at start).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Loading the XDP programs, starting the workers or opening the uplink/host ports.
    #[error(transparent)]
    Ports(#[from] PortError),
    /// The host port, its routes or the masquerade rules (`ip`, `iptables`, sysctls).
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    /// `--metrics-bind-address` / `--healthz-bind-address` cannot be served.
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// A step of setting up the local API socket (`creating` its directory, `removing
    /// stale` socket file, `binding`).
    #[error("{step} {}: {source}", path.display())]
    ApiSocket {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// `--cni-conf-dir`: the CNI configuration could not be installed, so no runtime would
    /// ever give a pod a network on this node.
    #[error("--cni-conf-dir: {0}")]
    CniConfig(#[from] CniInstallError),
    /// Two agents must never serve one node.
    #[error("{}: another agent is answering on this socket", .0.display())]
    ApiSocketTaken(PathBuf),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] io::Error),
    #[error("starting the {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        source: io::Error,
    },
}
