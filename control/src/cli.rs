//! The `kxdp` command line (clap derive). Only parsing lives here; each subcommand's
//! work lives in its own module or crate (`agent`, the `replay` crate, ...). The lab, the
//! throughput rig and their helpers are tools of their own (`kxdp-lab`, `kxdp-bench`), never
//! part of the binary a node runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use replay::{InputSpec, ReplayOptions, StateUpdate};

/// kxdp: a userspace AF_XDP datapath replacing kube-proxy and the CNI plugin.
#[derive(Debug, Parser)]
#[command(name = "kxdp", version)]
pub struct Cli {
    /// Log lines on stderr: `text` for a person, `json` (one object per line: timestamp,
    /// level, fields, message) for a log pipeline. The level is RUST_LOG's (default: info
    /// for the agent, warnings for the other commands).
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the datapath over pcap files (docs/replay.md).
    Replay(ReplayArgs),
    /// Run the live datapath on this node: XDP programs, AF_XDP workers, the local API the
    /// CNI plugin calls. Runs until SIGTERM/SIGINT, then removes everything it set up.
    Agent(Box<AgentArgs>),
    /// Ask a running agent what its workers did: packets per port, verdicts, drops by reason.
    Stats(StatsArgs),
    /// Copy CNI plugin binaries into the node's CNI bin directory, each replaced whole (the
    /// DaemonSet's init container: the image has no shell).
    InstallCniPlugins(InstallCniPluginsArgs),
    /// Remove what a kxdp agent that is no longer running left on this node (XDP programs,
    /// kxdp-host, neighbour entries, its nftables table, its socket; with --cni its CNI
    /// files), and with --kube-proxy / --flannel what those leave. Refuses while an agent
    /// answers on --api-socket, unless --force. Acts in the current network namespace.
    Cleanup(CleanupArgs),
    /// Set node sysctls (`net.ipv4.ip_forward=1`): the DaemonSet's privileged init container,
    /// since the agent's own container sees /proc/sys read-only (the image has no sysctl(8)).
    Sysctl(SysctlArgs),
}

#[derive(Debug, Args)]
pub struct SysctlArgs {
    /// KEY=VALUE pairs, keys in sysctl(8)'s dotted form.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The agent's local API socket: refused while an agent answers there; removed when
    /// none does.
    #[arg(long, value_name = "PATH", default_value = agent_api::DEFAULT_SOCKET)]
    pub api_socket: PathBuf,
    /// Clean up even though an agent answers on --api-socket (its own XDP programs stay
    /// attached while it runs).
    #[arg(long)]
    pub force: bool,
    /// Also remove kxdp's CNI configuration (05-kxdp.conflist and any other kxdp-cni
    /// configuration) from --cni-conf-dir and kxdp-cni from --cni-bin-dir. Not by default:
    /// without a CNI configuration the runtime cannot start pods on the node.
    #[arg(long)]
    pub cni: bool,
    /// The runtime's CNI configuration directory.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The runtime's CNI plugin directory.
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Also remove kube-proxy's leftovers: KUBE-* iptables chains (nat, filter) and the
    /// jumps to them, the nftables tables ip/ip6 kube-proxy, the kube-ipvs0 device.
    #[arg(long)]
    pub kube_proxy: bool,
    /// Also remove Flannel's leftovers: flannel.1, cni0, FLANNEL-* iptables chains,
    /// subnet.env in --flannel-run-dir, Flannel's configuration in --cni-conf-dir.
    #[arg(long)]
    pub flannel: bool,
    /// Flannel's runtime directory.
    #[arg(long, value_name = "DIR", default_value = "/run/flannel")]
    pub flannel_run_dir: PathBuf,
}

