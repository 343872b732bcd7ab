//! kxdp's scenario cases: state dir + input pcaps -> expected output pcaps and verdicts
//! (Katran's "fixtures as data"), their generator and their runner.
//!
//! * [`cases`]: the case definitions, by theme; [`packet`] builds every frame with
//!   etherparse, independently of the datapath; [`state`] (with
//!   [`testkit::manifests::service`]) writes a case's own manifests; [`sctp`] builds SCTP
//!   packets with a CRC32c of its own.
//! * [`generate`]: writes `cases/<name>/` (and the README demo's pcaps) from those.
//! * [`runner`]: [`run_case`] replays a case directory through the library behind
//!   `kxdp replay` and compares the outputs with the expected files.
//!
//! Nothing in this crate ever computes an expected output by calling the datapath: a
//! fixture whose expectation came from the code under test could not fail.

pub mod case;
pub mod cases;
pub mod demo;
pub mod generate;
pub mod packet;
pub mod pcapio;
pub mod runner;
pub mod sctp;
pub mod spec;
pub mod state;

pub use runner::{CaseError, CaseReport, run_case};

use std::path::PathBuf;

/// The `cases/` directory of this crate.
pub fn cases_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cases")
}
