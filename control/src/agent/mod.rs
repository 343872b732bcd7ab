//! `kxdp agent`: runs the live datapath on one node (ARCHITECTURE.md §1, §2).
//!
//! One control thread owns everything that changes: the loaded XDP programs and their
//! maps, the ports and their AF_XDP sockets, and the published table generation. It reacts
//! to four kinds of event: a request on the local API socket (the CNI plugin adding or
//! removing a pod port), a change of the state (a new generation), a kernel notification
//! about the underlay (a next hop's MAC changed: a new generation), and SIGTERM/SIGINT
//! (detach and remove everything, then exit). The workers (by default one per uplink rx
//! queue, at most one per CPU the agent may use; each serves a share of every port's
//! queues) only ever read the published tables and their own sockets.

mod adopt;
mod api_server;
mod datapath_ports;
mod error;
mod health;
mod host_frontends;
mod http;
mod kernel_maps;
pub mod metrics;
pub mod netdev;
mod node_annotations;
mod node_settings;
mod retire;
mod service_routes;
mod slot_ranges;
pub(crate) mod source;
mod start;
mod underlay;
mod uplink;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender, unbounded};
use datapath::conntrack::Flows;
use datapath::tables::Tables;
use xdp_redirect::worker::{SharedFlows, SharedState};

use agent_api::{AgentStatus, Request, Response};
use datapath_ports::{DatapathPorts, PortProgram};
use model::translate::{HOST_PORT, UPLINK_PORT};
use source::Source;

pub use datapath_ports::{CloseStep, OpenStep, PortError};
pub use error::AgentError;
pub use node_annotations::UplinkError;
pub use source::BuildError;
pub use start::cni_conflist;
use start::{
    adopt_recorded_pods, check_uplink_mtu, first_state, host_plan, install_cni_config,
    masquerade_cidrs, open_source, read_uplink_mtu, spawn_signal_thread, wake_on_source_changes,
    worker_count,
};

/// How often the state directory is looked at.
const STATE_POLL: Duration = Duration::from_millis(200);
/// How often the own Node's annotations are checked and pod ports whose interface
/// vanished are closed. (The underlay is not polled: the kernel notifies its changes.)
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// `kxdp agent` options (see `cli::AgentArgs`).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node: String,
    /// `--uplink`; None: kxdp.yaml's, else the interface holding the Node's InternalIP, else
    /// the default route's (`uplink.rs`).
    pub uplink: Option<String>,
    /// Manifest directory (the whole cluster state), or with `kube` only its `kxdp.yaml`.
    pub state: Option<PathBuf>,
    /// Take the cluster state from the Kubernetes API instead of `state`.
    pub kube: Option<KubeAccess>,
    /// With `KubeAccess::Infer`: the API server to reach with the service account, over
    /// `kxdp.yaml`'s `apiServer` (None: that, or else the in-cluster default).
    pub api_server: Option<model::config::ApiServerEndpoint>,
    /// The pod's service account (token, ca.crt, namespace) for an explicit API server.
    pub service_account: PathBuf,
    /// None: one per rx queue of the uplink, at most one per CPU the agent may use (or per
    /// CPU in `cpus`).
    pub workers: Option<usize>,
    /// Worker i is pinned to `cpus[i]` when given.
    pub cpus: Vec<usize>,
    pub api_socket: PathBuf,
    /// Where kxdp-cni records its attachments: pods attached before this agent started are
    /// re-opened from there.
    pub cni_state_dir: PathBuf,
    /// Where to install the CNI configuration list once ready (`--cni-conf-dir`).
    pub cni_conf_dir: Option<PathBuf>,
    /// host-local's lease directory, as that list names it.
    pub cni_ipam_data_dir: PathBuf,
    /// Where the runtime finds CNI plugins (its CNI_PATH): the chain's versions are asked of
    /// the binaries there.
    pub cni_path: Vec<PathBuf>,
    /// Where `/metrics` (and `/healthz`, `/readyz`) are served.
    pub metrics_bind_address: SocketAddr,
    /// Where `/healthz`, `/livez` and `/readyz` are served.
    pub healthz_bind_address: SocketAddr,
    /// How long a noticed change may stay unprogrammed before `/healthz` and `/livez` fail.
    pub health_timeout: Duration,
}

/// How to reach the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeAccess {
    Kubeconfig(PathBuf),
    /// `kube::Config::infer`: $KUBECONFIG / ~/.kube/config, else the in-cluster service account.
    Infer,
}

