//! Which generator this kernel allows, asked once per process, and the choice every user of
//! a generator goes through ([`choose`]): the tests, `kxdp-bench pktgen`, `kxdp-bench` and its
//! background load.
//!
//! Live frames (BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES`) are the fastest
//! generator, but some kernels refuse them (EPERM on the 6.18 kernels of 2026-12) while
//! plain test runs work. The probe asks with one 1-packet live run of `kxdp_probe` (which
//! drops it: nothing is sent) on the loopback device, after a plain run of the same
//! program, so that a kernel without BPF test runs at all is told apart.

use std::sync::{Arc, OnceLock};

use aya::programs::{TestRun, TestRunOptions};

use super::{GenMode, PktgenError, UnknownName, load_object};
use xdp_redirect::{Interface, error_chain, program};

/// The probe program in the pktgen object.
const PROBE_PROGRAM: &str = "kxdp_probe";

/// What the kernel said to a live-frames test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveFrames {
    Allowed,
    /// Refused; the kernel's answer (the failing call and its errno), for the user.
    Refused(String),
}

/// Asks the kernel (once per process; later calls return the first answer). An error
/// means the question could not be asked: no BPF at all, or not even a plain test run.
pub fn live_frames() -> Result<LiveFrames, PktgenError> {
    static ANSWER: OnceLock<Result<LiveFrames, Arc<PktgenError>>> = OnceLock::new();
    ANSWER
        .get_or_init(|| ask().map_err(Arc::new))
        .clone()
        .map_err(PktgenError::Earlier)
}

fn ask() -> Result<LiveFrames, PktgenError> {
    let ebpf = load_object(PROBE_PROGRAM)?;
    let prog = program(&ebpf, PROBE_PROGRAM)?;
    let frame = [0u8; 64];
    prog.test_run(TestRunOptions {
        data_in: Some(&frame),
        repeat: 1,
        ..TestRunOptions::default()
    })
    .map_err(|e| {
        PktgenError::Probe(format!(
            "a plain BPF_PROG_TEST_RUN failed: {}",
            error_chain(&e)
        ))
    })?;
    let lo = Interface::by_name("lo")?;
    match super::live::run_live(prog, lo.index(), &frame, 0, 1) {
        Ok(()) => Ok(LiveFrames::Allowed),
        Err(e) => Ok(LiveFrames::Refused(error_chain(&e))),
    }
}

/// Which generator a user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenRequest {
    /// The fastest the kernel allows: live frames, else the fan-out.
    #[default]
    Auto,
    /// This one; an error where the kernel refuses it.
    Exactly(GenMode),
}

impl std::str::FromStr for GenRequest {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        if s == "auto" {
            return Ok(GenRequest::Auto);
        }
        s.parse()
            .map(GenRequest::Exactly)
            .map_err(|_| UnknownName::new("generator", s, "live, fanout, afxdp, or auto"))
    }
}

impl std::fmt::Display for GenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenRequest::Auto => f.write_str("auto"),
            GenRequest::Exactly(m) => m.fmt(f),
        }
    }
}

/// The generator that runs and why: what the output and the JSON say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenChoice {
    pub mode: GenMode,
    pub why: String,
}

/// Picks the generator for `request`, asking the kernel when it matters: live frames
/// where allowed; else the fan-out once it has passed its self-test ([`fanout_works`]);
/// else AF_XDP TX.
pub fn choose(request: GenRequest) -> Result<GenChoice, PktgenError> {
    decide(request, live_frames, fanout_works)
}

/// [`choose`] with the kernel's answers passed in (so that every branch can be tested on
/// any kernel).
fn decide(
    request: GenRequest,
    live: impl FnOnce() -> Result<LiveFrames, PktgenError>,
    fanout: impl FnOnce() -> Result<(), PktgenError>,
) -> Result<GenChoice, PktgenError> {
    match request {
        GenRequest::Exactly(GenMode::LiveFrames) => match live()? {
            LiveFrames::Allowed => Ok(GenChoice {
                mode: GenMode::LiveFrames,
                why: "asked for; the kernel allows live frames".into(),
            }),
            LiveFrames::Refused(answer) => Err(PktgenError::LiveFramesRefused(answer)),
        },
        GenRequest::Exactly(mode) => Ok(GenChoice {
            mode,
            why: "asked for".into(),
        }),
        GenRequest::Auto => Ok(match live()? {
            LiveFrames::Allowed => GenChoice {
                mode: GenMode::LiveFrames,
                why: "the kernel allows BPF_PROG_TEST_RUN live frames, the fastest generator"
                    .into(),
            },
            LiveFrames::Refused(answer) => match fanout() {
                Ok(()) => GenChoice {
                    mode: GenMode::FanOut,
                    why: format!(
                        "the kernel refuses BPF_PROG_TEST_RUN live frames ({answer}); the XDP fan-out is the fastest generator it allows"
                    ),
                },
                Err(e) => GenChoice {
                    mode: GenMode::AfXdp,
                    why: format!(
                        "the kernel refuses BPF_PROG_TEST_RUN live frames ({answer}) and the XDP fan-out failed its self-test ({e}); AF_XDP TX"
                    ),
                },
            },
        }),
    }
}

