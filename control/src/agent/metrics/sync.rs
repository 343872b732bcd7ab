//! Table builds as kube-proxy reports its rule syncs (pkg/proxy/metrics, v1.34): one
//! "sync" is one table generation, from the moment its build starts (the changes are taken
//! from the source) to its publication to the workers and the XDP maps. kube-proxy runs one
//! proxier per IP family and labels these series `ip_family`; kxdp builds both families in
//! one generation, so each build is observed once under every family the node serves.
//!
//! Kept by the control thread across scrapes; a [`Snapshot`](super::Snapshot) holds a
//! clone (the histograms share their counts).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use datapath::tables::{BackendSet, ServicePort, Tables};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{Labels, unix_seconds};
use crate::source::change_log::{ChangeCounters, IpFamily, TriggerTime};

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// `sync_proxy_rules_duration_seconds` and its full/partial split: 1 ms .. ~16 s.
fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// `network_programming_duration_seconds`: 0, 0.25 s, 0.5 s, 1..59 s by 1, 60..115 s by 5,
/// 120..300 s by 30 (kube-proxy's buckets, its leading 0 included).
fn programming_histogram() -> Histogram {
    let buckets = [0.0, 0.25, 0.5]
        .into_iter()
        .chain((1..=59).map(f64::from))
        .chain((0..12).map(|i| 60.0 + 5.0 * f64::from(i)))
        .chain((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(buckets)
}

fn family_label(family: IpFamily) -> Labels {
    vec![("ip_family", family.as_str().to_string())]
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct SyncMetrics {
    /// The families the node serves (its cluster and Service CIDRs'), in label order.
    families: Vec<IpFamily>,
    sync: Histograms,
    full: Histograms,
    partial: Histograms,
    programming: Histograms,
    /// kxdp's own, with buckets fit for builds of a few hundred microseconds.
    kxdp_sync: Histogram,
    /// kxdp's own network programming latency: the same observations with buckets from
    /// 1 ms (the API double's trigger times are exact; a controller's are whole seconds).
    kxdp_programming: Histogram,
    last_synced: Option<SystemTime>,
    last_queued: Option<SystemTime>,
    no_local: NoLocalEndpoints,
}

impl SyncMetrics {
    /// Metrics for a node serving the families of `tables`' cluster and Service CIDRs (IPv4
    /// when it names none); every series shows from the start, at zero.
    pub fn new(tables: &Tables) -> SyncMetrics {
        let mut families: Vec<IpFamily> = tables
            .cluster_cidrs
            .iter()
            .chain(&tables.service_cidrs)
            .map(|c| family_of(c.addr.is_v4()))
            .collect();
        families.sort();
        families.dedup();
        if families.is_empty() {
            families.push(IpFamily::V4);
        }
        let histograms = || Histograms::new_with_constructor(sync_histogram as fn() -> Histogram);
        let metrics = SyncMetrics {
            families,
            sync: histograms(),
            full: histograms(),
            partial: histograms(),
            programming: Histograms::new_with_constructor(programming_histogram),
            kxdp_sync: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            kxdp_programming: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            last_synced: None,
            last_queued: None,
            no_local: NoLocalEndpoints::default(),
        };
        for &family in &metrics.families {
            for histograms in [
                &metrics.sync,
                &metrics.full,
                &metrics.partial,
                &metrics.programming,
            ] {
                let _ = histograms.get_or_create(&family_label(family));
            }
        }
        metrics
    }

    /// A build that started at `started` (see `source::Built`) ended: published when
    /// `published` holds the tables, else failed (observed all the same, as kube-proxy
    /// observes a failed sync's duration).
    pub fn built(
        &mut self,
        started: Instant,
        full: bool,
        trigger_times: &[TriggerTime],
        published: Option<&Tables>,
    ) {
        let took = started.elapsed().as_secs_f64();
        let now = SystemTime::now();
        self.last_queued = self.last_queued.max(now.checked_sub(started.elapsed()));
        self.kxdp_sync.observe(took);
        for &family in &self.families {
            let label = family_label(family);
            self.sync.get_or_create(&label).observe(took);
            let split = if full { &self.full } else { &self.partial };
            split.get_or_create(&label).observe(took);
        }
        let Some(tables) = published else { return };
        self.last_synced = Some(now);
        for trigger in trigger_times {
            // Negative when the controller's clock is ahead of ours; kept, as kube-proxy
            // keeps it (it lands in the 0 bucket).
            let latency = match now.duration_since(trigger.at) {
                Ok(d) => d.as_secs_f64(),
                Err(ahead) => -ahead.duration().as_secs_f64(),
            };
            self.programming
                .get_or_create(&family_label(trigger.family))
                .observe(latency);
            self.kxdp_programming.observe(latency);
        }
        self.no_local = NoLocalEndpoints::of(tables);
    }

    /// Registers the kube-proxy-named families on `k` (a registry with the prefix
    /// `kubeproxy`), with the source's change counters (zero for a state directory, which
    /// has none).
    pub fn register_kube_proxy(&self, k: &mut Registry, changes: &ChangeCounters) {
        k.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            self.sync.clone(),
        );
        k.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            self.full.clone(),
        );
        k.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            self.partial.clone(),
        );
        k.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            self.programming.clone(),
        );
        let queued = changes.last_change.max(self.last_queued);
        for (name, help, at) in [
            (
                "sync_proxy_rules_last_timestamp_seconds",
                "The last time proxy rules were successfully synced",
                self.last_synced,
            ),
            (
                "sync_proxy_rules_last_queued_timestamp_seconds",
                "The last time a sync of proxy rules was queued",
                queued,
            ),
        ] {
            let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
            if let Some(at) = at {
                for &f in &self.families {
                    family.get_or_create(&family_label(f)).set(unix_seconds(at));
                }
            }
            k.register(name, help, family);
        }
        let no_local = Family::<Labels, Gauge>::default();
        for &f in &self.families {
            for policy in [TrafficPolicy::Internal, TrafficPolicy::External] {
                let n = self.no_local.0.get(&(policy, f)).copied().unwrap_or(0);
                no_local
                    .get_or_create(&vec![
                        ("ip_family", f.as_str().to_string()),
                        ("traffic_policy", policy.as_str().to_string()),
                    ])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        k.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            Untyped(no_local),
        );
        let gauge = |n: u64| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
            g
        };
        let counter = |n: u64| {
            let c = prometheus_client::metrics::counter::Counter::<u64>::default();
            c.inc_by(n);
            c
        };
        k.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            gauge(changes.endpoint_changes_pending),
        );
        k.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            counter(changes.endpoint_changes),
        );
        k.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            gauge(changes.service_changes_pending),
        );
        k.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            counter(changes.service_changes),
        );
    }

    /// kxdp's own histograms (registered under the `kxdp` prefix).
    pub fn register_kxdp(&self, r: &mut Registry) {
        r.register(
            "sync_duration_seconds",
            "From the start of a table generation's build (the changes taken from the source) \
             to its publication to the workers and the XDP maps",
            self.kxdp_sync.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "From a changed EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time to \
             the publication of the table generation holding the change (Kubernetes API only)",
            self.kxdp_programming.clone(),
        );
    }
}

