//! Delegation to the IPAM plugin named by `ipam.type` (CNI spec §4): found in CNI_PATH, run
//! with our environment and the whole network configuration on stdin, its stderr going to
//! ours, its result or error read from its stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::spec::{CniError, CniResult, code};

/// The per-attachment variables an IPAM call carries. ADD/DEL/CHECK pass the runtime's;
/// GC passes a forgotten attachment's own when it releases its address.
#[derive(Debug, Clone, Default)]
pub struct IpamVars<'a> {
    pub container_id: Option<&'a str>,
    pub ifname: Option<&'a str>,
    pub netns: Option<&'a Path>,
    pub args: Option<&'a str>,
}

/// The IPAM plugin of one invocation.
#[derive(Debug, Clone)]
pub struct Ipam {
    name: String,
    binary: PathBuf,
    cni_path: Vec<PathBuf>,
    /// The configuration we received, as we received it (with at most its cniVersion
    /// lowered, see [`Ipam::new`]).
    config: Vec<u8>,
    /// Whether the plugin speaks spec 1.1.0 (GC, STATUS).
    speaks_1_1: bool,
}

/// What a delegated GC or STATUS did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delegated {
    Done,
    /// The plugin does not implement spec 1.1.0, so it has no such command.
    NotSupported,
}

