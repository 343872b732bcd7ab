//! What the double refuses from the process that runs it (the HTTP side answers its clients
//! with Statuses instead, see `http`).

use std::time::Duration;

use super::store::{Counters, KINDS};

/// Why [`ApiServerDouble`](super::ApiServerDouble) refused a call. A test that hands it an
/// object it cannot serve gets this back, naming the object, rather than a panic on a
/// server thread that would leave its clients waiting.
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    #[error("the object does not serialise to JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("an object without a kind (a string at .kind)")]
    NoKind,
    #[error("kind {0:?} is not served (the double serves {served})", served = served_kinds())]
    KindNotServed(String),
    #[error("a {0} without a name (a string at .metadata.name)")]
    NoName(String),
    #[error("delete {kind} {namespace}/{name}: absent")]
    Absent {
        kind: String,
        namespace: String,
        name: String,
    },
    /// [`wait_counters`](super::ApiServerDouble::wait_counters) ran out of time; the
    /// counters are as they were then.
    #[error("timed out after {timeout:?} waiting for {what}: {counters:?}")]
    Timeout {
        what: String,
        timeout: Duration,
        counters: Box<Counters>,
    },
}

fn served_kinds() -> String {
    KINDS
        .iter()
        .map(|(kind, _, _)| *kind)
        .collect::<Vec<_>>()
        .join(", ")
}
