//! The agent config: `kxdp.yaml` in the state directory (in a cluster, the kxdp ConfigMap).
//!
//! This module owns the file's schema, its defaults (docs/replay.md) and its range checks.
//! Every key is optional; an unknown key is an error rather than silently ignored, because a
//! misspelt `underlayMtu` would otherwise run the node with the default and nobody would notice.

use std::net::IpAddr;

use datapath::Cidr;
use datapath::conntrack::{self, ConntrackConfig, Timeouts};
use datapath::lb::maglev;
use serde::Deserialize;

use crate::k8s::ValueError;

mod nodes;

pub use nodes::{NodeOverride, NodeSelector};

/// Default pod address space (`clusterCIDR`).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Default Service VIP space (`serviceCIDR`).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// Default VXLAN network identifier.
pub const DEFAULT_VNI: u32 = 1;
/// IANA's VXLAN port (RFC 7348).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const DEFAULT_UNDERLAY_MTU: u16 = 1500;
/// The Maglev paper's reference size: prime, and large against the backend count so the
/// per-backend share stays within ~1% of even.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65537;

/// Bytes VXLAN adds on an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u16 = 50;
/// Smallest underlay MTU accepted: the minimum every IPv4 host must handle (RFC 791).
pub const MIN_UNDERLAY_MTU: u16 = 576;
/// Smallest underlay MTU when pods have IPv6: their link must carry 1280 (RFC 8200) after encap.
pub const MIN_UNDERLAY_MTU_IPV6: u16 = 1280 + VXLAN_OVERHEAD;
/// Largest VNI: the field is 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Largest Maglev table accepted. Every service port holds one table entry per slot, so an
/// absurd prime here would cost gigabytes; 2^24 is far beyond any useful size.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 1 << 24;

/// The parsed, validated agent config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Pod address space of the whole cluster: one CIDR, or an IPv4 + IPv6 pair (dual stack).
    pub cluster_cidrs: Vec<Cidr>,
    /// Service VIP space: one CIDR, or an IPv4 + IPv6 pair.
    pub service_cidrs: Vec<Cidr>,
    pub vxlan: VxlanConfig,
    pub underlay_mtu: u16,
    /// Whether kxdp.yaml set `underlayMTU`. When it did not, the agent takes the uplink's
    /// MTU instead ([`AgentConfig::with_uplink_mtu`]); replay keeps the default.
    pub underlay_mtu_explicit: bool,
    pub maglev: MaglevConfig,
    /// Per-worker flow table size and per-state idle timeouts.
    pub conntrack: ConntrackConfig,
    /// `apiServer:`: where the agent reaches the Kubernetes API with its service account
    /// (`--in-cluster`), instead of `KUBERNETES_SERVICE_HOST`, a ClusterIP that only kxdp
    /// itself would route on a node without kube-proxy. None: the in-cluster default.
    pub api_server: Option<ApiServerEndpoint>,
    /// `uplink:`: the interface the agent uses as its uplink on every node, unless a
    /// [`nodes`](AgentConfig::nodes) entry names another. None: kxdp.yaml names none.
    pub uplink: Option<String>,
    /// `nodes:`: per-node overrides of `uplink` and `underlayMTU`, in file order; the first
    /// entry that matches a node applies to it ([`AgentConfig::for_node`]).
    pub nodes: Vec<NodeOverride>,
    /// `serviceProxyName:`. None (kube-proxy's rule): program the Services that have no
    /// `service.kubernetes.io/service-proxy-name` label; a name: only the Services labelled
    /// with exactly it (as Cilium's `serviceProxyName`), so two proxies can split a cluster.
    pub service_proxy_name: Option<String>,
}

/// The API server's address as the agent dials it: a host name or an IP, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerEndpoint {
    pub host: String,
    pub port: u16,
}

/// The port `apiServer.port` defaults to: the API server's (kubeadm's) secure port.
pub const DEFAULT_API_SERVER_PORT: u16 = 6443;

impl ApiServerEndpoint {
    /// `https://HOST:PORT`, brackets around an IPv6 address.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }

