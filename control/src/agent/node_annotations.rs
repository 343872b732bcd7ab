//! The agent writes its own Node's `kxdp.io/underlay-mac` and `kxdp.io/vtep-address`
//! (docs/replay.md): other nodes read them to tunnel to this one, and nobody else
//! knows the uplink's MAC or which of its addresses the VXLAN leaves from.
//!
//! Only with the Kubernetes source, and only those two keys, with a JSON merge patch that
//! leaves every other annotation alone. After the first complete list the agent patches
//! (a few quick retries) and waits for the watch to bring the patched Node back, so its
//! first tables already carry the values; after that, every tick compares the watched
//! Node with what it should say and patches again when it drifted or an earlier patch
//! failed, with exponential backoff. A failed patch is logged with the API's answer and
//! counted; it never stops the agent.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use datapath::MacAddr;
use k8s_openapi::api::core::v1::Node;

use super::netdev::{self, NetdevError};
use crate::source::KubeSource;
use model::k8s::{
    UNDERLAY_MAC_ANNOTATION, VTEP_ADDRESS_ANNOTATION, ValueError, node_internal_ipv4,
    node_underlay_mac, node_vtep_annotation, parse_unicast_mac, parse_vtep_address,
};

/// How long one PATCH may take.
const PATCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts at start before leaving it to the tick.
const START_ATTEMPTS: u32 = 3;
/// Backoff between failed attempts: first, cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long the first tables wait for the watch to deliver the patched Node.
const WATCH_DEADLINE: Duration = Duration::from_secs(10);
/// After a patch the API accepted, how long to give the watch before patching again.
const SETTLE: Duration = Duration::from_secs(5);

/// Why the uplink cannot say what the annotations should be.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Reading its MAC or addresses failed.
    #[error("uplink {uplink}: {source}")]
    Read { uplink: String, source: NetdevError },
    /// Its MAC cannot be a node's underlay MAC (multicast, all-zero).
    #[error("uplink {uplink}: {source}")]
    Mac { uplink: String, source: ValueError },
}

/// What the Node's annotations should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub underlay_mac: MacAddr,
    /// `None` when the uplink has no IPv4 address: the annotation is then left alone.
    pub vtep_address: Option<Ipv4Addr>,
}

impl Wanted {
    /// The uplink's MAC and the IPv4 address the VXLAN leaves from (see [`choose_vtep`]).
    pub fn of_uplink(uplink: &str, node: &Node) -> Result<Wanted, UplinkError> {
        let read = |source| UplinkError::Read {
            uplink: uplink.to_string(),
            source,
        };
        let mac = netdev::mac_of(uplink).map_err(read)?.to_string();
        let underlay_mac = parse_unicast_mac(&mac).map_err(|source| UplinkError::Mac {
            uplink: uplink.to_string(),
            source,
        })?;
        let addresses = netdev::ipv4_addresses(uplink).map_err(read)?;
        Ok(Wanted {
            underlay_mac,
            vtep_address: choose_vtep(&addresses, node),
        })
    }
}

/// Which of the uplink's IPv4 addresses is the VTEP: the one the Node already names (its
/// annotation, else its InternalIP) when the uplink has it, so a node with several
/// addresses keeps a stable answer; otherwise the uplink's primary (first) address.
pub fn choose_vtep(uplink: &[Ipv4Addr], node: &Node) -> Option<Ipv4Addr> {
    let annotated = node_vtep_annotation(node)
        .and_then(|a| parse_vtep_address(a).ok())
        .map(Ipv4Addr::from);
    let internal = node_internal_ipv4(node).map(Ipv4Addr::from);
    [annotated, internal]
        .into_iter()
        .flatten()
        .find(|a| uplink.contains(a))
        .or_else(|| uplink.first().copied())
}

