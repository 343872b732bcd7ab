//! `kxdp-lab probe tcp|udp`: N requests, each on a fresh socket, so each is a new flow (a new
//! source port: a new Maglev pick behind a Service); or, UDP with `one_flow`, all of them
//! over one socket (one flow, its state set up once: the steady-state round trip).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::stats::{Failures, ProbeReport, RttSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub proto: Proto,
    pub to: SocketAddr,
    pub count: u32,
    /// Per request, everything included.
    pub timeout: Duration,
    /// UDP: every request from one socket instead of a new one each.
    pub one_flow: bool,
}

/// Why one request got no good answer.
#[derive(Debug)]
enum Failure {
    Timeout(String),
    Refused(String),
    Mismatch(String),
    Error(String),
}

impl Failure {
    fn from_io(what: &str, e: &io::Error) -> Failure {
        let msg = format!("{what}: {e}");
        match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Timeout(msg),
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => Failure::Refused(msg),
            _ => Failure::Error(msg),
        }
    }
}

/// Runs the requests one after the other and sums them up.
pub fn run(opts: &RequestOptions) -> ProbeReport {
    let mut failures = Failures::default();
    let mut answered_by: BTreeMap<String, u32> = BTreeMap::new();
    let mut rtts = Vec::with_capacity(opts.count as usize);
    let mut first_error = None;
    // Tells this run's answers from any other's.
    let tag = std::process::id();
    let mut shared = None;
    for seq in 0..opts.count {
        let request = format!("kxdp-probe {tag}-{seq}");
        let started = Instant::now();
        let outcome = match (opts.proto, opts.one_flow) {
            (Proto::Tcp, _) => tcp_request(opts.to, &request, opts.timeout),
            (Proto::Udp, false) => {
                udp_socket(opts.to).and_then(|socket| udp_exchange(&socket, &request, opts.timeout))
            }
            (Proto::Udp, true) => match &shared {
                Some(socket) => udp_exchange(socket, &request, opts.timeout),
                None => udp_socket(opts.to).and_then(|socket| {
                    let answer = udp_exchange(&socket, &request, opts.timeout);
                    shared = Some(socket);
                    answer
                }),
            },
        };
        match outcome {
            Ok(name) => {
                rtts.push(started.elapsed());
                *answered_by.entry(name).or_default() += 1;
            }
            Err(f) => {
                let msg = match f {
                    Failure::Timeout(m) => {
                        failures.timeout += 1;
                        m
                    }
                    Failure::Refused(m) => {
                        failures.refused += 1;
                        m
                    }
                    Failure::Mismatch(m) => {
                        failures.mismatch += 1;
                        m
                    }
                    Failure::Error(m) => {
                        failures.error += 1;
                        m
                    }
                };
                first_error.get_or_insert(msg);
            }
        }
    }
    ProbeReport {
        proto: opts.proto.name().to_string(),
        to: opts.to.to_string(),
        count: opts.count,
        answered: u32::try_from(rtts.len()).unwrap_or(u32::MAX),
        failures,
        answered_by,
        rtt_us: RttSummary::from_samples(&rtts),
        first_error,
    }
}

/// The time left of a request's budget; never zero (std rejects zero timeouts).
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn tcp_request(to: SocketAddr, request: &str, timeout: Duration) -> Result<String, Failure> {
    let deadline = Instant::now() + timeout;
    let stream =
        TcpStream::connect_timeout(&to, timeout).map_err(|e| Failure::from_io("connect", &e))?;
    let io_err = |what| move |e: io::Error| Failure::from_io(what, &e);
    stream
        .set_write_timeout(Some(remaining(deadline)))
        .map_err(io_err("setsockopt"))?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io_err("send"))?;
    stream
        .set_read_timeout(Some(remaining(deadline)))
        .map_err(io_err("setsockopt"))?;
    let mut line = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut line)
        .map_err(io_err("receive"))?;
    if line.is_empty() {
        return Err(Failure::Mismatch(
            "connection closed without an answer".into(),
        ));
    }
    parse_answer(line.strip_suffix(b"\n").unwrap_or(&line), request)
}

/// A UDP socket on a new ephemeral port, connected to `to`.
fn udp_socket(to: SocketAddr) -> Result<UdpSocket, Failure> {
    let io_err = |what| move |e: io::Error| Failure::from_io(what, &e);
    let local: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(io_err("bind"))?;
    // Connected: the kernel delivers only datagrams from `to`, so an answer from any other
    // address (a missing reverse NAT) counts as a timeout, as an application would see it.
    socket.connect(to).map_err(io_err("connect"))?;
    Ok(socket)
}

/// Sends `request` and waits for its answer. On a socket used before, a late answer to an
/// earlier request that timed out is skipped, not taken for this one.
fn udp_exchange(socket: &UdpSocket, request: &str, timeout: Duration) -> Result<String, Failure> {
    let io_err = |what| move |e: io::Error| Failure::from_io(what, &e);
    let deadline = Instant::now() + timeout;
    socket.send(request.as_bytes()).map_err(io_err("send"))?;
    let mut buf = [0u8; 2048];
    loop {
        socket
            .set_read_timeout(Some(remaining(deadline)))
            .map_err(io_err("setsockopt"))?;
        let n = socket.recv(&mut buf).map_err(io_err("receive"))?;
        match parse_answer(&buf[..n], request) {
            Err(Failure::Mismatch(_)) if Instant::now() < deadline && is_stale(&buf[..n]) => {}
            answer => return answer,
        }
    }
}

/// Whether an answer echoes some request of this prober (an earlier one's late answer).
fn is_stale(answer: &[u8]) -> bool {
    String::from_utf8_lossy(answer)
        .split_once(' ')
        .is_some_and(|(_, echo)| echo.starts_with("kxdp-probe "))
}

/// "<name> <request>" -> name.
fn parse_answer(answer: &[u8], request: &str) -> Result<String, Failure> {
    let text = String::from_utf8_lossy(answer);
    match text.split_once(' ') {
        Some((name, echo)) if echo == request && !name.is_empty() => Ok(name.to_string()),
        _ => Err(Failure::Mismatch(format!(
            "answer {text:?} does not echo {request:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_answers_are_recognised() {
        assert!(is_stale(b"web-1 kxdp-probe 1-0"));
        assert!(!is_stale(b"garbage"));
    }

    #[test]
    fn answers_must_echo_the_request() {
        assert_eq!(
            parse_answer(b"web-1 kxdp-probe 1-0", "kxdp-probe 1-0").ok(),
            Some("web-1".to_string())
        );
        assert!(matches!(
            parse_answer(b"web-1 kxdp-probe 1-1", "kxdp-probe 1-0"),
            Err(Failure::Mismatch(_))
        ));
        assert!(matches!(
            parse_answer(b"garbage", "kxdp-probe 1-0"),
            Err(Failure::Mismatch(_))
        ));
    }
}
