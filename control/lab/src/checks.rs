//! `kxdp-lab check`: real traffic between the lab's namespaces, each check judged on what
//! came back. Probes run as `kxdp-lab probe` (TCP/UDP) and `ping` (ICMP) inside the
//! namespaces through nsenter.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cmd;
use super::error::LabError;
use super::layout::{
    ADMIN_PORT, CLIENT_HOST_PORT, ECHO_PORT, EXTERNAL_IP, EXTRA_CLUSTER_IP, FLOOD_PORT, HTTP_PORT,
    LOAD_BALANCER_IP, NODE_PORT, NODE1, NODE2, NODE3, NodePlan, POD_CLIENT, POD_OTHER, POD_WEB1,
    POD_WEB2, PodPlan, SECOND_SERVICE_CIDR, UPLINK, WEB_CLUSTER_IP, WEB_TCP_PORT, WEB_UDP_PORT,
};
use super::manifests::PlacedPod;
use super::pods;
use super::report::{self, CheckResult};
use super::servers::VTEP_SERVER;
use super::{Lab, Runtime};
use crate::probe::{FloodReport, ProbeReport, Proto, READY_PREFIX, SinkReport};
use agent_api::AgentStats;

/// Requests per plain reachability check.
const COUNT: u32 = 20;
/// Requests (new flows) per Service spread check.
const SPREAD_COUNT: u32 = 200;
/// Each backend must answer at least this share of a spread check (Maglev over two
/// backends gives about half each; 20% leaves room for chance, not for a dead backend).
const SPREAD_MIN_SHARE: f64 = 0.2;
const NODEPORT_COUNT: u32 = 50;
/// Requests a denied flow must lose, and how long each waits.
const DENY_COUNT: u32 = 3;
const DENY_TIMEOUT_MS: u64 = 1000;
const TIMEOUT_MS: u64 = 1000;
const PING_COUNT: u32 = 5;
const FLOOD_MS: u64 = 1000;
/// A flood check fails below this many delivered datagrams.
const FLOOD_MIN_DELIVERED: u64 = 1000;
/// How long the flood's sink may take to say it listens, and to report after the flood.
const SINK_READY_WITHIN: Duration = Duration::from_secs(10);
const SINK_REPORT_WITHIN: Duration = Duration::from_secs(20);

/// Why a check could not measure at all (its tool did not run, or said something that is
/// not a report); the check fails with this as what it measured.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Lab(#[from] LabError),
    /// `kxdp-lab probe ...` printed something that is not its JSON report.
    #[error("{tool} output {output:?}: {source}")]
    Report {
        tool: &'static str,
        output: String,
        source: serde_json::Error,
    },
    #[error("no Udp counters in /proc/net/snmp of {netns}")]
    NoUdpCounters { netns: String },
    #[error("starting the sink: {0}")]
    SinkStart(#[source] std::io::Error),
    #[error("the sink has no stdout")]
    SinkStdout,
    #[error("the sink did not {what} in {} s", .within.as_secs())]
    SinkSilent {
        what: &'static str,
        within: Duration,
    },
    #[error("the sink said {0:?}")]
    SinkNotReady(String),
    /// A tool's output that does not say what was asked.
    #[error("{0}")]
    Parse(String),
}

/// Parses a probe tool's one-line JSON report.
fn report_of<T: serde::de::DeserializeOwned>(
    tool: &'static str,
    output: &str,
) -> Result<T, CheckError> {
    serde_json::from_str(output.trim()).map_err(|source| CheckError::Report {
        tool,
        output: output.to_string(),
        source,
    })
}

