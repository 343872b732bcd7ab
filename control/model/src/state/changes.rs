//! Changes to a [`ClusterState`], one object at a time, and a cluster state that applies
//! them in place: what the Kubernetes source hands the incremental translator instead of
//! a whole snapshot per change.
//!
//! [`IndexedCluster`] keeps the plain `ClusterState` vectors (so every whole-state function
//! still reads them) plus a (kind, namespace, name) -> position index, so an upsert or a
//! delete costs O(1) whatever the cluster's size. Vector order is not meaningful: translate
//! sorts everything it reads.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{NetworkPolicy, ServiceCIDR};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ClusterState;
use crate::k8s::namespace_of;

/// The kinds kxdp reads, in [`ClusterState`] field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    NetworkPolicy,
    ServiceCIDR,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
        Kind::ServiceCIDR,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::ServiceCIDR => "ServiceCIDR",
        }
    }

    /// The apiVersion kxdp reads the kind at.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Node | Kind::Namespace | Kind::Pod | Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::NetworkPolicy | Kind::ServiceCIDR => "networking.k8s.io/v1",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::Namespace | Kind::ServiceCIDR)
    }

    /// Whether a cluster may lack the kind altogether: its API arrived after the oldest
    /// Kubernetes kxdp runs against (ServiceCIDR is GA in 1.33), so an API server that does
    /// not serve it is a cluster without such objects, not one still to be listed.
    pub fn optional(self) -> bool {
        matches!(self, Kind::ServiceCIDR)
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One object of a watched kind.
// Objects pass through once per change and are stored in their typed vectors, never as
// `Object`s in bulk: boxing would cost an allocation per change for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Object {
    Node(Node),
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
    ServiceCIDR(ServiceCIDR),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::ServiceCIDR(_) => Kind::ServiceCIDR,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Node(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::ServiceCIDR(o) => &o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(self.kind(), self.metadata())
    }
}

/// Which object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of(kind: Kind, meta: &ObjectMeta) -> ObjectKey {
        // An unset namespace is `default`, as translate reads it.
        let namespace = if kind.namespaced() {
            namespace_of(meta)
        } else {
            ""
        };
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// One change: the object as it is now, or gone.
#[allow(clippy::large_enum_variant)] // as for `Object`
#[derive(Debug, Clone)]
pub enum Change {
    Applied(Object),
    Deleted(ObjectKey),
}

impl Change {
    pub fn key(&self) -> ObjectKey {
        match self {
            Change::Applied(o) => o.key(),
            Change::Deleted(k) => k.clone(),
        }
    }
}

/// A [`ClusterState`] that takes [`Change`]s.
#[derive(Debug, Clone, Default)]
pub struct IndexedCluster {
    state: ClusterState,
    index: HashMap<ObjectKey, usize>,
}