impl From<CleanupArgs> for crate::cleanup::CleanupOptions {
    fn from(a: CleanupArgs) -> Self {
        crate::cleanup::CleanupOptions {
            api_socket: a.api_socket,
            force: a.force,
            cni: a.cni,
            cni_conf_dir: a.cni_conf_dir,
            cni_bin_dir: a.cni_bin_dir,
            kube_proxy: a.kube_proxy,
            flannel: a.flannel,
            flannel_run_dir: a.flannel_run_dir,
        }
    }
}

#[derive(Debug, Args)]
pub struct InstallCniPluginsArgs {
    /// The directory the container runtime looks for plugins in (its /opt/cni/bin).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The plugin binaries, installed under their own file names.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The agent's local API socket.
    #[arg(long, value_name = "PATH", default_value = agent_api::DEFAULT_SOCKET)]
    pub api_socket: PathBuf,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name (a Node in the state directory).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// The underlay interface (VXLAN and Service frontends arrive here). Default: kxdp.yaml's
    /// `uplink` (a matching `nodes:` entry first), else the interface holding the Node's
    /// InternalIP, else the IPv4 default route's. Bonds, VLAN devices and bridges are refused.
    #[arg(long, value_name = "IFNAME")]
    pub uplink: Option<String>,
    /// State directory (docs/replay.md), re-read when its files change. With
    /// --kubeconfig / --in-cluster only its kxdp.yaml is read (the mounted ConfigMap).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Take the cluster state from the Kubernetes API with this kubeconfig.
    #[arg(long, value_name = "PATH", conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Take the cluster state from the Kubernetes API: $KUBECONFIG or ~/.kube/config when
    /// present, else the pod's service account (in-cluster).
    #[arg(long)]
    pub in_cluster: bool,
    /// With --in-cluster: reach the API server here (HOST:PORT, [IPv6]:PORT, or HOST for
    /// port 6443) with the service account, instead of at $KUBERNETES_SERVICE_HOST (a
    /// ClusterIP that nothing routes before kxdp runs, on a node without kube-proxy).
    /// Overrides kxdp.yaml's `apiServer`.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_api_server)]
    pub api_server: Option<model::config::ApiServerEndpoint>,
    /// The pod's service account (token, ca.crt, namespace), used with an API server given
    /// by --api-server or `apiServer`.
    #[arg(long, value_name = "DIR", default_value = crate::source::SERVICE_ACCOUNT_DIR)]
    pub service_account: PathBuf,
    /// Worker threads; rx queue q of every port is served by worker q mod N. Default: one
    /// per rx queue of the uplink, at most one per CPU the agent may use (or listed in
    /// --cpus). At most the uplink's rx queue count: each worker needs a queue to send on.
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPUs to pin the workers to, in worker order (e.g. 0,1).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub cpus: Vec<usize>,
    /// The local API socket the CNI plugin talks to.
    #[arg(long, value_name = "PATH", default_value = agent_api::DEFAULT_SOCKET)]
    pub api_socket: PathBuf,
    /// kxdp-cni's attachment records (its `stateDir`): pods attached before this agent
    /// started are re-opened from them.
    #[arg(long, value_name = "DIR", default_value = agent_api::record::DEFAULT_STATE_DIR)]
    pub cni_state_dir: PathBuf,
    /// Once ready, write the CNI configuration list here (the runtime's /etc/cni/net.d) as
    /// 05-kxdp.conflist, naming --api-socket and --cni-state-dir (as paths on the host, so
    /// mount them at the same paths), and remove older kxdp configurations.
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// host-local's lease directory, written into that configuration.
    #[arg(long, value_name = "DIR", default_value = agent_api::conflist::DEFAULT_IPAM_DATA_DIR)]
    pub cni_ipam_data_dir: PathBuf,
    /// The runtime's CNI plugin directories (its CNI_PATH, `:`-separated): the list declares
    /// only the CNI versions that the kxdp-cni and portmap found there both speak.
    #[arg(
        long,
        value_name = "DIRS",
        value_delimiter = ':',
        default_value = "/opt/cni/bin"
    )]
    pub cni_path: Vec<PathBuf>,
    /// Where /metrics (Prometheus), /healthz, /livez and /readyz are served (kube-proxy's
    /// default).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Where /healthz, /livez and /readyz are served (kube-proxy's default).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: std::net::SocketAddr,
    /// /healthz and /livez turn 503 when a change noticed this long ago is still not
    /// programmed (kube-proxy: twice its 30 s sync period). Seconds, or with a unit: 500ms,
    /// 2s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub health_timeout: std::time::Duration,
}