#[derive(Debug, Deserialize)]
struct VersionInfo {
    #[serde(rename = "supportedVersions", default)]
    supported_versions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorInfo {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl Ipam {
    /// Finds `name` in `cni_path` and asks it which versions it speaks. When the
    /// configuration says 1.1.0 and the plugin only knows 1.0.0 (containernetworking-plugins
    /// before 1.5), its copy of the configuration says 1.0.0: within a major version the
    /// formats are compatible, and ADD/DEL/CHECK mean the same in both.
    pub fn new(
        name: &str,
        cni_path: &[PathBuf],
        config: &[u8],
        config_version: &str,
    ) -> Result<Ipam, CniError> {
        let binary = cni_path
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "IPAM plugin not found",
                    format!(
                        "ipam.type {name:?} is not in CNI_PATH ({})",
                        cni_path
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(":")
                    ),
                )
            })?;
        let mut ipam = Ipam {
            name: name.to_string(),
            binary,
            cni_path: cni_path.to_vec(),
            config: config.to_vec(),
            speaks_1_1: false,
        };
        let versions = ipam.supported_versions(config_version)?;
        ipam.speaks_1_1 = versions.iter().any(|v| v == "1.1.0");
        if !versions.iter().any(|v| v == config_version) {
            if config_version == "1.1.0" && versions.iter().any(|v| v == "1.0.0") {
                ipam.config = with_version(config, "1.0.0")?;
            } else {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "IPAM plugin does not support this CNI version",
                    format!(
                        "{name} supports {}; the configuration says {config_version}",
                        versions.join(", ")
                    ),
                ));
            }
        }
        Ok(ipam)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn supported_versions(&self, config_version: &str) -> Result<Vec<String>, CniError> {
        let input = format!(r#"{{"cniVersion":"{config_version}"}}"#);
        let out = self.exec("VERSION", &IpamVars::default(), input.as_bytes())?;
        let info: VersionInfo = serde_json::from_slice(&out).map_err(|e| {
            CniError::new(
                code::IPAM_FAILED,
                "IPAM plugin's VERSION answer is unreadable",
                format!("{}: {e}", self.name),
            )
        })?;
        Ok(info.supported_versions)
    }

    /// ADD: the addresses, gateways, routes and DNS for the attachment.
    pub fn add(&self, vars: &IpamVars<'_>) -> Result<CniResult, CniError> {
        let out = self.exec("ADD", vars, &self.config)?;
        serde_json::from_slice(&out).map_err(|e| {
            CniError::new(
                code::IPAM_FAILED,
                "IPAM plugin's result is unreadable",
                format!("{}: {e}: {}", self.name, String::from_utf8_lossy(&out)),
            )
        })
    }

    /// DEL: releases the attachment's addresses (IPAM plugins make this idempotent).
    pub fn del(&self, vars: &IpamVars<'_>) -> Result<(), CniError> {
        self.exec("DEL", vars, &self.config).map(drop)
    }

    pub fn check(&self, vars: &IpamVars<'_>) -> Result<(), CniError> {
        self.exec("CHECK", vars, &self.config).map(drop)
    }

    /// GC with the configuration's valid attachments, when the plugin knows GC.
    pub fn gc(&self) -> Result<Delegated, CniError> {
        if !self.speaks_1_1 {
            return Ok(Delegated::NotSupported);
        }
        self.exec("GC", &IpamVars::default(), &self.config)
            .map(|_| Delegated::Done)
    }

    pub fn status(&self) -> Result<Delegated, CniError> {
        if !self.speaks_1_1 {
            return Ok(Delegated::NotSupported);
        }
        self.exec("STATUS", &IpamVars::default(), &self.config)
            .map(|_| Delegated::Done)
    }

    /// Runs the plugin; its stdout on success, its CNI error (code kept) on failure.
    fn exec(&self, command: &str, vars: &IpamVars<'_>, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let mut cmd = Command::new(&self.binary);
        cmd.env("CNI_COMMAND", command).env(
            "CNI_PATH",
            std::env::join_paths(&self.cni_path).unwrap_or_default(),
        );
        set_or_clear(
            &mut cmd,
            "CNI_CONTAINERID",
            vars.container_id.map(str::to_string),
        );
        set_or_clear(&mut cmd, "CNI_IFNAME", vars.ifname.map(str::to_string));
        set_or_clear(
            &mut cmd,
            "CNI_NETNS",
            vars.netns.map(|p| p.to_string_lossy().into_owned()),
        );
        set_or_clear(&mut cmd, "CNI_ARGS", vars.args.map(str::to_string));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let failed = |e: std::io::Error| {
            CniError::new(
                code::IO,
                "running the IPAM plugin failed",
                format!("{} {command}: {e}", self.binary.display()),
            )
        };
        let mut child = cmd.spawn().map_err(failed)?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits without reading its stdin closes the pipe on us; its
            // exit status says what went wrong, so a broken pipe here is not the error.
            if let Err(e) = input.write_all(stdin)
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(e));
            }
        }
        let out = child.wait_with_output().map_err(failed)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(match serde_json::from_slice::<ErrorInfo>(&out.stdout) {
            Ok(e) => CniError::new(
                e.code,
                format!("IPAM plugin {} {command}: {}", self.name, e.msg),
                e.details,
            ),
            Err(_) => CniError::new(
                code::IPAM_FAILED,
                format!("IPAM plugin {} {command} failed", self.name),
                format!(
                    "{}; stdout: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            ),
        })
    }
}

fn set_or_clear(cmd: &mut Command, key: &str, value: Option<String>) {
    match value {
        Some(v) => cmd.env(key, v),
        None => cmd.env_remove(key),
    };
}

/// `config` with its `cniVersion` replaced, everything else untouched.
fn with_version(config: &[u8], version: &str) -> Result<Vec<u8>, CniError> {
    let decode = |e: serde_json::Error| {
        CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    };
    let mut value: serde_json::Value = serde_json::from_slice(config).map_err(decode)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("cniVersion".to_string(), version.into());
    }
    serde_json::to_vec(&value).map_err(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rewrite_keeps_the_rest() {
        let out = with_version(
            br#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local","x":[1,2]}}"#,
            "1.0.0",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","x":[1,2]}})
        );
    }

    #[test]
    fn missing_plugin_is_a_config_error() {
        let err = Ipam::new(
            "kcni-no-such-ipam",
            &[PathBuf::from("/nonexistent")],
            b"{}",
            "1.0.0",
        )
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_CONFIG);
        assert!(err.details.contains("kcni-no-such-ipam"));
    }
}
