//! The root gate, the root-test lock and the skip log.
//!
//! - [`root_or_skip`] / [`skip_or_fail`]: a test that cannot run here says why and is
//!   skipped; under `CI=true` it fails instead (CI runs as root on a kernel that has what
//!   the tests need, so a skip there would hide a broken datapath).
//! - [`root_test`]: both of the above, for the tests that need the machine to themselves.
//! - [`exclusive`]: one root test at a time on the machine. The tests that start agents,
//!   labs, benches or generators share two vCPUs with everything else, and their rate and
//!   timing checks mean something only when they do not run beside each other (threads of
//!   one test binary, or binaries run side by side as nextest does). An exclusive `flock`
//!   on one file, held while the guard lives; the kernel releases it if the process dies.
//! - [`skipped`]: a test that does not run says why on stdout and, when `scripts/test.sh`
//!   asked for it (`KXDP_SKIP_LOG`), in the log it summarises at the end.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;

/// The lock file every kxdp root test locks.
pub const LOCK_PATH: &str = "/tmp/kxdp-root-tests.lock";

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// True when CI asked that nothing skips (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether to run a root test: true as root; false (skipped, and logged) otherwise, unless
/// `CI=true`, where it fails instead.
pub fn root_or_skip(what: &str) -> bool {
    is_root() || skip_or_fail(what, "needs root")
}

/// The prologue of a root test that measures or shares the machine: root (or a skip, a
/// failure under `CI=true`), then the root-test lock, held while the guard lives.
pub fn root_test(what: &str) -> Option<RootTestLock> {
    root_or_skip(what).then(exclusive)
}

/// A test that cannot run here says why and is skipped (returns false); under `CI=true`
/// it fails instead: CI has what these tests need.
pub fn skip_or_fail(what: &str, why: &str) -> bool {
    assert!(!under_ci(), "CI=true: {what} {why} and must not be skipped");
    skipped(what, why);
    false
}

/// Holds the machine-wide root-test lock until dropped.
#[derive(Debug)]
pub struct RootTestLock(#[allow(dead_code, reason = "held for its Drop")] File);

/// Waits for, then takes, the machine-wide root-test lock.
pub fn exclusive() -> RootTestLock {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("{LOCK_PATH}: {e}"));
    loop {
        // SAFETY: flock(2) on a file this function opened and keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return RootTestLock(file);
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EINTR),
            "flock {LOCK_PATH}: {e}"
        );
    }
}

/// Records that `what` did not run (or ran something else), and why: one line on stdout,
/// and one in `$KXDP_SKIP_LOG` when set (`what<TAB>why`).
pub fn skipped(what: &str, why: &str) {
    println!("skipped: {what}: {why}");
    let Ok(path) = std::env::var("KXDP_SKIP_LOG") else {
        return;
    };
    let line = format!(
        "{}\t{}\n",
        what.replace(['\t', '\n'], " "),
        why.replace(['\t', '\n'], " ")
    );
    // O_APPEND writes of one short line are not interleaved between processes.
    let written = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("KXDP_SKIP_LOG {path}: {e}");
    }
}
