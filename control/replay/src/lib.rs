//! `kxdp replay`: the datapath over pcap files (docs/replay.md).
//!
//! This module owns the run: load the state directory and translate it for one node,
//! read every input, merge them by time, feed each packet through `datapath::process`
//! exactly as a worker would, and write what came out. The pieces:
//!
//! * [`input`]: `PORT=FILE` specs; pcap/pcapng reading, timestamps in ns.
//! * [`linktype`]: which link types are taken, and Ethernet headers for raw IP.
//! * [`merge`]: the processing order of several inputs.
//! * [`record`]: the verdicts.jsonl record and the observer that fills it.
//! * [`output`]: the output directory (per-port pcaps, verdicts.jsonl).
//! * [`describe`], [`summary`]: the `--summary` table.

pub mod describe;
pub mod error;
pub mod input;
pub mod linktype;
pub mod merge;
pub mod output;
pub mod record;
pub mod summary;
pub mod update;

use std::path::{Path, PathBuf};

use datapath::Verdict;
use datapath::conntrack::Flows;
use datapath::counters::DropCounters;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::policy::PolicyDirection;
use datapath::tables::{PortId, Tables};

pub use error::{ArgError, ReplayError};
pub use input::InputSpec;
use input::{Capture, CapturedPacket};
use output::Outputs;
use record::{Recorder, VerdictRecord, format_backend};
pub use update::StateUpdate;

/// Room after each packet, for rewrites that grow it (e.g. an ICMP error quoting it).
pub const TAILROOM: usize = 256;

/// The table generation replay runs with (there is only ever one).
const GENERATION: u64 = 1;

/// What to replay (the `kxdp replay` arguments).
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub state: PathBuf,
    pub node: String,
    pub inputs: Vec<InputSpec>,
    pub out: PathBuf,
    /// Keep per-packet rows for the summary table.
    pub summary: bool,
    /// State changes during the run, applied in time order.
    pub updates: Vec<StateUpdate>,
}

/// What a finished run produced.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub packets: usize,
    /// The pcaps written: (port, path), by port name.
    pub pcaps: Vec<(String, PathBuf)>,
    /// Summary rows, when asked for.
    pub rows: Vec<summary::Row>,
    /// Drops by reason (and policy drops by direction), as a worker counts them.
    pub drops: DropCounters,
}

/// Runs a replay. Nothing is written until the state and every input have been read.
pub fn run(opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let (tables, config) = load_tables(&opts.state, &opts.node, GENERATION)?;
    let ports = resolve_ports(&tables, &opts.inputs)?;
    // Every later generation is built before anything runs: a bad update directory fails
    // the run up front, like a bad first one.
    let mut updates = opts.updates.clone();
    updates.sort_by_key(|u| u.at_ns);
    let mut generations = Vec::with_capacity(updates.len());
    for (i, u) in updates.iter().enumerate() {
        let (next, _) = load_tables(&u.state, &opts.node, GENERATION + 1 + i as u64)?;
        generations.push((u.at_ns, next));
    }
    let mut captures = Vec::with_capacity(opts.inputs.len());
    for spec in &opts.inputs {
        let capture = input::read_capture(&spec.file)?;
        tracing::info!(file = %spec.file.display(), port = %spec.port, packets = capture.packets.len(), "read input");
        captures.push(capture);
    }
    let timestamps: Vec<Vec<u64>> = captures
        .iter()
        .map(|c| c.packets.iter().map(|p| p.ts_ns).collect())
        .collect();
    let order = merge::merge_order(&timestamps);
    // Nanosecond pcaps only when microseconds would lose something.
    let nanosecond = timestamps.iter().flatten().any(|t| t % 1_000 != 0);
    let mut outputs = Outputs::create(
        &opts.out,
        std::iter::once(&tables)
            .chain(generations.iter().map(|(_, t)| t))
            .flat_map(|t| t.ports.iter().map(|p| p.name.as_str())),
        nanosecond,
    )?;

    let mut driver = Driver {
        tables: &tables,
        // One flow table for the whole run, as one worker would keep it, sized and aged as
        // the first state's kxdp.yaml says (updates change tables, not the agent config).
        flows: Flows::new(config.conntrack),
        outputs: &mut outputs,
        describe: opts.summary,
        drops: DropCounters::default(),
    };
    let mut report = ReplayReport::default();
    let mut pending = generations.iter().peekable();
    // Port ids are per generation: inputs are re-resolved by name after each update, and
    // a port that is gone (its pod deleted) no longer exists for the datapath.
    let mut ports: Vec<Option<PortId>> = ports.into_iter().map(Some).collect();
    for (seq, (input, index)) in order.into_iter().enumerate() {
        let (Some(spec), Some(packet)) = (
            opts.inputs.get(input),
            captures
                .get(input)
                .and_then(|c: &Capture| c.packets.get(index)),
        ) else {
            continue;
        };
        while let Some((_, next)) = pending.next_if(|(at, _)| *at <= packet.ts_ns) {
            driver.tables = next;
            let ended = datapath::pipeline::end_flows_to_deleted_endpoints(next, &mut driver.flows);
            tracing::info!(generation = next.generation, ended, "state update applied");
            ports = opts
                .inputs
                .iter()
                .map(|s| next.port_by_name(&s.port))
                .collect();
        }
        // A port unknown to this generation: the datapath sees a frame from nowhere.
        let port = ports
            .get(input)
            .copied()
            .flatten()
            .unwrap_or(PortId(u32::MAX));
        let (record, description, steps) = driver.replay_one(&spec.port, port, index, packet)?;
        driver.outputs.verdict(&record)?;
        if let Some(packet) = description {
            report.rows.push(summary::Row {
                seq,
                packet,
                record,
                steps,
            });
        }
        report.packets += 1;
    }
    report.drops = std::mem::take(&mut driver.drops);
    report.pcaps = outputs.finish()?;
    Ok(report)
}

