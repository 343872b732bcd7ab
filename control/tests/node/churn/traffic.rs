//! The traffic the churn test keeps flowing through a Service: paced, sequence-numbered UDP
//! datagrams on a few fixed flows (each echoed by `kxdp-lab probe serve`, so a loss in either
//! direction shows), and TCP requests each on a new connection, paced too. Every number
//! the assertions need is counted here: sent, echoed, duplicated, answered by whom, failed
//! and why.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::netns::in_netns;

/// Sleeps until `due` (no-op when it has passed): pacing by deadlines, so a late wake-up
/// is caught up on rather than stretching the schedule.
pub fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// What came back on one UDP flow.
#[derive(Debug, Default)]
pub struct FlowEchoes {
    /// Per sequence number: echoed at least once.
    seen: Vec<bool>,
    pub echoed: u64,
    pub duplicates: u64,
    /// Answers that were not an echo of something this flow sent.
    pub garbage: u64,
    /// Echoes per answering backend (its `--name`).
    pub by_backend: BTreeMap<String, u64>,
}

impl FlowEchoes {
    fn record(&mut self, answer: &[u8]) {
        let text = String::from_utf8_lossy(answer);
        let parsed = text
            .split_once(' ')
            .and_then(|(name, seq)| Some((name.to_string(), seq.parse::<usize>().ok()?)));
        let Some((name, seq)) = parsed else {
            self.garbage += 1;
            return;
        };
        if seq >= self.seen.len() {
            self.seen.resize(seq + 1, false);
        }
        if self.seen[seq] {
            self.duplicates += 1;
        } else {
            self.seen[seq] = true;
            self.echoed += 1;
        }
        *self.by_backend.entry(name).or_default() += 1;
    }
}

/// One UDP flow of the paced stream: a connected socket (so only answers from the
/// Service's address are accepted, as an application would see it), its send count and
/// what came back.
#[derive(Debug)]
struct UdpFlow {
    socket: UdpSocket,
    sent: AtomicU64,
    echoes: Mutex<FlowEchoes>,
}

/// The paced UDP stream, running.
#[derive(Debug)]
pub struct PacedUdp {
    flows: Vec<Arc<UdpFlow>>,
    stop_sending: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    sender: Option<JoinHandle<Duration>>,
    receivers: Vec<JoinHandle<()>>,
    pps: u32,
}

/// One flow's totals once the stream stopped.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub local: SocketAddr,
    pub sent: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub garbage: u64,
    pub by_backend: BTreeMap<String, u64>,
}

/// The stream's totals.
#[derive(Debug, Clone)]
pub struct UdpReport {
    pub pps: u32,
    pub sending_for: Duration,
    pub flows: Vec<FlowReport>,
}

impl UdpReport {
    pub fn sent(&self) -> u64 {
        self.flows.iter().map(|f| f.sent).sum()
    }

    pub fn lost(&self) -> u64 {
        self.flows.iter().map(|f| f.lost).sum()
    }

    pub fn achieved_pps(&self) -> f64 {
        self.sent() as f64 / self.sending_for.as_secs_f64().max(1e-9)
    }
}

impl PacedUdp {
    /// Opens `flows` sockets in `netns` connected to `to` and sends `pps` datagrams per
    /// second over them (round robin) until [`PacedUdp::finish`]; the payload of datagram
    /// n of a flow is the decimal n.
    pub fn start(netns: &str, to: SocketAddr, flows: usize, pps: u32) -> PacedUdp {
        let sockets = in_netns(netns, move || {
            (0..flows)
                .map(|_| {
                    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("udp bind");
                    s.connect(to).expect("udp connect");
                    s.set_read_timeout(Some(Duration::from_millis(20)))
                        .expect("udp read timeout");
                    force_receive_buffer(&s);
                    s
                })
                .collect::<Vec<_>>()
        });
        let flows: Vec<Arc<UdpFlow>> = sockets
            .into_iter()
            .map(|socket| {
                Arc::new(UdpFlow {
                    socket,
                    sent: AtomicU64::new(0),
                    echoes: Mutex::new(FlowEchoes::default()),
                })
            })
            .collect();
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_receiving = Arc::new(AtomicBool::new(false));
        let receivers = flows
            .iter()
            .map(|flow| {
                let flow = Arc::clone(flow);
                let stop = Arc::clone(&stop_receiving);
                std::thread::spawn(move || receive(&flow, &stop))
            })
            .collect();
        let sender = {
            let flows = flows.clone();
            let stop = Arc::clone(&stop_sending);
            std::thread::spawn(move || send_paced(&flows, pps, &stop))
        };
        PacedUdp {
            flows,
            stop_sending,
            stop_receiving,
            sender: Some(sender),
            receivers,
            pps,
        }
    }

    /// Datagrams echoed so far, over all flows.
    pub fn echoed(&self) -> u64 {
        self.flows.iter().map(|f| lock(&f.echoes).echoed).sum()
    }

