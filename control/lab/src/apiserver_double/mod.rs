//! A test double of the Kubernetes API server's list/watch protocol, plain HTTP/1.1, for
//! running the unmodified kube-rs client against. It is NOT an API server: no TLS, no
//! authentication or authorisation, no admission, no validation beyond "has a kind and a
//! name", writes from clients only where a test needs one (objects come from the process
//! that runs it), six kinds, everything in memory. It exists so that tests and
//! `kxdp lab --source api` can feed the agent through the real client code; never point
//! anything but a test or the lab at it. `apply` and `delete` panic on what a test should
//! never hand them; `DirSync` checks objects first, so a manifest directory cannot.
//!
//! Used by the integration tests (`control/tests/kube_source.rs`, `agent.rs`) and by the
//! hidden `kxdp apiserver-double` command (`command.rs`), which serves a manifest
//! directory (`manifests.rs`) and follows its changes.
//!
//! What it speaks (as kube-rs 5's watcher uses it, read from kube-core's `params.rs` and
//! kube-runtime's `watcher.rs`):
//! - `GET <collection>?limit=N[&continue=T][&resourceVersion=..&resourceVersionMatch=..]`:
//!   a `<Kind>List` with `metadata.resourceVersion` (the global counter) and, when more than
//!   `limit` items remain, `metadata.continue`; an expired continue token answers HTTP 410.
//! - `GET <collection>?watch=true&resourceVersion=R&allowWatchBookmarks=true&timeoutSeconds=S`:
//!   a chunked stream of JSON lines `{"type":..,"object":..}` with every change after R, a
//!   BOOKMARK when idle, and an ERROR event carrying a 410 Status when R is compacted away.
//!
//! Faults the tests inject: holding one kind's lists back, slowing every answer, expiring
//! resource versions (compaction: open watches get 410, old RVs are refused), dropping open
//! watch connections, pausing event delivery.

mod command;
mod manifests;

pub use command::{ApiServerDoubleArgs, READY_PREFIX, main};
pub use manifests::{DirSync, DirSyncError, SyncReport};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The collections served, by kind name.
pub const KINDS: [(&str, &str, &str); 6] = [
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
];

fn kind_of_path(path: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(_, _, p)| *p == path)
        .map(|(kind, _, _)| *kind)
}

fn api_version_of(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map_or("v1", |(_, v, _)| *v)
}

/// (namespace or "", name)
pub type Key = (String, String);

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: String,
    event_type: &'static str,
    key: Key,
    object: Value,
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
struct State {
    rv: u64,
    objects: HashMap<String, BTreeMap<Key, Value>>,
    /// Every change ever made (never trimmed, so tests can ask "did this state exist?").
    history: Vec<Change>,
    /// Watches and continue tokens older than this get 410 Gone.
    compacted_rv: u64,
    /// Bumped to make every open watch send 410 and end.
    expire_epoch: u64,
    /// Bumped to cut every open watch connection.
    drop_epoch: u64,
    held_lists: HashSet<String>,
    delay: Duration,
    paused: bool,
    continues: HashMap<String, (u64, Vec<Value>)>,
    /// Expire the continue token of the next paged list (one shot).
    expire_next_continue: bool,
    next_continue: u64,
    shutting_down: bool,
    counters: Counters,
    /// Answer every PATCH with this status code (a fault), when set.
    patch_fault: Option<u16>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    connections: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not take every later Drop down.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running double; dropping it stops the server and cuts all connections.
#[derive(Debug)]
pub struct ApiServerDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// How long a bookmark-less idle watch waits before sending a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_millis(300);

impl ApiServerDouble {
    /// Starts on 127.0.0.1 on a free port (for tests).
    ///
    /// # Panics
    /// When no loopback port can be bound: a test cannot go on without its server.
    pub fn start() -> ApiServerDouble {
        ApiServerDouble::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap_or_else(|e| panic!("apiserver double: cannot listen on 127.0.0.1: {e}"))
    }

