//! GC and STATUS (spec 1.1.0).
//!
//! GC removes every attachment of this network that `cni.dev/valid-attachments` no longer
//! lists: recorded ones completely (port closed, veth deleted, addresses released through
//! IPAM DEL, record removed), and `kx<hash>` veths that have no record (a record lost in a
//! crash) by deleting the veth. Then it forwards GC to the IPAM plugin when that plugin
//! implements it; older IPAM plugins (host-local before 1.5) do not, which is why the
//! per-attachment IPAM DEL above is what releases forgotten addresses.

use std::collections::HashSet;

use super::del::Cleanup;
use super::ipam::{Delegated, IpamVars};
use super::link::Ns;
use super::record::{host_veth_name, is_host_veth_name};
use super::spec::{CniError, check_version, code};
use super::{Invocation, NodeRanges, warn};

pub(super) fn gc(inv: &Invocation) -> Result<(), CniError> {
    require_1_1(inv, "GC")?;
    let Some(valid) = &inv.conf.valid_attachments else {
        // Without the list every attachment would look stale: refuse rather than guess.
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "GC needs cni.dev/valid-attachments",
        ));
    };
    let valid_veths: HashSet<String> = valid
        .iter()
        .map(|a| host_veth_name(&a.container_id, &a.ifname))
        .collect();
    let cleanup = Cleanup {
        stacks: inv.stacks()?,
        ipam: inv.ipam(NodeRanges::ForRelease),
        agent: inv.agent(),
        records: inv.records(),
    };
    let mut errors: Vec<CniError> = Vec::new();

    let (records, unreadable) = cleanup.records.all().map_err(|e| {
        CniError::new(
            code::STATE_FAILED,
            "reading attachment records",
            e.to_string(),
        )
    })?;
    for problem in unreadable {
        warn("GC skips an unreadable record", &problem);
    }
    let mut handled: HashSet<String> = HashSet::new();
    for r in records
        .iter()
        .filter(|r| !valid_veths.contains(&r.host_veth))
    {
        handled.insert(r.host_veth.clone());
        let vars = IpamVars {
            container_id: Some(&r.container_id),
            ifname: Some(&r.ifname),
            // The runtime may already have removed the namespace; IPAM DEL must not need it.
            netns: None,
            args: None,
        };
        if let Err(e) = cleanup.remove(&r.host_veth, Some(&r.port), &vars, None) {
            errors.push(e);
        }
    }

    // Veths of ours without a record (a crash between creating the veth and the record,
    // or a lost state dir), except those another network of ours has recorded.
    let others: HashSet<String> = cleanup
        .records
        .other_networks_veths()
        .map_err(|e| {
            CniError::new(
                code::STATE_FAILED,
                "reading attachment records",
                e.to_string(),
            )
        })?
        .into_iter()
        .collect();
    let recorded: HashSet<&str> = records.iter().map(|r| r.host_veth.as_str()).collect();
    let links = cleanup.stacks.of(Ns::Node)?.links()?;
    for link in links.iter().filter(|l| {
        l.is_veth()
            && is_host_veth_name(&l.name)
            && !valid_veths.contains(&l.name)
            && !handled.contains(&l.name)
            && !recorded.contains(l.name.as_str())
            && !others.contains(&l.name)
    }) {
        if let Err(e) = cleanup.stacks.delete_link(Ns::Node, &link.name) {
            errors.push(e);
        }
    }

    match &cleanup.ipam {
        Ok(ipam) => match ipam.gc() {
            Ok(Delegated::Done) => {}
            Ok(Delegated::NotSupported) => warn(
                "GC",
                &format!(
                    "IPAM plugin {} does not implement GC (spec 1.1.0); released forgotten attachments with DEL",
                    ipam.name()
                ),
            ),
            Err(e) => errors.push(e),
        },
        // Already reported by every cleanup above, once is enough when there were none.
        Err(e) if errors.is_empty() => errors.push(e.clone()),
        Err(_) => {}
    }
    combine(errors)
}

/// STATUS: ready when the agent answers and the IPAM plugin (if it knows STATUS, and the
/// runtime gave a CNI_PATH to find it in) is ready.
pub(super) fn status(inv: &Invocation) -> Result<(), CniError> {
    require_1_1(inv, "STATUS")?;
    let not_available = |e: CniError| CniError::new(code::NOT_AVAILABLE, e.msg, e.details);
    let node = inv.node_facts(&inv.agent()).map_err(not_available)?;
    // A node without a PodCIDR cannot serve a usePodCidr ADD either.
    if inv.uses_pod_cidr() {
        inv.pod_cidrs_of(&node).map_err(not_available)?;
    }
    if inv.env.path.is_empty() {
        return Ok(());
    }
    inv.ipam(NodeRanges::Known(&node))?.status().map(drop)
}

fn require_1_1(inv: &Invocation, command: &str) -> Result<(), CniError> {
    check_version(&inv.conf.cni_version)?;
    if inv.conf.is_at_least_1_1() {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "{command} exists from spec 1.1.0; the configuration says {}",
                inv.conf.cni_version
            ),
        ))
    }
}

/// All GC errors in one: the first one's code, every message in the details.
fn combine(errors: Vec<CniError>) -> Result<(), CniError> {
    let mut iter = errors.into_iter();
    let Some(first) = iter.next() else {
        return Ok(());
    };
    let rest: Vec<String> = iter.map(|e| e.to_string()).collect();
    if rest.is_empty() {
        return Err(first);
    }
    Err(CniError::new(
        first.code,
        format!("GC finished with {} errors", rest.len() + 1),
        format!("{first}; {}", rest.join("; ")),
    ))
}
