//! Serving a manifest directory (docs/replay.md) from the double: every object the
//! state loader reads is applied; when the directory's files change, it is read again and
//! only the difference goes to the double (changed objects applied, vanished ones deleted),
//! so watchers see the same ADDED / MODIFIED / DELETED events a real API server would send
//! for those edits.
//!
//! The directory is the only writer: an object changed through the double by someone else
//! (a client's PATCH) keeps that change until its manifest changes, which then replaces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::store::servable;
use super::{ApiServerDouble, DoubleError, Key};
use model::state::watch::DirWatch;
use model::state::{ClusterState, StateError, load_state_dir};

/// Kinds in the order they are applied: what others refer to first (a Service after the
/// ServiceCIDR its ClusterIP comes from, a Pod last, after the Namespace it lives in and
/// the EndpointSlices naming it). Deletions go in reverse.
const APPLY_ORDER: [&str; 7] = [
    "Namespace",
    "Node",
    "ServiceCIDR",
    "Service",
    "NetworkPolicy",
    "EndpointSlice",
    "Pod",
];

/// Why a directory could not be served. The double is left as it was: every object is
/// checked before anything is applied.
#[derive(Debug, thiserror::Error)]
pub enum DirSyncError {
    #[error(transparent)]
    Load(#[from] StateError),
    /// An object that loaded but does not convert to JSON.
    #[error("a {kind} to JSON: {source}")]
    Json {
        kind: &'static str,
        source: serde_json::Error,
    },
    /// An object that loaded but cannot be served (no name, a kind the double lacks).
    #[error(transparent)]
    Object(#[from] DoubleError),
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub applied: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// One manifest directory kept in step with a double.
#[derive(Debug)]
pub struct DirSync {
    dir: PathBuf,
    watch: DirWatch,
    /// What the directory held at the last successful sync, as applied.
    served: BTreeMap<(String, Key), Value>,
}

impl DirSync {
    pub fn new(dir: &Path) -> DirSync {
        DirSync {
            dir: dir.to_path_buf(),
            watch: DirWatch::new(dir.to_path_buf()),
            served: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Objects served from the directory right now.
    pub fn objects(&self) -> usize {
        self.served.len()
    }

    /// Syncs when the directory's files changed since the last call (the first call always
    /// syncs). `None`: nothing changed.
    pub fn sync_if_changed(
        &mut self,
        double: &ApiServerDouble,
    ) -> Option<Result<SyncReport, DirSyncError>> {
        self.watch.changed().then(|| self.sync(double))
    }

    /// Reads the directory and brings the double in line with it. On an error nothing is
    /// applied, so the double keeps serving the last good state.
    pub fn sync(&mut self, double: &ApiServerDouble) -> Result<SyncReport, DirSyncError> {
        let state = load_state_dir(&self.dir)?;
        let wanted = objects_of(&state.cluster)?;
        let mut report = SyncReport::default();
        for kind in APPLY_ORDER.iter().rev() {
            let gone: Vec<(String, Key)> = self
                .served
                .keys()
                .filter(|(k, key)| k == kind && !wanted.contains_key(&(k.clone(), key.clone())))
                .cloned()
                .collect();
            for (kind, key) in gone {
                // Present: only what this sync applied is in `served`, and only the
                // directory deletes.
                if double.current(&kind).contains_key(&key) {
                    double.delete(&kind, &key.0, &key.1)?;
                }
                self.served.remove(&(kind, key));
                report.deleted += 1;
            }
        }
        for kind in APPLY_ORDER {
            for ((k, key), object) in wanted.iter().filter(|((k, _), _)| k == kind) {
                let id = (k.clone(), key.clone());
                if self.served.get(&id) == Some(object) {
                    report.unchanged += 1;
                    continue;
                }
                double.apply(object)?;
                self.served.insert(id, object.clone());
                report.applied += 1;
            }
        }
        Ok(report)
    }
}

impl ApiServerDouble {
    /// Applies every object of a manifest directory (read by `load_state_dir`; its
    /// kxdp.yaml is not an object and is left out). Returns how many were applied.
    pub fn apply_state_dir(&self, dir: &Path) -> Result<usize, DirSyncError> {
        let state = load_state_dir(dir)?;
        let objects = objects_of(&state.cluster)?;
        for kind in APPLY_ORDER {
            for (_, object) in objects.iter().filter(|((k, _), _)| k == kind) {
                self.apply(object)?;
            }
        }
        Ok(objects.len())
    }
}

/// Every object of the state as the JSON the double serves, by (kind, key). Checked here,
/// before anything is applied, so a directory with an object the double cannot serve
/// changes nothing.
fn objects_of(cluster: &ClusterState) -> Result<BTreeMap<(String, Key), Value>, DirSyncError> {
    fn json<'a, T: serde::Serialize>(
        kind: &'static str,
        list: &'a [T],
    ) -> impl Iterator<Item = Result<Value, DirSyncError>> + 'a {
        list.iter().map(move |o| {
            serde_json::to_value(o).map_err(|source| DirSyncError::Json { kind, source })
        })
    }
    let values = json("Namespace", &cluster.namespaces)
        .chain(json("Node", &cluster.nodes))
        .chain(json("ServiceCIDR", &cluster.service_cidrs))
        .chain(json("Service", &cluster.services))
        .chain(json("NetworkPolicy", &cluster.network_policies))
        .chain(json("EndpointSlice", &cluster.endpoint_slices))
        .chain(json("Pod", &cluster.pods));
    let mut out = BTreeMap::new();
    for value in values {
        let mut object = value?;
        let (kind, key) = servable(&object)?;
        // The double stamps its own resourceVersion; one from a file would only mislead.
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        out.insert((kind, key), object);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n\
                        spec:\n  podCIDR: 10.244.1.0/24\n\
                        status:\n  addresses:\n  - {type: InternalIP, address: 192.168.1.1}\n";
    const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n";

    #[test]
    fn follows_the_directory_applying_only_what_changed() {
        let dir = std::env::temp_dir().join(format!("kxdp-double-dirsync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "a.yaml", NODE);
        write(&dir, "b.yaml", NAMESPACE);
        let double = ApiServerDouble::start().unwrap();
        let mut sync = DirSync::new(&dir);
        let first = sync.sync_if_changed(&double).unwrap().unwrap();
        assert_eq!(first.applied, 2);
        assert_eq!(double.current("Node").len(), 1);
        assert!(sync.sync_if_changed(&double).is_none(), "nothing changed");

        // One file gone, the other rewritten unchanged: one deletion, nothing re-applied.
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        write(&dir, "a.yaml", &format!("# touched\n{NODE}"));
        let rv = double.resource_version();
        let second = sync.sync_if_changed(&double).unwrap().unwrap();
        assert_eq!(
            second,
            SyncReport {
                applied: 0,
                deleted: 1,
                unchanged: 1
            }
        );
        assert!(double.current("Namespace").is_empty());
        assert_eq!(double.resource_version(), rv + 1, "only the deletion");

        // A broken file: an error, and the double keeps serving what it had.
        write(&dir, "c.yaml", "kind: Node\nmetadata: [\n");
        assert!(sync.sync_if_changed(&double).unwrap().is_err());
        assert_eq!(double.current("Node").len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let double = ApiServerDouble::start().unwrap();
        let e = double
            .apply_state_dir(Path::new("/nonexistent/kxdp-double"))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kxdp-double"), "{e}");
    }
}
