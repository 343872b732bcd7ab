//! The agent's Prometheus metrics: a snapshot the control thread takes on request (the
//! workers' last published counters, the flow table's size under its lock, the table
//! generation), rendered by the HTTP thread into the text exposition.
//!
//! Workers never touch shared atomics per packet: every number here comes from their
//! per-worker counters, copied out every ~100 ms, and is summed at render time. The
//! counters are built fresh for every scrape from those totals; only the programming
//! latency histogram lives across scrapes (it is observed by the control thread).

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datapath::verdict::DropReason;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use xdp_redirect::worker::WorkerStats;

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
    pub programming: ProgrammingLatency,
    /// This node's underlay (VTEP) IPv4 address and MAC in the published tables.
    pub underlay_address: String,
    pub underlay_mac: String,
    /// Patches of this node's kxdp.io annotations the API accepted / that failed.
    pub node_annotation_patches: u64,
    pub node_annotation_patch_failures: u64,
}

/// `kxdp_network_programming_duration_seconds`, named after kube-proxy's
/// `network_programming_duration_seconds`. kube-proxy measures from the change of the API
/// object to the rules being programmed; here the clock starts when the agent sees the
/// state directory change (it cannot know when the object changed upstream) and stops
/// when the new tables are published to the workers and the XDP maps.
#[derive(Debug, Clone)]
pub struct ProgrammingLatency(Histogram);

impl Default for ProgrammingLatency {
    fn default() -> Self {
        // 0.5 ms .. ~16 s: a reload is milliseconds, a huge state directory seconds.
        ProgrammingLatency(Histogram::new(exponential_buckets(0.0005, 2.0, 16)))
    }
}

impl ProgrammingLatency {
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

type Labels = Vec<(&'static str, String)>;
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
    r.register(
        "network_programming_duration_seconds",
        "From the agent seeing a state directory change to the new tables being published",
        snap.programming.0.clone(),
    );

    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(openmetrics_to_text(&out))
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples `x_total`
/// and the text ends in `# EOF`. The classic text format names the family after its
/// samples and has no EOF marker (a parser of it would see `x` as a family without
/// samples and `x_total` as one without HELP or TYPE).
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match header {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(out, "{p}{name}{suffix} {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-11-23T00:35:32.123Z`), as kube-proxy's
/// healthz body shows its times.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), era by era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = String::with_capacity(24);
    let _ = write!(
        s,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_394_132), "2026-11-23T00:35:32.000Z");
    }

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
        let latency = ProgrammingLatency::default();
        latency.observe(Duration::from_millis(3));
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
            programming: latency,
            underlay_address: "192.168.50.10".into(),
            underlay_mac: "02:00:c0:a8:32:0a".into(),
            node_annotation_patches: 1,
            node_annotation_patch_failures: 2,
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
        assert!(text.contains("kxdp_network_programming_duration_seconds_count 1\n"));
        assert!(text.contains(
            "kxdp_underlay_info{address=\"192.168.50.10\",mac=\"02:00:c0:a8:32:0a\"} 1\n"
        ));
        assert!(text.contains("kxdp_node_annotation_patches_total 1\n"));
        assert!(text.contains("kxdp_node_annotation_patch_failures_total 2\n"));
    }
}
