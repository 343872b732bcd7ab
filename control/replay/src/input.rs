//! Reading capture files: `PORT=FILE` specs, pcap and pcapng, timestamps in nanoseconds.
//!
//! Owns everything about the input side of `kxdp replay` up to "a list of packets with
//! their time, link type and bytes". Each file is read completely before anything is
//! processed, so a corrupt file stops the run before any output is written.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::Block;
use pcap_file::pcapng::PcapNgReader;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::{PcapError, TsResolution};

use super::error::{ArgError, ReplayError};
use super::linktype::LinkKind;

/// One `--in PORT=FILE` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub port: String,
    pub file: PathBuf,
}

impl FromStr for InputSpec {
    type Err = ArgError;

    fn from_str(s: &str) -> Result<InputSpec, ArgError> {
        // Split at the first '=': port names never contain one, file names might.
        match s.split_once('=') {
            Some((port, file)) if !port.is_empty() && !file.is_empty() => Ok(InputSpec {
                port: port.to_string(),
                file: PathBuf::from(file),
            }),
            _ => Err(ArgError::Input(s.to_string())),
        }
    }
}

impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.port, self.file.display())
    }
}

/// One packet as captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPacket {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// How the bytes start (the link type of the file or pcapng interface).
    pub link: LinkKind,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: Vec<u8>,
    /// Bytes on the wire that the capture cut off (`orig_len - caplen`, 0 if none).
    pub truncated: u32,
}

/// Every packet of one input file, in file order.
#[derive(Debug, Clone)]
pub struct Capture {
    pub packets: Vec<CapturedPacket>,
}

/// File format, from the first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcap,
    PcapNg,
}

fn detect(magic: [u8; 4]) -> Option<Format> {
    match u32::from_be_bytes(magic) {
        0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => Some(Format::Pcap),
        // The section header block type is a palindrome: same in both byte orders.
        0x0a0d_0d0a => Some(Format::PcapNg),
        _ => None,
    }
}

/// Reads a whole capture file.
pub fn read_capture(path: &Path) -> Result<Capture, ReplayError> {
    let input_err = |message: String| ReplayError::Input {
        file: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(|e| input_err(e.to_string()))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| input_err("too short to be a pcap or pcapng file".to_string()))?;
    let format = detect(magic).ok_or_else(|| {
        input_err(format!(
            "not a pcap or pcapng file (magic {:02x}{:02x}{:02x}{:02x})",
            magic[0], magic[1], magic[2], magic[3]
        ))
    })?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| input_err(e.to_string()))?;
    match format {
        Format::Pcap => read_pcap(path, file),
        Format::PcapNg => read_pcapng(path, file),
    }
}

fn corrupt(path: &Path, index: usize, err: &PcapError) -> ReplayError {
    ReplayError::Corrupt {
        file: path.to_path_buf(),
        index,
        message: pcap_error_text(err),
    }
}

