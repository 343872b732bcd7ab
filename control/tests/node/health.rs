//! kube-proxy's health endpoints on a node (issue 18): a LoadBalancer Service with
//! `externalTrafficPolicy: Local` answered on its `healthCheckNodePort` from outside the
//! node, 200 or 503 with kube-proxy's body as its local endpoint comes and goes, closed when
//! the Service stops asking; `/healthz` and `/livez` healthy during the initial sync, 503
//! once a change stays unprogrammed past `--health-timeout`, healthy again once it is
//! programmed; and a probe answered while another client holds a connection open.
//!
//! Root only; skipped (with a message) otherwise, except under CI=true where it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::http::{HttpReply, http};
use testkit::netns::{Uplink, in_netns};
use testkit::wait::wait_for;

use super::support::{Node, read};

const NODE_IP: &str = "192.168.84.1";
const OUTSIDE_IP: &str = "192.168.84.2";
const UPLINK_MAC: &str = "02:84:00:00:00:01";
/// The agent's default healthz address, in the node's namespace.
const HEALTHZ: &str = "127.0.0.1:10256";
const HC_PORT: u16 = 32100;

fn can_run() -> bool {
    testkit::root::is_root() || testkit::root::skip_or_fail("the health test", "needs root")
}

/// A node namespace with its uplink, and a namespace outside it on the uplink's segment.
fn node_and_outside(node: &mut Node) -> (String, String) {
    node.with_uplink(UPLINK_MAC, NODE_IP, OUTSIDE_IP, 1)
}

/// node1, and Service demo/web of type LoadBalancer with `policy` and a health check port;
/// its one endpoint on node1 `ready` (None: no endpoint at all).
fn write_state(node: &Node, policy: &str, ready: Option<bool>) {
    let mut manifests = testkit::manifests::node("node1", UPLINK_MAC, "10.244.1.0/24", NODE_IP);
    manifests.push_str(&format!(
        "---
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
  type: LoadBalancer
  clusterIP: 10.96.0.50
  externalTrafficPolicy: {policy}
  healthCheckNodePort: {HC_PORT}
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
    nodePort: 30050
status:
  loadBalancer:
    ingress:
    - ip: 198.51.100.50
"
    ));
    if let Some(ready) = ready {
        manifests.push_str(&format!(
            "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.244.1.5]
  nodeName: node1
  conditions: {{ready: {ready}}}
"
        ));
    }
    write_atomically(node, &manifests);
}

/// The agent re-reads the directory when it changes: never let it see half a file.
fn write_atomically(node: &Node, manifests: &str) {
    let dir = node.state_dir();
    std::fs::write(dir.join(".cluster.yaml.tmp"), manifests).unwrap();
    std::fs::rename(dir.join(".cluster.yaml.tmp"), dir.join("cluster.yaml")).unwrap();
}

/// kube-proxy's health check answer, byte for byte.
fn kube_proxy_body(local_endpoints: usize, healthy: bool) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": \"demo\",\n\t\t\"name\": \"web\"\n\t}},\n\t\
         \"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {healthy}\n}}"
    )
}

fn health_check(outside: &str) -> HttpReply {
    http(outside, "GET", &format!("{NODE_IP}:{HC_PORT}"), "/")
}

#[test]
fn service_health_check_follows_local_endpoints() {
    if !can_run() {
        return;
    }
    let _lock = testkit::root::exclusive();
    let mut node = Node::new("kxhc", "");
    let (ns, outside) = node_and_outside(&mut node);
    write_state(&node, "Local", Some(true));
    let lines = node.start_agent(&ns, &["--uplink", Uplink::NAME]);
    let ready = node.ready_line(&lines);
    assert!(ready.starts_with("kxdp agent ready"), "{ready}");

    // A load balancer's probe from outside the node: the node has a ready local endpoint.
    let reply = health_check(&outside);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, kube_proxy_body(1, true));
    assert!(
        reply.head.contains("Content-Type: application/json"),
        "{}",
        reply.head
    );
    assert!(
        reply.head.contains("X-Content-Type-Options: nosniff"),
        "{}",
        reply.head
    );

    // The endpoint stops being ready: the node must not get the Service's traffic.
    write_state(&node, "Local", Some(false));
    wait_for(
        "503 with no local endpoint",
        Duration::from_secs(10),
        || health_check(&outside).status == 503,
    );
    assert_eq!(health_check(&outside).body, kube_proxy_body(0, true));
    // No endpoint at all, then back.
    let before = node.status().generation;
    write_state(&node, "Local", None);
    wait_for(
        "a generation without the slice",
        Duration::from_secs(10),
        || node.status().generation > before,
    );
    assert_eq!(health_check(&outside).body, kube_proxy_body(0, true));
    assert_eq!(
        node.status().health_checks,
        ["demo/web port 32100: 0 local endpoints"]
    );
    write_state(&node, "Local", Some(true));
    wait_for(
        "200 with the endpoint back",
        Duration::from_secs(10),
        || health_check(&outside).status == 200,
    );

    // externalTrafficPolicy Cluster needs no health check: the port closes.
    write_state(&node, "Cluster", Some(true));
    let addr = format!("{NODE_IP}:{HC_PORT}").parse().unwrap();
    wait_for(
        "the health check port to close",
        Duration::from_secs(10),
        || {
            in_netns(&outside, || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
            })
        },
    );
    node.stop_agent();
}

