//! Compiled NetworkPolicy: what the pipeline asks of a new flow, in constant time.
//!
//! Owns the compiled form only; `model::translate::policy` builds it from
//! networking.k8s.io/v1 NetworkPolicies. Pods are grouped into identities (Cilium's idea:
//! every pod with the same namespace, namespace labels and pod labels is the same peer to
//! every selector), so a selector compiles to a set of identities once, and each local
//! endpoint gets, per direction, a map peer identity -> allowed ports that is the union
//! of every rule of every policy selecting it. A lookup costs one hash probe per map,
//! whatever the number of policies. ipBlock rules stay a short list per endpoint.
//!
//! Shaped for tiers: a later AdminNetworkPolicy / BaselineAdminNetworkPolicy compiles to
//! more [`DirectionPolicy`]-like layers evaluated before and after this one
//! (Admin > NetworkPolicy > Baseline, Accept/Deny/Pass), keyed the same way.
//!
//! Must never: allocate or search policy objects on the packet path.

use foldhash::HashMap;

use crate::addr::{Cidr, IpKey};

/// A label-set identity: pods that no selector can tell apart. 0 is "not a pod" (the
/// world, or a node address); such peers match ipBlock rules only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IdentityId(pub u32);

impl IdentityId {
    pub const WORLD: IdentityId = IdentityId(0);
}

/// Which side of a pod a rule guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyDirection {
    Ingress,
    Egress,
}

impl PolicyDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyDirection::Ingress => "ingress",
            PolicyDirection::Egress => "egress",
        }
    }
}

/// The compiled policy of one table generation.
#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    /// Every pod address of the cluster -> its identity.
    pub identity_by_ip: HashMap<IpKey, IdentityId>,
    /// Named container ports by pod address, for egress rules that name the destination's
    /// port: (name, protocol, number).
    pub named_ports_by_ip: HashMap<IpKey, Vec<(String, u8, u16)>>,
    /// Per local pod (same index as `Tables::local_pods`).
    pub endpoints: Vec<EndpointPolicy>,
    /// `namespace/name` of every policy, indexed by the numbers in `selected_by`.
    pub policy_names: Vec<String>,
    /// Whether any endpoint is isolated, worked out on first use: the pipeline asks for
    /// every new flow, and the tables never change once published.
    any_isolated: std::sync::OnceLock<bool>,
}

/// A local pod's two directions; `None` = not isolated in that direction (allowed).
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    pub ingress: Option<DirectionPolicy>,
    pub egress: Option<DirectionPolicy>,
}

impl EndpointPolicy {
    pub fn direction(&self, d: PolicyDirection) -> Option<&DirectionPolicy> {
        match d {
            PolicyDirection::Ingress => self.ingress.as_ref(),
            PolicyDirection::Egress => self.egress.as_ref(),
        }
    }
}

/// Everything allowed in one direction of one isolated pod: the union of all rules of all
/// policies that select it for that direction. An empty one denies everything.
#[derive(Debug, Clone, Default)]
pub struct DirectionPolicy {
    /// Indices into `PolicyTables::policy_names` of the policies selecting the pod for this
    /// direction, sorted: the explanation of a drop.
    pub selected_by: Vec<u32>,
    /// Rules with no peer restriction (`from`/`to` empty or absent).
    pub any_peer: PortSet,
    /// Peer identity -> ports allowed with it.
    pub by_identity: HashMap<IdentityId, PortSet>,
    /// ipBlock rules (they match pod addresses too, as upstream's tests expect).
    pub cidrs: Vec<CidrRule>,
}

/// `ipBlock: {cidr, except}` and the ports of its rule.
#[derive(Debug, Clone)]
pub struct CidrRule {
    pub cidr: Cidr,
    pub except: Vec<Cidr>,
    pub ports: PortSet,
}

impl CidrRule {
    pub fn contains(&self, ip: IpKey) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// Ports a rule allows: all (no `ports` list), or protocol/port ranges, plus (egress)
/// port names resolved against the destination pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    pub all: bool,
    /// (protocol, first, last), sorted and merged; a protocol-only port is 1..=65535.
    pub ranges: Vec<(u8, u16, u16)>,
    /// (protocol, name): an egress rule naming the destination pod's container port.
    pub named: Vec<(u8, String)>,
}

