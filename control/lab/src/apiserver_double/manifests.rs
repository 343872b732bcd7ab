//! Serving a manifest directory (ARCHITECTURE.md §4) from the double: every object the
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

use super::{ApiServerDouble, KINDS, Key};
use model::state::watch::DirWatch;
use model::state::{ClusterState, StateError, load_state_dir};

/// Kinds in the order they are applied: what others refer to first (a Pod last, after
/// the Namespace it lives in and the EndpointSlices naming it). Deletions go in reverse.
const APPLY_ORDER: [&str; 6] = [
    "Namespace",
    "Node",
    "Service",
    "NetworkPolicy",
    "EndpointSlice",
    "Pod",
];

/// Why a directory could not be served. The double is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum DirSyncError {
    #[error(transparent)]
    Load(#[from] StateError),
    /// An object that loaded but cannot be served (no name, a kind the double lacks).
    #[error("{0}")]
    Object(String),
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
                    double.delete(&kind, &key.0, &key.1);
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
                double.apply(object);
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
            for object in objects
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|(_, o)| o)
            {
                self.apply(object);
            }
        }
        Ok(objects.len())
    }
}

/// Every object of the state as the JSON the double serves, by (kind, key). Checked here so
/// that [`ApiServerDouble::apply`], which panics on what a test should never hand it, is
/// only ever given servable objects.
fn objects_of(cluster: &ClusterState) -> Result<BTreeMap<(String, Key), Value>, DirSyncError> {
    let mut values: Vec<Result<Value, serde_json::Error>> = Vec::new();
    values.extend(cluster.namespaces.iter().map(serde_json::to_value));
    values.extend(cluster.nodes.iter().map(serde_json::to_value));
    values.extend(cluster.services.iter().map(serde_json::to_value));
    values.extend(cluster.network_policies.iter().map(serde_json::to_value));
    values.extend(cluster.endpoint_slices.iter().map(serde_json::to_value));
    values.extend(cluster.pods.iter().map(serde_json::to_value));
    let mut out = BTreeMap::new();
    for value in values {
        let mut object = value.map_err(|e| DirSyncError::Object(format!("to JSON: {e}")))?;
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if !KINDS.iter().any(|(k, _, _)| *k == kind) {
            return Err(DirSyncError::Object(format!(
                "an object of kind {kind:?}: not served"
            )));
        }
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
            return Err(DirSyncError::Object(format!("a {kind} without a name")));
        };
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // The double stamps its own resourceVersion; one from a file would only mislead.
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        out.insert((kind, (namespace, name)), object);
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
        let double = ApiServerDouble::start();
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
        let double = ApiServerDouble::start();
        let e = double
            .apply_state_dir(Path::new("/nonexistent/kxdp-double"))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kxdp-double"), "{e}");
    }
}
