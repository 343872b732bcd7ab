//! The live-frames generator: `kxdp_gen` run with BPF_PROG_TEST_RUN in live-frames mode
//! ([`super::live`]) on an interface, sending every packet out of it with XDP_TX. The
//! fastest generator, where the kernel allows live frames ([`super::probe`]). The
//! interface's peer must have an XDP program (e.g. the [`super::sink::Sink`]) for veth to
//! take XDP_TX frames (ARCHITECTURE.md §5).
//!
//! Also the generator programs' shared set-up: the packet configuration and the per-CPU
//! flow counter, which `kxdp_gen_copy` (the fan-out's) uses alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aya::Ebpf;
use aya::maps::{Array, PerCpuArray};

use super::live::run_live;
use super::maps::{GenCfg, HEADER_LEN};
use super::pace::{Next, Pacer, RunLimit};
use super::packet::PacketSpec;
use super::{GEN_PROGRAM, GenMode, GenReport, PktgenError, load_object};
use xdp_redirect::{AttachMode, Attachment};
use xdp_redirect::{Interface, attach, program};

/// Bytes of XDP metadata in front of the test frame: how the program tells a test run
/// (generate) from a real packet received where it is attached as the anchor (pass).
const META_LEN: u32 = 4;

/// Runs per BPF_PROG_TEST_RUN call when not paced: ~13 ms at 5 Mpps, so a duration is
/// kept to a few ms while the per-call setup stays small. (Without the anchor each call
/// also waits for two RCU grace periods, tens of ms on a loaded machine.)
const CHUNK: u64 = 1 << 16;

/// A loaded generator for one interface and one [`PacketSpec`]; [`LiveFramesGenerator::run`]
/// may be called repeatedly (the flow counter carries on).
#[derive(Debug)]
pub struct LiveFramesGenerator {
    ebpf: Ebpf,
    interface: Interface,
    spec: PacketSpec,
    /// Metadata + frame, as handed to the test run.
    buf: Vec<u8>,
    anchor: Result<Attachment, NotAnchored>,
}

/// Why the generator program is not anchored in the interface's XDP dispatcher
/// (generation works all the same, only slower).
#[derive(Debug, thiserror::Error)]
pub enum NotAnchored {
    #[error("{0} has no driver-mode XDP")]
    NoDriverMode(Interface),
    /// The interface has a program already, or refuses one.
    #[error(transparent)]
    Attach(#[from] xdp_redirect::XdpError),
}

impl LiveFramesGenerator {
    /// Loads the program and writes `spec` into its configuration. `interface` is of the
    /// calling thread's network namespace, and so must be the thread calling `run`.
    ///
    /// Also attaches the program to `interface` itself (where it passes every real
    /// packet), so that the kernel's XDP dispatcher keeps it between test runs: otherwise
    /// every BPF_PROG_TEST_RUN call adds and removes it there, two synchronize_rcu() per
    /// call. If the interface has an XDP program already, or no driver mode, generation
    /// works without that ([`LiveFramesGenerator::anchored`] says why), only slower.
    pub fn new(
        interface: &Interface,
        spec: &PacketSpec,
    ) -> Result<LiveFramesGenerator, PktgenError> {
        spec.validate()?;
        let mut ebpf = load_object(GEN_PROGRAM)?;
        write_gen_cfg(&mut ebpf, spec)?;
        let mut buf = vec![0u8; META_LEN as usize];
        buf.extend_from_slice(&spec.frame());
        let anchor = match attach(&mut ebpf, GEN_PROGRAM, interface) {
            Ok(a) if a.mode() == AttachMode::Driver => Ok(a),
            Ok(a) => {
                let _ = xdp_redirect::detach(&mut ebpf, a);
                Err(NotAnchored::NoDriverMode(interface.clone()))
            }
            Err(e) => Err(NotAnchored::Attach(e)),
        };
        Ok(LiveFramesGenerator {
            ebpf,
            interface: interface.clone(),
            spec: spec.clone(),
            buf,
            anchor,
        })
    }

    /// Whether the program is anchored in the XDP dispatcher (see
    /// [`LiveFramesGenerator::new`]), or why not.
    pub fn anchored(&self) -> Result<(), &NotAnchored> {
        self.anchor.as_ref().map(|_| ())
    }

    /// Generates until `limit` says stop. The kernel sends every run's packet (the count
    /// is exact); what the receiving side could not take shows in its drop counters.
    pub fn run(&mut self, limit: &RunLimit) -> Result<GenReport, PktgenError> {
        self.run_until(limit, &AtomicBool::new(false))
    }

    /// [`LiveFramesGenerator::run`] that also ends (between chunks) once `stop` is set: for a
    /// background load that lasts exactly as long as what it accompanies.
    pub fn run_until(
        &mut self,
        limit: &RunLimit,
        stop: &AtomicBool,
    ) -> Result<GenReport, PktgenError> {
        limit.check_bounded()?;
        let prog = program(&self.ebpf, GEN_PROGRAM)?;
        let pacer = Pacer::new(*limit, CHUNK);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match pacer.next(sent, Instant::now()) {
                Next::Done => break,
                Next::WaitUntil(at) => pacer.wait_until(at),
                Next::Send(n) => {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    run_live(prog, self.interface.index(), &self.buf, META_LEN, n)
                        .map_err(xdp_redirect::XdpError::from)?;
                    sent += u64::from(n);
                }
            }
        }
        Ok(GenReport {
            mode: GenMode::LiveFrames,
            packets: sent,
            bytes: sent * u64::from(self.spec.size),
            elapsed: pacer.start().elapsed(),
            tx_retries: 0,
        })
    }

    /// Packets generated per CPU since loading (the flow counters).
    pub fn per_cpu_generated(&self) -> Result<Vec<u64>, PktgenError> {
        per_cpu_cursor(&self.ebpf)
    }
}

/// Writes `spec` into the object's `gen_cfg`, which `kxdp_gen` and `kxdp_gen_copy` read.
pub(crate) fn write_gen_cfg(ebpf: &mut Ebpf, spec: &PacketSpec) -> Result<(), PktgenError> {
    let cfg = GenCfg {
        header: spec.header_template(),
        flows: spec.flows,
        src_ports: spec.ports_per_ip(),
        src_ip: u32::from(spec.src_ip),
        src_port: spec.src_port,
        proto: spec.protocol.number(),
        pad: 0,
    };
    let map = ebpf
        .map_mut("gen_cfg")
        .ok_or(xdp_redirect::XdpError::MissingMap("gen_cfg"))?;
    let mut array: Array<_, GenCfg> = Array::try_from(map).map_err(xdp_redirect::XdpError::from)?;
    array.set(0, cfg, 0).map_err(xdp_redirect::XdpError::from)?;
    const _: () = assert!(HEADER_LEN == super::packet::MIN_FRAME as usize);
    Ok(())
}

/// The object's per-CPU flow counters: packets written on each CPU since loading.
pub(crate) fn per_cpu_cursor(ebpf: &Ebpf) -> Result<Vec<u64>, PktgenError> {
    let map = ebpf
        .map("gen_cursor")
        .ok_or(xdp_redirect::XdpError::MissingMap("gen_cursor"))?;
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(xdp_redirect::XdpError::from)?;
    Ok(array
        .get(&0, 0)
        .map_err(xdp_redirect::XdpError::from)?
        .iter()
        .copied()
        .collect())
}