    /// Starts listening on `addr` (port 0: any free one; [`url`](Self::url) says which).
    pub fn start_on(addr: SocketAddr) -> std::io::Result<ApiServerDouble> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        shared.lock().rv = 1;
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.lock().shutting_down {
                    return;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    accept_shared
                        .connections
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(clone);
                }
                let conn_shared = Arc::clone(&accept_shared);
                std::thread::spawn(move || serve_connection(&conn_shared, stream));
            }
        });
        Ok(ApiServerDouble {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) whose current context points at this double, no credentials.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n\
             users:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: double\n  context:\n    \
             cluster: double\n    user: nobody\ncurrent-context: double\n",
            self.url()
        )
    }

    /// Creates or replaces an object (any serialisable Kubernetes object with kind,
    /// apiVersion and metadata.name); returns its new resourceVersion.
    pub fn apply(&self, object: &impl serde::Serialize) -> u64 {
        let mut object = serde_json::to_value(object).unwrap();
        let kind = object["kind"]
            .as_str()
            .expect("object has a kind")
            .to_string();
        assert!(kind_of_path_for(&kind), "kind {kind} is not served");
        let key = key_of(&object);
        let mut state = self.shared.lock();
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let objects = state.objects.entry(kind.clone()).or_default();
        let event_type = if objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.insert(key.clone(), object.clone());
        state.history.push(Change {
            rv,
            kind,
            event_type,
            key,
            object,
        });
        drop(state);
        self.shared.changed.notify_all();
        rv
    }

    /// Deletes an object; panics when absent (a test bug).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let key = (namespace.to_string(), name.to_string());
        let mut state = self.shared.lock();
        let mut object = state
            .objects
            .get_mut(kind)
            .and_then(|m| m.remove(&key))
            .unwrap_or_else(|| panic!("delete {kind} {namespace}/{name}: absent"));
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.history.push(Change {
            rv,
            kind: kind.to_string(),
            event_type: "DELETED",
            key,
            object,
        });
        drop(state);
        self.shared.changed.notify_all();
        rv
    }

    /// Holds every list of `kind` until [`release_lists`](Self::release_lists).
    pub fn hold_lists(&self, kind: &str) {
        self.shared.lock().held_lists.insert(kind.to_string());
    }

    pub fn release_lists(&self, kind: &str) {
        self.shared.lock().held_lists.remove(kind);
        self.shared.changed.notify_all();
    }

    /// Delays every answer (list, watch start) by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Open watches stop delivering events (they still exist) until unpaused.
    pub fn pause_watches(&self, paused: bool) {
        self.shared.lock().paused = paused;
        self.shared.changed.notify_all();
    }

    /// Compacts history up to now: every open watch gets an ERROR 410 event and ends, and
    /// any older resourceVersion or continue token is refused with 410 from now on.
    pub fn expire(&self) {
        let mut state = self.shared.lock();
        state.compacted_rv = state.rv;
        state.expire_epoch += 1;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The next list that needs a second page gets its continue token expired (410 on the
    /// follow-up request), as when the API server compacts mid-pagination.
    pub fn expire_next_continue(&self) {
        self.shared.lock().expire_next_continue = true;
    }

    /// Compacts history without telling open watches (they only notice on reconnect).
    pub fn compact(&self) {
        let mut state = self.shared.lock();
        state.compacted_rv = state.rv;
    }

    /// Cuts every open watch connection mid-stream (no terminating chunk).
    pub fn drop_watches(&self) {
        self.shared.lock().drop_epoch += 1;
        self.shared.changed.notify_all();
    }

    /// Every PATCH is answered with `code` (and a Status body) and changes nothing, until
    /// called with `None`.
    pub fn fail_patches(&self, code: Option<u16>) {
        self.shared.lock().patch_fault = code;
    }

    /// The current object of `kind` named `namespace/name`, as served.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_string(), name.to_string());
        self.shared.lock().objects.get(kind)?.get(&key).cloned()
    }

    pub fn counters(&self) -> Counters {
        self.shared.lock().counters.clone()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Blocks until `done(counters)` holds, or panics at the deadline.
    pub fn wait_counters(&self, what: &str, timeout: Duration, done: impl Fn(&Counters) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !done(&state.counters) {
            let now = Instant::now();
            if now >= deadline {
                let counters = state.counters.clone();
                drop(state);
                panic!("timed out waiting for {what}: {counters:?}");
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The current objects of `kind` as (key, resourceVersion).
    pub fn current(&self, kind: &str) -> BTreeMap<Key, u64> {
        let state = self.shared.lock();
        state
            .objects
            .get(kind)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), rv_of(v))).collect())
            .unwrap_or_default()
    }

    /// Did `kind` ever hold exactly `seen` (keys with their resourceVersions)?
    pub fn kind_state_existed(&self, kind: &str, seen: &BTreeMap<Key, u64>) -> bool {
        let state = self.shared.lock();
        let mut replay: BTreeMap<Key, u64> = BTreeMap::new();
        if replay == *seen {
            return true;
        }
        for change in state.history.iter().filter(|c| c.kind == kind) {
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
}

impl Drop for ApiServerDouble {
    fn drop(&mut self) {
        self.shared.lock().shutting_down = true;
        self.shared.changed.notify_all();
        // Wake the accept loop, then cut every connection so their threads end. The
        // listener may live in another network namespace than this thread (a test serving
        // an agent in a node namespace): when the wake-up cannot reach it, the accept
        // thread is left to end with the process rather than joined forever.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        for conn in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(accept) = self.accept.take()
            && woke
        {
            let _ = accept.join();
        }
    }
}

fn kind_of_path_for(kind: &str) -> bool {
    KINDS.iter().any(|(k, _, _)| *k == kind)
}

fn key_of(object: &Value) -> Key {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("").to_string(),
        meta["name"]
            .as_str()
            .expect("object has a name")
            .to_string(),
    )
}

fn rv_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// Serves requests on one keep-alive connection until it closes or is cut.
fn serve_connection(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Headers: GETs carry no body, so they only need skipping; a PATCH needs its
        // Content-Type and Content-Length.
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" || header == "\n" => break,
                Ok(_) => headers.push(header),
            }
        }
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query: HashMap<String, String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), percent_decode(v))
            })
            .collect();
        let delay = shared.lock().delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let keep_open = match (method, kind_of_path(path)) {
            ("GET", Some(kind)) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                serve_watch(shared, &mut stream, kind, &query)
            }
            ("GET", Some(kind)) => serve_list(shared, &mut stream, kind, &query),
            ("PATCH", None) if node_name_of_path(path).is_some() => {
                let name = node_name_of_path(path).unwrap_or_default();
                serve_node_patch(shared, &mut stream, &mut reader, name, &headers, &query)
            }
            _ => write_json(
                &mut stream,
                404,
                &status(404, "NotFound", &format!("{method} {path}: not served")),
            ),
        };
        if !keep_open {
            return;
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        411 => "Length Required",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        410 => "Gone",
        _ => "Error",
    }
}

