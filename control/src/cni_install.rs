//! Putting the CNI plugin on the node: its binaries (`kxdp install-cni-plugins`, the
//! DaemonSet's init container) and its configuration list (the agent, once ready).
//!
//! Both are written next to their final name and renamed into place: a runtime that lists
//! the directory at any moment sees the old file or the new one, never half of one (and a
//! binary being executed keeps its old inode).
//!
//! The configuration is written only once the agent answers its local API: a runtime reads
//! `/etc/cni/net.d` on its own schedule, and a list present before the agent would send ADDs
//! nobody can answer. It stays when the agent stops (a restart, a rolling update): kxdp-cni
//! then answers "try again later" (CNI error 11) until the new agent is up, which kubelets
//! retry, instead of the node turning NotReady.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_api::conflist::{
    CHAIN, CNI_VERSIONS, CONFLIST_NAME, common_versions, is_config_file_name, is_kxdp_config,
};

/// How long a plugin may take to say which versions it speaks.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CniInstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a file name (plugins are installed under their own names)")]
    NoFileName(PathBuf),
    #[error(
        "CNI plugin {plugin} is not in {searched} (the DaemonSet's init container installs it \
         with `kxdp install-cni-plugins`)"
    )]
    PluginMissing { plugin: String, searched: String },
    #[error("{}: CNI_COMMAND=VERSION: {detail}", path.display())]
    PluginVersion { path: PathBuf, detail: String },
    #[error(
        "the CNI plugins speak no common version of {CNI_VERSIONS:?}: {}",
        found.join("; ")
    )]
    NoCommonVersion { found: Vec<String> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CniInstallError + '_ {
    move |source| CniInstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`install_conflist`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConflistInstalled {
    /// Whether the file was (re)written: false when it already held these bytes, so a
    /// restarted agent does not make runtimes reload an unchanged network.
    pub written: bool,
    /// Older kxdp configurations removed (an earlier name, e.g. `10-kxdp.conflist`).
    pub removed: Vec<String>,
    /// Other plugins' configurations left in place; ours sorts first, so runtimes that take
    /// the first file use ours, but anything reading them all (Multus) would still see them.
    pub foreign: Vec<String>,
}

/// Writes `conflist` as `dir/05-kxdp.conflist`, removes every other kxdp configuration in
/// `dir`, and reports the other plugins' files.
pub fn install_conflist(
    dir: &Path,
    conflist: &serde_json::Value,
) -> Result<ConflistInstalled, CniInstallError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut text = serde_json::to_string_pretty(conflist).unwrap_or_default();
    text.push('\n');
    let target = dir.join(CONFLIST_NAME);
    let mut report = ConflistInstalled::default();
    if fs::read(&target).ok().as_deref() != Some(text.as_bytes()) {
        write_replacing(&target, text.as_bytes(), 0o644)?;
        report.written = true;
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        if name == CONFLIST_NAME || !is_config_file_name(&name) {
            continue;
        }
        let path = dir.join(&name);
        let ours = fs::read_to_string(&path).is_ok_and(|t| is_kxdp_config(&t));
        if ours {
            fs::remove_file(&path).map_err(io(&path))?;
            report.removed.push(name);
        } else {
            report.foreign.push(name);
        }
    }
    Ok(report)
}

/// The versions of [`CNI_VERSIONS`] every plugin of the chain speaks, asked of the binaries
/// the runtime will run (the first of each name along `cni_path`, as runtimes search it).
pub fn chain_versions(cni_path: &[PathBuf]) -> Result<Vec<&'static str>, CniInstallError> {
    let mut supported = Vec::new();
    let mut found = Vec::new();
    for plugin in CHAIN {
        let path = cni_path
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniInstallError::PluginMissing {
                plugin: plugin.to_string(),
                searched: std::env::join_paths(cni_path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            })?;
        let versions = plugin_versions(&path)?;
        found.push(format!("{plugin} {}", versions.join(",")));
        supported.push(versions);
    }
    let common = common_versions(&supported);
    if common.is_empty() {
        return Err(CniInstallError::NoCommonVersion { found });
    }
    Ok(common)
}

/// `supportedVersions` of the plugin at `path` (CNI_COMMAND=VERSION).
fn plugin_versions(path: &Path) -> Result<Vec<String>, CniInstallError> {
    let fail = |detail: String| CniInstallError::PluginVersion {
        path: path.to_path_buf(),
        detail,
    };
    let mut child = Command::new(path)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not read while waiting: a chatty plugin must not block on a full pipe.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The spec has the runtime send the version it wants; plugins answer with all they know.
        let _ = stdin.write_all(br#"{"cniVersion":"1.0.0"}"#);
    }
    // A plugin that hangs must not hold up the agent's start forever.
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no answer within {VERSION_TIMEOUT:?}")));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(fail(format!("{}: {}", out.status, stdout.trim())));
    }
    let answer: serde_json::Value =
        serde_json::from_str(&stdout).map_err(|e| fail(format!("{stdout:?}: {e}")))?;
    let versions = answer["supportedVersions"]
        .as_array()
        .ok_or_else(|| fail(format!("no supportedVersions in {stdout:?}")))?;
    Ok(versions
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// Copies each of `files` into `dir` under its own name, executable, replacing what is
/// there. Returns the installed paths.
pub fn install_plugins(dir: &Path, files: &[PathBuf]) -> Result<Vec<PathBuf>, CniInstallError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut installed = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .ok_or_else(|| CniInstallError::NoFileName(file.clone()))?;
        let bytes = fs::read(file).map_err(io(file))?;
        let target = dir.join(name);
        write_replacing(&target, &bytes, 0o755)?;
        installed.push(target);
    }
    Ok(installed)
}

