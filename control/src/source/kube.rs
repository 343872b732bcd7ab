//! The live Kubernetes source: one kube-rs watcher + reflector store per kind kxdp programs
//! from, run on a small tokio runtime this source owns, read by the (synchronous) control
//! thread as whole [`ClusterState`] snapshots.
//!
//! Guarantees the control thread relies on:
//! - nothing is offered until every store has finished its first list (kube's `InitDone`),
//!   so tables are never built from a cluster half-listed; except that an *optional* kind
//!   ([`Kind::optional`]: ServiceCIDR) whose list the API server answers 404 (it does not
//!   serve the API: before 1.33, or with the API disabled) counts as listed and empty, so
//!   an older cluster is not waited on forever. Its list is tried again every
//!   [`SourceOptions::optional_kind_recheck`] (and kube's backoff), so an upgrade that
//!   starts serving it is picked up without a restart (a whole-state update follows). A
//!   403 there (a ClusterRole from before kxdp read the kind) is treated the same, with a
//!   warning, rather than keeping the node's datapath down;
//! - each kind's store is swapped in whole by kube's reflector on every (re)list, so a
//!   relist after `410 Gone` or a dropped connection never shows a half-filled kind;
//! - errors (refused connections, 410, broken streams) are retried by kube's default
//!   backoff; the stores keep their last good content meanwhile.
//!
//! Across kinds there is no common snapshot (the API server has none either); each kind is
//! some state that kind really had, and changes flow in as they are watched.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ::kube::api::{Patch, PatchParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::reflector::{self, ObjectRef, Store};
use ::kube::runtime::{WatchStreamExt, watcher};
use ::kube::{Api, Client, Config, Resource, ResourceExt};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{NetworkPolicy, ServiceCIDR};
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;

use model::state::ClusterState;
use model::state::changes::{Change, Kind, Object, ObjectKey};

use super::change_log::{ChangeCounters, ChangeLog, TriggerTime};

/// The kinds the source watches: the kinds kxdp reads.
pub type WatchedKind = Kind;

/// Why the source could not start. Watch errors after the start are not errors of the
/// source: kube retries them with backoff and [`KubeSource::watch_errors`] counts them.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("starting the Kubernetes client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
    #[error("no Kubernetes client config (neither $KUBECONFIG/~/.kube/config nor in-cluster): {0}")]
    Infer(#[source] ::kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
    /// `apiServer` / `--api-server` with the service account of `dir`.
    #[error("in-cluster access to {url} with the service account in {}: {source}", dir.display())]
    InClusterAt {
        url: String,
        dir: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
}

/// Where the kubelet mounts a pod's service account (token, ca.crt, namespace).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// In-cluster access at an explicit API server endpoint: the service account's CA and
/// token (the token file is re-read as the kubelet rotates it), the API server at
/// `endpoint` rather than at `KUBERNETES_SERVICE_HOST`, a Service ClusterIP that on a node
/// without kube-proxy only kxdp would route, and only once it has the state it would get
/// from there. Built as a kubeconfig naming those files, so kube-rs loads them as it loads
/// any kubeconfig's.
pub async fn in_cluster_at(
    endpoint: &model::config::ApiServerEndpoint,
    service_account: &Path,
) -> Result<Config, KubeSourceError> {
    use ::kube::config::{AuthInfo, Cluster, Context, NamedAuthInfo, NamedCluster, NamedContext};
    const NAME: &str = "in-cluster";
    let file = |name: &str| Some(service_account.join(name).display().to_string());
    let namespace = std::fs::read_to_string(service_account.join("namespace"))
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: NAME.into(),
            cluster: Some(Cluster {
                server: Some(endpoint.url()),
                certificate_authority: file("ca.crt"),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: NAME.into(),
            auth_info: Some(AuthInfo {
                token_file: file("token"),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: NAME.into(),
            context: Some(Context {
                cluster: NAME.into(),
                user: Some(NAME.into()),
                namespace,
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(NAME.into()),
        ..Default::default()
    };
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeSourceError::InClusterAt {
            url: endpoint.url(),
            dir: service_account.to_path_buf(),
            source,
        })
}

/// How the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceOptions {
    /// How long an optional kind the API server does not serve waits before its list is
    /// tried again (kube's backoff, up to 30 s, comes on top). Slow on purpose: every agent
    /// of a cluster asks, and the answer changes only with an upgrade.
    pub optional_kind_recheck: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            optional_kind_recheck: Duration::from_secs(60),
        }
    }
}

/// What the watcher tasks tell the control thread.
#[derive(Debug)]
struct Progress {
    /// Per kind: has its first list completed (or, for an optional kind, been refused as
    /// not served)?
    synced: [bool; Kind::ALL.len()],
    /// Bumped after every change applied to any store (and on each completed list).
    generation: u64,
    /// Watch/list errors seen (each one retried by kube's backoff).
    errors: u64,
    /// Per kind: errors since its watch last delivered anything (0: healthy), so the
    /// recovery is logged once.
    failing: [u64; Kind::ALL.len()],
    /// Objects changed since the last [`KubeSource::updates`].
    dirty: HashSet<ObjectKey>,
    /// A kind was (re)listed since then: deletions during a watch gap are only visible
    /// by comparing whole lists, so the next update is the whole state.
    relisted: bool,
    /// Change counters and trigger times for the metrics.
    changes: ChangeLog,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            synced: Default::default(),
            generation: 0,
            errors: 0,
            failing: Default::default(),
            dirty: HashSet::new(),
            relisted: false,
            changes: ChangeLog::new(SystemTime::now()),
        }
    }
}

