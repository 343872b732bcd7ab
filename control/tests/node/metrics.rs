//! `kxdp agent`'s HTTP endpoints on one node in a network namespace: /readyz and /healthz
//! as kube-proxy serves them, /metrics validated by `promtool check metrics` and checked for
//! real values (traffic on the uplink, the table generation, a reload's build time, and
//! kube-proxy's `kubeproxy_*` names moving as Services change), 404/405 for anything else,
//! and SIGTERM stopping the agent.
//!
//! Root only and needs promtool (Debian package prometheus); skipped with a message
//! otherwise, except under CI=true where it fails.

use testkit::http::http;
use testkit::netns::in_netns;
use testkit::process::stop_agent;
use testkit::root::is_root as running_as_root;
use testkit::root::skip_or_fail;
use testkit::wait::wait_for;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::support::Node;

const NODE_IP: &str = "192.168.78.1";
const UPLINK_MAC: &str = "02:78:00:00:00:01";
const OUTSIDE_IP: &str = "192.168.78.2";
const METRICS: &str = "127.0.0.1:19249";
const HEALTHZ: &str = "127.0.0.1:19256";
/// Datagrams sent to the node's VXLAN port.
const SENT: u32 = 5;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn can_run() -> bool {
    if !running_as_root() {
        return skip_or_fail("the metrics test", "needs root");
    }
    let promtool = Command::new("promtool").arg("--version").output();
    if !promtool.is_ok_and(|o| o.status.success()) {
        assert!(
            !ci(),
            "CI=true: promtool is missing (apt-get install prometheus)"
        );
        testkit::root::skipped(
            "the metrics test",
            "promtool is missing (apt-get install prometheus)",
        );
        return false;
    }
    true
}

fn run(args: &[&str]) {
    testkit::cmd::output(Command::new(args[0]).args(&args[1..]));
}

/// `ip ...` inside `ns`, entered with nsenter (see the `agent` module for why not `ip -n`).
fn ip_in(ns: &str, args: &[&str]) {
    let netns = format!("--net=/run/netns/{ns}");
    let mut all = vec!["nsenter", netns.as_str(), "ip"];
    all.extend_from_slice(args);
    run(&all);
}

fn write_state(dir: &Path, extra: &str) {
    let manifests = format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: node1
  annotations:
    kxdp.io/underlay-mac: "{UPLINK_MAC}"
spec:
  podCIDR: 10.244.1.0/24
status:
  addresses:
  - type: InternalIP
    address: {NODE_IP}
{extra}"#
    );
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, manifests).unwrap();
    std::fs::rename(&tmp, dir.join("cluster.yaml")).unwrap();
}

/// A second node, and a Service with `internalTrafficPolicy: Local` whose one endpoint is
/// on it: kube-proxy counts it in `sync_proxy_rules_no_local_endpoints_total`.
const LOCAL_SERVICE_ELSEWHERE: &str = r#"---
apiVersion: v1
kind: Node
metadata:
  name: node2
  annotations:
    kxdp.io/underlay-mac: "02:78:00:00:00:02"
spec:
  podCIDR: 10.244.2.0/24
status:
  addresses:
  - type: InternalIP
    address: 192.168.78.3
---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  internalTrafficPolicy: Local
  ports:
  - port: 80
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: [10.244.2.5]
  conditions: {ready: true}
  nodeName: node2
ports:
- port: 8080
  protocol: TCP
"#;

/// kube-proxy's names in an exposition (each must be there).
#[derive(Debug)]
struct KubeProxy {
    syncs: f64,
    full: f64,
    partial: f64,
    last_synced: f64,
    last_queued: f64,
    no_local_internal: f64,
}

impl KubeProxy {
    fn read(exposition: &str) -> KubeProxy {
        let get = |series: &str| {
            sample(exposition, series)
                .unwrap_or_else(|| panic!("{series} is not in /metrics:\n{exposition}"))
        };
        for series in [
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}",
        ] {
            get(series);
        }
        KubeProxy {
            syncs: get("kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}"),
            full: get("kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}"),
            partial: get(
                "kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
            ),
            last_synced: get(
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
            ),
            last_queued: get(
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family=\"IPv4\"}",
            ),
            no_local_internal: get(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}",
            ),
        }
    }
}

