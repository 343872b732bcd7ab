//! `kxdp-lab probe`: the small traffic tool the lab runs inside its namespaces (hidden from
//! `--help`; std::net only, so it runs anywhere `kxdp` does).
//!
//! - `serve` answers every TCP connection and UDP datagram with its name and the request,
//!   so a client learns which backend answered (Service spread) and that the bytes came
//!   back unchanged.
//! - `tcp` / `udp` send N requests, each on a new socket (a new flow: a new Maglev pick),
//!   and print one JSON object: answers per backend, failures by kind, RTT percentiles.
//! - `flood` sends UDP as fast as it can for a while; `sink` counts what arrives. The two
//!   together measure packets per second through the datapath.
//! - `get` fetches one HTTP path (an agent's /metrics) and prints the body.

mod flood;
mod request;
mod serve;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

pub use flood::{FloodReport, SinkReport};
pub use request::{Proto, RequestOptions, run as request_run};
pub use serve::{READY_PREFIX, ServeOptions};
pub use stats::{Failures, ProbeReport, RttSummary};

/// `kxdp-lab probe ...`
#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    pub action: ProbeAction,
}

#[derive(Debug, Subcommand)]
pub enum ProbeAction {
    /// Answer TCP and UDP requests with NAME and the request, until killed.
    Serve {
        /// Who answers (printed in every reply).
        #[arg(long)]
        name: String,
        /// TCP port to listen on (repeatable).
        #[arg(long = "tcp", value_name = "PORT")]
        tcp: Vec<u16>,
        /// UDP port to answer on (repeatable).
        #[arg(long = "udp", value_name = "PORT")]
        udp: Vec<u16>,
    },
    /// COUNT requests over TCP, one connection each; prints a JSON report.
    Tcp(ClientArgs),
    /// COUNT requests over UDP, one socket (source port) each; prints a JSON report.
    Udp(ClientArgs),
    /// Send UDP datagrams as fast as possible for a while; prints a JSON report.
    Flood {
        #[arg(long, value_name = "IP:PORT")]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
        /// UDP payload bytes (18 makes 64-byte Ethernet frames with the FCS).
        #[arg(long, default_value_t = 18)]
        payload: usize,
    },
    /// Count UDP datagrams on PORT until IDLE_MS pass without one (or MAX_MS in all);
    /// prints a ready line once bound, then a JSON report.
    Sink {
        #[arg(long)]
        udp: u16,
        #[arg(long, default_value_t = 500)]
        idle_ms: u64,
        #[arg(long, default_value_t = 15000)]
        max_ms: u64,
    },
    /// GET PATH from IP:PORT over HTTP; prints the body, fails unless the answer is 200
    /// (with --any-status: prints the status code on a line of its own, then the body).
    Get {
        #[arg(long, value_name = "IP:PORT")]
        to: SocketAddr,
        #[arg(long, default_value = "/metrics")]
        path: String,
        #[arg(long)]
        any_status: bool,
    },
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[arg(long, value_name = "IP:PORT")]
    pub to: SocketAddr,
    #[arg(long, default_value_t = 10)]
    pub count: u32,
    /// Per request: connect, send and answer must all fit in it.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// UDP: send every request from one socket (one flow) instead of a new one each.
    #[arg(long)]
    pub one_flow: bool,
}

impl ClientArgs {
    fn options(&self, proto: Proto) -> RequestOptions {
        RequestOptions {
            proto,
            to: self.to,
            count: self.count,
            timeout: Duration::from_millis(self.timeout_ms),
            one_flow: self.one_flow,
        }
    }
}

/// Runs `kxdp-lab probe`; the exit code says whether the tool could do its job (a request that
/// timed out is a result, reported in the JSON, not an error).
pub fn main(args: ProbeArgs) -> ExitCode {
    let result = match args.action {
        ProbeAction::Serve { name, tcp, udp } => serve::run(&ServeOptions { name, tcp, udp }),
        ProbeAction::Tcp(a) => print_json(&request::run(&a.options(Proto::Tcp))),
        ProbeAction::Udp(a) => print_json(&request::run(&a.options(Proto::Udp))),
        ProbeAction::Flood {
            to,
            duration_ms,
            payload,
        } => flood::flood(to, Duration::from_millis(duration_ms), payload)
            .and_then(|r| print_json(&r)),
        ProbeAction::Sink {
            udp,
            idle_ms,
            max_ms,
        } => flood::sink(
            udp,
            Duration::from_millis(idle_ms),
            Duration::from_millis(max_ms),
        )
        .and_then(|r| print_json(&r)),
        ProbeAction::Get {
            to,
            path,
            any_status,
        } => http_get(to, &path).and_then(|(status, body)| {
            if any_status {
                println!("{status}");
            } else if status != 200 {
                return Err(std::io::Error::other(format!(
                    "GET {path} from {to}: status {status}"
                )));
            }
            print!("{body}");
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kxdp-lab probe: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// One HTTP/1.0 GET (so the answer is never chunked, whatever server answers): the status
/// and the body.
fn http_get(to: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&to, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let Some(status) = status else {
        let line = head.lines().next().unwrap_or("no answer");
        return Err(std::io::Error::other(format!(
            "GET {path} from {to}: {line:?} is no status line"
        )));
    };
    Ok((status, body.to_string()))
}
