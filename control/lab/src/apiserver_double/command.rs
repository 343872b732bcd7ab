//! `kxdp apiserver-double` (hidden, like `kxdp probe`): the test double serving a manifest
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

use super::{ApiServerDouble, DirSync, SyncReport};

/// The line printed on stdout once the double serves DIR.
pub const READY_PREFIX: &str = "kxdp apiserver-double ready";
/// How often DIR is looked at (and a signal noticed).
const POLL: Duration = Duration::from_millis(100);

/// `kxdp apiserver-double ...`
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
}

/// Entry point of `kxdp apiserver-double`.
pub fn main(args: ApiServerDoubleArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kxdp apiserver-double: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ApiServerDoubleArgs) -> Result<(), String> {
    if !args.manifests.is_dir() {
        return Err(format!(
            "--manifests {}: not a directory",
            args.manifests.display()
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let double = ApiServerDouble::start_on(args.listen)
        .map_err(|e| format!("--listen {}: cannot listen: {e}", args.listen))?;
    let mut sync = DirSync::new(&args.manifests);
    // The first read must work: a double serving nothing would only make agents wait.
    match sync.sync_if_changed(&double) {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(format!("--manifests {}: {e}", args.manifests.display())),
        None => return Err("the first look at --manifests saw nothing".into()),
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
                "kxdp apiserver-double: {} not applied, still serving the previous state: {e}",
                sync.dir().display()
            ),
        }
    }
    eprintln!("kxdp apiserver-double: stopping on a signal");
    drop(double);
    Ok(())
}

fn note_change(dir: &Path, r: SyncReport, rv: u64) {
    eprintln!(
        "kxdp apiserver-double: {} changed: {} applied, {} deleted, {} unchanged \
         (resourceVersion {rv})",
        dir.display(),
        r.applied,
        r.deleted,
        r.unchanged
    );
}

/// Written through a dot-file and a rename, so a reader never sees half of it.
fn write_kubeconfig(path: &Path, text: &str) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("--kubeconfig-out {}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
