//! What the Kubernetes source tells the metrics about the changes it watches, in
//! kube-proxy's terms (pkg/proxy/metrics): Service and EndpointSlice changes seen and still
//! waiting for a table build, when a change last asked for one, and the
//! `endpoints.kubernetes.io/last-change-trigger-time` of each changed EndpointSlice, from
//! which the network programming latency is measured once the generation holding the
//! change is published.
//!
//! The watcher tasks note every event here (under the source's progress lock); the control
//! thread takes the trigger times together with the changes they belong to
//! ([`KubeSource::updates`](super::KubeSource::updates)), so a time is never observed for
//! a generation that does not hold its change.

use std::any::Any;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;

use model::state::changes::{Kind, ObjectKey};

/// The annotation the EndpointSlice controller sets: when the change that made it rewrite
/// the slice happened (a pod's condition, a Service's creation or update), RFC 3339.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// An IP family, as kube-proxy's `ip_family` metric label spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// `v1.IPFamily`'s strings: kube-proxy's label values.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

/// One changed EndpointSlice's trigger time and the family of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerTime {
    pub family: IpFamily,
    pub at: SystemTime,
}

/// Change counters as kube-proxy keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounters {
    /// Every Service event watched (`sync_proxy_rules_service_changes_total`).
    pub service_changes: u64,
    /// Every EndpointSlice event of an IP address type watched
    /// (`sync_proxy_rules_endpoint_changes_total`).
    pub endpoint_changes: u64,
    /// Services / EndpointSlices changed since the last table build took them
    /// (`..._service_changes_pending`, `..._endpoint_changes_pending`).
    pub service_changes_pending: u64,
    pub endpoint_changes_pending: u64,
    /// When a watched change last asked for a table build
    /// (`sync_proxy_rules_last_queued_timestamp_seconds`).
    pub last_change: Option<SystemTime>,
}

/// The watcher side: counts events and collects trigger times until a build takes them.
#[derive(Debug)]
pub struct ChangeLog {
    /// Trigger times older than this are not measured: after a (re)start every slice is
    /// new to the source, and its annotation may be days old (kube-proxy's rule).
    started: SystemTime,
    counters: ChangeCounters,
    /// Trigger times of changes not yet taken by a build, by slice (the latest per slice).
    pending: HashMap<ObjectKey, TriggerTime>,
    /// The last trigger time measured per slice: an update that does not move it (labels,
    /// a resync) changed nothing the controller triggered, and is not measured again.
    seen: HashMap<ObjectKey, SystemTime>,
}

