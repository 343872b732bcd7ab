//! The fan-out: one injected frame becomes `copies` packets out of an interface, each
//! written by a devmap program, all in the kernel and without socket buffers. It is how the
//! rig generates where the kernel refuses BPF_PROG_TEST_RUN live frames ([`super::probe`]).
//!
//! Mechanism (bpf/pktgen.bpf.c has the kernel half): a veth pair of our own in the calling
//! thread's namespace; an AF_PACKET socket injects a marked frame into one end;
//! `kxdp_fanout` on the other end redirects it with BPF_F_BROADCAST to every entry of a
//! devmap whose entries all name the output interface, so the kernel copies the frame per
//! entry, runs the entry's devmap program on each copy (which writes the next packet), and
//! transmits it with the device's `ndo_xdp_xmit`: the frames reach the output's peer as
//! XDP frames, the path live frames' XDP_TX took. As for XDP_TX, the peer needs an XDP
//! program (ARCHITECTURE.md §5).
//!
//! The injection normally runs the whole chain in the sender's own softirq (the veth's NAPI
//! is scheduled on the sending CPU and runs when `send()` re-enables bottom halves). When
//! the kernel defers softirq work to ksoftirqd instead, the injector waits (a per-CPU
//! counter of handled injections) so that at most two (`MAX_IN_FLIGHT`) injections are ever
//! unhandled: a burst stays within the receiving veth's 256-frame ring.
//!
//! [`FanOut`] is the mechanism, for any devmap program (the AF_XDP tests bring their own);
//! [`FanOutGenerator`] is the rig's generator on top of it, writing a [`PacketSpec`]'s
//! flows with `kxdp_gen_copy`.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray, xdp::DevMap};
use aya::programs::ProgramFd;

use super::maps::HEADER_LEN;
use super::pace::{Next, Pacer, RunLimit};
use super::packet::PacketSpec;
use super::{GenMode, GenReport, OBJECT, PktgenError};
use xdp_redirect::{Attachment, Interface};
use xdp_redirect::{XdpError, attach, program_mut};

/// The fan-out program in the pktgen object.
const FANOUT_PROGRAM: &str = "kxdp_fanout";
/// The devmap program that writes the rig's packets.
pub const COPY_PROGRAM: &str = "kxdp_gen_copy";
/// EtherType of an injected frame (C `FANOUT_ETHERTYPE`).
const FANOUT_ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// The byte after the Ethernet header: which devmap copies the frame (C `FAN_MANY`,
/// `FAN_ONE`).
const FAN_MANY: u8 = 0;
const FAN_ONE: u8 = 1;
/// Entries of `fan_many` (C): the most copies one injection can make.
pub const MAX_COPIES: u32 = 256;
/// Copies per injection when unpaced: the per-injection cost (a syscall, a socket buffer,
/// the veth hop) spread over 64 packets, and a burst a quarter of the receiving ring.
pub const DEFAULT_COPIES: u32 = 64;
/// How long to wait for the kernel to take what was injected before calling it stalled.
const TAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Injected frames the fan-out program may have yet to handle. Normally each injection is
/// handled before `send()` returns (the softirq runs inline); when the kernel defers its
/// softirq work to ksoftirqd, unhandled injections would pile up in the pair's ring and one
/// NAPI poll would then fan out 64 of them at once, 4096 copies into a 256-frame ring: the
/// bound keeps a burst within the ring (2 x 64 copies).
const MAX_IN_FLIGHT: u64 = 2;

/// A fan-out onto one output interface. Dropping it deletes its veth pair (and with it
/// the program attached there).
pub struct FanOut {
    // Field order is drop order: the program's attachment and maps before the pair.
    ebpf: Ebpf,
    _attachment: Attachment,
    copy_program: ProgramFd,
    injector: OwnedFd,
    pair: VethPair,
    out: Interface,
    copies: u32,
    frame: Vec<u8>,
    /// Frames the kernel took since the fan-out was made, and how many of them
    /// `kxdp_fanout` had handled when last looked.
    injected: u64,
    handled_seen: u64,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("out", &self.out)
            .field("pair", &self.pair.inject)
            .field("copies", &self.copies)
            .field("frame_len", &self.frame.len())
            .finish_non_exhaustive()
    }
}