/// Where each pod is and what address it got.
struct Ctx<'a> {
    lab: &'a Lab,
    ips: BTreeMap<String, Ipv4Addr>,
    /// Each pod's network namespace: a name in /run/netns, or containerd's path.
    netns: BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn ip(&self, pod: &PodPlan) -> Ipv4Addr {
        // `run` checked every pod has an address.
        self.ips
            .get(pod.name)
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn pod_ns(&self, pod: &PodPlan) -> String {
        self.netns
            .get(pod.name)
            .cloned()
            .unwrap_or_else(|| self.lab.names().pod(pod))
    }

    fn node_ns(&self, node: NodePlan) -> String {
        self.lab.names().node(node)
    }

    /// `kxdp-lab probe tcp|udp` in `netns`.
    fn probe(
        &self,
        netns: &str,
        proto: Proto,
        to: SocketAddr,
        count: u32,
        timeout_ms: u64,
    ) -> Result<ProbeReport, CheckError> {
        let tools = self.lab.tools_binary()?;
        let mut c = cmd::in_netns(netns, &tools);
        c.args(["probe", proto.name(), "--to", &to.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--timeout-ms", &timeout_ms.to_string()]);
        let stdout = cmd::run(&mut c)?;
        report_of("probe", &stdout)
    }
}

/// Runs every check; Err only when the lab is not there to check.
pub fn run(lab: &Lab) -> Result<Vec<CheckResult>, LabError> {
    let mut ips = BTreeMap::new();
    let mut netns = BTreeMap::new();
    for rec in pods::records(lab) {
        if let Some(ip) = rec.ip {
            ips.insert(rec.name.clone(), ip);
        }
        netns.insert(rec.name.clone(), rec.netns.clone());
    }
    for p in super::layout::PODS {
        if !ips.contains_key(p.name) {
            return Err(LabError::Setup(format!(
                "pod {} has no address in {}: is the lab up (`kxdp-lab up --dir {}`)?",
                p.name,
                lab.pods_dir().display(),
                lab.dir.display()
            )));
        }
    }
    let ctx = Ctx { lab, ips, netns };
    let mut results = Vec::new();
    let mut check = |name: String, f: &dyn Fn(&Ctx<'_>) -> (bool, String)| {
        let counters_before = all_worker_totals(lab);
        let started = Instant::now();
        let (passed, mut measured) = f(&ctx);
        let elapsed = started.elapsed();
        if !passed {
            // What the workers counted during this check alone: says whether the datapath
            // dropped (and why) or the packets never reached it.
            measured.push_str(&format!(
                " [during the check: {}]",
                counters_during(&counters_before, &all_worker_totals(lab))
            ));
        }
        let r = CheckResult {
            name,
            passed,
            measured,
            elapsed,
        };
        tracing::info!(check = %r.name, passed = r.passed, measured = %r.measured);
        results.push(r);
    };

    // The CNI configuration each agent installed once ready, over what the node had.
    for node in [NODE1, NODE2] {
        check(
            format!("CNI config on {}: kxdp's list first", node.name()),
            &move |c| cni_config(c.lab, node),
        );
    }

    // Each agent found its uplink and its MTU itself: the lab gives no --uplink and no
    // underlayMTU.
    for node in [NODE1, NODE2] {
        check(
            format!("{}: uplink and MTU found without flags", node.name()),
            &move |c| uplink_found(c, node),
        );
    }

    // With the API source, each agent bootstrapped as on a node without kube-proxy.
    if lab.source == super::StateSource::Api {
        for node in [NODE1, NODE2] {
            check(
                format!(
                    "{}: in-cluster bootstrap through --api-server (KUBERNETES_SERVICE_HOST {} unrouted)",
                    node.name(),
                    super::layout::KUBERNETES_SERVICE_IP
                ),
                &move |c| bootstrapped_in_cluster(c, node),
            );
        }
    }

    // Walk 1: pod <-> pod on one node (node1), both directions.
    check("pod->pod same node, ICMP (client->web-1)".into(), &|c| {
        ping_all(&c.pod_ns(&POD_CLIENT), c.ip(&POD_WEB1))
    });
    for (proto, port) in [(Proto::Tcp, HTTP_PORT), (Proto::Udp, ECHO_PORT)] {
        check(
            format!("pod->pod same node, {} (client->web-1)", upper(proto)),
            &move |c| pod_to_pod(c, &POD_CLIENT, &POD_WEB1, proto, port),
        );
    }
    check("pod->pod same node, TCP (web-1->client)".into(), &|c| {
        pod_to_pod(c, &POD_WEB1, &POD_CLIENT, Proto::Tcp, HTTP_PORT)
    });

    // Walk 2: across nodes over VXLAN, both directions.
    check("pod->pod across nodes, ICMP (client->web-2)".into(), &|c| {
        ping_all(&c.pod_ns(&POD_CLIENT), c.ip(&POD_WEB2))
    });
    for (proto, port) in [(Proto::Tcp, HTTP_PORT), (Proto::Udp, ECHO_PORT)] {
        check(
            format!("pod->pod across nodes, {} (client->web-2)", upper(proto)),
            &move |c| pod_to_pod(c, &POD_CLIENT, &POD_WEB2, proto, port),
        );
    }
    check("pod->pod across nodes, TCP (web-2->client)".into(), &|c| {
        pod_to_pod(c, &POD_WEB2, &POD_CLIENT, Proto::Tcp, HTTP_PORT)
    });

    // Walk 3: ClusterIP, new flows spread over the backends of both nodes.
    for (proto, port) in [(Proto::Tcp, WEB_TCP_PORT), (Proto::Udp, WEB_UDP_PORT)] {
        check(
            format!(
                "pod->ClusterIP {} {WEB_CLUSTER_IP}:{port}, {SPREAD_COUNT} flows",
                upper(proto)
            ),
            &move |c| {
                let to = SocketAddr::from((WEB_CLUSTER_IP, port));
                let r = c.probe(&c.pod_ns(&POD_CLIENT), proto, to, SPREAD_COUNT, TIMEOUT_MS);
                judge_spread(r, &[POD_WEB1.name, POD_WEB2.name], SPREAD_MIN_SHARE)
            },
        );
    }

    // A Service allocated from the second ServiceCIDR: programmed (the ServiceCIDR objects
    // extend kxdp.yaml's range), from a pod and from a node's own stack, which reaches it
    // because the agent routes every ServiceCIDR into kxdp-host (walk 8).
    check(
        format!(
            "pod->ClusterIP {EXTRA_CLUSTER_IP}:{WEB_TCP_PORT} (second ServiceCIDR {SECOND_SERVICE_CIDR})"
        ),
        &|c| {
            let to = SocketAddr::from((EXTRA_CLUSTER_IP, WEB_TCP_PORT));
            web_answers(c, &c.pod_ns(&POD_CLIENT), to)
        },
    );
    check(
        format!(
            "node2 host->ClusterIP {EXTRA_CLUSTER_IP}:{WEB_TCP_PORT} (second ServiceCIDR, routed into kxdp-host)"
        ),
        &|c| second_cidr_from_host(c, NODE2),
    );

    // Walk 5: an outside client to the NodePort of each node.
    for node in [NODE1, NODE2] {
        check(
            format!(
                "external->NodePort {}:{NODE_PORT} ({})",
                node.underlay_ip(),
                node.name()
            ),
            &move |c| {
                let to = SocketAddr::from((node.underlay_ip(), NODE_PORT));
                let r = c.probe(
                    &c.lab.names().client(),
                    Proto::Tcp,
                    to,
                    NODEPORT_COUNT,
                    TIMEOUT_MS,
                );
                judge_all_answered(r, &[POD_WEB1.name, POD_WEB2.name])
            },
        );
    }

    // The node's own processes to its frontends (never through XDP: to a local address via
    // lo, to the others by the default route): rewritten to the ClusterIP by the agent's
    // nftables output chain, then the datapath's Service selection, as for pods.
    for (what, to) in [
        (
            format!("own NodePort {}:{NODE_PORT}", NODE1.underlay_ip()),
            SocketAddr::from((NODE1.underlay_ip(), NODE_PORT)),
        ),
        (
            format!("externalIP {EXTERNAL_IP}:{WEB_TCP_PORT}"),
            SocketAddr::from((EXTERNAL_IP, WEB_TCP_PORT)),
        ),
        (
            format!("LoadBalancer IP {LOAD_BALANCER_IP}:{WEB_TCP_PORT}"),
            SocketAddr::from((LOAD_BALANCER_IP, WEB_TCP_PORT)),
        ),
    ] {
        check(format!("node1 host->{what}"), &move |c| {
            web_answers(c, &c.node_ns(NODE1), to)
        });
    }

    // The LoadBalancer IP from outside, routed to node1 (as a load balancer would bring it):
    // open to the client, inside loadBalancerSourceRanges; closed to the kernel VTEP host,
    // outside them (dropped as lb_source_range, so every request times out).
    check(
        format!(
            "external->LoadBalancer IP {LOAD_BALANCER_IP}:{WEB_TCP_PORT} (in loadBalancerSourceRanges)"
        ),
        &|c| {
            let to = SocketAddr::from((LOAD_BALANCER_IP, WEB_TCP_PORT));
            web_answers(c, &c.lab.names().client(), to)
        },
    );
    check(
        format!(
            "node3 host->LoadBalancer IP {LOAD_BALANCER_IP}:{WEB_TCP_PORT} (outside loadBalancerSourceRanges)"
        ),
        &|c| {
            let to = SocketAddr::from((LOAD_BALANCER_IP, WEB_TCP_PORT));
            let before = worker_totals(c.lab, NODE1);
            let r = c.probe(
                &c.node_ns(NODE3),
                Proto::Tcp,
                to,
                DENY_COUNT,
                DENY_TIMEOUT_MS,
            );
            let (blocked, measured) = judge_blocked(r);
            // Dropped by the datapath for its range, not lost on the way.
            let reason = "lb_source_range";
            let dropped = match (before, worker_totals(c.lab, NODE1)) {
                (Ok(b), Ok(a)) => a.since(&b).drops.get(reason).copied().unwrap_or(0),
                _ => 0,
            };
            (
                blocked && dropped >= u64::from(DENY_COUNT),
                format!("{measured}; node1 dropped {dropped} as {reason}"),
            )
        },
    );

    // hostPort: the runtime passed the client pod's port mapping to the chain the agent
    // installed, and portmap (iptables DNAT in node1's kernel) forwards node1's port to it.
    check(
        format!(
            "external->hostPort {}:{CLIENT_HOST_PORT} (portmap -> client:{HTTP_PORT})",
            NODE1.underlay_ip()
        ),
        &|c| {
            let to = SocketAddr::from((NODE1.underlay_ip(), CLIENT_HOST_PORT));
            let r = c.probe(&c.lab.names().client(), Proto::Tcp, to, COUNT, TIMEOUT_MS);
            judge_all_answered(r, &[POD_CLIENT.name])
        },
    );

    // NetworkPolicy demo/web-ingress: web accepts role=client pods and the nodes' gateways.
    check(
        format!("policy deny: other->web-1 TCP {HTTP_PORT} (across nodes)"),
        &|c| {
            let to = SocketAddr::from((c.ip(&POD_WEB1), HTTP_PORT));
            let r = c.probe(
                &c.pod_ns(&POD_OTHER),
                Proto::Tcp,
                to,
                DENY_COUNT,
                DENY_TIMEOUT_MS,
            );
            judge_blocked(r)
        },
    );
    check(
        format!("policy deny: other->web-2 UDP {ECHO_PORT} (same node)"),
        &|c| {
            let to = SocketAddr::from((c.ip(&POD_WEB2), ECHO_PORT));
            let r = c.probe(
                &c.pod_ns(&POD_OTHER),
                Proto::Udp,
                to,
                DENY_COUNT,
                DENY_TIMEOUT_MS,
            );
            judge_blocked(r)
        },
    );
    check(
        format!("policy allow: client(role=client)->web-2 TCP {ADMIN_PORT}"),
        &|c| pod_to_pod(c, &POD_CLIENT, &POD_WEB2, Proto::Tcp, ADMIN_PORT),
    );
    check(
        "policy allow: other->client TCP (client not isolated)".into(),
        &|c| pod_to_pod(c, &POD_OTHER, &POD_CLIENT, Proto::Tcp, HTTP_PORT),
    );

    // Walk 6: the node reaches its pods (also isolated ones) through the kernel.
    check("node->pod, ICMP (node1->web-1)".into(), &|c| {
        ping_all(&c.node_ns(NODE1), c.ip(&POD_WEB1))
    });
    check("node->pod, TCP (node2->web-2)".into(), &|c| {
        let to = SocketAddr::from((c.ip(&POD_WEB2), HTTP_PORT));
        let r = c.probe(&c.node_ns(NODE2), Proto::Tcp, to, COUNT, TIMEOUT_MS);
        judge_all_answered(r, &[POD_WEB2.name])
    });

    // Interop: a Linux vxlan device (node3) and our VTEP on node1.
    check("kernel vxlan node3->pod, ICMP (->client)".into(), &|c| {
        ping_all(&c.lab.names().vtep(), c.ip(&POD_CLIENT))
    });
    check(
        format!("kernel vxlan node3->pod, UDP (->client:{ECHO_PORT})"),
        &|c| {
            let to = SocketAddr::from((c.ip(&POD_CLIENT), ECHO_PORT));
            let r = c.probe(&c.lab.names().vtep(), Proto::Udp, to, COUNT, TIMEOUT_MS);
            judge_all_answered(r, &[POD_CLIENT.name])
        },
    );
    check("pod->kernel vxlan node3, ICMP (client->)".into(), &|c| {
        ping_all(&c.pod_ns(&POD_CLIENT), NODE3.gateway())
    });
    check(
        format!("pod->kernel vxlan node3, TCP (client->:{HTTP_PORT})"),
        &|c| {
            let to = SocketAddr::from((NODE3.gateway(), HTTP_PORT));
            let r = c.probe(&c.pod_ns(&POD_CLIENT), Proto::Tcp, to, COUNT, TIMEOUT_MS);
            judge_all_answered(r, &[VTEP_SERVER])
        },
    );

    // kube-proxy's metric names on node1, moving as the lab adds and removes a Service.
    check(
        "node1 /metrics: kubeproxy_* names there, moving as a Service comes and goes".into(),
        &|c| super::metrics_check::kube_proxy_names_move(c.lab),
    );

    // A load balancer's health checks (healthCheckNodePort), asked from outside: 200 where
    // the endpoint is, 503 elsewhere, following it.
    check(
        "external->node1/node2 healthCheckNodePort: 200 where the endpoint is, 503 elsewhere"
            .into(),
        &|c| super::health_check::answered_where_the_endpoint_is(c.lab),
    );

    // After the traffic above, before the floods (which overrun the rings on purpose):
    // every rx queue of each uplink has its socket, nothing the XDP programs meant for a
    // worker fell back to the kernel (no_slot), nothing was lost before a worker saw it.
    for node in [NODE1, NODE2] {
        check(
            format!("{}: every uplink rx queue served", node.name()),
            &move |c| queues_served(c, node),
        );
    }

    // Throughput: one flow, unpaced, through one worker of each node on the way.
    check(
        format!("flood UDP {FLOOD_MS} ms, client->web-1 (same node)"),
        &|c| flood(c, &POD_CLIENT, &POD_WEB1),
    );
    check(
        format!("flood UDP {FLOOD_MS} ms, client->web-2 (across nodes)"),
        &|c| flood(c, &POD_CLIENT, &POD_WEB2),
    );
    check("after the floods: client->web-2 TCP".into(), &|c| {
        pod_to_pod(c, &POD_CLIENT, &POD_WEB2, Proto::Tcp, HTTP_PORT)
    });

    if lab.runtime == Runtime::Containerd {
        containerd_checks(&mut check);
    }

    Ok(results)
}

/// A check: what it measured and whether that passes, given the lab's pods.
type CheckFn<'a> = &'a dyn Fn(&Ctx<'_>) -> (bool, String);

/// One request's patience while a new pod is polled for its first answer.
const ANSWER_PROBE_MS: u64 = 200;

/// What containerd does with kxdp-cni and the agent (containerd::runtime_checks), each
/// followed by traffic between the lab's pods.
fn containerd_checks(check: &mut dyn FnMut(String, CheckFn<'_>)) {
    use super::containerd::runtime_checks as rc;
    let tcp =
        |c: &Ctx<'_>, from: &PodPlan, to: &PodPlan| pod_to_pod(c, from, to, Proto::Tcp, HTTP_PORT);
    let placed = |c: &Ctx<'_>| -> Vec<PlacedPod> {
        super::layout::PODS
            .iter()
            .map(|&plan| PlacedPod {
                plan,
                ip: c.ip(&plan),
            })
            .collect()
    };
    check(
        "containerd: StopPodSandbox + RemovePodSandbox (CNI DEL twice) leave nothing".into(),
        &|c| rc::del_twice(c.lab, &|f, t| tcp(c, f, t)),
    );
    check(
        "containerd: sandbox removed after its netns vanished (DEL without netns)".into(),
        &|c| rc::netns_gone(c.lab, &|f, t| tcp(c, f, t)),
    );
    check(
        "containerd restart on node1 with pods running".into(),
        &|c| rc::containerd_restart(c.lab, &|f, t| tcp(c, f, t)),
    );
    check(
        "agent container restarted on node2: pods served again".into(),
        &|c| {
            rc::agent_restart(&rc::Restarts {
                lab: c.lab,
                traffic: &|f, t| tcp(c, f, t),
                placed: &placed(c),
            })
        },
    );
    check(
        "pod creation through containerd (alternating nodes, answering client)".into(),
        &|c| {
            // From the client pod (node1): half the new pods are on its node, half across.
            let answers = |ip: Ipv4Addr| {
                let to = SocketAddr::from((ip, HTTP_PORT));
                c.probe(&c.pod_ns(&POD_CLIENT), Proto::Tcp, to, 1, ANSWER_PROBE_MS)
                    .is_ok_and(|r| r.answered == 1)
            };
            rc::pod_creation(c.lab, &placed(c), &answers)
        },
    );
    check(
        "sandbox while node1's agent restarts: CNI 11, retried, made".into(),
        &|c| {
            rc::sandbox_during_agent_restart(&rc::Restarts {
                lab: c.lab,
                traffic: &|f, t| tcp(c, f, t),
                placed: &placed(c),
            })
        },
    );
}

/// The uplink's queue map covers its rx queues (as the kernel counts them), every worker
/// holds the sockets of its queues, no_slot is 0 and no socket lost a packet. Reports
/// how many queues have carried traffic so far (the bridge's hash decides which).
fn queues_served(c: &Ctx<'_>, node: NodePlan) -> (bool, String) {
    let stats = match super::agents::stats(c.lab, node) {
        Ok(s) => s,
        Err(e) => return (false, e.to_string()),
    };
    let expected = c.lab.workers.max(super::layout::UPLINK_QUEUES) as usize;
    let Some(map) = stats.queues.iter().find(|p| p.port == "uplink") else {
        return (
            false,
            format!("no uplink in the queue map: {:?}", stats.queues),
        );
    };
    let workers = stats.workers.len().max(1);
    let mapped = map.workers.len() == expected
        && map
            .workers
            .iter()
            .enumerate()
            .all(|(q, &w)| w == q % workers);
    let sockets: Vec<(u32, u64, u64)> = stats
        .workers
        .iter()
        .flat_map(|w| w.ports.iter().filter(|p| p.name == "uplink"))
        .map(|p| (p.queue, p.rx_packets, p.kernel_rx_lost))
        .collect();
    let no_slot = stats.xdp_decisions.get("no_slot").copied();
    let lost: u64 = sockets.iter().map(|s| s.2).sum();
    let busy = sockets.iter().filter(|s| s.1 > 0).count();
    (
        mapped && sockets.len() == expected && no_slot == Some(0) && lost == 0,
        format!(
            "{} rx queues on {workers} worker(s), {busy} carried traffic; no_slot {}, lost {lost}",
            map.workers.len(),
            no_slot.map_or("?".to_string(), |n| n.to_string())
        ),
    )
}

/// NODEPORT_COUNT TCP requests from `netns` to `to`, every one answered by a web pod.
fn web_answers(c: &Ctx<'_>, netns: &str, to: SocketAddr) -> (bool, String) {
    let r = c.probe(netns, Proto::Tcp, to, NODEPORT_COUNT, TIMEOUT_MS);
    judge_all_answered(r, &[POD_WEB1.name, POD_WEB2.name])
}

/// From `node`'s own stack to the Service of the second ServiceCIDR: its route goes into
/// kxdp-host (the agent added it for the ServiceCIDR object) and the web pods answer.
fn second_cidr_from_host(c: &Ctx<'_>, node: NodePlan) -> (bool, String) {
    let mut ip = cmd::in_netns(&c.node_ns(node), "ip");
    let vip = EXTRA_CLUSTER_IP.to_string();
    let route = cmd::run(ip.args(["-o", "route", "get", &vip])).unwrap_or_else(|e| e.to_string());
    let via_kxdp = route.contains(" dev kxdp-host ");
    let (answered, measured) = web_answers(
        c,
        &c.node_ns(node),
        SocketAddr::from((EXTRA_CLUSTER_IP, WEB_TCP_PORT)),
    );
    (
        via_kxdp && answered,
        format!(
            "{measured}; routed by: {}",
            route.split(" src ").next().unwrap_or_default().trim()
        ),
    )
}

/// The agent reached the API server at `--api-server` with the service account (its
/// status says so), not through KUBERNETES_SERVICE_HOST, answers with tables it built from
/// there, and the `kubernetes` ClusterIP is routed only by kxdp itself (into kxdp-host).
fn bootstrapped_in_cluster(c: &Ctx<'_>, node: NodePlan) -> (bool, String) {
    let status = match super::agents::status(c.lab, node) {
        Ok(s) => s,
        Err(e) => return (false, e.to_string()),
    };
    let url = format!("https://{}", super::apiserver::address());
    let direct = status
        .state_source
        .starts_with(&format!("the Kubernetes API at {url}, service account"));
    let mut ip = cmd::in_netns(&c.node_ns(node), "ip");
    let route = cmd::run(ip.args(["-o", "route", "get", super::layout::KUBERNETES_SERVICE_IP]))
        .unwrap_or_else(|e| e.to_string());
    let via_kxdp = route.contains(" dev kxdp-host ");
    (
        direct && via_kxdp && status.generation >= 1,
        format!(
            "state from {}; generation {}; {} routed by: {}",
            status.state_source,
            status.generation,
            super::layout::KUBERNETES_SERVICE_IP,
            route.split(" src ").next().unwrap_or_default().trim()
        ),
    )
}

/// The agent runs on the interface holding its Node's InternalIP, and pods get that
/// interface's MTU less the VXLAN overhead.
fn uplink_found(c: &Ctx<'_>, node: NodePlan) -> (bool, String) {
    let status = match super::agents::status(c.lab, node) {
        Ok(s) => s,
        Err(e) => return (false, e.to_string()),
    };
    let mtu = match uplink_mtu(&c.node_ns(node)) {
        Ok(m) => m,
        Err(e) => return (false, e.to_string()),
    };
    let by = format!("holds the Node's InternalIP {}", node.underlay_ip());
    let passed = status.uplink == UPLINK
        && status.uplink_found_by == by
        && status.pod_mtu + u32::from(model::config::VXLAN_OVERHEAD) == mtu;
    (
        passed,
        format!(
            "{} ({}), MTU {mtu} -> pods {}",
            status.uplink, status.uplink_found_by, status.pod_mtu
        ),
    )
}

/// The lab uplink's MTU in `netns`, as the kernel reports it.
fn uplink_mtu(netns: &str) -> Result<u32, CheckError> {
    let mut ip = cmd::in_netns(netns, "ip");
    let out = cmd::run(ip.args(["-j", "link", "show", "dev", UPLINK]))?;
    let links: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| CheckError::Parse(format!("ip -j link show {UPLINK}: {e}")))?;
    links[0]["mtu"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| CheckError::Parse(format!("ip -j link show {UPLINK}: no mtu in {out}")))
}

/// The node's conf dir: kxdp's list sorts first (so a runtime uses it), the older kxdp list
/// seeded before the agent started is gone, the other plugin's is left alone, and the list
/// chains portmap.
fn cni_config(lab: &Lab, node: NodePlan) -> (bool, String) {
    let files = match pods::config_files(&lab.cni_conf_dir(node)) {
        Ok(files) => files,
        Err(e) => return (false, e.to_string()),
    };
    let list = pods::runtime_conflist(lab, node).map(|(_, list)| list);
    let chain: Vec<String> = list
        .as_ref()
        .ok()
        .and_then(|l| l["plugins"].as_array())
        .map(|ps| ps.iter().map(|p| p["type"].to_string()).collect())
        .unwrap_or_default();
    let version = list.as_ref().ok().and_then(pods::chain_version);
    let passed = files.first().map(String::as_str) == Some(agent_api::conflist::CONFLIST_NAME)
        && !files.iter().any(|f| f == pods::LEFTOVER_KXDP_CONFIG)
        && files.iter().any(|f| f == pods::LEFTOVER_FOREIGN_CONFIG)
        && chain == ["\"kxdp-cni\"", "\"portmap\""];
    (
        passed,
        format!(
            "files {files:?}, chain {}, runtime runs it at CNI {}",
            chain.join(" -> "),
            version.as_deref().unwrap_or("?")
        ),
    )
}

fn upper(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

fn pod_to_pod(
    c: &Ctx<'_>,
    from: &PodPlan,
    to: &PodPlan,
    proto: Proto,
    port: u16,
) -> (bool, String) {
    let addr = SocketAddr::from((c.ip(to), port));
    let r = c.probe(&c.pod_ns(from), proto, addr, COUNT, TIMEOUT_MS);
    judge_all_answered(r, &[to.name])
}

fn answers(r: &ProbeReport) -> String {
    r.answered_by
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn failures(r: &ProbeReport) -> String {
    let f = r.failures;
    let mut s = format!(
        "timeout={} refused={} mismatch={} error={}",
        f.timeout, f.refused, f.mismatch, f.error
    );
    if let Some(e) = &r.first_error {
        s.push_str(&format!(" (first: {e})"));
    }
    s
}

fn rtt(r: &ProbeReport) -> String {
    r.rtt_us
        .map(|s| report::rtt(s.p50, s.p99))
        .unwrap_or_default()
}

/// Every request answered, and only by `from`.
fn judge_all_answered(r: Result<ProbeReport, CheckError>, from: &[&str]) -> (bool, String) {
    match r {
        Ok(r) => all_answered(&r, from),
        Err(e) => (false, e.to_string()),
    }
}

fn all_answered(r: &ProbeReport, from: &[&str]) -> (bool, String) {
    let strangers: Vec<&String> = r
        .answered_by
        .keys()
        .filter(|k| !from.contains(&k.as_str()))
        .collect();
    let passed = r.answered == r.count && strangers.is_empty();
    let mut m = format!(
        "{}/{} answered ({}), {}",
        r.answered,
        r.count,
        answers(r),
        rtt(r)
    );
    if !passed {
        m.push_str(&format!("; {}", failures(r)));
        if !strangers.is_empty() {
            m.push_str(&format!("; unexpected answers from {strangers:?}"));
        }
    }
    (passed, m)
}

/// Every request answered, by the given backends only, each with at least `min_share`.
fn judge_spread(
    r: Result<ProbeReport, CheckError>,
    backends: &[&str],
    min_share: f64,
) -> (bool, String) {
    let r = match r {
        Ok(r) => r,
        Err(e) => return (false, e.to_string()),
    };
    let (all, m) = all_answered(&r, backends);
    let min = (f64::from(r.count) * min_share).ceil() as u32;
    let thin: Vec<&str> = backends
        .iter()
        .copied()
        .filter(|b| r.answered_by.get(*b).copied().unwrap_or(0) < min)
        .collect();
    if thin.is_empty() {
        (all, m)
    } else {
        (
            false,
            format!("{m}; under {min} answers: {}", thin.join(", ")),
        )
    }
}

/// Nothing answered and nothing refused: every request timed out (dropped on the way).
fn judge_blocked(r: Result<ProbeReport, CheckError>) -> (bool, String) {
    let r = match r {
        Ok(r) => r,
        Err(e) => return (false, e.to_string()),
    };
    let passed = r.answered == 0 && r.failures.timeout == r.count;
    if passed {
        (
            passed,
            format!("{}/{} timed out (dropped)", r.failures.timeout, r.count),
        )
    } else {
        (
            false,
            format!(
                "expected every request dropped: {}/{} answered ({}); {}",
                r.answered,
                r.count,
                answers(&r),
                failures(&r)
            ),
        )
    }
}

/// What `ping -q` printed.
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// min/avg/max in ms, when anything came back.
    pub rtt_ms: Option<(f64, f64, f64)>,
}

/// Parses ping's summary lines ("N packets transmitted, M received, ..." and
/// "rtt min/avg/max/mdev = a/b/c/d ms").
pub fn parse_ping(out: &str) -> Option<PingStats> {
    let counts = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = counts
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let transmitted = nums.next()?;
    let received = nums.next()?;
    let rtt_ms = out
        .lines()
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip"))
        .and_then(|l| {
            let v: Vec<f64> = l
                .split('=')
                .nth(1)?
                .split_whitespace()
                .next()?
                .split('/')
                .filter_map(|x| x.parse().ok())
                .collect();
            Some((*v.first()?, *v.get(1)?, *v.get(2)?))
        });
    Some(PingStats {
        transmitted,
        received,
        rtt_ms,
    })
}

/// PING_COUNT echo requests, every one answered.
fn ping_all(netns: &str, to: Ipv4Addr) -> (bool, String) {
    let deadline = (f64::from(PING_COUNT) * 0.2 + 3.0).ceil().to_string();
    let mut command = cmd::in_netns(netns, "ping");
    command.args([
        "-q",
        "-n",
        "-c",
        &PING_COUNT.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        "-w",
    ]);
    command.arg(&deadline).arg(to.to_string());
    let out = match cmd::output(&mut command) {
        Ok(o) => o,
        Err(e) => return (false, e.to_string()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(s) = parse_ping(&text) else {
        return (false, format!("ping: {}", cmd::failure_detail(&out)));
    };
    let passed = s.transmitted == PING_COUNT && s.received == s.transmitted;
    let mut m = format!("{}/{} replies", s.received, s.transmitted);
    if let Some((min, avg, max)) = s.rtt_ms {
        m.push_str(&format!(", rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms"));
    }
    (passed, m)
}

/// A `kxdp-lab probe sink` in the destination pod, a `kxdp-lab probe flood` from the source pod:
/// packets per second of one unpaced flow. The destination's UDP counters tell what the
/// datapath delivered into the pod (its socket may overflow after that) and whether any
/// datagram arrived with a bad checksum (which fails the check).
fn flood(c: &Ctx<'_>, from: &PodPlan, to: &PodPlan) -> (bool, String) {
    let dst_ns = c.pod_ns(to);
    let mut nodes = vec![from.node];
    if to.node != from.node {
        nodes.push(to.node);
    }
    let workers_before: Vec<_> = nodes.iter().map(|&n| worker_totals(c.lab, n)).collect();
    let before = match udp_counters(&dst_ns) {
        Ok(u) => u,
        Err(e) => return (false, e.to_string()),
    };
    let (sent, got) = match run_flood(c, from, to) {
        Ok(x) => x,
        Err(e) => return (false, e.to_string()),
    };
    let after = match udp_counters(&dst_ns) {
        Ok(u) => u,
        Err(e) => return (false, e.to_string()),
    };
    let workers: Vec<String> = nodes
        .iter()
        .zip(workers_before)
        .map(|(&n, b)| match (b, worker_totals(c.lab, n)) {
            (Ok(b), Ok(a)) => a.since(&b).describe(n, sent.duration_us),
            (Err(e), _) | (_, Err(e)) => format!("{} worker stats: {e}", n.name()),
        })
        .collect();
    let d = after.since(&before);
    // Everything UDP that reached the pod's stack: delivered to a socket or dropped there.
    let reached = d.in_datagrams + d.in_errors;
    let secs = sent.duration_us as f64 / 1e6;
    let reached_pps = if secs > 0.0 {
        reached as f64 / secs
    } else {
        0.0
    };
    let mut problems = Vec::new();
    if got.received < FLOOD_MIN_DELIVERED {
        problems.push(format!("fewer than {FLOOD_MIN_DELIVERED} received"));
    }
    if d.in_csum_errors > 0 {
        problems.push(format!("{} arrived with a bad checksum", d.in_csum_errors));
    }
    let m = format!(
        "sent {} ({:.0} pps); {}; reached {} {} ({:.0} pps, {:.1}% of sent); sink read {} ({:.0} pps), {} overflowed its buffer{}",
        sent.sent,
        sent.pps,
        workers.join("; "),
        to.name,
        reached,
        reached_pps,
        if sent.sent > 0 {
            100.0 * reached as f64 / sent.sent as f64
        } else {
            0.0
        },
        got.received,
        got.pps,
        d.rcvbuf_errors,
        if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    );
    (problems.is_empty(), m)
}

/// One node's workers' counters, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WorkerTotals {
    rx: u64,
    forwarded: u64,
    dropped: u64,
    io_drops: u64,
    kernel_rx_lost: u64,
    drops: BTreeMap<String, u64>,
}

impl WorkerTotals {
    fn of(stats: &AgentStats) -> WorkerTotals {
        let mut t = WorkerTotals::default();
        for w in &stats.workers {
            t.rx += w.rx_packets;
            t.forwarded += w.forwarded;
            t.dropped += w.dropped;
            t.io_drops += w.io_drops;
            t.kernel_rx_lost += w.ports.iter().map(|p| p.kernel_rx_lost).sum::<u64>();
            for (reason, n) in &w.drops {
                *t.drops.entry(reason.clone()).or_default() += n;
            }
        }
        t
    }

    fn since(&self, before: &WorkerTotals) -> WorkerTotals {
        WorkerTotals {
            rx: self.rx.saturating_sub(before.rx),
            forwarded: self.forwarded.saturating_sub(before.forwarded),
            dropped: self.dropped.saturating_sub(before.dropped),
            io_drops: self.io_drops.saturating_sub(before.io_drops),
            kernel_rx_lost: self.kernel_rx_lost.saturating_sub(before.kernel_rx_lost),
            drops: self
                .drops
                .iter()
                .map(|(k, &n)| {
                    (
                        k.clone(),
                        n.saturating_sub(before.drops.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|&(_, n)| n > 0)
                .collect(),
        }
    }

    /// "node1 workers: rx 198k (198k pps), forwarded ..., lost in the kernel ..."
    fn describe(&self, node: NodePlan, duration_us: u64) -> String {
        let secs = duration_us as f64 / 1e6;
        let pps = if secs > 0.0 {
            self.rx as f64 / secs
        } else {
            0.0
        };
        let mut s = format!(
            "{} worker(s): rx {} ({pps:.0} pps), forwarded {}, dropped {}, tx failed {}, lost before rx {}",
            node.name(),
            self.rx,
            self.forwarded,
            self.dropped,
            self.io_drops,
            self.kernel_rx_lost
        );
        if !self.drops.is_empty() {
            let reasons: Vec<String> = self.drops.iter().map(|(k, n)| format!("{k}={n}")).collect();
            s.push_str(&format!(" ({})", reasons.join(" ")));
        }
        s
    }
}

/// Both agents' totals (an error per node when its stats cannot be had).
fn all_worker_totals(lab: &Lab) -> Vec<(NodePlan, Result<WorkerTotals, LabError>)> {
    super::layout::AGENT_NODES
        .iter()
        .map(|&n| (n, worker_totals(lab, n)))
        .collect()
}

/// "node1: rx 120, drops snat_exhausted=3, tx failed 0, lost before rx 0; node2: ..."
fn counters_during(
    before: &[(NodePlan, Result<WorkerTotals, LabError>)],
    after: &[(NodePlan, Result<WorkerTotals, LabError>)],
) -> String {
    before
        .iter()
        .zip(after)
        .map(|((n, b), (_, a))| match (b, a) {
            (Ok(b), Ok(a)) => {
                let d = a.since(b);
                let drops = if d.drops.is_empty() {
                    "none".to_string()
                } else {
                    d.drops
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!(
                    "{}: rx {}, drops {drops}, tx failed {}, lost before rx {}",
                    n.name(),
                    d.rx,
                    d.io_drops,
                    d.kernel_rx_lost
                )
            }
            (Err(e), _) | (_, Err(e)) => format!("{}: {e}", n.name()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn worker_totals(lab: &Lab, node: NodePlan) -> Result<WorkerTotals, LabError> {
    super::agents::stats(lab, node).map(|s| WorkerTotals::of(&s))
}

/// The `Udp:` counters of /proc/net/snmp in a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub in_datagrams: u64,
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
    pub in_csum_errors: u64,
}

impl UdpCounters {
    fn since(&self, before: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(before.in_datagrams),
            in_errors: self.in_errors.saturating_sub(before.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            in_csum_errors: self.in_csum_errors.saturating_sub(before.in_csum_errors),
        }
    }
}

/// Parses the two `Udp:` lines (names, then values) of /proc/net/snmp.
pub fn parse_udp_snmp(text: &str) -> Option<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i).copied())
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams")?,
        in_errors: get("InErrors")?,
        rcvbuf_errors: get("RcvbufErrors")?,
        in_csum_errors: get("InCsumErrors")?,
    })
}

fn udp_counters(netns: &str) -> Result<UdpCounters, CheckError> {
    // /proc/net is the reader's namespace: cat runs inside it.
    let text = cmd::run(cmd::in_netns(netns, "cat").arg("/proc/net/snmp"))?;
    parse_udp_snmp(&text).ok_or_else(|| CheckError::NoUdpCounters {
        netns: netns.to_string(),
    })
}

fn run_flood(
    c: &Ctx<'_>,
    from: &PodPlan,
    to: &PodPlan,
) -> Result<(FloodReport, SinkReport), CheckError> {
    let tools = c.lab.tools_binary()?;
    let mut sink = cmd::in_netns(&c.pod_ns(to), &tools);
    sink.args(["probe", "sink", "--udp", &FLOOD_PORT.to_string()])
        .args(["--idle-ms", "500", "--max-ms", "15000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = sink.spawn().map_err(CheckError::SinkStart)?;
    let result = flood_with_sink(c, from, to, &mut child);
    // Done or not, the sink goes (kill of an exited child is harmless).
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn flood_with_sink(
    c: &Ctx<'_>,
    from: &PodPlan,
    to: &PodPlan,
    child: &mut Child,
) -> Result<(FloodReport, SinkReport), CheckError> {
    let stdout = child.stdout.take().ok_or(CheckError::SinkStdout)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let silent = |what, within| CheckError::SinkSilent { what, within };
    let ready = rx
        .recv_timeout(SINK_READY_WITHIN)
        .map_err(|_| silent("get ready", SINK_READY_WITHIN))?;
    if !ready.starts_with(READY_PREFIX) {
        return Err(CheckError::SinkNotReady(ready));
    }
    let to_addr = SocketAddr::from((c.ip(to), FLOOD_PORT));
    let tools = c.lab.tools_binary()?;
    let mut f = cmd::in_netns(&c.pod_ns(from), &tools);
    f.args(["probe", "flood", "--to", &to_addr.to_string()])
        .args(["--duration-ms", &FLOOD_MS.to_string()]);
    let out = cmd::run(&mut f)?;
    let sent: FloodReport = report_of("flood", &out)?;
    let line = rx
        .recv_timeout(SINK_REPORT_WITHIN)
        .map_err(|_| silent("report", SINK_REPORT_WITHIN))?;
    let got: SinkReport = report_of("sink", &line)?;
    Ok((sent, got))
}

/// What helps find out why a check failed: each agent's status, its workers' counters
/// (drops by reason) and the end of its log.
pub fn diagnostics(lab: &Lab) -> String {
    let mut out = String::new();
    if lab.source == super::StateSource::Api {
        out.push_str(&format!(
            "== API server double log ({}), last 20 lines\n{}\n",
            super::apiserver::log(lab).display(),
            super::procs::tail(&super::apiserver::log(lab), 20)
        ));
    }
    for node in super::layout::AGENT_NODES {
        out.push_str(&format!("== {} agent status\n", node.name()));
        match super::agents::status(lab, node) {
            Ok(s) => out.push_str(&serde_json::to_string_pretty(&s).unwrap_or_default()),
            Err(e) => out.push_str(&e.to_string()),
        }
        out.push_str(&format!("\n== {} agent stats\n", node.name()));
        match super::agents::stats(lab, node) {
            Ok(s) => out.push_str(&agent_api::render_stats(&s)),
            Err(e) => out.push_str(&format!("{e}\n")),
        }
        out.push_str(&format!(
            "== {} agent log ({}), last 40 lines\n{}\n",
            node.name(),
            lab.agent_log(node).display(),
            super::procs::tail(&lab.agent_log(node), 40)
        ));
        if lab.runtime == Runtime::Containerd {
            let rt = super::containerd::NodeRuntime::of(lab, node);
            out.push_str(&format!(
                "== {} containerd log ({}), last 20 lines\n{}\n",
                node.name(),
                rt.log().display(),
                super::procs::tail(&rt.log(), 20)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Failures;

    #[test]
    fn counters_during_a_check_are_differences() {
        let mut before = WorkerTotals {
            rx: 10,
            ..WorkerTotals::default()
        };
        before.drops.insert("policy_denied".into(), 3);
        let mut after = before.clone();
        after.rx = 25;
        after.io_drops = 2;
        after.drops.insert("snat_exhausted".into(), 1);
        let no_agent = || Err(LabError::Setup("no agent".into()));
        let text = counters_during(
            &[(NODE1, Ok(before)), (NODE2, no_agent())],
            &[(NODE1, Ok(after)), (NODE2, no_agent())],
        );
        assert_eq!(
            text,
            "node1: rx 15, drops snat_exhausted=1, tx failed 2, lost before rx 0; node2: no agent"
        );
    }

    #[test]
    fn udp_counters_are_parsed() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 461 2 30 463 28 0 1 0 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let u = parse_udp_snmp(text).unwrap();
        assert_eq!(
            u,
            UdpCounters {
                in_datagrams: 461,
                in_errors: 30,
                rcvbuf_errors: 28,
                in_csum_errors: 1
            }
        );
        assert!(parse_udp_snmp("Udp: InDatagrams\n").is_none());
    }

    #[test]
    fn ping_summary_is_parsed() {
        let out = "PING 10.244.1.3 (10.244.1.3) 56(84) bytes of data.\n\n--- 10.244.1.3 ping statistics ---\n5 packets transmitted, 4 received, 20% packet loss, time 804ms\nrtt min/avg/max/mdev = 0.040/0.060/0.093/0.019 ms\n";
        let s = parse_ping(out).unwrap();
        assert_eq!((s.transmitted, s.received), (5, 4));
        assert_eq!(s.rtt_ms, Some((0.040, 0.060, 0.093)));
        let none = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2041ms\n";
        let s = parse_ping(none).unwrap();
        assert_eq!((s.transmitted, s.received, s.rtt_ms), (3, 0, None));
        assert!(parse_ping("ping: connect: Network is unreachable").is_none());
    }

    fn report(count: u32, by: &[(&str, u32)], timeout: u32) -> ProbeReport {
        ProbeReport {
            proto: "tcp".into(),
            to: "10.96.0.10:80".into(),
            count,
            answered: by.iter().map(|(_, n)| n).sum(),
            failures: Failures {
                timeout,
                ..Failures::default()
            },
            answered_by: by.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rtt_us: None,
            first_error: None,
        }
    }

    #[test]
    fn spread_needs_every_backend() {
        let b = ["web-1", "web-2"];
        assert!(
            judge_spread(
                Ok(report(200, &[("web-1", 90), ("web-2", 110)], 0)),
                &b,
                0.2
            )
            .0
        );
        let (ok, m) = judge_spread(Ok(report(200, &[("web-1", 200)], 0)), &b, 0.2);
        assert!(!ok && m.contains("web-2"), "{m}");
        assert!(
            !judge_spread(
                Ok(report(200, &[("web-1", 99), ("web-2", 100)], 1)),
                &b,
                0.2
            )
            .0
        );
    }

    #[test]
    fn blocked_means_every_request_timed_out() {
        assert!(judge_blocked(Ok(report(3, &[], 3))).0);
        assert!(!judge_blocked(Ok(report(3, &[("web-1", 1)], 2))).0);
        let mut refused = report(3, &[], 0);
        refused.failures.refused = 3;
        assert!(!judge_blocked(Ok(refused)).0, "a refusal reached the pod");
        let failed = CheckError::Lab(LabError::Setup("probe failed".into()));
        let (ok, m) = judge_blocked(Err(failed));
        assert!(!ok && m == "probe failed", "{m}");
    }

    #[test]
    fn all_answered_rejects_strangers() {
        assert!(judge_all_answered(Ok(report(2, &[("web-1", 2)], 0)), &["web-1"]).0);
        assert!(!judge_all_answered(Ok(report(2, &[("web-2", 2)], 0)), &["web-1"]).0);
    }
}
