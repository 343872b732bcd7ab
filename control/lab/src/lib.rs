//! `kxdp-lab`: a two-node cluster in network namespaces on this machine, with kxdp as the
//! datapath, checked with real traffic.
//!
//! `up` builds it (layout.rs has the picture): a fabric bridge; node1 and node2 with
//! uplinks on it, each running `kxdp agent`; an external client; a kernel vxlan device
//! posing as node3; four pods created through `kxdp-cni`; the state directory (Nodes,
//! Pods with their CNI-assigned addresses, Services, EndpointSlices, a NetworkPolicy).
//! `check` sends traffic and prints a table. `down` removes everything and is safe to
//! repeat; `run` is up + check + down, whatever happens.
//!
//! With `--source api` the agents watch `kxdp-lab apiserver-double` (apiserver.rs), which
//! serves and follows DIR/state, instead of reading the directory themselves.
//!
//! With `--runtime containerd` (containerd/) each node runs a containerd the lab drives
//! through CRI as a kubelet would: the agents run from the kxdp image as deploy/kxdp.yaml's
//! DaemonSet says, the pods are CRI sandboxes whose chain containerd runs, their probe
//! servers containers.
//!
//! Everything lives in namespaces named `<prefix>-...` and under `--dir`; processes are
//! recorded by PID and start time in `DIR/procs`, so `down` from another process stops
//! exactly what `up` started.

mod agent_client;
pub mod agents;
pub mod apiserver;
pub mod apiserver_double;
mod checks;
pub mod cmd;
pub mod containerd;
mod error;
mod health_check;
pub mod layout;
pub mod manifests;
mod metrics_check;
pub mod oci_image;
pub mod pause;
pub mod pods;
pub mod probe;
pub mod procs;
mod report;
pub mod servers;
pub mod topology;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

pub use error::{LabError, Teardown};
pub use layout::Names;
pub use report::CheckResult;

use layout::{AGENT_NODES, NodePlan, PODS};
use manifests::PlacedPod;

/// The binary a node runs (the agents), from the `control` crate.
pub const KXDP_BINARY: &str = "kxdp";
/// This crate's binary: the lab's commands, its probes and the API-server double.
pub const TOOLS_BINARY: &str = "kxdp-lab";

/// Default state directory of `kxdp-lab`.
pub const DEFAULT_DIR: &str = "/run/kxdp-lab";
pub const DEFAULT_PREFIX: &str = "kxl";
/// How long `up` waits for the agents to know every pod after the manifests are written.
const PODS_KNOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What every lab command takes.
#[derive(Debug, Args)]
pub struct LabOptions {
    /// Where the lab keeps its state dir, logs, PIDs and CNI state.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Start of every namespace name (a lowercase letter, then letters or digits, <= 8).
    /// check and down take it from DIR when a lab is there.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Datapath workers per node (and rx/tx queues per uplink and pod veth).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Where the agents take the cluster state from: `dir` reads DIR/state; `api` watches
    /// an API server double (`kxdp-lab apiserver-double`, in `<p>-fabric`) serving DIR/state.
    /// check and down take it from DIR when a lab is there.
    #[arg(long, value_enum, default_value_t = StateSource::Dir)]
    pub source: StateSource,
    /// What makes the pods and runs the agents: `namespaces` is the lab itself (pods are
    /// namespaces it runs the CNI chain for, agents and servers processes it starts);
    /// `containerd` is one containerd per node, driven through CRI as a kubelet drives it,
    /// running the agents from the kxdp image (--image) as deploy/kxdp.yaml's DaemonSet.
    /// check and down take it from DIR when a lab is there.
    #[arg(long, value_enum, default_value_t = Runtime::Namespaces)]
    pub runtime: Runtime,
    /// With `--runtime containerd`: the kxdp image archive (docker-archive) to run the
    /// agents from, as deploy/image/build.sh writes it (target/image/kxdp-*.tar).
    #[arg(long)]
    pub image: Option<PathBuf>,
}

