//! The `--summary` table: one aligned row per input packet, for people reading a replay.
//!
//! Only presentation lives here; the facts come from the verdict records and the packet
//! descriptions. Nothing in it is a stable interface (tools read verdicts.jsonl).

use datapath::DropReason;
use datapath::counters::DropCounters;
use datapath::policy::PolicyDirection;
use std::fmt::Write as _;

use super::record::VerdictRecord;

/// One row: the processing sequence number, the packet's description and its record.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: usize,
    pub packet: String,
    pub record: VerdictRecord,
    /// What the datapath did, in order (`dnat`, `vxlan_encap`, `icmp_time_exceeded`, ...).
    pub steps: Vec<&'static str>,
}

const HEADERS: [&str; 7] = [
    "#",
    "in_port",
    "packet",
    "verdict",
    "out_port/reason",
    "steps",
    "service/backend",
];

fn cells(row: &Row) -> [String; 7] {
    let r = &row.record;
    let target = r
        .out_port
        .clone()
        .or_else(|| r.reason.map(str::to_string))
        .unwrap_or_else(|| "-".to_string());
    let mut service = match (&r.service, &r.backend) {
        (Some(s), Some(b)) => format!("{s} -> {b}"),
        (Some(s), None) => s.clone(),
        (None, Some(b)) => format!("-> {b}"),
        (None, None) => "-".to_string(),
    };
    if !r.policy.is_empty() {
        let _ = write!(service, " policy={}", r.policy.join(","));
    }
    if let Some(d) = r.direction {
        let _ = write!(service, " ({d})");
    }
    [
        row.seq.to_string(),
        format!("{}#{}", r.in_port, r.index),
        row.packet.clone(),
        r.verdict.to_string(),
        target,
        if row.steps.is_empty() {
            "-".to_string()
        } else {
            row.steps.join(",")
        },
        service,
    ]
}

/// Renders the table, header line first, columns padded to their widest cell (the last
/// column is not padded, so lines carry no trailing blanks), then a totals line.
/// One line of drop counts by reason, policy drops split by direction; empty without drops.
pub fn render_drops(drops: &DropCounters) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (reason, n) in drops.nonzero() {
        if reason == DropReason::PolicyDenied {
            parts.push(format!(
                "{}={n} (ingress {}, egress {})",
                reason.as_str(),
                drops.policy(PolicyDirection::Ingress),
                drops.policy(PolicyDirection::Egress)
            ));
        } else {
            parts.push(format!("{}={n}", reason.as_str()));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("drops: {}\n", parts.join(", "))
    }
}

pub fn render(rows: &[Row]) -> String {
    let table: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(str::len);
    for cells in &table {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(str::to_string);
    for cells in std::iter::once(&header).chain(&table) {
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else if i == 0 {
                // Numbers right-aligned.
                let _ = write!(out, "{c:>w$}  ");
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    }
    let count = |kind: &str| rows.iter().filter(|r| r.record.verdict == kind).count();
    let _ = writeln!(
        out,
        "{} packets: {} forward, {} pass, {} drop",
        rows.len(),
        count("forward"),
        count("pass"),
        count("drop")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verdict: &'static str) -> VerdictRecord {
        VerdictRecord {
            in_port: "pod-demo-client".into(),
            index: 0,
            verdict,
            out_port: None,
            reason: None,
            service: None,
            backend: None,
            policy: vec![],
            direction: None,
        }
    }

    #[test]
    fn aligned_without_trailing_blanks() {
        let mut fwd = record("forward");
        fwd.out_port = Some("uplink".into());
        fwd.service = Some("demo/web:80".into());
        fwd.backend = Some("10.244.2.7:8080".into());
        let mut drop = record("drop");
        drop.index = 1;
        drop.reason = Some("policy_denied");
        drop.policy = vec!["demo/deny".into()];
        let rows = vec![
            Row {
                seq: 0,
                packet: "10.244.1.5:40000 -> 10.96.0.10:80 TCP [S]".into(),
                record: fwd,
                steps: vec!["dnat", "vxlan_encap"],
            },
            Row {
                seq: 1,
                packet: "ARP".into(),
                record: drop,
                steps: vec![],
            },
        ];
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
        let col = lines[0].find("verdict").unwrap();
        assert_eq!(lines[1].find("forward"), Some(col));
        assert_eq!(lines[2].find("drop"), Some(col));
        assert!(lines[1].ends_with("demo/web:80 -> 10.244.2.7:8080"));
        assert!(lines[2].ends_with("- policy=demo/deny"));
        assert_eq!(lines[3], "2 packets: 1 forward, 0 pass, 1 drop");
    }
}
