//! Candidate generators, measured beside the product's (live frames, fan-out, AF_XDP) by
//! `measure_mpps` and nowhere else: they are here to be compared, not shipped.
//!
//! - [`PacketRingGenerator`]: an AF_PACKET TPACKET_V2 TX ring bypassing the qdisc; one
//!   `send()` hands the kernel the whole ring.
//! - [`TcCloneGenerator`]: a tc egress program (tests/bpf/tc_clone.bpf.c) that turns every
//!   packet a socket sends into `copies` + 1 with `bpf_clone_redirect`.
//!
//! Both run in the calling thread's network namespace, on the interface given to `new`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::MapError;
use aya::maps::{Array, PerCpuArray};
use aya::programs::ProgramError;
use aya::programs::{SchedClassifier, TcAttachType, tc};
use rig::traffic::packet::set_flow;
use rig::traffic::{PacketSpec, PktgenError, Protocol};
use xdp_redirect::Interface;

/// What goes wrong setting up or running a candidate.
#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
    // Boxed, as are the aya errors below: they are large, and a candidate's error path is
    // never hot.
    #[error(transparent)]
    Spec(Box<PktgenError>),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Build(#[from] bpf_build::BpfBuildError),
    #[error("opening {object}: {source}")]
    Open {
        object: String,
        source: Box<aya::EbpfError>,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: Box<MapError>,
    },
    #[error("{what} {TC_PROGRAM}: {source}")]
    Program {
        what: &'static str,
        source: Box<ProgramError>,
    },
}

impl From<PktgenError> for CandidateError {
    fn from(e: PktgenError) -> CandidateError {
        CandidateError::Spec(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, CandidateError>;

/// The last OS error, with what was being done.
fn os_error(what: &'static str) -> CandidateError {
    os(what, std::io::Error::last_os_error())
}

fn os(what: &'static str, source: std::io::Error) -> CandidateError {
    CandidateError::Os { what, source }
}

fn map_error(map: &'static str) -> impl FnOnce(MapError) -> CandidateError {
    move |source| CandidateError::Map {
        map,
        source: Box::new(source),
    }
}

fn program_error(what: &'static str) -> impl FnOnce(ProgramError) -> CandidateError {
    move |source| CandidateError::Program {
        what,
        source: Box::new(source),
    }
}

/// Sets an int-sized (or `T`-sized) SOL_PACKET option.
fn set_packet_option<T>(
    socket: &OwnedFd,
    option: libc::c_int,
    value: &T,
    what: &'static str,
) -> Result<()> {
    testkit::sock::setsockopt(socket, libc::SOL_PACKET, option, value).map_err(|e| os(what, e))
}

/// An AF_PACKET raw socket that receives nothing (protocol 0). Unbound: the caller sets
/// its options first (a TX ring must exist before bind).
fn packet_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_error("AF_PACKET socket"));
    }
    // SAFETY: a fresh socket we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `socket` to send on `interface`.
fn bind_to(socket: &OwnedFd, interface: &Interface) -> Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = interface.index() as i32;
    // SAFETY: a valid socket and a sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(os_error("binding the AF_PACKET socket"))
    }
}

/// Bytes per ring frame: the tpacket2 header and a 1514-byte frame fit.
const RING_FRAME: usize = 2048;
/// Bytes per ring block (a multiple of the page size, of whole frames).
const RING_BLOCK: usize = 1 << 16;
/// Frames in the ring: what one `send()` hands the kernel.
const RING_FRAMES: usize = 512;

/// AF_PACKET with a TPACKET_V2 TX ring and PACKET_QDISC_BYPASS: frames are written into
/// a ring shared with the kernel, marked "send request", and one `send()` makes the kernel
/// transmit every marked frame (straight to the driver, no qdisc), each then marked
/// available again once the device is done with it.
pub struct PacketRingGenerator {
    // Unmapped (Drop) before the socket closes.
    ring: NonNull<u8>,
    socket: OwnedFd,
    /// Which frames the kernel has (marked for sending, not yet seen available again).
    in_kernel: Vec<bool>,
    spec: PacketSpec,
    next_flow: u64,
    taken: u64,
    wrong_format: u64,
}