/// Writes a complete JSON answer; returns whether the connection is still usable.
fn write_json(stream: &mut TcpStream, code: u16, body: &Value) -> bool {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body.as_bytes()).is_ok()
}

fn serve_list(
    shared: &Shared,
    stream: &mut TcpStream,
    kind: &str,
    query: &HashMap<String, String>,
) -> bool {
    let mut state = shared.lock();
    *state.counters.lists.entry(kind.to_string()).or_default() += 1;
    shared.changed.notify_all();
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.held_lists.contains(kind) && !state.shutting_down && Instant::now() < deadline {
        state = shared
            .changed
            .wait_timeout(state, Duration::from_millis(200))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (list_rv, items) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match state.continues.remove(token) {
            Some((rv, rest)) if rv >= state.compacted_rv => (rv, rest),
            _ => {
                state.counters.continues_gone += 1;
                drop(state);
                return write_json(
                    stream,
                    410,
                    &status(410, "Expired", "the provided continue parameter is too old"),
                );
            }
        },
        None => (
            state.rv,
            state
                .objects
                .get(kind)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
        ),
    };
    let mut items: Vec<Value> = items;
    let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
    if items.len() > limit {
        let rest = items.split_off(limit);
        state.next_continue += 1;
        let token = format!("c{}", state.next_continue);
        if std::mem::take(&mut state.expire_next_continue) {
            // Never stored: the follow-up page finds it gone.
        } else {
            state.continues.insert(token.clone(), (list_rv, rest));
        }
        state.counters.pages_continued += 1;
        metadata["continue"] = json!(token);
    }
    drop(state);
    let body = json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version_of(kind),
        "metadata": metadata,
        "items": items,
    });
    write_json(stream, 200, &body)
}

/// Counts a watch stream as open for as long as it lives, whichever way it ends.
struct OpenWatch<'a>(&'a Shared);

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.lock().counters.open_watches -= 1;
        self.0.changed.notify_all();
    }
}

fn write_chunk(stream: &mut TcpStream, line: &Value) -> bool {
    let mut data = line.to_string();
    data.push('\n');
    let chunk = format!("{:x}\r\n{data}\r\n", data.len());
    stream.write_all(chunk.as_bytes()).is_ok() && stream.flush().is_ok()
}

