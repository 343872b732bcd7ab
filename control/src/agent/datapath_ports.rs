//! The datapath's ports on this node: for each, the XDP program attached to its interface,
//! one AF_XDP socket per rx queue of the interface, and their XSKMAP slots.
//!
//! The XDP object has one XSKMAP for every port; `port_slots` maps an interface to its
//! range of slots (one per rx queue), and a packet on queue q goes to slot base + q. The
//! queues are spread over the workers, queue q to worker q mod W: a worker may serve
//! several queues of a port (a 16-channel NIC with 2 workers), and every worker serves at
//! least one queue of every port, since a worker transmits only on its own sockets. Pods and
//! the host port get W queues (one each); the uplink has as many as its NIC's channels.
//!
//! Opening a port fills the sockets' slots, publishes the interface's range, and only then
//! attaches the program, so no packet is ever redirected to an empty slot; closing
//! unpublishes the range first. A port without a range, and a queue beyond it (channels
//! added and not yet served), go to the kernel (the programs fall back to XDP_PASS,
//! counted `no_slot`).
//!
//! Channels added to a running uplink ([`DatapathPorts::grow`]) get sockets on a new,
//! wider range: the old sockets' fds go into the new slots too, the range switches in one
//! map write, then the old slots are emptied. No packet on an existing queue is lost on the
//! way. The kernel refuses to remove channels that have AF_XDP sockets bound, copy mode
//! included (`ethtool -L` fails: "requested channel counts are too low for existing
//! zerocopy AF_XDP sockets"), so a shrink cannot happen under a running agent: stop it,
//! change the channels, start it again.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use aya::Ebpf;
use datapath::tables::Tables;
use xdp_redirect::worker::{PortSpec, SharedState, WorkerConfig, WorkerError, WorkerHandle};
use xdp_redirect::{PortRange, XdpError};

use super::AgentOptions;
use super::kernel_maps::KernelMaps;
use super::netdev::{self, NetdevError};
use super::slot_ranges::SlotRanges;
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
    #[error("port {port}: no {queues} free XSKMAP slots in a row (one per rx queue)")]
    NoSlots { port: String, queues: u32 },
    #[error(
        "port {port}: {ifname} has {queues} rx queues, fewer than the {workers} workers (each worker transmits on a queue of its own); run fewer workers or add channels (ethtool -L {ifname} combined {workers})"
    )]
    TooFewQueues {
        port: String,
        ifname: String,
        queues: u32,
        workers: usize,
    },
    #[error("port {port} on {ifname}: serving {from} -> {to} rx queues: {source}")]
    Grow {
        port: String,
        ifname: String,
        from: u32,
        to: u32,
        source: Box<OpenStep>,
    },
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
    #[error("queue {queue}, worker {worker}: {source}")]
    Socket {
        queue: u32,
        worker: usize,
        source: WorkerError,
    },
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
    #[error("queue {queue}, worker {worker}: {source}")]
    Socket {
        queue: u32,
        worker: usize,
        source: WorkerError,
    },
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
    range: PortRange,
    /// Index = rx queue.
    sockets: Vec<QueueSocket>,
    attachment: xdp_redirect::Attachment,
    container_id: Option<String>,
}

/// The socket serving one rx queue of a port.
#[derive(Debug, Clone, Copy)]
struct QueueSocket {
    worker: usize,
    /// Valid until the worker removes the socket (it owns it).
    fd: RawFd,
}

/// The worker serving rx queue `queue` of any port.
fn worker_of(queue: u32, workers: usize) -> usize {
    queue as usize % workers
}

/// XSKMAP size in slots (the C `xsks` map's max_entries).
const XSK_SLOTS: u32 = xdp_redirect::XSKS_ENTRIES;

#[derive(Debug)]
pub struct DatapathPorts {
    ebpf: Ebpf,
    maps: KernelMaps,
    workers: Vec<WorkerHandle>,
    ports: BTreeMap<String, OpenPort>,
    /// XSKMAP slots not in any port's range.
    free_slots: SlotRanges,
}

