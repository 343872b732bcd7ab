//! `kxdp-cni`: the CNI plugin (spec 1.0.0 and 1.1.0) that gives a pod its veth and hands the
//! host side to the kxdp agent as port `pod-<namespace>-<name>`.
//!
//! ADD: host veth `kx<hash>` / pod `CNI_IFNAME` with the agent's worker count of queues,
//! addresses from the IPAM plugin, MACs derived from addresses (`0a:58:<IPv4>`), the
//! default route via the node's pod gateway, tx checksum offload off in the pod, a /32 route
//! and a permanent neighbour entry on the host side, then the agent's `add_port`. Any failure
//! undoes everything done so far. A host-local range of `usePodCidr` becomes the node's
//! PodCIDRs as the agent reports them (`pod_cidr`), so one configuration serves every node.
//! DEL is idempotent and succeeds without the agent. CHECK
//! compares the live state with the ADD result. GC removes attachments the runtime no
//! longer lists. See README.md "CNI plugin".

pub mod agent;
pub mod ipam;
pub mod link;
pub mod pod_cidr;
pub use agent_api::record;
pub mod spec;

mod add;
mod check;
mod del;
mod gc;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use self::agent::{Agent, NodeFacts};
use self::ipam::{Ipam, IpamVars};
use self::link::Stacks;
use self::pod_cidr::Site;
use self::record::Records;
use self::spec::{
    AttachmentEnv, CniError, Command, DEFAULT_STATE_DIR, DEFAULT_VERSION, Env, NetConf,
    SUPPORTED_VERSIONS, VersionResult, code,
};

/// What one invocation prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The result, version or error JSON (empty for a successful DEL, CHECK, GC or STATUS).
    pub stdout: String,
    pub success: bool,
}

/// The `kxdp-cni` binary: environment and stdin in, JSON on stdout, exit 0 or 1.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin).map(|_| stdin);
    let outcome = run(|name| std::env::var(name).ok(), read);
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One invocation, with the environment read through `var`.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: std::io::Result<Vec<u8>>) -> Outcome {
    let stdin = match stdin {
        Ok(bytes) => bytes,
        Err(e) => {
            let err = CniError::new(
                code::IO,
                "cannot read the network configuration",
                e.to_string(),
            );
            return failure(&err, DEFAULT_VERSION);
        }
    };
    // Errors answer in the version the runtime spoke, when it said one.
    let version = sniff_version(&stdin).unwrap_or_else(|| DEFAULT_VERSION.to_string());
    let env = match Env::from_vars(var) {
        Ok(env) => env,
        Err(e) => return failure(&e, &version),
    };
    if env.command == Command::Version {
        return version_answer(&stdin);
    }
    let conf = match NetConf::parse(&stdin) {
        Ok(conf) => conf,
        Err(e) => return failure(&e, &version),
    };
    let pod_cidr = match pod_cidr_site(&stdin) {
        Ok(site) => site,
        Err(e) => return failure(&e, &version),
    };
    let inv = Invocation {
        env,
        conf,
        stdin,
        pod_cidr,
    };
    let result = match inv.env.command {
        Command::Add => add::add(&inv).and_then(|r| {
            serde_json::to_string(&r)
                .map_err(|e| CniError::new(code::DECODE, "cannot encode the result", e.to_string()))
        }),
        Command::Del => del::del(&inv).map(|()| String::new()),
        Command::Check => check::check(&inv).map(|()| String::new()),
        Command::Gc => gc::gc(&inv).map(|()| String::new()),
        Command::Status => gc::status(&inv).map(|()| String::new()),
        Command::Version => return version_answer(&inv.stdin),
    };
    match result {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => failure(&e, &inv.conf.cni_version),
    }
}

fn failure(e: &CniError, version: &str) -> Outcome {
    eprintln!("kxdp-cni: {}: {}", e.msg, e.details);
    Outcome {
        stdout: e.to_json(version),
        success: false,
    }
}

/// Where the (already parsed) configuration says `usePodCidr`, checked for sense.
fn pod_cidr_site(stdin: &[u8]) -> Result<Option<Site>, CniError> {
    let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    })?;
    pod_cidr::find(&value)
}

fn sniff_version(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}

