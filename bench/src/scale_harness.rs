//! What the scale run measures, reusable by tests and by the next translator:
//! - [`ChangePath`]: how a change to the cluster becomes the next [`Tables`]. Today that is a
//!   full [`translate`] ([`FullTranslate`]); an incremental translator implements the same
//!   trait and [`measure_changes`] times both on the same change sequence.
//! - [`mem_status`]: the process's resident memory (VmRSS, VmHWM) from /proc/self/status.
//! - [`tables_size`]: the bytes a [`Tables`] holds, estimated from its contents (Maglev slots
//!   apart; flows are not in the tables).
//! - [`rebuild_maglev`]: the Maglev share of a build, by building every table of a
//!   generation again from its members (same keys, same size, same seed, so the same work
//!   `translate` did; the result is compared slot for slot to prove it).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use datapath::IpKey;
use datapath::lb::maglev::{self, MaglevError, MaglevTable};
use datapath::policy::{DirectionPolicy, PortSet};
use datapath::tables::{Backend, BackendSet, ServiceKey, ServicePort, Tables, proto};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::config::AgentConfig;
use model::state::ClusterState;
use model::state::changes::{Change, Object};
use model::translate::incremental::Translator;
use model::translate::{TranslateError, translate};

use crate::scale_cluster::{
    EndpointChange, ScaleCluster, XorShift, change_slice, namespace_endpoints,
};

/// One EndpointSlice replaced in the cluster: `cluster.endpoint_slices[index]` was `before`
/// and is now `after` (the cluster passed alongside already holds `after`).
#[derive(Debug, Clone, Copy)]
pub struct SliceChange<'a> {
    pub index: usize,
    pub before: &'a EndpointSlice,
    pub after: &'a EndpointSlice,
}

/// What went wrong measuring a [`ChangePath`] or checking what it published.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `path` is the [`ChangePath::name`].
    #[error("{path}: {source}")]
    Path {
        path: String,
        source: TranslateError,
    },
    /// `service` is the slice's `kubernetes.io/service-name` label.
    #[error("slice {index}: its Service {service:?} is missing")]
    MissingService {
        index: usize,
        service: Option<String>,
    },
    #[error("Service {0:?}: no clusterIP")]
    NoClusterIp(Option<String>),
    #[error("generation {generation}: {vip}:80 is not programmed")]
    NotProgrammed { generation: u64, vip: IpKey },
    /// The published tables do not match the slices: the path lost (or never made) the
    /// change. `port` is the Service port's name.
    #[error(
        "generation {generation} (published {published}): {port}: {backends} backends, \
         {ready} ready; the slices say {listed}, {listed_ready}"
    )]
    Stale {
        generation: u64,
        published: u64,
        port: String,
        backends: usize,
        ready: usize,
        listed: usize,
        listed_ready: usize,
    },
    /// `port` is the Service port's name (empty in the timed pass, which does not keep it).
    #[error("{port}: Maglev rebuild: {source}")]
    MaglevBuild { port: String, source: MaglevError },
    #[error("{0}: the rebuilt Maglev table differs from translate's")]
    MaglevDiffers(String),
}

/// A way of turning cluster changes into the next generation of tables.
pub trait ChangePath {
    /// For the report: `full translate`, `incremental`, ...
    fn name(&self) -> &str;
    /// The first generation, from the whole cluster.
    fn reset(&mut self, cluster: &ClusterState, generation: u64) -> Result<Tables, TranslateError>;
    /// The next generation after `change`; `cluster` already holds it.
    fn apply(
        &mut self,
        cluster: &ClusterState,
        change: &SliceChange<'_>,
        generation: u64,
    ) -> Result<Tables, TranslateError>;
}

/// Today's path: every change translates the whole cluster again.
#[derive(Debug, Clone)]
pub struct FullTranslate {
    pub config: AgentConfig,
    pub node: String,
}

impl ChangePath for FullTranslate {
    fn name(&self) -> &str {
        "full translate"
    }

    fn reset(&mut self, cluster: &ClusterState, generation: u64) -> Result<Tables, TranslateError> {
        translate(cluster, &self.config, &self.node, generation).map(|t| t.tables)
    }

    fn apply(
        &mut self,
        cluster: &ClusterState,
        _change: &SliceChange<'_>,
        generation: u64,
    ) -> Result<Tables, TranslateError> {
        self.reset(cluster, generation)
    }
}

