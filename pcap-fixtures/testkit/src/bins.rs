//! The workspace's binaries, for tests that run one built by another crate (a lab test
//! runs `kxdp`, built by `control`, and `kxdp-cni`, built by `cni`). Cargo gives a test only
//! its own crate's binaries (`CARGO_BIN_EXE_*`); the others are in the same target
//! directory once built, which `cargo test --workspace` (the README's test command) does
//! before any test runs.

use std::path::PathBuf;

/// The path of binary `name` of workspace package `package`, built in the same profile as
/// this test. Panics, saying how to build it, when it is not there.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the workspace's tests (cargo test --workspace), or build it \
         first (cargo build -p {package} --bin {name})",
        path.display()
    );
    path
}
