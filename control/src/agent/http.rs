//! The agent's HTTP endpoints, as kube-proxy serves them: `/metrics` on the metrics
//! address (127.0.0.1:10249), `/healthz` and `/readyz` on the healthz address
//! (0.0.0.0:10256) and on the metrics address too.
//!
//! A deliberately small HTTP/1.1 server: one thread per listener answers one connection at
//! a time (scrapes and probes are rare), GET only, a request head of at most
//! [`MAX_REQUEST`] bytes read within [`IO_TIMEOUT`], `Connection: close`. Anything the
//! agent knows is asked of the control thread through its event channel, with a deadline,
//! so a stuck control thread shows as 503, never as a hung probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam::channel::{Sender, bounded};

use super::metrics::{self, Snapshot};
use super::{AgentError, Event};

/// Largest request head accepted; longer ones get 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the control thread has to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the control thread says about its health.
#[derive(Debug, Clone)]
pub struct Health {
    /// When the running tables were published.
    pub last_updated: SystemTime,
    /// Why the agent is unhealthy (`None`: healthy).
    pub problem: Option<String>,
}

/// Whether the agent is ready (`/readyz` 200) and, until it is, what it waits for (the
/// 503's body): set by the control thread, read by the listeners without asking it.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    waiting_for: Mutex<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            ready: AtomicBool::new(false),
            waiting_for: Mutex::new("starting".to_string()),
        }
    }
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// What the agent waits for before it can be ready (one line).
    pub fn waiting_for(&self, what: &str) {
        match self.waiting_for.lock() {
            Ok(mut w) => what.clone_into(&mut w),
            Err(poisoned) => what.clone_into(&mut poisoned.into_inner()),
        }
    }

    fn reason(&self) -> String {
        match self.waiting_for.lock() {
            Ok(w) => w.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// What one listener serves.
#[derive(Debug, Clone)]
struct Routes {
    metrics: bool,
    events: Sender<Event>,
    ready: Arc<Readiness>,
}

/// Binds `addr` now (so a taken port fails the agent's start) and serves it on a thread
/// for the rest of the process's life.
pub fn start(
    addr: SocketAddr,
    serve_metrics: bool,
    events: Sender<Event>,
    ready: Arc<Readiness>,
) -> Result<SocketAddr, AgentError> {
    let what = if serve_metrics { "metrics" } else { "healthz" };
    let bind_err = |source| AgentError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    let routes = Routes {
        metrics: serve_metrics,
        events,
        ready,
    };
    std::thread::Builder::new()
        .name(format!("kxdp-{what}"))
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve_connection(stream, &routes) {
                            tracing::debug!("{what} connection: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("{what} accept: {e}"),
                }
            }
        })
        .map_err(|source| AgentError::Thread {
            thread: what,
            source,
        })?;
    Ok(bound)
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

fn serve_connection(mut stream: TcpStream, routes: &Routes) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let reply = match read_head(&mut stream)? {
        Head::Complete(head) => route(&head, routes),
        Head::TooLarge => Reply::text(431, "request header fields too large\n"),
        Head::Closed => return Ok(()),
    };
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let allow = if reply.status == 405 {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(reply.body.as_bytes())?;
    stream.flush()
}

enum Head {
    Complete(String),
    TooLarge,
    /// The client went away before sending a whole head.
    Closed,
}

/// Reads up to the blank line ending the request head, within [`IO_TIMEOUT`] in total.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > MAX_REQUEST {
                return Ok(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(Head::Complete(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Closed);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::Closed);
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn route(head: &str, routes: &Routes) -> Reply {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Reply::text(400, "bad request line\n");
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return Reply::text(400, "bad request line\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    let known = matches!(path, "/healthz" | "/readyz") || (routes.metrics && path == "/metrics");
    if !known {
        return Reply::text(404, "not found\n");
    }
    if method != "GET" {
        return Reply::text(405, "method not allowed\n");
    }
    match path {
        "/readyz" => {
            if routes.ready.is_ready() {
                Reply::text(200, "ok\n")
            } else {
                Reply::text(503, format!("not ready: {}\n", routes.ready.reason()))
            }
        }
        "/healthz" => healthz(routes),
        _ => metrics_reply(routes),
    }
}

/// Asks the control thread; `None` when it does not answer in time.
fn ask<T>(events: &Sender<Event>, make: impl FnOnce(Sender<T>) -> Event) -> Option<T> {
    let (tx, rx) = bounded(1);
    events.send(make(tx)).ok()?;
    rx.recv_timeout(CONTROL_TIMEOUT).ok()
}

/// 200 with `{"lastUpdated": ..., "currentTime": ...}` like kube-proxy's, or 503 with the
/// same body and the reason.
fn healthz(routes: &Routes) -> Reply {
    let now = SystemTime::now();
    let (last_updated, problem) = match ask(&routes.events, Event::Health) {
        Some(h) => (Some(h.last_updated), h.problem),
        None => (
            None,
            Some("the control thread did not answer within 2 s".to_string()),
        ),
    };
    let mut body = serde_json::json!({
        "lastUpdated": last_updated.map(metrics::rfc3339).unwrap_or_default(),
        "currentTime": metrics::rfc3339(now),
    });
    let status = match problem {
        None => 200,
        Some(p) => {
            body["problem"] = serde_json::Value::String(p);
            503
        }
    };
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

fn metrics_reply(routes: &Routes) -> Reply {
    let Some(snapshot): Option<Snapshot> = ask(&routes.events, Event::Metrics) else {
        return Reply::text(503, "the control thread did not answer within 2 s\n");
    };
    match metrics::render(&snapshot) {
        Ok(body) => Reply {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body,
        },
        Err(e) => Reply::text(500, format!("encoding the metrics: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::channel::unbounded;

    fn routes(metrics: bool, ready: bool) -> (Routes, crossbeam::channel::Receiver<Event>) {
        let (events, rx) = unbounded();
        let routes = Routes {
            metrics,
            events,
            ready: Arc::new({
                let r = Readiness::default();
                r.set_ready(ready);
                r
            }),
        };
        (routes, rx)
    }

    #[test]
    fn routes_by_method_and_path() {
        let (r, _rx) = routes(true, false);
        assert_eq!(route("GET /readyz HTTP/1.1", &r).status, 503);
        r.ready
            .waiting_for("the uplink: no interface holds 192.0.2.1");
        let waiting = route("GET /readyz HTTP/1.1", &r);
        assert_eq!(
            (waiting.status, waiting.body.as_str()),
            (503, "not ready: the uplink: no interface holds 192.0.2.1\n")
        );
        r.ready.set_ready(true);
        assert_eq!(route("GET /readyz?verbose HTTP/1.1", &r).status, 200);
        assert_eq!(route("GET /nope HTTP/1.1", &r).status, 404);
        assert_eq!(route("DELETE /metrics HTTP/1.1", &r).status, 405);
        assert_eq!(route("GET /metrics", &r).status, 400);
        assert_eq!(route("GET /metrics SPDY/3", &r).status, 400);
        assert_eq!(route("", &r).status, 400);
        let (h, _rx) = routes(false, true);
        assert_eq!(route("GET /metrics HTTP/1.1", &h).status, 404);
    }

    #[test]
    fn an_absent_control_thread_is_unhealthy_not_a_hang() {
        let (r, rx) = routes(true, true);
        drop(rx);
        let reply = route("GET /healthz HTTP/1.1", &r);
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("problem"), "{}", reply.body);
        assert_eq!(route("GET /metrics HTTP/1.1", &r).status, 503);
    }

    #[test]
    fn oversized_requests_get_431() {
        let (r, _rx) = routes(true, true);
        let addr = start("127.0.0.1:0".parse().unwrap(), true, r.events, r.ready).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let big = format!(
            "GET /readyz HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        client.write_all(big.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }
}
