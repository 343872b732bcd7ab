//! The AF_XDP workers: N threads, each owning sockets on its share of every port's rx
//! queues (the uplink, `host`, each pod's veth; a port's queues are spread over the
//! workers, one worker may serve several queues of a port) and one UMEM shared by them,
//! running every received frame through `datapath::process` and transmitting the result on
//! one of its own sockets of the destination port (no cross-worker transmit: a worker needs
//! at least one socket on every port it sends to).
//! (A worker built with [`Pipeline::MacSwapTo`] skips `process` and only swaps MACs: the
//! AF_XDP ceiling of the throughput rig, `rig::ceiling` in bench/rig.)
//!
//! Shared between workers:
//! - the tables, an `ArcSwap` the control side publishes into; a worker loads it once per
//!   batch, so a new generation is picked up between batches;
//! - the flow table, one `Mutex` for all workers, locked once per batch (never per
//!   packet). An XDP program can only redirect to the socket of the queue a packet arrived
//!   on, so a flow's reply may reach another worker than its request: one shared table
//!   means it always finds the flow. On copy-mode veths nearly all per-packet time is the
//!   kernel's copy, so contention stays small (measured: `WorkerStats::lock_wait_ns`);
//!   a hand-off to the owning worker is the alternative for zero-copy NICs.
//!
//! A worker busy-polls while packets flow and, after `idle_after_empty_polls` empty rounds,
//! sleeps in `epoll` on its sockets and a command waker (100 ms at most, to pick up new
//! table generations and age flows), so an idle node costs ~0% CPU.
//!
//! Threads inherit the network namespace of the thread that calls [`spawn`]; interface
//! indexes in [`PortSpec`] are in that namespace.

mod engine;
mod port;
mod stats;

use std::io;
use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use datapath::Tables;
use datapath::conntrack::Flows;

pub use crate::xsk::{FrameLedger, UmemConfig, UmemConfigError, XdpSocketStats};
pub use stats::{IoDrops, PortStats, WorkerStats};

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Index among the workers (names the thread, labels stats).
    pub id: usize,
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
    pub umem: UmemConfig,
    /// Frames read from the rx rings per batch (one flow-table lock per batch).
    pub batch: usize,
    /// Empty rounds of busy polling before sleeping on the sockets.
    pub idle_after_empty_polls: u32,
    /// What the worker does with a received frame.
    pub pipeline: Pipeline,
}

/// The per-frame work of a worker, fixed for its life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Pipeline {
    /// `datapath::process` decides every frame (the node's datapath).
    #[default]
    Datapath,
    /// The AF_XDP ceiling (the rig's path a, `rig::ceiling`): every frame received on
    /// another port gets its Ethernet source and destination swapped and goes out of the
    /// port with this name. No tables, no flow table: what is left is the sockets' own I/O cost.
    /// Frames received on that port itself are dropped (`hairpin_loop`), frames shorter
    /// than an Ethernet header too (`malformed_ethernet`).
    MacSwapTo(String),
}

impl WorkerConfig {
    /// Defaults: no pinning, the default UMEM, batches of 64, sleep after 64 empty rounds,
    /// the datapath pipeline.
    pub fn new(id: usize) -> WorkerConfig {
        WorkerConfig {
            id,
            cpu: None,
            umem: UmemConfig::default(),
            batch: 64,
            idle_after_empty_polls: 64,
            pipeline: Pipeline::Datapath,
        }
    }
}

/// The flow table all workers share, and the table generation whose deleted endpoints
/// have already been swept from it.
#[derive(Debug)]
pub struct SharedFlows {
    pub flows: Flows,
    pub generation_seen: u64,
}

impl SharedFlows {
    pub fn new(flows: Flows) -> SharedFlows {
        SharedFlows {
            flows,
            generation_seen: 0,
        }
    }
}

/// What the workers share: the published tables and the flow table.
#[derive(Debug, Clone)]
pub struct SharedState {
    pub tables: Arc<ArcSwap<Tables>>,
    pub flows: Arc<Mutex<SharedFlows>>,
}

/// A socket to open: its port's datapath name (`uplink`, `host`, `pod-<ns>-<name>`,
/// matched against `Tables::ports` every generation), the interface index and the rx queue
/// to bind. A worker may hold several sockets of one port (several queues); it transmits
/// to that port on the first it opened that is still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub ifindex: u32,
    pub queue: u32,
}

/// What is wrong with a [`WorkerConfig`], found before any thread or socket exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("umem: {0}")]
    Umem(#[source] UmemConfigError),
    #[error("batch must be at least 1")]
    ZeroBatch,
    #[error("the MAC-swap pipeline needs an output port name")]
    MacSwapWithoutPort,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker configuration: {0}")]
    Config(#[source] ConfigError),
    #[error("cannot pin the worker to cpu {0}")]
    Pin(usize),
    #[error("allocating the UMEM: {0}")]
    Umem(io::Error),
    #[error("starting the worker thread: {0}")]
    Spawn(io::Error),
    #[error("event poller: {0}")]
    Poll(io::Error),
    #[error("port {port}: {step}: {source}")]
    Socket {
        port: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("port {0} queue {1} is already open (or still closing) on this worker")]
    PortExists(String, u32),
    #[error("port {0} queue {1} is not open on this worker")]
    NoSuchPort(String, u32),
    #[error(
        "port {0} queue {1} anchors the worker's UMEM (its first socket) and other sockets are still open; remove them first"
    )]
    AnchorInUse(String, u32),
    #[error("a worker has at most {0} ports")]
    TooManyPorts(usize),
    #[error("worker {0} is not running")]
    Stopped(usize),
    #[error("worker {0} panicked")]
    Panicked(usize),
}

