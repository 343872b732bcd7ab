//! The `kxdp` binary's library: the command line, the live agent (XDP programs, AF_XDP
//! workers, the local API, metrics), and where its cluster state comes from (a state
//! directory or the Kubernetes API). The model it translates with is the `model` crate.

pub mod agent;
pub mod cleanup;
pub mod cli;
pub mod cni_install;
pub mod source;