impl PacketRingGenerator {
    /// Opens the socket and its ring on `interface` (of the calling thread's namespace)
    /// and writes `spec`'s frame into every ring frame.
    pub fn new(interface: &Interface, spec: &PacketSpec) -> Result<PacketRingGenerator> {
        spec.validate()?;
        let socket = packet_socket()?;
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        set_packet_option(&socket, libc::PACKET_VERSION, &version, "PACKET_VERSION")?;
        let one: libc::c_int = 1;
        set_packet_option(
            &socket,
            libc::PACKET_QDISC_BYPASS,
            &one,
            "PACKET_QDISC_BYPASS",
        )?;
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK as u32,
            tp_block_nr: (RING_FRAMES * RING_FRAME / RING_BLOCK) as u32,
            tp_frame_size: RING_FRAME as u32,
            tp_frame_nr: RING_FRAMES as u32,
        };
        set_packet_option(&socket, libc::PACKET_TX_RING, &req, "PACKET_TX_RING")?;
        // SAFETY: maps the ring the kernel just made for this socket; unmapped on drop.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RING_FRAMES * RING_FRAME,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                socket.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(os_error("mapping the TX ring"));
        }
        let ring =
            NonNull::new(ring.cast()).ok_or(CandidateError::Unsupported("mmap returned null"))?;
        let mut generator = PacketRingGenerator {
            ring,
            socket,
            in_kernel: vec![false; RING_FRAMES],
            spec: spec.clone(),
            next_flow: 0,
            taken: 0,
            wrong_format: 0,
        };
        let frame = spec.frame();
        for i in 0..RING_FRAMES {
            generator.data(i)[..frame.len()].copy_from_slice(&frame);
        }
        bind_to(&generator.socket, interface)?;
        Ok(generator)
    }

    /// Frame `i`'s status word, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: frame i's tpacket2_hdr starts at i * RING_FRAME (whole frames per
        // block, blocks back to back) inside the mapping, aligned to 16; tp_status is its
        // first u32, which the kernel also writes: hence atomic.
        unsafe { &*self.ring.as_ptr().add(i * RING_FRAME).cast::<AtomicU32>() }
    }

    /// Frame `i`'s tp_len, which the kernel reads when the status says "send".
    fn set_len(&self, i: usize, len: u32) {
        let offset = i * RING_FRAME + std::mem::offset_of!(libc::tpacket2_hdr, tp_len);
        // SAFETY: inside frame i's header, aligned; the frame is ours (not in the kernel).
        unsafe {
            self.ring
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(len)
        }
    }

    /// Frame `i`'s packet bytes: after the 16-aligned tpacket2 header (the sockaddr_ll
    /// that TPACKET2_HDRLEN also counts is for receiving).
    fn data(&mut self, i: usize) -> &mut [u8] {
        let offset = libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>();
        // SAFETY: inside frame i of the mapping; only called for frames the kernel does
        // not hold (before the socket is bound, or status available), borrowed as
        // `self` is.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ring.as_ptr().add(i * RING_FRAME + offset),
                RING_FRAME - offset,
            )
        }
    }

    /// Counts the frames the kernel has given back since the last look and, when
    /// `refill`, marks every frame it does not hold for sending, re-addressed to the
    /// next flow.
    fn scan(&mut self, refill: bool) {
        let (len, protocol) = (usize::from(self.spec.size), self.spec.protocol);
        for i in 0..RING_FRAMES {
            let status = self.status(i).load(Ordering::Acquire);
            if self.in_kernel[i] {
                if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
                    continue;
                }
                self.in_kernel[i] = false;
                if status & libc::TP_STATUS_WRONG_FORMAT != 0 {
                    self.wrong_format += 1;
                } else {
                    self.taken += 1;
                }
            }
            if refill {
                let flow = self.spec.flow(self.next_flow);
                set_flow(&mut self.data(i)[..len], protocol, flow);
                self.next_flow += 1;
                self.set_len(i, len as u32);
                // Release: the frame's bytes and length before the kernel sees "send".
                self.status(i)
                    .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
                self.in_kernel[i] = true;
            }
        }
    }

    /// Sends the ring over and over for `duration`. Returns the frames the kernel took
    /// (gave back as sent; a frame the device dropped counts too, so the sink has the
    /// truth) and the time it took. A blocking `send()` returns once the device is done
    /// with what it sent, so everything is counted at the end.
    pub fn run(&mut self, duration: Duration) -> Result<(u64, Duration)> {
        let start = Instant::now();
        let before = self.taken;
        loop {
            let done = start.elapsed() >= duration;
            self.scan(!done);
            if done {
                break;
            }
            // SAFETY: a valid socket; a null, empty buffer means "send what the ring has".
            let rc = unsafe { libc::send(self.socket.as_raw_fd(), std::ptr::null(), 0, 0) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // The device was busy: the frames not sent stay marked, sent next time.
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {}
                    // A malformed frame (marked so): counted by the next scan.
                    Some(libc::EINVAL) => {}
                    _ => return Err(os("send on the TX ring", e)),
                }
            }
        }
        Ok((self.taken - before, start.elapsed()))
    }

    /// Frames the kernel refused as malformed (TP_STATUS_WRONG_FORMAT).
    pub fn wrong_format(&self) -> u64 {
        self.wrong_format
    }
}

impl Drop for PacketRingGenerator {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that length; nothing borrows it now.
        unsafe { libc::munmap(self.ring.as_ptr().cast(), RING_FRAMES * RING_FRAME) };
    }
}

/// The tc program in tests/bpf/tc_clone.bpf.c.
const TC_PROGRAM: &str = "kxg_tc_clone";
/// Clones per packet sent: 1 send = 64 packets, a quarter of the peer veth's ring (the
/// clones of one send all queue there before its NAPI runs).
pub const TC_COPIES: u32 = 63;

/// C `struct clone_cfg`.
#[derive(Clone, Copy)]
#[repr(C)]
struct CloneCfg {
    ifindex: u32,
    copies: u32,
    port_lo: u32,
    port_count: u32,
}