/// A gauge exposed as untyped. kube-proxy's `sync_proxy_rules_no_local_endpoints_total` is
/// a gauge named like a counter, which `promtool check metrics` refuses for any type but
/// counter and untyped; as untyped it keeps kube-proxy's name, labels and values (PromQL
/// reads untyped samples as it reads gauges) and passes the lint.
#[derive(Debug)]
struct Untyped(Family<Labels, Gauge>);

impl prometheus_client::encoding::EncodeMetric for Untyped {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Unknown
    }
}

fn family_of(v4: bool) -> IpFamily {
    if v4 { IpFamily::V4 } else { IpFamily::V6 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TrafficPolicy {
    Internal,
    External,
}

impl TrafficPolicy {
    fn as_str(self) -> &'static str {
        match self {
            TrafficPolicy::Internal => "internal",
            TrafficPolicy::External => "external",
        }
    }
}

/// Service ports with a Local traffic policy whose endpoints (of a family) are all on
/// other nodes, so this node drops what the policy keeps local: kube-proxy counts one per
/// Service port and policy whose endpoints exist somewhere but not here (a port with no
/// endpoints at all is rejected, not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NoLocalEndpoints(BTreeMap<(TrafficPolicy, IpFamily), u64>);

impl NoLocalEndpoints {
    fn of(tables: &Tables) -> NoLocalEndpoints {
        // Per Service port and family: its frontends (any, external ones).
        let mut fronted: BTreeMap<(u32, IpFamily), bool> = BTreeMap::new();
        for (key, frontend) in tables.frontends.iter() {
            let external = fronted
                .entry((frontend.service.0, family_of(key.vip.is_v4())))
                .or_default();
            *external |= frontend.kind.is_external();
        }
        let mut counts = BTreeMap::new();
        for ((service, family), external) in fronted {
            let Some(port) = tables.service_ports.get(service as usize) else {
                continue;
            };
            let has =
                |set: &BackendSet| members_of(port, set).any(|ip_v4| family_of(ip_v4) == family);
            if !has(&port.cluster) || has(&port.local) {
                continue;
            }
            if port.internal_local {
                *counts.entry((TrafficPolicy::Internal, family)).or_default() += 1;
            }
            if port.external_local && external {
                *counts.entry((TrafficPolicy::External, family)).or_default() += 1;
            }
        }
        NoLocalEndpoints(counts)
    }
}

/// Whether each member of `set` is an IPv4 endpoint.
fn members_of<'a>(port: &'a ServicePort, set: &'a BackendSet) -> impl Iterator<Item = bool> + 'a {
    set.members
        .iter()
        .filter_map(|&i| port.backends.get(i as usize))
        .map(|b| b.ip.is_v4())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::source::change_log::TriggerTime;
    use serde_json::json;
    use std::time::Duration;

    fn node(name: &str, cidr: &str, address: &str) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "annotations": {"kxdp.io/underlay-mac": "02:00:00:00:00:01"}},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        })
    }

    /// Node `n`'s tables in a cluster of `n` and `m`, with `services` (name, type,
    /// internal policy, external policy, cluster IP), each with one ready endpoint on `m`.
    pub(in super::super) fn tables(services: &[(&str, &str, &str, &str, &str)]) -> Tables {
        let mut cluster = model::state::ClusterState {
            nodes: vec![
                serde_json::from_value(node("n", "10.244.1.0/24", "192.168.1.1")).unwrap(),
                serde_json::from_value(node("m", "10.244.2.0/24", "192.168.1.2")).unwrap(),
            ],
            ..Default::default()
        };
        for (i, &(name, kind, internal, external, ip)) in services.iter().enumerate() {
            let mut spec = json!({
                "type": kind, "clusterIP": ip, "clusterIPs": [ip],
                "internalTrafficPolicy": internal,
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080 + i}],
            });
            if kind != "ClusterIP" {
                spec["externalTrafficPolicy"] = json!(external);
            }
            cluster.services.push(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "demo", "name": name}, "spec": spec,
                }))
                .unwrap(),
            );
            cluster.endpoint_slices.push(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "demo", "name": format!("{name}-1"),
                                 "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [format!("10.244.2.{}", 5 + i)],
                                   "conditions": {"ready": true}, "nodeName": "m"}],
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                }))
                .unwrap(),
            );
        }
        let config = model::config::AgentConfig::default();
        let translated = model::translate::translate(&cluster, &config, "n", 1).unwrap();
        assert!(translated.warnings.is_empty(), "{:?}", translated.warnings);
        translated.tables
    }

    #[test]
    fn local_policies_without_local_endpoints_are_counted_per_policy() {
        let t = tables(&[
            ("cluster", "ClusterIP", "Cluster", "", "10.96.0.10"),
            ("internal", "ClusterIP", "Local", "", "10.96.0.11"),
            ("external", "NodePort", "Cluster", "Local", "10.96.0.12"),
            ("both", "NodePort", "Local", "Local", "10.96.0.13"),
        ]);
        let counts = NoLocalEndpoints::of(&t).0;
        assert_eq!(
            counts,
            BTreeMap::from([
                ((TrafficPolicy::Internal, IpFamily::V4), 2),
                ((TrafficPolicy::External, IpFamily::V4), 2),
            ])
        );
    }

    #[test]
    fn programming_latency_runs_from_the_trigger_time_to_publication() {
        let t = tables(&[]);
        let mut m = SyncMetrics::new(&t);
        assert_eq!(m.families, vec![IpFamily::V4]);
        let trigger = TriggerTime {
            family: IpFamily::V4,
            at: SystemTime::now() - Duration::from_secs(3),
        };
        m.built(Instant::now(), false, &[trigger], Some(&t));
        let mut r = Registry::with_prefix("kubeproxy");
        m.register_kube_proxy(&mut r, &ChangeCounters::default());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let bucket = |le: &str| {
            let series = format!(
                "kubeproxy_network_programming_duration_seconds_bucket{{le=\"{le}\",ip_family=\"IPv4\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
                .to_string()
        };
        assert_eq!(bucket("2.0"), "0");
        assert_eq!(bucket("3.0"), "0");
        assert_eq!(bucket("4.0"), "1");
        assert_eq!(bucket("300.0"), "1");
        assert!(text.contains(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1\n"
        ));
        assert!(text.contains(
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 0\n"
        ));
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} ")
        );
        let mut r = Registry::with_prefix("kxdp");
        m.register_kxdp(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("kxdp_network_programming_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kxdp_sync_duration_seconds_count 1\n"),
            "{text}"
        );
    }
}
