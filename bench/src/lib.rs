//! kxdp's benchmarks. The criterion benches live in `benches/`; the throughput rig
//! (generator, kernel baseline, profiles) joins them with the live datapath. The control
//! plane's scale run is `src/bin/scale.rs`, on the synthetic cluster of [`scale_cluster`]
//! and the measurements of [`scale_harness`].

pub mod scale_cluster;
pub mod scale_harness;