// SAFETY: four u32s, no padding; any bit pattern is valid.
unsafe impl aya::Pod for CloneCfg {}

/// A tc egress program that makes each packet sent out of the interface `copies` + 1
/// packets (see tests/bpf/tc_clone.bpf.c), fed by an AF_PACKET socket that goes through
/// the qdisc layer (no bypass: the tc egress hook is there). Dropping it detaches the
/// program (the link belongs to the `Ebpf`).
pub struct TcCloneGenerator {
    socket: OwnedFd,
    ebpf: Ebpf,
    frame: Vec<u8>,
    spec: PacketSpec,
    copies: u32,
    next_flow: u64,
    send_errors: u64,
}

impl TcCloneGenerator {
    /// Compiles and attaches the program to `interface`'s egress (of the calling thread's
    /// namespace) for `spec` (UDP only: the program rewrites the UDP source port) and
    /// opens the socket.
    pub fn new(interface: &Interface, spec: &PacketSpec) -> Result<TcCloneGenerator> {
        spec.validate()?;
        if spec.protocol != Protocol::Udp {
            return Err(CandidateError::Unsupported(
                "the tc clone generator sends UDP only",
            ));
        }
        let mut ebpf = compile_and_load("tc_clone")?;
        let cfg = CloneCfg {
            ifindex: interface.index(),
            copies: TC_COPIES,
            port_lo: u32::from(spec.src_port),
            port_count: spec.ports_per_ip(),
        };
        let map = ebpf
            .map_mut("clone_cfg")
            .ok_or(CandidateError::Unsupported("no map clone_cfg"))?;
        let mut map: Array<_, CloneCfg> = Array::try_from(map).map_err(map_error("clone_cfg"))?;
        map.set(0, cfg, 0).map_err(map_error("clone_cfg"))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(CandidateError::Unsupported("no program kxg_tc_clone"))?
            .try_into()
            .map_err(program_error("the type of"))?;
        program.load().map_err(program_error("loading"))?;
        // Kernels from 6.6 attach with TCX and need no qdisc; older ones attach a
        // cls_bpf filter to clsact, which may exist already: an error here is not final.
        let _ = tc::qdisc_add_clsact(interface.name());
        program
            .attach(interface.name(), TcAttachType::Egress)
            .map_err(program_error("attaching (egress)"))?;
        let socket = packet_socket()?;
        bind_to(&socket, interface)?;
        Ok(TcCloneGenerator {
            socket,
            ebpf,
            frame: spec.frame(),
            spec: spec.clone(),
            copies: TC_COPIES,
            next_flow: 0,
            send_errors: 0,
        })
    }

    /// Sends for `duration`, each send from the next flow the program does not make
    /// (it makes the `copies` after it, by source port). Returns sends x (copies + 1),
    /// counting sends the kernel accepted, and the time it took.
    pub fn run(&mut self, duration: Duration) -> Result<(u64, Duration)> {
        let start = Instant::now();
        let mut sends = 0u64;
        while start.elapsed() < duration {
            let flow = self.spec.flow(self.next_flow);
            set_flow(&mut self.frame, self.spec.protocol, flow);
            self.next_flow += u64::from(self.copies) + 1;
            // SAFETY: a valid socket and a live buffer of `frame.len()` bytes.
            let rc = unsafe {
                libc::send(
                    self.socket.as_raw_fd(),
                    self.frame.as_ptr().cast(),
                    self.frame.len(),
                    0,
                )
            };
            if rc >= 0 {
                sends += 1;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // The device dropped the original (its clones may have gone): not counted.
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => self.send_errors += 1,
                _ => return Err(os("send", e)),
            }
        }
        Ok((sends * (u64::from(self.copies) + 1), start.elapsed()))
    }

    /// Sends the kernel refused (ENOBUFS, EAGAIN) over all runs.
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Clones the program made and clones the kernel refused, since loading.
    pub fn clone_stats(&self) -> Result<(u64, u64)> {
        let map = self
            .ebpf
            .map("clone_stats")
            .ok_or(CandidateError::Unsupported("no map clone_stats"))?;
        let stats: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_error("clone_stats"))?;
        let sum = |key| -> Result<u64> {
            Ok(stats
                .get(&key, 0)
                .map_err(map_error("clone_stats"))?
                .iter()
                .sum())
        };
        Ok((sum(0)?, sum(1)?))
    }
}

/// Compiles tests/bpf/`name`.bpf.c (bpf-build, as xdp-redirect's AF_XDP tests compile theirs) and
/// opens the object; programs are left for the caller to load.
fn compile_and_load(name: &str) -> Result<Ebpf> {
    let src = format!("{}/tests/bpf/{name}.bpf.c", env!("CARGO_MANIFEST_DIR"));
    let obj = format!(
        "{}/{name}-{}.bpf.o",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    bpf_build::compile(src.as_ref(), obj.as_ref())?;
    let ebpf = Ebpf::load_file(&obj).map_err(|source| CandidateError::Open {
        object: obj.clone(),
        source: Box::new(source),
    });
    let _ = std::fs::remove_file(&obj);
    ebpf
}