/// What the control thread reacts to.
#[derive(Debug)]
pub enum Event {
    Api(Request, Sender<Response>),
    Signal(i32),
    /// `/metrics`: a snapshot of the counters.
    Metrics(Sender<metrics::Snapshot>),
    /// The Kubernetes source applied a change: build and publish now, not at the next tick.
    SourceChanged,
    /// The kernel notified route, neighbour or uplink changes (`underlay::Feed` has them).
    Underlay,
}

/// A worker whose published stats have not moved for this long is taken as dead (they
/// publish every ~100 ms, also when idle).
const WORKER_STALE: Duration = Duration::from_secs(3);

/// Runs the agent until SIGTERM/SIGINT. Everything it attached or created is removed
/// before it returns, also when starting fails halfway.
pub fn run(opts: &AgentOptions) -> Result<(), AgentError> {
    http::mark_start();
    let (events_tx, events) = unbounded();
    spawn_signal_thread(events_tx.clone())?;
    // Bound before anything is attached, so a taken port fails the start cleanly (and
    // /healthz answers while the API's first state is awaited, healthy as kube-proxy is
    // while it starts; /readyz stays 503, saying what the agent waits for).
    let readiness = Arc::new(http::Readiness::default());
    let health = Arc::new(health::ProxyHealth::new(opts.health_timeout));
    let probe_counts = Arc::new(http::ProbeCounts::default());
    let http_server = http::HttpServer::start()?;
    let routes = |metrics| http::Routes {
        metrics,
        events: events_tx.clone(),
        ready: readiness.clone(),
        health: health.clone(),
        counts: probe_counts.clone(),
    };
    let listeners = [
        http_server.serve(opts.metrics_bind_address, "metrics", Arc::new(routes(true)))?,
        http_server.serve(
            opts.healthz_bind_address,
            "healthz",
            Arc::new(routes(false)),
        )?,
    ];
    tracing::info!(
        metrics = %listeners[0].addr,
        healthz = %listeners[1].addr,
        "serving /metrics, /healthz, /livez and /readyz"
    );
    let (mut source, state_source) = open_source(opts)?;
    let source_wake = wake_on_source_changes(&source, &events_tx, &health);
    let Some(settings) = node_settings::wait_for(&mut source, opts, &events, &readiness)? else {
        return Ok(()); // stopped by a signal while looking for the node's settings
    };
    let uplink = settings.uplink.name.clone();
    tracing::info!(uplink, found_by = %settings.uplink.found_by, "uplink");
    let uplink_queues = netdev::rx_queues(&uplink).map_err(|source| AgentError::Uplink {
        uplink: uplink.clone(),
        source,
    })?;
    let workers = worker_count(opts, &uplink, uplink_queues)?;
    source.use_node_config(settings.config, read_uplink_mtu(&uplink))?;
    // Only the Kubernetes source writes the Node's annotations: a state directory is
    // somebody else's to edit.
    let mut annotations = opts
        .kube
        .is_some()
        .then(|| node_annotations::NodeAnnotations::new(&opts.node, &uplink));
    readiness.waiting_for("the first tables for this node (the cluster state, translated)");
    let Some((first, first_snapshot)) =
        first_state(&mut source, opts, &events, annotations.as_mut())?
    else {
        return Ok(()); // stopped by a signal while waiting for the first state
    };
    let mut warnings = WarningLog::default();
    warnings.log_new(first.warnings.clone());
    log_published(1, first.cause, first_snapshot, &first.tables);
    let first_health_checks = first.health_checks.clone();
    health.set_node_eligible(first.node_eligible);
    check_uplink_mtu(&uplink, first.config.underlay_mtu);

    // Subscribed before the first look-up, so no change falls between the two.
    let underlay_feed = underlay::watch(underlay::subscribe()?, &uplink, events_tx.clone())?;
    let mut underlay = underlay::Underlay::new(&uplink);
    let kernel_macs = underlay.resolve(&first.tables);
    let first_tables = match underlay::with_kernel_macs(&first.tables, &kernel_macs) {
        Some(patched) => patched,
        None => first.tables,
    };
    let tables = Arc::new(ArcSwap::from_pointee(first_tables));
    // Generation 1's build, as kube-proxy's first (full) sync.
    let mut sync = metrics::SyncMetrics::new(&tables.load());
    sync.built(
        first.started,
        true,
        &first.trigger_times,
        Some(&tables.load()),
    );
    let mut flows = Flows::new(first.config.conntrack);
    flows.preallocate();
    let shared_flows = Arc::new(Mutex::new(SharedFlows {
        flows,
        generation_seen: 0,
    }));
    let shared = SharedState {
        tables: tables.clone(),
        flows: shared_flows.clone(),
    };
    let host_plan = host_plan(&tables.load(), &first.config, workers as u32);
    let host_frontends = host_frontends::host_frontends(&tables.load());
    let mut service_routes = service_routes::ServiceRoutes::new(
        host_plan.gateway,
        host_plan.routed.iter().copied().collect(),
    );

    let mut ports = DatapathPorts::start(opts, workers, shared)?;
    let started = (|| -> Result<api_server::ApiSocket, AgentError> {
        ports.sync_maps(&tables.load())?;
        netdev::create_host_port(&host_plan)?;
        service_routes.sync(&tables.load())?;
        netdev::install_nat(&masquerade_cidrs(&first.config), &host_frontends)?;
        ports.open(UPLINK_PORT, &uplink, PortProgram::Uplink, None)?;
        ports.open(HOST_PORT, netdev::DATAPATH_VETH, PortProgram::Host, None)?;
        adopt_recorded_pods(&mut ports, &opts.cni_state_dir);
        let socket = api_server::start(&opts.api_socket, events_tx.clone())?;
        // Only now can kxdp-cni be answered: a runtime may use the list the moment it appears.
        install_cni_config(opts)?;
        Ok(socket)
    })();
    let api_socket = match started {
        Ok(socket) => socket,
        Err(e) => {
            ports.shutdown();
            underlay.cleanup();
            let _ = netdev::remove_masquerade();
            let _ = netdev::remove_host_port();
            return Err(e);
        }
    };

    let mut control = Control {
        opts,
        state_source,
        uplink: settings.uplink,
        workers,
        uplink_queues_seen: uplink_queues,
        tables,
        ports,
        source,
        annotations,
        generation: 1,
        pod_mtu: host_plan.mtu,
        underlay,
        kernel_macs,
        underlay_feed,
        housekept: Instant::now(),
        flows: shared_flows,
        tables_published_at: SystemTime::now(),
        state_load_errors: 0,
        sync,
        worker_progress: Vec::new(),
        source_wake,
        retired: retire::Retired::default(),
        warnings,
        masquerade: masquerade_cidrs(&first.config),
        host_frontends,
        health: health.clone(),
        http_server: &http_server,
        health_checks: http::ServiceHealthChecks::new(health.clone()),
        service_routes,
    };
    health.updated(first_snapshot);
    control.sync_health_checks(&first_health_checks);
    let uplink_queues = control.ports.queues(UPLINK_PORT).unwrap_or(0);
    tracing::info!(
        node = opts.node,
        generation = control.generation,
        workers,
        uplink_queues,
        "ready"
    );
    // The one line on stdout, on purpose: what a supervisor (or a test) waits for.
    println!(
        "kxdp agent ready node={} generation={} workers={workers} uplink_queues={uplink_queues}",
        opts.node, control.generation,
    );
    let _ = std::io::stdout().flush();
    readiness.set_ready(true);

    control.serve(&events);
    readiness.waiting_for("stopping");
    readiness.set_ready(false);

    drop(api_socket);
    control.ports.shutdown();
    control.underlay.cleanup();
    let masquerade = netdev::remove_masquerade();
    netdev::remove_host_port()?;
    masquerade?;
    tracing::info!("agent stopped; everything it attached is detached");
    Ok(())
}

