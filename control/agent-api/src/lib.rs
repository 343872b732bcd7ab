//! The agent's local API: how `kxdp-cni` (and operators) talk to a running `kxdp agent`.
//!
//! A Unix stream socket. The client writes one JSON object and `\n`; the server answers one
//! JSON object and `\n`. Requests are tagged by `"op"`:
//!
//! ```json
//! {"op":"add_port","port":"pod-demo-web","ifname":"kx0123456789a","container_id":"c1","ips":["10.244.1.5"]}
//! {"op":"del_port","port":"pod-demo-web","container_id":"c1"}
//! {"op":"check_port","port":"pod-demo-web","container_id":"c1"}
//! {"op":"status"}
//! ```
//!
//! and answered with `{"ok":true}`, `{"ok":false,"error":"..."}` or
//! `{"ok":true,"status":{...}}` ([`AgentStatus`]).

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod conflist;
pub mod record;

/// Where the agent listens unless told otherwise (`kxdp agent --api-socket`, CNI `agentSocket`).
pub const DEFAULT_SOCKET: &str = "/run/kxdp/agent.sock";

/// The longest line either side accepts, newline excluded. A status listing thousands of
/// ports fits comfortably; anything longer is a confused or hostile peer.
pub const MAX_LINE: usize = 1 << 20;

/// How long [`serve_connection`] waits for the next request when the stream has no read
/// timeout of its own, so a client that connects and goes quiet cannot pin a server thread
/// (a server handling one connection at a time would make everyone else wait that long).
pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open a pod port on the host side of its veth; answered `ok` only once the port is live
    /// (XDP attached, one AF_XDP socket per worker, XSKMAP filled).
    AddPort {
        /// `pod-<namespace>-<name>`.
        port: String,
        /// The host-side veth.
        ifname: String,
        container_id: String,
        /// The pod's addresses (no prefix length).
        ips: Vec<IpAddr>,
    },
    /// Close a pod port. Idempotent: an unknown port is not an error.
    DelPort { port: String, container_id: String },
    /// Is this port open?
    CheckPort { port: String, container_id: String },
    /// The agent's [`AgentStatus`].
    Status,
    /// The workers' counters ([`AgentStats`]): what happened to the packets, by port and by
    /// drop reason.
    Stats,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<AgentStats>,
    /// With `ok: false`: the agent is not able to serve any request now (stopping,
    /// restarting), not refusing this one; asking again later is the remedy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unavailable: bool,
}

impl Response {
    /// `{"ok":true}`
    pub fn ok() -> Response {
        Response {
            ok: true,
            error: None,
            status: None,
            stats: None,
            unavailable: false,
        }
    }

    /// `{"ok":false,"error":msg}`
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            status: None,
            stats: None,
            unavailable: false,
        }
    }

    /// `{"ok":true,"status":{...}}`
    pub fn status(status: AgentStatus) -> Response {
        Response {
            ok: true,
            error: None,
            status: Some(status),
            stats: None,
            unavailable: false,
        }
    }

    /// `{"ok":true,"stats":{...}}`
    pub fn stats(stats: AgentStats) -> Response {
        Response {
            ok: true,
            error: None,
            status: None,
            stats: Some(stats),
            unavailable: false,
        }
    }

    /// `{"ok":false,"error":msg,"unavailable":true}`: not now, ask again later.
    pub fn unavailable(msg: impl Into<String>) -> Response {
        Response {
            unavailable: true,
            ..Response::error(msg)
        }
    }

    /// The answer itself for a success, [`Refused`] for a refusal; for callers that want
    /// the stats or status out of it.
    pub fn accepted(self) -> Result<Response, Refused> {
        if self.ok {
            Ok(self)
        } else {
            Err(Refused {
                reason: self.error,
                unavailable: self.unavailable,
            })
        }
    }

    /// `Ok(status)` for a success (the status present only when the request asked for it),
    /// [`Refused`] for a refusal.
    pub fn into_result(self) -> Result<Option<AgentStatus>, Refused> {
        self.accepted().map(|r| r.status)
    }
}

/// The agent understood a request and answered `{"ok":false}`. The response does not say
/// which request it answers, so callers put the op in front (kxdp-cni: "the kxdp agent
/// refused add_port").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .reason.as_deref().unwrap_or("the agent refused without saying why"))]
pub struct Refused {
    /// The agent's `error` text, when it sent one.
    pub reason: Option<String>,
    /// The agent cannot serve anything now ([`Response::unavailable`]).
    pub unavailable: bool,
}

