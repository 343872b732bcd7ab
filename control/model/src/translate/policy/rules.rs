//! One NetworkPolicy's spec -> a [`CompiledPolicy`]: which pods it selects (a selector
//! index), which directions it covers, and its rules with their ports parsed. A rule that
//! cannot be used is skipped with a warning ([`RuleError`] says why); that only ever
//! denies more.

use datapath::Cidr;
use datapath::policy::{PolicyDirection, PortSet};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::PolicyCompiler;
use super::selector::{NsScope, PeerKey, Selector, SelectorError};
use crate::k8s::{ValueError, namespace_of, parse_cidr, port_number, protocol_number};

/// Why a rule is skipped. The message names the field, relative to the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RuleError {
    #[error("ports[{index}].{source}")]
    Port { index: usize, source: PortError },
    /// `field` is `from` (ingress) or `to` (egress).
    #[error("{field}[{index}]: {source}")]
    Peer {
        field: &'static str,
        index: usize,
        source: PeerError,
    },
}

/// What is wrong with one `ports` entry (the message starts with the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PortError {
    #[error("protocol: {0}")]
    Protocol(#[source] ValueError),
    #[error("port: {0}")]
    Port(#[source] ValueError),
    #[error("endPort: {0}")]
    EndPort(#[source] ValueError),
    #[error("endPort: needs a numeric port")]
    EndPortWithoutNumber,
    #[error("endPort: {last} is below port {first}")]
    EndPortBelowPort { first: u16, last: u16 },
}

/// What is wrong with one `from`/`to` item (the message starts with the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PeerError {
    #[error("podSelector: {0}")]
    PodSelector(#[source] SelectorError),
    #[error("namespaceSelector: {0}")]
    NamespaceSelector(#[source] SelectorError),
    #[error("ipBlock.cidr: {0}")]
    Cidr(String),
    #[error("ipBlock.except[{index}]: {reason}")]
    Except { index: usize, reason: String },
    #[error("ipBlock cannot be combined with podSelector or namespaceSelector")]
    BlockWithSelector,
    #[error("needs podSelector, namespaceSelector or ipBlock")]
    Empty,
}

/// A rule's ports. Ingress named ports stay apart: they resolve per selected pod.
#[derive(Debug, Clone, Default)]
pub(super) struct RulePorts {
    fixed: PortSet,
    /// (protocol, name) to resolve against the local pod's container ports (ingress).
    local_named: Vec<(u8, String)>,
}

impl RulePorts {
    pub(super) fn resolve(&self, container: &[(String, u8, u16)]) -> PortSet {
        if self.local_named.is_empty() {
            return self.fixed.clone();
        }
        let mut out = self.fixed.clone();
        for (proto, name) in &self.local_named {
            out.ranges.extend(
                container
                    .iter()
                    .filter(|(n, p, _)| p == proto && n == name)
                    .map(|&(_, p, port)| (p, port, port)),
            );
        }
        out.normalize();
        out
    }
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// `from`/`to` absent or empty.
    pub(super) any_peer: bool,
    /// Selector cache indices of the podSelector/namespaceSelector items.
    pub(super) peers: Vec<usize>,
    /// ipBlock items: (cidr, except).
    pub(super) blocks: Vec<(Cidr, Vec<Cidr>)>,
    pub(super) ports: RulePorts,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledPolicy {
    /// Selector cache index of the pods it applies to; `None` when its podSelector is
    /// unusable (it then selects nothing).
    pub(super) selects: Option<usize>,
    /// `None`: the policy does not cover that direction.
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

impl CompiledPolicy {
    pub(super) fn rules(&self, dir: PolicyDirection) -> Option<&[Rule]> {
        match dir {
            PolicyDirection::Ingress => self.ingress.as_deref(),
            PolicyDirection::Egress => self.egress.as_deref(),
        }
    }
}

impl PolicyCompiler {
    /// Compiles `np`, interning its selectors; `id` names it in warnings.
    pub(super) fn compile_policy(
        &mut self,
        np: &NetworkPolicy,
        id: &str,
        warnings: &mut Vec<String>,
    ) -> CompiledPolicy {
        let ns = namespace_of(&np.metadata);
        let default_spec = Default::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);

        let selects = match spec
            .pod_selector
            .as_ref()
            .map(Selector::parse)
            .unwrap_or(Ok(Selector::default()))
        {
            Ok(pods) => Some(self.selectors.intern(PeerKey {
                scope: NsScope::Own(ns.to_string()),
                pods,
            })),
            Err(e) => {
                warnings.push(format!(
                    "{id}: spec.podSelector: {e}: the policy selects no pod"
                ));
                None
            }
        };

        let (mut ingress_on, mut egress_on) = (false, false);
        match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ingress_on = true,
                        "Egress" => egress_on = true,
                        other => warnings.push(format!(
                            "{id}: spec.policyTypes[{i}]: {other:?} is not Ingress or Egress: ignored"
                        )),
                    }
                }
            }
            // The API server's default.
            _ => {
                ingress_on = true;
                egress_on = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
        }

        let ingress = ingress_on.then(|| {
            let rules = spec.ingress.iter().flatten();
            let rules = rules.map(|r| (r.from.as_deref(), r.ports.as_deref()));
            let at = |i| format!("{id}: spec.ingress[{i}]");
            self.compile_rules(ns, rules, PolicyDirection::Ingress, at, warnings)
        });
        let egress = egress_on.then(|| {
            let rules = spec.egress.iter().flatten();
            let rules = rules.map(|r| (r.to.as_deref(), r.ports.as_deref()));
            let at = |i| format!("{id}: spec.egress[{i}]");
            self.compile_rules(ns, rules, PolicyDirection::Egress, at, warnings)
        });
        CompiledPolicy {
            selects,
            ingress,
            egress,
        }
    }

    /// The rules of one direction, as (peers, ports), in order; a rule that fails is left
    /// out with a warning that starts with `at(its index)`.
    fn compile_rules<'a>(
        &mut self,
        ns: &str,
        rules: impl Iterator<
            Item = (
                Option<&'a [NetworkPolicyPeer]>,
                Option<&'a [NetworkPolicyPort]>,
            ),
        >,
        dir: PolicyDirection,
        at: impl Fn(usize) -> String,
        warnings: &mut Vec<String>,
    ) -> Vec<Rule> {
        let mut out = Vec::new();
        for (i, (peers, ports)) in rules.enumerate() {
            match self.compile_rule(ns, peers, ports, dir) {
                Ok(rule) => out.push(rule),
                Err(e) => warnings.push(format!("{}.{e}: rule skipped", at(i))),
            }
        }
        out
    }

    /// One rule. Its ports are checked first, then its peers in order; the first problem
    /// is the error.
    fn compile_rule(
        &mut self,
        ns: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        dir: PolicyDirection,
    ) -> Result<Rule, RuleError> {
        let field = match dir {
            PolicyDirection::Ingress => "from",
            PolicyDirection::Egress => "to",
        };
        let peers = peers.unwrap_or_default();
        let mut rule = Rule {
            any_peer: peers.is_empty(),
            peers: Vec::new(),
            blocks: Vec::new(),
            ports: compile_ports(ports.unwrap_or_default(), dir)?,
        };
        // Parse everything before interning, so a rule that fails leaves no selector behind.
        let mut keys = Vec::new();
        for (index, peer) in peers.iter().enumerate() {
            let at = |source| RuleError::Peer {
                field,
                index,
                source,
            };
            match parse_peer(ns, peer).map_err(at)? {
                Peer::Block(cidr, except) => rule.blocks.push((cidr, except)),
                Peer::Pods(key) => keys.push(key),
            }
        }
        rule.peers = keys.into_iter().map(|k| self.selectors.intern(k)).collect();
        rule.peers.sort_unstable();
        rule.peers.dedup();
        Ok(rule)
    }
}

