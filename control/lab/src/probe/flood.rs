//! `kxdp-lab probe flood` and `kxdp-lab probe sink`: a short unpaced UDP stream and its counter.
//! What the sink counts between its first and its last datagram, over that time, is the
//! rate the path between them delivered.

use std::io::{self, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::serve::READY_PREFIX;

/// What `flood` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    pub sent: u64,
    /// Sends the kernel refused (buffer full and the like); not counted in `sent`.
    pub send_errors: u64,
    pub payload: usize,
    pub duration_us: u64,
    pub pps: f64,
}

/// What `sink` counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    pub received: u64,
    pub bytes: u64,
    /// From the first datagram to the last.
    pub span_us: u64,
    pub pps: f64,
}

/// How often (in datagrams) the clock is read while flooding.
const CLOCK_EVERY: u64 = 64;

/// Sends `payload`-byte datagrams to `to` for `duration` from one socket (one flow).
pub fn flood(to: SocketAddr, duration: Duration, payload: usize) -> io::Result<FloodReport> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // A send blocks while the socket's buffer is full; this bounds it so the run ends on time.
    socket.set_write_timeout(Some(Duration::from_millis(100)))?;
    let data = vec![0x6bu8; payload];
    let started = Instant::now();
    let (mut sent, mut send_errors, mut n) = (0u64, 0u64, 0u64);
    loop {
        if n.is_multiple_of(CLOCK_EVERY) && started.elapsed() >= duration {
            break;
        }
        n += 1;
        match socket.send_to(&data, to) {
            Ok(_) => sent += 1,
            Err(e) if is_transient(&e) => send_errors += 1,
            Err(e) => return Err(e),
        }
    }
    let elapsed = started.elapsed();
    Ok(FloodReport {
        sent,
        send_errors,
        payload,
        duration_us: micros(elapsed),
        pps: rate(sent, elapsed),
    })
}

/// Errors a flood meets and keeps going after: full buffers, an ICMP error about an
/// earlier datagram.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::ConnectionRefused
            | ErrorKind::OutOfMemory
    ) || e.raw_os_error() == Some(105) // ENOBUFS
}

/// Counts datagrams on `port`: waits up to `max` for the first, then until `idle` passes
/// without one (or `max` is over).
pub fn sink(port: u16, idle: Duration, max: Duration) -> io::Result<SinkReport> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{READY_PREFIX} sink udp/{port}")?;
        out.flush()?;
    }
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    let (mut received, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = started;
    loop {
        let left = max.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let wait = if first.is_some() {
            idle.min(left)
        } else {
            left
        };
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                last = Instant::now();
                first.get_or_insert(last);
                received += 1;
                bytes += n as u64;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if first.is_some() {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    let span = first.map_or(Duration::ZERO, |f| last.duration_since(f));
    Ok(SinkReport {
        received,
        bytes,
        span_us: micros(span),
        // n datagrams span n-1 gaps.
        pps: rate(received.saturating_sub(1), span),
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn rate(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}
