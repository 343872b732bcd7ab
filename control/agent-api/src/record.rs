//! Naming host veths and remembering attachments.
//!
//! The host veth's name is derived from the attachment (container id, ifname), so DEL and
//! CHECK find it without any state. A small record per attachment (under
//! `<stateDir>/<network>/<hostveth>.json`) keeps what cannot be derived, the pod's port name,
//! so that GC can close the ports of attachments the runtime forgot about.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// kxdp-cni's `stateDir` unless the conflist names another: attachment records (container id
/// -> host veth, port) for GC, for DEL without CNI_ARGS, and for an agent re-opening pods.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kxdp-cni";

/// Host veths are `kx` + 11 hex digits: 13 bytes, under IFNAMSIZ-1 (15).
pub const VETH_PREFIX: &str = "kx";
const HASH_DIGITS: usize = 11;

/// The host-side veth of attachment (container id, ifname).
///
/// The hash is FNV-1a (64-bit) over `container_id`, a 0 byte and `ifname`, finished with
/// the SplitMix64 mixer so that every output bit depends on every input byte; the top 44
/// bits are printed. It must never change: DEL and GC of attachments made by an older
/// kxdp-cni recompute it.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in container_id
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(ifname.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    format!(
        "{VETH_PREFIX}{:0width$x}",
        h >> (64 - 4 * HASH_DIGITS),
        width = HASH_DIGITS
    )
}

/// Whether `name` has the shape of our host veths (so GC never touches `kxdp-host` or
/// anybody else's links).
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == VETH_PREFIX.len() + HASH_DIGITS
        && name.starts_with(VETH_PREFIX)
        && name[VETH_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What kxdp-cni remembers about one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub host_veth: String,
    /// `pod-<namespace>-<name>`.
    pub port: String,
    #[serde(default)]
    pub netns: String,
}

/// The records of one network: `<state_dir>/<network>/`.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// `network` must already be validated as a plain name (`spec::validate_network_name`).
    pub fn new(state_dir: &Path, network: &str) -> Records {
        Records {
            dir: state_dir.join(network),
        }
    }

    fn path(&self, host_veth: &str) -> PathBuf {
        self.dir.join(format!("{host_veth}.json"))
    }

    /// Writes (or replaces) the record, atomically: a reader sees the old or the new file.
    pub fn save(&self, record: &Record) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let text = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!(".{}.tmp", record.host_veth));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.path(&record.host_veth))
    }

    /// The record of `host_veth`, if there is a readable one.
    pub fn load(&self, host_veth: &str) -> io::Result<Option<Record>> {
        match std::fs::read(self.path(host_veth)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record; a missing one is fine.
    pub fn remove(&self, host_veth: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(host_veth)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record of this network. Unreadable files are returned as errors next to the
    /// good records, so one corrupt file does not hide the others from GC.
    pub fn all(&self) -> io::Result<(Vec<Record>, Vec<String>)> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let mut records = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(veth) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_host_veth_name(veth) {
                continue;
            }
            match self.load(veth) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(e) => problems.push(format!("{}: {e}", entry.path().display())),
            }
        }
        records.sort_by(|a, b| a.host_veth.cmp(&b.host_veth));
        Ok((records, problems))
    }

    /// Host veths recorded by other networks under the same state dir: GC of this network
    /// must leave them alone.
    pub fn other_networks_veths(&self) -> io::Result<Vec<String>> {
        let Some(state_dir) = self.dir.parent() else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(state_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut veths = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path == self.dir || !path.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&path)? {
                let name = file?.file_name();
                if let Some(veth) = name.to_str().and_then(|n| n.strip_suffix(".json"))
                    && is_host_veth_name(veth)
                {
                    veths.push(veth.to_string());
                }
            }
        }
        Ok(veths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_and_short() {
        // Pinned (and computed independently, in Python, from the description above):
        // changing the hash would orphan every existing attachment's veth.
        assert_eq!(host_veth_name("0123456789abcdef", "eth0"), "kx1f5b2972b5a");
        for (id, ifname) in [("a", "eth0"), ("a", "eth1"), ("b", "eth0"), ("a\0", "eth0")] {
            let name = host_veth_name(id, ifname);
            assert_eq!(name.len(), 13);
            assert!(is_host_veth_name(&name), "{name}");
        }
        assert_ne!(host_veth_name("a", "eth0"), host_veth_name("a", "eth1"));
        assert_ne!(host_veth_name("a", "eth0"), host_veth_name("b", "eth0"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
    }

    #[test]
    fn veth_name_shape() {
        assert!(is_host_veth_name("kx0123456789a"));
        for other in [
            "kxdp-host",
            "kxdp-dp",
            "kx0123456789",
            "kx0123456789ab",
            "kx0123456789A",
            "eth0",
        ] {
            assert!(!is_host_veth_name(other), "{other}");
        }
    }

    #[test]
    fn records_roundtrip() {
        let dir = std::env::temp_dir().join(format!("kcni-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let records = Records::new(&dir, "net1");
        assert_eq!(records.all().unwrap(), (vec![], vec![]));
        let r = Record {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            host_veth: host_veth_name("c1", "eth0"),
            port: "pod-a-b".into(),
            netns: "/run/netns/x".into(),
        };
        records.save(&r).unwrap();
        assert_eq!(records.load(&r.host_veth).unwrap(), Some(r.clone()));
        std::fs::write(dir.join("net1/kx00000000000.json"), "junk").unwrap();
        let (good, bad) = records.all().unwrap();
        assert_eq!(good, vec![r.clone()]);
        assert_eq!(bad.len(), 1);
        let other = Records::new(&dir, "net2");
        assert_eq!(other.other_networks_veths().unwrap().len(), 2);
        records.remove(&r.host_veth).unwrap();
        records.remove(&r.host_veth).unwrap();
        assert_eq!(records.load(&r.host_veth).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