/// Called after every change applied to a store (see [`KubeSource::on_change`]).
type ChangeHook = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
    on_change: Mutex<Option<ChangeHook>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("progress", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A watcher task that panicked mid-update leaves only counters behind; they stay
        // meaningful, so a poisoned lock is read through.
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_event<K: Resource + 'static>(&self, kind: WatchedKind, event: &watcher::Event<K>) {
        let mut progress = self.lock();
        let failed = std::mem::take(&mut progress.failing[kind as usize]);
        if failed > 0 {
            tracing::info!(%kind, errors = failed, "kube source: watch reconnected");
        }
        match event {
            // Init/InitApply only fill kube's side buffer; the store is unchanged until InitDone.
            watcher::Event::Init | watcher::Event::InitApply(_) => return,
            watcher::Event::InitDone => {
                if progress.synced[kind as usize] {
                    // After a watch broke off for longer than its resourceVersion lived.
                    tracing::info!(%kind, "kube source: relisted");
                } else {
                    tracing::info!(%kind, "kube source: initial list complete");
                }
                progress.synced[kind as usize] = true;
                progress.relisted = true;
            }
            watcher::Event::Apply(obj) => {
                let key = ObjectKey::of(kind, obj.meta());
                progress
                    .changes
                    .note(kind, &key, Some(obj as &dyn std::any::Any));
                progress.dirty.insert(key);
            }
            watcher::Event::Delete(obj) => {
                let key = ObjectKey::of(kind, obj.meta());
                progress.changes.note(kind, &key, None);
                progress.dirty.insert(key);
            }
        }
        progress.generation += 1;
        drop(progress);
        self.announce();
    }

    /// Wakes whoever waits for a change, and runs the change hook.
    fn announce(&self) {
        self.changed.notify_all();
        let hook = self
            .on_change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hook) = hook.as_ref() {
            hook();
        }
    }

    fn note_error(&self, kind: WatchedKind, error: &watcher::Error) {
        tracing::warn!(%kind, %error, "kube source: watch error, retrying with backoff");
        let mut progress = self.lock();
        progress.errors += 1;
        progress.failing[kind as usize] += 1;
    }

    /// An optional kind's list was refused with `code` (404: not served; 403: not
    /// permitted) and its store emptied: it counts as listed, and the next update is the
    /// whole state (objects of the kind that were there are gone).
    fn note_not_served(&self, kind: WatchedKind, code: u16, recheck: Duration) {
        let recheck_s = recheck.as_secs();
        if code == 403 {
            tracing::warn!(
                %kind,
                recheck_s,
                "kube source: listing this optional kind is forbidden (403): going on without \
                 it; grant list/watch on it in kxdp's ClusterRole"
            );
        } else {
            tracing::info!(
                %kind,
                recheck_s,
                "kube source: the API server does not serve this optional kind ({code}): \
                 going on without it, asking again now and then"
            );
        }
        let mut progress = self.lock();
        progress.synced[kind as usize] = true;
        progress.relisted = true;
        progress.generation += 1;
        drop(progress);
        self.announce();
    }
}

