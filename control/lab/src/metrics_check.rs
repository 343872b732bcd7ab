//! The lab check on node1's /metrics: kube-proxy's `kubeproxy_*` names are there, and they
//! move as the lab changes a Service. The lab adds a Service whose only endpoint is on
//! node2 while its internalTrafficPolicy is Local (node1 has nothing local to send it to:
//! kube-proxy's `sync_proxy_rules_no_local_endpoints_total` counts it), then removes it.
//! Each change is one more sync; with `--source api` the change counters and the network
//! programming latency (from the trigger time the API double stamps on the slice) move too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::layout::{NAMESPACE, NODE1, NODE2};
use super::manifests::write_atomic;
use super::{Lab, StateSource, cmd};

/// Where the agent serves /metrics in its node's namespace (the default bind address).
const METRICS: &str = "127.0.0.1:10249";
/// The file the check adds to the state directory, and removes again.
const FILE: &str = "metrics-check.yaml";
/// How long a change may take to show in /metrics.
const PATIENCE: Duration = Duration::from_secs(30);

const SYNCS: &str = "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}";
const NO_LOCAL: &str = "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}";
const LAST_SYNC: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}";
const SERVICE_CHANGES: &str = "kubeproxy_sync_proxy_rules_service_changes_total";
const ENDPOINT_CHANGES: &str = "kubeproxy_sync_proxy_rules_endpoint_changes_total";
const PROGRAMMING: &str =
    "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}";

/// Every name a kube-proxy dashboard reads that kxdp serves (one series of each).
const REQUIRED: [&str; 13] = [
    SYNCS,
    "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
    "kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
    LAST_SYNC,
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family=\"IPv4\"}",
    PROGRAMMING,
    SERVICE_CHANGES,
    "kubeproxy_sync_proxy_rules_service_changes_pending",
    ENDPOINT_CHANGES,
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
    NO_LOCAL,
    "kxdp_sync_duration_seconds_count",
    "kxdp_network_programming_duration_seconds_count",
];

/// One scrape: every sample by its series (name and labels as written).
type Scrape = BTreeMap<String, f64>;

/// The check: what moved, or what did not.
pub(crate) fn kube_proxy_names_move(lab: &Lab) -> (bool, String) {
    let result = check(lab);
    // The Service goes whatever happened, so later checks see the lab as it was.
    let _ = std::fs::remove_file(lab.state_dir().join(FILE));
    match result {
        Ok(measured) => (true, measured),
        Err(why) => (false, why),
    }
}

fn check(lab: &Lab) -> Result<String, String> {
    let before = scrape(lab)?;
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|s| !before.contains_key(*s))
        .collect();
    if !missing.is_empty() {
        return Err(format!("not in node1's /metrics: {}", missing.join(", ")));
    }
    let api = lab.source == StateSource::Api;
    let at = |s: &Scrape, series: &str| s.get(series).copied().unwrap_or(f64::NAN);

    write_atomic(&lab.state_dir(), FILE, &manifest()).map_err(|e| e.to_string())?;
    let added = wait_for(lab, "the Service to count", |s| {
        at(s, NO_LOCAL) == at(&before, NO_LOCAL) + 1.0
            && at(s, SYNCS) > at(&before, SYNCS)
            && at(s, LAST_SYNC) > at(&before, LAST_SYNC)
            && (!api
                || (at(s, SERVICE_CHANGES) > at(&before, SERVICE_CHANGES)
                    && at(s, ENDPOINT_CHANGES) > at(&before, ENDPOINT_CHANGES)
                    && at(s, PROGRAMMING) > at(&before, PROGRAMMING)))
    })?;
    std::fs::remove_file(lab.state_dir().join(FILE)).map_err(|e| format!("{FILE}: {e}"))?;
    let removed = wait_for(lab, "the Service to go", |s| {
        at(s, NO_LOCAL) == at(&before, NO_LOCAL) && at(s, SYNCS) > at(&added, SYNCS)
    })?;
    let delta = |series: &str| at(&removed, series) - at(&before, series);
    Ok(format!(
        "no_local_endpoints{{internal}} {}->{}->{}, syncs +{}, service changes +{}, endpoint \
         changes +{}, network programming observations +{}",
        at(&before, NO_LOCAL),
        at(&added, NO_LOCAL),
        at(&removed, NO_LOCAL),
        delta(SYNCS),
        delta(SERVICE_CHANGES),
        delta(ENDPOINT_CHANGES),
        delta(PROGRAMMING),
    ))
}

/// Scrapes until `done` holds (every 100 ms, for at most [`PATIENCE`]).
fn wait_for(lab: &Lab, what: &str, done: impl Fn(&Scrape) -> bool) -> Result<Scrape, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = scrape(lab)?;
        if done(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = [
                SYNCS,
                NO_LOCAL,
                SERVICE_CHANGES,
                ENDPOINT_CHANGES,
                PROGRAMMING,
            ]
            .iter()
            .map(|series| format!("{series} {:?}", s.get(*series)))
            .collect();
            return Err(format!(
                "waited {PATIENCE:?} for {what}; node1 shows {}",
                shown.join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// node1's /metrics, fetched by `kxdp-lab probe get` inside its namespace.
fn scrape(lab: &Lab) -> Result<Scrape, String> {
    let tools = lab.tools_binary().map_err(|e| e.to_string())?;
    let mut c = cmd::in_netns(&lab.names().node(NODE1), &tools);
    let to: SocketAddr = METRICS.parse().map_err(|e| format!("{METRICS}: {e}"))?;
    c.args([
        "probe",
        "get",
        "--to",
        &to.to_string(),
        "--path",
        "/metrics",
    ]);
    let text = cmd::run(&mut c).map_err(|e| e.to_string())?;
    Ok(parse(&text))
}

/// The samples of a text exposition by series; comments and unparsable lines skipped.
fn parse(text: &str) -> Scrape {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A Service with internalTrafficPolicy Local and one ready endpoint, on node2.
fn manifest() -> String {
    let node2 = NODE2.name();
    format!(
        r#"# Written and removed by the lab's metrics check.
apiVersion: v1
kind: Service
metadata:
  name: metrics-check
  namespace: {NAMESPACE}
spec:
  clusterIP: 10.96.0.30
  clusterIPs: [10.96.0.30]
  internalTrafficPolicy: Local
  ports:
  - port: 80
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-check-1
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: metrics-check
addressType: IPv4
endpoints:
- addresses: [10.244.2.250]
  conditions: {{ready: true}}
  nodeName: {node2}
ports:
- port: 8080
  protocol: TCP
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_series() {
        let s = parse(
            "# HELP x y\n# TYPE x counter\nx_total 3\nh_bucket{le=\"+Inf\",ip_family=\"IPv4\"} 2\nbad\n",
        );
        assert_eq!(s.get("x_total"), Some(&3.0));
        assert_eq!(
            s.get("h_bucket{le=\"+Inf\",ip_family=\"IPv4\"}"),
            Some(&2.0)
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_manifest_is_a_service_and_its_slice() {
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&manifest())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0]["spec"]["internalTrafficPolicy"].as_str(),
            Some("Local")
        );
        assert_eq!(
            docs[1]["endpoints"][0]["nodeName"].as_str(),
            Some(NODE2.name().as_str())
        );
    }
}
