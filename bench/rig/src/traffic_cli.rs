//! `kxdp-bench pktgen` and `kxdp-bench pktsink`: the throughput rig's generators and sink
//! ([`crate::traffic`]) from the command line, for measuring by hand and for scripts.
//! Parsing and printing only; the work is the library's.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::traffic::{
    GenConfig, GenReport, GenRequest, PacketSpec, PktgenError, Protocol, RunLimit, Sink,
    SinkAction, SinkCounts,
};
use clap::Args;
use xdp_redirect::{Interface, XdpError};

/// A command-line value that does not parse; clap prints it after the option's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("bad duration {0:?} (e.g. 2s, 500ms)")]
    Duration(String),
    #[error("bad duration {0:?}: not a finite, non-negative number")]
    DurationRange(String),
    #[error("bad MAC address {0:?} (aa:bb:cc:dd:ee:ff)")]
    Mac(String),
}

/// Why a thread could not run in a network namespace. `path` is the namespace file.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("setns {path}: {source}")]
    Setns {
        path: String,
        source: std::io::Error,
    },
    /// `netns` is None for the caller's own namespace.
    #[error("a thread in namespace {netns:?} panicked")]
    Panicked { netns: Option<String> },
}

/// What can stop `kxdp-bench pktgen` or `pktsink`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Interface(XdpError),
    /// Boxed: the interface name beside a [`PktgenError`] makes every `Result` of this
    /// module too large to move around cheaply.
    #[error("sink on {dev}: {source}")]
    Sink {
        dev: String,
        source: Box<PktgenError>,
    },
    #[error("generator: {0}")]
    Generator(#[source] PktgenError),
}

#[derive(Debug, Args)]
pub struct PktgenArgs {
    /// Interface to send out of.
    #[arg(long, value_name = "IFNAME")]
    pub dev: String,
    /// Network namespace (a name under /run/netns, or a path) to run in.
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// auto (the fastest the kernel allows: live, else fanout), live (BPF_PROG_TEST_RUN
    /// live frames, XDP_TX), fanout (an XDP broadcast redirect copying an injected frame;
    /// for kernels that refuse live frames) or afxdp (a TX-only AF_XDP socket). live and
    /// fanout need an XDP program on the peer.
    #[arg(long, default_value = "auto")]
    pub generator: GenRequest,
    /// Frame size in bytes, Ethernet header included (64..=1514).
    #[arg(long, default_value_t = 64)]
    pub size: u16,
    /// udp or tcp-syn.
    #[arg(long, default_value = "udp")]
    pub proto: Protocol,
    /// Number of flows (source port varies first, then source address).
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Source ports per source address (default: as many as the flows, up to 65535).
    #[arg(long, value_name = "N")]
    pub src_ports: Option<u32>,
    /// Packets per second at most; 0: unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to send (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Send exactly this many packets (ends the run early if reached first).
    #[arg(long)]
    pub count: Option<u64>,
    #[arg(long, value_parser = parse_mac)]
    pub src_mac: Option<[u8; 6]>,
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: Option<[u8; 6]>,
    #[arg(long)]
    pub src_ip: Option<Ipv4Addr>,
    #[arg(long)]
    pub dst_ip: Option<Ipv4Addr>,
    #[arg(long)]
    pub src_port: Option<u16>,
    #[arg(long)]
    pub dst_port: Option<u16>,
    /// AF_XDP: the device queue to bind.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Pin the generator to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Also attach a sink (XDP_DROP) to this interface and print what it counted.
    #[arg(long, value_name = "IFNAME")]
    pub sink_dev: Option<String>,
    /// The sink interface's namespace (default: --ns).
    #[arg(long, value_name = "NS")]
    pub sink_ns: Option<String>,
}

#[derive(Debug, Args)]
pub struct PktsinkArgs {
    /// Interface to count on.
    #[arg(long, value_name = "IFNAME")]
    pub dev: String,
    /// Network namespace (a name under /run/netns, or a path) to run in.
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// How long to count (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// drop or pass.
    #[arg(long, default_value = "drop")]
    pub action: SinkAction,
    /// Also count per flow and print how many flows were seen.
    #[arg(long)]
    pub track_flows: bool,
}

/// `2s`, `500ms`, `1.5s`, `3` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = number
        .parse()
        .map_err(|_| ValueError::Duration(s.to_string()))?;
    if !v.is_finite() || v < 0.0 {
        return Err(ValueError::DurationRange(s.to_string()));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ValueError> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || ValueError::Mac(s.to_string());
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter_netns(ns: &str) -> Result<(), NetnsError> {
    let path = if ns.contains('/') {
        ns.to_owned()
    } else {
        format!("/run/netns/{ns}")
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(source) => return Err(NetnsError::Open { path, source }),
    };
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        return Err(NetnsError::Setns { path, source });
    }
    Ok(())
}

/// Runs `f` on a thread of its own inside `netns` (None: this one's), so that the
/// caller's namespace stays as it is. `f`'s error type takes the namespace's failures too.
pub fn in_netns<T: Send, E: From<NetnsError> + Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E> {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = netns {
                enter_netns(ns)?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(E::from(NetnsError::Panicked {
                netns: netns.map(str::to_string),
            }))
        })
    })
}

fn attach_sink(
    ns: Option<&str>,
    dev: &str,
    action: SinkAction,
    track: bool,
) -> Result<Sink, CliError> {
    in_netns(ns, || {
        let iface = Interface::by_name(dev).map_err(CliError::Interface)?;
        Sink::attach(&iface, action, track).map_err(|source| sink_error(dev, source))
    })
}

fn sink_error(dev: &str, source: PktgenError) -> CliError {
    CliError::Sink {
        dev: dev.to_string(),
        source: Box::new(source),
    }
}