/// What `{"op":"status"}` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node: String,
    /// The table generation the workers run.
    pub generation: u64,
    /// Worker threads; every port needs at least this many rx/tx queues.
    pub workers: u32,
    /// Ports with open sockets.
    pub ports: Vec<String>,
    /// Ports the current tables know (a pod's port is live before the tables know it).
    pub table_ports: Vec<String>,
    /// The pod gateway (first address of the node's PodCIDR), IPv4.
    pub gateway: String,
    pub pod_cidrs: Vec<String>,
    /// The MTU pods get: the underlay MTU minus the VXLAN overhead (50).
    pub pod_mtu: u32,
    /// The uplink and what named it (`--uplink`, `kxdp.yaml nodes[0]`, `holds the Node's
    /// InternalIP 192.168.77.1`, ...).
    #[serde(default)]
    pub uplink: String,
    #[serde(default)]
    pub uplink_found_by: String,
    /// Where the cluster state comes from (`state directory DIR`, `the Kubernetes API at
    /// https://HOST:PORT, service account DIR`, ...).
    #[serde(default)]
    pub state_source: String,
    /// The Services this node answers health checks for: `namespace/name port N: M local
    /// endpoints` (kube-proxy's `healthCheckNodePort` servers).
    #[serde(default)]
    pub health_checks: Vec<String>,
}

/// What `{"op":"stats"}` reports: one entry per worker, counters since it started, and
/// which worker serves which rx queue of each port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    pub workers: Vec<WorkerSummary>,
    #[serde(default)]
    pub queues: Vec<PortQueues>,
    /// What the XDP programs decided, by reason (`uplink_vxlan`, ..., `no_slot`: a packet
    /// the programs would have redirected but whose port or queue had no socket, so it went
    /// to the kernel), summed over CPUs since the programs were loaded.
    #[serde(default)]
    pub xdp_decisions: std::collections::BTreeMap<String, u64>,
}

/// The rx queues of one port and the worker serving each (queue q is served by
/// `workers[q]`: queue q mod the worker count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortQueues {
    pub port: String,
    pub ifname: String,
    pub workers: Vec<usize>,
}

/// One worker's counters. `rx_packets == forwarded + passed + dropped`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub id: usize,
    pub cpu: Option<usize>,
    pub generation: u64,
    pub rx_packets: u64,
    pub forwarded: u64,
    /// Handed to the kernel through the host port (the XDP program had already redirected them).
    pub passed: u64,
    pub dropped: u64,
    /// `dropped` by reason (stable names, as in replay's verdicts.jsonl).
    pub drops: std::collections::BTreeMap<String, u64>,
    pub tx_packets: u64,
    /// Frames `process` forwarded that no socket could take (no socket, tx ring full).
    pub io_drops: u64,
    /// Share of its life the worker spent in rounds that did work.
    pub busy_ratio: f64,
    pub mean_lock_wait_ns: u64,
    /// New table generations this worker applied to the shared flow table (one worker
    /// applies each), the time that took, and the Service flows it ended because their
    /// endpoint was deleted (UDP and other non-TCP flows; TCP ends at its next packet).
    #[serde(default)]
    pub generation_sweeps: u64,
    #[serde(default)]
    pub generation_sweep_ns: u64,
    #[serde(default)]
    pub flows_ended: u64,
    pub ports: Vec<PortSummary>,
}

/// One open socket of a worker: the port's rx queue `queue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSummary {
    pub name: String,
    #[serde(default)]
    pub queue: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// The kernel's XDP_STATISTICS rx_dropped + rx_ring_full: packets lost before the
    /// worker saw them (rx_dropped includes those that found the fill ring empty).
    pub kernel_rx_lost: u64,
}

/// Why a [`call`] did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connecting to the agent at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("talking to the agent: {0}")]
    Io(#[source] io::Error),
    #[error("the agent closed the connection without answering")]
    Closed,
    #[error("the agent's answer is longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("the agent's answer is not valid JSON: {0}")]
    Decode(#[source] serde_json::Error),
}

impl ApiError {
    /// True when the agent is not there or not answering (worth retrying later), as opposed
    /// to an agent that answered something we cannot read.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ApiError::Connect { .. } | ApiError::Timeout(_) | ApiError::Closed
        )
    }
}