impl IndexedCluster {
    /// Indexes `state`; a key listed twice keeps its first object (the loader's rule is
    /// to refuse duplicates, the API cannot produce them).
    pub fn new(state: ClusterState) -> IndexedCluster {
        let mut out = IndexedCluster::default();
        let ClusterState {
            nodes,
            namespaces,
            pods,
            services,
            endpoint_slices,
            network_policies,
            service_cidrs,
        } = state;
        let objects = nodes
            .into_iter()
            .map(Object::Node)
            .chain(namespaces.into_iter().map(Object::Namespace))
            .chain(pods.into_iter().map(Object::Pod))
            .chain(services.into_iter().map(Object::Service))
            .chain(endpoint_slices.into_iter().map(Object::EndpointSlice))
            .chain(network_policies.into_iter().map(Object::NetworkPolicy))
            .chain(service_cidrs.into_iter().map(Object::ServiceCIDR));
        for object in objects {
            if !out.index.contains_key(&object.key()) {
                out.upsert(object);
            }
        }
        out
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The object at `key`, if present.
    pub fn get(&self, key: &ObjectKey) -> Option<Object> {
        let &i = self.index.get(key)?;
        Some(match key.kind {
            Kind::Node => Object::Node(self.state.nodes[i].clone()),
            Kind::Namespace => Object::Namespace(self.state.namespaces[i].clone()),
            Kind::Pod => Object::Pod(self.state.pods[i].clone()),
            Kind::Service => Object::Service(self.state.services[i].clone()),
            Kind::EndpointSlice => Object::EndpointSlice(self.state.endpoint_slices[i].clone()),
            Kind::NetworkPolicy => Object::NetworkPolicy(self.state.network_policies[i].clone()),
            Kind::ServiceCIDR => Object::ServiceCIDR(self.state.service_cidrs[i].clone()),
        })
    }

    /// Position of `key` in its kind's vector.
    pub fn position(&self, key: &ObjectKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Applies `change`; returns the object it replaced or removed.
    pub fn apply(&mut self, change: Change) -> Option<Object> {
        match change {
            Change::Applied(object) => self.upsert(object),
            Change::Deleted(key) => self.remove(&key),
        }
    }

    fn upsert(&mut self, object: Object) -> Option<Object> {
        let key = object.key();
        let at = self.index.get(&key).copied();
        macro_rules! put {
            ($list:ident, $o:expr, $variant:ident) => {
                match at {
                    Some(i) => Some(Object::$variant(std::mem::replace(
                        &mut self.state.$list[i],
                        $o,
                    ))),
                    None => {
                        self.index.insert(key, self.state.$list.len());
                        self.state.$list.push($o);
                        None
                    }
                }
            };
        }
        match object {
            Object::Node(o) => put!(nodes, o, Node),
            Object::Namespace(o) => put!(namespaces, o, Namespace),
            Object::Pod(o) => put!(pods, o, Pod),
            Object::Service(o) => put!(services, o, Service),
            Object::EndpointSlice(o) => put!(endpoint_slices, o, EndpointSlice),
            Object::NetworkPolicy(o) => put!(network_policies, o, NetworkPolicy),
            Object::ServiceCIDR(o) => put!(service_cidrs, o, ServiceCIDR),
        }
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        let i = self.index.remove(key)?;
        macro_rules! take {
            ($list:ident, $variant:ident) => {{
                let removed = self.state.$list.swap_remove(i);
                // The last element moved into the hole: re-point its index entry.
                if let Some(moved) = self.state.$list.get(i) {
                    self.index
                        .insert(ObjectKey::of(Kind::$variant, &moved.metadata), i);
                }
                Some(Object::$variant(removed))
            }};
        }
        match key.kind {
            Kind::Node => take!(nodes, Node),
            Kind::Namespace => take!(namespaces, Namespace),
            Kind::Pod => take!(pods, Pod),
            Kind::Service => take!(services, Service),
            Kind::EndpointSlice => take!(endpoint_slices, EndpointSlice),
            Kind::NetworkPolicy => take!(network_policies, NetworkPolicy),
            Kind::ServiceCIDR => take!(service_cidrs, ServiceCIDR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, label: &str) -> Object {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([("v".to_string(), label.to_string())].into());
        Object::Pod(p)
    }

    fn label_of(o: &Object) -> String {
        o.metadata().labels.as_ref().unwrap()["v"].clone()
    }

    #[test]
    fn upsert_replace_and_delete_keep_the_index_right() {
        let mut c = IndexedCluster::default();
        for i in 0..5 {
            assert!(
                c.apply(Change::Applied(pod("a", &format!("p{i}"), "1")))
                    .is_none()
            );
        }
        let old = c.apply(Change::Applied(pod("a", "p2", "2"))).unwrap();
        assert_eq!(label_of(&old), "1");
        // Deleting from the middle moves the last pod into the hole.
        let key = |n: &str| pod("a", n, "").key();
        assert!(c.apply(Change::Deleted(key("p1"))).is_some());
        assert!(c.apply(Change::Deleted(key("p1"))).is_none(), "idempotent");
        assert_eq!(c.state().pods.len(), 4);
        for n in ["p0", "p2", "p3", "p4"] {
            let got = c.get(&key(n)).unwrap();
            assert_eq!(got.metadata().name.as_deref(), Some(n));
        }
        assert_eq!(label_of(&c.get(&key("p2")).unwrap()), "2");
        assert!(c.get(&key("p1")).is_none());
    }

    #[test]
    fn new_keeps_the_first_of_duplicates() {
        let mut state = ClusterState::default();
        for label in ["first", "second"] {
            let Object::Pod(p) = pod("a", "p", label) else {
                unreachable!()
            };
            state.pods.push(p);
        }
        let c = IndexedCluster::new(state);
        assert_eq!(c.state().pods.len(), 1);
        assert_eq!(label_of(&c.get(&pod("a", "p", "").key()).unwrap()), "first");
    }
}