impl FanOut {
    /// Builds a fan-out onto `out` (an interface of the calling thread's namespace, in
    /// which the pair is made too) whose copies start as `frame` and are written by
    /// `copy_program` (an XDP program loaded for devmaps, `SEC("xdp/devmap")`), `copies`
    /// per injection (1..=[`MAX_COPIES`]). The injection marks bytes 12..15 of `frame`
    /// (EtherType and the byte after): the copy program must write them.
    pub fn new(
        out: &Interface,
        copy_program: &ProgramFd,
        frame: &[u8],
        copies: u32,
    ) -> Result<FanOut, PktgenError> {
        if !(HEADER_LEN..=usize::from(super::MAX_FRAME)).contains(&frame.len()) {
            return Err(PktgenError::Spec(format!(
                "fan-out frame of {} B: want {HEADER_LEN}..={} B",
                frame.len(),
                super::MAX_FRAME
            )));
        }
        let copy_program = copy_program.try_clone().map_err(|e| PktgenError::Io {
            what: "duplicating the devmap program's fd",
            source: e,
        })?;
        let pair = VethPair::create()?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(XdpError::from)?;
        program_mut(&mut ebpf, FANOUT_PROGRAM)?
            .load()
            .map_err(XdpError::from)?;
        let attachment = attach(&mut ebpf, FANOUT_PROGRAM, &pair.fan_interface()?)?;
        let injector = packet_socket(&pair.inject_interface()?)?;
        let mut frame = frame.to_vec();
        frame[12..14].copy_from_slice(&FANOUT_ETHERTYPE);
        let mut fan = FanOut {
            ebpf,
            _attachment: attachment,
            copy_program,
            injector,
            pair,
            out: out.clone(),
            copies: 0,
            frame,
            injected: 0,
            handled_seen: 0,
        };
        fan.fill("fan_one", 1)?;
        fan.set_copies(copies)?;
        Ok(fan)
    }

    /// Copies per many-injection now.
    pub fn copies(&self) -> u32 {
        self.copies
    }

    /// Sets how many copies a many-injection makes (1..=[`MAX_COPIES`]). Not while
    /// injecting from another thread.
    pub fn set_copies(&mut self, copies: u32) -> Result<(), PktgenError> {
        if !(1..=MAX_COPIES).contains(&copies) {
            return Err(PktgenError::Spec(format!(
                "{copies} copies per injection: want 1..={MAX_COPIES}"
            )));
        }
        self.fill("fan_many", copies)?;
        self.copies = copies;
        Ok(())
    }