/// The agent's path: `model::translate::incremental::Translator`, fed the changed
/// EndpointSlice as the watcher would hand it over (an owned object: the clone is timed).
#[derive(Debug)]
pub struct Incremental(pub Translator);

impl Incremental {
    pub fn new(config: AgentConfig, node: &str) -> Incremental {
        Incremental(Translator::new(config, node))
    }
}

impl ChangePath for Incremental {
    fn name(&self) -> &str {
        "incremental"
    }

    fn reset(&mut self, cluster: &ClusterState, generation: u64) -> Result<Tables, TranslateError> {
        self.0.reset(cluster.clone(), generation).map(|t| t.tables)
    }

    fn apply(
        &mut self,
        _cluster: &ClusterState,
        change: &SliceChange<'_>,
        generation: u64,
    ) -> Result<Tables, TranslateError> {
        let changes = vec![Change::Applied(Object::EndpointSlice(change.after.clone()))];
        self.0.apply(changes, generation).map(|(t, _work)| t.tables)
    }
}

/// One endpoint change, timed from "applied to the input" to "store returned".
#[derive(Debug, Clone, Copy)]
pub struct ChangeSample {
    pub change: EndpointChange,
    /// The path building the next tables.
    pub build: Duration,
    /// `ArcSwap::store`, which also frees the previous generation when nobody else holds it
    /// (as in the agent, whose workers only hold a generation for one batch).
    pub publish: Duration,
    pub total: Duration,
    /// On-CPU time of build + publish (this thread's).
    pub cpu: Option<Duration>,
}

/// Makes `changes` endpoint changes to random Services' first EndpointSlice (remove one,
/// add one, flip ready, in turn) and publishes each through `path` into `published`. The
/// change sequence depends only on `seed`, so two paths given equal clusters see the same
/// changes. Each published generation is checked: the changed Service's port 80 must list
/// the endpoints and ready members its slices now say.
pub fn measure_changes(
    path: &mut dyn ChangePath,
    scale: &mut ScaleCluster,
    published: &ArcSwap<Tables>,
    changes: usize,
    seed: u64,
) -> Result<Vec<ChangeSample>, HarnessError> {
    let name = path.name().to_string();
    let failed = |source| HarnessError::Path {
        path: name.clone(),
        source,
    };
    let mut generation = published.load().generation;
    generation += 1;
    let first = path.reset(&scale.cluster, generation).map_err(failed)?;
    published.store(Arc::new(first));

    let mut rng = XorShift::new(seed);
    let mut pools: HashMap<String, Vec<k8s_openapi::api::discovery::v1::Endpoint>> = HashMap::new();
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let index = rng.below(scale.cluster.endpoint_slices.len());
        let change = EndpointChange::cycle(i);
        let before = scale.cluster.endpoint_slices[index].clone();
        let namespace = before.metadata.namespace.clone().unwrap_or_default();
        let pool = pools
            .entry(namespace.clone())
            .or_insert_with(|| namespace_endpoints(&scale.cluster, &namespace));
        change_slice(&mut scale.cluster.endpoint_slices[index], change, pool);

        generation += 1;
        let cpu_before = thread_cpu_time();
        let start = Instant::now();
        let change_ref = SliceChange {
            index,
            before: &before,
            after: &scale.cluster.endpoint_slices[index],
        };
        let tables = path
            .apply(&scale.cluster, &change_ref, generation)
            .map_err(failed)?;
        let built = Instant::now();
        published.store(Arc::new(tables));
        let done = Instant::now();
        let cpu = match (cpu_before, thread_cpu_time()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        samples.push(ChangeSample {
            change,
            build: built - start,
            publish: done - built,
            total: done - start,
            cpu,
        });
        check_published(&published.load(), scale, index, generation)?;
    }
    Ok(samples)
}

