//! The CNI protocol as the runtime speaks it (spec 1.0.0 and 1.1.0): the `CNI_*` environment,
//! the network configuration on stdin, the result and error objects on stdout.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The spec versions this plugin implements, oldest first. 1.1.0 adds GC and STATUS; older
/// configurations (0.x, with their different result shapes) are refused with code 1.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// The version used in answers when the input did not say which one it speaks.
pub const DEFAULT_VERSION: &str = "1.0.0";

/// Error codes: 1-99 are the spec's, 100 and up are ours.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD (the agent is not answering).
    pub const NOT_AVAILABLE: u32 = 50;
    /// A change to the node's or the pod's network stack (rtnetlink, ethtool ioctl) failed.
    pub const LINK_FAILED: u32 = 100;
    /// The agent answered `{"ok":false}`.
    pub const AGENT_REFUSED: u32 = 101;
    /// The agent answered something that makes no sense (bad status, unreadable reply).
    pub const AGENT_PROTOCOL: u32 = 102;
    /// CHECK found the attachment different from its ADD result.
    pub const CHECK_MISMATCH: u32 = 103;
    /// The IPAM plugin failed without a CNI error, or returned a result we cannot use.
    pub const IPAM_FAILED: u32 = 104;
    /// ADD found the pod interface or the host veth already there.
    pub const ALREADY_EXISTS: u32 = 105;
    /// Our attachment records could not be read or written.
    pub const STATE_FAILED: u32 = 106;
}

/// A CNI error: printed on stdout as `{cniVersion, code, msg, details}` with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    /// Short: what failed.
    pub msg: String,
    /// Long: why, with the names and values involved.
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object for the spec `version` in use.
    pub fn to_json(&self, version: &str) -> String {
        #[derive(Serialize)]
        struct ErrorJson<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        let obj = ErrorJson {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&obj).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{DEFAULT_VERSION}","code":{},"msg":"error"}}"#,
                self.code
            )
        })
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl FromStr for Command {
    type Err = ();

    fn from_str(s: &str) -> Result<Command, ()> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return Err(()),
        })
    }
}

/// The invocation's `CNI_*` variables, validated for its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// `CNI_CONTAINERID`, `CNI_IFNAME`, `CNI_NETNS`: present for ADD, DEL and CHECK.
    pub attachment: Option<AttachmentEnv>,
    pub args: CniArgs,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<PathBuf>,
}

/// The per-attachment part of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentEnv {
    pub container_id: String,
    pub ifname: String,
    /// Required for ADD and CHECK; DEL may come without it (the netns is already gone).
    pub netns: Option<PathBuf>,
}

impl Env {
    /// Reads and validates the environment through `var` (`std::env::var` in the binary).
    /// Every invalid variable is named in the one error (code 4).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let Some(command_text) = var("CNI_COMMAND") else {
            return Err(invalid_env("CNI_COMMAND is not set"));
        };
        let command: Command = command_text.parse().map_err(|()| {
            invalid_env(format!(
                "CNI_COMMAND={command_text:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
            ))
        })?;
        let mut problems = Vec::new();
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let attachment = if needs_attachment {
            let container_id = var("CNI_CONTAINERID").unwrap_or_default();
            if let Err(why) = validate_container_id(&container_id) {
                problems.push(format!("CNI_CONTAINERID {why}"));
            }
            let ifname = var("CNI_IFNAME").unwrap_or_default();
            if let Err(why) = validate_ifname(&ifname) {
                problems.push(format!("CNI_IFNAME {why}"));
            }
            let netns = var("CNI_NETNS").map(PathBuf::from);
            if netns.is_none() && command != Command::Del {
                problems.push("CNI_NETNS is not set".to_string());
            }
            Some(AttachmentEnv {
                container_id,
                ifname,
                netns,
            })
        } else {
            None
        };
        let args = match var("CNI_ARGS") {
            Some(text) => CniArgs::parse(&text).unwrap_or_else(|why| {
                problems.push(format!("CNI_ARGS {why}"));
                CniArgs::default()
            }),
            None => CniArgs::default(),
        };
        let path: Vec<PathBuf> = var("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        // ADD, DEL, CHECK and GC run the IPAM plugin, which is found through CNI_PATH
        // (STATUS asks it only when it can).
        if path.is_empty() && !matches!(command, Command::Version | Command::Status) {
            problems.push("CNI_PATH is not set".to_string());
        }
        if !problems.is_empty() {
            return Err(invalid_env(problems.join("; ")));
        }
        Ok(Env {
            command,
            attachment,
            args,
            path,
        })
    }
}

