//! runc puts every container into cgroups, so the cgroup filesystems must be mounted where
//! it looks (/sys/fs/cgroup, found through mountinfo). A machine that booted normally has
//! them; a bare chroot with /sys bound non-recursively (a fresh build root) has an empty
//! /sys/fs/cgroup. There the lab mounts the hierarchies this process is in, as the machine
//! has them (v1 controllers and named hierarchies each at /sys/fs/cgroup/NAME over a tmpfs,
//! v2 at /sys/fs/cgroup/unified beside them or at /sys/fs/cgroup alone), records what it
//! mounted in DIR, and `down` unmounts exactly that.

use std::fs;
use std::path::{Path, PathBuf};

use super::super::Lab;
use super::super::error::LabError;
use super::mounts;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn record_path(lab: &Lab) -> PathBuf {
    lab.dir.join("cgroup-mounts")
}

/// Whether a cgroup hierarchy is mounted under /sys/fs/cgroup (v2 at its root, or any
/// v1 or v2 one below it).
fn mounted() -> bool {
    let root = Path::new(CGROUP_ROOT);
    root.join("cgroup.controllers").exists()
        || fs::read_dir(root).into_iter().flatten().flatten().any(|e| {
            let p = e.path();
            p.join("tasks").exists() || p.join("cgroup.controllers").exists()
        })
}

/// A hierarchy this process belongs to, from a /proc/self/cgroup line
/// (`ID:CONTROLLERS:PATH`): None for v2 (empty controllers), else the controllers.
fn hierarchy(line: &str) -> Option<Option<String>> {
    let mut fields = line.splitn(3, ':');
    let _id = fields.next()?;
    let controllers = fields.next()?;
    fields.next()?;
    Some((!controllers.is_empty()).then(|| controllers.to_string()))
}

/// The mounts that make /sys/fs/cgroup look as on the booted machine: (target, fstype,
/// options), in mount order.
fn plan(proc_self_cgroup: &str) -> Vec<(PathBuf, &'static str, String)> {
    let hierarchies: Vec<Option<String>> = proc_self_cgroup.lines().filter_map(hierarchy).collect();
    let v1: Vec<&String> = hierarchies.iter().flatten().collect();
    let has_v2 = hierarchies.iter().any(Option::is_none);
    let root = PathBuf::from(CGROUP_ROOT);
    if v1.is_empty() {
        return if has_v2 {
            vec![(root, "cgroup2", String::new())]
        } else {
            Vec::new()
        };
    }
    let mut out = vec![(root.clone(), "tmpfs", "mode=755".to_string())];
    for controllers in v1 {
        let dir = controllers.trim_start_matches("name=").replace(',', "_");
        out.push((root.join(dir), "cgroup", controllers.clone()));
    }
    if has_v2 {
        out.push((root.join("unified"), "cgroup2", String::new()));
    }
    out
}

/// Mounts the cgroup hierarchies when none is there; records what it mounted.
pub fn ensure(lab: &Lab) -> Result<(), LabError> {
    if mounted() {
        return Ok(());
    }
    let membership = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| LabError::io("/proc/self/cgroup", e))?;
    let steps = plan(&membership);
    if steps.is_empty() {
        return Err(LabError::Setup(
            "no cgroup hierarchy in /proc/self/cgroup: runc cannot run containers here".into(),
        ));
    }
    let record = record_path(lab);
    let mut done = Vec::new();
    for (target, fstype, options) in steps {
        fs::create_dir_all(&target).map_err(|e| LabError::io(&target, e))?;
        let result = mounts::mount_fs(fstype, &target, &options);
        if result.is_ok() {
            done.push(target.display().to_string());
        }
        // Recorded as it goes: a failure half way still leaves `down` the list to undo.
        fs::write(&record, done.join("\n")).map_err(|e| LabError::io(&record, e))?;
        result?;
    }
    tracing::info!(mounted = ?done, "mounted the cgroup hierarchies runc needs");
    Ok(())
}

/// Unmounts what [`ensure`] mounted, last first.
pub fn release(lab: &Lab) -> Result<(), LabError> {
    let record = record_path(lab);
    let Ok(text) = fs::read_to_string(&record) else {
        return Ok(());
    };
    for target in text.lines().rev() {
        mounts::unmount(Path::new(target))?;
    }
    fs::remove_file(&record).map_err(|e| LabError::io(&record, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_machine_gets_its_v1_controllers_and_unified() {
        let self_cgroup = "12:pids:/\n3:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n";
        let p = plan(self_cgroup);
        let targets: Vec<String> = p
            .iter()
            .map(|(t, f, o)| format!("{} {f} {o}", t.display()))
            .collect();
        assert_eq!(
            targets,
            [
                "/sys/fs/cgroup tmpfs mode=755",
                "/sys/fs/cgroup/pids cgroup pids",
                "/sys/fs/cgroup/cpu_cpuacct cgroup cpu,cpuacct",
                "/sys/fs/cgroup/systemd cgroup name=systemd",
                "/sys/fs/cgroup/unified cgroup2 ",
            ]
        );
    }

    #[test]
    fn a_v2_machine_gets_one_mount() {
        let p = plan("0::/user.slice\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(p[0].1, "cgroup2");
        assert!(plan("").is_empty());
    }
}
