//! NetworkPolicy, end to end: cluster state -> `model::translate` per node ->
//! `datapath::process` on real frames, judged against three independent expectations.
//!
//! - `truth_tables`: upstream's e2e cases (kubernetes `test/e2e/network/netpol/`) and ours,
//!   as truth tables over the x/y/z model, probed through Services;
//! - `cyclonus`: cyclonus's computed grids and its policy files (fixtures beside the
//!   checkout);
//! - `policy_api`: the cluster model of kubernetes-sigs/network-policy-api's conformance
//!   suite (fixtures beside the checkout).
//!
//! All three probe the same way, with one model of the cluster (`probe`) and one grid
//! runner (`grid`), so a probe means the same thing whichever suite asks it; what each
//! expects is its own.

mod grid;
mod probe;

mod cyclonus;
mod policy_api;
mod truth_tables;