fn invalid_env(details: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, "invalid environment variables", details)
}

/// Why an id or name from the runtime is refused; the Display follows the variable's name
/// (`CNI_IFNAME "a/b" contains ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is not set")]
    Unset,
    #[error("{0:?} must start with a letter or digit")]
    BadFirst(String),
    #[error("{0:?} may hold only letters, digits, '_', '.' and '-'")]
    BadChars(String),
    #[error("{0:?} is longer than 15 bytes")]
    TooLong(String),
    #[error("{0:?} is not a usable interface name")]
    Unusable(String),
    #[error("{0:?} contains '/', ':', whitespace or control characters")]
    Forbidden(String),
}

/// The spec's container id: alphanumeric first, then alphanumerics, '_', '.', '-'.
pub fn validate_container_id(id: &str) -> Result<(), NameError> {
    let mut chars = id.chars();
    match chars.next() {
        None => Err(NameError::Unset),
        Some(c) if !c.is_ascii_alphanumeric() => Err(NameError::BadFirst(id.to_string())),
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) => {
            Err(NameError::BadChars(id.to_string()))
        }
        _ => Ok(()),
    }
}

/// A Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn validate_ifname(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Unset);
    }
    if name.len() > 15 {
        return Err(NameError::TooLong(name.to_string()));
    }
    if name == "." || name == ".." {
        return Err(NameError::Unusable(name.to_string()));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(NameError::Forbidden(name.to_string()));
    }
    Ok(())
}

/// Why `CNI_ARGS` does not parse; the Display follows the variable's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("item {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("item {0:?} has an empty key")]
    EmptyKey(String),
}

/// `CNI_ARGS`: `KEY=VALUE;KEY=VALUE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    raw: Option<String>,
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// The variable as the runtime set it, for delegated plugins.
    pub fn raw(&self) -> Option<&str> {
        self.raw.as_deref()
    }

    pub fn parse(text: &str) -> Result<CniArgs, ArgsError> {
        let mut pairs = Vec::new();
        for item in text.split(';').filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| ArgsError::NotKeyValue(item.to_string()))?;
            if k.is_empty() {
                return Err(ArgsError::EmptyKey(item.to_string()));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs {
            raw: Some(text.to_string()),
            pairs,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The datapath port of the pod: `pod-<K8S_POD_NAMESPACE>-<K8S_POD_NAME>`.
    pub fn pod_port(&self) -> Result<String, CniError> {
        match (self.get("K8S_POD_NAMESPACE"), self.get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) => Ok(format!("pod-{ns}-{name}")),
            (ns, name) => {
                let missing: Vec<&str> = [
                    ns.is_none().then_some("K8S_POD_NAMESPACE"),
                    name.is_none().then_some("K8S_POD_NAME"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(invalid_env(format!(
                    "CNI_ARGS lacks {} (the pod's port is named pod-<namespace>-<name>)",
                    missing.join(" and ")
                )))
            }
        }
    }
}

/// The parts of the network configuration kxdp-cni reads; everything else is passed to the
/// IPAM plugin untouched (it receives the raw stdin).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    /// Pod MTU; default: the agent's `pod_mtu`.
    pub mtu: Option<u32>,
    /// rx/tx queues per veth end; default: the agent's worker count.
    pub queues: Option<u32>,
    /// The agent's API socket; default [`agent_api::DEFAULT_SOCKET`].
    pub agent_socket: Option<PathBuf>,
    /// Where attachment records live; default [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

pub use agent_api::record::DEFAULT_STATE_DIR;

/// The `ipam` section: only `type` matters to us.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// Parses stdin: JSON first (code 6), then the version (code 1), then the fields we use
    /// (code 6 for wrong types, 7 for values that make no sense).
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        let Some(version) = value.get("cniVersion").and_then(|v| v.as_str()) else {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "cniVersion is missing or not a string",
            ));
        };
        check_version(version)?;
        let conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let invalid = |details: String| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                details,
            )
        };
        if let Err(why) = validate_network_name(&self.name) {
            return Err(invalid(format!("name {why}")));
        }
        if let Some(mtu) = self.mtu
            && !(MIN_MTU..=MAX_MTU).contains(&mtu)
        {
            return Err(invalid(format!(
                "mtu {mtu} is outside {MIN_MTU}..={MAX_MTU}"
            )));
        }
        if let Some(q) = self.queues
            && !(1..=MAX_QUEUES).contains(&q)
        {
            return Err(invalid(format!("queues {q} is outside 1..={MAX_QUEUES}")));
        }
        Ok(())
    }

    /// The IPAM plugin's name, checked to be a plain file name (it is looked up in CNI_PATH).
    pub fn ipam_type(&self) -> Result<&str, CniError> {
        let t = self
            .ipam
            .as_ref()
            .map(|i| i.plugin_type.as_str())
            .unwrap_or("");
        if t.is_empty() || t == "." || t == ".." || t.contains('/') || t.contains('\0') {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!("ipam.type {t:?} must name an IPAM plugin in CNI_PATH"),
            ));
        }
        Ok(t)
    }

    /// At least spec 1.1.0 (GC and STATUS exist only there).
    pub fn is_at_least_1_1(&self) -> bool {
        self.cni_version != "1.0.0"
    }
}