    /// Parses `HOST:PORT` (`[V6]:PORT`, or `HOST` alone for port 6443), as `--api-server`
    /// takes it.
    pub fn parse(text: &str) -> Result<ApiServerEndpoint, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: an IPv6 address needs its closing ]"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("{text:?}: expected [ADDRESS]:PORT")),
            }
        } else {
            match text.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!("{text:?}: write an IPv6 address as [ADDRESS]:PORT"));
                }
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{text:?}: {p:?} is not a TCP port (1..=65535)"))?,
            None => DEFAULT_API_SERVER_PORT,
        };
        endpoint(host, port)
    }
}

fn endpoint(host: &str, port: u16) -> Result<ApiServerEndpoint, String> {
    let host = host.trim();
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("{host:?} is not a host name or address"));
    }
    Ok(ApiServerEndpoint {
        host: host.to_string(),
        port,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    /// UDP destination port of the tunnel.
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevConfig {
    /// Slots per lookup table; prime (Maglev's permutation needs it). With `by_backends`,
    /// the largest size used.
    pub table_size: u32,
    /// `tableSize: auto`: each table is the smallest size of [`AUTO_TABLE_SIZES`] with at
    /// least [`AUTO_SLOTS_PER_BACKEND`] slots per backend (capped at `table_size`). A Service
    /// with 10 endpoints then costs 2 KiB instead of 128 KiB: what makes 10k Services fit.
    /// Every node sizes a Service's cluster-wide table from the same endpoint count, so they
    /// still agree on backends; a count crossing a step changes the size, which reshuffles
    /// new flows of that Service (established ones keep their conntrack entries).
    pub by_backends: bool,
}

/// The sizes `tableSize: auto` picks from: primes, each about twice the last.
pub const AUTO_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537, 131_071,
];
/// Slots per backend `tableSize: auto` aims for: the Maglev paper's M >= 100 N, which keeps
/// every backend's share within about 1% of even.
pub const AUTO_SLOTS_PER_BACKEND: u32 = 100;

impl MaglevConfig {
    /// The table size for a set of `backends`.
    pub fn size_for(&self, backends: usize) -> u32 {
        if !self.by_backends {
            return self.table_size;
        }
        let want = u64::try_from(backends)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(AUTO_SLOTS_PER_BACKEND));
        AUTO_TABLE_SIZES
            .iter()
            .copied()
            .find(|&m| u64::from(m) >= want && m <= self.table_size)
            .unwrap_or(self.table_size)
    }
}

/// Why `kxdp.yaml` was refused. The Display names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML, or a key/value of the wrong shape; serde_yaml's message carries the key path
    /// (`vxlan.vni: invalid type ...`, `unknown field \`foo\``) and the line.
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A well-formed value outside what kxdp accepts.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// `clusterCIDR` / `serviceCIDR` holds something that is not a CIDR.
    #[error("{field}: {source}")]
    Cidr { field: String, source: ValueError },
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            cluster_cidrs: vec![
                DEFAULT_CLUSTER_CIDR
                    .parse()
                    .expect("default clusterCIDR parses"),
            ],
            service_cidrs: vec![
                DEFAULT_SERVICE_CIDR
                    .parse()
                    .expect("default serviceCIDR parses"),
            ],
            vxlan: VxlanConfig {
                vni: DEFAULT_VNI,
                port: DEFAULT_VXLAN_PORT,
            },
            underlay_mtu: DEFAULT_UNDERLAY_MTU,
            underlay_mtu_explicit: false,
            maglev: MaglevConfig {
                table_size: DEFAULT_MAGLEV_TABLE_SIZE,
                by_backends: false,
            },
            conntrack: ConntrackConfig::default(),
            api_server: None,
            uplink: None,
            nodes: Vec::new(),
            service_proxy_name: None,
        }
    }
}

