//! A test double of the Kubernetes API server's list/watch protocol, plain HTTP/1.1, for
//! running the unmodified kube-rs client against. It is NOT an API server: no TLS, no
//! authentication or authorisation, no admission, no validation beyond "has a kind and a
//! name", writes from clients only where a test needs one (objects come from the process
//! that runs it), seven kinds, everything in memory. It exists so that tests and
//! `kxdp-lab run --source api` can feed the agent through the real client code; never point
//! anything but a test or the lab at it.
//!
//! It never panics on what it is handed: [`ApiServerDouble::apply`] and
//! [`ApiServerDouble::delete`] return a [`DoubleError`] naming the object at fault, and a
//! client's bad request is answered with a Status (400, 404, 411, 413, ...), as the real
//! server answers it.
//!
//! Used in-process by the integration tests (`control/tests/offline/kube_source.rs`,
//! `control/tests/node/agent.rs`, `control/tests/node/churn/`) and by the hidden `kxdp-lab apiserver-double` command (`command.rs`), which
//! serves a manifest directory (`manifests.rs`) and follows its changes.
//!
//! What it speaks (as kube-rs 5's watcher uses it, read from kube-core's `params.rs` and
//! kube-runtime's `watcher.rs`):
//! - `GET <collection>?limit=N[&continue=T][&resourceVersion=..&resourceVersionMatch=..]`:
//!   a `<Kind>List` with `metadata.resourceVersion` (the global counter) and, when more than
//!   `limit` items remain, `metadata.continue`; an expired continue token answers HTTP 410
//!   (`http`).
//! - `GET <collection>?watch=true&resourceVersion=R&allowWatchBookmarks=true&timeoutSeconds=S`:
//!   a chunked stream of JSON lines `{"type":..,"object":..}` with every change after R, a
//!   BOOKMARK when idle, and an ERROR event carrying a 410 Status when R is compacted away
//!   (`watch`).
//! - `PATCH /api/v1/nodes/NAME` with a merge patch (`patch`).
//!
//! The objects, their history and the counters live in `store`. Faults the tests inject:
//! holding one kind's lists back, not serving a kind at all (404, as an API server without
//! that API answers), slowing every answer, expiring resource versions
//! (compaction: open watches get 410, old RVs are refused), dropping open watch
//! connections, pausing event delivery, failing patches.

mod command;
mod error;
mod http;
mod manifests;
mod patch;
mod store;
mod watch;

pub use command::{ApiServerDoubleArgs, CommandError, READY_PREFIX, main};
pub use error::DoubleError;
pub use manifests::{DirSync, DirSyncError, SyncReport};
pub use patch::merge_patch;
pub use store::{Counters, KINDS, Key, PatchRecord};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use store::Shared;