/// Requests from the handle to the worker thread.
#[derive(Debug)]
enum Command {
    AddPort(PortSpec, SyncSender<Result<RawFd, WorkerError>>),
    RemovePort(String, u32, SyncSender<Result<(), WorkerError>>),
    Stats(SyncSender<WorkerStats>),
    Stop,
}

/// A running worker. Dropping it stops the worker (as [`WorkerHandle::stop`] does).
#[derive(Debug)]
pub struct WorkerHandle {
    id: usize,
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    published: Arc<Mutex<WorkerStats>>,
    thread: Option<JoinHandle<Result<WorkerStats, WorkerError>>>,
}

/// How long `stats()` waits for a fresh snapshot before returning the last published one.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts a worker thread (pinned if `cfg.cpu` is set) with an empty set of ports.
pub fn spawn(cfg: WorkerConfig, shared: SharedState) -> Result<WorkerHandle, WorkerError> {
    cfg.umem
        .validate()
        .map_err(|e| WorkerError::Config(ConfigError::Umem(e)))?;
    if cfg.batch == 0 {
        return Err(WorkerError::Config(ConfigError::ZeroBatch));
    }
    if cfg.pipeline == Pipeline::MacSwapTo(String::new()) {
        return Err(WorkerError::Config(ConfigError::MacSwapWithoutPort));
    }
    let id = cfg.id;
    let (commands, command_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let published = Arc::new(Mutex::new(WorkerStats::default()));
    let publish_to = published.clone();
    let thread = std::thread::Builder::new()
        .name(format!("kxdp-worker-{id}"))
        .spawn(move || run_thread(cfg, shared, command_rx, publish_to, ready_tx))
        .map_err(WorkerError::Spawn)?;
    match ready_rx.recv() {
        Ok(Ok(waker)) => Ok(WorkerHandle {
            id,
            commands,
            waker,
            published,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(WorkerError::Panicked(id))
        }
    }
}

fn run_thread(
    cfg: WorkerConfig,
    shared: SharedState,
    commands: Receiver<Command>,
    published: Arc<Mutex<WorkerStats>>,
    ready: SyncSender<Result<Arc<mio::Waker>, WorkerError>>,
) -> Result<WorkerStats, WorkerError> {
    let id = cfg.id;
    match engine::Worker::new(cfg, shared, commands, published) {
        Ok((worker, waker)) => {
            if ready.send(Ok(waker)).is_err() {
                return Err(WorkerError::Stopped(id));
            }
            worker.run()
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            Err(WorkerError::Stopped(id))
        }
    }
}

impl WorkerHandle {
    pub fn id(&self) -> usize {
        self.id
    }

    fn send(&self, command: Command) -> Result<(), WorkerError> {
        self.commands
            .send(command)
            .map_err(|_| WorkerError::Stopped(self.id))?;
        // A worker asleep in epoll must see the command now, not at its next timeout.
        self.waker.wake().map_err(|_| WorkerError::Stopped(self.id))
    }

    /// Blocks until the worker has bound a socket on (ifindex, queue) and stocked its fill
    /// ring. Returns the socket fd (valid until `remove_port`) for the caller to put into
    /// the XSKMAP.
    pub fn add_port(&self, port: PortSpec) -> Result<RawFd, WorkerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::AddPort(port, tx))?;
        rx.recv().map_err(|_| WorkerError::Stopped(self.id))?
    }

    /// Closes the socket of port `name` on rx queue `queue`. The caller removes the XSKMAP
    /// entry first. Blocks until the socket is closed and its frames are back.
    pub fn remove_port(&self, name: &str, queue: u32) -> Result<(), WorkerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::RemovePort(name.to_string(), queue, tx))?;
        rx.recv().map_err(|_| WorkerError::Stopped(self.id))?
    }

    /// A fresh snapshot from the worker, or (if it does not answer within a second) the
    /// one it last published (it publishes every ~100 ms).
    pub fn stats(&self) -> WorkerStats {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.send(Command::Stats(tx)).is_ok()
            && let Ok(stats) = rx.recv_timeout(STATS_TIMEOUT)
        {
            return stats;
        }
        self.published_stats()
    }

    /// The snapshot the worker last published, without waking it.
    pub fn published_stats(&self) -> WorkerStats {
        match self.published.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stops the worker: its sockets drain (up to a second) and close, the thread exits.
    /// Returns the final stats, frame ledger included.
    pub fn stop(mut self) -> Result<WorkerStats, WorkerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<WorkerStats, WorkerError> {
        let Some(thread) = self.thread.take() else {
            return Err(WorkerError::Stopped(self.id));
        };
        // A worker that already exited has dropped its receiver: nothing to stop.
        let _ = self.send(Command::Stop);
        match thread.join() {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Panicked(self.id)),
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop_and_join();
        }
    }
}
