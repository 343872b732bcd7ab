//! DEL: best effort and idempotent. A missing netns, veth, record or agent is fine; only a
//! failure to release the address (IPAM DEL) or to delete a veth that is there fails it.

use super::ipam::{Ipam, IpamVars};
use super::link::{Ns, Stacks};
use super::record::{Records, host_veth_name};
use super::spec::{CniError, code};
use super::{Invocation, NodeRanges, warn};
use crate::agent::Agent;

pub(super) fn del(inv: &Invocation) -> Result<(), CniError> {
    let att = inv.attachment()?;
    let records = inv.records();
    let host_veth = host_veth_name(&att.container_id, &att.ifname);
    let record = records.load(&host_veth).unwrap_or_else(|e| {
        warn(&format!("reading the record of {host_veth}"), &e);
        None
    });
    // The runtime passes the same CNI_ARGS as on ADD; the record covers a runtime that
    // does not.
    let port = inv
        .env
        .args
        .pod_port()
        .ok()
        .or_else(|| record.map(|r| r.port));
    let cleanup = Cleanup {
        stacks: inv.stacks()?,
        // An IPAM plugin that cannot be run still fails DEL, but only after the port and
        // the veth are gone. A usePodCidr range needs no agent here (see ForRelease).
        ipam: inv.ipam(NodeRanges::ForRelease),
        agent: inv.agent(),
        records,
    };
    let netns = att.netns.as_deref().filter(|p| p.exists());
    cleanup.remove(
        &host_veth,
        port.as_deref(),
        &inv.ipam_vars(att),
        netns.map(|n| (n, att.ifname.as_str())),
    )
}

/// Tears one attachment down; shared by DEL and GC.
pub(super) struct Cleanup {
    pub stacks: Stacks,
    pub ipam: Result<Ipam, CniError>,
    pub agent: Agent,
    pub records: Records,
}

impl Cleanup {
    /// Closes the port (if known), deletes the veth (and, when the host side is already
    /// gone, the pod side), releases the addresses and, when all that worked, forgets the
    /// record. Every step runs even when an earlier one failed; the first hard failure is
    /// returned.
    pub fn remove(
        &self,
        host_veth: &str,
        port: Option<&str>,
        vars: &IpamVars<'_>,
        pod_if: Option<(&std::path::Path, &str)>,
    ) -> Result<(), CniError> {
        let container_id = vars.container_id.unwrap_or_default();
        // The agent first, so it detaches from the veth before the veth disappears.
        match port {
            Some(port) => {
                if let Err(e) = self.agent.del_port(port, container_id) {
                    warn(&format!("closing port {port} (cleaning up anyway)"), &e);
                }
            }
            None => warn(
                "no port to close",
                &format!("neither CNI_ARGS nor a record names the pod of {host_veth}"),
            ),
        }
        let mut first_error: Option<CniError> = None;
        let mut keep = |e: CniError| {
            warn("cleaning up", &e);
            first_error.get_or_insert(e);
        };
        match self.stacks.delete_link(Ns::Node, host_veth) {
            Ok(true) => {}
            Ok(false) => {
                // The host side is gone; make sure the pod side is too.
                if let Some((netns, ifname)) = pod_if
                    && let Err(e) = self.stacks.delete_link(Ns::Pod(netns), ifname)
                {
                    warn(&format!("deleting {ifname} in {}", netns.display()), &e);
                }
            }
            Err(e) => keep(e),
        }
        match &self.ipam {
            Ok(ipam) => {
                if let Err(e) = ipam.del(vars) {
                    keep(e);
                }
            }
            Err(e) => keep(e.clone()),
        }
        if let Some(e) = first_error {
            // The record stays: the runtime retries DEL, and GC finds it meanwhile.
            return Err(e);
        }
        self.records.remove(host_veth).map_err(|e| {
            CniError::new(
                code::STATE_FAILED,
                "removing the attachment record",
                e.to_string(),
            )
        })
    }
}
