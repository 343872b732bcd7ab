//! The assembled service table: every Service's ports in slots (the `ServiceId`s), and the
//! frontend map, kept up to date one Service at a time.
//!
//! A frontend (address, port, protocol) claimed by two Services belongs to the first by
//! (namespace, name, port order), whatever order they were added in, exactly as a build from
//! scratch decides; the others are reported. A Service whose ports and frontends keep their
//! shape (the common case: its endpoints changed) keeps its slots, so the frontend map is
//! shared with the previous generation untouched and the new generation copies pointers.
//!
//! Slots of removed Services are reused; a free slot holds a placeholder port no frontend
//! points at. Flows name their Service by frontend, not by slot, so reuse is invisible to them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use datapath::tables::{Frontend, FrontendKind, ServiceId, ServiceKey, ServicePort};

use super::services::{HealthCheckService, PortBuild, ServiceBuild, empty_set};

/// (namespace, name)
pub(crate) type ServiceName = (String, String);

/// A claim on a frontend: (service, index of its port), ordered as a full build orders them.
type Claimant = (ServiceName, usize);

#[derive(Debug, Clone)]
struct Entry {
    build: ServiceBuild,
    /// One slot per port of `build`.
    slots: Vec<u32>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceSet {
    services: BTreeMap<ServiceName, Entry>,
    slots: Vec<Arc<ServicePort>>,
    free: BTreeSet<u32>,
    frontends: Arc<datapath::foldhash_map::HashMap<ServiceKey, Frontend>>,
    claims: HashMap<ServiceKey, BTreeMap<Claimant, (u32, FrontendKind)>>,
    /// Frontends with more than one claimant, for the warnings.
    contested: BTreeSet<ServiceKey>,
}

pub(super) static FREE_SLOT: LazyLock<Arc<ServicePort>> = LazyLock::new(|| {
    Arc::new(ServicePort {
        name: String::new(),
        stable_id: 0,
        backends: Vec::new(),
        cluster: empty_set(),
        local: empty_set(),
        external_local: false,
        internal_local: false,
        affinity_timeout_ns: None,
        lb_source_ranges: Vec::new(),
    })
});

impl ServiceSet {
    /// The last build of Service `name`, for reusing its Maglev tables.
    pub fn build_of(&self, name: &ServiceName) -> Option<&ServiceBuild> {
        self.services.get(name).map(|e| &e.build)
    }

    /// Sets (adds or replaces) Service `name`'s build.
    pub fn set(&mut self, name: ServiceName, build: ServiceBuild) {
        if let Some(entry) = self.services.get_mut(&name)
            && same_shape(&entry.build, &build)
        {
            for (slot, port) in entry.slots.iter().zip(&build.ports) {
                self.slots[*slot as usize] = Arc::clone(&port.port);
            }
            entry.build = build;
            return;
        }
        self.remove(&name);
        let slots: Vec<u32> = build.ports.iter().map(|p| self.take_slot(p)).collect();
        let mut touched = BTreeSet::new();
        for (i, (port, &slot)) in build.ports.iter().zip(&slots).enumerate() {
            for &(key, kind) in &port.frontends {
                self.claims
                    .entry(key)
                    .or_default()
                    .entry((name.clone(), i))
                    // A port listing one key twice (a node IP that is also an external
                    // IP) keeps the first kind, as a full build does.
                    .or_insert((slot, kind));
                touched.insert(key);
            }
        }
        self.services.insert(name, Entry { build, slots });
        self.settle(touched);
    }

    /// Removes Service `name` (nothing if absent).
    pub fn remove(&mut self, name: &ServiceName) {
        let Some(entry) = self.services.remove(name) else {
            return;
        };
        let mut touched = BTreeSet::new();
        for (i, port) in entry.build.ports.iter().enumerate() {
            for (key, _) in &port.frontends {
                if let Some(claims) = self.claims.get_mut(key) {
                    claims.remove(&(name.clone(), i));
                    if claims.is_empty() {
                        self.claims.remove(key);
                    }
                }
                touched.insert(*key);
            }
        }
        for slot in entry.slots {
            self.slots[slot as usize] = Arc::clone(&FREE_SLOT);
            self.free.insert(slot);
        }
        self.settle(touched);
    }

    fn take_slot(&mut self, port: &PortBuild) -> u32 {
        match self.free.pop_first() {
            Some(slot) => {
                self.slots[slot as usize] = Arc::clone(&port.port);
                slot
            }
            None => {
                self.slots.push(Arc::clone(&port.port));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Points each of `keys` at its first claimant, or removes it when none is left.
    fn settle(&mut self, keys: BTreeSet<ServiceKey>) {
        if keys.is_empty() {
            return;
        }
        let frontends = Arc::make_mut(&mut self.frontends);
        for key in keys {
            match self.claims.get(&key) {
                Some(claims) => {
                    let (_, &(slot, kind)) = claims.first_key_value().expect("never empty");
                    frontends.insert(
                        key,
                        Frontend {
                            service: ServiceId(slot),
                            kind,
                        },
                    );
                    if claims.len() > 1 {
                        self.contested.insert(key);
                    } else {
                        self.contested.remove(&key);
                    }
                }
                None => {
                    frontends.remove(&key);
                    self.contested.remove(&key);
                }
            }
        }
    }

    /// The ports, indexed by `ServiceId`.
    pub fn ports(&self) -> Vec<Arc<ServicePort>> {
        self.slots.clone()
    }

    pub fn frontends(&self) -> Arc<datapath::foldhash_map::HashMap<ServiceKey, Frontend>> {
        Arc::clone(&self.frontends)
    }

    /// Every Service's own warnings in (namespace, name) order, then one line per frontend
    /// claimed by a Service that does not get it.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .values()
            .flat_map(|e| e.build.warnings.iter().cloned())
            .collect();
        for key in &self.contested {
            let Some(claims) = self.claims.get(key) else {
                continue;
            };
            let mut iter = claims.keys();
            let Some((winner, port)) = iter.next() else {
                continue;
            };
            let first = self.port_name(winner, *port);
            for ((ns, name), _) in iter {
                out.push(format!(
                    "Service {ns}/{name}: {} port {} proto {} already belongs to {first}: skipped",
                    key.vip, key.port, key.proto
                ));
            }
        }
        out
    }

    /// The health checks this node answers, in (namespace, name) order.
    pub fn health_checks(&self) -> Vec<HealthCheckService> {
        self.services
            .values()
            .filter_map(|e| e.build.health_check.clone())
            .collect()
    }

    fn port_name(&self, service: &ServiceName, port: usize) -> String {
        self.services
            .get(service)
            .and_then(|e| e.build.ports.get(port))
            .map_or_else(String::new, |p| p.port.name.clone())
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }
}

/// Same number of ports, each with the same frontends: only the ports' contents differ.
fn same_shape(a: &ServiceBuild, b: &ServiceBuild) -> bool {
    a.ports.len() == b.ports.len()
        && a.ports
            .iter()
            .zip(&b.ports)
            .all(|(x, y)| x.frontends == y.frontends)
}