/// The annotations to write so `node` says what `wanted` says: both keys when either is
/// missing or different (compared as values, so `02:AA:..` equals `02:aa:..`), `None`
/// when nothing needs writing.
pub fn needed(node: &Node, wanted: &Wanted) -> Option<BTreeMap<String, String>> {
    let mac_ok = node_underlay_mac(node)
        .and_then(|m| parse_unicast_mac(m).ok())
        .is_some_and(|m| m == wanted.underlay_mac);
    let vtep_ok = match wanted.vtep_address {
        None => true,
        Some(want) => node_vtep_annotation(node)
            .and_then(|a| parse_vtep_address(a).ok())
            .is_some_and(|a| Ipv4Addr::from(a) == want),
    };
    if mac_ok && vtep_ok {
        return None;
    }
    let mut patch = BTreeMap::new();
    patch.insert(
        UNDERLAY_MAC_ANNOTATION.to_string(),
        wanted.underlay_mac.to_string(),
    );
    if let Some(vtep) = wanted.vtep_address {
        patch.insert(VTEP_ADDRESS_ANNOTATION.to_string(), vtep.to_string());
    }
    Some(patch)
}

/// Keeps this node's annotations right; see the module docs.
#[derive(Debug)]
pub struct NodeAnnotations {
    node: String,
    uplink: String,
    /// Worked out once the Node is known (the VTEP choice reads it).
    wanted: Option<Wanted>,
    next_attempt: Instant,
    backoff: Duration,
    /// Patches the API accepted / that failed.
    pub patched: u64,
    pub failed: u64,
}

impl NodeAnnotations {
    pub fn new(node: &str, uplink: &str) -> NodeAnnotations {
        NodeAnnotations {
            node: node.to_string(),
            uplink: uplink.to_string(),
            wanted: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_FIRST,
            patched: 0,
            failed: 0,
        }
    }

    /// At start, after the first complete list and before the first tables: patch when
    /// needed (a few attempts), then wait for the watch to bring the patched Node back.
    pub fn at_start(&mut self, kube: &KubeSource) {
        for attempt in 1..=START_ATTEMPTS {
            match self.attempt(kube) {
                Attempt::NotNeeded => return,
                Attempt::Patched => {
                    if !kube.wait_for_node(&self.node, WATCH_DEADLINE, |n| {
                        self.wanted.is_some_and(|w| needed(n, &w).is_none())
                    }) {
                        tracing::warn!(
                            node = self.node,
                            "the watch did not deliver the patched Node within {WATCH_DEADLINE:?}: \
                             building the first tables without it"
                        );
                    }
                    return;
                }
                Attempt::Failed if attempt < START_ATTEMPTS => std::thread::sleep(self.backoff),
                Attempt::Failed => {}
            }
        }
    }

    /// On the agent's periodic tick: patch again when due and the watched Node does not say
    /// what it should.
    pub fn tick(&mut self, kube: &KubeSource) {
        if Instant::now() >= self.next_attempt {
            self.attempt(kube);
        }
    }

