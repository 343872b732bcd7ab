//! What needs no root and no namespace: the `kxdp replay` CLI on temporary directories
//! (`replay_cli`), the deploy/ manifests against the agent's flags and RBAC
//! (`deploy_manifests`), and the kube-rs state source against the in-process API server
//! double (`kube_source`).

mod deploy_manifests;
mod kube_source;
mod replay_cli;