/// What makes the lab's pods and runs its agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The lab: network namespaces, the CNI chain run by the lab, processes via nsenter.
    #[default]
    Namespaces,
    /// containerd per node through CRI; the agents from the kxdp image.
    Containerd,
}

/// Where the lab's agents get the cluster state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateSource {
    /// `kxdp agent --state DIR/state`: the manifests, re-read when they change.
    #[default]
    Dir,
    /// `kxdp agent --kubeconfig ...`: list/watch against the API server double.
    Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabAction {
    /// Build the lab (after removing any previous one in DIR).
    Up,
    /// Run the checks against a lab that is up; exit 1 if any fails.
    Check,
    /// Remove everything `up` made; safe to run twice.
    Down,
    /// up, check, down (always); the exit code is the checks'.
    Run,
}

/// What `up` records in DIR/lab.json so later commands find the same lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LabRecord {
    prefix: String,
    workers: u32,
    /// Absent in a record of a lab from before `--source`: those read DIR/state.
    #[serde(default)]
    source: StateSource,
    #[serde(default)]
    runtime: Runtime,
    #[serde(default)]
    image: Option<PathBuf>,
}

/// One lab: its directory, prefix, worker count and the `kxdp` binary that runs it all.
#[derive(Debug, Clone)]
pub struct Lab {
    pub dir: PathBuf,
    pub prefix: String,
    pub workers: u32,
    pub source: StateSource,
    pub runtime: Runtime,
    /// The kxdp image archive (`--runtime containerd`).
    pub image: Option<PathBuf>,
    /// Where `kxdp` (the agents), `kxdp-cni` (the pods) and `kxdp-lab` (probes, the
    /// API-server double) are: beside the running tool, as `cargo build` leaves them.
    pub bin_dir: PathBuf,
}

