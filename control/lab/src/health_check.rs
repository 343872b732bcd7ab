//! The lab check on Services' health checks: a LoadBalancer Service with
//! `externalTrafficPolicy: Local` and a `healthCheckNodePort`, asked by the external client
//! (where a load balancer would ask from) on both agent nodes. The node with the Service's
//! ready endpoint answers 200, the other 503, each with kube-proxy's body; when the endpoint
//! moves to the other node the answers swap; when the Service goes, the ports close.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::layout::{NAMESPACE, NODE1, NODE2, NodePlan};
use super::manifests::write_atomic;
use super::{Lab, cmd};

/// The file the check adds to the state directory, and removes again.
const FILE: &str = "health-check.yaml";
const SERVICE: &str = "hc-check";
/// In the NodePort range, like those the API server allocates.
const HC_PORT: u16 = 32256;
/// How long a change may take to show.
const PATIENCE: Duration = Duration::from_secs(30);

/// The check: what was answered, or what was not.
pub(crate) fn answered_where_the_endpoint_is(lab: &Lab) -> (bool, String) {
    let result = check(lab);
    // The Service goes whatever happened, so later checks see the lab as it was.
    let _ = std::fs::remove_file(lab.state_dir().join(FILE));
    match result {
        Ok(measured) => (true, measured),
        Err(why) => (false, why),
    }
}

fn check(lab: &Lab) -> Result<String, String> {
    let mut seen = Vec::new();
    for (with, without) in [(NODE2, NODE1), (NODE1, NODE2)] {
        write_atomic(&lab.state_dir(), FILE, &manifest(with)).map_err(|e| e.to_string())?;
        let want = [(with, 200, 1), (without, 503, 0)];
        wait_for(&format!("the endpoint on {}", with.name()), || {
            want.iter().all(|&(node, status, endpoints)| {
                ask(lab, node).is_ok_and(|got| got == Some((status, body(endpoints))))
            })
        })?;
        seen.push(format!("{} 200, {} 503", with.name(), without.name()));
    }
    std::fs::remove_file(lab.state_dir().join(FILE)).map_err(|e| format!("{FILE}: {e}"))?;
    wait_for("the ports to close", || {
        [NODE1, NODE2]
            .iter()
            .all(|&node| ask(lab, node).is_ok_and(|got| got.is_none()))
    })?;
    seen.push("closed on both once the Service went".into());
    Ok(seen.join("; "))
}

/// Polls `done` every 100 ms for at most [`PATIENCE`].
fn wait_for(what: &str, done: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("waited {PATIENCE:?} for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The external client's GET of `node`'s health check port: (status, body), or None when
/// nothing listens there.
fn ask(lab: &Lab, node: NodePlan) -> Result<Option<(u16, String)>, String> {
    let tools = lab.tools_binary().map_err(|e| e.to_string())?;
    let to = SocketAddr::from((node.underlay_ip(), HC_PORT));
    let mut c = cmd::in_netns(&lab.names().client(), &tools);
    c.args(["probe", "get", "--any-status", "--to", &to.to_string()]);
    c.args(["--path", "/"]);
    let Ok(out) = cmd::run(&mut c) else {
        return Ok(None);
    };
    let (status, body) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    let status = status
        .trim()
        .parse()
        .map_err(|_| format!("{to}: status {status:?}"))?;
    Ok(Some((status, body.to_string())))
}

/// kube-proxy's answer, byte for byte.
fn body(local_endpoints: usize) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": \"{NAMESPACE}\",\n\t\t\"name\": \"{SERVICE}\"\n\t}},\n\t\
         \"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": true\n}}"
    )
}

/// The Service, with its one ready endpoint on `node`.
fn manifest(node: NodePlan) -> String {
    let (name, index) = (node.name(), node.index);
    format!(
        r#"# Written and removed by the lab's health check check.
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.31
  clusterIPs: [10.96.0.31]
  externalTrafficPolicy: Local
  healthCheckNodePort: {HC_PORT}
  ports:
  - port: 80
    protocol: TCP
    nodePort: 30256
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE}-1
  namespace: {NAMESPACE}
  labels:
    kubernetes.io/service-name: {SERVICE}
addressType: IPv4
endpoints:
- addresses: [10.244.{index}.251]
  conditions: {{ready: true}}
  nodeName: {name}
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
    fn the_manifest_loads() {
        let dir = std::env::temp_dir().join(format!("kxdp-hc-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), manifest(NODE1)).unwrap();
        let state = model::state::load_state_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let state = state.unwrap();
        assert_eq!(state.cluster.services.len(), 1);
        assert_eq!(state.cluster.endpoint_slices.len(), 1);
    }
}
