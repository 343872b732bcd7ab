//! Identities: pods with equal (namespace, namespace labels, pod labels) are the same to
//! every selector, so selectors are evaluated against identities, not pods.

use datapath::IpKey;
use datapath::policy::IdentityId;
use k8s_openapi::api::core::v1::Pod;

use super::selector::{NsScope, PeerKey};
use super::{Labels, NamedPorts, PolicyCompiler};
use crate::k8s::{NAMESPACE_NAME_LABEL, parse_ip_key, pod_ips, port_number, protocol_number};

#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub(super) namespace: String,
    pub(super) labels: Labels,
    /// Pods currently having it; a retired identity (0 pods after an update) is no
    /// longer in any selector's members.
    pub(super) pods: usize,
}

#[derive(Debug, Clone)]
pub(super) struct PodRecord {
    pub(super) identity: IdentityId,
    pub(super) ips: Vec<IpKey>,
    /// The addresses whose `identity_by_ip` entry is this pod's (an address two pods
    /// claim belongs to the first by (namespace, name)).
    pub(super) owned_ips: Vec<IpKey>,
    pub(super) named: NamedPorts,
    /// Index into `Tables::local_pods`.
    pub(super) local: Option<usize>,
}

/// What a local pod's endpoint policy is compiled from.
#[derive(Debug, Clone)]
pub(super) struct LocalEndpoint {
    pub(super) identity: IdentityId,
    pub(super) named: NamedPorts,
}

/// A pod policy knows about: addressed, on the pod network, not finished.
pub(super) fn has_identity(pod: &Pod) -> bool {
    !pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
        && !pod_ips(pod).is_empty()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The pod's addresses. Unparsable ones are reported by load validation; they carry no
/// packets, so they are left out.
pub(super) fn pod_addresses(pod: &Pod) -> Vec<IpKey> {
    pod_ips(pod)
        .into_iter()
        .filter_map(|t| parse_ip_key(t).ok())
        .collect()
}

/// Named container ports; entries with a bad protocol or number cannot be matched and
/// are left out (load validation reports them).
pub(super) fn container_named_ports(pod: &Pod) -> NamedPorts {
    let mut out: NamedPorts = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            let proto = protocol_number(p.protocol.as_deref()).ok()?;
            let port = port_number(p.container_port).ok()?;
            Some((name.to_string(), proto, port))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(super) fn pod_labels(pod: &Pod) -> Labels {
    pod.metadata.labels.clone().unwrap_or_default()
}

/// The labels of a namespace with no Namespace object: only the one the API server adds.
fn implied_namespace_labels(ns: &str) -> Labels {
    [(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())].into()
}

impl PolicyCompiler {
    pub(super) fn identity(&self, id: IdentityId) -> &Identity {
        &self.identities[id.0 as usize - 1]
    }

    pub(super) fn identity_mut(&mut self, id: IdentityId) -> &mut Identity {
        &mut self.identities[id.0 as usize - 1]
    }

    /// Registers a new identity (with no pods yet) and returns its id, the next one.
    pub(super) fn add_identity(&mut self, ns: &str, labels: Labels) -> IdentityId {
        let id = IdentityId(self.identities.len() as u32 + 1);
        self.namespaces
            .entry(ns.to_string())
            .or_insert_with(|| implied_namespace_labels(ns));
        self.by_namespace
            .entry(ns.to_string())
            .or_default()
            .push(id);
        self.identity_index
            .insert((ns.to_string(), labels.clone()), id);
        self.identities.push(Identity {
            namespace: ns.to_string(),
            labels,
            pods: 0,
        });
        id
    }

    /// Forgets identity `id` (no pod has it any more): it can no longer be found by its
    /// labels, and no selector lists it. Its id is not reused, so other ids stay valid.
    pub(super) fn retire_identity(&mut self, id: IdentityId) {
        let ident = self.identity_mut(id);
        let labels = std::mem::take(&mut ident.labels);
        let ns = std::mem::take(&mut ident.namespace);
        if let Some(ids) = self.by_namespace.get_mut(&ns) {
            ids.retain(|&i| i != id);
        }
        self.identity_index.remove(&(ns, labels));
        for m in &mut self.selectors.members {
            if let Ok(at) = m.binary_search(&id) {
                m.remove(at);
            }
        }
    }

    /// Whether identity `id` is in the set `key` describes.
    pub(super) fn key_matches(&self, key: &PeerKey, id: IdentityId) -> bool {
        let ident = self.identity(id);
        let ns_ok = match &key.scope {
            NsScope::Own(ns) => *ns == ident.namespace,
            NsScope::Matching(sel) => self
                .namespaces
                .get(&ident.namespace)
                .is_some_and(|l| sel.matches(l)),
        };
        ns_ok && key.pods.matches(&ident.labels)
    }

    /// Every identity `key` selects, sorted, looking only into the namespaces in scope.
    pub(super) fn evaluate(&self, key: &PeerKey) -> Vec<IdentityId> {
        let mut out = Vec::new();
        let mut scan = |ids: &[IdentityId]| {
            for &id in ids {
                if key.pods.matches(&self.identity(id).labels) {
                    out.push(id);
                }
            }
        };
        match &key.scope {
            NsScope::Own(ns) => {
                if let Some(ids) = self.by_namespace.get(ns) {
                    scan(ids);
                }
            }
            NsScope::Matching(sel) => {
                for (ns, ids) in &self.by_namespace {
                    if self.namespaces.get(ns).is_some_and(|l| sel.matches(l)) {
                        scan(ids);
                    }
                }
            }
        }
        // Namespaces iterate in name order and ids were given in (namespace, labels)
        // order, but ids added by updates come last: sort to keep binary search valid.
        out.sort_unstable();
        out
    }
}