// The file as written. Numbers are read wide (u64) so that out-of-range values reach our own
// checks, whose messages say what the range is, instead of serde's generic overflow error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    #[serde(rename = "serviceCIDR")]
    service_cidr: Option<String>,
    vxlan: Option<RawVxlan>,
    #[serde(rename = "underlayMTU")]
    underlay_mtu: Option<u64>,
    maglev: Option<RawMaglev>,
    conntrack: Option<RawConntrack>,
    #[serde(rename = "apiServer")]
    api_server: Option<RawApiServer>,
    uplink: Option<String>,
    nodes: Option<Vec<nodes::RawNode>>,
    #[serde(rename = "serviceProxyName")]
    service_proxy_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiServer {
    host: Option<String>,
    port: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    capacity: Option<u64>,
    timeouts: Option<RawTimeouts>,
}

/// Idle timeouts in seconds, per connection state.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimeouts {
    tcp_syn: Option<u64>,
    tcp_established: Option<u64>,
    tcp_closing: Option<u64>,
    tcp_closed: Option<u64>,
    udp: Option<u64>,
    udp_replied: Option<u64>,
    other: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVxlan {
    vni: Option<u64>,
    port: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMaglev {
    table_size: Option<RawTableSize>,
}

/// `tableSize: 65537` or `tableSize: auto`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawTableSize {
    Slots(u64),
    Word(String),
}

impl AgentConfig {
    /// Parses and validates the text of `kxdp.yaml`. An empty file (or one holding only
    /// comments) is the all-defaults config.
    pub fn from_yaml(text: &str) -> Result<AgentConfig, ConfigError> {
        // `Option` so an empty document means "no keys" rather than a type error.
        let raw: RawConfig = serde_yaml::from_str::<Option<RawConfig>>(text)?.unwrap_or_default();
        let defaults = AgentConfig::default();

        let cluster_cidrs = match &raw.cluster_cidr {
            Some(s) => parse_cidr_list("clusterCIDR", s)?,
            None => defaults.cluster_cidrs,
        };
        let service_cidrs = match &raw.service_cidr {
            Some(s) => parse_cidr_list("serviceCIDR", s)?,
            None => defaults.service_cidrs,
        };

        let vxlan = raw.vxlan.unwrap_or_default();
        let vni = match vxlan.vni {
            Some(v) if v > u64::from(MAX_VNI) => {
                return Err(invalid(
                    "vxlan.vni",
                    format!("{v} does not fit in 24 bits (0..={MAX_VNI})"),
                ));
            }
            Some(v) => v as u32,
            None => defaults.vxlan.vni,
        };
        let port = match vxlan.port {
            Some(0) => return Err(invalid("vxlan.port", "must not be 0".into())),
            Some(p) => u16::try_from(p)
                .map_err(|_| invalid("vxlan.port", format!("{p} is not a UDP port (1..=65535)")))?,
            None => defaults.vxlan.port,
        };

        let underlay_mtu = match raw.underlay_mtu {
            Some(m) => underlay_mtu("underlayMTU", m, &cluster_cidrs)?,
            None => defaults.underlay_mtu,
        };

        let mut by_backends = false;
        let table_size = match raw.maglev.unwrap_or_default().table_size {
            Some(RawTableSize::Word(w)) if w == "auto" => {
                by_backends = true;
                defaults.maglev.table_size
            }
            Some(RawTableSize::Word(w)) => {
                return Err(invalid(
                    "maglev.tableSize",
                    format!("{w:?} is neither a number of slots nor \"auto\""),
                ));
            }
            Some(RawTableSize::Slots(n)) if n > u64::from(MAX_MAGLEV_TABLE_SIZE) => {
                return Err(invalid(
                    "maglev.tableSize",
                    format!("{n} is larger than {MAX_MAGLEV_TABLE_SIZE}"),
                ));
            }
            Some(RawTableSize::Slots(n)) if !maglev::valid_table_size(n as u32) => {
                return Err(invalid(
                    "maglev.tableSize",
                    format!(
                        "{n} is not a Maglev table size (a prime in 251..=131071, or 655373; \
                         default 65537)"
                    ),
                ));
            }
            Some(RawTableSize::Slots(n)) => n as u32,
            None => defaults.maglev.table_size,
        };

        let conntrack = conntrack_config(raw.conntrack.unwrap_or_default(), defaults.conntrack)?;
        let api_server = raw.api_server.map(api_server_config).transpose()?;
        let uplink = raw
            .uplink
            .map(|u| nodes::interface_name("uplink", u))
            .transpose()?;
        // After clusterCIDR: an entry's underlayMTU has the same IPv6 minimum.
        let nodes = nodes::node_overrides(raw.nodes.unwrap_or_default(), &cluster_cidrs)?;

        Ok(AgentConfig {
            cluster_cidrs,
            service_cidrs,
            vxlan: VxlanConfig { vni, port },
            underlay_mtu,
            underlay_mtu_explicit: raw.underlay_mtu.is_some(),
            maglev: MaglevConfig {
                table_size,
                by_backends,
            },
            conntrack,
            api_server,
            uplink,
            nodes,
            service_proxy_name: raw
                .service_proxy_name
                .map(|n| label_value("serviceProxyName", n))
                .transpose()?,
        })
    }
}

