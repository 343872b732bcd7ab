//! The output directory: one Ethernet pcap per egress port that emitted anything, and
//! verdicts.jsonl.
//!
//! Determinism is the point: the header fields are fixed (little-endian, whatever the
//! host), files are written in processing order only, and nothing depends on the clock
//! or on map iteration order. Pcaps of known ports left by an earlier run are removed
//! first, so the directory never mixes two runs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::error::ReplayError;
use super::input::pcap_error_text;
use super::record::VerdictRecord;

/// libpcap's largest snaplen: datapath output may be up to headroom + tailroom larger
/// than its input, so 65535 would not always hold it.
const OUT_SNAPLEN: u32 = 262_144;

pub const VERDICTS_FILE: &str = "verdicts.jsonl";

#[derive(Debug)]
pub struct Outputs {
    dir: PathBuf,
    resolution: TsResolution,
    verdicts_path: PathBuf,
    verdicts: BufWriter<File>,
    /// Port name -> its pcap, opened on the first packet sent there.
    pcaps: BTreeMap<String, PortPcap>,
}

#[derive(Debug)]
struct PortPcap {
    path: PathBuf,
    writer: PcapWriter<BufWriter<File>>,
}

fn out_err(path: &Path, message: impl ToString) -> ReplayError {
    ReplayError::Output {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

impl Outputs {
    /// Creates `dir` if missing, removes `<port>.pcap` of every known port, and starts
    /// verdicts.jsonl. `nanosecond` picks the pcap timestamp resolution: classic
    /// microsecond pcaps unless an input timestamp would lose precision in them.
    pub fn create<'a>(
        dir: &Path,
        known_ports: impl IntoIterator<Item = &'a str>,
        nanosecond: bool,
    ) -> Result<Outputs, ReplayError> {
        fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
        for port in known_ports {
            let path = pcap_path(dir, port)?;
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed output of an earlier run")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(out_err(&path, e)),
            }
        }
        let verdicts_path = dir.join(VERDICTS_FILE);
        let verdicts = File::create(&verdicts_path).map_err(|e| out_err(&verdicts_path, e))?;
        Ok(Outputs {
            dir: dir.to_path_buf(),
            resolution: if nanosecond {
                TsResolution::NanoSecond
            } else {
                TsResolution::MicroSecond
            },
            verdicts_path,
            verdicts: BufWriter::new(verdicts),
            pcaps: BTreeMap::new(),
        })
    }

    /// Appends one line to verdicts.jsonl.
    pub fn verdict(&mut self, record: &VerdictRecord) -> Result<(), ReplayError> {
        let path = &self.verdicts_path;
        serde_json::to_writer(&mut self.verdicts, record).map_err(|e| out_err(path, e))?;
        self.verdicts.write_all(b"\n").map_err(|e| out_err(path, e))
    }

    /// Appends a frame sent on `port` to `<port>.pcap`. `truncated` is how much of the
    /// input packet the capture had cut off; the output claims the same shortfall.
    pub fn emit(
        &mut self,
        port: &str,
        ts_ns: u64,
        frame: &[u8],
        truncated: u32,
    ) -> Result<(), ReplayError> {
        if !self.pcaps.contains_key(port) {
            let path = pcap_path(&self.dir, port)?;
            let file = File::create(&path).map_err(|e| out_err(&path, e))?;
            let header = PcapHeader {
                version_major: 2,
                version_minor: 4,
                ts_correction: 0,
                ts_accuracy: 0,
                snaplen: OUT_SNAPLEN,
                datalink: DataLink::ETHERNET,
                ts_resolution: self.resolution,
                endianness: Endianness::Little,
            };
            let writer = PcapWriter::with_header(BufWriter::new(file), header)
                .map_err(|e| out_err(&path, pcap_error_text(&e)))?;
            self.pcaps
                .insert(port.to_string(), PortPcap { path, writer });
        }
        let Some(out) = self.pcaps.get_mut(port) else {
            return Ok(());
        };
        let caplen = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let packet = PcapPacket::new(
            Duration::from_nanos(ts_ns),
            caplen.saturating_add(truncated),
            frame,
        );
        out.writer
            .write_packet(&packet)
            .map(|_| ())
            .map_err(|e| out_err(&out.path, pcap_error_text(&e)))
    }

    /// Flushes everything; returns the pcaps written, by port name.
    pub fn finish(mut self) -> Result<Vec<(String, PathBuf)>, ReplayError> {
        self.verdicts
            .flush()
            .map_err(|e| out_err(&self.verdicts_path, e))?;
        let mut written = Vec::new();
        for (port, out) in self.pcaps {
            out.writer
                .into_writer()
                .flush()
                .map_err(|e| out_err(&out.path, e))?;
            written.push((port, out.path));
        }
        Ok(written)
    }
}

/// `dir/<port>.pcap`, refusing names that would leave the directory.
fn pcap_path(dir: &Path, port: &str) -> Result<PathBuf, ReplayError> {
    if port.is_empty() || port.contains(['/', '\\']) || port.starts_with('.') {
        return Err(out_err(
            dir,
            format!("port name {port:?} is not usable as a file name"),
        ));
    }
    Ok(dir.join(format!("{port}.pcap")))
}
