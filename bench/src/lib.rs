//! kxdp's benchmarks. The criterion benches live in `benches/`; the throughput rig
//! (generator, kernel baseline, profiles) joins them with the live datapath.
//!
//! Profiling (`src/bin/profile.rs`): `workload` is a fixed, deterministic set of packet
//! paths through `datapath::process`; `ipp` counts instructions per packet on it under
//! callgrind; `flame` samples it (or a live agent) with perf and draws a flame graph.

pub mod flame;
pub mod ipp;
pub mod workload;
