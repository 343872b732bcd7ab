//! What `run` sets up before the event loop: the state source and its wake-ups, the
//! node's first tables, the worker count, the CNI configuration and the pods recorded
//! before this start, the signal thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use datapath::tables::Tables;
use model::state::watch::DirWatch;
use model::translate::UPLINK_PORT;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::datapath_ports::{DatapathPorts, PortError, PortProgram};
use super::source::{self, Source};
use super::{
    AgentError, AgentOptions, Event, KubeAccess, STATE_POLL, adopt, health, netdev,
    node_annotations, service_routes,
};

/// How long to wait for the API's first complete state before saying what is missing.
const SYNC_REPORT_EVERY: Duration = Duration::from_secs(5);

/// `--cni-conf-dir`: the list naming this agent's socket and record directory.
pub(super) fn install_cni_config(opts: &AgentOptions) -> Result<(), AgentError> {
    let Some(dir) = &opts.cni_conf_dir else {
        return Ok(());
    };
    let versions = crate::cni_install::chain_versions(&opts.cni_path)?;
    let list = cni_conflist(opts, &versions);
    let report = crate::cni_install::install_conflist(dir, &list)?;
    tracing::info!(
        dir = %dir.display(),
        written = report.written,
        removed = ?report.removed,
        versions = ?versions,
        "CNI configuration {}",
        agent_api::conflist::CONFLIST_NAME
    );
    if !report.foreign.is_empty() {
        tracing::warn!(
            "other CNI configurations in {}: {} ({} sorts first, so runtimes that take the \
             first file use kxdp; remove them once nothing needs them)",
            dir.display(),
            report.foreign.join(", "),
            agent_api::conflist::CONFLIST_NAME
        );
    }
    Ok(())
}

/// The CNI configuration list this agent installs, declaring `versions`: kxdp-cni pointed
/// at `--api-socket` and `--cni-state-dir`, host-local's leases in `--cni-ipam-data-dir`.
pub fn cni_conflist(opts: &AgentOptions, versions: &[&str]) -> serde_json::Value {
    // kxdp-cni runs on the host, from the runtime's working directory: only absolute
    // paths mean the same thing there.
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    agent_api::conflist::conflist(agent_api::conflist::ConflistParams {
        agent_socket: &absolute(&opts.api_socket),
        state_dir: &absolute(&opts.cni_state_dir),
        ipam_data_dir: &absolute(&opts.cni_ipam_data_dir),
        versions,
    })
}

/// Re-opens the ports of pods attached before this agent started (see `adopt`). A pod
/// whose veth is gone (deleted while no agent ran) is skipped; one that cannot be opened is
/// logged and left to the next CNI ADD or CHECK.
pub(super) fn adopt_recorded_pods(ports: &mut DatapathPorts, cni_state_dir: &std::path::Path) {
    for pod in adopt::recorded(cni_state_dir) {
        if !netdev::exists(&pod.host_veth) {
            continue;
        }
        match ports.open(
            &pod.port,
            &pod.host_veth,
            PortProgram::Pod,
            Some(pod.container_id),
        ) {
            Ok(()) => tracing::info!(
                port = pod.port,
                "re-opened a pod attached before this start"
            ),
            Err(e) => tracing::warn!("re-opening {}: {e}", pod.port),
        }
    }
}

/// With the Kubernetes source, every change the watchers apply queues one
/// [`Event::SourceChanged`] (at most one at a time: a burst of changes is built once), so a
/// change is published as soon as it is seen, not at the next `STATE_POLL` tick (which
/// capped the agent at 5 generations a second). A directory is polled as before.
pub(super) fn wake_on_source_changes(
    source: &Source,
    events: &Sender<Event>,
    health: &Arc<health::ProxyHealth>,
) -> Arc<AtomicBool> {
    let pending = Arc::new(AtomicBool::new(false));
    if let Source::Kube { kube, .. } = source {
        let events = events.clone();
        let queued = pending.clone();
        let health = health.clone();
        kube.on_change(move || {
            // kube-proxy's QueuedUpdate: from now the change must be programmed in time.
            health.queued();
            if !queued.swap(true, Ordering::AcqRel) {
                let _ = events.send(Event::SourceChanged);
            }
        });
    }
    pending
}

