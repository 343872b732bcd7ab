//! `kxdp-lab apiserver-double` (hidden, like `kxdp-lab probe`): the test double serving a manifest
//! directory over the list/watch protocol, for running an agent with `--kubeconfig`
//! without a cluster (the lab's `--source api`). Not an API server: see the module docs.
//!
//! It reads DIR, listens, writes a kubeconfig pointing at itself, prints one ready line on
//! stdout, then follows DIR (polled, as the agent polls `--state`) until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::{ApiServerDouble, DirSync, DirSyncError, SyncReport};

/// Why `kxdp-lab apiserver-double` could not serve; each names the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("--manifests {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot handle signal {signal}: {source}")]
    Signal { signal: i32, source: std::io::Error },
    #[error("--listen {addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--manifests {}: {source}", .dir.display())]
    Manifests {
        dir: PathBuf,
        source: Box<DirSyncError>,
    },
    #[error("the first look at --manifests saw nothing")]
    NothingSeen,
    #[error("--kubeconfig-out {}: not a file path", .0.display())]
    KubeconfigPath(PathBuf),
    #[error("{}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The line printed on stdout once the double serves DIR.
pub const READY_PREFIX: &str = "kxdp-lab apiserver-double ready";
/// How often DIR is looked at (and a signal noticed).
const POLL: Duration = Duration::from_millis(100);

/// `kxdp-lab apiserver-double ...`
#[derive(Debug, Args)]
pub struct ApiServerDoubleArgs {
    /// Manifest directory (as `kxdp agent --state` reads it): its objects are served, and
    /// changes to its files are applied (and vanished objects deleted) as they happen.
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// Where to listen (plain HTTP); port 0 picks a free one.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// Write a kubeconfig whose current context is this double (no credentials).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Answer only requests bearing this token (401 otherwise), as an API server checks a
    /// service account's.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// Entry point of `kxdp-lab apiserver-double`.
pub fn main(args: ApiServerDoubleArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kxdp-lab apiserver-double: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ApiServerDoubleArgs) -> Result<(), CommandError> {
    if !args.manifests.is_dir() {
        return Err(CommandError::NotADirectory(args.manifests.clone()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|source| {
            CommandError::Signal {
                signal: sig,
                source,
            }
        })?;
    }
    let double = ApiServerDouble::start_on(args.listen).map_err(|source| CommandError::Listen {
        addr: args.listen,
        source,
    })?;
    if let Some(token) = &args.token {
        double.require_token(token);
    }
    let mut sync = DirSync::new(&args.manifests);
    // The first read must work: a double serving nothing would only make agents wait.
    match sync.sync_if_changed(&double) {
        Some(Ok(_)) => {}
        Some(Err(source)) => {
            return Err(CommandError::Manifests {
                dir: args.manifests.clone(),
                source: Box::new(source),
            });
        }
        None => return Err(CommandError::NothingSeen),
    }
    if let Some(path) = &args.kubeconfig_out {
        write_kubeconfig(path, &double.kubeconfig_yaml())?;
    }
    println!(
        "{READY_PREFIX} url={} objects={} kubeconfig={}",
        double.url(),
        sync.objects(),
        args.kubeconfig_out
            .as_ref()
            .map_or_else(|| "-".to_string(), |p| p.display().to_string())
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        match sync.sync_if_changed(&double) {
            None => {}
            Some(Ok(report)) => note_change(sync.dir(), report, double.resource_version()),
            // Keep serving the last good state; the next change of DIR is read again.
            Some(Err(e)) => eprintln!(
                "kxdp-lab apiserver-double: {} not applied, still serving the previous state: {e}",
                sync.dir().display()
            ),
        }
    }
    eprintln!("kxdp-lab apiserver-double: stopping on a signal");
    drop(double);
    Ok(())
}

fn note_change(dir: &Path, r: SyncReport, rv: u64) {
    eprintln!(
        "kxdp-lab apiserver-double: {} changed: {} applied, {} deleted, {} unchanged \
         (resourceVersion {rv})",
        dir.display(),
        r.applied,
        r.deleted,
        r.unchanged
    );
}

/// Written through a dot-file and a rename, so a reader never sees half of it.
fn write_kubeconfig(path: &Path, text: &str) -> Result<(), CommandError> {
    let name = path
        .file_name()
        .ok_or_else(|| CommandError::KubeconfigPath(path.to_path_buf()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CommandError::Write { path, source }
    };
    std::fs::write(&tmp, text).map_err(failed(&tmp))?;
    std::fs::rename(&tmp, path).map_err(failed(path))
}