    /// Points the first `n` entries of devmap `name` at the output interface with the
    /// copy program, and empties the rest (a broadcast skips empty entries).
    fn fill(&mut self, name: &'static str, n: u32) -> Result<(), PktgenError> {
        let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
        let map_fd = match &*map {
            aya::maps::Map::DevMap(data) => data.fd().as_fd().as_raw_fd(),
            _ => return Err(PktgenError::Spec(format!("map {name} is not a devmap"))),
        };
        let mut devmap: DevMap<&mut MapData> = DevMap::try_from(map).map_err(XdpError::from)?;
        for i in 0..devmap.len() {
            if i < n {
                devmap
                    .set(i, self.out.index(), Some(&self.copy_program), 0)
                    .map_err(|e| PktgenError::Spec(format!("devmap {name}[{i}]: {e}")))?;
            } else {
                delete_entry(map_fd, i).map_err(|source| PktgenError::Io {
                    what: "emptying a devmap entry",
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Injects up to `n` frames that each make [`FanOut::copies`] packets (`many`) or one;
    /// returns how many the kernel took (fewer when the pair's ring was full: retry later).
    pub fn inject(&mut self, n: u64, many: bool) -> Result<u64, PktgenError> {
        self.frame[14] = if many { FAN_MANY } else { FAN_ONE };
        let mut taken = 0;
        while taken < n {
            self.wait_in_flight_below(MAX_IN_FLIGHT)?;
            // SAFETY: a valid socket bound to the pair's end, and a live buffer of
            // `frame.len()` bytes.
            let rc = unsafe {
                libc::send(
                    self.injector.as_raw_fd(),
                    self.frame.as_ptr().cast(),
                    self.frame.len(),
                    0,
                )
            };
            if rc >= 0 {
                taken += 1;
                self.injected += 1;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                _ => {
                    return Err(PktgenError::Io {
                        what: "injecting into the fan-out (send)",
                        source: e,
                    });
                }
            }
        }
        Ok(taken)
    }

    /// Waits until fewer than `limit` injected frames are unhandled (ksoftirqd gets the CPU
    /// while this thread yields).
    fn wait_in_flight_below(&mut self, limit: u64) -> Result<(), PktgenError> {
        if self.injected.saturating_sub(self.handled_seen) < limit {
            return Ok(());
        }
        let deadline = Instant::now() + TAKE_TIMEOUT;
        loop {
            self.handled_seen = self.handled()?;
            if self.injected.saturating_sub(self.handled_seen) < limit {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PktgenError::FanOutStalled {
                    injected: self.injected,
                    handled: self.handled_seen,
                });
            }
            std::thread::yield_now();
        }
    }

    /// Sends exactly `packets` packets (bursts of [`FanOut::copies`], the rest one by one)
    /// and returns once the kernel has sent them on.
    pub fn send(&mut self, packets: u64) -> Result<(), PktgenError> {
        let unit = u64::from(self.copies);
        for (mut left, many) in [(packets / unit, true), (packets % unit, false)] {
            while left > 0 {
                left -= self.inject(left, many)?;
            }
        }
        self.wait_handled()
    }

    /// Injected frames the fan-out program has handled since the fan-out was made.
    pub fn handled(&self) -> Result<u64, PktgenError> {
        let map = self
            .ebpf
            .map("fan_seen")
            .ok_or(XdpError::MissingMap("fan_seen"))?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(XdpError::from)?;
        Ok(array.get(&0, 0).map_err(XdpError::from)?.iter().sum())
    }

    /// Waits until the fan-out program has handled every injected frame, so that
    /// everything taken has been sent on before the caller reads a receiver's counters.
    pub fn wait_handled(&mut self) -> Result<(), PktgenError> {
        self.wait_in_flight_below(1)
    }
}

/// Empties entry `key` of the array-like map `map_fd` (BPF_MAP_DELETE_ELEM; aya's
/// `DevMap` has no remove). An entry that is empty already is not an error.
fn delete_entry(map_fd: std::os::fd::RawFd, key: u32) -> std::io::Result<()> {
    /// The `map_fd`, `key` prefix of `union bpf_attr` that BPF_MAP_DELETE_ELEM reads.
    #[repr(C)]
    struct DeleteAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        _value: u64,
        _flags: u64,
    }
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    let attr = DeleteAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: (&raw const key) as u64,
        _value: 0,
        _flags: 0,
    };
    // SAFETY: bpf(2) reads `attr` (size given) and the key it points at, both live here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &raw const attr,
            size_of::<DeleteAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        return Ok(());
    }
    Err(e)
}

/// The fan-out's veth pair: `<name>i` (injected into) and `<name>f` (where `kxdp_fanout`
/// runs), both in the namespace of the thread that made it; deleted on drop.
#[derive(Debug)]
struct VethPair {
    inject: String,
    fan: String,
}

impl VethPair {
    fn create() -> Result<VethPair, PktgenError> {
        // Unique per process and call, at most 15 bytes: several fan-outs may share a
        // namespace (one per generating thread).
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("kxfo{:x}{:x}", std::process::id() & 0xffff, n & 0xfff);
        let pair = VethPair {
            inject: format!("{base}i"),
            fan: format!("{base}f"),
        };
        let add = [
            "link",
            "add",
            pair.inject.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            pair.fan.as_str(),
        ];
        if ip(&add).is_err() {
            // A pair of that name left by a process that died: ours now.
            let _ = ip(&["link", "del", pair.inject.as_str()]);
            ip(&add)?;
        }
        for dev in [&pair.inject, &pair.fan] {
            ip(&["link", "set", dev.as_str(), "up"])?;
        }
        Ok(pair)
    }

    fn inject_interface(&self) -> Result<Interface, XdpError> {
        Interface::by_name(&self.inject)
    }