/// What [`KubeSource::updates`] hands out.
#[derive(Debug)]
pub enum SourceUpdate {
    Full(ClusterState),
    Changes(Vec<Change>),
}

/// Read handles of the reflector stores, one per kind.
#[derive(Debug, Clone)]
struct Stores {
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    network_policies: Store<NetworkPolicy>,
    service_cidrs: Store<ServiceCIDR>,
}

/// Live cluster state from the Kubernetes API. See the module docs for its guarantees.
pub struct KubeSource {
    /// Owns the watcher tasks; dropping the source shuts them down.
    runtime: Option<Runtime>,
    /// For the few writes the agent makes (its own Node's annotations).
    client: Client,
    shared: Arc<Shared>,
    stores: Stores,
    /// The generation the last snapshot handed out was taken at.
    published: Option<u64>,
    /// The trigger times of the changes the last [`updates`](Self::updates) handed out.
    trigger_times: Vec<TriggerTime>,
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("progress", &*self.shared.lock())
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

fn new_runtime() -> Result<Runtime, KubeSourceError> {
    // One worker is plenty for seven watch streams and keeps the agent's cores for packets.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kxdp-kube")
        .enable_all()
        .build()
        .map_err(KubeSourceError::Runtime)
}

impl KubeSource {
    /// Connects with `kubeconfig` (its current context) when given, otherwise as kube-rs
    /// infers: `$KUBECONFIG` / `~/.kube/config`, then the in-cluster service account.
    pub fn from_kubeconfig(kubeconfig: Option<&Path>) -> Result<KubeSource, KubeSourceError> {
        KubeSource::from_kubeconfig_with(kubeconfig, SourceOptions::default())
    }

    /// [`from_kubeconfig`](Self::from_kubeconfig) with `options`.
    pub fn from_kubeconfig_with(
        kubeconfig: Option<&Path>,
        options: SourceOptions,
    ) -> Result<KubeSource, KubeSourceError> {
        let runtime = new_runtime()?;
        let config = runtime.block_on(load_config(kubeconfig))?;
        KubeSource::start_on_with(runtime, config, options)
    }

    /// Connects with the pod's service account to the API server at `endpoint`
    /// ([`in_cluster_at`]).
    pub fn in_cluster_at(
        endpoint: &model::config::ApiServerEndpoint,
        service_account: &Path,
    ) -> Result<KubeSource, KubeSourceError> {
        let runtime = new_runtime()?;
        let config = runtime.block_on(in_cluster_at(endpoint, service_account))?;
        KubeSource::start_on(runtime, config)
    }

    /// Starts watching with an already loaded client config.
    pub fn start(config: Config) -> Result<KubeSource, KubeSourceError> {
        KubeSource::start_with(config, SourceOptions::default())
    }

    /// [`start`](Self::start) with `options` (tests shorten the optional-kind recheck).
    pub fn start_with(
        config: Config,
        options: SourceOptions,
    ) -> Result<KubeSource, KubeSourceError> {
        KubeSource::start_on_with(new_runtime()?, config, options)
    }

    fn start_on(runtime: Runtime, config: Config) -> Result<KubeSource, KubeSourceError> {
        KubeSource::start_on_with(runtime, config, SourceOptions::default())
    }

