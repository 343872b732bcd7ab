//! `kxdp-lab pause`: a sandbox's infra container, as the CRI makes one per pod. It holds the
//! pod's namespaces open and, as PID 1 of the pod's PID namespace, reaps whatever is
//! orphaned into it, until it is told to stop.
//!
//! The kernel drops a signal to a namespace's PID 1 that has no handler for it, so SIGTERM
//! and SIGINT would never stop it with the default actions: handlers are installed for them
//! and for SIGCHLD, and the process sleeps in a blocking read of signal-hook's iterator,
//! never in a poll loop.

use std::io;
use std::process::ExitCode;

use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Waits for SIGINT or SIGTERM (then exits 0), reaping every child that exits meanwhile.
pub fn main() -> ExitCode {
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGCHLD]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kxdp-lab pause: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A child that exited before the handlers were there sent a SIGCHLD nobody saw.
    reap();
    for signal in signals.forever() {
        if signal == SIGCHLD {
            reap();
        } else {
            return ExitCode::SUCCESS;
        }
    }
    // forever() ends only when the handle is closed, which nothing here does.
    ExitCode::FAILURE
}

/// Reaps every child that has exited; one SIGCHLD may stand for several.
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the status int it is given.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // 0: children left, none exited; -1 (ECHILD): no children at all.
        return;
    }
}