/// The published tables reflect the slice at `index`: its Service's port 80 lists every
/// endpoint of the Service's slices and takes new flows to the ready ones.
fn check_published(
    tables: &Tables,
    scale: &ScaleCluster,
    index: usize,
    generation: u64,
) -> Result<(), HarnessError> {
    let slice = &scale.cluster.endpoint_slices[index];
    let service_label = |s: &EndpointSlice| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
    };
    let service = service_label(slice);
    let namespace = slice.metadata.namespace.clone();
    let (mut listed, mut ready) = (0, 0);
    for s in scale
        .cluster
        .endpoint_slices
        .iter()
        .filter(|s| s.metadata.namespace == namespace && service_label(s) == service)
    {
        listed += s.endpoints.len();
        ready += s
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count();
    }
    let svc = scale
        .cluster
        .services
        .iter()
        .find(|s| s.metadata.namespace == namespace && s.metadata.name == service)
        .ok_or_else(|| HarnessError::MissingService {
            index,
            service: service.clone(),
        })?;
    let vip: IpKey = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(IpKey::from)
        .ok_or_else(|| HarnessError::NoClusterIp(service.clone()))?;
    let key = ServiceKey {
        vip,
        port: 80,
        proto: proto::TCP,
    };
    let (_, port) = tables
        .frontend(&key)
        .ok_or(HarnessError::NotProgrammed { generation, vip })?;
    if tables.generation != generation
        || port.backends.len() != listed
        || port.cluster.members.len() != ready
    {
        return Err(HarnessError::Stale {
            generation,
            published: tables.generation,
            port: port.name.clone(),
            backends: port.backends.len(),
            ready: port.cluster.members.len(),
            listed,
            listed_ready: ready,
        });
    }
    Ok(())
}

/// Nearest-rank percentile of sorted `values`; `None` when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Resident memory of this process, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStatus {
    pub rss_kib: u64,
    /// Peak RSS since start or since [`reset_peak_rss`].
    pub hwm_kib: u64,
}

/// VmRSS and VmHWM from /proc/self/status; `None` where /proc cannot be read.
pub fn mem_status() -> Option<MemStatus> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(MemStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Resets VmHWM to the current RSS (`5` into /proc/self/clear_refs, Linux 4.0+), so the
/// peak that follows is the build's. Returns whether the kernel took it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes held by one generation of tables, by part. Heap contents plus the structs
/// themselves; hash maps count their capacity (one control byte per bucket besides the
/// entry). An estimate: allocator overhead and padding inside allocations are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TablesSize {
    /// Both Maglev tables of every Service port (cluster-wide and node-local).
    pub maglev: usize,
    /// Service ports without their Maglev slots: backends, members, names.
    pub service_ports: usize,
    pub frontends: usize,
    pub policy: usize,
    /// Ports, local pods, remote nodes and routes: small next to the rest.
    pub other: usize,
    pub maglev_tables: usize,
}

impl TablesSize {
    pub fn total(&self) -> usize {
        self.maglev + self.service_ports + self.frontends + self.policy + self.other
    }
}

fn map_bytes<K, V, S: BuildHasher>(m: &std::collections::HashMap<K, V, S>) -> usize {
    m.capacity() * (size_of::<(K, V)>() + 1)
}

fn vec_bytes<T>(v: &[T], capacity: usize) -> usize {
    debug_assert!(capacity >= v.len());
    capacity * size_of::<T>()
}

fn port_set_bytes(p: &PortSet) -> usize {
    vec_bytes(&p.ranges, p.ranges.capacity())
        + vec_bytes(&p.named, p.named.capacity())
        + p.named.iter().map(|(_, n)| n.capacity()).sum::<usize>()
}

fn direction_bytes(d: &DirectionPolicy) -> usize {
    size_of::<DirectionPolicy>()
        + vec_bytes(&d.selected_by, d.selected_by.capacity())
        + port_set_bytes(&d.any_peer)
        + map_bytes(&d.by_identity)
        + d.by_identity.values().map(port_set_bytes).sum::<usize>()
        + vec_bytes(&d.cidrs, d.cidrs.capacity())
        + d.cidrs
            .iter()
            .map(|c| vec_bytes(&c.except, c.except.capacity()) + port_set_bytes(&c.ports))
            .sum::<usize>()
}

fn backend_set_bytes(s: &BackendSet) -> usize {
    vec_bytes(&s.members, s.members.capacity())
}

