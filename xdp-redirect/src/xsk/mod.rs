//! AF_XDP sockets for the workers (xdpilone underneath), and the parts of them other
//! AF_XDP users build on: the throughput rig's TX-only generator (`rig::traffic::afxdp`
//! in bench/rig) maps and registers its UMEM with [`umem::UmemArea`] and kicks and sizes
//! its tx ring with [`sys`].
//!
//! A worker owns one UMEM, shared (XDP_SHARED_UMEM) by its sockets on every port, so a
//! frame received on one port is transmitted on another without a userspace copy. Each
//! socket has its own fill and completion ring (the kernel wants a pair per device queue).
//! [`ledger`] tracks the owner of every frame so that none is ever lost.
//!
//! The UMEM's first socket binds on the UMEM's own file descriptor and every later socket
//! binds *through* it, so that socket (the anchor) must stay bound while others are: the
//! kernel refuses shared binds to an unbound socket, and its fill ring cannot be emptied
//! without closing it. The agent opens `host` and `uplink` first, which live as long as it.

// The ledger and the worker's socket wrapper move frames under the worker's own rules
// (every frame owned by exactly one party): of no use without a worker, so not public.
pub(crate) mod ledger;
pub(crate) mod socket;
pub mod sys;
pub mod umem;

pub use ledger::FrameLedger;
pub use sys::{XdpSocketStats, monotonic_ns, thread_id};
pub use umem::{UmemConfig, UmemConfigError};