/// Streams changes of `kind` after the requested resourceVersion. Returns whether the
/// connection may serve another request (false when it was cut).
fn serve_watch(
    shared: &Shared,
    stream: &mut TcpStream,
    kind: &str,
    query: &HashMap<String, String>,
) -> bool {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let ends_at = Instant::now() + timeout;
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut state = shared.lock();
    *state.counters.watches.entry(kind.to_string()).or_default() += 1;
    state.counters.open_watches += 1;
    shared.changed.notify_all();
    let _open = OpenWatch(shared);
    let expire_epoch = state.expire_epoch;
    let drop_epoch = state.drop_epoch;
    let mut cursor = from;
    if from == 0 {
        // resourceVersion unset or "0" means "start anywhere": the current objects as
        // ADDED, then changes from now (kube's list-then-watch never asks for this).
        let current: Vec<Value> = state
            .objects
            .get(kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        cursor = state.rv;
        drop(state);
        for object in current {
            if !write_chunk(stream, &json!({ "type": "ADDED", "object": object })) {
                return false;
            }
        }
        state = shared.lock();
    }
    let mut last_sent = Instant::now();
    loop {
        if state.shutting_down || state.drop_epoch != drop_epoch {
            state.counters.watches_dropped += 1;
            drop(state);
            let _ = stream.shutdown(Shutdown::Both);
            return false;
        }
        if cursor < state.compacted_rv || state.expire_epoch != expire_epoch {
            state.counters.gone_sent += 1;
            let message = format!(
                "too old resource version: {cursor} ({})",
                state.compacted_rv
            );
            drop(state);
            let event = json!({ "type": "ERROR", "object": status(410, "Expired", &message) });
            // The real server ends the stream after the error.
            return write_chunk(stream, &event) && stream.write_all(b"0\r\n\r\n").is_ok();
        }
        if Instant::now() >= ends_at {
            drop(state);
            return stream.write_all(b"0\r\n\r\n").is_ok();
        }
        let pending: Vec<Change> = if state.paused {
            Vec::new()
        } else {
            state
                .history
                .iter()
                .filter(|c| c.rv > cursor && c.kind == kind)
                .cloned()
                .collect()
        };
        if !pending.is_empty() {
            drop(state);
            for change in &pending {
                let event = json!({ "type": change.event_type, "object": change.object });
                if !write_chunk(stream, &event) {
                    return false;
                }
                cursor = change.rv;
            }
            last_sent = Instant::now();
            state = shared.lock();
            continue;
        }
        if !state.paused && last_sent.elapsed() >= BOOKMARK_EVERY {
            // Idle: tell the client how far it is caught up, as allowWatchBookmarks asks.
            cursor = cursor.max(state.rv);
            state.counters.bookmarks_sent += 1;
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": kind, "apiVersion": api_version_of(kind),
                    "metadata": { "resourceVersion": cursor.to_string() },
                },
            });
            drop(state);
            if !write_chunk(stream, &bookmark) {
                return false;
            }
            last_sent = Instant::now();
            state = shared.lock();
            continue;
        }
        state = shared
            .changed
            .wait_timeout(state, BOOKMARK_EVERY)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// The name in `/api/v1/nodes/NAME` (one path segment, not empty).