/// Sends `req` to the agent at `socket` and waits at most `timeout` (connecting included)
/// for its answer.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(socket).map_err(|source| ApiError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let mut line = serde_json::to_vec(req).map_err(ApiError::Decode)?;
    line.push(b'\n');
    let left = time_left(deadline).map_err(|e| io_or_timeout(e, timeout))?;
    stream.set_write_timeout(left).map_err(ApiError::Io)?;
    stream
        .write_all(&line)
        .map_err(|e| io_or_timeout(e, timeout))?;
    let mut reader = LineReader::new(stream);
    let answer = match reader.next_line(|| time_left(deadline)) {
        Ok(Some(answer)) => answer,
        Ok(None) => return Err(ApiError::Closed),
        Err(LineError::TooLong) => return Err(ApiError::TooLong),
        Err(LineError::Io(e)) => return Err(io_or_timeout(e, timeout)),
    };
    serde_json::from_slice(&answer).map_err(ApiError::Decode)
}

/// Connects without ever blocking in connect(2). A blocking connect to a listener whose
/// backlog is full (an agent that stopped accepting, with callers that gave up queued
/// behind it) waits with no limit at all; non-blocking, it fails at once with EAGAIN, and
/// the caller hears "not answering" instead of hanging. (For Unix sockets connect never
/// answers EINPROGRESS: it connects, or it fails.)
fn connect(path: &Path) -> io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // Room for the terminating NUL the zeroes provide.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long (or contains NUL)",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just created and own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` within it.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = UnixStream::from(fd);
    // Reads and writes are bounded by timeouts from here on, which need blocking mode.
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Serves one client connection: reads requests line by line until the client closes,
/// answering each with `handler`'s response. A line that is not a valid request is answered
/// `{"ok":false,"error":...}` and the connection goes on; so is a line longer than
/// [`MAX_LINE`], whose bytes are discarded up to its newline without being buffered. A stream
/// without a read timeout gets [`SERVER_IDLE_TIMEOUT`].
pub fn serve_connection(
    stream: UnixStream,
    handler: &mut dyn FnMut(Request) -> Response,
) -> io::Result<()> {
    if stream.read_timeout()?.is_none() {
        stream.set_read_timeout(Some(SERVER_IDLE_TIMEOUT))?;
    }
    let mut writer = stream.try_clone()?;
    let mut reader = LineReader::new(stream);
    loop {
        let response = match reader.next_line(|| Ok(None)) {
            Ok(None) => return Ok(()),
            Ok(Some(line)) => match serde_json::from_slice::<Request>(&line) {
                Ok(req) => handler(req),
                Err(e) => Response::error(format!("bad request: {e}")),
            },
            // The reader skipped to the end of the offending line, so the next request is
            // still found (and the client reads our answer instead of a reset connection).
            Err(LineError::TooLong) => {
                Response::error(format!("request longer than {MAX_LINE} bytes"))
            }
            Err(LineError::Io(e)) => return Err(e),
        };
        write_response(&mut writer, &response)?;
    }
}

fn write_response(writer: &mut UnixStream, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)?;
    writer.flush()
}

/// The socket timeout left before `deadline`; `TimedOut` once it has passed (a zero timeout
/// would mean "block forever" to the socket).
fn time_left(deadline: Instant) -> io::Result<Option<Duration>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::from(io::ErrorKind::TimedOut))
    } else {
        Ok(Some(left))
    }
}

fn io_or_timeout(e: io::Error, timeout: Duration) -> ApiError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ApiError::Timeout(timeout),
        _ => ApiError::Io(e),
    }
}

enum LineError {
    TooLong,
    Io(io::Error),
}

/// Reads `\n`-terminated lines of at most [`MAX_LINE`] bytes, keeping what follows a line
/// for the next call.
struct LineReader {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Inside an overlong line: drop bytes up to its newline.
    skipping: bool,
}

impl LineReader {
    fn new(stream: UnixStream) -> LineReader {
        LineReader {
            stream,
            buf: Vec::new(),
            skipping: false,
        }
    }

