//! What the model's integration tests share: all of it from the workspace's test kit.

#![allow(unused_imports, reason = "each test binary uses a different part")]

pub use testkit::TempDir;
pub use testkit::offline::{PolicyRecorder, pod_mac, sctp_init, step, tables_for};
pub use testkit::oracle::crc32c;
