//! What kube-proxy and Flannel leave on a node, for a node moving to kxdp.
//!
//! kube-proxy: iptables mode, its `KUBE-*` chains in nat and filter and the jumps to them
//! ([`super::iptables`]); nftables mode, the tables `ip kube-proxy` and `ip6 kube-proxy`;
//! ipvs mode, the `kube-ipvs0` dummy device holding the Service addresses (its IPVS
//! virtual servers and `KUBE-*` ipsets are not removed here: `ipvsadm --clear` and
//! `ipset destroy` do that). Flannel: the `flannel.1` VXLAN device, the `cni0` bridge,
//! `subnet.env`, its CNI configuration and its `FLANNEL-*` chains.

use ::netdev::Netlink;

use super::iptables::{self, Doomed};
use super::{CleanupError, CleanupOptions, CleanupReport, cni_files, nft};

pub(super) const KUBE_IPVS_DEVICE: &str = "kube-ipvs0";
pub(super) const FLANNEL_DEVICES: [&str; 2] = ["flannel.1", "cni0"];

pub(super) fn remove_kube_proxy(report: &mut CleanupReport) {
    iptables::clean(
        Doomed {
            kube_proxy: true,
            flannel: false,
        },
        report,
    );
    let r = nft::delete_tables(&[("ip", "kube-proxy"), ("ip6", "kube-proxy")], report);
    report.step(r);
    let r = remove_links(&[KUBE_IPVS_DEVICE], report);
    report.step(r);
}

pub(super) fn remove_flannel(opts: &CleanupOptions, report: &mut CleanupReport) {
    iptables::clean(
        Doomed {
            kube_proxy: false,
            flannel: true,
        },
        report,
    );
    let r = remove_links(&FLANNEL_DEVICES, report);
    report.step(r);
    let r = cni_files::remove_file(
        &opts.flannel_run_dir.join("subnet.env"),
        "Flannel's subnet file",
        report,
    );
    report.step(r);
    cni_files::remove_flannel_configs(&opts.cni_conf_dir, report);
}

fn remove_links(names: &[&str], report: &mut CleanupReport) -> Result<(), CleanupError> {
    let nl = Netlink::open()?;
    for name in names {
        if nl.delete_link(name)? {
            report.removed(format!("link {name}"));
        }
    }
    Ok(())
}