    /// The next line without its newline; `None` at a clean end of stream. `timeout` gives
    /// the read timeout before each read (`None`: leave the stream's own).
    fn next_line(
        &mut self,
        timeout: impl Fn() -> io::Result<Option<Duration>>,
    ) -> Result<Option<Vec<u8>>, LineError> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                if std::mem::take(&mut self.skipping) {
                    return Err(LineError::TooLong);
                }
                line.pop();
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                self.skipping = true;
            }
            if self.skipping {
                self.buf.clear();
            }
            if let Some(t) = timeout().map_err(LineError::Io)? {
                self.stream
                    .set_read_timeout(Some(t))
                    .map_err(LineError::Io)?;
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineError::Io(e)),
            };
            if n == 0 {
                if std::mem::take(&mut self.skipping) {
                    return Err(LineError::TooLong);
                }
                // A final request without its newline still counts; an empty tail is a
                // clean close.
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `kxdp stats` as a table: per worker its verdict totals and drops by reason, then its
/// ports.
pub fn render_stats(stats: &AgentStats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in &stats.queues {
        let _ = writeln!(
            out,
            "port {} ({}): {} rx queues: {}",
            p.port,
            p.ifname,
            p.workers.len(),
            queue_owners(&p.workers)
        );
    }
    if !stats.xdp_decisions.is_empty() {
        let decisions: Vec<String> = stats
            .xdp_decisions
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = writeln!(out, "xdp programs: {}", decisions.join(", "));
    }
    for w in &stats.workers {
        let cpu = w.cpu.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "worker {} (cpu {cpu}, generation {}): rx {} = forwarded {} + passed {} + dropped {}; tx {}; io drops {}; busy {:.1}%; flow-lock wait {} ns/batch",
            w.id,
            w.generation,
            w.rx_packets,
            w.forwarded,
            w.passed,
            w.dropped,
            w.tx_packets,
            w.io_drops,
            w.busy_ratio * 100.0,
            w.mean_lock_wait_ns
        );
        for (reason, n) in &w.drops {
            let _ = writeln!(out, "  drop {reason:<28} {n}");
        }
        let _ = writeln!(
            out,
            "  {:<32} {:>5} {:>12} {:>12} {:>14}",
            "port", "queue", "rx", "tx", "kernel rx lost"
        );
        for p in &w.ports {
            let _ = writeln!(
                out,
                "  {:<32} {:>5} {:>12} {:>12} {:>14}",
                p.name, p.queue, p.rx_packets, p.tx_packets, p.kernel_rx_lost
            );
        }
    }
    out
}