/// The uplink's MTU, which becomes the underlay MTU unless kxdp.yaml sets one; None (with
/// a warning) when it cannot be read, and kxdp.yaml's value or default stands.
pub(super) fn read_uplink_mtu(uplink: &str) -> Option<u32> {
    netdev::mtu_of(uplink)
        .map_err(|e| tracing::warn!("uplink {uplink}: {e}; the underlay MTU is kxdp.yaml's"))
        .ok()
}

/// The source of the cluster state, and where it comes from in words (for the status).
pub(super) fn open_source(opts: &AgentOptions) -> Result<(Source, String), AgentError> {
    match (&opts.kube, &opts.state) {
        (None, Some(dir)) => Ok((
            Source::Dir {
                watch: DirWatch::new(dir.clone()),
                uplink_mtu: None,
            },
            format!("state directory {}", dir.display()),
        )),
        (None, None) => Err(AgentError::NoSource),
        (Some(access), dir) => {
            let config = source::config_only(dir.as_deref())?;
            let endpoint = opts.api_server.as_ref().or(config.api_server.as_ref());
            let (kube, described) = match (access, endpoint) {
                (KubeAccess::Kubeconfig(path), _) => (
                    crate::source::KubeSource::from_kubeconfig(Some(path)),
                    format!("the Kubernetes API, kubeconfig {}", path.display()),
                ),
                (KubeAccess::Infer, Some(endpoint)) => {
                    tracing::info!(
                        url = %endpoint.url(),
                        service_account = %opts.service_account.display(),
                        "reaching the API server directly, not through KUBERNETES_SERVICE_HOST"
                    );
                    (
                        crate::source::KubeSource::in_cluster_at(endpoint, &opts.service_account),
                        format!(
                            "the Kubernetes API at {}, service account {}",
                            endpoint.url(),
                            opts.service_account.display()
                        ),
                    )
                }
                (KubeAccess::Infer, None) => (
                    crate::source::KubeSource::from_kubeconfig(None),
                    "the Kubernetes API, $KUBECONFIG / ~/.kube/config or in-cluster".to_string(),
                ),
            };
            let kube = kube.map_err(AgentError::Kube)?;
            Ok((
                Source::Kube {
                    kube: Box::new(kube),
                    config,
                    translator: None,
                },
                described,
            ))
        }
    }
}

/// Generation 1: at once from a directory; from the API once every kind has synced (saying
/// every few seconds which kinds it still waits for) and the own Node's annotations were
/// written when they needed it. A state from the API this node cannot run on (its Node not
/// registered yet, or never annotated and the patch refused) is waited out rather than
/// fatal: the patch is retried with backoff and the next change is built. `None` when a
/// signal came first; else the state and when it was taken.
pub(super) fn first_state(
    source: &mut Source,
    opts: &AgentOptions,
    events: &Receiver<Event>,
    mut annotations: Option<&mut node_annotations::NodeAnnotations>,
) -> Result<Option<(source::Built, Instant)>, AgentError> {
    let started = std::time::Instant::now();
    let mut reported = started;
    let mut annotated = false;
    // As said in the log: two errors that read the same are the same news.
    let mut last_error: Option<String> = None;
    loop {
        if let (Some(kube), Some(annotations)) = (
            source.kube().filter(|k| k.synced()),
            annotations.as_deref_mut(),
        ) {
            if annotated {
                annotations.tick(kube);
            } else {
                // Before the first build, so the first tables carry what was written.
                annotations.at_start(kube);
                annotated = true;
            }
        }
        let snapshot = Instant::now();
        match source.next(&opts.node, 1) {
            Some(Ok(built)) => return Ok(Some((built, snapshot))),
            Some(Err(e)) if source.kube().is_none() => return Err(e.into()),
            // Said once per distinct error, not on every change.
            Some(Err(e)) => {
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::error!("the Kubernetes API's state: {text}; waiting for it to change");
                    last_error = Some(text);
                }
            }
            None => {}
        }
        if let Ok(Event::Signal(signal)) = events.try_recv() {
            tracing::info!(signal, "stopping before the first state arrived");
            return Ok(None);
        }
        if reported.elapsed() >= SYNC_REPORT_EVERY {
            reported = std::time::Instant::now();
            tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                unsynced = source.unsynced().join(","),
                last_error = last_error.as_deref().unwrap_or(""),
                "waiting for the Kubernetes API's first complete state this node can run on"
            );
        }
        source.wait(STATE_POLL);
    }
}

