//! What the agent sets up itself: XDP programs on the uplink, `kxdp-dp` and pod veths,
//! the `kxdp-host`/`kxdp-dp` pair (its address and the routes into it go with it), the
//! managed neighbour entries for underlay next hops, the nftables table `kxdp`, the API
//! socket. The agent pins nothing in bpffs: its maps and programs live as long as its
//! file descriptors, so there is nothing there to remove.

use std::net::IpAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use ::netdev::Netlink;

use super::{CleanupError, CleanupOptions, CleanupReport, nft};
use crate::agent::netdev::{HOST_VETH, NFT_TABLE};

/// Whether something answers on the agent's socket. Only a refused or failed connect
/// counts as "no agent": an agent that accepts and is slow or stopping is still alive.
pub(super) fn agent_answers(socket: &Path) -> bool {
    match agent_api::call(socket, &agent_api::Request::Status, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(agent_api::ApiError::Connect { .. }) => false,
        Err(_) => true,
    }
}

pub(super) fn remove(opts: &CleanupOptions, live: bool, report: &mut CleanupReport) {
    let r = detach_programs(report);
    report.step(r);
    let r = remove_host_port(report);
    report.step(r);
    let r = remove_managed_neighbours(report);
    report.step(r);
    let r = nft::delete_tables(&[("inet", NFT_TABLE)], report);
    report.step(r);
    // A live agent's socket stays: it is the agent's, which was told to keep running.
    if !live {
        let r = remove_socket(&opts.api_socket, report);
        report.step(r);
    }
}

/// Detaches the agent's XDP programs (by name: `xdp_uplink`, `xdp_pod`, `xdp_host`) from
/// every link; another program on a link stays. Only programs attached through netlink
/// outlive their loader (aya attaches that way on kernels without XDP links, before 5.9);
/// one held by a BPF link goes when its process exits, and while it runs (an agent kept
/// with --force) the kernel refuses to detach it: that is noted, not an error.
fn detach_programs(report: &mut CleanupReport) -> Result<(), CleanupError> {
    let nl = Netlink::open()?;
    let attached = nl.xdp_programs()?;
    if attached.is_empty() {
        return Ok(());
    }
    let mut names = std::collections::BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        let info = info.map_err(|e| CleanupError::Bpf(e.to_string()))?;
        if let Some(name) = info.name_as_str() {
            names.insert(info.id(), name.to_string());
        }
    }
    for prog in attached {
        let Some(name) = names.get(&prog.prog_id) else {
            continue;
        };
        if !xdp_redirect::PROGRAMS.contains(&name.as_str()) {
            continue;
        }
        match nl.detach_xdp(prog.ifindex, prog.mode) {
            Ok(()) => {}
            // Held by a BPF link, so by a live process (an agent kept with --force): only
            // that process can let go of it, and does when it exits.
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                report.note(format!(
                    "XDP program {name} on {} is held by a running process's BPF link: left",
                    prog.ifname
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        report.removed(format!(
            "XDP program {name} (id {}) from {}",
            prog.prog_id, prog.ifname
        ));
    }
    Ok(())
}

fn remove_host_port(report: &mut CleanupReport) -> Result<(), CleanupError> {
    if Netlink::open()?.delete_link(HOST_VETH)? {
        report.removed(format!(
            "link {HOST_VETH} and its peer {} (with their routes)",
            crate::agent::netdev::DATAPATH_VETH
        ));
    }
    Ok(())
}

/// The agent keeps a *managed* (NTF_EXT_MANAGED) entry per underlay next hop on the
/// uplink. Nothing else on a node is known to create managed entries, and the agent's
/// uplink is not known here, so every IPv4 managed entry goes.
fn remove_managed_neighbours(report: &mut CleanupReport) -> Result<(), CleanupError> {
    let nl = Netlink::open()?;
    for link in nl.links()? {
        for n in nl.neighbours(link.index)? {
            if n.managed && matches!(n.ip, IpAddr::V4(_)) && nl.delete_neighbour(n.ifindex, n.ip)? {
                report.removed(format!("managed neighbour entry {} on {}", n.ip, link.name));
            }
        }
    }
    Ok(())
}

fn remove_socket(path: &Path, report: &mut CleanupReport) -> Result<(), CleanupError> {
    let io = |source| CleanupError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io)?;
            report.removed(format!("API socket {}", path.display()));
            Ok(())
        }
        Ok(_) => {
            report.note(format!("{} is not a socket: left alone", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}