impl Lab {
    /// The lab of `args`; for check and down, the prefix, workers and source recorded in
    /// DIR win.
    pub fn new(
        dir: &Path,
        prefix: &str,
        workers: u32,
        source: StateSource,
        runtime: Runtime,
        image: Option<&Path>,
        prefer_record: bool,
    ) -> Result<Lab, LabError> {
        let exe = std::env::current_exe()
            .map_err(|e| LabError::Setup(format!("cannot find the running binary: {e}")))?;
        let mut lab = Lab {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            workers,
            source,
            runtime,
            // Absolute, as recorded in DIR for check and down, which may run elsewhere.
            image: image.map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf())),
            bin_dir: exe
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        if prefer_record && let Some(rec) = lab.read_record() {
            lab.prefix = rec.prefix;
            lab.workers = rec.workers;
            lab.source = rec.source;
            lab.runtime = rec.runtime;
            lab.image = rec.image;
        }
        if !layout::valid_prefix(&lab.prefix) {
            return Err(LabError::Setup(format!(
                "prefix {:?}: want a lowercase letter, then lowercase letters or digits, at most 8",
                lab.prefix
            )));
        }
        if lab.workers == 0 || lab.workers > 64 {
            return Err(LabError::Setup(format!(
                "workers {}: want 1..=64",
                lab.workers
            )));
        }
        Ok(lab)
    }

    pub fn names(&self) -> Names {
        Names {
            prefix: self.prefix.clone(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn node_dir(&self, node: NodePlan) -> PathBuf {
        self.dir.join(node.name())
    }

    pub fn agent_socket(&self, node: NodePlan) -> PathBuf {
        match self.runtime {
            Runtime::Namespaces => self.node_dir(node).join("agent.sock"),
            // The DaemonSet's /run/kxdp/agent.sock on the node.
            Runtime::Containerd => containerd::agents::agent_socket(self, node),
        }
    }

    /// The node's CNI conf dir (a node's /etc/cni/net.d): its agent installs the
    /// configuration list there once ready, and the lab, as the node's runtime, reads it.
    pub fn cni_conf_dir(&self, node: NodePlan) -> PathBuf {
        self.node_dir(node).join("net.d")
    }

    /// The runtime's CNI_PATH: Debian's plugins (host-local, portmap), then kxdp-cni next to
    /// `kxdp`.
    pub fn cni_path(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(pods::SYSTEM_CNI_DIR), self.bin_dir.clone()]
    }

    /// The agent's log: its stderr file, or with `--runtime containerd` the CRI log of its
    /// container's current attempt.
    pub fn agent_log(&self, node: NodePlan) -> PathBuf {
        match self.runtime {
            Runtime::Containerd => containerd::agents::log_path(self, node)
                .unwrap_or_else(|| self.node_dir(node).join("agent.log")),
            Runtime::Namespaces => self.node_dir(node).join("agent.log"),
        }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    pub fn procs_dir(&self) -> PathBuf {
        self.dir.join("procs")
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    fn read_record(&self) -> Option<LabRecord> {
        serde_json::from_slice(&fs::read(self.record_path()).ok()?).ok()
    }

    /// `kxdp`, which runs the agents.
    pub fn kxdp_binary(&self) -> Result<PathBuf, LabError> {
        self.binary(KXDP_BINARY, "control")
    }

    /// `kxdp-cni`, which makes the pods.
    pub fn cni_binary(&self) -> Result<PathBuf, LabError> {
        self.binary(pods::CNI_BINARY, "cni")
    }

    /// `kxdp-lab`, which runs the probes and the API-server double.
    pub fn tools_binary(&self) -> Result<PathBuf, LabError> {
        self.binary(TOOLS_BINARY, "lab")
    }

    fn binary(&self, name: &str, package: &str) -> Result<PathBuf, LabError> {
        let p = self.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(LabError::Setup(format!(
                "{} not found: build it beside {} (cargo build -p {package} --bin {name})",
                p.display(),
                TOOLS_BINARY
            )))
        }
    }
}

/// Logging of the tools (`kxdp-lab`, `kxdp-bench`): to stderr, filtered by `RUST_LOG`
/// (default: warnings), colour only for a terminal, so stdout carries only what a command
/// prints on purpose.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Entry point of `kxdp-lab up|check|down|run`.
pub fn main(action: LabAction, args: &LabOptions) -> ExitCode {
    let prefer_record = matches!(action, LabAction::Check | LabAction::Down);
    let lab = match Lab::new(
        &args.dir,
        &args.prefix,
        args.workers,
        args.source,
        args.runtime,
        args.image.as_deref(),
        prefer_record,
    ) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let ok = match action {
        LabAction::Up => up(&lab).map_err(|e| {
            eprintln!("kxdp-lab: error: {e}");
            eprintln!(
                "kxdp-lab: left as it is for a look; `kxdp-lab down --dir {}` removes it",
                lab.dir.display()
            );
        }),
        LabAction::Check => match check(&lab) {
            Ok(true) => Ok(()),
            Ok(false) => Err(()),
            Err(e) => {
                eprintln!("kxdp-lab: error: {e}");
                Err(())
            }
        },
        LabAction::Down => down(&lab).map_err(|e| eprintln!("kxdp-lab: error: {e}")),
        LabAction::Run => run(&lab),
    };
    if ok.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(e: &LabError) -> ExitCode {
    eprintln!("kxdp-lab: error: {e}");
    ExitCode::FAILURE
}

fn progress(msg: &str) {
    eprintln!("kxdp-lab: {msg}");
}

fn require_root() -> Result<(), LabError> {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::Setup(
            "the lab creates namespaces and attaches XDP programs: run it as root".into(),
        ));
    }
    Ok(())
}

/// Builds the lab; see the module docs.
pub fn up(lab: &Lab) -> Result<(), LabError> {
    let started = Instant::now();
    require_root()?;
    lab.cni_binary()?;
    if let Some(rec) = lab.read_record() {
        progress(&format!(
            "removing the previous lab (prefix {}) first",
            rec.prefix
        ));
        let old = Lab {
            prefix: rec.prefix,
            workers: rec.workers,
            source: rec.source,
            runtime: rec.runtime,
            image: rec.image,
            ..lab.clone()
        };
        down(&old)?;
    }
    down(lab)?;
    fs::create_dir_all(&lab.dir).map_err(|e| LabError::io(&lab.dir, e))?;
    let rec = LabRecord {
        prefix: lab.prefix.clone(),
        workers: lab.workers,
        source: lab.source,
        runtime: lab.runtime,
        image: lab.image.clone(),
    };
    let text = serde_json::to_vec_pretty(&rec).map_err(|e| LabError::Setup(e.to_string()))?;
    fs::write(lab.record_path(), text).map_err(|e| LabError::io(lab.record_path(), e))?;

    progress(&format!("state directory {}", lab.state_dir().display()));
    manifests::write_base(&lab.state_dir())?;
    progress(&format!(
        "namespaces {}-*: fabric bridge, node1, node2, client, vtep (kernel vxlan as node3)",
        lab.prefix
    ));
    let names = lab.names();
    topology::create(&names, lab.workers)?;
    topology::create_vtep(&names)?;
    topology::route_load_balancer_ip(&names)?;
    if lab.source == StateSource::Api {
        topology::add_api_address(&names)?;
        let rec = apiserver::start(lab)?;
        progress(&format!(
            "API server double (a test double, not an API server) at https://{} in {} \
             (TLS front to http://{}, token required), serving {} (pid {}); agents get \
             --in-cluster --api-server {} and the service account {}",
            apiserver::address(),
            names.fabric(),
            apiserver::plain_address(),
            lab.state_dir().display(),
            rec.pid,
            apiserver::address(),
            apiserver::service_account_dir(lab).display()
        ));
    }
    let kxdp_image = match lab.runtime {
        Runtime::Namespaces => None,
        Runtime::Containerd => {
            progress("starting containerd on node1 and node2, importing the images");
            Some(containerd::up(lab)?)
        }
    };
    for node in AGENT_NODES {
        pods::seed_leftover_configs(lab, node)?;
        progress(&format!(
            "starting kxdp agent on {} ({} worker(s){})",
            node.name(),
            lab.workers,
            kxdp_image
                .as_deref()
                .map_or(String::new(), |i| format!("; the DaemonSet's pod from {i}"))
        ));
        match &kxdp_image {
            None => drop(agents::start(lab, node)?),
            Some(image) => drop(containerd::agents::start(lab, node, image)?),
        }
    }
    let mut placed = Vec::new();
    for pod in PODS {
        let ip = match lab.runtime {
            Runtime::Namespaces => pods::add(lab, &pod)?,
            Runtime::Containerd => {
                let (rec, _) = containerd::pods::add(lab, &pod)?;
                rec.ip
                    .ok_or_else(|| LabError::Setup(format!("pod {}: no address", pod.name)))?
            }
        };
        let how = match lab.runtime {
            Runtime::Namespaces => "kxdp-cni ADD",
            Runtime::Containerd => "CRI RunPodSandbox, probe container started",
        };
        progress(&format!(
            "pod {}/{} on {}: {ip} ({how})",
            layout::NAMESPACE,
            pod.name,
            pod.node.name()
        ));
        placed.push(PlacedPod { plan: pod, ip });
    }
    manifests::write_workloads(&lab.state_dir(), &placed)?;
    for p in &placed {
        topology::add_vtep_peer(&names, p.ip, p.plan.node)?;
    }
    if lab.runtime == Runtime::Namespaces {
        for pod in PODS {
            servers::start_in_pod(lab, &pod)?;
        }
    }
    servers::start_on_vtep(lab)?;
    agents::wait_for_pods(lab, &AGENT_NODES, &placed, PODS_KNOWN_TIMEOUT)?;
    progress(&format!(
        "up in {:.1} s: agents know every pod",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Runs the checks and prints the table (and, if any failed, the agents' state).
/// Ok(true) when every check passed.
pub fn check(lab: &Lab) -> Result<bool, LabError> {
    progress("checking with real traffic");
    let results = checks::run(lab)?;
    print!("{}", report::render(&results));
    let ok = results.iter().all(|r| r.passed);
    if !ok {
        eprintln!("{}", checks::diagnostics(lab));
    }
    Ok(ok)
}

/// Removes the lab: CNI DEL for every pod, probe servers and agents stopped (by recorded
/// PID), namespaces deleted, DIR's lab files removed. Does every step even when one fails;
/// returns the first error.
pub fn down(lab: &Lab) -> Result<(), LabError> {
    let mut teardown = Teardown::default();
    if containerd::present(lab) {
        containerd::down(lab, &mut teardown);
    }
    for rec in pods::records(lab) {
        teardown.note(pods::del(lab, &rec));
    }
    let recs = procs::records(&lab.procs_dir());
    // Servers before agents, agents before the API server double feeding them, all of
    // them before their namespaces.
    let is_probe = |r: &&procs::ProcRecord| r.label.starts_with("probe-");
    let is_double = |r: &&procs::ProcRecord| r.label == apiserver::LABEL;
    for rec in recs.iter().filter(is_probe) {
        teardown.note(procs::stop(&lab.procs_dir(), rec, servers::STOP_GRACE));
    }
    for rec in recs.iter().filter(|r| !is_probe(r) && !is_double(r)) {
        teardown.note(procs::stop(&lab.procs_dir(), rec, agents::STOP_GRACE));
    }
    for rec in recs.iter().filter(is_double) {
        teardown.note(procs::stop(&lab.procs_dir(), rec, apiserver::STOP_GRACE));
    }
    teardown.note(topology::destroy(&lab.names()));
    teardown.note(remove_lab_files(lab));
    teardown.finish()
}

/// Removes what the lab writes under DIR, by name, and DIR itself when that leaves it
/// empty: never anything else a user might keep there.
fn remove_lab_files(lab: &Lab) -> Result<(), LabError> {
    if !lab.dir.exists() {
        return Ok(());
    }
    let mut dirs = vec![
        lab.state_dir(),
        lab.pods_dir(),
        lab.procs_dir(),
        lab.dir.join("probes"),
        lab.dir.join("images"),
        apiserver::dir(lab),
    ];
    dirs.extend(AGENT_NODES.iter().map(|&n| lab.node_dir(n)));
    for d in dirs {
        match fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(LabError::io(d, e)),
            _ => {}
        }
    }
    let record = lab.record_path();
    match fs::remove_file(&record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(LabError::io(record, e)),
        _ => {}
    }
    if fs::read_dir(&lab.dir).is_ok_and(|mut d| d.next().is_none()) {
        fs::remove_dir(&lab.dir).map_err(|e| LabError::io(&lab.dir, e))?;
    }
    Ok(())
}

/// up, check, down. Err(()) when anything failed (already reported).
fn run(lab: &Lab) -> Result<(), ()> {
    let mut ok = true;
    match up(lab) {
        Ok(()) => match check(lab) {
            Ok(passed) => ok &= passed,
            Err(e) => {
                eprintln!("kxdp-lab: error: {e}");
                ok = false;
            }
        },
        Err(e) => {
            eprintln!("kxdp-lab: up failed: {e}");
            eprintln!("{}", checks::diagnostics(lab));
            ok = false;
        }
    }
    progress("removing the lab");
    if let Err(e) = down(lab) {
        eprintln!("kxdp-lab: down failed: {e}");
        ok = false;
    }
    if ok { Ok(()) } else { Err(()) }
}