    fn start_on_with(
        runtime: Runtime,
        config: Config,
        options: SourceOptions,
    ) -> Result<KubeSource, KubeSourceError> {
        // The client spawns its request buffer task, so it is built inside the runtime.
        let client = {
            let _entered = runtime.enter();
            Client::try_from(config).map_err(KubeSourceError::Client)?
        };
        let shared = Arc::new(Shared::default());
        let watch = Watch {
            runtime: &runtime,
            client: &client,
            shared: &shared,
            options,
        };
        let stores = Stores {
            nodes: watch.spawn(WatchedKind::Node),
            namespaces: watch.spawn(WatchedKind::Namespace),
            pods: watch.spawn(WatchedKind::Pod),
            services: watch.spawn(WatchedKind::Service),
            endpoint_slices: watch.spawn(WatchedKind::EndpointSlice),
            network_policies: watch.spawn(WatchedKind::NetworkPolicy),
            service_cidrs: watch.spawn(WatchedKind::ServiceCIDR),
        };
        Ok(KubeSource {
            runtime: Some(runtime),
            client,
            shared,
            stores,
            published: None,
            trigger_times: Vec::new(),
        })
    }

    /// Has every kind completed its first list (an optional kind: or been found not
    /// served)?
    pub fn synced(&self) -> bool {
        self.shared.lock().synced.iter().all(|s| *s)
    }

    /// The kinds still waiting for their first list (for "waiting for ..." logs).
    pub fn unsynced_kinds(&self) -> Vec<WatchedKind> {
        let progress = self.shared.lock();
        WatchedKind::ALL
            .into_iter()
            .filter(|&k| !progress.synced[k as usize])
            .collect()
    }

    /// Changes applied to the stores so far (monotonic).
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// Watch/list errors seen so far, each retried with backoff.
    pub fn watch_errors(&self) -> u64 {
        self.shared.lock().errors
    }

    /// A snapshot when every kind has synced and something changed since the last snapshot
    /// this returned; `None` otherwise.
    pub fn snapshot_if_changed(&mut self) -> Option<ClusterState> {
        let generation = {
            let progress = self.shared.lock();
            if !progress.synced.iter().all(|s| *s) || self.published == Some(progress.generation) {
                return None;
            }
            progress.generation
        };
        // Read after the generation: a change landing while we copy bumps the generation
        // again, so the next call picks it up; nothing is missed.
        self.published = Some(generation);
        Some(self.stores.snapshot())
    }

    /// What changed since the last call, once every kind has synced: the whole state the
    /// first time and after any relist, else the objects that changed, as they are now
    /// (`Deleted` when gone). `None`: nothing new, or not synced yet.
    ///
    /// Keys are noted after the reflector has applied the event to its store, and read
    /// from the store here: a change landing meanwhile is either already visible or noted
    /// again for the next call, so nothing is missed.
    pub fn updates(&mut self) -> Option<SourceUpdate> {
        let (generation, full, dirty) = {
            let mut progress = self.shared.lock();
            if !progress.synced.iter().all(|s| *s) || self.published == Some(progress.generation) {
                return None;
            }
            let full = self.published.is_none() || progress.relisted;
            progress.relisted = false;
            // Taken with the changes they belong to (see `change_log`).
            self.trigger_times = progress.changes.take_trigger_times();
            (
                progress.generation,
                full,
                std::mem::take(&mut progress.dirty),
            )
        };
        self.published = Some(generation);
        if full {
            return Some(SourceUpdate::Full(self.stores.snapshot()));
        }
        let mut keys: Vec<ObjectKey> = dirty.into_iter().collect();
        keys.sort();
        Some(SourceUpdate::Changes(
            keys.into_iter()
                .map(|key| match self.stores.object(&key) {
                    Some(object) => Change::Applied(object),
                    None => Change::Deleted(key),
                })
                .collect(),
        ))
    }

