//! Every rx queue of a multi-queue uplink is served (issue 17, item 2): `kxdp agent` on a
//! veth uplink with 4 or 8 rx queues and 1 or 2 workers, traffic sent on each queue in
//! turn (an AF_XDP TX socket bound to queue q of the peer delivers into the uplink's rx
//! queue q, as RSS would spread a NIC's traffic), and every packet is seen where it should
//! be: on the socket of its queue, of the worker the queue map names, with nothing counted
//! `no_slot` by the XDP program and no drop in the uplink's per-queue XDP statistics nor in
//! any socket's XDP_STATISTICS. One case also adds channels to the running uplink
//! (`ethtool -L`) and checks that the agent serves the new queues, and that the kernel
//! refuses to take channels away under bound sockets.
//!
//! Root only; skipped (with a message) otherwise, except under CI=true where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_api::{AgentStats, Request};
use rig::traffic::{AfXdpGenerator, PacketSpec, RunLimit};
use testkit::netns::{Uplink, in_netns};
use testkit::wait::wait_for;

use super::support::{Node, nsenter};

const NODE_IP: &str = "192.168.81.1";
const UPLINK_MAC: &str = "02:81:00:00:00:01";
const OUTSIDE_IP: &str = "192.168.81.2";
/// Datagrams sent on each rx queue: fewer than a veth rx queue's ring (256), so that none
/// can be dropped there however late the kernel gets to poll it. On two vCPUs a queue's
/// NAPI may sit behind a busy-polling worker for a few ticks while the sender, descheduled
/// and resumed, hands over a burst; a larger count made the test measure that scheduling,
/// not whether the queue is served.
const PER_QUEUE: u64 = 200;
/// Where the agent serves /metrics in the node namespace (its default).
const METRICS: &str = "127.0.0.1:10249";

/// One node with a `queues`-queue uplink and the agent on it with `workers` (None: its
/// default). `channels`: the uplink's rx/tx channel count at start, when fewer than its
/// queues. Returns (node namespace, outside namespace, API socket).
fn start(
    node: &mut Node,
    queues: u32,
    channels: Option<u32>,
    workers: Option<u32>,
) -> (String, String, PathBuf) {
    let (ns, outside) = node.with_uplink(UPLINK_MAC, NODE_IP, OUTSIDE_IP, queues);
    if let Some(n) = channels {
        // Both ends: veth runs XDP natively only while the receiving end has as many rx
        // queues as the sending end has tx queues.
        set_channels(&ns, Uplink::NAME, n).expect("ethtool -L before the agent starts");
        set_channels(&outside, Uplink::PEER, n).expect("ethtool -L on the peer");
    }
    let manifests = testkit::manifests::node("node1", UPLINK_MAC, "10.244.1.0/24", NODE_IP);
    std::fs::write(node.state_dir().join("cluster.yaml"), manifests).unwrap();
    let workers_arg = workers.map(|w| w.to_string());
    let mut extra = vec!["--uplink", Uplink::NAME];
    if let Some(w) = &workers_arg {
        extra.extend(["--workers", w.as_str()]);
    }
    let lines = node.start_agent(&ns, &extra);
    let ready = node.ready_line(&lines);
    let served = channels.unwrap_or(queues);
    let expected_workers = workers.unwrap_or_else(|| default_workers(served));
    assert_eq!(
        ready,
        format!(
            "kxdp agent ready node=node1 generation=1 workers={expected_workers} uplink_queues={served}"
        )
    );
    (ns, outside, node.socket())
}

/// What the agent picks without --workers: one per queue, at most one per CPU it may use.
fn default_workers(queues: u32) -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    queues.min(cpus)
}

/// `ethtool -L DEV rx N tx N` in `ns`: Err with ethtool's output when refused.
fn set_channels(ns: &str, dev: &str, n: u32) -> Result<(), String> {
    let n = n.to_string();
    let out = nsenter(ns, "ethtool", &["-L", dev, "rx", &n, "tx", &n]);
    if out.status.success() {
        Ok(())
    } else {
        Err(testkit::cmd::describe(&out))
    }
}