    fn fan_interface(&self) -> Result<Interface, XdpError> {
        Interface::by_name(&self.fan)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting one end deletes both, and detaches what was attached to them.
        let _ = ip(&["link", "del", self.inject.as_str()]);
    }
}

/// Runs `ip ARGS` (iproute2) in the calling thread's network namespace, which a child
/// process inherits.
pub(crate) fn ip(args: &[&str]) -> Result<(), PktgenError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| PktgenError::Io {
            what: "running ip (iproute2)",
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(PktgenError::Command {
        command: format!("ip {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// An AF_PACKET raw socket that sends on `interface` and receives nothing (protocol 0),
/// bypassing the qdisc so that a full ring is reported (ENOBUFS) rather than queued.
fn packet_socket(interface: &Interface) -> Result<OwnedFd, PktgenError> {
    let io = |what| move |source| PktgenError::Io { what, source };
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("AF_PACKET socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh socket we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io("PACKET_QDISC_BYPASS")(std::io::Error::last_os_error()));
    }
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
    if rc != 0 {
        return Err(io("binding the AF_PACKET socket")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(socket)
}

/// The rig's generator on a [`FanOut`]: a [`PacketSpec`]'s packets (its flows in order,
/// per CPU, as the live-frames generator writes them) out of an interface.
pub struct FanOutGenerator {
    // Field order is drop order: the fan-out (which holds a duplicate of the copy
    // program's fd) before the object that owns the program.
    fan: FanOut,
    ebpf: Ebpf,
    spec: PacketSpec,
}

impl std::fmt::Debug for FanOutGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOutGenerator")
            .field("fan", &self.fan)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl FanOutGenerator {
    /// Loads `kxdp_gen_copy` with `spec` and builds the fan-out onto `interface` (of the
    /// calling thread's namespace, which must also be the thread calling `run`).
    pub fn new(interface: &Interface, spec: &PacketSpec) -> Result<FanOutGenerator, PktgenError> {
        spec.validate()?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(XdpError::from)?;
        program_mut(&mut ebpf, COPY_PROGRAM)?
            .load()
            .map_err(XdpError::from)?;
        super::live_frames::write_gen_cfg(&mut ebpf, spec)?;
        let fan = {
            let prog = program_mut(&mut ebpf, COPY_PROGRAM)?;
            let fd = prog.fd().map_err(XdpError::from)?;
            FanOut::new(interface, fd, &spec.frame(), DEFAULT_COPIES)?
        };
        Ok(FanOutGenerator {
            fan,
            ebpf,
            spec: spec.clone(),
        })
    }

    /// Generates until `limit` says stop (see [`FanOutGenerator::run_until`]).
    pub fn run(&mut self, limit: &RunLimit) -> Result<GenReport, PktgenError> {
        self.run_until(limit, &AtomicBool::new(false))
    }

    /// Generates until `limit` says stop or `stop` is set, then waits until the kernel has
    /// sent everything it took. A count is exact: `packets` = copies of what was injected
    /// (a frame the receiving ring had no room for is dropped there and shows in its
    /// counters, as with every generator). Paced runs make smaller bursts (about 10 000 a
    /// second) so that the pace holds within a tenth of a millisecond.
    pub fn run_until(
        &mut self,
        limit: &RunLimit,
        stop: &AtomicBool,
    ) -> Result<GenReport, PktgenError> {
        limit.check_bounded()?;
        let copies = burst_for(limit.rate_pps);
        self.fan.set_copies(copies)?;
        let unit = u64::from(copies);
        let pacer = Pacer::new(*limit, unit * 16);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match pacer.next(sent, Instant::now()) {
                Next::Done => break,
                Next::WaitUntil(at) => pacer.wait_until(at),
                Next::Send(n) => {
                    let last = limit.count.is_some_and(|c| c - sent == n && n < unit);
                    let (k, many) = match (n / unit, last) {
                        (_, true) => (n, false),
                        (0, false) => {
                            // Less than a burst allowed yet: wait for one.
                            let rate = limit.rate_pps.unwrap_or(1).max(1);
                            let wait = Duration::from_nanos(
                                ((unit - n) * 1_000_000_000 / rate).min(1_000_000),
                            );
                            pacer.wait_until(Instant::now() + wait);
                            continue;
                        }
                        (bursts, false) => (bursts, true),
                    };
                    let taken = self.fan.inject(k, many)?;
                    sent += if many { taken * unit } else { taken };
                    if taken < k {
                        // The pair's ring is full: let the softirq catch up.
                        std::thread::yield_now();
                    }
                }
            }
        }
        let elapsed = pacer.start().elapsed();
        self.fan.wait_handled()?;
        Ok(GenReport {
            mode: GenMode::FanOut,
            packets: sent,
            bytes: sent * u64::from(self.spec.size),
            elapsed,
            tx_retries: 0,
        })
    }

    /// Packets written per CPU since loading (the flow counters).
    pub fn per_cpu_generated(&self) -> Result<Vec<u64>, PktgenError> {
        super::live_frames::per_cpu_cursor(&self.ebpf)
    }
}

/// Copies per injection for a run paced at `rate` packets/s (unpaced: the default): about
/// 10 000 bursts a second, so a pace holds closely, at least one copy.
fn burst_for(rate: Option<u64>) -> u32 {
    match rate.filter(|&r| r > 0) {
        None => DEFAULT_COPIES,
        Some(r) => u32::try_from(r / 10_000)
            .unwrap_or(DEFAULT_COPIES)
            .clamp(1, DEFAULT_COPIES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_runs_make_small_bursts() {
        assert_eq!(burst_for(None), DEFAULT_COPIES);
        assert_eq!(burst_for(Some(0)), DEFAULT_COPIES);
        assert_eq!(burst_for(Some(5_000)), 1);
        assert_eq!(burst_for(Some(50_000)), 5);
        assert_eq!(burst_for(Some(100_000_000)), DEFAULT_COPIES);
    }
}