    /// Stops sending, waits up to `drain` for the last echoes, stops receiving, and counts.
    pub fn finish(mut self, drain: Duration) -> UdpReport {
        self.stop_sending.store(true, Ordering::Relaxed);
        let sending_for = self
            .sender
            .take()
            .map(|s| s.join().expect("udp sender"))
            .unwrap_or_default();
        let sent: u64 = self
            .flows
            .iter()
            .map(|f| f.sent.load(Ordering::Relaxed))
            .sum();
        let deadline = Instant::now() + drain;
        while self.echoed() < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop_receiving.store(true, Ordering::Relaxed);
        for r in self.receivers.drain(..) {
            r.join().expect("udp receiver");
        }
        let flows = self
            .flows
            .iter()
            .map(|f| {
                let sent = f.sent.load(Ordering::Relaxed);
                let e = lock(&f.echoes);
                FlowReport {
                    local: f.socket.local_addr().expect("local addr"),
                    sent,
                    lost: sent.saturating_sub(e.echoed),
                    duplicates: e.duplicates,
                    garbage: e.garbage,
                    by_backend: e.by_backend.clone(),
                }
            })
            .collect();
        UdpReport {
            pps: self.pps,
            sending_for,
            flows,
        }
    }
}

impl Drop for PacedUdp {
    fn drop(&mut self) {
        // A test that failed before finish(): let the threads end with it.
        self.stop_sending.store(true, Ordering::Relaxed);
        self.stop_receiving.store(true, Ordering::Relaxed);
    }
}

/// Seconds of slack for the echoes (the default buffer holds ~200 ms of one flow): a
/// receiving thread of this test descheduled on a busy machine must not look like a loss.
fn force_receive_buffer(socket: &UdpSocket) {
    let size: libc::c_int = 8 << 20;
    testkit::sock::setsockopt(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size)
        .unwrap_or_else(|e| panic!("SO_RCVBUFFORCE: {e}"));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Datagram k (over all flows) is due at start + k/pps; returns how long it sent.
fn send_paced(flows: &[Arc<UdpFlow>], pps: u32, stop: &AtomicBool) -> Duration {
    let started = Instant::now();
    let gap = Duration::from_secs(1) / pps;
    let mut k: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        sleep_until(started + gap * k);
        let flow = &flows[k as usize % flows.len()];
        let seq = flow.sent.load(Ordering::Relaxed);
        // Counted only once the kernel took it: a refused send is not a datapath loss.
        match flow.socket.send(seq.to_string().as_bytes()) {
            Ok(_) => {
                flow.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("udp send on flow {k}: {e}"),
        }
        k += 1;
    }
    started.elapsed()
}

fn receive(flow: &UdpFlow, stop: &AtomicBool) {
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match flow.socket.recv(&mut buf) {
            Ok(n) => lock(&flow.echoes).record(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP errors (port unreachable) surface on connected sockets: a failure the
            // echo count shows; keep listening.
            Err(_) => lock(&flow.echoes).garbage += 1,
        }
    }
}

/// TCP requests, one connection each, paced.
#[derive(Debug)]
pub struct PacedTcp {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<TcpReport>>,
}

/// What the TCP requests got.
#[derive(Debug, Clone, Default)]
pub struct TcpReport {
    pub attempted: u64,
    pub answered: u64,
    pub by_backend: BTreeMap<String, u64>,
    /// The first few failures, with the request number.
    pub failures: Vec<String>,
    pub failed: u64,
}

impl PacedTcp {
    /// From a thread in `netns`: a new connection to `to` every 1/`per_sec` s, one request
    /// line each, its echo checked.
    pub fn start(netns: &str, to: SocketAddr, per_sec: u32) -> PacedTcp {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        // A thread started from a thread inside the namespace lives there too.
        let worker = in_netns(netns, move || {
            std::thread::spawn(move || requests(to, per_sec, &thread_stop))
        });
        PacedTcp {
            stop,
            worker: Some(worker),
        }
    }

    pub fn finish(mut self) -> TcpReport {
        self.stop.store(true, Ordering::Relaxed);
        self.worker
            .take()
            .map(|w| w.join().expect("tcp requests"))
            .unwrap_or_default()
    }
}

impl Drop for PacedTcp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn requests(to: SocketAddr, per_sec: u32, stop: &AtomicBool) -> TcpReport {
    let mut report = TcpReport::default();
    let started = Instant::now();
    let gap = Duration::from_secs(1) / per_sec;
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        sleep_until(started + gap * n);
        report.attempted += 1;
        let request = format!("tcp-{n}");
        match TcpConn::open(to, Duration::from_secs(2)).and_then(|mut c| c.ask(&request)) {
            Ok(name) => {
                report.answered += 1;
                *report.by_backend.entry(name).or_default() += 1;
            }
            Err(e) => {
                report.failed += 1;
                if report.failures.len() < 10 {
                    report.failures.push(format!("request {n}: {e}"));
                }
            }
        }
        n += 1;
    }
    report
}

/// One TCP connection carrying request lines (kxdp-lab probe serve answers each with its name
/// and the line).
#[derive(Debug)]
pub struct TcpConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl TcpConn {
    /// Connects (from the calling thread's namespace).
    pub fn open(to: SocketAddr, timeout: Duration) -> std::io::Result<TcpConn> {
        let stream = TcpStream::connect_timeout(&to, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(TcpConn { stream, reader })
    }

    /// Sends `request` and returns the name of the backend that echoed it.
    pub fn ask(&mut self, request: &str) -> std::io::Result<String> {
        self.stream.write_all(format!("{request}\n").as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed without an answer",
            ));
        }
        match line.trim_end().split_once(' ') {
            Some((name, echo)) if echo == request => Ok(name.to_string()),
            _ => Err(std::io::Error::other(format!(
                "answer {line:?} does not echo {request:?}"
            ))),
        }
    }
}
