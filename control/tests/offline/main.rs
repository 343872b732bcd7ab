//! What needs no namespace: the `kxdp replay` CLI on temporary directories
//! (`replay_cli`), the deploy/ manifests against the agent's flags and RBAC
//! (`deploy_manifests`), the kube-rs state source against the in-process API server
//! double (`kube_source`), and the image recipe in deploy/image/ (`image`; its rootfs check
//! chroots, the one test here that needs root).

mod deploy_manifests;
mod image;
mod kube_source;
mod replay_cli;