/// Veth MTU bounds: IPv4's minimum and the veth driver's maximum.
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;
/// More queues than any NIC we would pair with; a bad number fails here, not in the kernel.
pub const MAX_QUEUES: u32 = 1024;

/// The spec's network name: alphanumeric first, then alphanumerics, '_', '.', '-'. It names
/// a directory of attachment records, so this also keeps it a plain file name.
pub fn validate_network_name(name: &str) -> Result<(), NameError> {
    validate_container_id(name)
}

/// Code 1 unless `version` is one we implement.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion {version:?} is not supported; kxdp-cni implements {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// The answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

/// An address with its prefix length, host bits kept ("10.244.1.5/24").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpPrefix {
    pub ip: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    pub fn new(ip: IpAddr, len: u8) -> Option<IpPrefix> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(IpPrefix { ip, len })
    }

    /// The default route's destination for the family of `ip`.
    pub fn default_for(ip: IpAddr) -> IpPrefix {
        match ip {
            IpAddr::V4(_) => IpPrefix {
                ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                len: 0,
            },
            IpAddr::V6(_) => IpPrefix {
                ip: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                len: 0,
            },
        }
    }

    pub fn is_default(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}

/// Why a text is not an [`IpPrefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0:?} is not address/prefix")]
    NoSlash(String),
    #[error("{text:?}: {source}")]
    Address {
        text: String,
        source: std::net::AddrParseError,
    },
    #[error("{text:?}: prefix: {source}")]
    Length {
        text: String,
        source: std::num::ParseIntError,
    },
    #[error("{0:?}: prefix too long")]
    TooLong(String),
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<IpPrefix, PrefixError> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::NoSlash(s.to_string()))?;
        let ip: IpAddr = ip.parse().map_err(|source| PrefixError::Address {
            text: s.to_string(),
            source,
        })?;
        let len: u8 = len.parse().map_err(|source| PrefixError::Length {
            text: s.to_string(),
            source,
        })?;
        IpPrefix::new(ip, len).ok_or_else(|| PrefixError::TooLong(s.to_string()))
    }
}

impl TryFrom<String> for IpPrefix {
    type Error = PrefixError;
    fn try_from(s: String) -> Result<IpPrefix, PrefixError> {
        s.parse()
    }
}

impl From<IpPrefix> for String {
    fn from(p: IpPrefix) -> String {
        p.to_string()
    }
}