struct Control<'a> {
    opts: &'a AgentOptions,
    /// Where the cluster state comes from, in words (the status says it).
    state_source: String,
    uplink: uplink::Uplink,
    workers: usize,
    /// The uplink's rx queue count when last read (a change is acted on once).
    uplink_queues_seen: u32,
    tables: Arc<ArcSwap<Tables>>,
    ports: DatapathPorts,
    source: Source,
    /// Keeps the own Node's kxdp.io annotations right (Kubernetes source only).
    annotations: Option<node_annotations::NodeAnnotations>,
    generation: u64,
    pod_mtu: u32,
    underlay: underlay::Underlay,
    /// The kernel's next-hop MACs towards other nodes, as last known.
    kernel_macs: underlay::KernelView,
    /// The kernel's notifications about the underlay, collected by the watch thread.
    underlay_feed: underlay::Feed,
    housekept: Instant,
    flows: Arc<Mutex<SharedFlows>>,
    tables_published_at: SystemTime,
    state_load_errors: u64,
    /// Table builds, for `/metrics` (kube-proxy's sync metrics among them).
    sync: metrics::SyncMetrics,
    /// Per worker: its last published uptime and when it was seen to change.
    worker_progress: Vec<(u64, Instant)>,
    /// Set while an [`Event::SourceChanged`] is queued (so at most one is).
    source_wake: Arc<AtomicBool>,
    /// Replaced generations waiting for the workers to let go of them.
    retired: retire::Retired,
    warnings: WarningLog,
    /// The cluster CIDRs pods are masqueraded out of (kxdp.yaml, fixed until a restart).
    masquerade: Vec<(bool, String)>,
    /// The node's own frontends as the nftables table rewrites them now.
    host_frontends: Vec<host_frontends::HostFrontend>,
    /// What `/healthz`, `/livez` and the Services' health checks report.
    health: Arc<health::ProxyHealth>,
    http_server: &'a http::HttpServer,
    /// The per-Service health-check servers (`healthCheckNodePort`).
    health_checks: http::ServiceHealthChecks,
    /// The Service CIDRs routed into kxdp-host, following the tables.
    service_routes: service_routes::ServiceRoutes,
}