/// pcap-file's `Display` hides the IO error inside ("Error reading bytes"); show it.
pub fn pcap_error_text(err: &PcapError) -> String {
    match err {
        PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "file ends in the middle of a record".to_string()
        }
        PcapError::IoError(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn read_pcap(path: &Path, file: File) -> Result<Capture, ReplayError> {
    let mut reader = PcapReader::new(file).map_err(|e| ReplayError::Input {
        file: path.to_path_buf(),
        message: format!("bad pcap header: {}", pcap_error_text(&e)),
    })?;
    let header = reader.header();
    let link = PcapLink::from_header_field(u32::from(header.datalink));
    let mut packets = Vec::new();
    while let Some(raw) = reader.next_raw_packet() {
        // Raw records, not `next_packet`: pcap-file 2.0 rejects records whose orig_len
        // exceeds the snaplen, which is exactly what a truncated capture looks like.
        let raw = raw.map_err(|e| corrupt(path, packets.len(), &e))?;
        let index = packets.len();
        let frac_ns = match header.ts_resolution {
            TsResolution::MicroSecond => u64::from(raw.ts_frac) * 1_000,
            TsResolution::NanoSecond => u64::from(raw.ts_frac),
        };
        let truncated = raw.orig_len.saturating_sub(raw.incl_len);
        let mut data = raw.data.into_owned();
        strip_fcs(&mut data, link.fcs_len, truncated);
        tracing::trace!(index, len = data.len(), "pcap record");
        packets.push(CapturedPacket {
            ts_ns: u64::from(raw.ts_sec) * 1_000_000_000 + frac_ns,
            link: link.kind,
            truncated,
            data,
        });
    }
    Ok(Capture { packets })
}

fn read_pcapng(path: &Path, file: File) -> Result<Capture, ReplayError> {
    let mut reader = PcapNgReader::new(file).map_err(|e| ReplayError::Input {
        file: path.to_path_buf(),
        message: format!("bad pcapng section header: {}", pcap_error_text(&e)),
    })?;
    let mut packets = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| corrupt(path, packets.len(), &e))?;
        // (interface id, raw timestamp ticks or None, original length, bytes)
        let (iface_id, ticks, orig_len, mut data) = match block {
            Block::EnhancedPacket(epb) => (
                epb.interface_id,
                // pcap-file 2.0 stores the raw 64-bit tick count as if it were nanoseconds;
                // the real unit is the interface's if_tsresol, applied below.
                Some(u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX)),
                epb.original_len,
                epb.data.into_owned(),
            ),
            Block::Packet(pb) => (
                u32::from(pb.interface_id),
                Some(pb.timestamp),
                pb.original_len,
                pb.data.into_owned(),
            ),
            // A simple packet block has no timestamp and always belongs to interface 0.
            Block::SimplePacket(spb) => (0, None, spb.original_len, spb.data.into_owned()),
            _ => continue,
        };
        let index = packets.len();
        let iface =
            reader
                .interfaces()
                .get(iface_id as usize)
                .ok_or_else(|| ReplayError::Corrupt {
                    file: path.to_path_buf(),
                    index,
                    message: format!("packet on interface {iface_id}, which was never described"),
                })?;
        let ts_ns = match ticks {
            Some(t) => ticks_to_ns(t, iface),
            // No timestamp: keep the previous packet's time so the merge order stays sane.
            None => packets.last().map_or(0, |p: &CapturedPacket| p.ts_ns),
        };
        let truncated = u32::try_from(data.len())
            .map(|caplen| orig_len.saturating_sub(caplen))
            .unwrap_or(0);
        strip_fcs(&mut data, iface_fcs_len(iface), truncated);
        packets.push(CapturedPacket {
            ts_ns,
            link: LinkKind::from_code(u32::from(iface.linktype)),
            truncated,
            data,
        });
    }
    Ok(Capture { packets })
}

/// Converts pcapng timestamp ticks to nanoseconds using the interface's `if_tsresol`
/// (default 10^-6) and `if_tsoffset` (seconds, default 0). Saturates rather than fails:
/// an absurd resolution gives an absurd time, not an error.
fn ticks_to_ns(ticks: u64, iface: &InterfaceDescriptionBlock<'_>) -> u64 {
    let mut tsresol = 6u8;
    let mut offset_s = 0u64;
    for opt in &iface.options {
        match opt {
            InterfaceDescriptionOption::IfTsResol(r) => tsresol = *r,
            InterfaceDescriptionOption::IfTsOffset(o) => offset_s = *o,
            _ => {}
        }
    }
    let ticks = u128::from(ticks);
    let ns: u128 = if tsresol & 0x80 == 0 {
        // 10^-n seconds per tick.
        let n = u32::from(tsresol);
        if n <= 9 {
            ticks.saturating_mul(10u128.pow(9 - n))
        } else {
            10u128.checked_pow(n - 9).map_or(0, |div| ticks / div)
        }
    } else {
        // 2^-n seconds per tick.
        let n = u32::from(tsresol & 0x7f);
        ticks
            .saturating_mul(1_000_000_000)
            .checked_shr(n)
            .unwrap_or(0)
    };
    let total = ns.saturating_add(u128::from(offset_s).saturating_mul(1_000_000_000));
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// The link-type field of a classic pcap header, decoded as libpcap does: the low 16 bits
/// are the LINKTYPE; bit 26 says the top 4 bits give the FCS length in 16-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PcapLink {
    kind: LinkKind,
    /// Bytes of frame check sequence at the end of every complete record.
    fcs_len: usize,
}

