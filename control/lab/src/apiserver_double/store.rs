//! The double's memory: the objects of each kind, every change ever made (what watches
//! replay), the continue tokens of paged lists, the injected faults and the counters tests
//! read. All of it sits behind one mutex ([`Shared::lock`]); its condvar wakes whoever waits
//! on a change (held lists, idle watches, [`ApiServerDouble::wait_counters`]).
//!
//! No IO here: the HTTP side (`http`, `watch`, `patch`) reads and writes through these
//! methods and only then talks to its socket, with the lock released.
//!
//! [`ApiServerDouble::wait_counters`]: super::ApiServerDouble::wait_counters

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpStream;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use super::DoubleError;

/// The collections served: (kind, apiVersion, collection path).
pub const KINDS: [(&str, &str, &str); 7] = [
    ("Node", "v1", "/api/v1/nodes"),
    ("Namespace", "v1", "/api/v1/namespaces"),
    ("Pod", "v1", "/api/v1/pods"),
    ("Service", "v1", "/api/v1/services"),
    (
        "EndpointSlice",
        "discovery.k8s.io/v1",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ),
    (
        "NetworkPolicy",
        "networking.k8s.io/v1",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ),
    (
        "ServiceCIDR",
        "networking.k8s.io/v1",
        "/apis/networking.k8s.io/v1/servicecidrs",
    ),
];

/// (namespace or "", name)
pub type Key = (String, String);

pub(super) fn kind_of_path(path: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(_, _, p)| *p == path)
        .map(|(kind, _, _)| *kind)
}

pub(super) fn api_version_of(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map_or("v1", |(_, v, _)| *v)
}

/// The kind and key of an object the double can serve: a served `kind` and a string
/// `metadata.name` (the namespace defaults to "", as for cluster-scoped kinds).
pub fn servable(object: &Value) -> Result<(String, Key), DoubleError> {
    let kind = object["kind"].as_str().ok_or(DoubleError::NoKind)?;
    if !KINDS.iter().any(|(k, _, _)| *k == kind) {
        return Err(DoubleError::KindNotServed(kind.to_string()));
    }
    let meta = &object["metadata"];
    let name = meta["name"]
        .as_str()
        .ok_or_else(|| DoubleError::NoName(kind.to_string()))?;
    let namespace = meta["namespace"].as_str().unwrap_or("");
    Ok((kind.to_string(), (namespace.to_string(), name.to_string())))
}

pub(super) fn rv_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub(super) struct Change {
    pub rv: u64,
    pub kind: String,
    pub event_type: &'static str,
    pub key: Key,
    pub object: Value,
}

/// How many times the double answered what, for tests to prove a fault really happened.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub lists: HashMap<String, u64>,
    pub watches: HashMap<String, u64>,
    pub gone_sent: u64,
    pub bookmarks_sent: u64,
    pub watches_dropped: u64,
    /// Watch streams open right now.
    pub open_watches: u64,
    /// List pages refused because their continue token had expired.
    pub continues_gone: u64,
    /// List pages served with a continue token.
    pub pages_continued: u64,
    /// Every PATCH request received, in order, whatever it was answered.
    pub patches: Vec<PatchRecord>,
    /// Requests answered 401 for want of the required bearer token.
    pub unauthorized: u64,
    /// Per kind: requests answered 404 because the kind is not served
    /// ([`ApiServerDouble::stop_serving`](super::ApiServerDouble::stop_serving)).
    pub not_served: HashMap<String, u64>,
}

/// One PATCH request as the double saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRecord {
    /// The Node's name from the path.
    pub name: String,
    pub content_type: String,
    /// The `fieldManager` query parameter, when given.
    pub field_manager: Option<String>,
    /// The body as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
    /// The HTTP status answered.
    pub code: u16,
}

impl Counters {
    /// PATCH requests answered 200 (applied, or a no-op).
    pub fn patches_ok(&self) -> usize {
        self.patches.iter().filter(|p| p.code == 200).count()
    }

