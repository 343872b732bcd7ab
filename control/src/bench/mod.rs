//! `kxdp bench`: the throughput rig (ARCHITECTURE.md §5 has the machine's measured facts).

pub mod kernel_path;
