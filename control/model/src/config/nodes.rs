//! `uplink:` and `nodes:`: the uplink interface, and per-node overrides for clusters whose
//! nodes differ (another NIC name, jumbo frames on some of them).
//!
//! ```yaml
//! uplink: eth0
//! nodes:
//!   - name: node-7                        # one node, by name
//!     uplink: enp65s0f1
//!   - matchLabels: {kxdp.io/nic: mlx5}    # every node with all of these labels
//!     uplink: enp1s0f0np0
//!     underlayMTU: 9000
//! ```
//!
//! A node takes the first entry that matches it, in file order, so an entry that could only
//! ever apply to nodes an earlier one already takes is refused as a mistake.

use std::collections::BTreeMap;

use datapath::Cidr;
use serde::Deserialize;

use super::{AgentConfig, ConfigError, invalid, underlay_mtu};

/// One `nodes:` entry: which nodes it applies to, and what it sets for them. At least one
/// setting is present; one left out falls back to the top-level key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOverride {
    pub selector: NodeSelector,
    /// The uplink interface on these nodes.
    pub uplink: Option<String>,
    /// Their underlay MTU, within the same range as the top-level `underlayMTU`.
    pub underlay_mtu: Option<u16>,
}

/// Which nodes a `nodes:` entry applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelector {
    /// `name: NODE`: the node of that name.
    Name(String),
    /// `matchLabels: {KEY: VALUE, ...}`: every node carrying all of these labels with these
    /// values (other labels do not matter). Never empty. A label written without a value
    /// (`node-role.kubernetes.io/worker:`) stands for the empty value, as such labels have,
    /// and a value YAML would read as a number or boolean (`gpu: true`) is taken as written.
    MatchLabels(BTreeMap<String, String>),
}

impl NodeSelector {
    /// Whether the node `name` with `labels` is one this selects.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            NodeSelector::Name(n) => n == name,
            NodeSelector::MatchLabels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }

    /// Whether every node this selects is also selected by `earlier`: the same name, or a
    /// subset of these labels.
    fn covered_by(&self, earlier: &NodeSelector) -> bool {
        match (self, earlier) {
            (NodeSelector::Name(n), NodeSelector::Name(e)) => n == e,
            (NodeSelector::MatchLabels(l), NodeSelector::MatchLabels(e)) => {
                e.iter().all(|(k, v)| l.get(k) == Some(v))
            }
            _ => false,
        }
    }
}

impl AgentConfig {
    /// kxdp.yaml as it applies to node `name` with `labels`: the first `nodes` entry that
    /// matches (in file order) overrides `uplink` and `underlayMTU` (an override of
    /// underlayMTU counts as explicit: `underlay_mtu_explicit` becomes true, so the
    /// uplink's own MTU no longer replaces it). A setting the entry leaves out keeps the
    /// top-level value, and a node no entry matches gets the top-level values unchanged.
    ///
    /// First match wins, so when a `name` entry and a `matchLabels` entry could both match
    /// a node, put the `name` entry first. `nodes` itself is kept as it is.
    pub fn for_node(&self, name: &str, labels: &BTreeMap<String, String>) -> AgentConfig {
        let mut config = self.clone();
        if let Some(i) = self.node_override_index(name, labels) {
            let entry = &self.nodes[i];
            if let Some(uplink) = &entry.uplink {
                config.uplink = Some(uplink.clone());
            }
            if let Some(mtu) = entry.underlay_mtu {
                config.underlay_mtu = mtu;
                config.underlay_mtu_explicit = true;
            }
        }
        config
    }

    /// Which entry that was (its index), for messages like `uplink from kxdp.yaml nodes[2]`:
    /// the first entry of `nodes` that matches node `name` with `labels`, in file order
    /// (name entries belong before label entries that could match the same node).
    pub fn node_override_index(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<usize> {
        self.nodes
            .iter()
            .position(|entry| entry.selector.matches(name, labels))
    }
}

/// A `nodes:` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    name: Option<String>,
    #[serde(rename = "matchLabels")]
    match_labels: Option<BTreeMap<String, Option<String>>>,
    uplink: Option<String>,
    #[serde(rename = "underlayMTU")]
    underlay_mtu: Option<u64>,
}