/// One `from`/`to` item, parsed.
enum Peer {
    Block(Cidr, Vec<Cidr>),
    Pods(PeerKey),
}

/// One `from`/`to` item of a policy in namespace `ns`.
fn parse_peer(ns: &str, peer: &NetworkPolicyPeer) -> Result<Peer, PeerError> {
    let pod_sel = peer
        .pod_selector
        .as_ref()
        .map(Selector::parse)
        .transpose()
        .map_err(PeerError::PodSelector)?;
    let ns_sel = peer
        .namespace_selector
        .as_ref()
        .map(Selector::parse)
        .transpose()
        .map_err(PeerError::NamespaceSelector)?;
    match (&peer.ip_block, pod_sel, ns_sel) {
        (Some(block), None, None) => {
            let cidr = parse_cidr(&block.cidr).map_err(|e| PeerError::Cidr(e.to_string()))?;
            let mut except = Vec::new();
            for (index, e) in block.except.iter().flatten().enumerate() {
                except.push(parse_cidr(e).map_err(|e| PeerError::Except {
                    index,
                    reason: e.to_string(),
                })?);
            }
            Ok(Peer::Block(cidr, except))
        }
        (Some(_), _, _) => Err(PeerError::BlockWithSelector),
        (None, None, None) => Err(PeerError::Empty),
        (None, Some(pods), None) => Ok(Peer::Pods(PeerKey {
            scope: NsScope::Own(ns.to_string()),
            pods,
        })),
        (None, pods, Some(nss)) => Ok(Peer::Pods(PeerKey {
            scope: NsScope::Matching(nss),
            pods: pods.unwrap_or_default(),
        })),
    }
}

/// A rule's `ports`. Absent or empty: everything.
fn compile_ports(
    ports: &[NetworkPolicyPort],
    dir: PolicyDirection,
) -> Result<RulePorts, RuleError> {
    if ports.is_empty() {
        return Ok(RulePorts {
            fixed: PortSet::allow_all(),
            local_named: Vec::new(),
        });
    }
    let mut out = RulePorts::default();
    for (index, p) in ports.iter().enumerate() {
        let at = |source| RuleError::Port { index, source };
        let proto =
            protocol_number(p.protocol.as_deref()).map_err(|e| at(PortError::Protocol(e)))?;
        match &p.port {
            None => {
                if p.end_port.is_some() {
                    return Err(at(PortError::EndPortWithoutNumber));
                }
                out.fixed.ranges.push((proto, 1, u16::MAX));
            }
            Some(IntOrString::Int(n)) => {
                let first = port_number(*n).map_err(|e| at(PortError::Port(e)))?;
                let last = match p.end_port {
                    Some(e) => port_number(e).map_err(|e| at(PortError::EndPort(e)))?,
                    None => first,
                };
                if last < first {
                    return Err(at(PortError::EndPortBelowPort { first, last }));
                }
                out.fixed.ranges.push((proto, first, last));
            }
            Some(IntOrString::String(name)) => {
                if p.end_port.is_some() {
                    return Err(at(PortError::EndPortWithoutNumber));
                }
                match dir {
                    PolicyDirection::Ingress => out.local_named.push((proto, name.clone())),
                    PolicyDirection::Egress => out.fixed.named.push((proto, name.clone())),
                }
            }
        }
    }
    out.fixed.normalize();
    out.local_named.sort();
    out.local_named.dedup();
    Ok(out)
}
