//! kxdp's benchmarks. The criterion benches live in `benches/`; the throughput rig
//! (generator, kernel baseline, profiles) joins them with the live datapath.