impl AgentConfig {
    /// The config for a node whose uplink has MTU `uplink_mtu`: unless kxdp.yaml set
    /// `underlayMTU`, the underlay MTU is the uplink's (as Flannel reads it off its
    /// interface), so pods get the uplink's MTU minus the VXLAN overhead without a setting
    /// per node. An uplink too small to carry the pods' minimum is refused, naming both.
    pub fn with_uplink_mtu(mut self, uplink_mtu: u32) -> Result<AgentConfig, ConfigError> {
        if self.underlay_mtu_explicit {
            return Ok(self);
        }
        let has_v6 = self.cluster_cidrs.iter().any(|c| !c.addr.is_v4());
        let min = if has_v6 {
            MIN_UNDERLAY_MTU_IPV6
        } else {
            MIN_UNDERLAY_MTU
        };
        if uplink_mtu < u32::from(min) {
            return Err(invalid(
                "underlayMTU",
                format!(
                    "not set, and the uplink's MTU {uplink_mtu} is below {min}: raise the \
                     uplink's MTU or set underlayMTU"
                ),
            ));
        }
        self.underlay_mtu = u16::try_from(uplink_mtu).unwrap_or(u16::MAX);
        Ok(self)
    }
}

/// An `underlayMTU` value (`field` names where it was written): at least what every IPv4
/// host handles, or, when pods have IPv6 addresses, what carries their 1280 bytes after the
/// VXLAN overhead; and at most 65535.
fn underlay_mtu(field: &str, mtu: u64, cluster_cidrs: &[Cidr]) -> Result<u16, ConfigError> {
    let has_v6 = cluster_cidrs.iter().any(|c| !c.addr.is_v4());
    let min_mtu = if has_v6 {
        MIN_UNDERLAY_MTU_IPV6
    } else {
        MIN_UNDERLAY_MTU
    };
    if mtu < u64::from(min_mtu) || mtu > u64::from(u16::MAX) {
        let why = if has_v6 {
            " (clusterCIDR has IPv6: pods need 1280 after 50 bytes of VXLAN)"
        } else {
            ""
        };
        return Err(invalid(
            field,
            format!("{mtu} is out of range ({min_mtu}..=65535){why}"),
        ));
    }
    Ok(mtu as u16)
}

/// A label value as the API server accepts one (1..=63 characters, alphanumerics with `-`,
/// `_` and `.` inside): anything else could never match a Service's label.
fn label_value(field: &str, value: String) -> Result<String, ConfigError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends_ok = value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if value.len() <= 63 && ends_ok && value.chars().all(ok_char) {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!(
                "{value:?} is not a label value (1 to 63 letters, digits, '-', '_', '.'; \
                 a letter or digit at each end)"
            ),
        ))
    }
}