fn node_name_of_path(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/api/v1/nodes/")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";

/// The value of header `name` (case-insensitive), trimmed.
fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (key, value) = h.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// `PATCH /api/v1/nodes/NAME` with a JSON merge patch (RFC 7386), or a strategic merge
/// patch limited to what it shares with one (objects and scalars: no lists, no `$`
/// directives), as kube-rs sends `Patch::Merge` / `Patch::Strategic`: Content-Type names
/// the patch type, `fieldManager` may be in the query. 200 with the object after the patch
/// (a new resourceVersion and a MODIFIED event only when something changed, as the real
/// server does); 404 for an unknown Node; 415 for any other patch type; 409 when the patch
/// carries a `metadata.resourceVersion` that is not the current one. Returns whether the
/// connection is still usable.
fn serve_node_patch(
    shared: &Shared,
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    name: &str,
    headers: &[String],
    query: &HashMap<String, String>,
) -> bool {
    let content_type = header(headers, "content-type").unwrap_or("").to_string();
    let Some(length) = header(headers, "content-length").and_then(|l| l.parse::<usize>().ok())
    else {
        // Without a length the body cannot be told from the next request: close.
        let _ = write_json(
            stream,
            411,
            &status(411, "LengthRequired", "PATCH needs a Content-Length"),
        );
        return false;
    };
    let mut raw = vec![0u8; length];
    if std::io::Read::read_exact(reader, &mut raw).is_err() {
        return false;
    }
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let mut state = shared.lock();
    let (code, answer) = patch_node(&mut state, name, &content_type, query, body.as_ref());
    state.counters.patches.push(PatchRecord {
        name: name.to_string(),
        content_type,
        field_manager: query.get("fieldManager").cloned(),
        body: body.unwrap_or(Value::Null),
        code,
    });
    drop(state);
    shared.changed.notify_all();
    write_json(stream, code, &answer)
}

/// Applies one PATCH to the state: (status code, answer body).
fn patch_node(
    state: &mut State,
    name: &str,
    content_type: &str,
    query: &HashMap<String, String>,
    body: Option<&Value>,
) -> (u16, Value) {
    let fail = |code: u16, reason: &str, message: String| (code, status(code, reason, &message));
    if let Some(code) = state.patch_fault {
        return fail(code, "InternalError", format!("injected fault {code}"));
    }
    // The query parameters kube-rs' PatchParams can set; the double only implements
    // fieldManager (recorded) and refuses the rest rather than ignoring them silently.
    if let Some(other) = query.keys().find(|k| k.as_str() != "fieldManager") {
        return fail(
            400,
            "BadRequest",
            format!("query parameter {other:?} is not supported by the double"),
        );
    }
    // Parameters such as `; charset=utf-8` do not change the patch type.
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != MERGE_PATCH && media != STRATEGIC_MERGE_PATCH {
        return fail(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH} (got {content_type:?})"
            ),
        );
    }
    let Some(patch) = body.filter(|b| b.is_object()) else {
        return fail(400, "BadRequest", "the patch is not a JSON object".into());
    };
    if media == STRATEGIC_MERGE_PATCH && !strategic_is_plain_merge(patch) {
        return fail(
            400,
            "BadRequest",
            "the double applies strategic merge patches without lists or $ directives only".into(),
        );
    }
    let key = (String::new(), name.to_string());
    let Some(current) = state.objects.get("Node").and_then(|m| m.get(&key)).cloned() else {
        return fail(404, "NotFound", format!("nodes \"{name}\" not found"));
    };
    let current_rv = current["metadata"]["resourceVersion"].clone();
    let wanted_rv = &patch["metadata"]["resourceVersion"];
    if !wanted_rv.is_null() && *wanted_rv != current_rv {
        return fail(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on nodes \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    let mut patched = current.clone();
    merge_patch(&mut patched, patch);
    // What the server owns cannot be patched away.
    patched["kind"] = current["kind"].clone();
    patched["apiVersion"] = current["apiVersion"].clone();
    patched["metadata"]["name"] = current["metadata"]["name"].clone();
    patched["metadata"]["resourceVersion"] = current_rv;
    if patched == current {
        return (200, current);
    }
    state.rv += 1;
    let rv = state.rv;
    patched["metadata"]["resourceVersion"] = json!(rv.to_string());
    state
        .objects
        .entry("Node".to_string())
        .or_default()
        .insert(key.clone(), patched.clone());
    state.history.push(Change {
        rv,
        kind: "Node".to_string(),
        event_type: "MODIFIED",
        key,
        object: patched.clone(),
    });
    (200, patched)
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key, anything
/// else (arrays included) replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A strategic merge patch means the same as a merge patch when it has no lists (those
/// merge by key) and no `$patch`/`$retainKeys`/... directives.
fn strategic_is_plain_merge(patch: &Value) -> bool {
    match patch {
        Value::Array(_) => false,
        Value::Object(map) => map
            .iter()
            .all(|(k, v)| !k.starts_with('$') && strategic_is_plain_merge(v)),
        _ => true,
    }
}

#[cfg(test)]
mod patch_tests {
    use super::*;
    use std::io::Read;

    /// One raw HTTP/1.1 PATCH; (status code, JSON body).
    fn patch(api: &ApiServerDouble, target: &str, content_type: &str, body: &str) -> (u16, Value) {
        let mut stream = TcpStream::connect(api.addr).unwrap();
        let request = format!(
            "PATCH {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let code = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(l) = line.strip_prefix("Content-Length:") {
                length = l.trim().parse().unwrap();
            }
        }
        let mut raw = vec![0; length];
        reader.read_exact(&mut raw).unwrap();
        answer.push_str(std::str::from_utf8(&raw).unwrap());
        (code, serde_json::from_str(&answer).unwrap())
    }

    fn node(name: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"podCIDR": "10.244.1.0/24"},
        })
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386 section 3 that matter here.
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        let mut target = json!({"a": [1, 2]});
        merge_patch(&mut target, &json!({"a": [3]}));
        assert_eq!(target, json!({"a": [3]}));
        let mut target = json!({"a": "foo"});
        merge_patch(&mut target, &json!({"b": {"c": null}}));
        assert_eq!(target, json!({"a": "foo", "b": {}}));
        let mut target = json!("scalar");
        merge_patch(&mut target, &json!({"a": {"b": "c"}}));
        assert_eq!(target, json!({"a": {"b": "c"}}));
    }

    #[test]
    fn patching_a_node_merges_bumps_the_version_and_counts() {
        let api = ApiServerDouble::start();
        let before = api.apply(&node("n1", json!({"keep": "1", "drop": "2"})));
        let body = r#"{"metadata":{"annotations":{"drop":null,"new":"3"}}}"#;
        let (code, answer) = patch(
            &api,
            "/api/v1/nodes/n1?&fieldManager=kxdp-agent",
            MERGE_PATCH,
            body,
        );
        assert_eq!(code, 200, "{answer}");
        assert_eq!(
            answer["metadata"]["annotations"],
            json!({"keep": "1", "new": "3"})
        );
        let after = rv_of(&answer);
        assert!(after > before);
        assert_eq!(api.current("Node")[&(String::new(), "n1".into())], after);
        assert_eq!(api.object("Node", "", "n1").unwrap(), answer);
        // The watch sees a MODIFIED event for it.
        let state = api.shared.lock();
        let last = state.history.last().unwrap();
        assert_eq!((last.event_type, last.rv), ("MODIFIED", after));
        drop(state);

        // The same patch again changes nothing: no new version, still counted.
        let (code, again) = patch(&api, "/api/v1/nodes/n1", STRATEGIC_MERGE_PATCH, body);
        assert_eq!((code, rv_of(&again)), (200, after));
        let counters = api.counters();
        assert_eq!((counters.patches_ok(), counters.patches_failed()), (2, 0));
        assert_eq!(
            counters.patches[0].field_manager.as_deref(),
            Some("kxdp-agent")
        );
        assert_eq!(counters.patches[1].field_manager, None);
        assert_eq!(
            counters.patches[0].body,
            serde_json::from_str::<Value>(body).unwrap()
        );
    }

    #[test]
    fn patch_errors_are_statuses() {
        let api = ApiServerDouble::start();
        let rv = api.apply(&node("n1", json!({})));
        let body = r#"{"metadata":{"annotations":{"a":"b"}}}"#;
        let (code, answer) = patch(
            &api,
            "/api/v1/nodes/n1",
            "application/json-patch+json",
            body,
        );
        assert_eq!((code, answer["kind"].as_str()), (415, Some("Status")));
        assert_eq!(answer["code"], 415);
        let (code, answer) = patch(&api, "/api/v1/nodes/nope", MERGE_PATCH, body);
        assert_eq!((code, answer["reason"].as_str()), (404, Some("NotFound")));
        let (code, _) = patch(
            &api,
            "/api/v1/nodes/n1",
            STRATEGIC_MERGE_PATCH,
            r#"{"spec":{"taints":[]}}"#,
        );
        assert_eq!(code, 400, "strategic list merges are not implemented");
        let stale = r#"{"metadata":{"resourceVersion":"1","annotations":{"a":"b"}}}"#;
        assert_eq!(patch(&api, "/api/v1/nodes/n1", MERGE_PATCH, stale).0, 409);
        api.fail_patches(Some(500));
        let (code, answer) = patch(&api, "/api/v1/nodes/n1", MERGE_PATCH, body);
        assert_eq!((code, answer["code"].as_u64()), (500, Some(500)));
        assert_eq!(
            api.resource_version(),
            rv,
            "no failed patch changed anything"
        );
        api.fail_patches(None);
        assert_eq!(patch(&api, "/api/v1/nodes/n1", MERGE_PATCH, body).0, 200);
        let counters = api.counters();
        assert_eq!((counters.patches_ok(), counters.patches_failed()), (1, 5));
        assert_eq!(
            counters.patches.iter().map(|p| p.code).collect::<Vec<_>>(),
            [415, 404, 400, 409, 500, 200]
        );
    }
}
