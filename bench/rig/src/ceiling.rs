//! The AF_XDP forwarding ceiling (the rig's path a): what xdp-redirect's workers forward
//! when the per-packet work is only a MAC swap. Dividing kxdp's rate by this one says how
//! much of the raw AF_XDP I/O kxdp's own processing leaves. Built from xdp-redirect's
//! public API only (the programs, the XSKMAP, a worker); the MAC swap itself is the
//! worker engine's `mac_swap`, so that it runs the datapath's own rings and batching.
//!
//! One worker ([`Pipeline::MacSwapTo`]) with a socket on queue 0 of two interfaces:
//! `ingress` gets [`HOST_PROGRAM`] (redirect everything to the XSKMAP slot of its queue)
//! and `egress` gets no program at all, since AF_XDP copy-mode transmit needs none
//! (ARCHITECTURE.md §5). Frames arriving on `ingress` leave `egress` with their Ethernet
//! addresses swapped. Only rx queue 0 of `ingress` is served: give it one queue (a veth
//! with more spreads its traffic over queues by CPU, and frames on the others go to the
//! kernel instead).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aya::Ebpf;
use datapath::Tables;
use datapath::addr::MacAddr;
use datapath::conntrack::{ConntrackConfig, Flows};
use datapath::tables::{LocalNode, OverlayParams};

use xdp_redirect::worker::{
    Pipeline, PortSpec, SharedFlows, SharedState, WorkerConfig, WorkerError, WorkerHandle,
    WorkerStats, spawn,
};
use xdp_redirect::{
    AttachMode, Attachment, HOST_PROGRAM, Interface, PortRange, XdpError, attach, detach, load,
    remove_port_slots, remove_xsk, set_port_slots, set_xsk,
};

/// The worker's port name for the ingress interface's socket (see
/// [`WorkerStats::port`]).
pub const INGRESS_PORT: &str = "ingress";
/// The worker's port name for the egress interface's socket.
pub const EGRESS_PORT: &str = "egress";

/// The device queue both sockets bind (and the worker's id).
const QUEUE: u32 = 0;
/// The ingress interface's base in the XSKMAP (its queue 0 socket sits at base + 0). The
/// object's maps are this forwarder's own, so every slot is free.
const INGRESS_BASE: u32 = 0;
/// The worker's flow table is never used by the MAC swap; keep it small.
const FLOW_CAPACITY: usize = 1024;

