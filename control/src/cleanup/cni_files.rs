//! CNI files: kxdp's configuration (`05-kxdp.conflist`, and any older file whose plugin
//! is kxdp-cni, as the agent itself replaces them) and the `kxdp-cni` binary; Flannel's
//! configuration (`10-flannel.conflist`: any file whose plugin is `flannel`).

use std::path::Path;

use agent_api::conflist::{PLUGIN_TYPE, is_config_file_name, is_kxdp_config};
use serde_json::Value;

use super::{CleanupError, CleanupOptions, CleanupReport};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CleanupError + '_ {
    move |source| CleanupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn remove_kxdp(opts: &CleanupOptions, report: &mut CleanupReport) {
    let r = remove_configs(&opts.cni_conf_dir, is_kxdp_config, report);
    report.step(r);
    let r = remove_file(&opts.cni_bin_dir.join(PLUGIN_TYPE), "CNI plugin", report);
    report.step(r);
}

/// Whether a configuration's plugin (or one plugin of its list) is Flannel's.
fn is_flannel_config(text: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let is_flannel = |p: &Value| p["type"] == "flannel";
    is_flannel(&v)
        || v["plugins"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(is_flannel))
}

pub(super) fn remove_flannel_configs(dir: &Path, report: &mut CleanupReport) {
    let r = remove_configs(dir, is_flannel_config, report);
    report.step(r);
}

/// Removes the configuration files in `dir` whose text `ours` claims. A missing
/// directory holds none.
fn remove_configs(
    dir: &Path,
    ours: fn(&str) -> bool,
    report: &mut CleanupReport,
) -> Result<(), CleanupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| is_config_file_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        // A file that cannot be read is not known to be ours: it stays.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if ours(&text) {
            remove_file(&path, "CNI configuration", report)?;
        }
    }
    Ok(())
}

/// Removes `path` if it is there.
pub(super) fn remove_file(
    path: &Path,
    what: &str,
    report: &mut CleanupReport,
) -> Result<(), CleanupError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            report.removed(format!("{what} {}", path.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_flannel_configurations() {
        let list = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true}},{"type":"portmap"}]}"#;
        assert!(is_flannel_config(list));
        assert!(is_flannel_config(r#"{"name":"x","type":"flannel"}"#));
        assert!(!is_flannel_config(
            r#"{"name":"k","plugins":[{"type":"kxdp-cni"}]}"#
        ));
        assert!(!is_flannel_config("not json"));
    }
}