pub(super) fn masquerade_cidrs(config: &model::config::AgentConfig) -> Vec<(bool, String)> {
    config
        .cluster_cidrs
        .iter()
        .map(|c| (c.addr.is_v4(), c.to_string()))
        .collect()
}

pub(super) fn host_plan(
    tables: &Tables,
    config: &model::config::AgentConfig,
    queues: u32,
) -> netdev::HostPortPlan {
    // The Service CIDRs follow the tables (service_routes).
    let routed = service_routes::ipv4_nets(&config.cluster_cidrs)
        .into_iter()
        .collect();
    netdev::HostPortPlan {
        gateway: std::net::Ipv4Addr::from(tables.node.gateway_ip),
        routed,
        mtu: u32::from(
            config
                .underlay_mtu
                .saturating_sub(model::config::VXLAN_OVERHEAD),
        ),
        queues,
    }
}

/// Most workers: each is a pinned thread with its own UMEM.
const MAX_WORKERS: usize = 64;

/// `--workers`, or by default one per rx queue of the uplink, at most one per CPU the agent
/// may use (its affinity mask and cgroup quota, or the `--cpus` list): more workers than
/// queues would have no queue to transmit on, more than CPUs would share them.
pub(super) fn worker_count(
    opts: &AgentOptions,
    uplink: &str,
    uplink_queues: u32,
) -> Result<usize, AgentError> {
    let workers = match opts.workers {
        Some(n) => n,
        None => {
            let cpus = if opts.cpus.is_empty() {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                opts.cpus.len()
            };
            (uplink_queues as usize).min(cpus).clamp(1, MAX_WORKERS)
        }
    };
    if workers == 0 || workers > MAX_WORKERS {
        return Err(AgentError::Workers(workers));
    }
    if !opts.cpus.is_empty() && opts.cpus.len() < workers {
        return Err(AgentError::Cpus {
            cpus: opts.cpus.len(),
            workers,
        });
    }
    if workers > uplink_queues as usize {
        return Err(AgentError::Ports(PortError::TooFewQueues {
            port: UPLINK_PORT.to_string(),
            ifname: uplink.to_string(),
            queues: uplink_queues,
            workers,
        }));
    }
    Ok(workers)
}

/// Pods get the underlay MTU (kxdp.yaml's, else the uplink's own) minus the VXLAN overhead:
/// an uplink that cannot carry kxdp.yaml's would silently drop full-size pod packets once
/// encapsulated.
pub(super) fn check_uplink_mtu(uplink: &str, configured: u16) {
    match netdev::mtu_of(uplink) {
        Ok(mtu) if mtu < u32::from(configured) => tracing::warn!(
            "uplink {uplink} has MTU {mtu}, below kxdp.yaml underlayMTU {configured}: \
             full-size pod packets will not fit once encapsulated"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("uplink {uplink}: {e}"),
    }
}

pub(super) fn spawn_signal_thread(events: Sender<Event>) -> Result<(), AgentError> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(AgentError::Signals)?;
    std::thread::Builder::new()
        .name("kxdp-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = events.send(Event::Signal(signal));
            }
        })
        .map_err(|source| AgentError::Thread {
            thread: "signal",
            source,
        })?;
    Ok(())
}
