//! The double's HTTP/1.1: one thread per connection, keep-alive, one request at a time.
//! `GET` of a collection is a list or (with `watch=true`) a watch, `PATCH` of a Node goes
//! to `patch`; anything else is answered with a Status, as the real server answers, and a
//! request that cannot be read gets a 400 before the connection closes. Nothing a client
//! sends may take the double down.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use super::store::{ListPage, Shared, api_version_of, kind_of_path};
use super::{patch, watch};

/// Longest request line or header line read; a longer one is refused with 400 (a client
/// cannot make the double buffer without bound).
const MAX_LINE: usize = 16 * 1024;
/// Most header lines read.
const MAX_HEADERS: usize = 100;
/// How long a held list waits at most before it is served anyway.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// One request's head. The body (PATCH only) is still in the reader.
#[derive(Debug)]
pub(super) struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    headers: Vec<String>,
}

impl Request {
    /// The value of header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (key, value) = h.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Why no request could be read from a connection.
#[derive(Debug)]
enum ReadError {
    /// The connection ended (or broke) between requests or mid-head: nothing to answer.
    Closed,
    /// Something arrived that is not a request head: answered 400.
    Malformed(String),
}

/// Serves requests on one keep-alive connection until it closes or is cut.
pub(super) fn serve_connection(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    loop {
        let request = match read_request(&mut reader) {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Malformed(why)) => {
                if write_json(&mut stream, 400, &status(400, "BadRequest", &why)) {
                    linger(&mut stream, &mut reader);
                }
                return;
            }
        };
        let delay = shared.lock().delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if !route(shared, &mut stream, &mut reader, &request) {
            return;
        }
    }
}

/// Ends a connection after an error answer without losing that answer: closing a socket
/// with unread input makes the kernel send a reset, which can overtake the answer, so the
/// rest of what the client sent is read (for a little while) and dropped first.
pub(super) fn linger(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 4096];
    let mut left = 1 << 20;
    while left > 0 {
        match std::io::Read::read(reader, &mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => left -= n.min(left),
        }
    }
}

/// Answers one request; returns whether the connection may serve another.
fn route(
    shared: &Shared,
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &Request,
) -> bool {
    if !authorized(shared, request) {
        shared.lock().counters.unauthorized += 1;
        // Closed after the answer: a refused request's body is never read.
        if write_json(stream, 401, &status(401, "Unauthorized", "Unauthorized")) {
            linger(stream, reader);
        }
        return false;
    }
    let watching =
        |q: &HashMap<String, String>| q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let kind = kind_of_path(&request.path);
    if let Some(kind) = kind {
        let mut state = shared.lock();
        if state.unserved.contains(kind) {
            *state
                .counters
                .not_served
                .entry(kind.to_string())
                .or_default() += 1;
            drop(state);
            return not_served(stream, request);
        }
    }
    match (request.method.as_str(), kind) {
        ("GET", Some(kind)) if watching(&request.query) => {
            watch::serve(shared, stream, kind, &request.query)
        }
        ("GET", Some(kind)) => serve_list(shared, stream, kind, &request.query),
        ("PATCH", None) => match patch::node_name_of_path(&request.path) {
            Some(name) => patch::serve(shared, stream, reader, name, request),
            None => not_served(stream, request),
        },
        _ => not_served(stream, request),
    }
}

/// Whether the request carries the bearer token the double requires (any request does
/// when it requires none), as a service account's client sends it on every request.
fn authorized(shared: &Shared, request: &Request) -> bool {
    let Some(token) = shared.lock().token.clone() else {
        return true;
    };
    request
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == token)
}

fn not_served(stream: &mut TcpStream, request: &Request) -> bool {
    let message = format!("{} {}: not served", request.method, request.path);
    write_json(stream, 404, &status(404, "NotFound", &message))
}

/// Reads a request line and its headers.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request, ReadError> {
    let request_line = read_line(reader)?;
    // Headers: GETs carry no body, so they only need skipping; a PATCH needs its
    // Content-Type and Content-Length.
    let mut headers = Vec::new();
    loop {
        let header = read_line(reader)?;
        if header == "\r\n" || header == "\n" {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(ReadError::Malformed(format!(
                "more than {MAX_HEADERS} header lines"
            )));
        }
        headers.push(header);
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(ReadError::Malformed(format!(
            "{:?} is not a request line (METHOD TARGET HTTP/1.1)",
            request_line.trim_end()
        )));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query: parse_query(query),
        headers,
    })
}