/// Estimates what `tables` holds (see [`TablesSize`]).
pub fn tables_size(tables: &Tables) -> TablesSize {
    let mut size = TablesSize::default();
    // Maglev tables are shared (between a port's two sets when they hold the same members,
    // with the previous generation, and one empty table for every empty set): each counts once.
    let mut seen = std::collections::HashSet::new();
    for port in &tables.service_ports {
        for set in [&port.cluster, &port.local] {
            if seen.insert(Arc::as_ptr(&set.maglev)) {
                size.maglev += size_of_val(set.maglev.slots());
                size.maglev_tables += usize::from(!set.maglev.slots().is_empty());
            }
        }
        size.service_ports += size_of::<ServicePort>()
            + port.name.capacity()
            + vec_bytes(&port.backends, port.backends.capacity())
            + backend_set_bytes(&port.cluster)
            + backend_set_bytes(&port.local);
    }
    size.frontends = map_bytes(tables.frontends.as_ref());

    let policy = &tables.policy;
    size.policy = map_bytes(&policy.identity_by_ip)
        + map_bytes(&policy.named_ports_by_ip)
        + policy
            .named_ports_by_ip
            .values()
            .map(|v| {
                vec_bytes(v, v.capacity()) + v.iter().map(|(n, _, _)| n.capacity()).sum::<usize>()
            })
            .sum::<usize>()
        + vec_bytes(&policy.endpoints, policy.endpoints.capacity())
        + policy
            .endpoints
            .iter()
            .flat_map(|e| [e.ingress.as_ref(), e.egress.as_ref()])
            .flatten()
            .map(direction_bytes)
            .sum::<usize>()
        + policy
            .policy_names
            .iter()
            .map(|n| size_of::<String>() + n.capacity())
            .sum::<usize>();

    size.other = size_of::<Tables>()
        + tables
            .ports
            .iter()
            .map(|p| size_of_val(p) + p.name.capacity())
            .sum::<usize>()
        + tables
            .local_pods
            .iter()
            .map(|p| {
                size_of_val(p)
                    + p.namespace.capacity()
                    + p.name.capacity()
                    + vec_bytes(&p.ips, p.ips.capacity())
            })
            .sum::<usize>()
        + map_bytes(&tables.local_pod_by_ip)
        + tables
            .remote_nodes
            .iter()
            .map(|n| size_of_val(n) + n.name.capacity() + vec_bytes(&n.pod_cidrs, n.pod_cidrs.capacity()))
            .sum::<usize>()
        + map_bytes(&tables.remote_node_by_underlay)
        // PrefixMap hides its maps: one entry per remote PodCIDR, at a hash map's cost.
        + tables.remote_routes.len() * (size_of::<(IpKey, usize)>() + 1) * 8 / 7;
    size
}

/// Builds every Maglev table of `tables` again from its members and returns how long that
/// took (the keys are prepared outside the timing). Then rebuilds every `verify_every`th
/// port's tables again, untimed, and errors if one differs from the published table (then
/// this would not be the work `translate` did).
pub fn rebuild_maglev(tables: &Tables, verify_every: usize) -> Result<Elapsed, HarnessError> {
    let keys_of = |port: &ServicePort, set: &BackendSet| -> Vec<[u8; 18]> {
        set.members
            .iter()
            .map(|&i| {
                let b: &Backend = &port.backends[i as usize];
                maglev::backend_key(b.ip, b.port)
            })
            .collect()
    };
    let build = |keys: &[[u8; 18]], size: u32, name: &str| {
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        MaglevTable::build(&refs, None, size, maglev::DEFAULT_SEED).map_err(|source| {
            HarnessError::MaglevBuild {
                port: name.to_string(),
                source,
            }
        })
    };
    // Empty sets share one slotless table that translate does not build.
    let mut inputs = Vec::new();
    for port in &tables.service_ports {
        for set in [&port.cluster, &port.local] {
            if set.members.is_empty() {
                continue;
            }
            inputs.push((keys_of(port, set), set.maglev.size()));
        }
    }
    let watch = Stopwatch::start();
    for (keys, size) in &inputs {
        std::hint::black_box(build(keys, *size, "")?);
    }
    let spent = watch.stop();

    for port in tables.service_ports.iter().step_by(verify_every.max(1)) {
        for set in [&port.cluster, &port.local] {
            if set.members.is_empty() {
                continue;
            }
            let again = build(&keys_of(port, set), set.maglev.size(), &port.name)?;
            if again.slots() != set.maglev.slots() {
                return Err(HarnessError::MaglevDiffers(port.name.clone()));
            }
        }
    }
    Ok(spent)
}

/// Wall-clock and on-CPU time of one measurement. On a shared machine the wall time counts
/// waiting for a CPU too; the CPU time (this thread's, from the scheduler) does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Elapsed {
    pub wall: Duration,
    /// `None` where /proc/thread-self/schedstat is unavailable.
    pub cpu: Option<Duration>,
}

