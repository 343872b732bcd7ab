//! The sink: `kxdp_sink` attached to a receiving interface, counting per CPU what arrives
//! and dropping or passing it; read at any time, totals over all CPUs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::{Array, PerCpuArray, PerCpuHashMap};

use super::maps::{FlowKeyRaw, SinkCfg, SinkStatsRaw};
use super::packet::FlowSource;
use super::{PktgenError, SINK_PROGRAM, UnknownName, load_object};
use xdp_redirect::{AttachMode, Attachment, Interface};
use xdp_redirect::{XdpError, attach, detach};

/// What the sink does with a packet after counting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkAction {
    /// XDP_DROP: measures what XDP can take.
    Drop,
    /// XDP_PASS: hands it on to the kernel's stack.
    Pass,
}

impl std::str::FromStr for SinkAction {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "drop" => Ok(SinkAction::Drop),
            "pass" => Ok(SinkAction::Pass),
            _ => Err(UnknownName::new("sink action", s, "drop, pass")),
        }
    }
}

/// What the sink counted, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounts {
    pub packets: u64,
    /// Frame bytes (Ethernet header included, no FCS).
    pub bytes: u64,
    pub udp: u64,
    /// TCP with SYN and without ACK.
    pub tcp_syn: u64,
    /// Anything else (not IPv4 with a 20-byte header, other protocols, other TCP).
    pub other: u64,
    /// Smallest and largest frame seen (0 when none).
    pub min_len: u32,
    pub max_len: u32,
    /// Packets per CPU (index = CPU).
    pub per_cpu_packets: Vec<u64>,
}

/// A flow as the sink saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkFlow {
    pub source: FlowSource,
    /// IP protocol number.
    pub protocol: u8,
}

/// The sink attached to one interface; dropping it detaches the program.
#[derive(Debug)]
pub struct Sink {
    ebpf: Ebpf,
    attachment: Option<Attachment>,
}

impl Sink {
    /// Loads the sink and attaches it to `interface` (driver mode where supported).
    /// `track_flows` also counts per source address, port and protocol (up to 65536
    /// flows; costs a hash lookup per packet).
    pub fn attach(
        interface: &Interface,
        action: SinkAction,
        track_flows: bool,
    ) -> Result<Sink, PktgenError> {
        let mut ebpf = load_object(SINK_PROGRAM)?;
        let cfg = SinkCfg {
            action: match action {
                SinkAction::Drop => 1,
                SinkAction::Pass => 2,
            },
            track_flows: u32::from(track_flows),
        };
        let map = ebpf
            .map_mut("sink_cfg")
            .ok_or(XdpError::MissingMap("sink_cfg"))?;
        let mut array: Array<_, SinkCfg> = Array::try_from(map).map_err(XdpError::from)?;
        array.set(0, cfg, 0).map_err(XdpError::from)?;
        let attachment = attach(&mut ebpf, SINK_PROGRAM, interface)?;
        Ok(Sink {
            ebpf,
            attachment: Some(attachment),
        })
    }

    /// How the program is attached.
    pub fn mode(&self) -> Option<AttachMode> {
        self.attachment.as_ref().map(Attachment::mode)
    }

    /// The counts so far.
    pub fn counts(&self) -> Result<SinkCounts, PktgenError> {
        let map = self
            .ebpf
            .map("sink_stats")
            .ok_or(XdpError::MissingMap("sink_stats"))?;
        let array: PerCpuArray<_, SinkStatsRaw> =
            PerCpuArray::try_from(map).map_err(XdpError::from)?;
        let per_cpu = array.get(&0, 0).map_err(XdpError::from)?;
        let mut c = SinkCounts::default();
        for s in per_cpu.iter() {
            c.packets += s.packets;
            c.bytes += s.bytes;
            c.udp += s.udp;
            c.tcp_syn += s.tcp_syn;
            c.other += s.other;
            if s.packets > 0 {
                c.min_len = if c.min_len == 0 {
                    s.min_len
                } else {
                    c.min_len.min(s.min_len)
                };
                c.max_len = c.max_len.max(s.max_len);
            }
            c.per_cpu_packets.push(s.packets);
        }
        Ok(c)
    }

    /// Packets per flow (only with `track_flows`).
    pub fn flows(&self) -> Result<BTreeMap<SinkFlow, u64>, PktgenError> {
        let map = self
            .ebpf
            .map("sink_flows")
            .ok_or(XdpError::MissingMap("sink_flows"))?;
        let hash: PerCpuHashMap<_, FlowKeyRaw, u64> =
            PerCpuHashMap::try_from(map).map_err(XdpError::from)?;
        let mut out = BTreeMap::new();
        for entry in hash.iter() {
            let (key, values) = entry.map_err(XdpError::from)?;
            let flow = SinkFlow {
                source: FlowSource {
                    ip: Ipv4Addr::from(key.saddr),
                    port: key.sport,
                },
                protocol: key.proto,
            };
            *out.entry(flow).or_insert(0) += values.iter().sum::<u64>();
        }
        Ok(out)
    }

    /// Detaches the program and returns the final counts.
    pub fn detach(mut self) -> Result<SinkCounts, PktgenError> {
        let counts = self.counts()?;
        if let Some(a) = self.attachment.take() {
            detach(&mut self.ebpf, a)?;
        }
        Ok(counts)
    }
}