impl DatapathPorts {
    /// Loads the XDP programs and starts the workers (no ports yet).
    pub fn start(
        opts: &AgentOptions,
        count: usize,
        shared: SharedState,
    ) -> Result<DatapathPorts, PortError> {
        let ebpf = xdp_redirect::load().map_err(PortError::Load)?;
        let mut workers = Vec::with_capacity(count);
        for id in 0..count {
            let mut cfg = WorkerConfig::new(id);
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
        Ok(DatapathPorts {
            ebpf,
            maps: KernelMaps::default(),
            workers,
            ports: BTreeMap::new(),
            free_slots: SlotRanges::new(XSK_SLOTS),
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

    /// The rx queues port `name` is served on now.
    pub fn queues(&self, name: &str) -> Option<u32> {
        self.ports.get(name).map(|p| p.range.queues)
    }

    /// Attaches `program` to `ifname` and opens one socket per rx queue of it, spread over
    /// the workers. Re-opening a port that is open on the same interface is a no-op (a
    /// retried CNI ADD); on another interface the old one is closed first (the pod was
    /// re-created).
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
        let interface = |source| PortError::Interface {
            port: name.to_string(),
            source,
        };
        let ifindex = netdev::ifindex(ifname).map_err(interface)?;
        let queues = netdev::rx_queues(ifname).map_err(interface)?;
        if (queues as usize) < self.workers.len() {
            return Err(PortError::TooFewQueues {
                port: name.to_string(),
                ifname: ifname.to_string(),
                queues,
                workers: self.workers.len(),
            });
        }
        let base = self.free_slots.take(queues).ok_or(PortError::NoSlots {
            port: name.to_string(),
            queues,
        })?;
        let range = PortRange { base, queues };
        match self.open_at(name, ifindex, range, program) {
            Ok((attachment, sockets)) => {
                self.ports.insert(
                    name.to_string(),
                    OpenPort {
                        ifname: ifname.to_string(),
                        ifindex,
                        range,
                        sockets,
                        attachment,
                        container_id,
                    },
                );
                tracing::info!(port = name, ifname, ifindex, base, queues, "port open");
                Ok(())
            }
            Err(source) => {
                self.free_slots.give_back(base, queues);
                Err(PortError::Open {
                    port: name.to_string(),
                    ifname: ifname.to_string(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// The steps of `open`, undone in reverse when one fails. The program is attached
    /// last, once every queue has its socket and the range is published: from its first
    /// packet on, nothing it redirects can find an empty slot (so `no_slot` counts only
    /// queues the agent does not serve).
    fn open_at(
        &mut self,
        name: &str,
        ifindex: u32,
        range: PortRange,
        program: PortProgram,
    ) -> Result<(xdp_redirect::Attachment, Vec<QueueSocket>), OpenStep> {
        let mut sockets = Vec::with_capacity(range.queues as usize);
        let mut published = false;
        let result = self
            .open_queues(name, ifindex, range, &mut sockets)
            .and_then(|()| {
                xdp_redirect::set_port_slots(&mut self.ebpf, ifindex, range)
                    .map_err(OpenStep::PortSlot)?;
                published = true;
                xdp_redirect::attach_by_index(&mut self.ebpf, program.name(), ifindex)
                    .map_err(OpenStep::Attach)
            });
        match result {
            Ok(attachment) => Ok((attachment, sockets)),
            Err(e) => {
                if published {
                    let _ = xdp_redirect::remove_port_slots(&mut self.ebpf, ifindex);
                }
                self.close_queues(name, range, &sockets, 0);
                Err(e)
            }
        }
    }

    /// Opens the sockets of queues `sockets.len()..range.queues` (each on its worker) and
    /// puts them into their slots of `range`, appending them to `sockets`. Stops at the
    /// first failure (what it opened stays in `sockets`, for the caller to undo).
    fn open_queues(
        &mut self,
        name: &str,
        ifindex: u32,
        range: PortRange,
        sockets: &mut Vec<QueueSocket>,
    ) -> Result<(), OpenStep> {
        for queue in sockets.len() as u32..range.queues {
            let worker = worker_of(queue, self.workers.len());
            let fd = self.workers[worker]
                .add_port(PortSpec {
                    name: name.to_string(),
                    ifindex,
                    queue,
                })
                .map_err(|source| OpenStep::Socket {
                    queue,
                    worker,
                    source,
                })?;
            sockets.push(QueueSocket { worker, fd });
            let slot = range.slot(queue);
            xdp_redirect::set_xsk(&mut self.ebpf, slot, fd)
                .map_err(|source| OpenStep::Slot { slot, source })?;
        }
        Ok(())
    }

    /// Empties the slots of `range` for queues `from..sockets.len()` and closes those
    /// sockets, highest queue first: a worker's first socket anchors its UMEM and must
    /// close last. Returns what failed.
    fn close_queues(
        &mut self,
        name: &str,
        range: PortRange,
        sockets: &[QueueSocket],
        from: usize,
    ) -> Vec<CloseStep> {
        let mut problems = Vec::new();
        for (queue, socket) in sockets.iter().enumerate().skip(from).rev() {
            let queue = queue as u32;
            let _ = xdp_redirect::remove_xsk(&mut self.ebpf, range.slot(queue));
            if let Err(source) = self.workers[socket.worker].remove_port(name, queue) {
                problems.push(CloseStep::Socket {
                    queue,
                    worker: socket.worker,
                    source,
                });
            }
        }
        problems
    }

    /// Serves port `name` on `queues` rx queues instead of fewer (its NIC's channels grew):
    /// sockets for the new queues, a new range holding old and new, then the switch. A
    /// port that is not open, or already has that many queues, is left as it is. On
    /// failure the old range stays in force and the new sockets are closed again.
    pub fn grow(&mut self, name: &str, queues: u32) -> Result<(), PortError> {
        if self
            .ports
            .get(name)
            .is_none_or(|p| queues <= p.range.queues)
        {
            return Ok(());
        }
        // Out of the map while it changes: growing borrows the rest of `self`.
        let Some(mut port) = self.ports.remove(name) else {
            return Ok(());
        };
        let result = self.grow_port(name, &mut port, queues);
        self.ports.insert(name.to_string(), port);
        result
    }

    fn grow_port(&mut self, name: &str, port: &mut OpenPort, queues: u32) -> Result<(), PortError> {
        let old = port.range;
        let failed = |source| PortError::Grow {
            port: name.to_string(),
            ifname: port.ifname.clone(),
            from: old.queues,
            to: queues,
            source: Box::new(source),
        };
        let Some(base) = self.free_slots.take(queues) else {
            return Err(PortError::NoSlots {
                port: name.to_string(),
                queues,
            });
        };
        let new = PortRange { base, queues };
        let mut sockets = port.sockets.clone();
        let mut result = Ok(());
        for (queue, socket) in port.sockets.iter().enumerate() {
            let slot = new.slot(queue as u32);
            if let Err(source) = xdp_redirect::set_xsk(&mut self.ebpf, slot, socket.fd) {
                result = Err(OpenStep::Slot { slot, source });
                break;
            }
        }
        let result = result
            .and_then(|()| self.open_queues(name, port.ifindex, new, &mut sockets))
            .and_then(|()| {
                xdp_redirect::set_port_slots(&mut self.ebpf, port.ifindex, new)
                    .map_err(OpenStep::PortSlot)
            });
        if let Err(e) = result {
            self.close_queues(name, new, &sockets, port.sockets.len());
            for queue in 0..port.sockets.len() as u32 {
                let _ = xdp_redirect::remove_xsk(&mut self.ebpf, new.slot(queue));
            }
            self.free_slots.give_back(new.base, new.queues);
            return Err(failed(e));
        }
        // The programs read the new range now; the old slots are no longer looked at.
        for queue in 0..old.queues {
            let _ = xdp_redirect::remove_xsk(&mut self.ebpf, old.slot(queue));
        }
        self.free_slots.give_back(old.base, old.queues);
        port.range = new;
        port.sockets = sockets;
        tracing::info!(
            port = name,
            ifname = port.ifname,
            from = old.queues,
            to = queues,
            base,
            "port serves more rx queues"
        );
        Ok(())
    }

    /// Closes a port: detaches the program (its traffic goes to the kernel again),
    /// unpublishes its slot range, empties its slots and closes the sockets: the reverse
    /// of `open`, so nothing is counted `no_slot` on the way. Closing a port that is not
    /// open is fine (DEL is idempotent).
    pub fn close(&mut self, name: &str) -> Result<(), PortError> {
        let Some(port) = self.ports.remove(name) else {
            return Ok(());
        };
        let mut problems = Vec::new();
        // Works when the interface is gone already (the pod's netns was deleted first).
        if let Err(source) = xdp_redirect::detach(&mut self.ebpf, port.attachment) {
            problems.push(CloseStep::Detach {
                ifname: port.ifname.clone(),
                source,
            });
        }
        if let Err(e) = xdp_redirect::remove_port_slots(&mut self.ebpf, port.ifindex) {
            problems.push(CloseStep::PortSlot(e));
        }
        problems.extend(self.close_queues(name, port.range, &port.sockets, 0));
        self.free_slots
            .give_back(port.range.base, port.range.queues);
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

    /// Which worker serves which rx queue of each port.
    pub fn queue_map(&self) -> Vec<agent_api::PortQueues> {
        self.ports
            .iter()
            .map(|(name, p)| agent_api::PortQueues {
                port: name.clone(),
                ifname: p.ifname.clone(),
                workers: p.sockets.iter().map(|s| s.worker).collect(),
            })
            .collect()
    }

    /// What the XDP programs decided, per reason (summed over CPUs), by its stable name.
    /// A counter that cannot be read is left out (and logged).
    pub fn xdp_decisions(&self) -> Vec<(&'static str, u64)> {
        xdp_redirect::Reason::ALL
            .iter()
            .filter_map(|&r| match xdp_redirect::reason_count(&self.ebpf, r) {
                Ok(n) => Some((r.name(), n)),
                Err(e) => {
                    tracing::warn!("reading the XDP {} counter: {e}", r.name());
                    None
                }
            })
            .collect()
    }

    /// The workers' latest published counters, the queue map and the XDP programs'
    /// decisions.
    pub fn stats(&self) -> agent_api::AgentStats {
        agent_api::AgentStats {
            workers: self.workers.iter().map(|w| summarize(&w.stats())).collect(),
            queues: self.queue_map(),
            xdp_decisions: self
                .xdp_decisions()
                .into_iter()
                .map(|(name, n)| (name.to_string(), n))
                .collect(),
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
                queue: p.queue,
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                // An empty fill ring is counted in rx_dropped too (the kernel's copy path), so
                // fill_ring_empty is not added again.
                kernel_rx_lost: p.xdp.rx_dropped + p.xdp.rx_ring_full,
            })
            .collect(),
    }
}
