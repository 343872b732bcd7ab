//! The agent's Prometheus metrics: a snapshot the control thread takes on request (the
//! workers' last published counters, the flow table's size under its lock, the table
//! generation), rendered by the HTTP thread into the text exposition.
//!
//! Workers never touch shared atomics per packet: every number here comes from their
//! per-worker counters, copied out every ~100 ms, and is summed at render time. The
//! counters are built fresh for every scrape from those totals, so a series exists only
//! while what it counts does: a closed port's `port="pod-<ns>-<name>"` series are gone from
//! the next scrape (Prometheus marks them stale), and no label takes values without bound
//! (ports are the open ones, workers and queues are fixed at start, reasons are enums).
//! Only the build histograms live across scrapes (`sync`, observed by the control thread).
//!
//! Beside kxdp's own `kxdp_*` names, the table builds are reported under kube-proxy's
//! `kubeproxy_*` names and meanings (`sync`), so dashboards and alerts built for kube-proxy
//! keep working.

mod sync;
mod text;

pub use sync::SyncMetrics;
pub use text::unix_seconds;

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use datapath::verdict::DropReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use xdp_redirect::worker::WorkerStats;

use crate::source::change_log::ChangeCounters;

/// The media type of [`render`]'s output: the classic Prometheus text format, which every
/// scraper and `promtool check metrics` read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The flow table's state, read under its lock.
#[derive(Debug, Clone, Default)]
pub struct ConntrackSnapshot {
    pub entries: usize,
    pub capacity: usize,
    pub evictions: u64,
    pub expirations: u64,
}

/// Everything `/metrics` shows, as the control thread saw it at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub workers: Vec<WorkerStats>,
    /// The XDP programs' decisions by reason name (`xdp_redirect::Reason::name`).
    pub xdp_decisions: Vec<(&'static str, u64)>,
    pub conntrack: ConntrackSnapshot,
    pub generation: u64,
    pub tables_published_at: SystemTime,
    pub state_load_errors: u64,
    /// Table builds (kept across scrapes by the control thread).
    pub sync: SyncMetrics,
    /// The Kubernetes source's Service and EndpointSlice changes (zero for a directory).
    pub changes: ChangeCounters,
    /// This node's underlay (VTEP) IPv4 address and MAC in the published tables.
    pub underlay_address: String,
    pub underlay_mac: String,
    /// Patches of this node's kxdp.io annotations the API accepted / that failed.
    pub node_annotation_patches: u64,
    pub node_annotation_patch_failures: u64,
    /// `/healthz` and `/livez` answers by code (counted by the HTTP listeners, which fill
    /// this in).
    pub probes: ProbeTotals,
}

/// Probe answers by endpoint and code: kube-proxy's `proxy_healthz_total{code}` and
/// `proxy_livez_total{code}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeTotals {
    pub healthz_ok: u64,
    pub healthz_unavailable: u64,
    pub livez_ok: u64,
    pub livez_unavailable: u64,
}