/// Sends PER_QUEUE UDP datagrams to the node's VXLAN port on each rx queue in `queues`
/// of the uplink, one AF_XDP TX socket per queue on the outside end. They carry no valid
/// VXLAN header: the uplink program redirects them (UDP to the node's VXLAN port) and the
/// datapath drops them with a reason, which is all this test needs: they reach a worker.
fn send_on_queues(outside: &str, queues: std::ops::Range<u32>) {
    let spec = PacketSpec {
        dst_mac: mac(UPLINK_MAC),
        src_ip: OUTSIDE_IP.parse().unwrap(),
        dst_ip: NODE_IP.parse().unwrap(),
        dst_port: 4789,
        flows: 64,
        ..PacketSpec::default()
    };
    in_netns(outside, || {
        let peer = xdp_redirect::Interface::by_name(Uplink::PEER).unwrap();
        for queue in queues {
            let mut generator = AfXdpGenerator::new(&peer, queue, &spec)
                .unwrap_or_else(|e| panic!("AF_XDP TX socket on queue {queue}: {e}"));
            // Paced: the point is where packets land, not how many a copy-mode veth
            // takes per second.
            let report = generator
                .run(&RunLimit {
                    count: Some(PER_QUEUE),
                    duration: Some(Duration::from_secs(20)),
                    rate_pps: Some(20_000),
                })
                .unwrap_or_else(|e| panic!("sending on queue {queue}: {e}"));
            assert_eq!(report.packets, PER_QUEUE, "queue {queue}");
        }
    });
}

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

fn stats(socket: &Path) -> AgentStats {
    agent_api::call(socket, &Request::Stats, Duration::from_secs(5))
        .expect("stats call")
        .accepted()
        .expect("stats answer")
        .stats
        .expect("stats body")
}

/// Packets received per uplink rx queue, over every worker's sockets.
fn uplink_rx_by_queue(stats: &AgentStats) -> BTreeMap<u32, u64> {
    let mut rx = BTreeMap::new();
    for w in &stats.workers {
        for p in w.ports.iter().filter(|p| p.name == "uplink") {
            *rx.entry(p.queue).or_default() += p.rx_packets;
        }
    }
    rx
}

