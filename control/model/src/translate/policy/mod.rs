//! networking.k8s.io/v1 NetworkPolicies -> this node's [`PolicyTables`].
//!
//! Follows upstream semantics (ARCHITECTURE.md §3):
//! - A policy selects pods of its own namespace by `spec.podSelector` (absent or empty = all).
//!   A pod is isolated in a direction only when some policy selects it for that direction;
//!   what it then admits is the union of the rules of all those policies, and an isolated
//!   pod no rule admits a peer for denies it.
//! - `policyTypes` unset (or empty) defaults as the API server does: Ingress always, Egress
//!   when the policy has at least one egress rule (`len(spec.egress) != 0` upstream, so
//!   `egress: []` alone does not isolate egress).
//! - A rule without peers (`from`/`to` absent or empty) admits any peer; peer items are
//!   ORed; inside one item `podSelector` and `namespaceSelector` are ANDed; a bare
//!   `podSelector` means the policy's own namespace; `ipBlock` is a CIDR minus `except`.
//! - A rule without ports admits every port and protocol; a port entry without `port` is
//!   protocol-only; `endPort` makes a range; a named port in an ingress rule is resolved
//!   against the selected (local, server) pod's container ports here, and in an egress rule
//!   kept by name, since it is the destination pod's port and only the packet says which
//!   pod that is.
//!
//! Why identities: pods with equal (namespace, namespace labels, pod labels) are
//! indistinguishable to every selector, so each distinct peer selector is evaluated once
//! against the identity list (namespace by namespace, so a same-namespace selector never
//! looks at other namespaces' pods), cached by its content, and every endpoint's map is
//! keyed by identity. Local pods sharing an identity and container ports (replicas) share
//! one compiled [`EndpointPolicy`].
//!
//! [`PolicyCompiler`] keeps that state so that one pod's label change can be applied to
//! the published tables without recompiling ([`PolicyCompiler::update_pod`]): the pod's new
//! identity is evaluated against the cached selectors, and only endpoints that name it
//! gain an entry; a local pod's own endpoint is rebuilt.
//!
//! Anything malformed (unknown selector operator, bad port, bad CIDR, ...) skips the rule
//! (or, for a bad `podSelector`, the policy) with a warning. Skipping a rule only ever
//! denies more; a policy whose selection cannot be known selects nothing, which is what
//! the API server (that would have refused it) leaves running as well.
//!
//! Pure and deterministic: every input is sorted by its key before use, identity ids are
//! given in the sorted order of (namespace, pod labels), and policies are indexed in
//! `namespace/name` order.
//!
//! The code follows the steps: `selector` parses LabelSelectors and interns the peer
//! sets policies name; `identity` turns pods into identities and evaluates those sets
//! against them; `rules` parses one policy's spec into rules; `compile` puts it all
//! together into per-endpoint maps; `update` applies one pod's label change to published
//! tables; `dump` renders tables for comparison.

mod compile;
mod dump;
mod identity;
mod rules;
mod selector;
mod update;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use datapath::policy::{IdentityId, PolicyTables};
use datapath::tables::LocalPod;

use crate::state::ClusterState;
use identity::{Identity, LocalEndpoint, PodRecord};
use rules::CompiledPolicy;
use selector::SelectorCache;

pub use dump::canonical_dump;
pub use update::{NeedsFullCompile, PodUpdate};

type Labels = BTreeMap<String, String>;
/// A pod's named container ports: (name, protocol, number), sorted.
type NamedPorts = Vec<(String, u8, u16)>;

/// Compiles the policy of `local_pods` (in `Tables::local_pods` order) from scratch.
pub fn build(
    cluster: &ClusterState,
    local_pods: &[LocalPod],
    warnings: &mut Vec<String>,
) -> PolicyTables {
    PolicyCompiler::default().compile(cluster, local_pods, warnings)
}

/// The compiled state behind a [`PolicyTables`]: identities, the selector cache with each
/// selector's identities, the compiled policies and the local endpoints. Keep it next to
/// the tables it produced to apply pod label changes with [`PolicyCompiler::update_pod`].
///
/// Defined here, with its fields private to this module, so that every step (each a
/// submodule) reads and writes the same state without exposing it outside.
#[derive(Debug, Clone, Default)]
pub struct PolicyCompiler {
    /// Namespace -> labels (with the implied `kubernetes.io/metadata.name`).
    namespaces: BTreeMap<String, Labels>,
    /// `IdentityId(n)` is `identities[n - 1]`.
    identities: Vec<Identity>,
    identity_index: HashMap<(String, Labels), IdentityId>,
    /// Namespace -> its identities, for evaluating selectors namespace by namespace.
    by_namespace: BTreeMap<String, Vec<IdentityId>>,
    pods: BTreeMap<(String, String), PodRecord>,
    selectors: SelectorCache,
    /// Indexed like `PolicyTables::policy_names`.
    policies: Vec<CompiledPolicy>,
    /// Indexed like `Tables::local_pods`; `None` for a local pod without a Pod object.
    local: Vec<Option<LocalEndpoint>>,
}