/// VERSION: the versions we implement, echoing the version asked in (any version may ask).
fn version_answer(stdin: &[u8]) -> Outcome {
    let asked = if stdin.iter().all(u8::is_ascii_whitespace) {
        DEFAULT_VERSION.to_string()
    } else {
        match serde_json::from_slice::<serde_json::Value>(stdin) {
            Ok(v) => v
                .get("cniVersion")
                .and_then(|v| v.as_str())
                .unwrap_or(DEFAULT_VERSION)
                .to_string(),
            Err(e) => {
                let err = CniError::new(
                    code::DECODE,
                    "cannot decode the VERSION input",
                    e.to_string(),
                );
                return failure(&err, DEFAULT_VERSION);
            }
        }
    };
    let answer = VersionResult {
        cni_version: asked,
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    };
    Outcome {
        stdout: serde_json::to_string(&answer).unwrap_or_default(),
        success: true,
    }
}

/// Everything one invocation works from.
#[derive(Debug)]
pub(crate) struct Invocation {
    env: Env,
    conf: NetConf,
    /// The configuration exactly as received, for the IPAM plugin.
    stdin: Vec<u8>,
    /// Where host-local's range is `usePodCidr`, to be filled in from the agent.
    pod_cidr: Option<Site>,
}

/// Where the PodCIDRs that fill a `usePodCidr` range come from.
#[derive(Debug, Clone, Copy)]
enum NodeRanges<'a> {
    /// What the agent has just said (ADD, STATUS).
    Known(&'a NodeFacts),
    /// The agent, asked now if the configuration needs it; no answer is an error (CHECK).
    Ask,
    /// The agent if it answers, else a stand-in range (DEL, GC): releasing works either way,
    /// see [`pod_cidr::RELEASE_STAND_IN`].
    ForRelease,
}

impl Invocation {
    /// The attachment variables (present for ADD, DEL and CHECK by construction of `Env`).
    fn attachment(&self) -> Result<&AttachmentEnv, CniError> {
        self.env.attachment.as_ref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "invalid environment variables",
                "CNI_CONTAINERID and CNI_IFNAME are required",
            )
        })
    }

    /// The IPAM plugin, given the configuration with any `usePodCidr` filled in from
    /// `ranges`.
    fn ipam(&self, ranges: NodeRanges<'_>) -> Result<Ipam, CniError> {
        let ipam_type = self.conf.ipam_type()?;
        let filled;
        let config = match self.pod_cidr {
            None => &self.stdin,
            Some(site) => {
                let cidrs = match ranges {
                    NodeRanges::Known(node) => self.pod_cidrs_of(node)?,
                    NodeRanges::Ask => self.pod_cidrs_of(&self.node_facts(&self.agent())?)?,
                    NodeRanges::ForRelease => self.pod_cidrs_for_release(),
                };
                filled = pod_cidr::fill(&self.stdin, site, &cidrs)?;
                &filled
            }
        };
        Ipam::new(ipam_type, &self.env.path, config, &self.conf.cni_version)
    }

    /// Whether host-local's range is `usePodCidr`.
    fn uses_pod_cidr(&self) -> bool {
        self.pod_cidr.is_some()
    }

    /// The agent's status; when `usePodCidr` depends on it, an unreachable agent's error
    /// says so.
    fn node_facts(&self, agent: &Agent) -> Result<NodeFacts, CniError> {
        agent.status().map_err(|mut e| {
            if self.uses_pod_cidr() {
                e.details = format!(
                    "{}; the configuration's host-local range is {:?}, which only the agent \
                     can turn into this node's PodCIDRs",
                    e.details,
                    pod_cidr::USE_POD_CIDR
                );
            }
            e
        })
    }

    /// The node's PodCIDRs for `usePodCidr`. None (a Node the control plane has not given
    /// a PodCIDR yet) is "try again later" (11): the runtime retries the ADD, and the
    /// PodCIDR is usually assigned moments after the Node registers.
    fn pod_cidrs_of(&self, node: &NodeFacts) -> Result<Vec<ipnet::IpNet>, CniError> {
        if node.pod_cidrs.is_empty() {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "the node has no PodCIDR yet",
                format!(
                    "the kxdp agent at {} reports no PodCIDR for node {:?}; the configuration's \
                     host-local range is {:?}",
                    self.agent().socket().display(),
                    node.node,
                    pod_cidr::USE_POD_CIDR
                ),
            ));
        }
        Ok(node.pod_cidrs.clone())
    }

    /// DEL and GC release, which must work with the agent gone (a node being drained, an
    /// agent crash-looping): host-local's DEL needs a parsable range but releases by
    /// (container id, ifname) across its whole data directory, so when the agent cannot
    /// say the PodCIDRs a stand-in range releases the same leases.
    fn pod_cidrs_for_release(&self) -> Vec<ipnet::IpNet> {
        let agent = self.agent();
        let why = match agent.status() {
            Ok(node) if !node.pod_cidrs.is_empty() => return node.pod_cidrs,
            Ok(node) => format!("the agent reports no PodCIDR for node {:?}", node.node),
            Err(e) => e.to_string(),
        };
        warn(
            &format!(
                "{:?}: releasing with the stand-in range {}",
                pod_cidr::USE_POD_CIDR,
                pod_cidr::RELEASE_STAND_IN
            ),
            &why,
        );
        pod_cidr::RELEASE_STAND_IN
            .parse()
            .map(|c| vec![c])
            .unwrap_or_default()
    }

    /// The IPAM variables of the runtime's attachment.
    fn ipam_vars<'a>(&'a self, att: &'a AttachmentEnv) -> IpamVars<'a> {
        IpamVars {
            container_id: Some(&att.container_id),
            ifname: Some(&att.ifname),
            netns: att.netns.as_deref(),
            args: self.env.args.raw(),
        }
    }

    fn agent(&self) -> Agent {
        Agent::from_conf(&self.conf)
    }

    fn records(&self) -> Records {
        let dir = self
            .conf
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Records::new(&dir, &self.conf.name)
    }

    fn stacks(&self) -> Result<Stacks, CniError> {
        Stacks::open()
    }

    /// Whether the result carries spec 1.1.0's fields (interface MTU).
    fn speaks_1_1(&self) -> bool {
        self.conf.is_at_least_1_1()
    }
}