/// `ethtool -S up0` in `ns`: counter name -> value.
fn uplink_counters(ns: &str) -> BTreeMap<String, u64> {
    let out = nsenter(ns, "ethtool", &["-S", Uplink::NAME]);
    assert!(out.status.success(), "ethtool -S: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(':')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Sends on every queue of `0..queues` (after `sent_before` packets earlier on
/// `0..served_before`) and checks that each reached its worker with nothing lost.
fn check_every_queue(
    ns: &str,
    outside: &str,
    socket: &Path,
    queues: u32,
    workers: u32,
    new_from: u32,
) {
    send_on_queues(outside, new_from..queues);
    let expected: BTreeMap<u32, u64> = (0..queues).map(|q| (q, PER_QUEUE)).collect();
    let mut last = AgentStats::default();
    let arrived = testkit::wait::eventually(Duration::from_secs(10), || {
        last = stats(socket);
        uplink_rx_by_queue(&last) == expected
    });
    assert!(
        arrived,
        "want {PER_QUEUE} packets on each uplink queue, got {:?}; stats: {last:?}\nuplink counters: {:?}",
        uplink_rx_by_queue(&last),
        uplink_counters(ns)
    );
    // The queue map: queue q on worker q mod W, and each worker's sockets are its queues.
    let map = last
        .queues
        .iter()
        .find(|p| p.port == "uplink")
        .unwrap_or_else(|| panic!("no uplink in the queue map: {last:?}"));
    let owners: Vec<usize> = (0..queues).map(|q| (q % workers) as usize).collect();
    assert_eq!((map.ifname.as_str(), &map.workers), (Uplink::NAME, &owners));
    for w in &last.workers {
        let served: Vec<u32> = w
            .ports
            .iter()
            .filter(|p| p.name == "uplink")
            .map(|p| p.queue)
            .collect();
        let owned: Vec<u32> = (0..queues)
            .filter(|q| (q % workers) as usize == w.id)
            .collect();
        assert_eq!(served, owned, "worker {}", w.id);
        for p in &w.ports {
            assert_eq!(
                p.kernel_rx_lost, 0,
                "worker {} port {} queue {}: the socket's XDP_STATISTICS lost packets",
                w.id, p.name, p.queue
            );
        }
    }
    let total = PER_QUEUE * u64::from(queues);
    assert_eq!(last.xdp_decisions.get("no_slot"), Some(&0), "{last:?}");
    assert_eq!(
        last.xdp_decisions.get("uplink_vxlan"),
        Some(&total),
        "{last:?}"
    );
    // The kernel's side: each of the uplink's rx queues redirected its packets, none
    // dropped.
    let counters = uplink_counters(ns);
    for q in 0..queues {
        let get = |what: &str| counters.get(&format!("rx_queue_{q}_{what}")).copied();
        assert_eq!(
            get("xdp_redirect"),
            Some(PER_QUEUE),
            "queue {q}: {counters:?}"
        );
        for drops in ["drops", "xdp_drops"] {
            assert_eq!(get(drops), Some(0), "queue {q} {drops}: {counters:?}");
        }
    }
    // What a user sees: `kxdp stats` prints the map, /metrics has it per queue.
    let cli = Command::new(env!("CARGO_BIN_EXE_kxdp"))
        .args(["stats", "--api-socket"])
        .arg(socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    let groups: Vec<String> = (0..workers)
        .map(|w| {
            let queues: Vec<String> = (w..queues)
                .step_by(workers as usize)
                .map(|q| format!("q{q}"))
                .collect();
            format!("worker {w}: {}", queues.join(" "))
        })
        .collect();
    let line = format!(
        "port uplink ({}): {queues} rx queues: {}",
        Uplink::NAME,
        groups.join("; ")
    );
    assert!(text.lines().any(|l| l == line), "want {line:?} in:\n{text}");
    let metrics = testkit::http::http(ns, "GET", METRICS, "/metrics").body;
    let last_queue = queues - 1;
    let series = format!(
        "kxdp_port_queue_info{{port=\"uplink\",queue=\"{last_queue}\",worker=\"{}\"}} 1",
        last_queue % workers
    );
    assert!(metrics.lines().any(|l| l == series), "{series}:\n{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l == "kxdp_xdp_decisions_total{reason=\"no_slot\"} 0"),
        "{metrics}"
    );
}

fn case(queues: u32, workers: u32) {
    let Some(_lock) = testkit::root::root_test("the uplink queues test") else {
        return;
    };
    let mut node = Node::new("kxq", &format!("{queues}{workers}"));
    let (ns, outside, socket) = start(&mut node, queues, None, Some(workers));
    check_every_queue(&ns, &outside, &socket, queues, workers, 0);
}

#[test]
fn four_queues_one_worker() {
    case(4, 1);
}

#[test]
fn four_queues_two_workers() {
    case(4, 2);
}

#[test]
fn eight_queues_one_worker() {
    case(8, 1);
}

#[test]
fn eight_queues_two_workers() {
    case(8, 2);
}

/// Without --workers the agent runs one worker per uplink queue, at most one per CPU;
/// channels added while it runs are served within its housekeeping second; taking them
/// away again is refused by the kernel while the sockets are bound.
#[test]
fn default_workers_and_channels_added_at_runtime() {
    let Some(_lock) = testkit::root::root_test("the uplink queues test") else {
        return;
    };
    let mut node = Node::new("kxq", "grow");
    let (ns, outside, socket) = start(&mut node, 8, Some(4), None);
    let workers = default_workers(4);
    check_every_queue(&ns, &outside, &socket, 4, workers, 0);

    // The uplink first: its rx queues must never be fewer than the peer's tx queues.
    set_channels(&ns, Uplink::NAME, 8).expect("adding channels");
    set_channels(&outside, Uplink::PEER, 8).expect("adding channels to the peer");
    wait_for(
        "the agent serving 8 queues",
        Duration::from_secs(10),
        || {
            stats(&socket)
                .queues
                .iter()
                .any(|p| p.port == "uplink" && p.workers.len() == 8)
        },
    );
    // A veth's channel change takes its carrier down and up again on both ends; the link
    // watch raises it asynchronously.
    for (netns, dev) in [(&ns, Uplink::NAME), (&outside, Uplink::PEER)] {
        wait_for(
            "carrier back after ethtool -L",
            Duration::from_secs(10),
            || {
                // `ip`, not /sys/class/net: sysfs shows the namespace it was mounted in.
                let out = nsenter(netns, "ip", &["-j", "link", "show", "dev", dev]);
                String::from_utf8_lossy(&out.stdout).contains("\"operstate\":\"UP\"")
            },
        );
    }
    // The counters of queues 0..4 carry on; queues 4..8 get their packets now.
    check_every_queue(&ns, &outside, &socket, 8, workers, 4);

    let refused = set_channels(&ns, Uplink::NAME, 4);
    assert!(
        refused.is_err(),
        "the kernel let channels with bound AF_XDP sockets go"
    );
    println!("shrinking under bound sockets: {}", refused.unwrap_err());
}
