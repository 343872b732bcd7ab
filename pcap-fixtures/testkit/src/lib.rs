//! What kxdp's tests share, across every crate of the workspace (a dev-dependency only):
//!
//! - [`root`]: whether a root test may run (as root; otherwise it is skipped and says so,
//!   except under `CI=true`, where it fails), the machine-wide lock that keeps root tests
//!   from running beside each other, and the skip log `scripts/test.sh` summarises.
//! - [`netns`]: network namespaces removed on drop, threads inside them, leftovers.
//! - [`frames`]: Ethernet + IPv4 test frames (TCP, UDP, SCTP INIT, VXLAN) built with
//!   etherparse.
//! - [`offline`]: packets through the pure pipeline with tables translated from a state
//!   directory.
//! - [`process`]: children's stdout line by line, stopping an agent as an init system does;
//!   [`http`]: one request from inside a namespace; [`sock`]: socket options.
//! - [`TempDir`], [`wait`] (polling with a deadline), [`cmd`] (commands that must succeed),
//!   [`bins`] (the workspace's binaries beside the test), [`manifests`] (a Node's, a
//!   Service's and its EndpointSlice's YAML), [`paths`] (the repository and
//!   ../shared/fixtures), [`oracle`] (slow, obviously right reference implementations to
//!   check the datapath's fast ones against).
//! - [`xdp`] (feature `xdp`, for xdp-redirect's and the rig's AF_XDP tests): interfaces by
//!   name, the generator a live-frames test runs with.

pub mod bins;
pub mod cmd;
pub mod frames;
pub mod http;
pub mod manifests;
pub mod netns;
pub mod offline;
pub mod oracle;
pub mod paths;
pub mod process;
pub mod root;
pub mod sock;
mod tempdir;
pub mod wait;
#[cfg(feature = "xdp")]
pub mod xdp;

pub use tempdir::TempDir;