impl PcapLink {
    fn from_header_field(raw: u32) -> PcapLink {
        let fcs_len = if raw & 0x0400_0000 != 0 {
            ((raw >> 28) as usize) * 2
        } else {
            0
        };
        PcapLink {
            kind: LinkKind::from_code(raw & 0xffff),
            fcs_len,
        }
    }
}

/// The pcapng `if_fcslen` option (in bits) as bytes.
fn iface_fcs_len(iface: &InterfaceDescriptionBlock<'_>) -> usize {
    iface
        .options
        .iter()
        .find_map(|opt| match opt {
            InterfaceDescriptionOption::IfFcsLen(bits) => Some(usize::from(*bits) / 8),
            _ => None,
        })
        .unwrap_or(0)
}

/// Drops a captured FCS: frames reach the datapath without one (AF_XDP never sees it). A
/// record cut by the snaplen lost its tail, FCS included, so it is left alone.
fn strip_fcs(data: &mut Vec<u8>, fcs_len: usize, truncated: u32) {
    if fcs_len > 0 && truncated == 0 {
        data.truncate(data.len().saturating_sub(fcs_len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_spec_splits_at_first_equals() {
        let s: InputSpec = "pod-demo-client=a=b.pcap".parse().unwrap();
        assert_eq!(s.port, "pod-demo-client");
        assert_eq!(s.file, PathBuf::from("a=b.pcap"));
        assert!("nofile".parse::<InputSpec>().is_err());
        assert!("=x.pcap".parse::<InputSpec>().is_err());
        assert!("uplink=".parse::<InputSpec>().is_err());
    }

    #[test]
    fn pcap_linktype_field_with_fcs_bits() {
        // tcpdump's fuzz captures carry 0x30000001: FCS length bits without the present bit.
        assert_eq!(
            PcapLink::from_header_field(0x3000_0001),
            PcapLink {
                kind: LinkKind::Ethernet,
                fcs_len: 0
            }
        );
        assert_eq!(
            PcapLink::from_header_field(0x2400_0001),
            PcapLink {
                kind: LinkKind::Ethernet,
                fcs_len: 4
            }
        );
        assert_eq!(PcapLink::from_header_field(101).kind, LinkKind::RawIp);
        let mut frame = vec![1, 2, 3, 4, 5, 6];
        strip_fcs(&mut frame, 4, 10);
        assert_eq!(frame.len(), 6);
        strip_fcs(&mut frame, 4, 0);
        assert_eq!(frame, vec![1, 2]);
        strip_fcs(&mut frame, 4, 0);
        assert!(frame.is_empty());
    }

    #[test]
    fn tsresol_conversions() {
        let iface = |opts| InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::ETHERNET,
            snaplen: 0,
            options: opts,
        };
        assert_eq!(ticks_to_ns(5, &iface(vec![])), 5_000);
        let ns = iface(vec![InterfaceDescriptionOption::IfTsResol(9)]);
        assert_eq!(ticks_to_ns(5, &ns), 5);
        let ps = iface(vec![InterfaceDescriptionOption::IfTsResol(12)]);
        assert_eq!(ticks_to_ns(5_000, &ps), 5);
        let bin = iface(vec![InterfaceDescriptionOption::IfTsResol(0x80 | 10)]);
        assert_eq!(ticks_to_ns(1024, &bin), 1_000_000_000);
        let off = iface(vec![InterfaceDescriptionOption::IfTsOffset(2)]);
        assert_eq!(ticks_to_ns(1, &off), 2_000_001_000);
        let silly = iface(vec![InterfaceDescriptionOption::IfTsResol(0x7f)]);
        assert_eq!(ticks_to_ns(u64::MAX, &silly), 0);
    }
}