pub(crate) type Labels = Vec<(&'static str, String)>;
type CounterFamily = Family<Labels, Counter<u64>>;
type SecondsFamily = Family<Labels, Counter<f64, AtomicU64>>;
type RatioFamily = Family<Labels, Gauge<f64, AtomicU64>>;

fn counter(value: u64) -> Counter<u64> {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn worker_label(w: &WorkerStats) -> Labels {
    vec![("worker", w.id.to_string())]
}

/// Registers a family of counters with one series per `(labels, value)`.
fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = CounterFamily::default();
    for (labels, value) in series {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

/// The text exposition (OpenMetrics) of `snap`.
pub fn render(snap: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("kxdp");
    let workers = &snap.workers;

    let mut drops: Vec<(Labels, u64)> = DropReason::ALL
        .iter()
        .map(|&reason| {
            let n = workers.iter().map(|w| w.drops.get(reason)).sum();
            (vec![("reason", reason.as_str().to_string())], n)
        })
        .collect();
    drops.sort_by(|a, b| a.0.cmp(&b.0));
    counters(
        &mut r,
        "packets_dropped",
        "Packets the datapath decided to drop, by reason",
        drops,
    );
    counters(
        &mut r,
        "xdp_decisions",
        "Packets the XDP programs redirected to the workers or passed to the kernel, by reason \
         (no_slot: meant for a worker, but its port or rx queue had no socket)",
        snap.xdp_decisions
            .iter()
            .map(|&(reason, n)| (vec![("reason", reason.to_string())], n)),
    );
    type IoReason = (&'static str, fn(&WorkerStats) -> u64);
    let tx_drop_reasons: [IoReason; 3] = [
        ("no_tx_socket", |w| w.io.no_tx_socket),
        ("no_host_socket", |w| w.io.no_host_socket),
        ("tx_ring_full", |w| w.io.tx_ring_full),
    ];
    counters(
        &mut r,
        "tx_dropped",
        "Frames dropped after a forward or pass verdict because no socket could take them",
        tx_drop_reasons.into_iter().map(|(reason, get)| {
            (
                vec![("reason", reason.to_string())],
                workers.iter().map(get).sum(),
            )
        }),
    );

    // Per port, summed over its sockets (one per rx queue, spread over the workers). A
    // port that is closed and re-opened starts again from zero, which Prometheus reads as
    // a reset.
    let mut ports: std::collections::BTreeMap<&str, [u64; 4]> = Default::default();
    for p in workers.iter().flat_map(|w| &w.ports) {
        let e = ports.entry(p.name.as_str()).or_default();
        e[0] += p.rx_packets;
        e[1] += p.tx_packets;
        e[2] += p.rx_bytes;
        e[3] += p.tx_bytes;
    }
    for (i, (name, help)) in [
        (
            "port_rx_packets",
            "Packets received on a port's AF_XDP sockets",
        ),
        (
            "port_tx_packets",
            "Packets queued on a port's AF_XDP sockets",
        ),
        ("port_rx_bytes", "Bytes received on a port's AF_XDP sockets"),
        ("port_tx_bytes", "Bytes queued on a port's AF_XDP sockets"),
    ]
    .into_iter()
    .enumerate()
    {
        counters(
            &mut r,
            name,
            help,
            ports
                .iter()
                .map(|(port, v)| (vec![("port", port.to_string())], v[i])),
        );
    }

    // Per rx queue: which worker serves it (the queue map) and what arrived on it (how
    // RSS spreads the traffic).
    let queue_labels = |w: &WorkerStats, p: &xdp_redirect::worker::PortStats| -> Labels {
        vec![
            ("port", p.name.clone()),
            ("queue", p.queue.to_string()),
            ("worker", w.id.to_string()),
        ]
    };
    let queue_info = Family::<Labels, Gauge>::default();
    for w in workers {
        for p in &w.ports {
            queue_info.get_or_create(&queue_labels(w, p)).set(1);
        }
    }
    r.register(
        "port_queue_info",
        "The worker serving each rx queue of each port (always 1)",
        queue_info,
    );
    counters(
        &mut r,
        "port_queue_rx_packets",
        "Packets received on the AF_XDP socket of one rx queue of a port",
        workers.iter().flat_map(|w| {
            w.ports
                .iter()
                .map(move |p| (queue_labels(w, p), p.rx_packets))
        }),
    );

    type WorkerCounter = (&'static str, &'static str, fn(&WorkerStats) -> u64);
    let per_worker: [WorkerCounter; 6] = [
        (
            "worker_rx_packets",
            "Frames a worker read and gave to the datapath",
            |w| w.rx_packets,
        ),
        (
            "worker_forwarded_packets",
            "Frames with a forward verdict",
            |w| w.forwarded,
        ),
        (
            "worker_passed_packets",
            "Frames with a pass verdict (to the kernel through the host port)",
            |w| w.passed,
        ),
        (
            "worker_dropped_packets",
            "Frames with a drop verdict",
            |w| w.dropped,
        ),
        (
            "worker_tx_packets",
            "Frames a worker queued for transmission",
            |w| w.tx_packets,
        ),
        (
            "worker_generation_sweeps",
            "New table generations a worker applied to the shared flow table",
            |w| w.generation_sweeps,
        ),
    ];
    for (name, help, get) in per_worker {
        counters(
            &mut r,
            name,
            help,
            workers.iter().map(|w| (worker_label(w), get(w))),
        );
    }

    let busy_ratio = RatioFamily::default();
    let busy_seconds = SecondsFamily::default();
    let lock_wait = SecondsFamily::default();
    for w in workers {
        busy_ratio
            .get_or_create(&worker_label(w))
            .set(w.busy_ratio());
        busy_seconds
            .get_or_create(&worker_label(w))
            .inc_by(w.busy_ns as f64 / 1e9);
        lock_wait
            .get_or_create(&worker_label(w))
            .inc_by(w.lock_wait_ns as f64 / 1e9);
    }
    r.register(
        "worker_busy_ratio",
        "Share of a worker's lifetime spent in rounds that did work",
        busy_ratio,
    );
    r.register(
        "worker_busy_seconds",
        "Time a worker spent in rounds that did work",
        busy_seconds,
    );
    r.register(
        "flow_lock_wait_seconds",
        "Time a worker waited for the shared flow table's lock",
        lock_wait,
    );

    type XskCounter = (
        &'static str,
        &'static str,
        fn(&xdp_redirect::worker::XdpSocketStats) -> u64,
    );
    let xsk: [XskCounter; 4] = [
        (
            "xsk_rx_dropped",
            "Kernel XDP_STATISTICS rx_dropped of the socket of one rx queue of a port",
            |x| x.rx_dropped,
        ),
        (
            "xsk_rx_ring_full",
            "Packets the kernel dropped because the socket's rx ring was full",
            |x| x.rx_ring_full,
        ),
        (
            "xsk_fill_ring_empty",
            "Times the kernel found the socket's fill ring empty",
            |x| x.fill_ring_empty,
        ),
        (
            "xsk_tx_invalid",
            "Tx descriptors the kernel rejected",
            |x| x.tx_invalid,
        ),
    ];
    for (name, help, get) in xsk {
        counters(
            &mut r,
            name,
            help,
            workers.iter().flat_map(|w| {
                w.ports
                    .iter()
                    .map(move |p| (queue_labels(w, p), get(&p.xdp)))
            }),
        );
    }

    let entries = Gauge::<i64>::default();
    entries.set(i64::try_from(snap.conntrack.entries).unwrap_or(i64::MAX));
    r.register(
        "conntrack_entries",
        "Live entries in the flow table",
        entries,
    );
    let capacity = Gauge::<i64>::default();
    capacity.set(i64::try_from(snap.conntrack.capacity).unwrap_or(i64::MAX));
    r.register(
        "conntrack_capacity",
        "Entries the flow table holds at most",
        capacity,
    );
    r.register(
        "conntrack_evictions",
        "Live flow entries removed to make room for new flows",
        counter(snap.conntrack.evictions),
    );
    r.register(
        "conntrack_expirations",
        "Flow entries removed because they outlived their state's timeout",
        counter(snap.conntrack.expirations),
    );

    let generation = Gauge::<i64>::default();
    generation.set(i64::try_from(snap.generation).unwrap_or(i64::MAX));
    r.register(
        "table_generation",
        "The table generation the agent last published",
        generation,
    );
    let published = Gauge::<f64, AtomicU64>::default();
    published.set(unix_seconds(snap.tables_published_at));
    r.register(
        "tables_last_published_timestamp_seconds",
        "When the agent last published tables (Unix time)",
        published,
    );
    r.register(
        "state_load_errors",
        "State directory changes that could not be loaded (the running generation stayed)",
        counter(snap.state_load_errors),
    );
    let underlay = Family::<Labels, Gauge>::default();
    underlay
        .get_or_create(&vec![
            ("address", snap.underlay_address.clone()),
            ("mac", snap.underlay_mac.clone()),
        ])
        .set(1);
    r.register(
        "underlay_info",
        "This node's VXLAN underlay (VTEP) address and MAC in the published tables (always 1)",
        underlay,
    );
    r.register(
        "node_annotation_patches",
        "Patches of this node's kxdp.io annotations the Kubernetes API accepted",
        counter(snap.node_annotation_patches),
    );
    r.register(
        "node_annotation_patch_failures",
        "Patches of this node's kxdp.io annotations that failed (retried with backoff)",
        counter(snap.node_annotation_patch_failures),
    );
    snap.sync.register_kxdp(&mut r);
    let build_info = Family::<Labels, Gauge>::default();
    build_info.get_or_create(&build_labels()).set(1);
    r.register(
        "build_info",
        "The kxdp build this agent runs (always 1)",
        build_info,
    );

    let mut kube_proxy = Registry::with_prefix("kubeproxy");
    snap.sync
        .register_kube_proxy(&mut kube_proxy, &snap.changes);
    let code = |c: &str| vec![("code", c.to_string())];
    let p = &snap.probes;
    counters(
        &mut kube_proxy,
        "proxy_healthz",
        "Cumulative proxy healthz HTTP status",
        [
            (code("200"), p.healthz_ok),
            (code("503"), p.healthz_unavailable),
        ],
    );
    counters(
        &mut kube_proxy,
        "proxy_livez",
        "Cumulative proxy livez HTTP status",
        [
            (code("200"), p.livez_ok),
            (code("503"), p.livez_unavailable),
        ],
    );

    let mut out = String::new();
    encode(&mut out, &r)?;
    encode(&mut out, &kube_proxy)?;
    Ok(text::openmetrics_to_text(&out))
}

/// `kxdp_build_info`'s labels: the crate version, and the commit when the build was given
/// one (`KXDP_GIT_COMMIT` in the build's environment; a tarball build has none).
fn build_labels() -> Labels {
    vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "git_commit",
            option_env!("KXDP_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_summed_worker_counters() {
        let mut w0 = WorkerStats {
            id: 0,
            rx_packets: 5,
            ..Default::default()
        };
        w0.ports.push(xdp_redirect::worker::PortStats {
            name: "uplink".into(),
            rx_packets: 3,
            rx_bytes: 300,
            ..Default::default()
        });
        let mut w1 = w0.clone();
        w1.id = 1;
        w1.ports[0].queue = 1;
        let mut sync = SyncMetrics::new(&sync::tests::tables(&[]));
        sync.built(std::time::Instant::now(), true, &[], None);
        let snap = Snapshot {
            workers: vec![w0, w1],
            xdp_decisions: vec![("no_slot", 0), ("uplink_vxlan", 9)],
            conntrack: ConntrackSnapshot {
                entries: 7,
                ..Default::default()
            },
            generation: 4,
            tables_published_at: SystemTime::now(),
            state_load_errors: 0,
            sync,
            changes: ChangeCounters {
                service_changes: 3,
                ..Default::default()
            },
            underlay_address: "192.168.50.10".into(),
            underlay_mac: "02:00:c0:a8:32:0a".into(),
            node_annotation_patches: 1,
            node_annotation_patch_failures: 2,
            probes: ProbeTotals {
                healthz_ok: 5,
                livez_unavailable: 1,
                ..Default::default()
            },
        };
        let text = render(&snap).unwrap();
        assert!(
            text.contains("kxdp_port_rx_packets_total{port=\"uplink\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("kxdp_port_rx_bytes_total{port=\"uplink\"} 600\n"));
        assert!(text.contains("kxdp_worker_rx_packets_total{worker=\"1\"} 5\n"));
        assert!(
            text.contains(
                "kxdp_xsk_rx_ring_full_total{port=\"uplink\",queue=\"0\",worker=\"0\"} 0\n"
            )
        );
        // The queue map: uplink queue 0 on worker 0, queue 1 on worker 1.
        assert!(
            text.contains("kxdp_port_queue_info{port=\"uplink\",queue=\"1\",worker=\"1\"} 1\n")
        );
        assert!(text.contains(
            "kxdp_port_queue_rx_packets_total{port=\"uplink\",queue=\"0\",worker=\"0\"} 3\n"
        ));
        assert!(text.contains("kxdp_packets_dropped_total{reason=\"no_route\"} 0\n"));
        assert!(text.contains("kxdp_conntrack_entries 7\n"));
        assert!(text.contains("kxdp_xdp_decisions_total{reason=\"no_slot\"} 0\n"));
        assert!(text.contains("kxdp_xdp_decisions_total{reason=\"uplink_vxlan\"} 9\n"));
        assert!(text.contains("kxdp_table_generation 4\n"));
        assert!(text.contains("kxdp_sync_duration_seconds_count 1\n"));
        assert!(text.contains("kxdp_network_programming_duration_seconds_count 0\n"));
        assert!(
            text.contains(
                "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1\n"
            )
        );
        assert!(text.contains(
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1\n"
        ));
        assert!(text.contains("kubeproxy_sync_proxy_rules_service_changes_total 3\n"));
        assert!(text.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 5\n"));
        assert!(text.contains("kubeproxy_proxy_livez_total{code=\"503\"} 1\n"));
        assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_service_changes_total counter\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_pending 0\n"));
        assert!(
            text.contains("# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total untyped\n")
        );
        assert!(text.contains(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"} 0\n"
        ));
        let version = format!(
            "kxdp_build_info{{version=\"{}\",",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        assert!(text.contains(
            "kxdp_underlay_info{address=\"192.168.50.10\",mac=\"02:00:c0:a8:32:0a\"} 1\n"
        ));
        assert!(text.contains("kxdp_node_annotation_patches_total 1\n"));
        assert!(text.contains("kxdp_node_annotation_patch_failures_total 2\n"));
    }
}

#[cfg(test)]
mod cardinality_tests {
    use super::*;

    fn snapshot(ports: &[&str]) -> Snapshot {
        let mut w = WorkerStats::default();
        for name in ports {
            w.ports.push(xdp_redirect::worker::PortStats {
                name: name.to_string(),
                ..Default::default()
            });
        }
        Snapshot {
            workers: vec![w],
            xdp_decisions: Vec::new(),
            conntrack: ConntrackSnapshot::default(),
            generation: 1,
            tables_published_at: SystemTime::now(),
            state_load_errors: 0,
            sync: SyncMetrics::new(&sync::tests::tables(&[])),
            changes: ChangeCounters::default(),
            underlay_address: String::new(),
            underlay_mac: String::new(),
            node_annotation_patches: 0,
            node_annotation_patch_failures: 0,
            probes: ProbeTotals::default(),
        }
    }

    /// A pod port's series exist while the port is open and not after: scrapes are built
    /// from the open sockets only, so pods that come and go add no series for good.
    #[test]
    fn a_closed_ports_series_are_gone_from_the_next_scrape() {
        let open = render(&snapshot(&["uplink", "pod-demo-web-1"])).unwrap();
        assert!(open.contains("port=\"pod-demo-web-1\""), "{open}");
        let closed = render(&snapshot(&["uplink"])).unwrap();
        assert!(!closed.contains("pod-demo-web-1"), "{closed}");
        assert!(closed.contains("kxdp_port_rx_packets_total{port=\"uplink\"} 0\n"));
    }
}