/// `apiServer: {host, port}`: a host is required, the port defaults to 6443.
fn api_server_config(raw: RawApiServer) -> Result<ApiServerEndpoint, ConfigError> {
    let host = raw
        .host
        .ok_or_else(|| invalid("apiServer.host", "required with apiServer".into()))?;
    let port = match raw.port {
        Some(p) if p == 0 || p > u64::from(u16::MAX) => {
            return Err(invalid(
                "apiServer.port",
                format!("{p} is not a TCP port (1..=65535)"),
            ));
        }
        Some(p) => p as u16,
        None => DEFAULT_API_SERVER_PORT,
    };
    endpoint(&host, port).map_err(|m| invalid("apiServer.host", m))
}

/// `conntrack:`: capacity within what the table supports, timeouts in whole seconds of at
/// least 1 (a zero timeout would forget every flow between two of its packets).
fn conntrack_config(
    raw: RawConntrack,
    defaults: ConntrackConfig,
) -> Result<ConntrackConfig, ConfigError> {
    let capacity = match raw.capacity {
        Some(c) if c == 0 || c > conntrack::MAX_CAPACITY as u64 => {
            return Err(invalid(
                "conntrack.capacity",
                format!("{c} is out of range (1..={})", conntrack::MAX_CAPACITY),
            ));
        }
        Some(c) => c as usize,
        None => defaults.capacity,
    };
    let t = raw.timeouts.unwrap_or_default();
    let d = defaults.timeouts;
    let secs = |name: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
        match v {
            Some(0) => Err(invalid(
                &format!("conntrack.timeouts.{name}"),
                "must be at least 1 second".into(),
            )),
            Some(s) if s > MAX_TIMEOUT_S => Err(invalid(
                &format!("conntrack.timeouts.{name}"),
                format!("{s} is more than {MAX_TIMEOUT_S} seconds (30 days)"),
            )),
            Some(s) => Ok(s * 1_000_000_000),
            None => Ok(default),
        }
    };
    Ok(ConntrackConfig {
        capacity,
        timeouts: Timeouts {
            tcp_syn: secs("tcpSyn", t.tcp_syn, d.tcp_syn)?,
            tcp_established: secs("tcpEstablished", t.tcp_established, d.tcp_established)?,
            tcp_closing: secs("tcpClosing", t.tcp_closing, d.tcp_closing)?,
            tcp_closed: secs("tcpClosed", t.tcp_closed, d.tcp_closed)?,
            udp: secs("udp", t.udp, d.udp)?,
            udp_replied: secs("udpReplied", t.udp_replied, d.udp_replied)?,
            other: secs("other", t.other, d.other)?,
        },
    })
}

/// Longest idle timeout accepted: 30 days.
const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;

fn invalid(field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        message,
    }
}

/// `"10.244.0.0/16"` or the dual-stack form `"10.244.0.0/16,fd00:10:244::/56"`: at most one
/// CIDR per family, as Kubernetes' own `--cluster-cidr` / `--service-cluster-ip-range`.
fn parse_cidr_list(field: &str, text: &str) -> Result<Vec<Cidr>, ConfigError> {
    let mut out: Vec<Cidr> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(invalid(field, format!("{text:?}: empty CIDR")));
        }
        let cidr = parse_cidr(part).map_err(|source| ConfigError::Cidr {
            field: field.to_string(),
            source,
        })?;
        if out.iter().any(|c| c.addr.is_v4() == cidr.addr.is_v4()) {
            return Err(invalid(
                field,
                format!("{text:?}: at most one IPv4 and one IPv6 CIDR (dual stack)"),
            ));
        }
        out.push(cidr);
    }
    Ok(out)
}