fn render_sink(dev: &str, counts: &SinkCounts, elapsed: Duration, offered: Option<u64>) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut line = format!(
        "sink {dev}: {} packets, {} bytes in {:.3} s: {:.3} Mpps, {:.3} Gbit/s (udp {}, tcp syn {}, other {}, frames {}..{} B, per CPU {:?})",
        counts.packets,
        counts.bytes,
        secs,
        counts.packets as f64 / secs / 1e6,
        counts.bytes as f64 * 8.0 / secs / 1e9,
        counts.udp,
        counts.tcp_syn,
        counts.other,
        counts.min_len,
        counts.max_len,
        counts.per_cpu_packets,
    );
    if let Some(o) = offered.filter(|&o| o > 0) {
        line.push_str(&format!(
            "; {:.2}% of offered",
            counts.packets as f64 * 100.0 / o as f64
        ));
    }
    line
}

fn render_gen(r: &GenReport) -> String {
    format!(
        "offered {} packets, {} bytes in {:.3} s: {:.3} Mpps, {:.3} Gbit/s (mode {}, tx retries {})",
        r.packets,
        r.bytes,
        r.elapsed.as_secs_f64(),
        r.pps() / 1e6,
        r.bps() / 1e9,
        r.mode,
        r.tx_retries
    )
}

fn spec_of(a: &PktgenArgs) -> PacketSpec {
    let d = PacketSpec::default();
    PacketSpec {
        size: a.size,
        protocol: a.proto,
        src_mac: a.src_mac.unwrap_or(d.src_mac),
        dst_mac: a.dst_mac.unwrap_or(d.dst_mac),
        src_ip: a.src_ip.unwrap_or(d.src_ip),
        dst_ip: a.dst_ip.unwrap_or(d.dst_ip),
        src_port: a.src_port.unwrap_or(d.src_port),
        dst_port: a.dst_port.unwrap_or(d.dst_port),
        flows: a.flows,
        src_ports: a.src_ports,
    }
}

/// `kxdp-bench pktgen`.
pub fn pktgen_main(a: &PktgenArgs) -> ExitCode {
    match pktgen(a) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kxdp-bench pktgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pktgen(a: &PktgenArgs) -> Result<String, CliError> {
    let sink = match &a.sink_dev {
        Some(dev) => {
            let ns = a.sink_ns.as_deref().or(a.ns.as_deref());
            Some((dev, attach_sink(ns, dev, SinkAction::Drop, false)?))
        }
        None => None,
    };
    let mut cfg = GenConfig {
        interface: a.dev.clone(),
        mode: crate::traffic::GenMode::FanOut,
        spec: spec_of(a),
        limit: RunLimit {
            count: a.count,
            duration: Some(a.duration),
            rate_pps: (a.rate > 0).then_some(a.rate),
        },
        queue: a.queue,
        cpu: a.cpu,
    };
    let ns = a.ns.clone();
    let (choice, report) = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = &ns {
                enter_netns(ns)?;
            }
            let choice = crate::traffic::choose(a.generator).map_err(CliError::Generator)?;
            cfg.mode = choice.mode;
            let report = crate::traffic::generate(&cfg).map_err(CliError::Generator)?;
            Ok::<_, CliError>((choice, report))
        })
        .join()
        .unwrap_or_else(|_| Err(CliError::Netns(NetnsError::Panicked { netns: ns.clone() })))
    })?;
    let rate = if a.rate > 0 {
        format!("{} pps", a.rate)
    } else {
        "unlimited".into()
    };
    let mut text = format!(
        "pktgen {} ({}) on {}: {} B {:?}, {} flows, rate {rate}\n{}",
        choice.mode,
        choice.why,
        a.dev,
        a.size,
        a.proto,
        a.flows,
        render_gen(&report)
    );
    if let Some((dev, sink)) = sink {
        let counts = wait_for_sink(&sink, report.packets).map_err(|e| sink_error(dev, e))?;
        text.push('\n');
        text.push_str(&render_sink(
            dev,
            &counts,
            report.elapsed,
            Some(report.packets),
        ));
        sink.detach().map_err(|e| sink_error(dev, e))?;
    }
    Ok(text)
}

/// The sink's counts once it has seen `n` packets or stopped changing for 50 ms.
fn wait_for_sink(sink: &Sink, n: u64) -> Result<SinkCounts, PktgenError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = sink.counts()?;
    while last.packets < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = sink.counts()?;
        if now.packets == last.packets {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// `kxdp-bench pktsink`.
pub fn pktsink_main(a: &PktsinkArgs) -> ExitCode {
    let run = || -> Result<String, CliError> {
        let sink = attach_sink(a.ns.as_deref(), &a.dev, a.action, a.track_flows)?;
        // Scripts wait for this line before they start sending.
        eprintln!(
            "kxdp-bench pktsink: counting on {} ({:?}) for {:?}",
            a.dev, a.action, a.duration
        );
        let start = Instant::now();
        std::thread::sleep(a.duration);
        let flows = if a.track_flows {
            Some(sink.flows().map_err(|e| sink_error(&a.dev, e))?.len())
        } else {
            None
        };
        let counts = sink.detach().map_err(|e| sink_error(&a.dev, e))?;
        let mut text = render_sink(&a.dev, &counts, start.elapsed(), None);
        if let Some(n) = flows {
            text.push_str(&format!("\nflows seen: {n}"));
        }
        Ok(text)
    };
    match run() {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kxdp-bench pktsink: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_macs_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(
            parse_mac("02:6b:78:67:00:0a"),
            Ok([0x02, 0x6b, 0x78, 0x67, 0, 0x0a])
        );
        assert!(parse_mac("02:6b:78:67:00").is_err());
        assert!(parse_mac("02:6b:78:67:00:zz").is_err());
    }
}