/// `worker 0: q0 q2; worker 1: q1 q3`, from the worker of each queue.
fn queue_owners(workers: &[usize]) -> String {
    let mut by_worker: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for (queue, worker) in workers.iter().enumerate() {
        by_worker
            .entry(*worker)
            .or_default()
            .push(format!("q{queue}"));
    }
    by_worker
        .iter()
        .map(|(w, queues)| format!("worker {w}: {}", queues.join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::net::UnixListener;
    use std::thread;

    fn roundtrip_request(req: &Request, expected: serde_json::Value) {
        let text = serde_json::to_value(req).unwrap();
        assert_eq!(text, expected);
        let back: Request = serde_json::from_value(expected).unwrap();
        assert_eq!(&back, req);
    }

    #[test]
    fn request_shapes() {
        roundtrip_request(
            &Request::AddPort {
                port: "pod-demo-web".into(),
                ifname: "kx0123456789a".into(),
                container_id: "c1".into(),
                ips: vec!["10.244.1.5".parse().unwrap()],
            },
            json!({"op":"add_port","port":"pod-demo-web","ifname":"kx0123456789a",
                   "container_id":"c1","ips":["10.244.1.5"]}),
        );
        roundtrip_request(
            &Request::DelPort {
                port: "pod-a-b".into(),
                container_id: "c2".into(),
            },
            json!({"op":"del_port","port":"pod-a-b","container_id":"c2"}),
        );
        roundtrip_request(
            &Request::CheckPort {
                port: "pod-a-b".into(),
                container_id: "c2".into(),
            },
            json!({"op":"check_port","port":"pod-a-b","container_id":"c2"}),
        );
        roundtrip_request(&Request::Status, json!({"op":"status"}));
    }

    #[test]
    fn bad_requests_do_not_decode() {
        for bad in [
            r#"{"op":"reboot"}"#,
            r#"{"port":"pod-a-b"}"#,
            r#"{"op":"add_port","port":"pod-a-b"}"#,
            r#"{"op":"add_port","port":"p","ifname":"x","container_id":"c","ips":["nope"]}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    fn sample_status() -> AgentStatus {
        AgentStatus {
            node: "node-a".into(),
            generation: 7,
            workers: 2,
            ports: vec!["uplink".into(), "host".into()],
            table_ports: vec!["pod-demo-web".into()],
            gateway: "10.244.1.1".into(),
            pod_cidrs: vec!["10.244.1.0/24".into()],
            pod_mtu: 1450,
            uplink: "eth0".into(),
            uplink_found_by: "--uplink".into(),
            state_source: "state directory /s".into(),
            health_checks: Vec::new(),
        }
    }

    #[test]
    fn response_shapes() {
        assert_eq!(
            serde_json::to_value(Response::ok()).unwrap(),
            json!({"ok":true})
        );
        assert_eq!(
            serde_json::to_value(Response::error("no such port")).unwrap(),
            json!({"ok":false,"error":"no such port"})
        );
        assert_eq!(
            serde_json::to_value(Response::status(sample_status())).unwrap(),
            json!({"ok":true,"status":{"node":"node-a","generation":7,"workers":2,
                   "ports":["uplink","host"],"table_ports":["pod-demo-web"],
                   "gateway":"10.244.1.1","pod_cidrs":["10.244.1.0/24"],"pod_mtu":1450,
                   "uplink":"eth0","uplink_found_by":"--uplink","state_source":"state directory /s",
                   "health_checks":[]}})
        );
        let parsed: Response = serde_json::from_str(r#"{"ok":false,"error":"x"}"#).unwrap();
        let refused = parsed.into_result().unwrap_err();
        assert_eq!(refused.reason.as_deref(), Some("x"));
        assert_eq!(refused.to_string(), "x");
        let parsed: Response = serde_json::from_str(r#"{"ok":false}"#).unwrap();
        assert_eq!(
            parsed.into_result().unwrap_err().to_string(),
            "the agent refused without saying why"
        );
        let parsed: Response = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert_eq!(parsed.into_result(), Ok(None));
        // Not now: the flag travels, and only when set.
        assert_eq!(
            serde_json::to_value(Response::unavailable("stopping")).unwrap(),
            json!({"ok":false,"error":"stopping","unavailable":true})
        );
        let parsed: Response =
            serde_json::from_str(r#"{"ok":false,"error":"stopping","unavailable":true}"#).unwrap();
        assert!(parsed.into_result().unwrap_err().unavailable);
    }

    /// A server thread on a fresh socket in a scratch directory; returns the socket path.
    fn serve(tag: &str, answers: usize) -> (PathBuf, thread::JoinHandle<io::Result<()>>) {
        let dir = std::env::temp_dir().join(format!("kcni-api-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            for _ in 0..answers {
                let (stream, _) = listener.accept()?;
                serve_connection(stream, &mut |req| match req {
                    Request::Status => Response::status(sample_status()),
                    Request::AddPort { port, .. } if port == "pod-bad-port" => {
                        Response::error("refused")
                    }
                    _ => Response::ok(),
                })?;
            }
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        });
        (path, handle)
    }

    #[test]
    fn call_and_serve() {
        let (path, server) = serve("call", 2);
        let timeout = Duration::from_secs(5);
        let status = call(&path, &Request::Status, timeout).unwrap();
        assert_eq!(status.into_result(), Ok(Some(sample_status())));
        let refused = call(
            &path,
            &Request::AddPort {
                port: "pod-bad-port".into(),
                ifname: "kx0".into(),
                container_id: "c".into(),
                ips: vec![],
            },
            timeout,
        )
        .unwrap();
        assert_eq!(
            refused.into_result(),
            Err(Refused {
                reason: Some("refused".to_string()),
                unavailable: false,
            })
        );
        server.join().unwrap().unwrap();
    }

    #[test]
    fn server_answers_bad_json_and_keeps_going() {
        let (path, server) = serve("bad", 1);
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .write_all(b"{not json\n{\"op\":\"status\"}\n")
            .unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let lines: Vec<Response> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!lines[0].ok);
        assert!(
            lines[0]
                .error
                .as_deref()
                .unwrap()
                .starts_with("bad request")
        );
        assert_eq!(lines[1].status, Some(sample_status()));
        server.join().unwrap().unwrap();
    }

    #[test]
    fn server_refuses_overlong_lines() {
        let (path, server) = serve("long", 1);
        let mut stream = UnixStream::connect(&path).unwrap();
        let writer = {
            let mut stream = stream.try_clone().unwrap();
            // Written from another thread: the server answers only once the line ends.
            thread::spawn(move || {
                let mut junk = vec![b'x'; 3 * MAX_LINE];
                junk.extend_from_slice(b"\n{\"op\":\"status\"}\n");
                stream.write_all(&junk).unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let answers: Vec<Response> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(answers.len(), 2, "{text}");
        assert!(!answers[0].ok);
        assert!(answers[0].error.as_deref().unwrap().contains("longer than"));
        // The request after the overlong line is served normally.
        assert_eq!(answers[1].status, Some(sample_status()));
        writer.join().unwrap();
        server.join().unwrap().unwrap();
    }

    #[test]
    fn call_reports_missing_agent_as_unreachable() {
        let path =
            std::env::temp_dir().join(format!("kcni-api-{}-absent.sock", std::process::id()));
        let err = call(&path, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }

    #[test]
    fn call_times_out_on_a_silent_agent() {
        let dir = std::env::temp_dir().join(format!("kcni-api-{}-silent", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        // Accepted by the kernel's backlog, never read: the client must give up on time.
        let _listener = UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let err = call(&path, &Request::Status, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ApiError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An agent that stopped accepting, with earlier callers queued behind it: the backlog
    /// is full, and a blocking connect(2) would wait for ever. The call fails at once.
    #[test]
    fn call_does_not_block_on_a_full_backlog() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("kcni-api-{}-full", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // A backlog of one pending connection (the kernel allows backlog + 1), then fill it.
        // SAFETY: listen(2) on the listener's own descriptor, which it keeps open.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let mut queued = Vec::new();
        while let Ok(stream) = connect(&path) {
            queued.push(stream);
            assert!(queued.len() < 64, "the backlog never filled");
        }
        let started = Instant::now();
        let err = call(&path, &Request::Status, Duration::from_secs(30)).unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stats_show_which_worker_serves_which_queue() {
        let socket = |name: &str, queue, rx| PortSummary {
            name: name.into(),
            queue,
            rx_packets: rx,
            ..PortSummary::default()
        };
        let stats = AgentStats {
            workers: vec![
                WorkerSummary {
                    id: 0,
                    ports: vec![socket("uplink", 0, 10), socket("uplink", 2, 12)],
                    ..WorkerSummary::default()
                },
                WorkerSummary {
                    id: 1,
                    ports: vec![socket("uplink", 1, 11)],
                    ..WorkerSummary::default()
                },
            ],
            queues: vec![PortQueues {
                port: "uplink".into(),
                ifname: "eth0".into(),
                workers: vec![0, 1, 0],
            }],
            xdp_decisions: [("no_slot".to_string(), 0), ("uplink_vxlan".to_string(), 33)]
                .into_iter()
                .collect(),
        };
        let text = render_stats(&stats);
        assert!(
            text.starts_with("port uplink (eth0): 3 rx queues: worker 0: q0 q2; worker 1: q1\n"),
            "{text}"
        );
        assert!(
            text.contains("\nxdp programs: no_slot 0, uplink_vxlan 33\n"),
            "{text}"
        );
        let row = |queue: u32, rx: u64| format!("  {:<32} {queue:>5} {rx:>12} ", "uplink");
        assert!(text.contains(&row(2, 12)), "{text}");
        assert!(text.contains(&row(1, 11)), "{text}");
        // Answers of an agent from before the queue map still decode.
        let old: AgentStats =
            serde_json::from_value(json!({"workers": [{"id": 0, "cpu": null, "generation": 1,
                "rx_packets": 0, "forwarded": 0, "passed": 0, "dropped": 0, "drops": {},
                "tx_packets": 0, "io_drops": 0, "busy_ratio": 0.0, "mean_lock_wait_ns": 0,
                "ports": [{"name": "uplink", "rx_packets": 1, "tx_packets": 0,
                "kernel_rx_lost": 0}]}]}))
            .unwrap();
        assert_eq!(old.workers[0].ports[0].queue, 0);
        assert!(old.queues.is_empty() && old.xdp_decisions.is_empty());
    }
}