    fn attempt(&mut self, kube: &KubeSource) -> Attempt {
        let Some(node) = kube.node(&self.node) else {
            // Not in the cluster (yet): translate says so; nothing to patch.
            return Attempt::NotNeeded;
        };
        let wanted = match self.wanted {
            Some(w) => w,
            None => match Wanted::of_uplink(&self.uplink, &node) {
                Ok(w) => {
                    if w.vtep_address.is_none() {
                        tracing::warn!(
                            "uplink {} has no IPv4 address: {VTEP_ADDRESS_ANNOTATION} is not written",
                            self.uplink
                        );
                    }
                    *self.wanted.insert(w)
                }
                Err(e) => {
                    self.failed += 1;
                    tracing::error!("cannot work out this Node's annotations: {e}");
                    self.schedule_retry();
                    return Attempt::Failed;
                }
            },
        };
        let Some(patch) = needed(&node, &wanted) else {
            self.backoff = BACKOFF_FIRST;
            return Attempt::NotNeeded;
        };
        match kube.patch_node_annotations(&self.node, &patch, PATCH_TIMEOUT) {
            Ok(_) => {
                self.patched += 1;
                self.backoff = BACKOFF_FIRST;
                self.next_attempt = Instant::now() + SETTLE;
                tracing::info!(node = self.node, ?patch, "patched this Node's annotations");
                Attempt::Patched
            }
            Err(e) => {
                self.failed += 1;
                tracing::error!(
                    node = self.node,
                    failures = self.failed,
                    retry_in = ?self.backoff,
                    "patching this Node's annotations failed: {e}"
                );
                self.schedule_retry();
                Attempt::Failed
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    NotNeeded,
    Patched,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: &[(&str, &str)], internal_ip: Option<&str>) -> Node {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let addresses: Vec<_> = internal_ip
            .map(|ip| serde_json::json!({"type": "InternalIP", "address": ip}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": annotations},
            "status": {"addresses": addresses},
        }))
        .unwrap()
    }

    const MAC: &str = "02:79:00:00:00:01";

    fn wanted(vtep: Option<&str>) -> Wanted {
        Wanted {
            underlay_mac: MAC.parse().unwrap(),
            vtep_address: vtep.map(|v| v.parse().unwrap()),
        }
    }

    #[test]
    fn both_keys_are_written_when_either_is_missing_or_wrong() {
        let want = wanted(Some("192.168.79.1"));
        let both: BTreeMap<String, String> = [
            (UNDERLAY_MAC_ANNOTATION.to_string(), MAC.to_string()),
            (
                VTEP_ADDRESS_ANNOTATION.to_string(),
                "192.168.79.1".to_string(),
            ),
        ]
        .into();
        assert_eq!(needed(&node(&[], None), &want), Some(both.clone()));
        let mac_only = node(&[(UNDERLAY_MAC_ANNOTATION, MAC)], None);
        assert_eq!(needed(&mac_only, &want), Some(both.clone()));
        let stale_mac = node(
            &[
                (UNDERLAY_MAC_ANNOTATION, "02:79:00:00:00:99"),
                (VTEP_ADDRESS_ANNOTATION, "192.168.79.1"),
            ],
            None,
        );
        assert_eq!(needed(&stale_mac, &want), Some(both.clone()));
        let bad_vtep = node(
            &[
                (UNDERLAY_MAC_ANNOTATION, MAC),
                (VTEP_ADDRESS_ANNOTATION, "x"),
            ],
            None,
        );
        assert_eq!(needed(&bad_vtep, &want), Some(both));
    }

    #[test]
    fn nothing_is_written_when_the_node_already_says_it() {
        let right = node(
            &[
                (UNDERLAY_MAC_ANNOTATION, "02:79:00:00:00:01"),
                (VTEP_ADDRESS_ANNOTATION, "192.168.79.1"),
                ("other", "kept"),
            ],
            Some("10.0.0.1"),
        );
        assert_eq!(needed(&right, &wanted(Some("192.168.79.1"))), None);
        // Same MAC, other spelling.
        let upper = node(
            &[
                (UNDERLAY_MAC_ANNOTATION, "02:AB:00:00:00:01"),
                (VTEP_ADDRESS_ANNOTATION, "192.168.79.1"),
            ],
            None,
        );
        let want = Wanted {
            underlay_mac: "02:ab:00:00:00:01".parse().unwrap(),
            vtep_address: Some(Ipv4Addr::new(192, 168, 79, 1)),
        };
        assert_eq!(needed(&upper, &want), None);
        // No uplink IPv4: only the MAC is managed.
        let mac_only = node(&[(UNDERLAY_MAC_ANNOTATION, MAC)], None);
        assert_eq!(needed(&mac_only, &wanted(None)), None);
        assert_eq!(
            needed(&node(&[], None), &wanted(None)),
            Some([(UNDERLAY_MAC_ANNOTATION.to_string(), MAC.to_string())].into())
        );
    }

    #[test]
    fn the_vtep_is_the_uplink_address_the_node_already_names() {
        let a: Ipv4Addr = "192.168.79.1".parse().unwrap();
        let b: Ipv4Addr = "192.168.80.1".parse().unwrap();
        let uplink = [a, b];
        assert_eq!(choose_vtep(&uplink, &node(&[], None)), Some(a));
        assert_eq!(
            choose_vtep(&uplink, &node(&[], Some("192.168.80.1"))),
            Some(b)
        );
        let annotated = node(
            &[(VTEP_ADDRESS_ANNOTATION, "192.168.80.1")],
            Some("192.168.79.1"),
        );
        assert_eq!(choose_vtep(&uplink, &annotated), Some(b));
        // Naming an address the uplink does not have: the uplink's primary.
        assert_eq!(choose_vtep(&uplink, &node(&[], Some("10.9.9.9"))), Some(a));
        assert_eq!(choose_vtep(&[], &node(&[], Some("10.9.9.9"))), None);
    }
}