impl From<AgentArgs> for crate::agent::AgentOptions {
    fn from(a: AgentArgs) -> crate::agent::AgentOptions {
        crate::agent::AgentOptions {
            node: a.node,
            uplink: a.uplink,
            kube: match (a.kubeconfig, a.in_cluster) {
                (Some(path), _) => Some(crate::agent::KubeAccess::Kubeconfig(path)),
                (None, true) => Some(crate::agent::KubeAccess::Infer),
                (None, false) => None,
            },
            api_server: a.api_server,
            service_account: a.service_account,
            state: a.state,
            workers: a.workers,
            cpus: a.cpus,
            api_socket: a.api_socket,
            cni_state_dir: a.cni_state_dir,
            cni_conf_dir: a.cni_conf_dir,
            cni_ipam_data_dir: a.cni_ipam_data_dir,
            cni_path: a.cni_path,
            metrics_bind_address: a.metrics_bind_address,
            healthz_bind_address: a.healthz_bind_address,
            health_timeout: a.health_timeout,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// State directory: Kubernetes manifests (*.yaml) and an optional kxdp.yaml.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// The node whose datapath is replayed (a Node in the state directory).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Input capture (pcap or pcapng) arriving on a port: uplink, host or
    /// pod-<namespace>-<name>. Repeat for several; they are merged by timestamp.
    #[arg(long = "in", value_name = "PORT=FILE.pcap", required = true)]
    pub inputs: Vec<InputSpec>,
    /// Output directory (created if missing): <port>.pcap per egress port, verdicts.jsonl.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print a table of every packet and its verdict to stdout.
    #[arg(long)]
    pub summary: bool,
    /// From time AT (seconds, pcap time) on, the cluster state is DIR: a new table
    /// generation under the running flows, as a live agent publishes one. Repeatable.
    #[arg(long = "update", value_name = "AT=DIR")]
    pub updates: Vec<StateUpdate>,
}

impl From<ReplayArgs> for ReplayOptions {
    fn from(a: ReplayArgs) -> ReplayOptions {
        ReplayOptions {
            state: a.state,
            node: a.node,
            inputs: a.inputs,
            out: a.out,
            summary: a.summary,
            updates: a.updates,
        }
    }
}

/// `500ms`, `2s`, `1m` or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: want a whole number with ms, s or m"))?;
    let duration = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{text:?}: the unit is ms, s or m")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than 0"));
    }
    Ok(duration)
}

fn parse_api_server(text: &str) -> Result<model::config::ApiServerEndpoint, String> {
    model::config::ApiServerEndpoint::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "0s", "1h", "s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replay_parses_repeated_inputs() {
        let cli = Cli::try_parse_from([
            "kxdp",
            "replay",
            "--state",
            "s",
            "--node",
            "node-a",
            "--in",
            "uplink=a.pcap",
            "--in",
            "host=b.pcap",
            "--out",
            "o",
            "--summary",
        ])
        .unwrap();
        let Command::Replay(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert_eq!(args.inputs.len(), 2);
        assert_eq!(args.inputs[1].port, "host");
        assert!(args.summary);
        assert!(
            Cli::try_parse_from([
                "kxdp", "replay", "--state", "s", "--node", "n", "--out", "o"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "kxdp", "replay", "--state", "s", "--node", "n", "--out", "o", "--in", "bad"
            ])
            .is_err()
        );
    }
}