/// The value of the sample `name{labels}` (exact text before the value).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\nexposition:\n{exposition}",
        testkit::cmd::describe(&out)
    );
}

#[test]
fn agent_serves_metrics_healthz_and_readyz() {
    if !can_run() {
        return;
    }
    let _lock = testkit::root::exclusive();
    // The test's namespaces, agent and files, removed on drop even when the test panicked.
    let mut lab = Node::new("kxmt", "");
    let dir = lab.dir.clone();
    let node = lab.netns("node");
    let outside = lab.netns("out");
    ip_in(
        &node,
        &[
            "link", "add", "up0", "address", UPLINK_MAC, "type", "veth", "peer", "name", "up0peer",
            "netns", &outside,
        ],
    );
    ip_in(
        &node,
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"],
    );
    ip_in(&node, &["link", "set", "up0", "up"]);
    ip_in(
        &outside,
        &["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "up0peer"],
    );
    ip_in(&outside, &["link", "set", "up0peer", "up"]);
    let state = dir.join("state");
    write_state(&state, "");
    let log = dir.join("agent.log");

    let mut agent = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .arg(env!("CARGO_BIN_EXE_kxdp"))
        .args(["agent", "--node", "node1", "--uplink", "up0"])
        .args(["--metrics-bind-address", METRICS])
        .args(["--healthz-bind-address", HEALTHZ])
        .arg("--state")
        .arg(&state)
        .arg("--api-socket")
        .arg(dir.join("agent.sock"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting kxdp agent");
    let rx = testkit::process::stdout_lines(&mut agent);
    lab.adopt_agent(agent);
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "no readiness line; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert!(ready.starts_with("kxdp agent ready"), "{ready}");

    let readyz = http(&node, "GET", HEALTHZ, "/readyz");
    assert_eq!(readyz.status, 200, "{}", readyz.body);
    let healthz = http(&node, "GET", HEALTHZ, "/healthz");
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    let health: serde_json::Value = serde_json::from_str(&healthz.body).unwrap();
    // kube-proxy's body: Go's time.String() of clock readings; healthy, both are now.
    for field in ["lastUpdated", "currentTime"] {
        let t = health[field].as_str().unwrap_or_default();
        assert!(t.contains(" +0000 UTC m=+"), "{field}: {}", healthz.body);
    }
    assert_eq!(health["nodeEligible"], true, "{}", healthz.body);
    assert!(healthz.head.contains("Content-Type: application/json"));
    // The metrics address answers the probes too, as kube-proxy's does.
    assert_eq!(http(&node, "GET", METRICS, "/healthz").status, 200);

    // Traffic the uplink program redirects to the worker: UDP to the node's VXLAN port from
    // a host that is no node, too short to carry a VXLAN header. The datapath drops it
    // with a reason.
    in_netns(&outside, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..SENT {
            socket
                .send_to(&[0u8; 4], format!("{NODE_IP}:4789"))
                .unwrap();
        }
    });
    // Workers publish every ~100 ms: wait for the datagrams to show.
    let mut exposition = String::new();
    wait_for("uplink rx in /metrics", Duration::from_secs(10), || {
        let reply = http(&node, "GET", METRICS, "/metrics");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply
                .head
                .contains("Content-Type: text/plain; version=0.0.4")
        );
        exposition = reply.body;
        sample(&exposition, "kxdp_port_rx_packets_total{port=\"uplink\"}")
            .is_some_and(|n| n >= f64::from(SENT))
    });
    promtool_check(&exposition);
    assert_eq!(sample(&exposition, "kxdp_table_generation"), Some(1.0));
    // Ethernet + IPv4 + UDP + 4 bytes each.
    assert!(
        sample(&exposition, "kxdp_port_rx_bytes_total{port=\"uplink\"}")
            .is_some_and(|b| b >= f64::from(SENT * 46)),
        "{exposition}"
    );
    let at_least_sent = |n: f64| n >= f64::from(SENT);
    assert!(
        sample(&exposition, "kxdp_worker_rx_packets_total{worker=\"0\"}")
            .is_some_and(at_least_sent)
    );
    assert!(
        sample(
            &exposition,
            "kxdp_worker_dropped_packets_total{worker=\"0\"}"
        )
        .is_some_and(at_least_sent)
    );
    let dropped: f64 = exposition
        .lines()
        .filter(|l| l.starts_with("kxdp_packets_dropped_total{reason="))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        at_least_sent(dropped),
        "drops by reason sum to {dropped}:\n{exposition}"
    );
    assert!(
        sample(
            &exposition,
            "kxdp_xsk_rx_ring_full_total{port=\"uplink\",queue=\"0\",worker=\"0\"}"
        )
        .is_some()
    );
    assert!(
        sample(
            &exposition,
            "kxdp_packets_dropped_total{reason=\"no_route\"}"
        )
        .is_some()
    );
    assert!(sample(&exposition, "kxdp_conntrack_entries").is_some());
    assert!(sample(&exposition, "kxdp_conntrack_evictions_total").is_some());
    assert!(
        sample(&exposition, "kxdp_worker_busy_ratio{worker=\"0\"}")
            .is_some_and(|r| (0.0..=1.0).contains(&r))
    );
    // A state directory has no trigger times: no network programming latency, ever.
    assert_eq!(
        sample(
            &exposition,
            "kxdp_network_programming_duration_seconds_count"
        ),
        Some(0.0)
    );
    // Generation 1's build, as kube-proxy's first full sync.
    assert_eq!(
        sample(&exposition, "kxdp_sync_duration_seconds_count"),
        Some(1.0)
    );
    let before = KubeProxy::read(&exposition);
    assert_eq!(before.syncs, 1.0, "{exposition}");
    assert_eq!((before.full, before.partial), (1.0, 0.0));
    assert_eq!(before.no_local_internal, 0.0);
    assert!(
        exposition.starts_with("# HELP")
            && exposition.contains(&format!(
                "kxdp_build_info{{version=\"{}\",",
                env!("CARGO_PKG_VERSION")
            )),
        "{exposition}"
    );
    let published = sample(&exposition, "kxdp_tables_last_published_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        published > now - 120.0 && published <= now + 1.0,
        "published at {published}, now {now}"
    );

    // A state change: generation 2, a Service whose only endpoint is on another node
    // while its internalTrafficPolicy is Local. One more (full: a directory is re-read
    // whole) sync, and kube-proxy's count of Local policies without local endpoints moves.
    write_state(&state, LOCAL_SERVICE_ELSEWHERE);
    wait_for("generation 2 in /metrics", Duration::from_secs(10), || {
        exposition = http(&node, "GET", METRICS, "/metrics").body;
        sample(&exposition, "kxdp_table_generation") == Some(2.0)
    });
    promtool_check(&exposition);
    assert_eq!(
        sample(&exposition, "kxdp_sync_duration_seconds_count"),
        Some(2.0)
    );
    let after = KubeProxy::read(&exposition);
    assert_eq!((after.syncs, after.full), (2.0, 2.0), "{exposition}");
    assert_eq!(after.no_local_internal, 1.0, "{exposition}");
    assert!(after.last_synced > before.last_synced, "{exposition}");
    assert!(
        after.last_queued >= after.last_synced - 10.0 && after.last_queued <= after.last_synced
    );
    assert_eq!(
        sample(
            &exposition,
            "kxdp_network_programming_duration_seconds_count"
        ),
        Some(0.0)
    );

    assert_eq!(http(&node, "GET", METRICS, "/nope").status, 404);
    assert_eq!(http(&node, "GET", HEALTHZ, "/metrics").status, 404);
    let post = http(&node, "POST", METRICS, "/metrics");
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"), "{}", post.head);

    stop_agent(lab.take_agent().unwrap(), &log);
}