/// Starts a wall-clock and a CPU-time measurement of the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    cpu: Option<Duration>,
    wall: Instant,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        // CPU first, wall last, so the wall time does not include reading the CPU time.
        let cpu = thread_cpu_time();
        Stopwatch {
            cpu,
            wall: Instant::now(),
        }
    }

    pub fn stop(&self) -> Elapsed {
        let wall = self.wall.elapsed();
        let cpu = match (self.cpu, thread_cpu_time()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Elapsed { wall, cpu }
    }
}

/// Time the calling thread has spent on a CPU: the first field of
/// /proc/thread-self/schedstat, in nanoseconds.
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale_cluster::{ScaleSpec, generate};

    fn small() -> ScaleCluster {
        generate(&ScaleSpec {
            nodes: 3,
            namespaces: 2,
            pods: 30,
            services: 12,
            endpoints: 4,
            policies: 8,
            seed: 3,
        })
        .expect("generates")
    }

    #[test]
    fn changes_are_published_and_checked() {
        let mut scale = small();
        let mut path = FullTranslate {
            config: scale.config.clone(),
            node: scale.node_under_test.clone(),
        };
        let first = path.reset(&scale.cluster, 1).expect("translates");
        let published = ArcSwap::from_pointee(first);
        let samples = measure_changes(&mut path, &mut scale, &published, 9, 11).expect("measures");
        assert_eq!(samples.len(), 9);
        // reset (generation 2) and 9 changes.
        assert_eq!(published.load().generation, 11);
        assert!(samples.iter().all(|s| s.total >= s.build));
    }

    #[test]
    fn the_incremental_path_publishes_each_change() {
        let mut scale = small();
        let first = translate(&scale.cluster, &scale.config, &scale.node_under_test, 1)
            .expect("translates")
            .tables;
        let published = ArcSwap::from_pointee(first);
        let mut path = Incremental::new(scale.config.clone(), &scale.node_under_test);
        let samples = measure_changes(&mut path, &mut scale, &published, 30, 5).expect("measures");
        assert_eq!(samples.len(), 30);
        // The incremental result equals a full translate of the final state.
        let full = translate(&scale.cluster, &scale.config, &scale.node_under_test, 32)
            .expect("translates");
        assert_eq!(
            model::translate::canonical_dump(&published.load()),
            model::translate::canonical_dump(&full.tables)
        );
    }

    /// A path that ignores the change publishes stale tables: the check must catch it.
    #[test]
    fn a_stale_path_is_caught() {
        struct Stale(Tables);
        impl ChangePath for Stale {
            fn name(&self) -> &str {
                "stale"
            }
            fn reset(
                &mut self,
                _: &ClusterState,
                generation: u64,
            ) -> Result<Tables, TranslateError> {
                let mut t = self.0.clone();
                t.generation = generation;
                Ok(t)
            }
            fn apply(
                &mut self,
                c: &ClusterState,
                _: &SliceChange<'_>,
                generation: u64,
            ) -> Result<Tables, TranslateError> {
                self.reset(c, generation)
            }
        }
        let mut scale = small();
        let tables = translate(&scale.cluster, &scale.config, &scale.node_under_test, 1)
            .expect("translates")
            .tables;
        let published = ArcSwap::from_pointee(tables.clone());
        let err = measure_changes(&mut Stale(tables), &mut scale, &published, 3, 11)
            .expect_err("stale tables are noticed");
        assert!(matches!(err, HarnessError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("the slices say"), "{err}");
    }

    #[test]
    fn maglev_rebuild_matches_and_sizes_add_up() {
        let scale = small();
        let tables = translate(&scale.cluster, &scale.config, &scale.node_under_test, 1)
            .expect("translates")
            .tables;
        rebuild_maglev(&tables, 1).expect("same tables");
        let size = tables_size(&tables);
        // Every port has a local endpoint here (4 endpoints over 3 nodes), so every set
        // has its own full-size table.
        assert_eq!(size.maglev_tables, 2 * tables.service_ports.len());
        assert_eq!(
            size.maglev,
            size.maglev_tables * 2 * scale.config.maglev.table_size as usize
        );
        assert!(size.policy > 0 && size.frontends > 0 && size.service_ports > 0);
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v[..1], 99.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn memory_is_readable() {
        let m = mem_status().expect("/proc/self/status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
