//! The per-packet verdict record (one line of verdicts.jsonl) and the observer that fills it.
//!
//! The key order and the optional keys are part of §4's contract with tools outside this
//! repository: serde writes struct fields in declaration order, and absent facts are left
//! out rather than written as `null`.

use std::net::SocketAddr;

use datapath::IpKey;
use datapath::observer::Observer;
use datapath::policy::PolicyDirection;
use datapath::tables::ServicePort;

/// One line of verdicts.jsonl.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerdictRecord {
    pub in_port: String,
    /// 0-based within its input file.
    pub index: usize,
    /// "forward" | "pass" | "drop".
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// `namespace/name:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `ip:port`, IPv6 as `[ip]:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `namespace/name` of the deciding policies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    /// `ingress` or `egress`: the side a NetworkPolicy drop was decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
}

/// Collects what `process` reports about one packet. Replay runs once per packet, so
/// allocating here is fine (the workers use `NoObserver`).
#[derive(Debug, Default)]
pub struct Recorder {
    pub service: Option<String>,
    pub backend: Option<(IpKey, u16)>,
    /// In the order reported, without repeats.
    pub policies: Vec<String>,
    /// What the datapath did to the packet (`dnat`, `vxlan_encap`, `icmp_time_exceeded`, ...).
    pub steps: Vec<&'static str>,
    /// The direction of a policy drop.
    pub direction: Option<PolicyDirection>,
}

impl Observer for Recorder {
    fn service(&mut self, service: &ServicePort) {
        self.service = Some(service.name.clone());
    }

    fn backend(&mut self, ip: IpKey, port: u16) {
        self.backend = Some((ip, port));
    }

    fn policy_direction(&mut self, direction: PolicyDirection) {
        self.direction = Some(direction);
    }

    fn step(&mut self, what: &'static str) {
        self.steps.push(what);
    }

    fn policies(&mut self, names: &[&str]) {
        // Egress and ingress may both report; a policy deciding both is listed once.
        for name in names {
            if !self.policies.iter().any(|p| p == name) {
                self.policies.push((*name).to_string());
            }
        }
    }
}

/// `ip:port`, with IPv6 in brackets (the `SocketAddr` notation).
pub fn format_backend((ip, port): (IpKey, u16)) -> String {
    SocketAddr::new(ip.to_ip(), port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::IpKey;

    #[test]
    fn json_keys_in_contract_order_and_optional() {
        let rec = VerdictRecord {
            in_port: "pod-demo-client".into(),
            index: 3,
            verdict: "forward",
            out_port: Some("uplink".into()),
            reason: None,
            service: Some("demo/web:80".into()),
            backend: Some(format_backend((IpKey::v4([10, 244, 2, 7]), 8080))),
            policy: vec!["demo/allow-web".into()],
            direction: None,
        };
        assert_eq!(
            serde_json::to_string(&rec).unwrap(),
            r#"{"in_port":"pod-demo-client","index":3,"verdict":"forward","out_port":"uplink","service":"demo/web:80","backend":"10.244.2.7:8080","policy":["demo/allow-web"]}"#
        );
        let drop = VerdictRecord {
            in_port: "uplink".into(),
            index: 0,
            verdict: "drop",
            out_port: None,
            reason: Some("no_route"),
            service: None,
            backend: None,
            policy: vec![],
            direction: None,
        };
        assert_eq!(
            serde_json::to_string(&drop).unwrap(),
            r#"{"in_port":"uplink","index":0,"verdict":"drop","reason":"no_route"}"#
        );
    }

    #[test]
    fn ipv6_backend_in_brackets() {
        let b = (
            IpKey::v6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            80,
        );
        assert_eq!(format_backend(b), "[fd00::1]:80");
    }

    #[test]
    fn policies_deduplicated_in_order() {
        let mut r = Recorder::default();
        r.policies(&["a/x", "a/y"]);
        r.policies(&["a/y", "b/z"]);
        assert_eq!(r.policies, vec!["a/x", "a/y", "b/z"]);
    }
}
