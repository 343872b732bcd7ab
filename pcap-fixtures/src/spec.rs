//! The on-disk form of a case: `case.json` and the file layout around it.
//!
//! ```text
//! cases/<name>/case.json              {description, node, state, inputs: [{port, file}],
//!                                      updates: [{at_ns, state}] (only when there are some)}
//! cases/<name>/input/<port>.pcap      what each port receives
//! cases/<name>/expected/<port>.pcap   what each port must send, packet for packet
//! cases/<name>/expected/verdicts.jsonl  one JSON object per input packet, in processing order
//! cases/<name>/state/                 the case's own state dir, when `state` points there
//! cases/<name>/state-<n>/             the state of the n-th update (`kxdp replay --update`)
//! ```
//!
//! Shared by the generator (which writes it) and the runner (which reads it), so the two
//! cannot disagree about the layout.

use serde::{Deserialize, Serialize};

pub const CASE_FILE: &str = "case.json";
pub const EXPECTED_DIR: &str = "expected";
pub const VERDICTS_FILE: &str = "verdicts.jsonl";

/// `case.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub description: String,
    /// The node the replay runs as.
    pub node: String,
    /// The state directory, relative to the case directory.
    pub state: String,
    /// In `--in` order (ties in timestamps go to the earlier one).
    pub inputs: Vec<InputFile>,
    /// `--update AT=DIR`: state changes during the run (cases without them omit the key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<UpdateFile>,
}

/// A state change at a pcap time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    /// Nanoseconds since the Unix epoch (pcap time).
    pub at_ns: u64,
    /// The new state directory, relative to the case directory.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    pub port: String,
    /// Relative to the case directory.
    pub file: String,
}

/// One expected line of verdicts.jsonl, keys in the order docs/replay.md lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictLine {
    pub in_port: String,
    pub index: usize,
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `namespace/name` of the NetworkPolicies that decided the packet (a drop's
    /// explanation); left out when none did, so cases without policy are unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    /// `ingress` or `egress`: the side a `policy_denied` drop was decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
}
