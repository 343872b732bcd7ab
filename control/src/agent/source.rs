//! Where the agent's cluster state comes from: a manifest directory, re-read when its files
//! change, or the Kubernetes API (`control::source::KubeSource`: watchers, published only
//! once every kind has synced). Either way the next generation is built by the same pure
//! `translate`.
//! A directory's changes are seen by `model::state::watch::DirWatch`.

use std::path::{Path, PathBuf};

use datapath::tables::Tables;

use crate::source::change_log::TriggerTime;
use crate::source::{KubeSource, SourceUpdate};
use model::config::{AgentConfig, ConfigError};
use model::state::watch::DirWatch;
use model::state::{CONFIG_FILE, ClusterState, StateError, load_state_dir};
use model::translate::incremental::{Translator, Work};
use model::translate::{HealthCheckService, TranslateError, translate};

/// Why no generation could be built. The Display is one line naming the file or object.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The state directory (its Display starts with the file).
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// `kxdp.yaml` next to the Kubernetes source (the mounted ConfigMap).
    #[error("{}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Config { path: PathBuf, source: ConfigError },
}

/// One built generation.
#[derive(Debug)]
pub struct Built {
    pub tables: Tables,
    pub config: AgentConfig,
    pub warnings: Vec<String>,
    /// The Services this node answers health checks for (`healthCheckNodePort`).
    pub health_checks: Vec<HealthCheckService>,
    /// Whether load balancers should keep using this node (`model::k8s::node_eligible`).
    pub node_eligible: bool,
    /// What it was built from, for the log.
    pub cause: Cause,
    /// Translated from scratch (a directory, a first sync, a relist, a translator that
    /// started over) rather than by changes alone: kube-proxy's full vs partial sync.
    pub full: bool,
    /// The trigger times of the EndpointSlice changes this generation holds (the API only).
    pub trigger_times: Vec<TriggerTime>,
    /// When the build started (the changes were taken from the source): a sync's duration
    /// runs from here to the generation's publication.
    pub started: std::time::Instant,
}

/// What a generation was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The state directory, read whole.
    Directory,
    /// The API's whole state: the first sync, or a relist after a watch broke off.
    ApiRelist,
    /// Objects the API watch saw change, translated incrementally.
    ApiChanges { objects: usize, work: Work },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Directory => f.write_str("the state directory, read whole"),
            Cause::ApiRelist => f.write_str("the API's whole state (first sync or relist)"),
            Cause::ApiChanges { objects, work } => {
                write!(f, "{objects} changed objects")?;
                if work.full_rebuild {
                    return f.write_str(", translated from scratch");
                }
                write!(f, ": {} Services rebuilt", work.services_rebuilt)?;
                if work.node_parts_rebuilt {
                    f.write_str(", nodes and pods rebuilt")?;
                }
                if work.policy_compiled {
                    f.write_str(", policy recompiled")?;
                }
                if work.pods_relabelled > 0 {
                    write!(f, ", {} pods relabelled", work.pods_relabelled)?;
                }
                Ok(())
            }
        }
    }
}

/// Whether `node`'s Node in `cluster` is eligible (a missing Node cannot be: translation
/// refuses to build without it).
fn node_eligible(cluster: &ClusterState, node: &str) -> bool {
    cluster
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .is_none_or(model::k8s::node_eligible)
}

/// Loads `dir` and translates it for `node`, with kxdp.yaml as it applies to that node (its
/// `nodes:` entry) and the underlay MTU of an uplink of `uplink_mtu` unless kxdp.yaml sets
/// one.
pub fn build(
    dir: &Path,
    node: &str,
    generation: u64,
    uplink_mtu: Option<u32>,
) -> Result<Built, BuildError> {
    let started = std::time::Instant::now();
    let state = load_state_dir(dir)?;
    let labels = state.cluster.node_labels(node);
    let config = state.config.for_node(node, &labels);
    let config = with_uplink_mtu(config, uplink_mtu, &dir.join(CONFIG_FILE))?;
    let built = build_from(&state.cluster, config, state.warnings, node, generation)?;
    Ok(Built { started, ..built })
}

/// [`AgentConfig::with_uplink_mtu`] when the uplink's MTU is known.
pub fn with_uplink_mtu(
    config: AgentConfig,
    uplink_mtu: Option<u32>,
    path: &Path,
) -> Result<AgentConfig, BuildError> {
    match uplink_mtu {
        Some(mtu) => config
            .with_uplink_mtu(mtu)
            .map_err(|source| BuildError::Config {
                path: path.to_path_buf(),
                source,
            }),
        None => Ok(config),
    }
}

fn build_from(
    cluster: &ClusterState,
    config: AgentConfig,
    mut warnings: Vec<String>,
    node: &str,
    generation: u64,
) -> Result<Built, BuildError> {
    let translated = translate(cluster, &config, node, generation)?;
    warnings.extend(translated.warnings);
    Ok(Built {
        tables: translated.tables,
        config,
        warnings,
        health_checks: translated.health_checks,
        node_eligible: node_eligible(cluster, node),
        cause: Cause::Directory,
        full: true,
        trigger_times: Vec::new(),
        started: std::time::Instant::now(),
    })
}

