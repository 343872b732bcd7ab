//! LabelSelectors in canonical form, and the peer sets policies name, interned by content.

use std::collections::HashMap;

use datapath::policy::IdentityId;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Labels;

/// Why a LabelSelector cannot be used (the field path is relative to the selector).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SelectorError {
    #[error("matchExpressions[{index}]: operator {operator} needs values")]
    MissingValues { index: usize, operator: String },
    #[error("matchExpressions[{index}]: operator {operator} takes no values")]
    UnexpectedValues { index: usize, operator: String },
    #[error(
        "matchExpressions[{index}]: unknown operator {operator:?} (In, NotIn, Exists, DoesNotExist)"
    )]
    UnknownOperator { index: usize, operator: String },
}

/// One `matchLabels` entry or `matchExpressions` requirement. `matchLabels: {k: v}` is
/// `k In (v)`, so equal selectors written either way share a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Requirement {
    /// Values sorted and deduplicated.
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // Upstream: a label that is absent is "not in" any set.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed LabelSelector in canonical form: requirements sorted and deduplicated,
/// ANDed. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Selector(Vec<Requirement>);

impl Selector {
    pub(super) fn parse(sel: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for (index, e) in sel.match_expressions.iter().flatten().enumerate() {
            let mut values = e.values.clone().unwrap_or_default();
            values.sort();
            values.dedup();
            let key = e.key.clone();
            let operator = || e.operator.clone();
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::MissingValues {
                        index,
                        operator: operator(),
                    });
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::UnexpectedValues {
                        index,
                        operator: operator(),
                    });
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                _ => {
                    return Err(SelectorError::UnknownOperator {
                        index,
                        operator: operator(),
                    });
                }
            };
            reqs.push(req);
        }
        reqs.sort();
        reqs.dedup();
        Ok(Selector(reqs))
    }

    pub(super) fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// Which namespaces a peer selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum NsScope {
    /// Only this one (a bare podSelector: the policy's own namespace).
    Own(String),
    /// Every namespace whose labels match.
    Matching(Selector),
}

/// A set of pods by content: what a policy's podSelector or one peer item selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PeerKey {
    pub(super) scope: NsScope,
    pub(super) pods: Selector,
}

/// Interned peer selectors and the identities each matches (sorted ids). Indices are
/// stable for the compiler's lifetime: rules and policies refer to selectors by index.
#[derive(Debug, Default, Clone)]
pub(super) struct SelectorCache {
    pub(super) keys: Vec<PeerKey>,
    index: HashMap<PeerKey, usize>,
    pub(super) members: Vec<Vec<IdentityId>>,
}

impl SelectorCache {
    pub(super) fn intern(&mut self, key: PeerKey) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.keys.len();
        self.keys.push(key.clone());
        self.index.insert(key, i);
        self.members.push(Vec::new());
        i
    }
}