/// The ADD result (also what IPAM plugins return, without `interfaces` and `interface`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Spec 1.1.0 only; left out of 1.0.0 results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpPrefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const ADD_ENV: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0",
        ),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn env_for_add() {
        let env = Env::from_vars(vars(ADD_ENV)).unwrap();
        assert_eq!(env.command, Command::Add);
        let att = env.attachment.unwrap();
        assert_eq!(att.container_id, "abc123");
        assert_eq!(att.ifname, "eth0");
        assert_eq!(att.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(env.args.pod_port().unwrap(), "pod-demo-web-0");
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn env_errors_name_every_bad_variable() {
        let err = Env::from_vars(vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "much-too-long-ifname"),
        ]))
        .unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        for name in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"] {
            assert!(err.details.contains(name), "{name} in {}", err.details);
        }
    }

    #[test]
    fn env_command() {
        let err = Env::from_vars(vars(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.details.contains("CNI_COMMAND"));
        let err = Env::from_vars(vars(&[])).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        let env = Env::from_vars(vars(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(env.command, Command::Version);
        assert_eq!(env.attachment, None);
        // DEL may come without a netns; GC without an attachment.
        let env = Env::from_vars(vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ]))
        .unwrap();
        assert_eq!(env.attachment.unwrap().netns, None);
        let env = Env::from_vars(vars(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")])).unwrap();
        assert_eq!(env.command, Command::Gc);
    }

    #[test]
    fn cni_args() {
        let args = CniArgs::parse("A=1;B=;C=x=y").unwrap();
        assert_eq!(args.get("A"), Some("1"));
        assert_eq!(args.get("B"), None);
        assert_eq!(args.get("C"), Some("x=y"));
        assert!(CniArgs::parse("A=1;junk").is_err());
        assert!(CniArgs::parse("=1").is_err());
        let err = CniArgs::parse("K8S_POD_NAME=web")
            .unwrap()
            .pod_port()
            .unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.details.contains("K8S_POD_NAMESPACE"));
        assert!(!err.details.contains("K8S_POD_NAME "));
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a23456789012345").is_ok());
        for bad in ["", "a234567890123456", ".", "..", "a/b", "a:b", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn netconf_parsing() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"kxdp","type":"kxdp-cni","mtu":1400,"queues":2,
                "agentSocket":"/tmp/a.sock","ipam":{"type":"host-local","subnet":"10.244.1.0/24"},
                "dns":{"nameservers":["10.96.0.10"]},"somethingElse":{"kept":true}}"#,
        )
        .unwrap();
        assert_eq!(conf.name, "kxdp");
        assert_eq!(conf.mtu, Some(1400));
        assert_eq!(conf.queues, Some(2));
        assert_eq!(conf.agent_socket, Some(PathBuf::from("/tmp/a.sock")));
        assert_eq!(conf.ipam_type().unwrap(), "host-local");
        assert_eq!(conf.dns.nameservers, vec!["10.96.0.10".to_string()]);
        assert!(!conf.is_at_least_1_1());
    }

    #[test]
    fn netconf_errors() {
        let err = |text: &str| NetConf::parse(text.as_bytes()).unwrap_err();
        assert_eq!(err("{not json").code, code::DECODE);
        assert_eq!(err(r#"{"name":"x"}"#).code, code::INVALID_CONFIG);
        assert_eq!(
            err(r#"{"cniVersion":"0.4.0","name":"x"}"#).code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            err(r#"{"cniVersion":"1.0.0","name":"x","mtu":"big"}"#).code,
            code::DECODE
        );
        assert_eq!(
            err(r#"{"cniVersion":"1.0.0","name":"x","mtu":20}"#).code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            err(r#"{"cniVersion":"1.0.0","name":"x","queues":0}"#).code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            err(r#"{"cniVersion":"1.0.0","name":"../etc"}"#).code,
            code::INVALID_CONFIG
        );
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.1.0","name":"x","ipam":{"type":"../x"}}"#).unwrap();
        assert_eq!(conf.ipam_type().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn gc_attachments() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"x","cni.dev/valid-attachments":
                [{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            conf.valid_attachments.unwrap(),
            vec![ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn error_json() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "agent unreachable", "no socket");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","code":11,"msg":"agent unreachable","details":"no socket"})
        );
    }

    #[test]
    fn result_json() {
        let result = CniResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![
                Interface {
                    name: "kx0123456789a".into(),
                    mac: "0a:58:0a:f4:01:01".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:0a:f4:01:05".into(),
                    mtu: None,
                    sandbox: "/run/netns/p".into(),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.5/24".parse().unwrap(),
                gateway: Some("10.244.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.244.1.1".parse().unwrap()),
            }],
            dns: Dns::default(),
        };
        let v = serde_json::to_value(&result).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0",
                "interfaces":[{"name":"kx0123456789a","mac":"0a:58:0a:f4:01:01"},
                              {"name":"eth0","mac":"0a:58:0a:f4:01:05","sandbox":"/run/netns/p"}],
                "ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":1}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],
                "dns":{}})
        );
        let back: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn ipam_result_shape() {
        // host-local's answer: no interfaces, no interface index, extra fields ignored.
        let r: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1"}],
                "routes":[{"dst":"0.0.0.0/0","mtu":1400}],"dns":{}}"#,
        )
        .unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.244.1.2/24");
        assert_eq!(r.ips[0].interface, None);
        assert!(r.routes[0].dst.is_default());
        assert!("10.0.0.1/33".parse::<IpPrefix>().is_err());
        assert!("10.0.0.1".parse::<IpPrefix>().is_err());
        assert!("fd00::1/64".parse::<IpPrefix>().is_ok());
    }
}
