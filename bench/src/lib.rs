//! kxdp's benchmarks. The criterion benches live in `benches/`; the throughput rig
//! (generator, kernel baseline, profiles) joins them with the live datapath. The control
//! plane's scale run is `src/bin/scale.rs`, on the synthetic cluster of [`scale_cluster`]
//! and the measurements of [`scale_harness`].
//!
//! Profiling (`src/bin/profile.rs`): `workload` is a fixed, deterministic set of packet
//! paths through `datapath::process`; `ipp` counts instructions per packet on it under
//! callgrind; `flame` samples it (or a live agent) with perf and draws a flame graph.

pub mod flame;
pub mod ipp;
pub mod scale_cluster;
pub mod scale_harness;
pub mod workload;
