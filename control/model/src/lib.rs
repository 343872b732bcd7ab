//! kxdp's control-plane model, pure: what the agent is configured with ([`config`]), the
//! Kubernetes objects it reads ([`k8s`]), the state directory ([`state`]: loading,
//! validation, change detection) and [`translate`], which turns cluster state and config
//! into the datapath's tables for one node.
//!
//! Everything here is a function of its inputs: no async runtime, no Kubernetes client, no
//! kernel, no IO beyond reading a state directory. The agent (`control`), `kxdp replay`, the
//! fixtures and the benches all build their tables through this crate, so they agree.

pub mod config;
pub mod k8s;
pub mod state;
pub mod translate;
