//! Reading and writing the classic pcap files of the cases.
//!
//! Written the way `kxdp replay` writes its outputs (little-endian, microsecond
//! timestamps, Ethernet) so a case's expected files look like a run's; compared packet
//! by packet, so header details never decide a case.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// One packet of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ts_ns: u64,
    /// Length on the wire (may exceed `data.len()` for a truncated capture).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Why a capture could not be written or read; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Format {
        path: PathBuf,
        source: pcap_file::PcapError,
    },
    /// Packet `index` (from 0) of the file.
    #[error("{}: packet {index}: {source}", path.display())]
    Packet {
        path: PathBuf,
        index: usize,
        source: pcap_file::PcapError,
    },
    #[error("{}: a frame of {len} bytes is too long for a pcap record", path.display())]
    FrameTooLong { path: PathBuf, len: usize },
}

fn format_error(path: &Path) -> impl Fn(pcap_file::PcapError) -> PcapError + '_ {
    move |source| PcapError::Format {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `packets` (timestamp in ns, frame) to `path` as an Ethernet pcap.
pub fn write(path: &Path, packets: &[(u64, &[u8])]) -> Result<(), PcapError> {
    let file = File::create(path).map_err(|source| PcapError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 262_144,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let mut w =
        PcapWriter::with_header(BufWriter::new(file), header).map_err(format_error(path))?;
    for (ts, data) in packets {
        let len = u32::try_from(data.len()).map_err(|_| PcapError::FrameTooLong {
            path: path.to_path_buf(),
            len: data.len(),
        })?;
        w.write_packet(&PcapPacket::new(Duration::from_nanos(*ts), len, data))
            .map_err(format_error(path))?;
    }
    Ok(())
}

/// Reads every packet of a classic pcap.
pub fn read(path: &Path) -> Result<Vec<Packet>, PcapError> {
    let file = File::open(path).map_err(|source| PcapError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut r = PcapReader::new(file).map_err(format_error(path))?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.map_err(|source| PcapError::Packet {
            path: path.to_path_buf(),
            index: out.len(),
            source,
        })?;
        out.push(Packet {
            ts_ns: u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX),
            orig_len: p.orig_len,
            data: p.data.into_owned(),
        });
    }
    Ok(out)
}
