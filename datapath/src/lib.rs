//! kxdp's pure datapath: everything that happens to one packet.
//!
//! This crate never calls the OS: no sockets, no clock, no threads. Frames, time,
//! tables and flow state are handed in; every decision comes back as a [`Verdict`].
//! The live AF_XDP workers, `kxdp replay`, the fixture runner, fuzzers and benches
//! all drive the same [`pipeline::process`].

pub mod addr;
pub mod conntrack;
pub mod counters;
pub mod frame;
pub mod hash;
pub mod lb;
pub mod observer;
pub mod overlay;
pub mod pipeline;
pub mod policy;
pub mod tables;
pub mod verdict;
pub mod wire;

pub use addr::{Cidr, CidrParseError, IpKey, MacAddr, MacParseError};

/// The hash map type the tables use, re-exported so table builders need not name the crate.
pub mod foldhash_map {
    pub use foldhash::HashMap;
}
pub use frame::Frame;
pub use observer::{NoObserver, Observer};
pub use pipeline::process;
pub use tables::{PortId, Tables};
pub use verdict::{DropReason, Verdict};