/// One line, its end included; at most [`MAX_LINE`] bytes.
fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, ReadError> {
    let mut raw = Vec::new();
    match std::io::Read::take(&mut *reader, MAX_LINE as u64).read_until(b'\n', &mut raw) {
        Ok(0) | Err(_) => return Err(ReadError::Closed),
        Ok(_) => {}
    }
    if !raw.ends_with(b"\n") {
        return Err(if raw.len() >= MAX_LINE {
            ReadError::Malformed(format!("a line longer than {MAX_LINE} bytes"))
        } else {
            ReadError::Closed
        });
    }
    String::from_utf8(raw).map_err(|_| ReadError::Malformed("a line that is not UTF-8".into()))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
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

/// A `metav1.Status` failure, the body of every error answer (and of a watch's 410 event).
pub(super) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

/// Writes a complete JSON answer; returns whether the connection is still usable.
pub(super) fn write_json(stream: &mut TcpStream, code: u16, body: &Value) -> bool {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body.as_bytes()).is_ok()
}

/// `GET <collection>?limit=N[&continue=T]`: one page of a `<Kind>List`.
fn serve_list(
    shared: &Shared,
    stream: &mut TcpStream,
    kind: &str,
    query: &HashMap<String, String>,
) -> bool {
    let mut state = shared.lock();
    *state.counters.lists.entry(kind.to_string()).or_default() += 1;
    shared.changed.notify_all();
    let deadline = std::time::Instant::now() + HOLD_AT_MOST;
    while state.held_lists.contains(kind)
        && !state.shutting_down
        && std::time::Instant::now() < deadline
    {
        state = shared.wait(state, Duration::from_millis(200));
    }
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let token = query
        .get("continue")
        .map(String::as_str)
        .filter(|c| !c.is_empty());
    let page = state.list_page(kind, limit, token);
    drop(state);
    let ListPage::Page {
        rv,
        items,
        continue_token,
    } = page
    else {
        return write_json(
            stream,
            410,
            &status(410, "Expired", "the provided continue parameter is too old"),
        );
    };
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    let body = json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version_of(kind),
        "metadata": metadata,
        "items": items,
    });
    write_json(stream, 200, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver_double::ApiServerDouble;
    use std::io::Read;
    use std::net::Shutdown;

    /// Sends `raw` and returns everything the double answered before closing.
    fn exchange(api: &ApiServerDouble, raw: &[u8]) -> String {
        let mut stream = TcpStream::connect(api.addr).unwrap();
        stream.write_all(raw).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn a_required_token_is_checked_on_every_request() {
        let api = ApiServerDouble::start().unwrap();
        api.require_token("s3cret");
        let get = |auth: &str| {
            exchange(
                &api,
                format!("GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
            )
        };
        assert!(get("").starts_with("HTTP/1.1 401 "), "{}", get(""));
        assert!(get("Authorization: Bearer wrong\r\n").starts_with("HTTP/1.1 401 "));
        assert!(get("Authorization: Bearer s3cret\r\n").starts_with("HTTP/1.1 200 "));
        assert_eq!(api.counters().unauthorized, 2);
    }

    #[test]
    fn queries_are_percent_decoded() {
        let q = parse_query("a=x%2Fy&b=1+2&c&d=%zz");
        assert_eq!(q["a"], "x/y");
        assert_eq!(q["b"], "1 2");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "%zz");
    }

    #[test]
    fn bad_requests_get_a_status_and_the_double_lives_on() {
        let api = ApiServerDouble::start().unwrap();
        let answer = exchange(&api, b"garbage\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("is not a request line"), "{answer}");
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        assert!(exchange(&api, long.as_bytes()).starts_with("HTTP/1.1 400 "));
        assert!(exchange(&api, b"GET /\xff HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let answer = exchange(&api, b"DELETE /api/v1/pods HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        let answer = exchange(
            &api,
            b"GET /api/v1/pods HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.contains("\"kind\":\"PodList\""), "{answer}");
    }
}