    /// PATCH requests answered with an error (injected or not).
    pub fn patches_failed(&self) -> usize {
        self.patches.iter().filter(|p| p.code != 200).count()
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub rv: u64,
    pub objects: HashMap<String, BTreeMap<Key, Value>>,
    /// Every change ever made (never trimmed, so tests can ask "did this state exist?").
    pub history: Vec<Change>,
    /// Watches and continue tokens older than this get 410 Gone.
    pub compacted_rv: u64,
    /// Bumped to make every open watch send 410 and end.
    pub expire_epoch: u64,
    /// Bumped to cut every open watch connection.
    pub drop_epoch: u64,
    pub held_lists: HashSet<String>,
    /// Kinds answered 404, as by an API server that does not have their API.
    pub unserved: HashSet<String>,
    pub delay: Duration,
    pub paused: bool,
    continues: HashMap<String, (u64, Vec<Value>)>,
    /// Expire the continue token of the next paged list (one shot).
    pub expire_next_continue: bool,
    next_continue: u64,
    pub shutting_down: bool,
    pub counters: Counters,
    /// Answer every PATCH with this status code (a fault), when set.
    pub patch_fault: Option<u16>,
    /// Serve only requests carrying `Authorization: Bearer <this>`, when set.
    pub token: Option<String>,
}

/// One page of a list, or why there is none.
#[derive(Debug)]
pub(super) enum ListPage {
    Page {
        /// The list's resourceVersion (of its first page, for a continued list).
        rv: u64,
        items: Vec<Value>,
        /// Where the next page starts, when there is one.
        continue_token: Option<String>,
    },
    /// The continue token is unknown or older than the compaction: 410.
    ContinueGone,
}

impl State {
    /// Stores `object` (servable, see [`servable`]) under a new resourceVersion, as ADDED
    /// or MODIFIED; returns that version.
    pub fn apply(&mut self, mut object: Value) -> Result<u64, DoubleError> {
        let (kind, key) = servable(&object)?;
        if kind == "EndpointSlice" {
            stamp_trigger_time(&mut object);
        }
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let objects = self.objects.entry(kind.clone()).or_default();
        let event_type = if objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.insert(key.clone(), object.clone());
        self.history.push(Change {
            rv,
            kind,
            event_type,
            key,
            object,
        });
        Ok(rv)
    }

    /// Removes an object under a new resourceVersion (a DELETED event); returns it.
    pub fn delete(&mut self, kind: &str, key: Key) -> Result<u64, DoubleError> {
        let Some(mut object) = self.objects.get_mut(kind).and_then(|m| m.remove(&key)) else {
            return Err(DoubleError::Absent {
                kind: kind.to_string(),
                namespace: key.0,
                name: key.1,
            });
        };
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.history.push(Change {
            rv,
            kind: kind.to_string(),
            event_type: "DELETED",
            key,
            object,
        });
        Ok(rv)
    }

    pub fn object(&self, kind: &str, key: &Key) -> Option<&Value> {
        self.objects.get(kind)?.get(key)
    }

    /// The current objects of `kind` as (key, resourceVersion).
    pub fn current(&self, kind: &str) -> BTreeMap<Key, u64> {
        self.objects
            .get(kind)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), rv_of(v))).collect())
            .unwrap_or_default()
    }

    /// Did `kind` ever hold exactly `seen` (keys with their resourceVersions)?
    pub fn kind_state_existed(&self, kind: &str, seen: &BTreeMap<Key, u64>) -> bool {
        let mut replay: BTreeMap<Key, u64> = BTreeMap::new();
        if replay == *seen {
            return true;
        }
        for change in self.history.iter().filter(|c| c.kind == kind) {
            if change.event_type == "DELETED" {
                replay.remove(&change.key);
            } else {
                replay.insert(change.key.clone(), change.rv);
            }
            if replay == *seen {
                return true;
            }
        }
        false
    }

    /// The changes of `kind` after resourceVersion `cursor`, oldest first.
    pub fn changes_after(&self, kind: &str, cursor: u64) -> Vec<Change> {
        self.history
            .iter()
            .filter(|c| c.rv > cursor && c.kind == kind)
            .cloned()
            .collect()
    }

    pub fn objects_of(&self, kind: &str) -> Vec<Value> {
        self.objects
            .get(kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The next page of a list of `kind`: from the start, or from `continue_token`, at most
    /// `limit` items. The rest is kept under a new token (unless a test asked for the next
    /// token to expire), so the pages of one list are one snapshot, as in the real server.
    pub fn list_page(
        &mut self,
        kind: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> ListPage {
        let (rv, mut items) = match continue_token {
            Some(token) => match self.continues.remove(token) {
                Some((rv, rest)) if rv >= self.compacted_rv => (rv, rest),
                _ => {
                    self.counters.continues_gone += 1;
                    return ListPage::ContinueGone;
                }
            },
            None => (self.rv, self.objects_of(kind)),
        };
        let mut continue_token = None;
        if items.len() > limit {
            let rest = items.split_off(limit);
            self.next_continue += 1;
            let token = format!("c{}", self.next_continue);
            // An expired token is simply never stored: the follow-up page finds it gone.
            if !std::mem::take(&mut self.expire_next_continue) {
                self.continues.insert(token.clone(), (rv, rest));
            }
            self.counters.pages_continued += 1;
            continue_token = Some(token);
        }
        ListPage::Page {
            rv,
            items,
            continue_token,
        }
    }
}

/// The state and what its threads share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    pub changed: Condvar,
    /// A handle on every open connection, so dropping the double can cut them all; each is
    /// forgotten when its connection ends, so that the socket really closes then.
    connections: Mutex<Connections>,
}

#[derive(Debug, Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, TcpStream>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not take every later Drop down.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits up to `timeout` for a change, giving the lock back meanwhile.
    pub fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(state, timeout)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps a handle on `stream` until [`forget`](Self::forget) with the returned id.
    pub fn track(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut connections = self.connections();
        connections.next_id += 1;
        let id = connections.next_id;
        connections.open.insert(id, handle);
        Some(id)
    }

    pub fn forget(&self, id: u64) {
        self.connections().open.remove(&id);
    }

    /// Shuts every open connection down (their threads then see them end).
    pub fn cut_all(&self) {
        for (_, conn) in self.connections().open.drain() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The annotation the EndpointSlice controller writes on every slice it changes: when the
/// change that caused it happened (kube-proxy measures network programming from it).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Standing in for the EndpointSlice controller: a slice written without a trigger time
/// gets the time of the write (RFC 3339, nanoseconds); one that carries a time keeps it,
/// so a test can date its change.
fn stamp_trigger_time(object: &mut Value) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .and_modify(|a| {
            if !a.is_object() {
                *a = json!({});
            }
        })
        .or_insert_with(|| json!({}));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations
            .entry(LAST_CHANGE_TRIGGER_TIME)
            .or_insert_with(|| json!(timestamp(std::time::SystemTime::now()).to_string()));
    }
}