/// A running double; dropping it stops the server and cuts all connections.
#[derive(Debug)]
pub struct ApiServerDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ApiServerDouble {
    /// Starts on 127.0.0.1 on a free port (for tests).
    pub fn start() -> std::io::Result<ApiServerDouble> {
        ApiServerDouble::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts listening on `addr` (port 0: any free one; [`url`](Self::url) says which).
    pub fn start_on(addr: SocketAddr) -> std::io::Result<ApiServerDouble> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        shared.lock().rv = 1;
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("apiserver-double".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.lock().shutting_down {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = accept_shared.track(&stream);
                    let conn_shared = Arc::clone(&accept_shared);
                    // A connection whose thread cannot start is dropped (closed): its client
                    // sees a reset and retries, as against a busy server.
                    let started = std::thread::Builder::new()
                        .name("apiserver-double-conn".into())
                        .spawn(move || {
                            http::serve_connection(&conn_shared, stream);
                            if let Some(id) = id {
                                conn_shared.forget(id);
                            }
                        });
                    if let (Err(_), Some(id)) = (started, id) {
                        accept_shared.forget(id);
                    }
                }
            })?;
        Ok(ApiServerDouble {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// From now on, answer 401 to every request without `Authorization: Bearer <token>`,
    /// as the API server answers a client without valid credentials.
    pub fn require_token(&self, token: &str) {
        self.shared.lock().token = Some(token.to_string());
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

    /// Creates or replaces an object (any serialisable Kubernetes object with a served
    /// kind and a metadata.name); returns its new resourceVersion. Anything else is
    /// refused, and nothing changes.
    pub fn apply(&self, object: &impl serde::Serialize) -> Result<u64, DoubleError> {
        let object = serde_json::to_value(object).map_err(DoubleError::Json)?;
        let rv = self.shared.lock().apply(object)?;
        self.shared.changed.notify_all();
        Ok(rv)
    }

    /// Deletes an object; refused when it is not there.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<u64, DoubleError> {
        let key = (namespace.to_string(), name.to_string());
        let rv = self.shared.lock().delete(kind, key)?;
        self.shared.changed.notify_all();
        Ok(rv)
    }

    /// Holds every list of `kind` until [`release_lists`](Self::release_lists).
    pub fn hold_lists(&self, kind: &str) {
        self.shared.lock().held_lists.insert(kind.to_string());
    }

    pub fn release_lists(&self, kind: &str) {
        self.shared.lock().held_lists.remove(kind);
        self.shared.changed.notify_all();
    }

    /// From now on, answers every request for `kind` 404, as an API server that does not
    /// have its API (ServiceCIDR before Kubernetes 1.33). Objects of the kind may still be
    /// applied: they are served once [`serve`](Self::serve) is called (an upgrade). Open
    /// watches of the kind are left alone.
    pub fn stop_serving(&self, kind: &str) {
        self.shared.lock().unserved.insert(kind.to_string());
    }

    /// Serves `kind` again after [`stop_serving`](Self::stop_serving).
    pub fn serve(&self, kind: &str) {
        self.shared.lock().unserved.remove(kind);
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
        self.shared.lock().object(kind, &key).cloned()
    }

    pub fn counters(&self) -> Counters {
        self.shared.lock().counters.clone()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Blocks until `done(counters)` holds; at the deadline, the error carries the
    /// counters as they were.
    pub fn wait_counters(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Counters) -> bool,
    ) -> Result<(), DoubleError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !done(&state.counters) {
            let now = Instant::now();
            if now >= deadline {
                return Err(DoubleError::Timeout {
                    what: what.to_string(),
                    timeout,
                    counters: Box::new(state.counters.clone()),
                });
            }
            state = self.shared.wait(state, deadline - now);
        }
        Ok(())
    }

    /// The current objects of `kind` as (key, resourceVersion).
    pub fn current(&self, kind: &str) -> BTreeMap<Key, u64> {
        self.shared.lock().current(kind)
    }

    /// Did `kind` ever hold exactly `seen` (keys with their resourceVersions)?
    pub fn kind_state_existed(&self, kind: &str, seen: &BTreeMap<Key, u64>) -> bool {
        self.shared.lock().kind_state_existed(kind, seen)
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
        self.shared.cut_all();
        if let Some(accept) = self.accept.take()
            && woke
        {
            let _ = accept.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refused_calls_say_why_and_change_nothing() {
        let api = ApiServerDouble::start().unwrap();
        let e = api
            .apply(&json!({"kind": "Secret", "metadata": {"name": "s"}}))
            .unwrap_err();
        assert!(e.to_string().contains("\"Secret\" is not served"), "{e}");
        let e = api.delete("Pod", "demo", "nope").unwrap_err();
        assert_eq!(e.to_string(), "delete Pod demo/nope: absent");
        let e = api
            .wait_counters("a watch", Duration::from_millis(10), |c| c.open_watches > 0)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("timed out after 10ms waiting for a watch: "),
            "{e}"
        );
        assert_eq!(api.resource_version(), 1);
    }
}
