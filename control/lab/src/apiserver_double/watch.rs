//! `GET <collection>?watch=true&resourceVersion=R&allowWatchBookmarks=true&timeoutSeconds=S`:
//! a chunked stream of JSON lines `{"type":..,"object":..}` with every change of the kind
//! after R, a BOOKMARK when idle, and an ERROR event carrying a 410 Status when R is
//! compacted away (after which the stream ends, as the real server ends it). The faults
//! tests inject through the double (expire, drop, pause) are honoured here.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::status;
use super::store::{Shared, api_version_of};

/// How long a bookmark-less idle watch waits before sending a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_millis(300);
/// How long a watch lasts when the client does not say (`timeoutSeconds`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(290);

/// Counts a watch stream as open for as long as it lives, whichever way it ends.
struct OpenWatch<'a>(&'a Shared);

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.counters.open_watches = state.counters.open_watches.saturating_sub(1);
        drop(state);
        self.0.changed.notify_all();
    }
}

fn write_chunk(stream: &mut TcpStream, line: &Value) -> bool {
    let mut data = line.to_string();
    data.push('\n');
    let chunk = format!("{:x}\r\n{data}\r\n", data.len());
    stream.write_all(chunk.as_bytes()).is_ok() && stream.flush().is_ok()
}

/// The chunk that ends a chunked body.
fn write_end(stream: &mut TcpStream) -> bool {
    stream.write_all(b"0\r\n\r\n").is_ok()
}

/// Streams changes of `kind` after the requested resourceVersion. Returns whether the
/// connection may serve another request (false when it was cut).
pub(super) fn serve(
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
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
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
        let current = state.objects_of(kind);
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
            return write_chunk(stream, &event) && write_end(stream);
        }
        if Instant::now() >= ends_at {
            drop(state);
            return write_end(stream);
        }
        let pending = if state.paused {
            Vec::new()
        } else {
            state.changes_after(kind, cursor)
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
        state = shared.wait(state, BOOKMARK_EVERY);
    }
}