/// Validates the `nodes:` entries; `cluster_cidrs` decides the smallest `underlayMTU`.
pub(super) fn node_overrides(
    raw: Vec<RawNode>,
    cluster_cidrs: &[Cidr],
) -> Result<Vec<NodeOverride>, ConfigError> {
    let mut out: Vec<NodeOverride> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let at = format!("nodes[{i}]");
        let selector = match (entry.name, entry.match_labels) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &at,
                    "has both name and matchLabels; an entry selects nodes by one of them".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    &at,
                    "selects no nodes: give it name or matchLabels".into(),
                ));
            }
            (Some(name), None) if name.is_empty() => {
                return Err(invalid(&format!("{at}.name"), "must not be empty".into()));
            }
            (Some(name), None) => NodeSelector::Name(name),
            (None, Some(labels)) if labels.is_empty() => {
                return Err(invalid(
                    &format!("{at}.matchLabels"),
                    "empty, which would match every node; set the top-level keys instead".into(),
                ));
            }
            (None, Some(labels)) => NodeSelector::MatchLabels(
                labels
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect(),
            ),
        };
        if entry.uplink.is_none() && entry.underlay_mtu.is_none() {
            return Err(invalid(
                &at,
                "sets nothing: give it uplink, underlayMTU or both".into(),
            ));
        }
        let uplink = entry
            .uplink
            .map(|u| interface_name(&format!("{at}.uplink"), u))
            .transpose()?;
        let underlay_mtu = entry
            .underlay_mtu
            .map(|m| underlay_mtu(&format!("{at}.underlayMTU"), m, cluster_cidrs))
            .transpose()?;
        if let Some(j) = out.iter().position(|e| selector.covered_by(&e.selector)) {
            let why = match &selector {
                NodeSelector::Name(name) => format!("node {name:?} takes nodes[{j}] already"),
                NodeSelector::MatchLabels(_) => format!(
                    "every node it selects takes nodes[{j}] already (its labels include \
                     all of nodes[{j}]'s; put the narrower entry first)"
                ),
            };
            return Err(invalid(
                &at,
                format!("never applies: {why}: a node takes the first entry that matches it"),
            ));
        }
        out.push(NodeOverride {
            selector,
            uplink,
            underlay_mtu,
        });
    }
    Ok(out)
}

