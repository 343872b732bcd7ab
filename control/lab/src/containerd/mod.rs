//! `--runtime containerd`: the lab's nodes run containerd, and the lab is their kubelet.
//!
//! Per node (daemon.rs): a containerd inside the node's network namespace with everything
//! under `DIR/nodeN/containerd`. Images (images.rs): the kxdp image (an archive the caller
//! built with deploy/image/build.sh), and a pause and a probe image the lab writes from its
//! own binary; all imported with `ctr`, as no registry is reachable. The agent (agents.rs)
//! runs from the kxdp image as the DaemonSet in deploy/kxdp.yaml says (host network,
//! privileged, its mounts, its init container), created through CRI. Pods (pods.rs): CRI
//! RunPodSandbox (containerd runs the CNI chain the agent installed), their probe servers
//! CRI containers from the probe image. Checks specific to the runtime (runtime_checks.rs):
//! what containerd does with kxdp-cni that the lab's own runtime never did.

pub mod agents;
pub mod cgroups;
pub mod daemon;
pub mod images;
pub mod logs;
pub mod mounts;
pub mod pods;
pub mod runtime_checks;

use std::path::PathBuf;
use std::time::Duration;

use super::Lab;
use super::error::{LabError, Teardown};
use super::layout::NodePlan;
pub use daemon::NodeRuntime;

/// The containerd namespace CRI works in (and `ctr -n` imports into).
pub const K8S_NAMESPACE: &str = "k8s.io";
/// How long a CRI call may take; RunPodSandbox (the CNI chain) is the slow one.
const CRI_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A CRI client of the node's containerd.
pub fn client(rt: &NodeRuntime) -> Result<cri::Client, LabError> {
    cri::Client::connect(&rt.socket(), CONNECT_TIMEOUT)
        .map(|c| c.with_timeout(CRI_TIMEOUT))
        .map_err(|source| LabError::Cri {
            node: rt.node.name(),
            source,
        })
}

/// A CRI call's error, attributed to the node.
pub fn cri_error(node: NodePlan) -> impl Fn(cri::CriError) -> LabError {
    move |source| LabError::Cri {
        node: node.name(),
        source,
    }
}

/// The node's /opt/cni/bin: containerd's CRI `bin_dir`, where the agent's init container
/// installs kxdp-cni, host-local and portmap from the image.
pub fn cni_bin_dir(lab: &Lab, node: NodePlan) -> PathBuf {
    lab.node_dir(node).join("cni-bin")
}

/// Starts each node's containerd and loads the images (pause and probe written from the
/// lab's binary, the kxdp archive as given). Returns the kxdp image's name.
pub fn up(lab: &Lab) -> Result<String, LabError> {
    let archive = lab.image.as_deref().ok_or_else(|| {
        LabError::Setup(
            "--runtime containerd runs the agents from the kxdp image: give --image ARCHIVE \
             (deploy/image/build.sh writes target/image/kxdp-*.tar)"
                .into(),
        )
    })?;
    if !archive.is_file() {
        return Err(LabError::Setup(format!(
            "--image {}: no such file (deploy/image/build.sh writes it)",
            archive.display()
        )));
    }
    let kxdp_image = images::archive_image_name(archive)?;
    let lab_images = images::write_lab_images(lab)?;
    cgroups::ensure(lab)?;
    for node in super::layout::AGENT_NODES {
        let rt = NodeRuntime::of(lab, node);
        let rec = daemon::start(lab, &rt)?;
        for a in lab_images.iter().map(PathBuf::as_path).chain([archive]) {
            images::import(&rt, a)?;
        }
        let client = client(&rt)?;
        for image in [
            images::pause_image(),
            images::probe_image(),
            kxdp_image.clone(),
        ] {
            if !client.has_image(&image).map_err(cri_error(node))? {
                return Err(LabError::Setup(format!(
                    "containerd on {} does not list {image} after the import",
                    node.name()
                )));
            }
        }
        tracing::info!(node = %node.name(), pid = rec.pid, "containerd up");
    }
    Ok(kxdp_image)
}

/// Whether `up` may have started a containerd on any node of the lab.
pub fn present(lab: &Lab) -> bool {
    super::layout::AGENT_NODES
        .iter()
        .any(|&n| NodeRuntime::of(lab, n).dir.exists())
        || cgroups::record_path(lab).exists()
}

/// Removes the pods (through CRI, as the kubelet does), the agents' pods, stops each
/// containerd by PID and sweeps what it leaves (shims, mounts, cgroups). Every step runs
/// even when one fails, each failure noted in `teardown`.
pub fn down(lab: &Lab, teardown: &mut Teardown) {
    for rec in super::pods::records(lab)
        .into_iter()
        .filter(|r| r.sandbox.is_some())
    {
        let r = pods::remove(lab, &rec);
        if r.is_err() {
            // containerd is gone or refuses: the sweep below removes what is left.
            super::pods::forget(lab, &rec);
        }
        teardown.note(r);
    }
    for node in super::layout::AGENT_NODES {
        let rt = NodeRuntime::of(lab, node);
        if !rt.dir.exists() {
            continue;
        }
        // Sandboxes no record names (a failed attempt, a measurement's pods) go too: this
        // containerd is the lab's, so everything it runs is.
        teardown.note(remove_all_sandboxes(&rt));
        teardown.note(agents::remove(lab, node));
        teardown.note(daemon::stop(lab, &rt));
        teardown.note(daemon::sweep(&rt));
    }
    teardown.note(cgroups::release(lab));
}

/// Removes every sandbox the node's containerd lists: pods before the agent's (kube-system),
/// whose kxdp-cni DELs are quicker with the agent there. Nothing to do when containerd is
/// not running.
fn remove_all_sandboxes(rt: &NodeRuntime) -> Result<(), LabError> {
    let Ok(client) = client(rt) else {
        return Ok(());
    };
    let mut sandboxes = client.list_pod_sandboxes().map_err(cri_error(rt.node))?;
    sandboxes.sort_by_key(|s| {
        s.metadata
            .as_ref()
            .is_some_and(|m| m.namespace == agents::AGENT_NAMESPACE)
    });
    let mut first_error = None;
    for s in sandboxes {
        if let Err(e) = pods::remove_sandbox(&client, rt.node, &s.id) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
