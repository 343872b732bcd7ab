//! kxdp's kernel edge: the XDP programs (C, `bpf/*.bpf.c`, built by `build.rs` with clang)
//! that hand pod and tunnel traffic to AF_XDP sockets, their loader (aya), and the AF_XDP
//! sockets and UMEM (xdpilone).
//!
//! Nothing here yet: the live-datapath issue fills it. The crate exists now so the
//! workspace layout (ARCHITECTURE.md §1) and the pinned aya 0.14 / xdpilone 1.3 builds are
//! checked from the start. It must never contain packet logic: that is `datapath::process`.