/// The agent config alone (`kxdp.yaml` of `dir`, defaults when absent): with the Kubernetes
/// source the directory is the mounted ConfigMap and holds nothing else.
pub fn config_only(dir: Option<&Path>) -> Result<AgentConfig, BuildError> {
    let Some(path) = dir.map(|d| d.join(CONFIG_FILE)).filter(|p| p.exists()) else {
        return Ok(AgentConfig::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(BuildError::ReadConfig { path, source }),
    };
    AgentConfig::from_yaml(&text).map_err(|source| BuildError::Config { path, source })
}

/// The agent's source of cluster state.
#[derive(Debug)]
pub enum Source {
    Dir {
        watch: DirWatch,
        /// The uplink's MTU, the underlay MTU when kxdp.yaml sets none.
        uplink_mtu: Option<u32>,
    },
    Kube {
        kube: Box<KubeSource>,
        /// kxdp.yaml as read at start (a ConfigMap change takes an agent restart).
        config: AgentConfig,
        /// Made at the first update; keeps the state between updates.
        translator: Option<Box<Translator>>,
    },
}

impl Source {
    /// What to say when building fails: where the state came from.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir { watch, .. } => format!("state directory {}", watch.dir.display()),
            Source::Kube { .. } => "the Kubernetes API".to_string(),
        }
    }

    /// The next generation if the state changed since the last call (first call: the
    /// initial state, once there is one). `None`: nothing new (or, from the API, not every
    /// kind has synced yet: no table is ever built from a partial state).
    ///
    /// From the API, changes go through the incremental translator (only what they touch
    /// is rebuilt); a relist, like a re-read directory, is translated from scratch.
    pub fn next(&mut self, node: &str, generation: u64) -> Option<Result<Built, BuildError>> {
        match self {
            Source::Dir { watch, uplink_mtu } => watch
                .changed()
                .then(|| build(&watch.dir, node, generation, *uplink_mtu)),
            Source::Kube {
                kube,
                config,
                translator,
            } => {
                let translator = translator
                    .get_or_insert_with(|| Box::new(Translator::new(config.clone(), node)));
                let started = std::time::Instant::now();
                let update = kube.updates()?;
                let trigger_times = kube.take_trigger_times();
                let result = match update {
                    SourceUpdate::Full(cluster) => translator
                        .reset(cluster, generation)
                        .map(|t| (t, Cause::ApiRelist, true)),
                    SourceUpdate::Changes(changes) => {
                        let objects = changes.len();
                        translator.apply(changes, generation).map(|(t, work)| {
                            let cause = Cause::ApiChanges { objects, work };
                            (t, cause, work.full_rebuild)
                        })
                    }
                };
                let eligible = node_eligible(translator.cluster(), node);
                Some(
                    result
                        .map(|(t, cause, full)| Built {
                            tables: t.tables,
                            config: config.clone(),
                            warnings: t.warnings,
                            health_checks: t.health_checks,
                            node_eligible: eligible,
                            cause,
                            full,
                            trigger_times,
                            started,
                        })
                        .map_err(BuildError::from),
                )
            }
        }
    }

    /// Runs this node's settings from now on: with the API, kxdp.yaml as it applies to
    /// the node (`config`, read once at start) with the uplink's MTU; a directory re-reads
    /// kxdp.yaml at every change and applies it to the node itself, so only the MTU is kept.
    pub fn use_node_config(
        &mut self,
        node_config: AgentConfig,
        uplink: Option<u32>,
    ) -> Result<(), BuildError> {
        match self {
            Source::Dir { uplink_mtu, .. } => {
                *uplink_mtu = uplink;
                Ok(())
            }
            Source::Kube { config, .. } => {
                *config = with_uplink_mtu(node_config, uplink, Path::new(CONFIG_FILE))?;
                Ok(())
            }
        }
    }

    /// The Kubernetes source, when that is where the state comes from.
    pub fn kube(&self) -> Option<&KubeSource> {
        match self {
            Source::Dir { .. } => None,
            Source::Kube { kube, .. } => Some(kube),
        }
    }

    /// Blocks up to `timeout` for the first state (the API's initial sync).
    pub fn wait(&self, timeout: std::time::Duration) {
        match self {
            Source::Dir { .. } => {}
            Source::Kube { kube, .. } => {
                kube.wait_for_change(timeout);
            }
        }
    }

    /// Kinds the API source has not listed yet (empty for a directory).
    pub fn unsynced(&self) -> Vec<String> {
        match self {
            Source::Dir { .. } => Vec::new(),
            Source::Kube { kube, .. } => kube
                .unsynced_kinds()
                .iter()
                .map(|k| k.to_string())
                .collect(),
        }
    }
}