/// The kernel's rule for interface names (`dev_valid_name`): 1 to 15 bytes (IFNAMSIZ less
/// the NUL), not `.` or `..`, and no `/`, `:`, NUL or whitespace as the kernel's `isspace`
/// has it (which counts 0xA0 too).
pub(super) fn interface_name(field: &str, name: String) -> Result<String, ConfigError> {
    let why = if name.is_empty() {
        Some("empty".to_string())
    } else if name.len() > MAX_INTERFACE_NAME {
        Some(format!(
            "{} bytes, longer than the kernel's {MAX_INTERFACE_NAME}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not interface names".to_string())
    } else {
        name.bytes()
            .find(|&b| matches!(b, b'/' | b':' | 0 | b'\t'..=b'\r' | b' ' | 0xa0))
            .map(|b| match b {
                b'/' | b':' => format!("holds {:?}", b as char),
                0 => "holds a NUL".to_string(),
                _ => "holds whitespace".to_string(),
            })
    };
    match why {
        Some(why) => Err(invalid(
            field,
            format!("{name:?} is not an interface name: {why}"),
        )),
        None => Ok(name),
    }
}

/// Longest interface name: IFNAMSIZ (16) less the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_UNDERLAY_MTU, MIN_UNDERLAY_MTU_IPV6};

    fn err(text: &str) -> String {
        AgentConfig::from_yaml(text).unwrap_err().to_string()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const EXAMPLE: &str = "\
uplink: eth0
underlayMTU: 1500
nodes:
  - name: node-7
    uplink: enp65s0f1
  - matchLabels:
      kxdp.io/nic: mlx5
      topology.kubernetes.io/zone: a
    uplink: enp1s0f0np0
    underlayMTU: 9000
  - matchLabels: {kxdp.io/nic: mlx5}
    underlayMTU: 4000
  - matchLabels:
      node-role.kubernetes.io/gpu:
    uplink: ib0
";

    #[test]
    fn a_full_example_parses() {
        let c = AgentConfig::from_yaml(EXAMPLE).unwrap();
        assert_eq!(c.uplink.as_deref(), Some("eth0"));
        assert_eq!(
            c.nodes,
            [
                NodeOverride {
                    selector: NodeSelector::Name("node-7".into()),
                    uplink: Some("enp65s0f1".into()),
                    underlay_mtu: None,
                },
                NodeOverride {
                    selector: NodeSelector::MatchLabels(labels(&[
                        ("kxdp.io/nic", "mlx5"),
                        ("topology.kubernetes.io/zone", "a"),
                    ])),
                    uplink: Some("enp1s0f0np0".into()),
                    underlay_mtu: Some(9000),
                },
                NodeOverride {
                    selector: NodeSelector::MatchLabels(labels(&[("kxdp.io/nic", "mlx5")])),
                    uplink: None,
                    underlay_mtu: Some(4000),
                },
                NodeOverride {
                    // A label written without a value is the empty value.
                    selector: NodeSelector::MatchLabels(labels(&[(
                        "node-role.kubernetes.io/gpu",
                        ""
                    )])),
                    uplink: Some("ib0".into()),
                    underlay_mtu: None,
                },
            ]
        );
        // The other keys are untouched by the new ones.
        assert_eq!(
            AgentConfig {
                uplink: None,
                nodes: vec![],
                ..c
            },
            AgentConfig::from_yaml("underlayMTU: 1500").unwrap()
        );
    }

    #[test]
    fn without_the_new_keys_nothing_changes() {
        let d = AgentConfig::default();
        assert_eq!(d.uplink, None);
        assert!(d.nodes.is_empty());
        assert_eq!(AgentConfig::from_yaml("nodes: []").unwrap(), d);
        assert_eq!(AgentConfig::from_yaml("nodes:").unwrap(), d);
        let none = labels(&[]);
        assert_eq!(d.for_node("node-a", &none), d);
        assert_eq!(d.node_override_index("node-a", &none), None);
    }

    #[test]
    fn the_first_matching_entry_wins() {
        let c = AgentConfig::from_yaml(EXAMPLE).unwrap();
        let mlx_a = labels(&[
            ("kxdp.io/nic", "mlx5"),
            ("topology.kubernetes.io/zone", "a"),
            ("kubernetes.io/hostname", "node-7"),
        ]);
        // node-7 has the labels of nodes[1] too, but its name entry comes first.
        assert_eq!(c.node_override_index("node-7", &mlx_a), Some(0));
        let n = c.for_node("node-7", &mlx_a);
        assert_eq!(n.uplink.as_deref(), Some("enp65s0f1"));
        // nodes[0] sets no MTU: the top-level one stays, as explicit as it was.
        assert_eq!((n.underlay_mtu, n.underlay_mtu_explicit), (1500, true));
        assert_eq!(n.nodes, c.nodes);

        // Another node with those labels: nodes[1], not the broader nodes[2] after it.
        assert_eq!(c.node_override_index("node-3", &mlx_a), Some(1));
        let n = c.for_node("node-3", &mlx_a);
        assert_eq!(n.uplink.as_deref(), Some("enp1s0f0np0"));
        assert_eq!(n.underlay_mtu, 9000);

        // Only some of nodes[1]'s labels: nodes[2], which keeps the top-level uplink.
        let mlx_b = labels(&[
            ("kxdp.io/nic", "mlx5"),
            ("topology.kubernetes.io/zone", "b"),
        ]);
        assert_eq!(c.node_override_index("node-4", &mlx_b), Some(2));
        let n = c.for_node("node-4", &mlx_b);
        assert_eq!(n.uplink.as_deref(), Some("eth0"));
        assert_eq!(n.underlay_mtu, 4000);

        // A label with the empty value, among others.
        let gpu = labels(&[("node-role.kubernetes.io/gpu", ""), ("kxdp.io/nic", "ice")]);
        assert_eq!(c.node_override_index("node-5", &gpu), Some(3));
        assert_eq!(c.for_node("node-5", &gpu).uplink.as_deref(), Some("ib0"));
    }

    #[test]
    fn label_entries_need_every_label_with_its_value() {
        let c =
            AgentConfig::from_yaml("nodes:\n  - matchLabels: {a: '1', b: '2'}\n    uplink: eth1\n")
                .unwrap();
        let at = |pairs: &[(&str, &str)]| c.node_override_index("n", &labels(pairs));
        assert_eq!(at(&[("a", "1"), ("b", "2")]), Some(0));
        assert_eq!(at(&[("a", "1"), ("b", "2"), ("c", "3")]), Some(0));
        assert_eq!(at(&[("a", "1")]), None);
        assert_eq!(at(&[("a", "1"), ("b", "3")]), None);
        assert_eq!(at(&[("a", "1"), ("b", "")]), None);
        assert_eq!(at(&[]), None);
        // Label values are text, whatever YAML would make of them.
        let c = AgentConfig::from_yaml("nodes: [{matchLabels: {zone: 1, gpu: true}, uplink: e}]")
            .unwrap();
        let want = labels(&[("zone", "1"), ("gpu", "true")]);
        assert_eq!(c.nodes[0].selector, NodeSelector::MatchLabels(want));
    }

    #[test]
    fn a_node_matching_nothing_gets_the_top_level_values() {
        let c = AgentConfig::from_yaml(EXAMPLE).unwrap();
        let other = labels(&[("kxdp.io/nic", "ice")]);
        assert_eq!(c.node_override_index("node-9", &other), None);
        assert_eq!(c.for_node("node-9", &other), c);
        // With neither top-level key set, neither is set for it.
        let c = AgentConfig::from_yaml("nodes: [{name: a, uplink: eth1}]").unwrap();
        let n = c.for_node("b", &other);
        assert_eq!(n.uplink, None);
        assert_eq!(
            (n.underlay_mtu, n.underlay_mtu_explicit),
            (DEFAULT_UNDERLAY_MTU, false)
        );
    }

    #[test]
    fn an_mtu_override_is_explicit() {
        let c = AgentConfig::from_yaml("nodes: [{name: a, underlayMTU: 9000}]").unwrap();
        assert!(!c.underlay_mtu_explicit);
        let none = labels(&[]);
        let a = c.for_node("a", &none);
        assert_eq!((a.underlay_mtu, a.underlay_mtu_explicit), (9000, true));
        assert_eq!(a.uplink, None);
        // So the uplink's MTU no longer replaces it...
        assert_eq!(a.with_uplink_mtu(1500).unwrap().underlay_mtu, 9000);
        // ...as it still does on a node without the override.
        let b = c.for_node("b", &none);
        assert_eq!(b.with_uplink_mtu(1450).unwrap().underlay_mtu, 1450);
    }

    #[test]
    fn the_ipv6_minimum_applies_to_entries() {
        let v6 = "clusterCIDR: 10.0.0.0/16,fd00::/64\n";
        let e = err(&format!("{v6}nodes:\n  - {{name: a, underlayMTU: 1300}}\n"));
        assert!(
            e.starts_with("nodes[0].underlayMTU: 1300 is out of range (1330..=65535)"),
            "{e}"
        );
        assert!(e.contains("clusterCIDR has IPv6"), "{e}");
        let ok = format!("{v6}nodes: [{{name: a, underlayMTU: {MIN_UNDERLAY_MTU_IPV6}}}]");
        assert!(AgentConfig::from_yaml(&ok).is_ok());
        // Without IPv6, the IPv4 minimum.
        assert!(AgentConfig::from_yaml("nodes: [{name: a, underlayMTU: 1300}]").is_ok());
        let e = err("nodes: [{name: a, underlayMTU: 575}]");
        assert!(
            e.starts_with("nodes[0].underlayMTU: 575 is out of range (576..=65535)"),
            "{e}"
        );
        let e = err("nodes: [{name: a, uplink: x}, {name: b, underlayMTU: 65536}]");
        assert!(e.starts_with("nodes[1].underlayMTU: "), "{e}");
    }

    #[test]
    fn errors_name_the_entry() {
        let ok = "nodes:\n  - {name: a, uplink: eth1}\n";
        let with = |entry: &str| err(&format!("{ok}  - {entry}\n"));
        let e = with("{name: b, matchLabels: {x: y}, uplink: eth1}");
        assert!(
            e.starts_with("nodes[1]: has both name and matchLabels"),
            "{e}"
        );
        let e = with("{uplink: eth1}");
        assert!(e.starts_with("nodes[1]: selects no nodes"), "{e}");
        let e = with("{name: b}");
        assert!(e.starts_with("nodes[1]: sets nothing"), "{e}");
        let e = with("{matchLabels: {x: y}}");
        assert!(e.starts_with("nodes[1]: sets nothing"), "{e}");
        let e = with("{matchLabels: {}, uplink: eth1}");
        assert!(e.starts_with("nodes[1].matchLabels: empty"), "{e}");
        let e = with("{name: '', uplink: eth1}");
        assert!(e.starts_with("nodes[1].name: "), "{e}");
        let e = with("{name: b, uplink: eth0:1}");
        assert!(e.starts_with("nodes[1].uplink: \"eth0:1\" is not"), "{e}");
        // Unknown keys, serde's message with its path.
        let e = with("{name: b, uplink: eth1, underlayMtu: 9000}");
        assert!(
            e.contains("nodes[1]") && e.contains("unknown field `underlayMtu`"),
            "{e}"
        );
        let e = with("{nodeName: b, uplink: eth1}");
        assert!(
            e.contains("nodes[1]") && e.contains("unknown field `nodeName`"),
            "{e}"
        );
        // A label value must be a string, as in Kubernetes.
        let e = with("{matchLabels: {gpu: [a]}, uplink: eth1}");
        assert!(e.contains("nodes[1]"), "{e}");
        assert!(err("nodes: {name: a}").starts_with("nodes: "));
    }

    #[test]
    fn entries_that_can_never_apply_are_refused() {
        let e = err("nodes:\n  - {name: a, uplink: eth1}\n  - {name: a, underlayMTU: 9000}\n");
        assert!(
            e.starts_with("nodes[1]: never applies: node \"a\" takes nodes[0] already"),
            "{e}"
        );
        // A label entry after a broader one.
        let e = err(
            "nodes:\n  - {name: x, uplink: eth1}\n  - {matchLabels: {a: '1'}, uplink: eth1}\n  \
             - {matchLabels: {a: '1', b: '2'}, uplink: eth2}\n",
        );
        assert!(e.starts_with("nodes[2]: never applies"), "{e}");
        assert!(e.contains("takes nodes[1] already"), "{e}");
        let e = err("nodes:\n  - {matchLabels: {a: '1'}, uplink: eth1}\n  \
             - {matchLabels: {a: '1'}, uplink: eth2}\n");
        assert!(e.starts_with("nodes[1]: never applies"), "{e}");
        // Narrower first is fine, and so are name and label entries in either order (whether
        // the named node has the labels is not known here).
        for ok in [
            "nodes:\n  - {matchLabels: {a: '1', b: '2'}, uplink: eth2}\n  \
             - {matchLabels: {a: '1'}, uplink: eth1}\n",
            "nodes:\n  - {matchLabels: {a: '1'}, uplink: eth1}\n  \
             - {matchLabels: {a: '2'}, uplink: eth2}\n",
            "nodes:\n  - {matchLabels: {a: '1'}, uplink: eth1}\n  - {name: a, uplink: eth2}\n",
            "nodes:\n  - {name: a, uplink: eth2}\n  - {matchLabels: {a: '1'}, uplink: eth1}\n",
        ] {
            assert!(AgentConfig::from_yaml(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn uplink_names_follow_the_kernels_rule() {
        for ok in [
            "eth0",
            "enp65s0f1np1",
            "a",
            "br-0.100",
            "123456789012345",
            "vlan@x",
        ] {
            let c = AgentConfig::from_yaml(&format!("uplink: '{ok}'")).unwrap();
            assert_eq!(c.uplink.as_deref(), Some(ok));
        }
        for (bad, why) in [
            ("''", "empty"),
            (
                "'1234567890123456'",
                "16 bytes, longer than the kernel's 15",
            ),
            ("'.'", "are not interface names"),
            ("'..'", "are not interface names"),
            ("'eth/0'", "holds '/'"),
            ("'eth0:1'", "holds ':'"),
            ("'eth 0'", "holds whitespace"),
            ("\"eth\\t0\"", "holds whitespace"),
            ("\"eth\\v0\"", "holds whitespace"),
            ("\"eth\\u00a00\"", "holds whitespace"),
            ("\"eth\\00\"", "holds a NUL"),
        ] {
            let e = err(&format!("uplink: {bad}"));
            assert!(e.starts_with("uplink: ") && e.ends_with(why), "{bad}: {e}");
        }
        // Bytes, not characters: 8 two-byte characters are 16 bytes.
        let e = err("uplink: éééééééé");
        assert!(e.ends_with("16 bytes, longer than the kernel's 15"), "{e}");
        assert!(AgentConfig::from_yaml("uplink: ééééééé").is_ok());
        assert!(err("uplink: [eth0]").starts_with("uplink: "));
    }
}
