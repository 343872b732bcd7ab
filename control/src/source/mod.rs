//! Where the agent's [`ClusterState`](model::state::ClusterState) comes from when it is not
//! a state directory: the live Kubernetes API.

pub mod change_log;
pub mod kube;

pub use self::kube::{
    FIELD_MANAGER, KubeSource, KubeSourceError, NodePatchError, SERVICE_ACCOUNT_DIR, SourceOptions,
    SourceUpdate, WatchedKind,
};