/// Whether the fan-out works on this kernel (once per process): a thread of its own in a
/// network namespace of its own (gone with the thread) sends 200 packets through it onto a
/// veth pair and a sink counts them.
pub fn fanout_works() -> Result<(), PktgenError> {
    static ANSWER: OnceLock<Result<(), Arc<PktgenError>>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            std::thread::scope(|s| {
                s.spawn(fanout_self_test)
                    .join()
                    .unwrap_or_else(|_| Err(PktgenError::Probe("the self-test panicked".into())))
            })
            .map_err(Arc::new)
        })
        .clone()
        .map_err(PktgenError::Earlier)
}

fn fanout_self_test() -> Result<(), PktgenError> {
    // SAFETY: unshare(2) moves only this thread into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(PktgenError::Io {
            what: "unshare(CLONE_NEWNET) for the fan-out self-test",
            source: std::io::Error::last_os_error(),
        });
    }
    // No IPv6 in the namespace: the kernel's own neighbour discovery would reach the sink.
    for conf in ["all", "default"] {
        let key = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        std::fs::write(&key, "1").map_err(|source| PktgenError::Io {
            what: "disabling IPv6 for the fan-out self-test",
            source,
        })?;
    }
    super::fanout::ip(&[
        "link", "add", "kxst0", "type", "veth", "peer", "name", "kxst1",
    ])?;
    for dev in ["kxst0", "kxst1"] {
        super::fanout::ip(&["link", "set", dev, "up"])?;
    }
    let sink = super::Sink::attach(
        &Interface::by_name("kxst1")?,
        super::SinkAction::Drop,
        false,
    )?;
    const N: u64 = 200;
    let spec = super::PacketSpec::default();
    let report = super::FanOutGenerator::new(&Interface::by_name("kxst0")?, &spec)?.run(
        &super::RunLimit {
            count: Some(N),
            ..super::RunLimit::default()
        },
    )?;
    let counted = sink.counts()?.udp;
    if report.packets != N || counted != N {
        return Err(PktgenError::Probe(format!(
            "the fan-out sent {} of {N} packets and the sink counted {counted}",
            report.packets
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Result<LiveFrames, PktgenError> {
        Ok(LiveFrames::Refused(
            "bpf_prog_test_run: Operation not permitted".into(),
        ))
    }

    #[test]
    fn auto_falls_back_live_then_fanout_then_afxdp() {
        type Live = fn() -> Result<LiveFrames, PktgenError>;
        type Check = fn() -> Result<(), PktgenError>;
        let works: Check = || Ok(());
        let broken: Check = || Err(PktgenError::Probe("no devmap".into()));
        let allowed: Live = || Ok(LiveFrames::Allowed);
        let pick =
            |live: Live, fanout: Check| decide(GenRequest::Auto, live, fanout).map(|c| c.mode).ok();
        assert_eq!(pick(allowed, broken), Some(GenMode::LiveFrames));
        assert_eq!(pick(refused, works), Some(GenMode::FanOut));
        assert_eq!(pick(refused, broken), Some(GenMode::AfXdp));
        let why = decide(GenRequest::Auto, refused, broken).unwrap().why;
        assert!(
            why.contains("Operation not permitted") && why.contains("no devmap"),
            "{why}"
        );
    }

    #[test]
    fn asking_for_refused_live_frames_is_a_clear_error() {
        let e = decide(GenRequest::Exactly(GenMode::LiveFrames), refused, || Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refuses BPF_PROG_TEST_RUN with live frames"),
            "{e}"
        );
        assert!(e.contains("Operation not permitted"), "{e}");
        let other = decide(GenRequest::Exactly(GenMode::FanOut), refused, || {
            Err(PktgenError::Probe("not asked".into()))
        });
        assert_eq!(other.map(|c| c.mode).ok(), Some(GenMode::FanOut));
    }

    #[test]
    fn requests_parse() {
        assert_eq!("auto".parse::<GenRequest>(), Ok(GenRequest::Auto));
        assert_eq!(
            "fanout".parse::<GenRequest>(),
            Ok(GenRequest::Exactly(GenMode::FanOut))
        );
        assert_eq!(
            "live".parse::<GenRequest>(),
            Ok(GenRequest::Exactly(GenMode::LiveFrames))
        );
        assert!("kernel".parse::<GenRequest>().is_err());
    }
}