/// A CIDR as Kubernetes writes it. IPv4-mapped IPv6 (`::ffff:a.b.c.d/n`) is refused: the
/// tables store IPv4 in exactly that form, so it would silently alias an IPv4 range.
pub(crate) fn parse_cidr(text: &str) -> Result<Cidr, ValueError> {
    let (ip, len) = text
        .split_once('/')
        .ok_or_else(|| ValueError::NotACidr(text.to_string()))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| ValueError::CidrAddress(text.to_string()))?;
    if let IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(ValueError::MappedCidr(text.to_string()));
    }
    let len: u8 = len.parse().map_err(|source| ValueError::PrefixNotANumber {
        text: text.to_string(),
        source,
    })?;
    Cidr::new(ip, len).ok_or_else(|| ValueError::PrefixTooLong(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        AgentConfig::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_defaults() {
        let d = AgentConfig::default();
        assert_eq!(AgentConfig::from_yaml("").unwrap(), d);
        assert_eq!(AgentConfig::from_yaml("# nothing\n").unwrap(), d);
        assert_eq!(AgentConfig::from_yaml("{}").unwrap(), d);
        assert_eq!(d.cluster_cidrs[0].to_string(), "10.244.0.0/16");
        assert_eq!(d.service_cidrs[0].to_string(), "10.96.0.0/12");
        assert_eq!(d.vxlan, VxlanConfig { vni: 1, port: 4789 });
        assert_eq!(d.underlay_mtu, 1500);
        assert_eq!(d.maglev.table_size, 65537);
    }

    #[test]
    fn every_key() {
        let c = AgentConfig::from_yaml(
            "clusterCIDR: 10.1.0.0/16, fd00:1::/56\nserviceCIDR: 10.2.0.0/16\n\
             vxlan: {vni: 42, port: 8472}\nunderlayMTU: 9000\nmaglev: {tableSize: 251}\n",
        )
        .unwrap();
        assert_eq!(c.cluster_cidrs.len(), 2);
        assert_eq!(c.cluster_cidrs[1].to_string(), "fd00:1::/56");
        assert_eq!(c.service_cidrs[0].to_string(), "10.2.0.0/16");
        assert_eq!(
            c.vxlan,
            VxlanConfig {
                vni: 42,
                port: 8472
            }
        );
        assert_eq!(c.underlay_mtu, 9000);
        assert_eq!(c.maglev.table_size, 251);
        let c = AgentConfig::from_yaml(
            "conntrack: {capacity: 4096, timeouts: {udp: 45, tcpEstablished: 3600}}\n",
        )
        .unwrap();
        assert_eq!(c.conntrack.capacity, 4096);
        assert_eq!(c.conntrack.timeouts.udp, 45_000_000_000);
        assert_eq!(c.conntrack.timeouts.tcp_established, 3_600_000_000_000);
        assert_eq!(
            c.conntrack.timeouts.tcp_syn,
            ConntrackConfig::default().timeouts.tcp_syn
        );
        // A partial section keeps the other key's default.
        let c = AgentConfig::from_yaml("vxlan: {vni: 7}").unwrap();
        assert_eq!(c.vxlan, VxlanConfig { vni: 7, port: 4789 });
    }

    #[test]
    fn auto_table_size_follows_the_backend_count() {
        let c = AgentConfig::from_yaml("maglev: {tableSize: auto}").unwrap();
        assert!(c.maglev.by_backends);
        let sizes: Vec<u32> = [0, 1, 2, 3, 10, 11, 100, 655, 656, 5000]
            .iter()
            .map(|&n| c.maglev.size_for(n))
            .collect();
        assert_eq!(
            sizes,
            [251, 251, 251, 509, 1021, 2039, 16381, 65537, 65537, 65537]
        );
        for m in AUTO_TABLE_SIZES {
            assert!(maglev::valid_table_size(m), "{m}");
        }
        // Fixed sizes ignore the count.
        assert_eq!(AgentConfig::default().maglev.size_for(3), 65537);
        let e = err("maglev: {tableSize: big}");
        assert!(e.starts_with("maglev.tableSize: "), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("underlayMtu: 9000").contains("unknown field `underlayMtu`"));
        let e = err("vxlan: {vni: 1, prot: 1}");
        assert!(e.contains("vxlan") && e.contains("`prot`"), "{e}");
        assert!(err("vxlan: {vni: 16777216}").starts_with("vxlan.vni: "));
        assert!(err("vxlan: {port: 0}").starts_with("vxlan.port: "));
        assert!(err("vxlan: {port: 70000}").starts_with("vxlan.port: "));
        assert!(err("underlayMTU: 500").starts_with("underlayMTU: "));
        assert!(err("underlayMTU: 70000").starts_with("underlayMTU: "));
        assert!(
            err("clusterCIDR: 10.0.0.0/8,fd00::/64\nunderlayMTU: 1300")
                .starts_with("underlayMTU: ")
        );
        assert!(err("maglev: {tableSize: 65536}").starts_with("maglev.tableSize: "));
        // Prime, but outside what a Maglev table may be.
        assert!(err("maglev: {tableSize: 7}").starts_with("maglev.tableSize: "));
        assert!(err("conntrack: {capacity: 0}").starts_with("conntrack.capacity: "));
        assert!(err("conntrack: {timeouts: {udp: 0}}").starts_with("conntrack.timeouts.udp: "));
        assert!(err("conntrack: {timeouts: {tcpFin: 5}}").contains("unknown field"));
        assert!(err("maglev: {tableSize: 4294967311}").starts_with("maglev.tableSize: "));
        assert!(err("clusterCIDR: 10.244.0.0").starts_with("clusterCIDR: "));
        assert!(err("clusterCIDR: 10.0.0.0/8,11.0.0.0/8").starts_with("clusterCIDR: "));
        assert!(err("serviceCIDR: 10.0.0.0/33").starts_with("serviceCIDR: "));
        assert!(err("serviceCIDR: ::ffff:10.0.0.0/104").starts_with("serviceCIDR: "));
        assert!(err("serviceCIDR: ''").starts_with("serviceCIDR: "));
        let e = err("vxlan: {vni: -1}");
        assert!(e.starts_with("vxlan.vni: "), "{e}");
        assert!(err("apiServer: {port: 6443}").starts_with("apiServer.host: "));
        assert!(err("apiServer: {host: 10.0.0.1, port: 0}").starts_with("apiServer.port: "));
        assert!(err("apiServer: {host: ' '}").starts_with("apiServer.host: "));
        assert!(err("apiServer: {host: a, url: b}").contains("unknown field `url`"));
    }

    #[test]
    fn the_uplink_mtu_is_taken_unless_underlay_mtu_is_set() {
        let c = AgentConfig::default().with_uplink_mtu(9000).unwrap();
        assert_eq!(c.underlay_mtu, 9000);
        let c = AgentConfig::from_yaml("underlayMTU: 1400").unwrap();
        assert!(c.underlay_mtu_explicit);
        assert_eq!(c.with_uplink_mtu(9000).unwrap().underlay_mtu, 1400);
        let e = AgentConfig::default()
            .with_uplink_mtu(500)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("underlayMTU: not set, and the uplink's MTU 500"),
            "{e}"
        );
        let v6 = AgentConfig::from_yaml("clusterCIDR: 10.0.0.0/16,fd00::/64").unwrap();
        assert!(v6.with_uplink_mtu(1300).is_err());
        assert_eq!(
            AgentConfig::default()
                .with_uplink_mtu(100_000)
                .unwrap()
                .underlay_mtu,
            u16::MAX
        );
    }

    #[test]
    fn the_api_server_endpoint_is_read_and_parsed() {
        let c = AgentConfig::from_yaml("apiServer: {host: api.example, port: 443}").unwrap();
        let e = c.api_server.unwrap();
        assert_eq!(e.url(), "https://api.example:443");
        let c = AgentConfig::from_yaml("apiServer: {host: 192.168.1.10}").unwrap();
        assert_eq!(c.api_server.unwrap().port, DEFAULT_API_SERVER_PORT);
        assert_eq!(AgentConfig::default().api_server, None);

        let p = |t: &str| ApiServerEndpoint::parse(t).map(|e| e.url());
        assert_eq!(p("10.0.0.1:6443").unwrap(), "https://10.0.0.1:6443");
        assert_eq!(p("api.example").unwrap(), "https://api.example:6443");
        assert_eq!(p("[fd00::1]:443").unwrap(), "https://[fd00::1]:443");
        assert_eq!(p("[fd00::1]").unwrap(), "https://[fd00::1]:6443");
        for bad in [
            "fd00::1",
            "10.0.0.1:0",
            "10.0.0.1:x",
            ":6443",
            "[fd00::1",
            "a/b:1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
