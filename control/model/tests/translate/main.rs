//! Cluster state -> tables: the state-directory contract (`state_dir`), the incremental
//! translator against the pure one (`incremental`), and Service semantics against
//! kube-proxy's (`kube_proxy`). One binary, one link, for the model's translation tests.

mod incremental;
mod kube_proxy;
mod state_dir;