impl Control<'_> {
    /// The event loop; returns on SIGTERM/SIGINT.
    fn serve(&mut self, events: &Receiver<Event>) {
        loop {
            match events.recv_timeout(STATE_POLL) {
                Ok(Event::Signal(signal)) => {
                    tracing::info!(signal, "stopping");
                    return;
                }
                Ok(Event::Api(req, reply)) => {
                    let _ = reply.send(self.answer(req));
                }
                Ok(Event::Metrics(reply)) => {
                    let _ = reply.send(self.metrics_snapshot());
                }
                Ok(Event::SourceChanged) => {}
                Ok(Event::Underlay) => self.underlay_changed(),
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return,
            }
            // Cleared before the snapshot is taken (every round, so a wake-up consumed
            // elsewhere cannot leave it set): a change landing after this queues a new
            // wake-up, one landing before is in the snapshot.
            self.source_wake.store(false, Ordering::Release);
            self.health.beat();
            let seen = Instant::now();
            if let Some(next) = self.source.next(&self.opts.node, self.generation + 1) {
                self.publish(next, seen);
            }
            self.retired.collect();
            if self.housekept.elapsed() >= HOUSEKEEPING {
                self.check_workers();
                self.housekept = std::time::Instant::now();
                if let (Some(annotations), Some(kube)) =
                    (self.annotations.as_mut(), self.source.kube())
                {
                    annotations.tick(kube);
                }
                for port in self.ports.close_vanished() {
                    tracing::warn!(port, "interface gone without a CNI DEL: port closed");
                }
                self.follow_uplink_channels();
            }
        }
    }

    /// Serves the uplink's rx queues as its channels change: added queues get sockets (so
    /// RSS may spread traffic onto them); a shrink cannot happen while the sockets are bound
    /// (the kernel refuses it), so a lower count is only reported.
    fn follow_uplink_channels(&mut self) {
        let uplink = &self.uplink.name;
        let queues = match netdev::rx_queues(uplink) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!("uplink {uplink}: reading its rx queues: {e}");
                return;
            }
        };
        if queues == self.uplink_queues_seen {
            return;
        }
        self.uplink_queues_seen = queues;
        let serving = self.ports.queues(UPLINK_PORT).unwrap_or(0);
        if queues < serving {
            tracing::warn!(
                "uplink {uplink} reports {queues} rx queues, fewer than the {serving} served; \
                 the sockets on the others stay until the agent restarts"
            );
            return;
        }
        // Retried at the next change of the count; until then the new queues' traffic goes
        // to the kernel (counted no_slot).
        if let Err(e) = self.ports.grow(UPLINK_PORT, queues) {
            tracing::error!("{e}");
        }
    }

    /// Applies the kernel's notifications; a next-hop MAC that changed is published as a
    /// new generation at once.
    fn underlay_changed(&mut self) {
        let changes = self.underlay_feed.take();
        if changes.is_empty() {
            return;
        }
        let current = self.tables.load();
        self.kernel_macs = self.underlay.apply(&changes, &current);
        if let Some(mut next) = underlay::with_kernel_macs(&current, &self.kernel_macs) {
            self.generation += 1;
            next.generation = self.generation;
            self.retired.publish(&self.tables, next);
            self.tables_published_at = SystemTime::now();
            tracing::info!(
                generation = self.generation,
                changes = changes.len(),
                "tables published: a next hop's MAC changed (underlay)"
            );
        }
    }

    /// Publishes the next generation, built from the state as it was at `snapshot` (when
    /// the change was taken up: a failed build's duration runs from there too); on any
    /// error the running one stays (and the change counts as not programmed: `/healthz`
    /// fails once that lasts longer than the health timeout). Returns whether a generation
    /// was published.
    fn publish(
        &mut self,
        built: Result<source::Built, source::BuildError>,
        snapshot: Instant,
    ) -> bool {
        let next = self.generation + 1;
        match built {
            Ok(built) => {
                let (started, full) = (built.started, built.full);
                self.warnings.log_new(built.warnings);
                self.health.set_node_eligible(built.node_eligible);
                // Nodes came or went: their next hops, before the tables that need them.
                if !self.underlay.knows_nodes_of(&built.tables) {
                    self.kernel_macs = self.underlay.resolve(&built.tables);
                }
                let tables = match underlay::with_kernel_macs(&built.tables, &self.kernel_macs) {
                    Some(patched) => patched,
                    None => built.tables,
                };
                if let Err(e) = self.ports.sync_maps(&tables) {
                    tracing::error!("generation {next}: {e}");
                }
                self.sync_host_frontends(&tables, next);
                if let Err(e) = self.service_routes.sync(&tables) {
                    tracing::error!("generation {next}: routing the Service CIDRs: {e}");
                }
                self.retired.publish(&self.tables, tables);
                self.sync.built(
                    started,
                    full,
                    &built.trigger_times,
                    Some(&self.tables.load()),
                );
                self.tables_published_at = SystemTime::now();
                self.generation = next;
                self.health.updated(snapshot);
                self.sync_health_checks(&built.health_checks);
                log_published(next, built.cause, snapshot, &self.tables.load());
                true
            }
            Err(e) => {
                // (From the API the change was queued when it was watched.)
                self.health.queued();
                self.sync.built(snapshot, false, &[], None);
                self.state_load_errors += 1;
                tracing::error!(
                    "{}: {e}; keeping generation {}",
                    self.source.describe(),
                    self.generation
                );
                false
            }
        }
    }

    /// Rewrites the nftables table when the node's own frontends changed (a Service, a
    /// NodePort, an external or LoadBalancer IP came or went).
    fn sync_host_frontends(&mut self, tables: &Tables, generation: u64) {
        let now = host_frontends::host_frontends(tables);
        if now == self.host_frontends {
            return;
        }
        match netdev::install_nat(&self.masquerade, &now) {
            Ok(()) => self.host_frontends = now,
            Err(e) => tracing::error!(
                "generation {generation}: the node's own frontends ({} of them): {e}",
                now.len()
            ),
        }
    }

    /// The counters `/metrics` shows; the flow table is locked only to read three numbers.
    fn metrics_snapshot(&self) -> metrics::Snapshot {
        let tables = self.tables.load();
        let conntrack = match self.flows.lock() {
            Ok(shared) => metrics::ConntrackSnapshot {
                entries: shared.flows.len(),
                capacity: shared.flows.capacity(),
                evictions: shared.flows.evictions(),
                expirations: shared.flows.expirations(),
            },
            // A worker panicked holding the lock; the numbers are still readable.
            Err(poisoned) => {
                let shared = poisoned.into_inner();
                metrics::ConntrackSnapshot {
                    entries: shared.flows.len(),
                    capacity: shared.flows.capacity(),
                    evictions: shared.flows.evictions(),
                    expirations: shared.flows.expirations(),
                }
            }
        };
        metrics::Snapshot {
            workers: self.ports.published_stats(),
            xdp_decisions: self.ports.xdp_decisions(),
            conntrack,
            generation: tables.generation,
            tables_published_at: self.tables_published_at,
            state_load_errors: self.state_load_errors,
            sync: self.sync.clone(),
            changes: self
                .source
                .kube()
                .map(|kube| kube.change_counters())
                .unwrap_or_default(),
            underlay_address: std::net::Ipv4Addr::from(tables.node.underlay_ip).to_string(),
            underlay_mac: tables.node.underlay_mac.to_string(),
            node_annotation_patches: self.annotations.as_ref().map_or(0, |a| a.patched),
            node_annotation_patch_failures: self.annotations.as_ref().map_or(0, |a| a.failed),
            probes: metrics::ProbeTotals::default(),
        }
    }

    /// Every worker must keep publishing stats (they do every ~100 ms, also when idle): one
    /// that stopped makes the agent unhealthy (`/livez` fails, so the kubelet restarts it).
    fn check_workers(&mut self) {
        let now = Instant::now();
        let workers = self.ports.published_stats();
        self.worker_progress.resize(workers.len(), (u64::MAX, now));
        let mut stale = Vec::new();
        for (w, (uptime, changed)) in workers.iter().zip(self.worker_progress.iter_mut()) {
            if w.uptime_ns != *uptime {
                *uptime = w.uptime_ns;
                *changed = now;
            } else if now.duration_since(*changed) > WORKER_STALE {
                stale.push(w.id.to_string());
            }
        }
        let problem = if workers.len() != self.workers {
            Some(format!(
                "{} of {} workers running",
                workers.len(),
                self.workers
            ))
        } else if !stale.is_empty() {
            Some(format!(
                "workers {} published nothing for {} s",
                stale.join(","),
                WORKER_STALE.as_secs()
            ))
        } else {
            None
        };
        if self.health.set_problem(problem.clone()) {
            match problem {
                Some(p) => tracing::error!("unhealthy: {p}"),
                None => tracing::info!("every worker runs again"),
            }
        }
    }

    /// Opens, closes and updates the Services' health-check servers on the node's own
    /// addresses (its Node's addresses; not the pod gateway, which is the pods').
    fn sync_health_checks(&mut self, wanted: &[model::translate::HealthCheckService]) {
        let tables = self.tables.load();
        let gateway = datapath::IpKey::from(std::net::Ipv4Addr::from(tables.node.gateway_ip));
        let addresses: Vec<std::net::IpAddr> = tables
            .node
            .addresses
            .iter()
            .filter(|a| **a != gateway)
            .map(|a| a.to_ip())
            .collect();
        self.health_checks
            .sync(self.http_server, wanted, &addresses);
    }

    fn answer(&mut self, req: Request) -> Response {
        match req {
            Request::AddPort {
                port,
                ifname,
                container_id,
                ..
            } => {
                if !port.starts_with("pod-") {
                    return Response::error(format!(
                        "port {port:?}: pod ports are named pod-<namespace>-<name>"
                    ));
                }
                match self
                    .ports
                    .open(&port, &ifname, PortProgram::Pod, Some(container_id))
                {
                    Ok(()) => Response::ok(),
                    Err(e) => Response::error(e.to_string()),
                }
            }
            Request::DelPort { port, .. } => match self.ports.close(&port) {
                Ok(()) => Response::ok(),
                Err(e) => Response::error(e.to_string()),
            },
            Request::CheckPort { port, .. } => {
                if self.ports.is_open(&port) {
                    Response::ok()
                } else {
                    Response::error(format!("port {port:?} is not open on this agent"))
                }
            }
            Request::Status => Response::status(self.status()),
            Request::Stats => Response::stats(self.ports.stats()),
        }
    }

    fn status(&self) -> AgentStatus {
        let tables = self.tables.load();
        AgentStatus {
            node: self.opts.node.clone(),
            generation: tables.generation,
            workers: self.workers as u32,
            ports: self.ports.names(),
            table_ports: tables.ports.iter().map(|p| p.name.clone()).collect(),
            gateway: std::net::Ipv4Addr::from(tables.node.gateway_ip).to_string(),
            pod_cidrs: tables
                .node
                .pod_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect(),
            pod_mtu: self.pod_mtu,
            uplink: self.uplink.name.clone(),
            uplink_found_by: self.uplink.found_by.to_string(),
            state_source: self.state_source.clone(),
            health_checks: self.health_checks.describe(),
        }
    }
}

/// One log event per table generation: what it was built from, how long from the snapshot
/// to now, and its size.
fn log_published(generation: u64, cause: source::Cause, snapshot: Instant, tables: &Tables) {
    tracing::info!(
        generation,
        from = %cause,
        took_ms = snapshot.elapsed().as_millis() as u64,
        service_ports = tables.service_ports.len(),
        frontends = tables.frontends.len(),
        local_pods = tables.local_pods.len(),
        "tables published"
    );
}

/// Logs each translation warning when it appears (again after it went away and came
/// back), not at every generation: with changes arriving many times a second the same
/// standing warnings would otherwise fill the log.
#[derive(Debug, Default)]
struct WarningLog {
    current: std::collections::HashSet<String>,
}

impl WarningLog {
    fn log_new(&mut self, warnings: Vec<String>) {
        for w in &warnings {
            if !self.current.contains(w) {
                tracing::warn!("{w}");
            }
        }
        self.current = warnings.into_iter().collect();
    }
}
