//! One measurement at a time, whatever node A is running: the chosen generator in the
//! client pod (pinned to the generator CPU) and either the XDP sink on node B's uplink
//! (throughput: what node A put on the wire, counted over a window after a warm-up, beside
//! what reached node A's receiving port in the same window) or request/response round
//! trips to the Service's echo, with or without a paced background load beside them
//! (latency).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::traffic::{
    GenMode, GenReport, Generator, PacketSpec, PktgenError, Protocol, RunLimit, Sink, SinkAction,
    SinkCounts,
};
use serde::Serialize;
use xdp_redirect::{Interface, XdpError};

use super::plan::{self, NODE_A};
use super::rig::Rig;
use crate::traffic_cli::{NetnsError, enter_netns, in_netns};

/// Why one measurement failed. The bench puts the path and size in front.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// An interface the rig built is not there (the error names it).
    #[error(transparent)]
    Interface(XdpError),
    #[error("sink: {0}")]
    Sink(#[source] PktgenError),
    #[error("sink detach: {0}")]
    SinkDetach(#[source] PktgenError),
    #[error("cannot pin the generator to CPU {0}")]
    Pin(usize),
    #[error("generator ({mode}): {source}")]
    Generator { mode: GenMode, source: PktgenError },
    #[error("the generator did not start")]
    GeneratorDidNotStart,
    #[error("the background generator did not start")]
    BackgroundDidNotStart,
    #[error("the generator thread panicked")]
    GeneratorPanicked,
    #[error("/proc/thread-self/net/dev: {0}")]
    ProcNetDev(#[source] std::io::Error),
    #[error("{0} is not in node A's /proc/net/dev")]
    NotInProcNetDev(String),
}

fn interface(name: &str) -> Result<Interface, MeasureError> {
    Interface::by_name(name).map_err(MeasureError::Interface)
}
use crate::rig::UNDERLAY_MTU;
use lab::layout::{Mac, UPLINK};
use lab::probe::{Proto, RequestOptions, RttSummary};

/// The largest frame a pod sends without fragmenting: its MTU (underlay MTU less the
/// VXLAN overhead) plus the Ethernet header. A requested size above it means "full MTU".
pub const MAX_POD_FRAME: u16 = (UNDERLAY_MTU - 50 + 14) as u16;
/// Source ports of the generator's flows start here (above them: the kernel's ephemeral
/// range, which the round-trip probe's sockets use).
const FIRST_SRC_PORT: u32 = 10000;
const LAST_SRC_PORT: u32 = 32767;

/// The first source port of measurement `cell` (a running number within one bench):
/// every cell gets flows of its own, so none starts with connection-tracking entries
/// (kxdp's or the kernel's, whose NAT outlives a mode switch) from an earlier one.
pub fn first_src_port(cell: usize, flows: u32) -> u16 {
    let room = (LAST_SRC_PORT + 1 - FIRST_SRC_PORT)
        .saturating_sub(flows)
        .max(1);
    let offset = (cell as u64 * u64::from(flows)) % u64::from(room);
    (FIRST_SRC_PORT + offset as u32) as u16
}

/// The pod frame size a requested size is measured with.
pub fn frame_size(requested: u16) -> u16 {
    requested.min(MAX_POD_FRAME)
}

/// A cell whose delivered rate is at least this share of what reached node A is bound by
/// the generator, not by node A: its rate is a lower bound.
pub const GENERATOR_BOUND_SHARE: f64 = 0.97;

/// What a throughput measurement saw.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Frame bytes the client pod sent (Ethernet header included, no FCS).
    pub frame_bytes: u16,
    /// Frame bytes on node A's uplink (the VXLAN paths add 50).
    pub wire_bytes: u32,
    /// What reached node A's receiving port (the pod's veth, its receive counter) per
    /// second, over the measuring window: what the device under test was offered.
    pub offered_pps: f64,
    /// What the generator believes it sent, over its whole run (a full veth ring drops
    /// silently, so this may be more than `offered_pps`).
    pub generator_pps: f64,
    /// What reached node B's uplink per second, over the measuring window.
    pub delivered_pps: f64,
    /// `delivered_pps` >= [`GENERATOR_BOUND_SHARE`] of `offered_pps`: node A forwarded
    /// (nearly) everything it got, so the generator, not node A, set the rate, and
    /// `delivered_pps` is only a lower bound of what node A can do.
    pub generator_bound: bool,
    pub window_s: f64,
    pub delivered_packets: u64,
    /// Per CPU, what the sink counted in the window (where node A's transmit work ran).
    pub sink_per_cpu: Vec<u64>,
    /// With `--repeat`: every window's delivered Mpps (this one is their median).
    pub samples_mpps: Vec<f64>,
}

/// The sample with the median delivered rate, carrying every sample's rate (rounded to
/// 1 kpps). `samples` must not be empty.
pub fn median(mut samples: Vec<Throughput>) -> Throughput {
    samples.sort_by(|a, b| a.delivered_pps.total_cmp(&b.delivered_pps));
    let all: Vec<f64> = samples
        .iter()
        .map(|t| (t.delivered_pps / 1e3).round() / 1e3)
        .collect();
    let mut mid = samples.swap_remove(samples.len() / 2);
    mid.samples_mpps = all;
    mid
}

/// The generator's packets for `size`: from the client pod to the Service's sink port,
/// `flows` source ports, addressed to the gateway MAC as the pod's own stack would.
pub fn packet_spec(client_ip: Ipv4Addr, size: u16, flows: u32, src_port: u16) -> PacketSpec {
    PacketSpec {
        size: frame_size(size),
        protocol: Protocol::Udp,
        src_mac: Mac::for_pod(client_ip).0,
        dst_mac: NODE_A.gateway_mac().0,
        src_ip: client_ip,
        dst_ip: plan::CLUSTER_IP,
        src_port,
        dst_port: plan::SINK_PORT,
        flows,
        src_ports: None,
    }
}

fn attach_sink(rig: &Rig) -> Result<Sink, MeasureError> {
    in_netns(Some(&rig.node_b()), || {
        Sink::attach(&interface(UPLINK)?, SinkAction::Drop, false).map_err(MeasureError::Sink)
    })
}

/// Generator `mode` in the client pod on the generator CPU, running `limit` (or until
/// `stop`); `ready` gets a message once it is loaded and about to send.
fn generator(
    rig: &Rig,
    mode: GenMode,
    spec: PacketSpec,
    limit: RunLimit,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> Result<GenReport, MeasureError> {
    enter_netns(&rig.client_ns())?;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: rig.gen_cpu }) {
        return Err(MeasureError::Pin(rig.gen_cpu));
    }
    let failed = |source| MeasureError::Generator { mode, source };
    let mut g = Generator::new(mode, &interface("eth0")?, 0, &spec).map_err(failed)?;
    let _ = ready.send(());
    g.run_until(&limit, stop).map_err(failed)
}