/// `t` as a jiff timestamp (its `now` needs jiff's std feature, which k8s-openapi leaves off).
fn timestamp(t: std::time::SystemTime) -> k8s_openapi::jiff::Timestamp {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since.subsec_nanos()).unwrap_or(0);
    k8s_openapi::jiff::Timestamp::new(seconds, nanos)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": "demo", "name": name}})
    }

    #[test]
    fn endpoint_slices_get_a_trigger_time_unless_they_carry_one() {
        let mut state = State::default();
        let slice = |annotations: Value| {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"namespace": "demo", "name": "web-1", "annotations": annotations},
                   "addressType": "IPv4", "endpoints": []})
        };
        let before = timestamp(std::time::SystemTime::now());
        state.apply(slice(Value::Null)).unwrap();
        let key = ("demo".to_string(), "web-1".to_string());
        let stamped = state.object("EndpointSlice", &key).unwrap()["metadata"]["annotations"]
            [LAST_CHANGE_TRIGGER_TIME]
            .as_str()
            .unwrap()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap();
        assert!(stamped >= before && stamped <= timestamp(std::time::SystemTime::now()));
        let dated = "2026-01-01T00:00:00Z";
        state
            .apply(slice(
                json!({LAST_CHANGE_TRIGGER_TIME: dated, "other": "kept"}),
            ))
            .unwrap();
        let annotations = &state.object("EndpointSlice", &key).unwrap()["metadata"]["annotations"];
        assert_eq!(annotations[LAST_CHANGE_TRIGGER_TIME], dated);
        assert_eq!(annotations["other"], "kept");
        // Other kinds are left alone.
        state.apply(pod("p")).unwrap();
        let pod_key = ("demo".to_string(), "p".to_string());
        assert!(
            state.object("Pod", &pod_key).unwrap()["metadata"]
                .get("annotations")
                .is_none()
        );
    }

    #[test]
    fn unservable_objects_are_refused_and_change_nothing() {
        let mut state = State::default();
        let no_kind = json!({"metadata": {"name": "x"}});
        assert!(matches!(state.apply(no_kind), Err(DoubleError::NoKind)));
        let other = json!({"kind": "ConfigMap", "metadata": {"name": "x"}});
        let e = state.apply(other).unwrap_err();
        assert!(e.to_string().contains("\"ConfigMap\" is not served"), "{e}");
        let nameless = json!({"kind": "Pod", "metadata": {}});
        assert!(matches!(state.apply(nameless), Err(DoubleError::NoName(k)) if k == "Pod"));
        let e = state
            .delete("Pod", ("demo".into(), "gone".into()))
            .unwrap_err();
        assert_eq!(e.to_string(), "delete Pod demo/gone: absent");
        assert_eq!((state.rv, state.history.len()), (0, 0));
    }

    #[test]
    fn pages_of_one_list_are_one_snapshot() {
        let mut state = State::default();
        for name in ["a", "b", "c"] {
            state.apply(pod(name)).unwrap();
        }
        let ListPage::Page {
            rv,
            items,
            continue_token: Some(token),
        } = state.list_page("Pod", 2, None)
        else {
            panic!("a first page with a continue token");
        };
        assert_eq!((rv, items.len()), (3, 2));
        state.apply(pod("d")).unwrap();
        let ListPage::Page {
            rv: rest_rv,
            items: rest,
            continue_token: None,
        } = state.list_page("Pod", 2, Some(&token))
        else {
            panic!("a last page");
        };
        assert_eq!(
            (rest_rv, rest.len()),
            (3, 1),
            "d came after the list started"
        );
        assert!(matches!(
            state.list_page("Pod", 2, Some(&token)),
            ListPage::ContinueGone
        ));
    }
}