    /// The trigger times of the EndpointSlice changes the last [`updates`](Self::updates)
    /// handed out; emptied by the call.
    pub fn take_trigger_times(&mut self) -> Vec<TriggerTime> {
        std::mem::take(&mut self.trigger_times)
    }

    /// Service and EndpointSlice changes seen and pending, in kube-proxy's terms.
    pub fn change_counters(&self) -> ChangeCounters {
        let progress = self.shared.lock();
        progress.changes.counters(&progress.dirty)
    }

    /// The current state when every kind has synced, whether or not it changed.
    pub fn snapshot(&self) -> Option<ClusterState> {
        self.synced().then(|| self.stores.snapshot())
    }

    /// Calls `hook` after every change applied to the stores, on the source's own thread
    /// (so keep it short: a channel send), letting a consumer with an event loop of its own
    /// react at once instead of polling. Replaces any earlier hook.
    pub fn on_change(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self
            .shared
            .on_change
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// Blocks until [`snapshot_if_changed`](Self::snapshot_if_changed) would return a
    /// snapshot, or `timeout` passes; returns whether it would.
    pub fn wait_for_change(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |progress| {
            progress.synced.iter().all(|s| *s) && self.published != Some(progress.generation)
        })
    }

    /// Blocks until `done` holds (checked now and after every change), or `timeout`
    /// passes; returns whether it held. Stores are updated before the generation is bumped
    /// and the condvar notified, so a change cannot slip between a check and the wait.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&Progress) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.shared.lock();
        loop {
            if done(&progress) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            progress = self
                .shared
                .changed
                .wait_timeout(progress, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// Why a patch of a Node did not land.
#[derive(Debug, thiserror::Error)]
pub enum NodePatchError {
    /// What the API answered (a Status: code, reason, message) or why it could not be
    /// reached.
    #[error("{0}")]
    Api(#[source] ::kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the Kubernetes client runtime is shut down")]
    Stopped,
}

/// The field manager the agent's writes are recorded under (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "kxdp-agent";

impl KubeSource {
    /// Node `name` as the watch last delivered it (`None` before the first list or when
    /// the cluster has no such Node).
    pub fn node(&self, name: &str) -> Option<Node> {
        self.stores
            .nodes
            .get(&reflector::ObjectRef::new(name))
            .map(|node| Node::clone(&node))
    }

    /// Blocks until the watch delivered a Node `name` for which `done` holds, or `timeout`
    /// passes; returns whether it did.
    pub fn wait_for_node(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&Node) -> bool,
    ) -> bool {
        self.wait_until(timeout, |_| self.node(name).is_some_and(|node| done(&node)))
    }

    /// Sets `annotations` on Node `node` with one JSON merge patch (RFC 7386: the keys given
    /// are set, every other annotation and field is left alone), field manager
    /// [`FIELD_MANAGER`]. Runs on this source's runtime and blocks the caller for at most
    /// `timeout`. Returns the Node as the API answered it.
    pub fn patch_node_annotations(
        &self,
        node: &str,
        annotations: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Node, NodePatchError> {
        let runtime = self.runtime.as_ref().ok_or(NodePatchError::Stopped)?;
        let api: Api<Node> = Api::all(self.client.clone());
        let body = serde_json::json!({ "metadata": { "annotations": annotations } });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        runtime
            .block_on(async {
                tokio::time::timeout(timeout, api.patch(node, &params, &Patch::Merge(&body))).await
            })
            .map_err(|_| NodePatchError::Timeout(timeout))?
            .map_err(NodePatchError::Api)
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Do not wait for in-flight HTTP requests; safe from sync and async contexts.
            runtime.shutdown_background();
        }
    }
}

impl Stores {
    fn snapshot(&self) -> ClusterState {
        ClusterState {
            nodes: sorted(&self.nodes),
            namespaces: sorted(&self.namespaces),
            pods: sorted(&self.pods),
            services: sorted(&self.services),
            endpoint_slices: sorted(&self.endpoint_slices),
            network_policies: sorted(&self.network_policies),
            service_cidrs: sorted(&self.service_cidrs),
        }
    }

    /// The object at `key` as the store has it now.
    fn object(&self, key: &ObjectKey) -> Option<Object> {
        fn get<K>(store: &Store<K>, key: &ObjectKey) -> Option<K>
        where
            K: Resource<DynamicType = ()> + Clone,
        {
            let mut at = ObjectRef::new(&key.name);
            if !key.namespace.is_empty() {
                at = at.within(&key.namespace);
            }
            store.get(&at).map(|o| K::clone(&o))
        }
        Some(match key.kind {
            Kind::Node => Object::Node(get(&self.nodes, key)?),
            Kind::Namespace => Object::Namespace(get(&self.namespaces, key)?),
            Kind::Pod => Object::Pod(get(&self.pods, key)?),
            Kind::Service => Object::Service(get(&self.services, key)?),
            Kind::EndpointSlice => Object::EndpointSlice(get(&self.endpoint_slices, key)?),
            Kind::NetworkPolicy => Object::NetworkPolicy(get(&self.network_policies, key)?),
            Kind::ServiceCIDR => Object::ServiceCIDR(get(&self.service_cidrs, key)?),
        })
    }
}

/// The store's objects by namespace/name: stores are hash maps, and stable order keeps
/// translate's output (and its warnings) stable between snapshots.
fn sorted<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut objects: Vec<K> = store.state().iter().map(|o| K::clone(o)).collect();
    objects.sort_by_cached_key(|o| (o.namespace(), o.name_any()));
    objects
}

/// What every watcher task is started with.
struct Watch<'a> {
    runtime: &'a Runtime,
    client: &'a Client,
    shared: &'a Arc<Shared>,
    options: SourceOptions,
}

impl Watch<'_> {
    /// Starts the watcher of `kind` and returns its store.
    fn spawn<K>(&self, kind: WatchedKind) -> Store<K>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (reader, mut writer) = reflector::store::<K>();
        let api: Api<K> = Api::all(self.client.clone());
        let shared = Arc::clone(self.shared);
        let recheck = self.options.optional_kind_recheck;
        self.runtime.spawn(async move {
            let events = watcher(api, watcher::Config::default()).default_backoff();
            let mut events = std::pin::pin!(events);
            // Whether the kind was last found not served (said once per such spell).
            let mut not_served = false;
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        // The store shows the change before the generation is bumped, as
                        // kube's reflector would apply it.
                        writer.apply_watcher_event(&event);
                        if not_served && matches!(event, watcher::Event::InitDone) {
                            not_served = false;
                            tracing::info!(%kind, "kube source: the API server serves this optional kind now: listed");
                        }
                        shared.note_event(kind, &event);
                    }
                    Err(error) => match refused_list(kind, &error) {
                        Some(code) => {
                            if !not_served {
                                not_served = true;
                                // An empty list: whatever the kind held is gone with it.
                                writer.apply_watcher_event(&watcher::Event::Init);
                                writer.apply_watcher_event(&watcher::Event::InitDone);
                                shared.note_not_served(kind, code, recheck);
                            }
                            tokio::time::sleep(recheck).await;
                        }
                        None => shared.note_error(kind, &error),
                    },
                }
            }
        });
        reader
    }
}

/// The status code when `error` is an optional kind's list refused as not served (404) or
/// not permitted (403); `None` for anything else, which is retried as any watch error.
/// Only the initial list counts: a kind that lists and then fails to watch is served.
fn refused_list(kind: WatchedKind, error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(::kube::Error::Api(status))
            if kind.optional() && matches!(status.code, 403 | 404) =>
        {
            Some(status.code)
        }
        _ => None,
    }
}

/// Loads a client config from `kubeconfig`, or infers one (kubeconfig, then in-cluster).
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<Config, KubeSourceError> {
    match kubeconfig {
        Some(path) => {
            let kubeconfig_err = |source| KubeSourceError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(kubeconfig_err)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_err)
        }
        None => Config::infer().await.map_err(KubeSourceError::Infer),
    }
}
