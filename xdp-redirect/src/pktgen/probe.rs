//! Which generator this kernel allows, asked once per process, and the choice every user of
//! a generator goes through ([`choose`]): the tests, `kxdp pktgen`, `kxdp bench` and its
//! background load.
//!
//! Live frames (BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES`) are the fastest
//! generator, but some kernels refuse them (EPERM on the 6.18 kernels of 2026-12) while
//! plain test runs work. The probe asks with one 1-packet live run of `kxdp_probe` (which
//! drops it: nothing is sent) on the loopback device, after a plain run of the same
//! program, so that a kernel without BPF test runs at all is told apart.

use std::sync::OnceLock;

use aya::programs::{TestRun, TestRunOptions};

use super::{GenMode, PktgenError, load_object};
use crate::{Interface, chain, program};

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
    static ANSWER: OnceLock<Result<LiveFrames, String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| ask().map_err(|e| e.to_string()))
        .clone()
        .map_err(PktgenError::Probe)
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
    .map_err(|e| PktgenError::Probe(format!("a plain BPF_PROG_TEST_RUN failed: {}", chain(&e))))?;
    let lo = Interface::by_name("lo")?;
    match super::live::run_live(prog, lo.index(), &frame, 0, 1) {
        Ok(()) => Ok(LiveFrames::Allowed),
        Err(e) => Ok(LiveFrames::Refused(chain(&e))),
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
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(GenRequest::Auto);
        }
        s.parse()
            .map(GenRequest::Exactly)
            .map_err(|e: String| format!("{e}, or auto"))
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

/// Picks the generator for `request`, asking the kernel when it matters.
pub fn choose(request: GenRequest) -> Result<GenChoice, PktgenError> {
    match request {
        GenRequest::Exactly(GenMode::LiveFrames) => match live_frames()? {
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
        GenRequest::Auto => Ok(match live_frames()? {
            LiveFrames::Allowed => GenChoice {
                mode: GenMode::LiveFrames,
                why: "the kernel allows BPF_PROG_TEST_RUN live frames, the fastest generator"
                    .into(),
            },
            LiveFrames::Refused(answer) => GenChoice {
                mode: GenMode::FanOut,
                why: format!(
                    "the kernel refuses BPF_PROG_TEST_RUN live frames ({answer}); the XDP fan-out is the fastest generator it allows"
                ),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
