//! The agent's HTTP endpoints, as kube-proxy serves them: `/metrics` on the metrics address
//! (127.0.0.1:10249 by default), `/healthz`, `/livez` and `/readyz` there and on the healthz
//! address (0.0.0.0:10256), and one health-check server per Service that asks for one
//! (`service_health`).
//!
//! hyper's HTTP/1 server on a small tokio runtime of its own: every connection is served
//! concurrently, so a client holding a connection open (or sending its request slowly)
//! delays nobody; a request head must arrive within [`HEADER_TIMEOUT`], fit in
//! [`MAX_REQUEST`] bytes, and a connection lives at most [`CONNECTION_LIFETIME`]; at most
//! [`MAX_CONNECTIONS`] are open per listener (more are closed at once). Probes are answered
//! from shared state without the control thread; only `/metrics` asks it, with a deadline.

mod go_time;
mod routes;
mod service_health;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::AgentError;

pub use go_time::mark_start;
pub use routes::{ProbeCounts, Readiness, Routes};
pub use service_health::ServiceHealthChecks;

/// Largest request head accepted (hyper's smallest buffer); longer ones get 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open (keep-alive included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Open connections per listener.
const MAX_CONNECTIONS: usize = 64;

/// What a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            // As kube-proxy sends with its JSON.
            headers: vec![("x-content-type-options", "nosniff".to_string())],
            body,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            // A value with bytes a header cannot carry is left out rather than failing the
            // whole answer.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

/// How a handler answers a request.
pub enum Answer {
    Now(Reply),
    /// Work that may block (asking the control thread): run off the runtime's thread.
    Blocking(Box<dyn FnOnce() -> Reply + Send>),
}

/// Answers requests on one listener.
pub trait Handler: Send + Sync + 'static {
    fn answer(&self, method: &hyper::Method, path: &str) -> Answer;
}

/// The runtime the listeners are served on.
#[derive(Debug)]
pub struct HttpServer {
    runtime: tokio::runtime::Runtime,
}

/// A listener being served; dropping it closes the socket (connections in flight finish).
#[derive(Debug)]
pub struct Listening {
    pub addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    pub fn start() -> Result<HttpServer, AgentError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("kxdp-http")
            .enable_all()
            .build()
            .map_err(|source| AgentError::Thread {
                thread: "http",
                source,
            })?;
        Ok(HttpServer { runtime })
    }

    /// Binds `addr` now (so a taken port is an error the caller sees) and serves it with
    /// `handler` until the returned [`Listening`] is dropped.
    pub fn serve(
        &self,
        addr: SocketAddr,
        what: &'static str,
        handler: Arc<dyn Handler>,
    ) -> Result<Listening, AgentError> {
        let bind_err = |source| AgentError::Bind { what, addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let bound = std_listener.local_addr().map_err(bind_err)?;
        let listener = {
            let _entered = self.runtime.enter();
            TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let task = self
            .runtime
            .spawn(accept_loop(listener, what, handler))
            .abort_handle();
        Ok(Listening { addr: bound, task })
    }
}

async fn accept_loop(listener: TcpListener, what: &'static str, handler: Arc<dyn Handler>) {
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or memory: give the process a moment rather than spin.
                tracing::warn!("{what}: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!("{what}: {MAX_CONNECTIONS} connections open: one more closed");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(&*handler, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // Header names as Go (kube-proxy) writes them: `Content-Type`, not lowercase.
                .title_case_headers(true)
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("{what} connection: {e}"),
                Err(_) => tracing::debug!("{what} connection: open too long, closed"),
            }
        });
    }
}

async fn respond(handler: &dyn Handler, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = match handler.answer(request.method(), request.uri().path()) {
        Answer::Now(reply) => reply,
        Answer::Blocking(work) => match tokio::task::spawn_blocking(work).await {
            Ok(reply) => reply,
            Err(e) => Reply::text(500, format!("answering: {e}\n")),
        },
    };
    reply.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    struct Fixed;

    impl Handler for Fixed {
        fn answer(&self, _: &hyper::Method, path: &str) -> Answer {
            Answer::Now(Reply::text(200, format!("{path}\n")))
        }
    }

    fn serve() -> (HttpServer, Listening) {
        let server = HttpServer::start().unwrap();
        let listening = server
            .serve("127.0.0.1:0".parse().unwrap(), "test", Arc::new(Fixed))
            .unwrap();
        (server, listening)
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(request).unwrap();
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn oversized_requests_get_431() {
        let (_server, l) = serve();
        let big = format!(
            "GET /readyz HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        let answer = exchange(l.addr, big.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    /// The old server answered one connection at a time: a client that connected and sent
    /// half a request held every probe for seconds.
    #[test]
    fn a_probe_is_answered_while_another_client_holds_a_connection() {
        let (_server, l) = serve();
        let mut held = TcpStream::connect(l.addr).unwrap();
        held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let answer = exchange(l.addr, b"GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("/livez\n"), "{answer}");
        // The held connection was not given up to answer the other: it completes now.
        held.write_all(b"Connection: close\r\n\r\n").unwrap();
        held.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut first = String::new();
        let _ = held.read_to_string(&mut first);
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(first.ends_with("/healthz\n"), "{first}");
    }

    #[test]
    fn dropping_the_listener_closes_the_port() {
        let (_server, l) = serve();
        let addr = l.addr;
        let answer = exchange(addr, b"GET / HTTP/1.0\r\n\r\n");
        assert!(answer.contains(" 200 OK\r\n"), "{answer}");
        drop(l);
        // The accept task is aborted on the runtime's thread: the socket closes shortly.
        testkit::wait::wait_for("the port to close", Duration::from_secs(5), || {
            TcpStream::connect(addr).is_err()
        });
    }
}
