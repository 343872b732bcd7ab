//! NetworkPolicy in the walk: egress on the client's node, ingress on the server's node,
//! both on the translated (post-DNAT, post-SNAT) flow, once per flow and table generation.
//!
//! A flow's first packet is judged here; it is then tracked, so its later packets and its
//! replies (and ICMP errors about it) pass on the conntrack entry without another look,
//! until a new table generation makes the entry be judged again at its next packet (a
//! policy change reaches established flows, as users of kube-proxy + Calico/Cilium expect).
//! Traffic between this node and its own pods is always allowed (Kubernetes requires it:
//! kubelet probes).

use crate::addr::IpKey;
use crate::observer::Observer;
use crate::policy::{PolicyDirection, PolicyQuery};
use crate::verdict::{DropReason, Verdict};

use super::Walk;

/// A flow after translation, as the two pods at its ends see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judged {
    /// The client as the server sees it (after any SNAT).
    pub src: IpKey,
    /// The client as it is (before SNAT): its egress rules apply.
    pub client: IpKey,
    /// The server (after DNAT).
    pub dst: IpKey,
    pub dst_port: u16,
    pub proto: u8,
}

impl<O: Observer> Walk<'_, '_, O> {
    /// Whether the policy of the local pods at either end lets the flow through; drops
    /// name the direction and the policies that select the pod.
    pub(super) fn judge(&mut self, f: &Judged) -> Result<(), Verdict> {
        let t = self.tables;
        let node = &t.node.addresses;
        if let Some(&client) = t.local_pod_by_ip.get(&f.client) {
            let q = PolicyQuery {
                peer: f.dst,
                dst: f.dst,
                proto: f.proto,
                dst_port: f.dst_port,
            };
            if !node.contains(&f.dst) && !t.policy.allows(client, PolicyDirection::Egress, &q) {
                return Err(self.denied(client, PolicyDirection::Egress));
            }
        }
        if let Some(&server) = t.local_pod_by_ip.get(&f.dst) {
            let q = PolicyQuery {
                peer: f.src,
                dst: f.dst,
                proto: f.proto,
                dst_port: f.dst_port,
            };
            if !node.contains(&f.src) && !t.policy.allows(server, PolicyDirection::Ingress, &q) {
                return Err(self.denied(server, PolicyDirection::Ingress));
            }
        }
        Ok(())
    }

    fn denied(&mut self, endpoint: usize, dir: PolicyDirection) -> Verdict {
        if O::RECORDS {
            let names = self.tables.policy.selecting(endpoint, dir);
            self.obs.policies(&names);
            self.obs.policy_direction(dir);
        }
        Verdict::Drop(DropReason::PolicyDenied)
    }

    /// Whether flows without a Service must be tracked: only when some local pod is
    /// isolated, so replies of the flows its policy allowed can pass. Without any policy
    /// the hot path keeps no state for plain pod traffic.
    pub(super) fn tracks_plain_flows(&self) -> bool {
        self.tables.policy.any_isolation()
    }
}
