//! Where the repository's files are, for tests in any crate (a test's own
//! `CARGO_MANIFEST_DIR` depends on how deep its crate sits).

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    // This crate is pcap-fixtures/testkit.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared/fixtures` beside the repository: other projects' captures and manifests,
/// which tests read in place (they are never copied into the repository).
pub fn shared_fixtures() -> PathBuf {
    repo_root().join("../shared/fixtures")
}

/// `../shared/fixtures/<project>` when it holds `marker` (a file the test reads); otherwise
/// the test is skipped and says so, or under `CI=true` fails: CI has the fixtures.
pub fn shared_fixture(project: &str, marker: &str) -> Option<PathBuf> {
    let dir = shared_fixtures().join(project);
    if dir.join(marker).is_file() {
        return Some(dir);
    }
    crate::root::skip_or_fail(
        &format!("the tests over the {project} fixtures"),
        &format!("{} is missing", dir.join(marker).display()),
    );
    None
}

/// The offline example `pcap-fixtures/examples/<name>`.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("pcap-fixtures/examples").join(name)
}

/// The captures (`.pcap`, `.pcapng`) below `dir`, at any depth, sorted; none when `dir` is
/// missing or unreadable (the caller says whether that is a skip or a failure).
pub fn captures_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path
                .extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng")
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, &mut found);
    found.sort();
    found
}