/// Writes `bytes` to a hidden temporary beside `target`, syncs it, and renames it over
/// `target`.
fn write_replacing(target: &Path, bytes: &[u8], mode: u32) -> Result<(), CniInstallError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .ok_or_else(|| CniInstallError::NoFileName(target.to_path_buf()))?;
    let tmp = dir.join(format!(
        ".{}.kxdp-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, target).map_err(io(target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_api::conflist::{ConflistParams, conflist};

    fn ours() -> serde_json::Value {
        conflist(ConflistParams {
            agent_socket: Path::new("/run/kxdp/agent.sock"),
            state_dir: Path::new("/var/lib/kxdp-cni"),
            ipam_data_dir: Path::new("/var/lib/cni/networks"),
            versions: &CNI_VERSIONS,
        })
    }

    #[test]
    fn replaces_older_kxdp_files_and_keeps_others() {
        let tmp = testkit::TempDir::new("cni-install");
        let dir = tmp.path().to_path_buf();
        let flannel = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel"}]}"#;
        fs::write(dir.join("10-flannel.conflist"), flannel).unwrap();
        fs::write(
            dir.join("10-kxdp.conflist"),
            r#"{"cniVersion":"1.0.0","name":"kxdp","plugins":[{"type":"kxdp-cni"}]}"#,
        )
        .unwrap();
        fs::write(dir.join("README"), "not a config").unwrap();

        let r = install_conflist(&dir, &ours()).unwrap();
        assert!(r.written);
        assert_eq!(r.removed, ["10-kxdp.conflist"]);
        assert_eq!(r.foreign, ["10-flannel.conflist"]);
        let text = fs::read_to_string(dir.join(CONFLIST_NAME)).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ours());
        assert_eq!(
            fs::read_to_string(dir.join("10-flannel.conflist")).unwrap(),
            flannel
        );
        assert!(dir.join("README").exists());
        // Nothing half-written is left behind.
        let hidden: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "{hidden:?}");

        // Again, unchanged: not rewritten.
        let again = install_conflist(&dir, &ours()).unwrap();
        assert!(!again.written);
        assert!(again.removed.is_empty());
    }

    /// A plugin that answers VERSION with `versions`.
    fn fake_plugin(dir: &Path, name: &str, versions: &str) {
        let script = format!(
            "#!/bin/sh\ncat >/dev/null\necho '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":{versions}}}'\n"
        );
        fs::write(dir.join(name), script).unwrap();
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn versions_are_those_every_plugin_speaks() {
        let tmp = testkit::TempDir::new("cni-versions");
        let (first, second) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir_all(&first).unwrap();
        fs::create_dir_all(&second).unwrap();
        let path = [first.clone(), second.clone()];
        assert!(matches!(
            chain_versions(&path),
            Err(CniInstallError::PluginMissing { plugin, .. }) if plugin == "kxdp-cni"
        ));
        fake_plugin(&second, "kxdp-cni", r#"["0.4.0","1.0.0","1.1.0"]"#);
        fake_plugin(&second, "portmap", r#"["0.4.0","1.0.0"]"#);
        assert_eq!(chain_versions(&path).unwrap(), ["1.0.0"]);
        // The first along the path is the one a runtime runs.
        fake_plugin(&first, "portmap", r#"["1.0.0","1.1.0"]"#);
        assert_eq!(chain_versions(&path).unwrap(), ["1.0.0", "1.1.0"]);
        fake_plugin(&first, "portmap", r#"["0.3.1"]"#);
        assert!(matches!(
            chain_versions(&path),
            Err(CniInstallError::NoCommonVersion { .. })
        ));
        fs::write(first.join("portmap"), "#!/bin/sh\necho garbage\n").unwrap();
        assert!(matches!(
            chain_versions(&path),
            Err(CniInstallError::PluginVersion { .. })
        ));
    }

    #[test]
    fn plugins_are_copied_executable() {
        let tmp = testkit::TempDir::new("cni-plugins");
        let dir = tmp.path().to_path_buf();
        let src = dir.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("host-local"), b"#!/bin/true\n").unwrap();
        let to = dir.join("bin");
        let installed = install_plugins(&to, &[src.join("host-local")]).unwrap();
        assert_eq!(installed, [to.join("host-local")]);
        let meta = fs::metadata(to.join("host-local")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(matches!(
            install_plugins(&to, &[src.join("missing")]),
            Err(CniInstallError::Io { .. })
        ));
    }
}
