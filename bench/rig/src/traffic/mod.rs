//! The throughput rig's traffic: generators and a sink (issue 7, item 1), as a library the
//! bench runner and the `pktgen` / `pktsink` front ends ([`crate::traffic_cli`]) call.
//!
//! - [`LiveFramesGenerator`]: in-kernel, `kxdp_gen` (bpf/pktgen.bpf.c) under
//!   BPF_PROG_TEST_RUN live frames, XDP_TX out of an interface (~5 Mpps on the VMs of
//!   2026-11), where the kernel allows live frames. The interface's peer needs an XDP
//!   program (the sink) for veth to take the frames.
//! - [`FanOutGenerator`]: in-kernel too, for kernels that refuse live frames: one frame
//!   injected through a veth pair of its own becomes 64 packets by an XDP broadcast
//!   redirect, each written by a devmap program (`fanout.rs`). Same peer requirement.
//! - [`AfXdpGenerator`]: a TX-only AF_XDP socket (xdpilone), for comparison: what a
//!   userspace sender reaches through the same kernel path the workers transmit on.
//!
//! - [`Sink`]: `kxdp_sink` on the receiving interface, per-CPU packet/byte counts (and
//!   per flow when asked), then XDP_DROP or XDP_PASS.
//!
//! [`probe::choose`] picks a generator (live frames where the kernel allows them, else the
//! fan-out after its self-test, else AF_XDP): every user of a generator goes through it, so
//! that the output can say which ran and why. All three send what a [`PacketSpec`]
//! describes (frame size, UDP or TCP SYN, addresses, N flows varying the source port then
//! the source address) under a [`RunLimit`] (count, duration, pps cap); [`Generator`] holds
//! any of them, [`generate`] runs the one a [`GenMode`] names.
//!
//! Tooling, so in the rig and not in the datapath crate: the C program
//! (`bench/rig/bpf/pktgen.bpf.c`) is built by the rig's build.rs (with bpf-build's clang
//! invocation, like the datapath's), and the AF_XDP generator builds on xdp-redirect's
//! public UMEM and syscall code (`xdp_redirect::xsk`).

pub mod afxdp;
pub mod fanout;
pub mod live;
pub mod live_frames;
mod maps;
pub mod pace;
pub mod packet;
pub mod probe;
pub mod sink;

use std::time::Duration;

use aya::Ebpf;

pub use afxdp::AfXdpGenerator;
pub use fanout::{FanOut, FanOutGenerator};
pub use live::{LIVE_BATCH, run_live_frames};
pub use live_frames::{LiveFramesGenerator, NotAnchored};
pub use pace::RunLimit;
pub use packet::{FlowSource, MAX_FRAME, MIN_FRAME, PacketSpec, Protocol};
pub use probe::{GenChoice, GenRequest, LiveFrames, choose, live_frames};
pub use sink::{Sink, SinkAction, SinkCounts, SinkFlow};

use xdp_redirect::{Interface, XdpError, program_mut};

/// The generator program in the pktgen object.
pub const GEN_PROGRAM: &str = "kxdp_gen";
/// The sink program in the pktgen object.
pub const SINK_PROGRAM: &str = "kxdp_sink";

/// bench/rig/bpf/pktgen.bpf.c, compiled by build.rs. Aligned for aya's in-place ELF
/// parsing.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pktgen.bpf.o"));

/// What can go wrong generating or sinking.
#[derive(Debug, thiserror::Error)]
pub enum PktgenError {
    #[error("packet spec: {0}")]
    Spec(String),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error(
        "AF_XDP TX stalled: nothing completed for 2 s ({queued} queued, {completed} completed, {pending} still in the tx ring)"
    )]
    Stalled {
        queued: u64,
        completed: u64,
        pending: u32,
    },
    #[error(
        "the fan-out stalled: the kernel took {injected} injected frames but handled {handled} within 2 s"
    )]
    FanOutStalled { injected: u64, handled: u64 },
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    #[error("probing the kernel: {0}")]
    Probe(String),
    /// The answer of a probe asked once per process ([`probe::live_frames`],
    /// [`probe::fanout_works`]), given again.
    #[error(transparent)]
    Earlier(std::sync::Arc<PktgenError>),
    #[error(
        "this kernel refuses BPF_PROG_TEST_RUN with live frames ({0}); use the fan-out generator (fanout, or auto)"
    )]
    LiveFramesRefused(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Loads the pktgen object with only `program` loaded into the kernel (fresh maps).
fn load_object(program: &'static str) -> Result<Ebpf, XdpError> {
    let mut ebpf = Ebpf::load(OBJECT)?;
    program_mut(&mut ebpf, program)?.load()?;
    Ok(ebpf)
}

/// Which generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenMode {
    /// [`LiveFramesGenerator`].
    LiveFrames,
    /// [`FanOutGenerator`].
    FanOut,
    /// [`AfXdpGenerator`].
    AfXdp,
}