/// Loads the state directory and builds this node's tables; warnings go to the log.
fn load_tables(
    dir: &Path,
    node: &str,
    generation: u64,
) -> Result<(Tables, model::config::AgentConfig), ReplayError> {
    let state = model::state::load_state_dir(dir).map_err(|source| ReplayError::State {
        dir: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    for warning in &state.warnings {
        tracing::warn!(state = %dir.display(), "{warning}");
    }
    // kxdp.yaml as it applies to this node, as the node's agent runs it (a `nodes:` entry's
    // underlayMTU; the uplink does not matter offline).
    let config = state
        .config
        .for_node(node, &state.cluster.node_labels(node));
    let translated = model::translate::translate(&state.cluster, &config, node, generation)
        .map_err(|source| ReplayError::Translate {
            node: node.to_string(),
            source,
        })?;
    for warning in &translated.warnings {
        tracing::warn!(node = %node, "{warning}");
    }
    Ok((translated.tables, config))
}

/// The port id of every input, or an error naming the first unknown port.
fn resolve_ports(tables: &Tables, inputs: &[InputSpec]) -> Result<Vec<PortId>, ReplayError> {
    inputs
        .iter()
        .map(|spec| {
            tables
                .port_by_name(&spec.port)
                .ok_or_else(|| ReplayError::UnknownPort {
                    port: spec.port.clone(),
                    file: spec.file.clone(),
                    known: tables
                        .ports
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

/// The name a port is reported (and its pcap named) by. A port id the tables do not know
/// would be a pipeline bug; it is still reported rather than lost.
fn port_name(tables: &Tables, port: PortId) -> String {
    tables
        .port(port)
        .map_or_else(|| format!("port-{}", port.0), |p| p.name.clone())
}

/// What stays the same from one packet to the next.
struct Driver<'a> {
    tables: &'a Tables,
    flows: Flows,
    outputs: &'a mut Outputs,
    /// Describe each input packet for the summary table.
    describe: bool,
    drops: DropCounters,
}

impl Driver<'_> {
    /// Feeds one packet through the pipeline, writes what it emitted, and returns its
    /// record (and its description, when the summary wants one).
    fn replay_one(
        &mut self,
        in_port_name: &str,
        in_port: PortId,
        index: usize,
        packet: &CapturedPacket,
    ) -> Result<(VerdictRecord, Option<String>, Vec<&'static str>), ReplayError> {
        let tables = self.tables;
        let mut record = VerdictRecord {
            in_port: in_port_name.to_string(),
            index,
            verdict: "drop",
            out_port: None,
            reason: None,
            service: None,
            backend: None,
            policy: Vec::new(),
            direction: None,
        };
        let Some(eth) = linktype::to_ethernet(packet.link, &packet.data, tables, in_port) else {
            record.reason = Some("unsupported_linktype");
            let description = self.describe.then(|| match packet.link {
                linktype::LinkKind::Unsupported(code) => {
                    format!("linktype {code}, not processed")
                }
                other => format!("{other:?}"),
            });
            return Ok((record, description, Vec::new()));
        };
        let description = self
            .describe
            .then(|| describe::describe(&eth, tables.overlay.udp_port));

        // Each packet in its own zeroed buffer, as a UMEM frame would be: nothing left over
        // from an earlier packet can leak into this one's headroom.
        let mut buf = vec![0u8; DEFAULT_HEADROOM + eth.len() + TAILROOM];
        let Some(mut frame) = Frame::load(&mut buf, DEFAULT_HEADROOM, &eth) else {
            // Cannot happen: the buffer was sized for it. Reported, not panicked on.
            record.reason = Some("replay_buffer_too_small");
            return Ok((record, description, Vec::new()));
        };
        let mut recorder = Recorder::default();
        let verdict = datapath::process(
            tables,
            &mut self.flows,
            packet.ts_ns,
            in_port,
            &mut frame,
            &mut recorder,
        );
        tracing::debug!(port = in_port_name, index, ?verdict, "processed");

        record.verdict = verdict.kind();
        match verdict {
            Verdict::Forward(out) => {
                let name = port_name(tables, out);
                self.outputs
                    .emit(&name, packet.ts_ns, frame.data(), packet.truncated)?;
                record.out_port = Some(name);
            }
            Verdict::Pass => {}
            Verdict::Drop(reason) => record.reason = Some(reason.as_str()),
        }
        record.service = recorder.service;
        record.backend = recorder.backend.map(format_backend);
        record.policy = recorder.policies;
        record.direction = recorder.direction.map(PolicyDirection::as_str);
        self.drops.record(verdict, recorder.direction);
        Ok((record, description, recorder.steps))
    }
}