/// The pod namespace must exist for ADD and CHECK; the spec's "unknown container" otherwise.
fn require_netns(att: &AttachmentEnv) -> Result<&std::path::Path, CniError> {
    let netns = att.netns.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            "invalid environment variables",
            "CNI_NETNS is not set",
        )
    })?;
    if !netns.exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            "the container's network namespace does not exist",
            format!("CNI_NETNS={}", netns.display()),
        ));
    }
    Ok(netns)
}

/// Best effort steps (DEL, GC, undo) report on stderr and go on.
fn warn(what: &str, e: &dyn std::fmt::Display) {
    eprintln!("kxdp-cni: {what}: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> Outcome {
        run(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            Ok(stdin.as_bytes().to_vec()),
        )
    }

    fn error_code(out: &Outcome) -> u64 {
        assert!(!out.success);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["code"].as_u64().unwrap()
    }

    #[test]
    fn version_command() {
        let out = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        assert!(out.success);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","supportedVersions":["1.0.0","1.1.0"]})
        );
        let out = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert!(out.success);
        assert_eq!(
            error_code(&run_with(&[("CNI_COMMAND", "VERSION")], "{x")),
            6
        );
    }

    #[test]
    fn early_errors() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/kcni-none"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        assert_eq!(error_code(&run_with(&add, "{bad json")), 6);
        assert_eq!(
            error_code(&run_with(&add, r#"{"cniVersion":"0.4.0","name":"n"}"#)),
            1
        );
        let out = run_with(
            &[("CNI_COMMAND", "NOPE")],
            r#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        assert_eq!(error_code(&out), 4);
        // The error speaks the version the runtime used.
        assert!(
            out.stdout.contains(r#""cniVersion":"1.1.0""#),
            "{}",
            out.stdout
        );
        // Missing K8S args: invalid environment, naming the variable, before anything else.
        let conf = r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#;
        let out = run_with(&add, conf);
        assert_eq!(error_code(&out), 4);
        assert!(out.stdout.contains("K8S_POD_NAME"), "{}", out.stdout);
        // A netns that does not exist: unknown container.
        let mut with_args = add.to_vec();
        with_args.push(("CNI_ARGS", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"));
        assert_eq!(error_code(&run_with(&with_args, conf)), 3);
        // GC is a 1.1.0 command.
        let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")];
        assert_eq!(error_code(&run_with(&gc, conf)), 1);
    }
}