impl GenMode {
    pub const ALL: [GenMode; 3] = [GenMode::LiveFrames, GenMode::FanOut, GenMode::AfXdp];

    pub fn name(self) -> &'static str {
        match self {
            GenMode::LiveFrames => "live",
            GenMode::FanOut => "fanout",
            GenMode::AfXdp => "afxdp",
        }
    }
}

impl std::str::FromStr for GenMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        GenMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownName::new("generator", s, "live, fanout, afxdp"))
    }
}

/// A name (on the command line) that is none of the choices: what the `FromStr` of the
/// rig's choices ([`GenMode`], [`GenRequest`], [`Protocol`], [`SinkAction`]) returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} ({choices})")]
pub struct UnknownName {
    /// What was being named ("generator", "protocol"...).
    pub what: &'static str,
    pub given: String,
    /// The names that exist, for the message.
    pub choices: &'static str,
}

impl UnknownName {
    pub(crate) fn new(what: &'static str, given: &str, choices: &'static str) -> UnknownName {
        UnknownName {
            what,
            given: given.to_string(),
            choices,
        }
    }
}

impl std::fmt::Display for GenMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a generator offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenReport {
    pub mode: GenMode,
    /// Packets handed to the device (live frames: runs; fan-out: copies of the injected
    /// frames; AF_XDP: completed descriptors).
    pub packets: u64,
    /// Frame bytes (Ethernet header included, no FCS).
    pub bytes: u64,
    /// From the first packet to the last (AF_XDP: without the final drain).
    pub elapsed: Duration,
    /// AF_XDP: kicks the kernel answered "busy, again" (EAGAIN/EBUSY/ENOBUFS).
    pub tx_retries: u64,
}

impl GenReport {
    pub fn pps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bits per second of frame bytes.
    pub fn bps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Everything one [`generate`] call needs.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Interface to send out of, in the calling thread's network namespace.
    pub interface: String,
    pub mode: GenMode,
    pub spec: PacketSpec,
    pub limit: RunLimit,
    /// AF_XDP: the device queue to bind (kernel mode: rx queue 0 of the run's context).
    pub queue: u32,
    /// Pin the calling thread to this CPU first (the kernel generator's flow counter is
    /// per CPU, and the veth work it causes runs there too).
    pub cpu: Option<usize>,
}

/// Sets up the generator `cfg.mode` names and runs it once.
pub fn generate(cfg: &GenConfig) -> Result<GenReport, PktgenError> {
    if let Some(cpu) = cfg.cpu
        && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
    {
        return Err(PktgenError::Spec(format!("cannot pin to CPU {cpu}")));
    }
    let interface = Interface::by_name(&cfg.interface)?;
    Generator::new(cfg.mode, &interface, cfg.queue, &cfg.spec)?.run(&cfg.limit)
}

/// Any of the generators, set up and ready to run (repeatedly; flow counters carry on).
#[derive(Debug)]
pub enum Generator {
    LiveFrames(LiveFramesGenerator),
    FanOut(FanOutGenerator),
    AfXdp(AfXdpGenerator),
}

impl Generator {
    /// Sets up generator `mode` on `interface` (of the calling thread's namespace, which
    /// must also run it); `queue` is the AF_XDP generator's device queue.
    pub fn new(
        mode: GenMode,
        interface: &Interface,
        queue: u32,
        spec: &PacketSpec,
    ) -> Result<Generator, PktgenError> {
        Ok(match mode {
            GenMode::LiveFrames => {
                Generator::LiveFrames(LiveFramesGenerator::new(interface, spec)?)
            }
            GenMode::FanOut => Generator::FanOut(FanOutGenerator::new(interface, spec)?),
            GenMode::AfXdp => Generator::AfXdp(AfXdpGenerator::new(interface, queue, spec)?),
        })
    }

    pub fn mode(&self) -> GenMode {
        match self {
            Generator::LiveFrames(_) => GenMode::LiveFrames,
            Generator::FanOut(_) => GenMode::FanOut,
            Generator::AfXdp(_) => GenMode::AfXdp,
        }
    }

    pub fn run(&mut self, limit: &RunLimit) -> Result<GenReport, PktgenError> {
        self.run_until(limit, &std::sync::atomic::AtomicBool::new(false))
    }

    /// Generates until `limit` says stop or `stop` is set.
    pub fn run_until(
        &mut self,
        limit: &RunLimit,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<GenReport, PktgenError> {
        match self {
            Generator::LiveFrames(g) => g.run_until(limit, stop),
            Generator::FanOut(g) => g.run_until(limit, stop),
            Generator::AfXdp(g) => g.run_until(limit, stop),
        }
    }
}
