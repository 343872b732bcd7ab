//! kxdp's kernel edge: the XDP programs (C, `bpf/redirect.bpf.c`, built by `build.rs` with
//! clang) that hand uplink and pod traffic to AF_XDP sockets, and their loader (aya).
//!
//! This crate owns the programs' object file, the Rust twins of the structs they share with
//! userspace ([`maps`]), and loading them into the kernel. It must never contain packet
//! logic: the programs only classify (redirect or pass), and everything else is
//! `datapath::process`. Attaching to interfaces and the AF_XDP sockets come later.
//!
//! Two programs, one per kind of port (ARCHITECTURE.md §2):
//! - [`UPLINK_PROGRAM`]: redirects VXLAN to this node and traffic to Service frontends;
//!   passes everything else (ARP, ssh, kubelet, IPv6, malformed) to the kernel.
//! - [`POD_PROGRAM`]: redirects everything a pod sends except IPv4 to the node's own
//!   addresses (walk 6).
//!
//! Both fall back to `XDP_PASS` when the receiving queue has no socket in `xsks`, so a node
//! without a running agent keeps working. For now they understand untagged Ethernet and
//! IPv4 only.

pub mod maps;
pub mod worker;
pub mod xsk;

use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfError};

pub use maps::{
    FrontendKey, Reason, VxlanCfg, add_frontend, add_node_addr, reason_count, remove_frontend,
    remove_node_addr, set_vxlan, xsk_map,
};
pub use worker::{
    PortSpec, SharedFlows, SharedState, WorkerConfig, WorkerError, WorkerHandle, WorkerStats,
    spawn,
};
pub use xsk::{FrameLedger, UmemConfig};

/// Name of the uplink XDP program in the object.
pub const UPLINK_PROGRAM: &str = "xdp_uplink";
/// Name of the pod-port XDP program in the object.
pub const POD_PROGRAM: &str = "xdp_pod";

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
}

/// Parses the embedded object, creates its maps and loads both programs into the kernel
/// (verified, not attached). Needs CAP_BPF (root).
pub fn load() -> Result<Ebpf, XdpError> {
    let mut ebpf = Ebpf::load(OBJECT)?;
    for name in [UPLINK_PROGRAM, POD_PROGRAM] {
        program_mut(&mut ebpf, name)?.load()?;
    }
    Ok(ebpf)
}

/// One of the two programs, for test runs (and later, attaching).
pub fn program<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, XdpError> {
    let program = ebpf.program(name).ok_or(XdpError::MissingProgram(name))?;
    Ok(program.try_into()?)
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(XdpError::MissingProgram(name))?;
    Ok(program.try_into()?)
}
