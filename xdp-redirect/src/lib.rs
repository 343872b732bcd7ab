//! kxdp's kernel edge: the XDP programs (C, `bpf/redirect.bpf.c`, built by `build.rs` with
//! clang) that hand uplink and pod traffic to AF_XDP sockets, and their loader (aya).
//!
//! This crate owns the programs' object file, the Rust twins of the structs they share with
//! userspace ([`maps`]), loading them into the kernel and attaching them to interfaces
//! ([`attach`]), the AF_XDP sockets ([`xsk`]) and the workers that run
//! `datapath::process` on them ([`worker`]). It must never contain packet logic: the
//! programs only classify (redirect or pass), and everything else is `datapath::process`.
//!
//! The throughput rig (bench/rig, `kxdp-bench`) builds on this public API and lives there,
//! not here: its generators and sink (`rig::traffic`, with their own C program) and the
//! AF_XDP ceiling forwarder (`rig::ceiling`, a worker with [`Pipeline::MacSwapTo`]).
//!
//! Three programs, one per kind of port (ARCHITECTURE.md §2):
//! - [`UPLINK_PROGRAM`]: redirects VXLAN to this node and traffic to Service frontends;
//!   passes everything else (ARP, ssh, kubelet, IPv6, malformed) to the kernel.
//! - [`POD_PROGRAM`]: redirects everything a pod sends except IPv4 to the node's own
//!   addresses (walk 6), and among those it still redirects TCP/UDP/SCTP to a frontend (a
//!   pod reaching its own node's NodePort).
//! - [`HOST_PROGRAM`]: on `kxdp-dp`, redirects everything (the kernel routes into
//!   `kxdp-host` only what the datapath owns).
//!
//! One XSKMAP (`xsks`, [`XSKS_ENTRIES`] slots) serves all ports. The agent gives each port
//! a range of slots, one per rx queue ([`set_port_slots`], keyed by ifindex), and puts the
//! socket serving the port's rx queue q at base + q ([`set_xsk`]). A packet the programs
//! redirect from a port without a range, from a queue beyond it, or to a slot without a
//! socket, goes to the kernel instead, so a node without a running agent keeps working. For now the programs understand untagged
//! Ethernet and IPv4 only.
//!
//! Typical use (root, in the node's network namespace):
//!
//! ```no_run
//! # fn main() -> Result<(), xdp_redirect::XdpError> {
//! use xdp_redirect::{HOST_PROGRAM, Interface, PortRange, attach, detach, load, set_port_slots};
//! let mut ebpf = load()?;
//! let dp = Interface::by_name("kxdp-dp")?;
//! // slots 0..2 for the host port's two rx queues
//! set_port_slots(&mut ebpf, dp.index(), PortRange { base: 0, queues: 2 })?;
//! let attachment = attach(&mut ebpf, HOST_PROGRAM, &dp)?;
//! eprintln!("{} on {} in {} mode", HOST_PROGRAM, dp, attachment.mode());
//! // ... xdp_redirect::set_xsk(&mut ebpf, 0 + queue, socket_fd) per rx queue ...
//! detach(&mut ebpf, attachment)?;
//! # Ok(())
//! # }
//! ```

pub mod attach;
pub mod maps;
pub mod worker;
pub mod xsk;

use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfError};

pub use attach::{
    AttachMode, Attachment, Interface, attach, attach_by_index, attach_by_name, detach,
};
pub use maps::{
    FrontendKey, PORT_SLOTS_ENTRIES, PortRange, Reason, VxlanCfg, XSKS_ENTRIES, add_frontend,
    add_node_addr, port_slots, reason_count, remove_frontend, remove_node_addr, remove_port_slots,
    remove_xsk, set_port_slots, set_vxlan, set_xsk, xsk_map,
};
pub use worker::{
    ConfigError, Pipeline, PortSpec, SharedFlows, SharedState, WorkerConfig, WorkerError,
    WorkerHandle, WorkerStats, spawn,
};
pub use xsk::{FrameLedger, UmemConfig, UmemConfigError};

/// Name of the uplink XDP program in the object.
pub const UPLINK_PROGRAM: &str = "xdp_uplink";
/// Name of the pod-port XDP program in the object.
pub const POD_PROGRAM: &str = "xdp_pod";
/// Name of the host-port (`kxdp-dp`) XDP program in the object.
pub const HOST_PROGRAM: &str = "xdp_host";
/// All programs in the object; [`load`] loads each.
pub const PROGRAMS: [&str; 3] = [UPLINK_PROGRAM, POD_PROGRAM, HOST_PROGRAM];

/// The compiled programs. Aligned because aya parses the ELF in place and its headers are
/// read as 8-byte aligned structs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

/// What can go wrong loading the programs or touching their maps.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] ProgramError),
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the XDP object has no program `{0}`")]
    MissingProgram(&'static str),
    #[error("the XDP object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("no network interface {0} in this network namespace")]
    UnknownInterface(String),
    /// Both modes failed; the message carries both causes in full (syscall and errno).
    #[error(
        "attaching XDP program {program} to {interface}: driver mode: {}; skb mode: {}",
        error_chain(driver),
        error_chain(skb)
    )]
    Attach {
        program: &'static str,
        interface: String,
        driver: Box<ProgramError>,
        skb: Box<ProgramError>,
    },
    #[error(
        "detaching XDP program {program} from {interface}: {}",
        error_chain(error)
    )]
    Detach {
        program: &'static str,
        interface: String,
        error: Box<ProgramError>,
    },
    #[error(
        "XSKMAP slot {slot} out of range (the map has {} slots)",
        maps::XSKS_ENTRIES
    )]
    SlotOutOfRange { slot: u32 },
    #[error(
        "XSKMAP range of {queues} slots from {base} is empty or out of range (the map has {} slots)",
        maps::XSKS_ENTRIES
    )]
    RangeOutOfBounds { base: u32, queues: u32 },
}

/// `error` and its sources, `: `-separated: aya's syscall errors keep the errno in their
/// source, which a plain `{}` would drop.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Parses the embedded object, creates its maps and loads all [`PROGRAMS`] into the kernel
/// (verified, not attached). Needs CAP_BPF (root). Each call creates fresh maps.
pub fn load() -> Result<Ebpf, XdpError> {
    let mut ebpf = Ebpf::load(OBJECT)?;
    for name in PROGRAMS {
        program_mut(&mut ebpf, name)?.load()?;
    }
    Ok(ebpf)
}

/// One of the XDP programs of `ebpf` by name (the [`PROGRAMS`] of [`load`]'s object), for
/// test runs or querying (e.g. its kernel id).
pub fn program<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, XdpError> {
    let program = ebpf.program(name).ok_or(XdpError::MissingProgram(name))?;
    Ok(program.try_into()?)
}

/// One of the XDP programs of `ebpf` by name, to load or attach it: of the object
/// [`load`] returns, or of another one (the rig's generator object).
pub fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(XdpError::MissingProgram(name))?;
    Ok(program.try_into()?)
}
