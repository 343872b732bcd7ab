//! The `kxdp agent` on a node, end to end, in network namespaces: pods, traffic, reloads
//! and cleanup (`agent`), its HTTP endpoints (`metrics`, `health`), Service churn under traffic
//! (`churn`), `kxdp cleanup` after a killed agent and of kube-proxy's and Flannel's
//! leftovers (`cleanup`), every rx queue of a multi-queue uplink served (`queues`), and the uplink and
//! its MTU found without flags (`uplink`).
//!
//! Root only: each test takes the machine-wide root-test lock (testkit::root), so sharing
//! one binary runs them one at a time as before; without root they skip with a message,
//! except under CI=true where they fail.

mod agent;
mod churn;
mod cleanup;
mod health;
mod metrics;
mod queues;
mod support;
mod uplink;