impl PortSet {
    pub fn allow_all() -> PortSet {
        PortSet {
            all: true,
            ..PortSet::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.ranges.is_empty() && self.named.is_empty()
    }

    /// Adds `other` to this set (rules add up).
    pub fn union(&mut self, other: &PortSet) {
        self.all |= other.all;
        self.ranges.extend_from_slice(&other.ranges);
        self.named.extend(other.named.iter().cloned());
        self.normalize();
    }

    /// Sorts and merges ranges, dedups names.
    pub fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u8, u16, u16)> = Vec::with_capacity(self.ranges.len());
        for &(p, lo, hi) in &self.ranges {
            match merged.last_mut() {
                Some(last) if last.0 == p && u32::from(lo) <= u32::from(last.2) + 1 => {
                    last.2 = last.2.max(hi);
                }
                _ => merged.push((p, lo, hi)),
            }
        }
        self.ranges = merged;
        self.named.sort();
        self.named.dedup();
    }

    /// Whether the set admits `proto`/`port`; `named_port` resolves a (protocol, name)
    /// against the destination (None when it has no such port).
    pub fn allows(
        &self,
        proto: u8,
        port: u16,
        named_port: impl Fn(u8, &str) -> Option<u16>,
    ) -> bool {
        if self.all {
            return true;
        }
        let i = self
            .ranges
            .partition_point(|&(p, lo, _)| (p, lo) <= (proto, port));
        if i > 0 {
            let (p, _, hi) = self.ranges[i - 1];
            if p == proto && port <= hi {
                return true;
            }
        }
        self.named
            .iter()
            .any(|(p, name)| *p == proto && named_port(*p, name) == Some(port))
    }
}

/// A flow as policy sees it: the peer on the far side of the pod, and the destination port.
#[derive(Debug, Clone, Copy)]
pub struct PolicyQuery {
    pub peer: IpKey,
    /// The destination address (for resolving named ports of an egress rule).
    pub dst: IpKey,
    pub proto: u8,
    pub dst_port: u16,
}

impl PolicyTables {
    pub fn identity(&self, ip: IpKey) -> IdentityId {
        self.identity_by_ip
            .get(&ip)
            .copied()
            .unwrap_or(IdentityId::WORLD)
    }

    /// Does `dir` of local pod `endpoint` admit the flow? Not isolated = yes.
    pub fn allows(&self, endpoint: usize, dir: PolicyDirection, q: &PolicyQuery) -> bool {
        let Some(p) = self.endpoints.get(endpoint).and_then(|e| e.direction(dir)) else {
            return true;
        };
        let named = |proto: u8, name: &str| -> Option<u16> {
            self.named_ports_by_ip
                .get(&q.dst)?
                .iter()
                .find(|(n, pr, _)| *pr == proto && n == name)
                .map(|(_, _, port)| *port)
        };
        if p.any_peer.allows(q.proto, q.dst_port, named) {
            return true;
        }
        let id = self.identity(q.peer);
        if id != IdentityId::WORLD
            && p.by_identity
                .get(&id)
                .is_some_and(|ports| ports.allows(q.proto, q.dst_port, named))
        {
            return true;
        }
        p.cidrs
            .iter()
            .any(|r| r.contains(q.peer) && r.ports.allows(q.proto, q.dst_port, named))
    }

    /// The names of the policies selecting `endpoint` for `dir` (empty if not isolated).
    pub fn selecting(&self, endpoint: usize, dir: PolicyDirection) -> Vec<&str> {
        self.endpoints
            .get(endpoint)
            .and_then(|e| e.direction(dir))
            .map(|p| {
                p.selected_by
                    .iter()
                    .filter_map(|&i| self.policy_names.get(i as usize).map(String::as_str))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether any local pod is isolated in any direction (no policy: nothing to judge).
    pub fn any_isolation(&self) -> bool {
        *self.any_isolated.get_or_init(|| {
            self.endpoints
                .iter()
                .any(|e| e.ingress.is_some() || e.egress.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_merge_and_match() {
        let mut s = PortSet {
            ranges: vec![(6, 80, 80), (6, 81, 90), (17, 53, 53), (6, 100, 103)],
            ..PortSet::default()
        };
        s.normalize();
        assert_eq!(s.ranges, vec![(6, 80, 90), (6, 100, 103), (17, 53, 53)]);
        let none = |_: u8, _: &str| None;
        assert!(s.allows(6, 85, none));
        assert!(s.allows(6, 103, none));
        assert!(!s.allows(6, 99, none));
        assert!(!s.allows(17, 80, none));
        assert!(s.allows(17, 53, none));
        assert!(!s.allows(132, 53, none));
    }

    #[test]
    fn named_ports_resolve_against_the_destination() {
        let s = PortSet {
            named: vec![(6, "http".into())],
            ..PortSet::default()
        };
        assert!(s.allows(6, 8080, |_, n| (n == "http").then_some(8080)));
        assert!(!s.allows(6, 8081, |_, n| (n == "http").then_some(8080)));
        assert!(!s.allows(6, 8080, |_, _| None));
    }

    #[test]
    fn cidr_except_carves_out() {
        let r = CidrRule {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.1.0.0/16".parse().unwrap()],
            ports: PortSet::allow_all(),
        };
        assert!(r.contains(IpKey::v4([10, 2, 0, 1])));
        assert!(!r.contains(IpKey::v4([10, 1, 0, 1])));
        assert!(!r.contains(IpKey::v4([11, 0, 0, 1])));
    }
}