#[test]
fn healthz_follows_programming_and_answers_beside_a_held_connection() {
    if !can_run() {
        return;
    }
    let _lock = testkit::root::exclusive();
    let mut node = Node::new("kxhz", "");
    let (ns, _outside) = node_and_outside(&mut node);
    write_state(&node, "Local", Some(true));
    let lines = node.start_agent(
        &ns,
        &[
            "--uplink",
            Uplink::NAME,
            "--health-timeout",
            "2s",
            "--log-format",
            "json",
        ],
    );
    node.ready_line(&lines);
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(http(&ns, "GET", HEALTHZ, path).status, 200, "{path}");
    }

    // A client that connected and sent half a request does not hold up the kubelet's probe.
    let addr: std::net::SocketAddr = HEALTHZ.parse().unwrap();
    let mut held = in_netns(&ns, || TcpStream::connect(addr).unwrap());
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let reply = http(&ns, "GET", HEALTHZ, "/livez");
    assert_eq!(reply.status, 200, "{reply:?}");
    held.write_all(b"Connection: close\r\n\r\n").unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = held.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // A change the agent cannot program (a manifest that does not parse): healthy until the
    // timeout, then 503 with the last programming time, and why in a header.
    write_atomically(&node, "kind: Service\nmetadata: [not, a, map\n");
    wait_for("/healthz 503", Duration::from_secs(20), || {
        http(&ns, "GET", HEALTHZ, "/healthz").status == 503
    });
    let healthz = http(&ns, "GET", HEALTHZ, "/healthz");
    let body: serde_json::Value = serde_json::from_str(&healthz.body).unwrap();
    assert_ne!(body["lastUpdated"], body["currentTime"], "{}", healthz.body);
    assert_eq!(body["nodeEligible"], true);
    assert!(
        healthz.head.contains("X-Kxdp-Unhealthy: a change noticed"),
        "{}",
        healthz.head
    );
    assert_eq!(http(&ns, "GET", HEALTHZ, "/livez").status, 503);
    // The running tables still forward: ready stays.
    assert_eq!(http(&ns, "GET", HEALTHZ, "/readyz").status, 200);

    write_state(&node, "Local", Some(true));
    wait_for("/healthz 200 again", Duration::from_secs(10), || {
        http(&ns, "GET", HEALTHZ, "/healthz").status == 200
    });
    node.stop_agent();

    // --log-format json: every line one object; each generation one event with its fields.
    let log = read(&node.log());
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let published: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["message"] == "tables published")
        .collect();
    assert!(
        published.len() >= 2 && published.iter().all(|e| e["level"] == "INFO"),
        "{log}"
    );
    assert_eq!(published[1]["generation"], 2, "{log}");
    assert_eq!(
        published[1]["from"], "the state directory, read whole",
        "{log}"
    );
    assert!(published[1]["took_ms"].is_u64(), "{log}");
}

#[test]
fn healthz_is_healthy_during_the_initial_sync() {
    if !can_run() {
        return;
    }
    let _lock = testkit::root::exclusive();
    let mut node = Node::new("kxhs", "");
    let (ns, _outside) = node_and_outside(&mut node);
    // An API server nobody answers for: the first sync never completes.
    let kubeconfig = node.dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    \
         server: http://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    \
         user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let _lines = node.start_agent(
        &ns,
        &["--uplink", Uplink::NAME, "--kubeconfig", &kubeconfig],
    );
    let addr: std::net::SocketAddr = HEALTHZ.parse().unwrap();
    wait_for("the healthz port", Duration::from_secs(10), || {
        in_netns(&ns, || TcpStream::connect(addr).is_ok())
    });
    // Probed for longer than the old server's 2 s wait.
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(4) || probes < 10 {
        let asked = Instant::now();
        let healthz = http(&ns, "GET", HEALTHZ, "/healthz");
        assert_eq!(healthz.status, 200, "{healthz:?}");
        // The kubelet gives up after its probe timeout (1 s by default): an answer that
        // waits for the sync (the old server waited 2 s for the control thread) fails it.
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(http(&ns, "GET", HEALTHZ, "/livez").status, 200);
        let readyz = http(&ns, "GET", HEALTHZ, "/readyz");
        assert_eq!(readyz.status, 503, "{readyz:?}");
        assert!(readyz.body.starts_with("not ready: "), "{}", readyz.body);
        probes += 1;
    }
    assert!(node.agent_running(), "{}", read(&node.log()));
    node.stop_agent();
}