impl ChangeLog {
    pub fn new(started: SystemTime) -> ChangeLog {
        ChangeLog {
            started,
            counters: ChangeCounters::default(),
            pending: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// Notes one applied (`object` Some) or deleted (None) object of `kind` at `key`.
    pub fn note(&mut self, kind: Kind, key: &ObjectKey, object: Option<&dyn Any>) {
        match kind {
            Kind::Service => self.counters.service_changes += 1,
            Kind::EndpointSlice => {
                let slice = object.and_then(|o| o.downcast_ref::<EndpointSlice>());
                if slice.is_some_and(|s| family_of(s).is_none()) {
                    return; // FQDN slices: kube-proxy ignores them, and so does translate
                }
                self.counters.endpoint_changes += 1;
                match slice {
                    Some(slice) => self.note_trigger(key, slice),
                    None => {
                        // A deleted slice's annotation dates from its last update, not from
                        // the deletion (kube-proxy ignores it too).
                        self.pending.remove(key);
                        self.seen.remove(key);
                    }
                }
            }
            _ => return,
        }
        self.counters.last_change = Some(SystemTime::now());
    }

    fn note_trigger(&mut self, key: &ObjectKey, slice: &EndpointSlice) {
        let (Some(family), Some(at)) = (family_of(slice), trigger_time(slice)) else {
            return;
        };
        if at <= self.started || self.seen.get(key).is_some_and(|&last| at <= last) {
            return;
        }
        self.seen.insert(key.clone(), at);
        self.pending.insert(key.clone(), TriggerTime { family, at });
    }

    /// The trigger times noted since the last call (for the build taking their changes).
    pub fn take_trigger_times(&mut self) -> Vec<TriggerTime> {
        self.pending.drain().map(|(_, t)| t).collect()
    }

    /// The counters, with the pending ones counted among `dirty` (the objects changed and
    /// not yet taken).
    pub fn counters<'a>(&self, dirty: impl IntoIterator<Item = &'a ObjectKey>) -> ChangeCounters {
        let mut counters = self.counters;
        for key in dirty {
            match key.kind {
                Kind::Service => counters.service_changes_pending += 1,
                Kind::EndpointSlice => counters.endpoint_changes_pending += 1,
                _ => {}
            }
        }
        counters
    }
}

/// The family of an EndpointSlice's addresses; None for FQDN (or unknown) types.
pub fn family_of(slice: &EndpointSlice) -> Option<IpFamily> {
    match slice.address_type.as_str() {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

/// The slice's trigger-time annotation; None when absent or not RFC 3339 (logged: the
/// controller writes it, so a bad one is somebody else's write).
pub fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let text = slice
        .metadata
        .annotations
        .as_ref()?
        .get(LAST_CHANGE_TRIGGER_TIME)?;
    match text.parse::<Timestamp>() {
        Ok(at) => Some(system_time(at)),
        Err(error) => {
            tracing::warn!(
                slice = slice.metadata.name.as_deref().unwrap_or(""),
                value = %text,
                %error,
                "{LAST_CHANGE_TRIGGER_TIME} is not an RFC 3339 time; its change is not measured"
            );
            None
        }
    }
}

/// `at` as a `SystemTime` (jiff's own conversion needs its std feature, which k8s-openapi
/// leaves off).
fn system_time(at: Timestamp) -> SystemTime {
    let nanos = at.subsec_nanosecond().unsigned_abs();
    let whole = std::time::Duration::from_secs(at.as_second().unsigned_abs());
    // For times before 1970 the fraction counts towards the epoch (it is negative).
    if at.as_second() < 0 || at.subsec_nanosecond() < 0 {
        UNIX_EPOCH - whole - std::time::Duration::from_nanos(u64::from(nanos))
    } else {
        UNIX_EPOCH + whole + std::time::Duration::from_nanos(u64::from(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slice(name: &str, address_type: &str, trigger: Option<&str>) -> EndpointSlice {
        let mut s = EndpointSlice {
            address_type: address_type.into(),
            ..Default::default()
        };
        s.metadata.namespace = Some("demo".into());
        s.metadata.name = Some(name.into());
        s.metadata.annotations =
            trigger.map(|t| [(LAST_CHANGE_TRIGGER_TIME.to_string(), t.to_string())].into());
        s
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::EndpointSlice,
            namespace: "demo".into(),
            name: name.into(),
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        system_time(rfc3339.parse::<Timestamp>().unwrap())
    }

    #[test]
    fn trigger_times_are_taken_once_and_only_when_they_move() {
        let mut log = ChangeLog::new(at("2026-01-01T00:00:00Z"));
        let a = slice("a", "IPv4", Some("2026-01-01T00:00:05.5Z"));
        log.note(Kind::EndpointSlice, &key("a"), Some(&a));
        // Before the source started: not measured (but counted).
        let old = slice("b", "IPv6", Some("2025-12-31T23:59:59Z"));
        log.note(Kind::EndpointSlice, &key("b"), Some(&old));
        assert_eq!(
            log.take_trigger_times(),
            vec![TriggerTime {
                family: IpFamily::V4,
                at: at("2026-01-01T00:00:00Z") + Duration::from_millis(5500),
            }]
        );
        assert!(log.take_trigger_times().is_empty());
        // The same trigger time again (a label change): nothing new.
        log.note(Kind::EndpointSlice, &key("a"), Some(&a));
        assert!(log.take_trigger_times().is_empty());
        // Without the annotation, with a bad one, or FQDN: nothing.
        let none = slice("c", "IPv4", None);
        log.note(Kind::EndpointSlice, &key("c"), Some(&none));
        let bad = slice("d", "IPv4", Some("yesterday"));
        log.note(Kind::EndpointSlice, &key("d"), Some(&bad));
        let fqdn = slice("e", "FQDN", Some("2026-01-01T00:00:09Z"));
        log.note(Kind::EndpointSlice, &key("e"), Some(&fqdn));
        assert!(log.take_trigger_times().is_empty());
        // A later change of a; a deletion drops what was pending for its slice.
        let a2 = slice("a", "IPv4", Some("2026-01-01T00:00:07Z"));
        log.note(Kind::EndpointSlice, &key("a"), Some(&a2));
        log.note(Kind::EndpointSlice, &key("a"), None);
        assert!(log.take_trigger_times().is_empty());

        let c = log.counters([&key("a"), &key("c")]);
        assert_eq!(c.endpoint_changes, 7, "FQDN slices are not counted");
        assert_eq!(c.endpoint_changes_pending, 2);
        assert_eq!(c.service_changes, 0);
        assert!(c.last_change.is_some());
    }

    #[test]
    fn services_count_and_other_kinds_do_not() {
        let mut log = ChangeLog::new(SystemTime::now());
        let svc = ObjectKey {
            kind: Kind::Service,
            namespace: "demo".into(),
            name: "web".into(),
        };
        log.note(Kind::Service, &svc, None);
        let pod = ObjectKey {
            kind: Kind::Pod,
            ..svc.clone()
        };
        log.note(Kind::Pod, &pod, None);
        let c = log.counters([&svc, &pod]);
        assert_eq!((c.service_changes, c.service_changes_pending), (1, 1));
        assert_eq!((c.endpoint_changes, c.endpoint_changes_pending), (0, 0));
    }
}
