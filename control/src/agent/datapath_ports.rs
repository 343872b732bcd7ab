//! The datapath's ports on this node: for each, the XDP program attached to its interface,
//! one AF_XDP socket per worker (worker i on queue i) and their XSKMAP slots.
//!
//! The XDP object has one XSKMAP for every port; `port_slots` maps an interface to the base
//! of its block of slots, and a packet on queue q goes to slot base + q. Opening a port
//! fills the sockets' slots before the interface's base is published, so no packet is ever
//! redirected to an empty slot; closing does the reverse. Until its base is set, a port's
//! traffic goes to the kernel (the programs fall back to XDP_PASS).

use std::collections::BTreeMap;

use aya::Ebpf;
use datapath::tables::Tables;
use xdp_redirect::XdpError;
use xdp_redirect::worker::{PortSpec, SharedState, WorkerConfig, WorkerError, WorkerHandle};

use super::AgentOptions;
use super::kernel_maps::KernelMaps;
use super::netdev::{self, NetdevError};
use model::translate::UPLINK_PORT;

/// Why the datapath could not start, or a port could not be opened or closed. Port errors
/// go back to kxdp-cni as the API's answer, so each names the port (and interface).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("loading the XDP programs: {0}")]
    Load(#[source] XdpError),
    #[error("starting worker {id}: {source}")]
    StartWorker { id: usize, source: WorkerError },
    #[error("programming the XDP maps: {0}")]
    Maps(#[source] XdpError),
    #[error("port {port}: {source}")]
    Interface { port: String, source: NetdevError },
    #[error("port {port}: no free XSKMAP slots")]
    NoSlots { port: String },
    #[error("port {port} on {ifname}: {source}")]
    Open {
        port: String,
        ifname: String,
        source: Box<OpenStep>,
    },
    /// Closing goes on after a failed step (so as much as possible is undone); every
    /// failed step is listed.
    #[error("closing port {port}: {}", join(problems))]
    Close {
        port: String,
        problems: Vec<CloseStep>,
    },
}

/// The step of opening a port that failed (the steps before it are undone).
#[derive(Debug, thiserror::Error)]
pub enum OpenStep {
    #[error("{0}")]
    Attach(#[source] XdpError),
    #[error("worker {worker}: {source}")]
    Socket { worker: usize, source: WorkerError },
    #[error("XSKMAP slot {slot}: {source}")]
    Slot { slot: u32, source: XdpError },
    #[error("{0}")]
    PortSlot(#[source] XdpError),
}

/// A step of closing a port that failed.
#[derive(Debug, thiserror::Error)]
pub enum CloseStep {
    #[error("port slot: {0}")]
    PortSlot(#[source] XdpError),
    #[error("worker {worker}: {source}")]
    Socket { worker: usize, source: WorkerError },
    #[error("detaching from {ifname}: {source}")]
    Detach { ifname: String, source: XdpError },
}

fn join(problems: &[CloseStep]) -> String {
    problems
        .iter()
        .map(CloseStep::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which XDP program a port gets (ARCHITECTURE.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProgram {
    Uplink,
    Host,
    Pod,
}

impl PortProgram {
    fn name(self) -> &'static str {
        match self {
            PortProgram::Uplink => xdp_redirect::UPLINK_PROGRAM,
            PortProgram::Host => xdp_redirect::HOST_PROGRAM,
            PortProgram::Pod => xdp_redirect::POD_PROGRAM,
        }
    }
}

#[derive(Debug)]
struct OpenPort {
    ifname: String,
    ifindex: u32,
    base: u32,
    attachment: xdp_redirect::Attachment,
    container_id: Option<String>,
}

/// XSKMAP size in slots (the C `xsks` map's max_entries).
const XSK_SLOTS: u32 = xdp_redirect::XSKS_ENTRIES;

#[derive(Debug)]
pub struct DatapathPorts {
    ebpf: Ebpf,
    maps: KernelMaps,
    workers: Vec<WorkerHandle>,
    ports: BTreeMap<String, OpenPort>,
    /// Slot blocks (bases) not in use.
    free_bases: Vec<u32>,
}

impl DatapathPorts {
    /// Loads the XDP programs and starts the workers (no ports yet).
    pub fn start(opts: &AgentOptions, shared: SharedState) -> Result<DatapathPorts, PortError> {
        let ebpf = xdp_redirect::load().map_err(PortError::Load)?;
        let queues = opts.workers as u32;
        let mut workers = Vec::with_capacity(opts.workers);
        for id in 0..opts.workers {
            let mut cfg = WorkerConfig::new(id, id as u32);
            cfg.cpu = opts.cpus.get(id).copied();
            let handles = SharedState {
                tables: shared.tables.clone(),
                flows: shared.flows.clone(),
            };
            match xdp_redirect::worker::spawn(cfg, handles) {
                Ok(w) => workers.push(w),
                Err(source) => {
                    for w in workers {
                        let _ = w.stop();
                    }
                    return Err(PortError::StartWorker { id, source });
                }
            }
        }
        // Highest base first so pop() hands out low slots first (readable in bpftool).
        let blocks = (XSK_SLOTS / queues).min(xdp_redirect::PORT_SLOTS_ENTRIES);
        let free_bases = (0..blocks).rev().map(|b| b * queues).collect();
        Ok(DatapathPorts {
            ebpf,
            maps: KernelMaps::default(),
            workers,
            ports: BTreeMap::new(),
            free_bases,
        })
    }

    pub fn sync_maps(&mut self, tables: &Tables) -> Result<(), PortError> {
        self.maps
            .sync(&mut self.ebpf, tables)
            .map_err(PortError::Maps)
    }

    pub fn is_open(&self, name: &str) -> bool {
        self.ports.contains_key(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.ports.keys().cloned().collect()
    }

    /// Attaches `program` to `ifname` and opens one socket per worker on it. Re-opening a
    /// port that is open on the same interface is a no-op (a retried CNI ADD); on another
    /// interface the old one is closed first (the pod was re-created).
    pub fn open(
        &mut self,
        name: &str,
        ifname: &str,
        program: PortProgram,
        container_id: Option<String>,
    ) -> Result<(), PortError> {
        if let Some(open) = self.ports.get(name) {
            if open.ifname == ifname && netdev::ifindex(ifname).ok() == Some(open.ifindex) {
                return Ok(());
            }
            self.close(name)?;
        }
        let ifindex = netdev::ifindex(ifname).map_err(|source| PortError::Interface {
            port: name.to_string(),
            source,
        })?;
        let base = self.free_bases.pop().ok_or_else(|| PortError::NoSlots {
            port: name.to_string(),
        })?;
        match self.open_at(name, ifindex, base, program) {
            Ok(attachment) => {
                self.ports.insert(
                    name.to_string(),
                    OpenPort {
                        ifname: ifname.to_string(),
                        ifindex,
                        base,
                        attachment,
                        container_id,
                    },
                );
                tracing::info!(port = name, ifname, ifindex, base, "port open");
                Ok(())
            }
            Err(source) => {
                self.free_bases.push(base);
                Err(PortError::Open {
                    port: name.to_string(),
                    ifname: ifname.to_string(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// The steps of `open`, undone in reverse when one fails.
    fn open_at(
        &mut self,
        name: &str,
        ifindex: u32,
        base: u32,
        program: PortProgram,
    ) -> Result<xdp_redirect::Attachment, OpenStep> {
        let attachment = xdp_redirect::attach_by_index(&mut self.ebpf, program.name(), ifindex)
            .map_err(OpenStep::Attach)?;
        let mut opened = 0;
        let result = (|| {
            for (i, worker) in self.workers.iter().enumerate() {
                let fd = worker
                    .add_port(PortSpec {
                        name: name.to_string(),
                        ifindex,
                    })
                    .map_err(|source| OpenStep::Socket { worker: i, source })?;
                opened += 1;
                let slot = base + i as u32;
                xdp_redirect::set_xsk(&mut self.ebpf, slot, fd)
                    .map_err(|source| OpenStep::Slot { slot, source })?;
            }
            xdp_redirect::set_port_slot(&mut self.ebpf, ifindex, base).map_err(OpenStep::PortSlot)
        })();
        if let Err(e) = result {
            for (i, worker) in self.workers.iter().enumerate().take(opened) {
                let _ = xdp_redirect::remove_xsk(&mut self.ebpf, base + i as u32);
                let _ = worker.remove_port(name);
            }
            let _ = xdp_redirect::detach(&mut self.ebpf, attachment);
            return Err(e);
        }
        Ok(attachment)
    }

    /// Closes a port: unpublishes its slot base (its traffic goes to the kernel again),
    /// empties its slots, closes the sockets, detaches the program. Closing a port that is
    /// not open is fine (DEL is idempotent).
    pub fn close(&mut self, name: &str) -> Result<(), PortError> {
        let Some(port) = self.ports.remove(name) else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if let Err(e) = xdp_redirect::remove_port_slot(&mut self.ebpf, port.ifindex) {
            problems.push(CloseStep::PortSlot(e));
        }
        for (i, worker) in self.workers.iter().enumerate() {
            let _ = xdp_redirect::remove_xsk(&mut self.ebpf, port.base + i as u32);
            if let Err(source) = worker.remove_port(name) {
                problems.push(CloseStep::Socket { worker: i, source });
            }
        }
        // Works when the interface is gone already (the pod's netns was deleted first).
        if let Err(source) = xdp_redirect::detach(&mut self.ebpf, port.attachment) {
            problems.push(CloseStep::Detach {
                ifname: port.ifname.clone(),
                source,
            });
        }
        self.free_bases.push(port.base);
        tracing::info!(
            port = name,
            ifname = port.ifname,
            container = port.container_id.as_deref().unwrap_or("-"),
            "port closed"
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PortError::Close {
                port: name.to_string(),
                problems,
            })
        }
    }

    /// Closes the ports whose interface is gone (a pod's network namespace deleted without a
    /// CNI DEL: the kernel took the veth with it) and returns their names. Their sockets
    /// are unbound by the kernel; closing returns their frames and frees the slots.
    pub fn close_vanished(&mut self) -> Vec<String> {
        let gone: Vec<String> = self
            .ports
            .iter()
            .filter(|(_, p)| netdev::ifindex(&p.ifname).ok() != Some(p.ifindex))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            if let Err(e) = self.close(name) {
                tracing::warn!("{e}");
            }
        }
        gone
    }

    /// The workers' latest published counters.
    pub fn stats(&self) -> agent_api::AgentStats {
        agent_api::AgentStats {
            workers: self.workers.iter().map(|w| summarize(&w.stats())).collect(),
        }
    }

    /// The workers' last published counters, without waking them (for `/metrics`).
    pub fn published_stats(&self) -> Vec<xdp_redirect::worker::WorkerStats> {
        self.workers.iter().map(|w| w.published_stats()).collect()
    }

    /// Closes every port and stops the workers.
    pub fn shutdown(&mut self) {
        // The first port opened (the uplink) anchors each worker's shared UMEM and can only
        // close last.
        let mut names: Vec<String> = self.ports.keys().cloned().collect();
        names.sort_by_key(|name| name == UPLINK_PORT);
        for name in names {
            if let Err(e) = self.close(&name) {
                tracing::warn!("{e}");
            }
        }
        for worker in self.workers.drain(..) {
            if let Err(e) = worker.stop() {
                tracing::warn!("stopping a worker: {e}");
            }
        }
    }
}

fn summarize(w: &xdp_redirect::worker::WorkerStats) -> agent_api::WorkerSummary {
    agent_api::WorkerSummary {
        id: w.id,
        cpu: w.cpu,
        generation: w.generation,
        rx_packets: w.rx_packets,
        forwarded: w.forwarded,
        passed: w.passed,
        dropped: w.dropped,
        drops: w
            .drops
            .nonzero()
            .map(|(reason, n)| (reason.as_str().to_string(), n))
            .collect(),
        tx_packets: w.tx_packets,
        io_drops: w.io.total(),
        busy_ratio: w.busy_ratio(),
        mean_lock_wait_ns: w.mean_lock_wait_ns(),
        generation_sweeps: w.generation_sweeps,
        generation_sweep_ns: w.generation_sweep_ns,
        flows_ended: w.flows_ended,
        ports: w
            .ports
            .iter()
            .map(|p| agent_api::PortSummary {
                name: p.name.clone(),
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                // An empty fill ring is counted in rx_dropped too (the kernel's copy path), so
                // fill_ring_empty is not added again.
                kernel_rx_lost: p.xdp.rx_dropped + p.xdp.rx_ring_full,
            })
            .collect(),
    }
}