/// Packets node A's receiving port (the client pod's veth, node A's end) has received:
/// its receive counter, which on a veth counts the XDP frames its program saw too. Read
/// from /proc/thread-self/net/dev in a thread inside node A's namespace.
fn port_rx_packets(rig: &Rig) -> Result<u64, MeasureError> {
    let dev = rig.client_host_veth.clone();
    in_netns(Some(&rig.node_a()), move || {
        let table = std::fs::read_to_string("/proc/thread-self/net/dev")
            .map_err(MeasureError::ProcNetDev)?;
        rx_packets_of(&table, &dev).ok_or(MeasureError::NotInProcNetDev(dev))
    })
}

/// `dev`'s received packets in a /proc/net/dev table.
fn rx_packets_of(table: &str, dev: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        // Receive: bytes, packets, errs, drop, ...
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// Offers as much as generator `mode` can for `warmup + window` and counts, during
/// `window`, what reaches node A's port and what reaches node B. `wire_extra`: bytes the
/// path adds on the uplink.
pub fn throughput(
    rig: &Rig,
    mode: GenMode,
    spec: &PacketSpec,
    warmup: Duration,
    window: Duration,
    wire_extra: u32,
) -> Result<Throughput, MeasureError> {
    let sink = attach_sink(rig)?;
    let stop = AtomicBool::new(false);
    let limit = RunLimit {
        count: None,
        duration: Some(warmup + window + Duration::from_secs(1)),
        rate_pps: None,
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let result = std::thread::scope(|s| {
        let gen_thread = s.spawn(|| generator(rig, mode, spec.clone(), limit, &stop, ready_tx));
        let counted = (|| {
            ready_rx
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| MeasureError::GeneratorDidNotStart)?;
            std::thread::sleep(warmup);
            let (p0, c0, t0) = (port_rx_packets(rig)?, counts(&sink)?, Instant::now());
            std::thread::sleep(window);
            let (p1, c1, t1) = (port_rx_packets(rig)?, counts(&sink)?, Instant::now());
            Ok::<_, MeasureError>((c0, c1, p1.saturating_sub(p0), t1 - t0))
        })();
        stop.store(true, Ordering::Relaxed);
        let report = gen_thread
            .join()
            .unwrap_or(Err(MeasureError::GeneratorPanicked));
        let (c0, c1, reached_a, elapsed) = counted?;
        let report = report?;
        let delivered = c1.packets.saturating_sub(c0.packets);
        let secs = elapsed.as_secs_f64().max(1e-9);
        Ok::<Throughput, MeasureError>(Throughput {
            frame_bytes: spec.size,
            wire_bytes: u32::from(spec.size) + wire_extra,
            offered_pps: reached_a as f64 / secs,
            generator_pps: report.pps(),
            delivered_pps: delivered as f64 / secs,
            generator_bound: is_generator_bound(delivered, reached_a),
            window_s: secs,
            delivered_packets: delivered,
            sink_per_cpu: c1
                .per_cpu_packets
                .iter()
                .zip(c0.per_cpu_packets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            samples_mpps: vec![(delivered as f64 / secs / 1e3).round() / 1e3],
        })
    });
    let detached = sink.detach().map_err(MeasureError::SinkDetach);
    let t = result?;
    detached?;
    Ok(t)
}

/// Whether node A forwarded so much of what reached it that the generator set the rate.
pub fn is_generator_bound(delivered: u64, offered: u64) -> bool {
    delivered as f64 >= GENERATOR_BOUND_SHARE * offered as f64
}

fn counts(sink: &Sink) -> Result<SinkCounts, MeasureError> {
    sink.counts().map_err(MeasureError::Sink)
}

/// Round trips at one load level.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Background packets per second offered beside the requests (0: none).
    pub background_pps: u64,
    /// All requests over one socket (one flow) rather than a new flow each.
    pub one_flow: bool,
    pub requests: u32,
    pub answered: u32,
    /// Round-trip times in microseconds.
    pub rtt_us: Option<RttSummary>,
}

/// `requests` UDP request/response round trips from the client pod to the Service's echo
/// port, each from a new socket (a new flow: Service pick, policy, conntrack entry) or all
/// over one (`one_flow`: the established path), with `background_pps` of 64-byte datagrams
/// to the sink port beside them (0: none). The background runs exactly as long as the
/// requests.
pub fn latency(
    rig: &Rig,
    mode: GenMode,
    requests: u32,
    background_pps: u64,
    one_flow: bool,
    cell: usize,
) -> Result<Latency, MeasureError> {
    let opts = RequestOptions {
        proto: Proto::Udp,
        to: SocketAddr::from((plan::CLUSTER_IP, plan::ECHO_SERVICE_PORT)),
        count: requests,
        timeout: Duration::from_millis(500),
        one_flow,
    };
    let round_trips = || {
        in_netns(Some(&rig.client_ns()), || {
            Ok::<_, MeasureError>(lab::probe::request_run(&opts))
        })
    };
    let report = if background_pps == 0 {
        round_trips()?
    } else {
        let stop = AtomicBool::new(false);
        let limit = RunLimit {
            count: None,
            duration: Some(Duration::from_secs(600)),
            rate_pps: Some(background_pps),
        };
        let spec = packet_spec(rig.client_ip, 64, 1024, first_src_port(cell, 1024));
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::scope(|s| {
            let gen_thread = s.spawn(|| generator(rig, mode, spec, limit, &stop, ready_tx));
            let report = ready_rx
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| MeasureError::BackgroundDidNotStart)
                .and_then(|()| round_trips());
            stop.store(true, Ordering::Relaxed);
            let generated = gen_thread
                .join()
                .unwrap_or(Err(MeasureError::GeneratorPanicked));
            generated?;
            report
        })?
    };
    Ok(Latency {
        background_pps,
        one_flow,
        requests,
        answered: report.answered,
        rtt_us: report.rtt_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mtu_is_the_pods_largest_frame() {
        assert_eq!(MAX_POD_FRAME, 1464);
        assert_eq!(frame_size(1500), 1464);
        assert_eq!(frame_size(64), 64);
        let spec = packet_spec(Ipv4Addr::new(10, 244, 1, 2), 1500, 16, 10000);
        spec.validate().unwrap();
        assert_eq!(spec.dst_mac, NODE_A.gateway_mac().0);
    }

    #[test]
    fn node_a_port_counters_come_from_proc_net_dev() {
        let table = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
kxdpa1b2c3: 6400000  100000    0   17    0     0          0         0      980      10    0    0    0     0       0          0
";
        assert_eq!(rx_packets_of(table, "kxdpa1b2c3"), Some(100_000));
        assert_eq!(rx_packets_of(table, "lo"), Some(0));
        assert_eq!(rx_packets_of(table, "eth0"), None);
        assert!(is_generator_bound(98, 100));
        assert!(is_generator_bound(97, 100));
        assert!(!is_generator_bound(96, 100));
        assert!(!is_generator_bound(0, 100));
        assert!(
            is_generator_bound(0, 0),
            "nothing offered: nothing to say about node A"
        );
    }

    #[test]
    fn cells_get_their_own_source_ports_below_the_ephemeral_range() {
        assert_eq!(first_src_port(0, 1024), 10000);
        assert_eq!(first_src_port(1, 1024), 11024);
        for cell in 0..100 {
            for flows in [1, 1024, 20000] {
                let p = u32::from(first_src_port(cell, flows));
                assert!(
                    p >= FIRST_SRC_PORT && p + flows <= LAST_SRC_PORT + 1,
                    "{cell} {flows}"
                );
            }
        }
    }
}
