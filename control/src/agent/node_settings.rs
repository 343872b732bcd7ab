//! This node's own settings, found before anything is attached: its Node object (from the
//! state directory or the API), kxdp.yaml as it applies to the node (a matching `nodes:`
//! entry over the top-level keys) and the uplink that follows from them (`uplink.rs`).
//!
//! What cannot be found yet is waited for, not fatal: the agent stays unready, `/readyz`
//! says what is missing, the log repeats it every few seconds, and it looks again every
//! second (an address may come by DHCP, a Node may be registered late). Fatal at start: a
//! state directory that does not load (as it always was), and an `--uplink` that does not
//! exist or cannot be served (a flag is an explicit choice; waiting would not fix it).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use k8s_openapi::api::core::v1::Node;
use model::config::AgentConfig;
use model::state::load_state_dir;

use super::http::Readiness;
use super::source::{BuildError, Source};
use super::uplink::{self, Uplink, Wanted};
use super::{AgentError, AgentOptions, Event};

/// How often a missing setting is looked for again.
const RETRY: Duration = Duration::from_secs(1);
/// How often the log repeats what is still missing.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What this node runs with.
#[derive(Debug)]
pub struct NodeSettings {
    pub uplink: Uplink,
    /// kxdp.yaml with this node's `nodes:` entry applied.
    pub config: AgentConfig,
}

/// Looks until the settings are found (`Ok(Some)`), a signal arrives (`Ok(None)`) or the
/// state directory fails to load (`Err`).
pub fn wait_for(
    source: &mut Source,
    opts: &AgentOptions,
    events: &Receiver<Event>,
    readiness: &Readiness,
) -> Result<Option<NodeSettings>, AgentError> {
    let started = Instant::now();
    let mut reported: Option<(String, Instant)> = None;
    loop {
        match attempt(source, opts)? {
            Ok(settings) => return Ok(Some(settings)),
            Err(missing) => {
                readiness.waiting_for(&missing);
                let due = match &reported {
                    Some((said, at)) => *said != missing || at.elapsed() >= REPORT_EVERY,
                    None => true,
                };
                if due {
                    tracing::warn!(
                        waited_s = started.elapsed().as_secs(),
                        "not ready: {missing}"
                    );
                    reported = Some((missing, Instant::now()));
                }
            }
        }
        if let Ok(Event::Signal(signal)) = events.recv_timeout(RETRY) {
            tracing::info!(signal, "stopping before the node's settings were found");
            return Ok(None);
        }
    }
}

/// One look: the settings, or (inner `Err`) what is still missing.
fn attempt(
    source: &Source,
    opts: &AgentOptions,
) -> Result<Result<NodeSettings, String>, AgentError> {
    let (config, node) = match source {
        Source::Dir { watch, .. } => {
            let state = load_state_dir(&watch.dir).map_err(BuildError::from)?;
            let labels = state.cluster.node_labels(&opts.node);
            let node = state
                .cluster
                .nodes
                .into_iter()
                .find(|n| n.metadata.name.as_deref() == Some(opts.node.as_str()));
            (state.config, node.map(|n| (n, labels)))
        }
        Source::Kube { kube, config, .. } => {
            if !kube.synced() {
                let unsynced = source.unsynced().join(", ");
                return Ok(Err(format!(
                    "the Kubernetes API's first complete state (not yet listed: {unsynced})"
                )));
            }
            let node = kube.node(&opts.node).map(|n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                (n, labels)
            });
            (config.clone(), node)
        }
    };
    let empty = BTreeMap::new();
    let labels = node.as_ref().map_or(&empty, |(_, l)| l);
    let node_config = config.for_node(&opts.node, labels);
    // Which `nodes:` entry named the uplink, when one did (else it is the top-level key).
    let entry = config
        .node_override_index(&opts.node, labels)
        .filter(|&i| config.nodes[i].uplink.is_some());
    let wanted = Wanted {
        flag: opts.uplink.as_deref(),
        configured: node_config.uplink.as_deref().map(|u| (u, entry)),
        internal_ips: node
            .as_ref()
            .map(|(n, _)| internal_ips(n))
            .unwrap_or_default(),
    };
    if wanted.flag.is_none() && wanted.configured.is_none() && node.is_none() {
        return Ok(Err(format!(
            "Node {} in {}: its InternalIP names the uplink (or give --uplink)",
            opts.node,
            source.describe()
        )));
    }
    match uplink::find(&wanted) {
        Ok(uplink) => Ok(Ok(NodeSettings {
            uplink,
            config: node_config,
        })),
        // A flag is the operator's explicit choice: waiting would not fix a typo.
        Err(e) if wanted.flag.is_some() => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// The Node's IPv4 InternalIP addresses, in its order.
fn internal_ips(node: &Node) -> Vec<Ipv4Addr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}
