//! `PATCH /api/v1/nodes/NAME`: the one write clients make (the agent's Node annotations).
//!
//! A JSON merge patch (RFC 7386), or a strategic merge patch limited to what it shares with
//! one (objects and scalars: no lists, no `$` directives), as kube-rs sends `Patch::Merge` /
//! `Patch::Strategic`: Content-Type names the patch type, `fieldManager` may be in the
//! query. 200 with the object after the patch (a new resourceVersion and a MODIFIED event
//! only when something changed, as the real server does); 404 for an unknown Node; 415 for
//! any other patch type; 409 when the patch carries a `metadata.resourceVersion` that is
//! not the current one; 411 without a Content-Length and 413 for a body over
//! [`MAX_BODY`] bytes. Every request is recorded in the counters with its answer.

use std::io::BufReader;
use std::net::TcpStream;

use serde_json::{Value, json};

use super::http::{self, Request, status, write_json};
use super::store::{PatchRecord, Shared, State};

const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
/// Largest patch body accepted: annotations are a few hundred bytes; a length beyond this
/// is a broken client, not a reason to allocate it.
pub const MAX_BODY: usize = 1 << 20;

/// The name in `/api/v1/nodes/NAME` (one path segment, not empty).
pub(super) fn node_name_of_path(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/api/v1/nodes/")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Reads the body of a PATCH of Node `name`, applies it and answers. Returns whether the
/// connection is still usable.
pub(super) fn serve(
    shared: &Shared,
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    name: &str,
    request: &Request,
) -> bool {
    let content_type = request.header("content-type").unwrap_or("").to_string();
    let length = request
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    let refusal = match length {
        // Without a length the body cannot be told from the next request: close.
        None => Some((
            411,
            "LengthRequired",
            "PATCH needs a Content-Length".to_string(),
        )),
        Some(n) if n > MAX_BODY => Some((
            413,
            "RequestEntityTooLarge",
            format!("a patch of {n} bytes: the double takes at most {MAX_BODY}"),
        )),
        Some(_) => None,
    };
    if let Some((code, reason, message)) = refusal {
        if write_json(stream, code, &status(code, reason, &message)) {
            http::linger(stream, reader);
        }
        return false;
    }
    let mut raw = vec![0u8; length.unwrap_or(0)];
    if std::io::Read::read_exact(reader, &mut raw).is_err() {
        return false;
    }
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let mut state = shared.lock();
    let (code, answer) = patch_node(
        &mut state,
        name,
        &content_type,
        &request.query,
        body.as_ref(),
    );
    state.counters.patches.push(PatchRecord {
        name: name.to_string(),
        content_type,
        field_manager: request.query.get("fieldManager").cloned(),
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
    query: &std::collections::HashMap<String, String>,
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
    let Some(current) = state.object("Node", &key).cloned() else {
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
    // The kind and name were restored above, so the store takes it; an error here would be
    // the double's own bug, answered as the real server answers one.
    if let Err(e) = state.apply(patched) {
        return fail(500, "InternalError", e.to_string());
    }
    match state.object("Node", &key) {
        Some(stored) => (200, stored.clone()),
        None => fail(500, "InternalError", format!("Node {name} vanished")),
    }
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
mod tests {
    use super::*;
    use crate::apiserver_double::ApiServerDouble;
    use crate::apiserver_double::store::rv_of;
    use std::io::{BufRead, Read, Write};
    use std::net::Shutdown;

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
        let api = ApiServerDouble::start().unwrap();
        let before = api
            .apply(&node("n1", json!({"keep": "1", "drop": "2"})))
            .unwrap();
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
        let api = ApiServerDouble::start().unwrap();
        let rv = api.apply(&node("n1", json!({}))).unwrap();
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

    #[test]
    fn a_body_too_large_or_without_length_is_refused_before_reading_it() {
        let api = ApiServerDouble::start().unwrap();
        let mut stream = TcpStream::connect(api.addr).unwrap();
        let request = format!(
            "PATCH /api/v1/nodes/n1 HTTP/1.1\r\nContent-Type: {MERGE_PATCH}\r\n\
             Content-Length: {}\r\n\r\n{{}}",
            MAX_BODY + 1
        );
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        let mut stream = TcpStream::connect(api.addr).unwrap();
        stream
            .write_all(b"PATCH /api/v1/nodes/n1 HTTP/1.1\r\n\r\n{}")
            .unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 411 "), "{answer}");
        assert!(
            api.counters().patches.is_empty(),
            "neither reached the store"
        );
    }
}