/// What can go wrong starting or stopping the forwarder.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("ingress and egress are the same interface: {0}")]
    SameInterface(String),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("ceiling worker: {0}")]
    Worker(#[from] WorkerError),
    #[error("tearing the ceiling forwarder down: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

/// A running ceiling forwarder. Dropping it detaches the program and stops the worker,
/// like [`CeilingForwarder::stop`] without the report.
#[derive(Debug)]
pub struct CeilingForwarder {
    // `teardown` (stop and Drop) undoes these in order; the `Ebpf`, whose drop would also
    // detach the program, goes last.
    worker: Option<WorkerHandle>,
    attachment: Option<Attachment>,
    ebpf: Ebpf,
    ingress: Interface,
}

impl CeilingForwarder {
    /// Attaches the redirect-everything program ([`HOST_PROGRAM`]) to `ingress`, opens the
    /// worker's sockets on queue 0 of `ingress` and `egress` (one worker, pinned to `cpu`
    /// if given) and MAC-swaps every frame from `ingress` out of `egress`. Runs in the
    /// calling thread's network namespace (the interfaces are of that namespace, and the
    /// worker thread inherits it). Needs root. On error everything done so far is undone.
    pub fn start(
        ingress: &Interface,
        egress: &Interface,
        cpu: Option<usize>,
    ) -> Result<CeilingForwarder, CeilingError> {
        if ingress.index() == egress.index() {
            return Err(CeilingError::SameInterface(ingress.to_string()));
        }
        // Declared in this order so that an early return drops (and so stops) the worker
        // before the `Ebpf` goes and takes the program off `ingress`.
        let mut ebpf = load()?;
        let mut cfg = WorkerConfig::new(QUEUE as usize);
        cfg.cpu = cpu;
        cfg.pipeline = Pipeline::MacSwapTo(EGRESS_PORT.into());
        let worker = spawn(cfg, private_state())?;
        // Egress first: the first socket anchors the UMEM and closes last, and the
        // receiving side has something to transmit on from its first frame.
        worker.add_port(PortSpec {
            name: EGRESS_PORT.into(),
            ifindex: egress.index(),
            queue: QUEUE,
        })?;
        let fd = worker.add_port(PortSpec {
            name: INGRESS_PORT.into(),
            ifindex: ingress.index(),
            queue: QUEUE,
        })?;
        let attachment = attach(&mut ebpf, HOST_PROGRAM, ingress)?;
        let mut forwarder = CeilingForwarder {
            worker: Some(worker),
            attachment: Some(attachment),
            ebpf,
            ingress: ingress.clone(),
        };
        set_xsk(&mut forwarder.ebpf, INGRESS_BASE + QUEUE, fd)?;
        // The base goes in last: until now the program passed everything to the kernel
        // (no slot), so no frame was ever redirected to a socket that was not ready.
        // Queues below QUEUE have no socket: their slots stay empty (kernel fallback).
        let range = PortRange {
            base: INGRESS_BASE,
            queues: QUEUE + 1,
        };
        set_port_slots(&mut forwarder.ebpf, ingress.index(), range)?;
        Ok(forwarder)
    }

    /// The worker's counters now: `rx_packets` read from `ingress`, `forwarded` MAC-swapped
    /// and queued on `egress` (`tx_packets`, or `io` when its tx ring was full), the
    /// kernel's own ring drops in `xdp`.
    pub fn stats(&self) -> WorkerStats {
        self.worker
            .as_ref()
            .map(WorkerHandle::stats)
            .unwrap_or_default()
    }

    /// How the program is attached to `ingress` (driver mode on veth).
    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.attachment.as_ref().map(Attachment::mode)
    }

    /// Detaches the program (ingress traffic goes to the kernel again), stops the worker
    /// (its sockets drain first) and returns its final counters.
    pub fn stop(mut self) -> Result<WorkerStats, CeilingError> {
        let (problems, stopped) = self.teardown();
        let stats = stopped.unwrap_or(Err(WorkerError::Stopped(QUEUE as usize)))?;
        if problems.is_empty() {
            Ok(stats)
        } else {
            Err(CeilingError::Teardown(problems))
        }
    }

    /// Undoes `start` in reverse: the slot base, the XSKMAP entry, the program, then the
    /// worker. Keeps going past failures and reports them all.
    fn teardown(&mut self) -> (Vec<String>, Option<Result<WorkerStats, WorkerError>>) {
        let mut problems = Vec::new();
        if self.attachment.is_some() {
            if let Err(e) = remove_port_slots(&mut self.ebpf, self.ingress.index()) {
                problems.push(format!("port slot of {}: {e}", self.ingress));
            }
            if let Err(e) = remove_xsk(&mut self.ebpf, INGRESS_BASE + QUEUE) {
                problems.push(format!("XSKMAP slot {}: {e}", INGRESS_BASE + QUEUE));
            }
        }
        if let Some(attachment) = self.attachment.take()
            && let Err(e) = detach(&mut self.ebpf, attachment)
        {
            problems.push(e.to_string());
        }
        let stopped = self.worker.take().map(WorkerHandle::stop);
        (problems, stopped)
    }
}

impl Drop for CeilingForwarder {
    fn drop(&mut self) {
        let (problems, stopped) = self.teardown();
        if let Some(Err(e)) = stopped {
            tracing::warn!(error = %e, "stopping the ceiling worker");
        }
        for problem in problems {
            tracing::warn!("ceiling forwarder: {problem}");
        }
    }
}

/// Tables and a flow table of the forwarder's own: the MAC swap reads neither, but the
/// worker's maintenance tick does, and they must not be anybody else's.
fn private_state() -> SharedState {
    let tables = Tables {
        generation: 1,
        node: LocalNode {
            name: "kxdp-ceiling".into(),
            underlay_ip: [0; 4],
            underlay_mac: MacAddr([0; 6]),
            pod_cidrs: Vec::new(),
            gateway_ip: [0; 4],
            gateway_mac: MacAddr([0; 6]),
            addresses: Vec::new(),
        },
        overlay: OverlayParams {
            vni: 0,
            udp_port: 0,
            underlay_mtu: 1500,
        },
        cluster_cidrs: Vec::new(),
        service_cidrs: Vec::new(),
        ports: Vec::new(),
        local_pods: Vec::new(),
        local_pod_by_ip: Default::default(),
        remote_routes: Default::default(),
        remote_nodes: Vec::new(),
        remote_node_by_underlay: Default::default(),
        service_ports: Vec::new(),
        frontends: Default::default(),
        policy: Default::default(),
    };
    let flows = Flows::new(ConntrackConfig {
        capacity: FLOW_CAPACITY,
        ..ConntrackConfig::default()
    });
    SharedState {
        tables: Arc::new(ArcSwap::from_pointee(tables)),
        flows: Arc::new(Mutex::new(SharedFlows::new(flows))),
    }
}
