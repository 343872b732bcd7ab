//! The images a lab node's containerd runs, none of them pulled (no registry is reachable):
//! - kxdp: the archive deploy/image/build.sh wrote (the full recipe, or `--binaries` from
//!   this machine's build), imported as it is;
//! - pause and probe: written by the lab from its own binary (`kxdp-lab pause`,
//!   `kxdp-lab probe serve`) and the libraries it loads, one layer each.
//!
//! Imported with `ctr images import` into containerd's CRI namespace, as an operator loads
//! images onto a node without a registry.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::super::Lab;
use super::super::cmd;
use super::super::error::LabError;
use super::super::oci_image::{self, ImageSpec};
use super::{K8S_NAMESPACE, NodeRuntime};

/// Where the lab's binary lives in its images.
pub const LAB_BINARY_IN_IMAGE: &str = "/usr/local/bin/kxdp-lab";

fn tag() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The sandbox image containerd's CRI plugin starts each pod's pause container from.
pub fn pause_image() -> String {
    format!("localhost/kxdp-lab-pause:{}", tag())
}

/// The image of the pods' probe servers.
pub fn probe_image() -> String {
    format!("localhost/kxdp-lab-probe:{}", tag())
}

fn images_dir(lab: &Lab) -> PathBuf {
    lab.dir.join("images")
}

/// Writes the pause and probe archives under DIR/images; returns their paths.
pub fn write_lab_images(lab: &Lab) -> Result<Vec<PathBuf>, LabError> {
    let dir = images_dir(lab);
    fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    let files = oci_image::program_files(&lab.tools_binary()?, Path::new(LAB_BINARY_IN_IMAGE))?;
    let mut out = Vec::new();
    for (file, name, args) in [
        ("pause.tar", pause_image(), vec!["pause"]),
        ("probe.tar", probe_image(), vec![]),
    ] {
        let mut entrypoint = vec![LAB_BINARY_IN_IMAGE.to_string()];
        entrypoint.extend(args.iter().map(|a| a.to_string()));
        let spec = ImageSpec {
            name,
            files: files.clone(),
            entrypoint,
            env: vec!["PATH=/usr/local/bin:/usr/bin".into()],
        };
        let path = dir.join(file);
        oci_image::write_archive(&spec, &path)?;
        out.push(path);
    }
    Ok(out)
}

/// `ctr images import ARCHIVE` into the node's containerd.
pub fn import(rt: &NodeRuntime, archive: &Path) -> Result<(), LabError> {
    cmd::run(
        Command::new("ctr")
            .arg("--address")
            .arg(rt.socket())
            .args(["-n", K8S_NAMESPACE, "images", "import"])
            .arg(archive),
    )
    .map(drop)
}

/// The name a runtime gives the image of a docker-archive (its manifest.json's first
/// RepoTag, normalized as containerd does: `kxdp:TAG` is docker.io/library/kxdp:TAG).
pub fn archive_image_name(archive: &Path) -> Result<String, LabError> {
    let bad =
        |detail: String| LabError::Setup(format!("image archive {}: {detail}", archive.display()));
    let file = fs::File::open(archive).map_err(|e| LabError::io(archive, e))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar.entries().map_err(|e| LabError::io(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| LabError::io(archive, e))?;
        let is_manifest = entry
            .path()
            .map(|p| p.as_os_str() == "manifest.json")
            .unwrap_or(false);
        if !is_manifest {
            continue;
        }
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| LabError::io(archive, e))?;
        let manifest: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("manifest.json: {e}")))?;
        let tag = manifest[0]["RepoTags"][0]
            .as_str()
            .ok_or_else(|| bad("manifest.json names no RepoTag".into()))?;
        return Ok(normalize(tag));
    }
    Err(bad(
        "no manifest.json: not a docker-archive (deploy/image/build.sh writes one)".into(),
    ))
}

/// Docker's short names as containerd spells them in full.
fn normalize(name: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_host, name.contains('/')) {
        (true, _) => name.to_string(),
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_normalized() {
        assert_eq!(
            normalize("kxdp:0.1.0-abc"),
            "docker.io/library/kxdp:0.1.0-abc"
        );
        assert_eq!(normalize("me/kxdp:1"), "docker.io/me/kxdp:1");
        assert_eq!(normalize("localhost/kxdp:1"), "localhost/kxdp:1");
        assert_eq!(
            normalize("reg.example:5000/kxdp:1"),
            "reg.example:5000/kxdp:1"
        );
    }
}
