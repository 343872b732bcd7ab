//! What `kxdp-bench` found: the raw numbers (written as JSON), the side-by-side table
//! with the ratios, and the latency table.

use std::fmt::Write as _;

use crate::traffic::GenMode;
use serde::Serialize;

use super::measure::{GENERATOR_BOUND_SHARE, Latency, Throughput};

/// The four paths, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathId {
    /// (a) the same AF_XDP engine, rx -> MAC swap -> tx, no processing.
    AfXdpCeiling,
    /// (b) kxdp: pod -> ClusterIP -> remote backend (DNAT, policy, VXLAN).
    Kxdp,
    /// (c) kube-proxy iptables mode + Flannel vxlan.
    KernelIptables,
    /// (d) kube-proxy nftables mode + Flannel vxlan.
    KernelNftables,
}

impl PathId {
    pub const ALL: [PathId; 4] = [
        PathId::AfXdpCeiling,
        PathId::Kxdp,
        PathId::KernelIptables,
        PathId::KernelNftables,
    ];

    pub fn letter(self) -> char {
        match self {
            PathId::AfXdpCeiling => 'a',
            PathId::Kxdp => 'b',
            PathId::KernelIptables => 'c',
            PathId::KernelNftables => 'd',
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PathId::AfXdpCeiling => "AF_XDP ceiling: rx -> MAC swap -> tx",
            PathId::Kxdp => "kxdp: ClusterIP DNAT + policy + VXLAN",
            PathId::KernelIptables => "kernel: kube-proxy iptables + Flannel",
            PathId::KernelNftables => "kernel: kube-proxy nftables + Flannel",
        }
    }

    /// Bytes the path adds to a frame on node A's uplink.
    pub fn wire_overhead(self) -> u32 {
        match self {
            PathId::AfXdpCeiling => 0,
            _ => 50,
        }
    }
}

/// One path's results: throughput per requested size (in `Settings::sizes` order) and
/// latency per load level; or why it was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    pub path: PathId,
    pub letter: char,
    pub label: &'static str,
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub skipped: Option<String>,
}

impl PathResult {
    pub fn new(path: PathId) -> PathResult {
        PathResult {
            path,
            letter: path.letter(),
            label: path.label(),
            throughput: Vec::new(),
            latency: Vec::new(),
            skipped: None,
        }
    }

    /// Cell `i`: its Mpps, and whether that is only a lower bound (generator-bound).
    fn cell(&self, i: usize) -> Option<Measured> {
        self.throughput.get(i).map(|t| Measured {
            value: t.delivered_pps / 1e6,
            bound: if t.generator_bound {
                Bound::AtLeast
            } else {
                Bound::Exact
            },
        })
    }
}

/// How far a number can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Measured as it is.
    Exact,
    /// The true value is at least this (a generator-bound rate, or a ratio over an exact
    /// denominator with such a rate on top).
    AtLeast,
    /// The true value is at most this (a ratio over a generator-bound rate).
    AtMost,
    /// Both sides are lower bounds: the ratio says nothing.
    Unknown,
}

/// A number with its [`Bound`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measured {
    pub value: f64,
    pub bound: Bound,
}

impl Measured {
    /// `self / den`, with the bound that follows from both sides'.
    fn over(self, den: Measured) -> Option<Measured> {
        (den.value > 0.0).then(|| Measured {
            value: self.value / den.value,
            bound: match (self.bound, den.bound) {
                (Bound::Exact, Bound::Exact) => Bound::Exact,
                (Bound::AtLeast, Bound::Exact) => Bound::AtLeast,
                (Bound::Exact, Bound::AtLeast) => Bound::AtMost,
                _ => Bound::Unknown,
            },
        })
    }

    fn render(self, decimals: usize) -> String {
        let v = self.value;
        match self.bound {
            Bound::Exact => format!("{v:.decimals$}"),
            Bound::AtLeast => format!(">={v:.decimals$}"),
            Bound::AtMost => format!("<={v:.decimals$}"),
            Bound::Unknown => "?".into(),
        }
    }
}

/// The three ratios the table shows.
pub const RATIOS: [(PathId, PathId, &str); 3] = [
    (
        PathId::Kxdp,
        PathId::AfXdpCeiling,
        "b/a (kxdp / AF_XDP ceiling)",
    ),
    (
        PathId::Kxdp,
        PathId::KernelIptables,
        "b/c (kxdp / kube-proxy iptables)",
    ),
    (
        PathId::Kxdp,
        PathId::KernelNftables,
        "b/d (kxdp / kube-proxy nftables)",
    ),
];

/// One ratio per size (None where a side was not measured), in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RatioRow {
    pub name: &'static str,
    pub per_size: Vec<Option<Measured>>,
}

/// The generator that ran and why (the probe's answer).
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorUsed {
    #[serde(skip)]
    pub kind: GenMode,
    /// `kind`'s name, for the JSON.
    pub mode: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub sizes: Vec<u16>,
    pub flows: u32,
    pub warmup_s: f64,
    pub window_s: f64,
    pub requests: u32,
    pub repeat: u32,
    pub generator_cpu: usize,
    pub forwarding_cpu: usize,
    pub generator: GeneratorUsed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    /// /proc/cpuinfo's model name.
    pub cpu_model: String,
    pub cpus: usize,
    pub iptables: String,
    /// /proc/loadavg's 1-minute figure before and after the run: how busy the machine was
    /// with other work (these numbers share it).
    pub load_before: f64,
    pub load_after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub machine: Machine,
    pub settings: Settings,
    pub paths: Vec<PathResult>,
    /// b/a, b/c, b/d per size, with their bounds (see [`Bound`]).
    pub ratios: Vec<RatioRow>,
}

impl BenchReport {
    /// The report of a run, its ratios computed.
    pub fn new(
        started_unix: u64,
        machine: Machine,
        settings: Settings,
        paths: Vec<PathResult>,
    ) -> BenchReport {
        let mut r = BenchReport {
            started_unix,
            machine,
            settings,
            paths,
            ratios: Vec::new(),
        };
        r.ratios = RATIOS
            .iter()
            .map(|&(num, den, name)| RatioRow {
                name,
                per_size: (0..r.settings.sizes.len())
                    .map(|i| r.ratio(num, den, i))
                    .collect(),
            })
            .collect();
        r
    }

    pub fn path(&self, id: PathId) -> Option<&PathResult> {
        self.paths
            .iter()
            .find(|p| p.path == id && p.skipped.is_none())
    }

    /// `num`'s Mpps over `den`'s at size index `i`, bounded as the two cells are.
    pub fn ratio(&self, num: PathId, den: PathId, i: usize) -> Option<Measured> {
        let n = self.path(num)?.cell(i)?;
        let d = self.path(den)?.cell(i)?;
        n.over(d)
    }

    /// Whether any measured cell is generator-bound.
    pub fn any_generator_bound(&self) -> bool {
        self.paths
            .iter()
            .flat_map(|p| &p.throughput)
            .any(|t| t.generator_bound)
    }
}

const LABEL_WIDTH: usize = 46;

fn size_header(settings: &Settings, first: &str) -> String {
    let mut line = format!("{first:<LABEL_WIDTH$}");
    for &s in &settings.sizes {
        let _ = write!(line, "{:>10}", format!("{s} B"));
    }
    line
}

/// The throughput table with the ratios, then the latency table.
pub fn render(r: &BenchReport) -> String {
    let s = &r.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kxdp-bench: node A's forwarding, Mpps delivered to node B ({} UDP flows from one pod \
         to a ClusterIP with 2 backends on node B; generator on CPU {}, node A's forwarding on CPU {}; \
         {:.1} s window after {:.1} s warm-up)",
        s.flows, s.generator_cpu, s.forwarding_cpu, s.window_s, s.warmup_s
    );
    let _ = writeln!(
        out,
        "(kernel {}, {}, {} CPUs, load average {:.2} before / {:.2} after{})",
        r.machine.kernel,
        r.machine.cpu_model,
        r.machine.cpus,
        r.machine.load_before,
        r.machine.load_after,
        if s.repeat > 1 {
            format!("; each cell the median of {} windows", s.repeat)
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "generator: {} ({})", s.generator.mode, s.generator.why);
    let _ = writeln!(out, "{}", size_header(s, "path"));
    for p in &r.paths {
        let mut line = format!("{:<LABEL_WIDTH$}", format!("({}) {}", p.letter, p.label));
        match &p.skipped {
            Some(why) => {
                let _ = write!(line, "  not measured: {why}");
            }
            None => {
                for i in 0..s.sizes.len() {
                    let _ = write!(line, "{:>10}", fmt_cell(p.cell(i), 3));
                }
            }
        }
        let _ = writeln!(out, "{line}");
    }
    for row in &r.ratios {
        let mut line = format!("{:<LABEL_WIDTH$}", row.name);
        for cell in &row.per_size {
            let _ = write!(line, "{:>10}", fmt_cell(*cell, 2));
        }
        let _ = writeln!(out, "{line}");
    }
    let mut line = format!(
        "{:<LABEL_WIDTH$}",
        "pod frame / frame on node A's uplink, bytes"
    );
    if let Some(p) = r.path(PathId::Kxdp).or_else(|| r.paths.first()) {
        for t in &p.throughput {
            let _ = write!(
                line,
                "{:>10}",
                format!("{}/{}", t.frame_bytes, t.wire_bytes)
            );
        }
    }
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "{}",
        size_header(s, "offered: Mpps that reached node A's port")
    );
    for p in r.paths.iter().filter(|p| p.skipped.is_none()) {
        let mut line = format!("{:<LABEL_WIDTH$}", format!("({})", p.letter));
        for t in &p.throughput {
            let _ = write!(line, "{:>10}", format!("{:.3}", t.offered_pps / 1e6));
        }
        let _ = writeln!(out, "{line}");
    }
    if r.any_generator_bound() {
        let _ = writeln!(
            out,
            ">= : generator-bound: node A forwarded at least {:.0}% of what reached it, so the \
             generator set that rate and node A can do at least as much; <= : a ratio over such \
             a rate; ? : both sides are",
            GENERATOR_BOUND_SHARE * 100.0
        );
    }

    let mut levels: Vec<(u64, bool)> = Vec::new();
    for l in r.paths.iter().flat_map(|p| &p.latency) {
        if !levels.contains(&(l.background_pps, l.one_flow)) {
            levels.push((l.background_pps, l.one_flow));
        }
    }
    if !levels.is_empty() {
        let _ = writeln!(
            out,
            "\nround trip, UDP request/response from the pod to the ClusterIP's echo on node B \
             ({} requests), microseconds p50 / p99",
            s.requests
        );
        let mut head = format!("{:<LABEL_WIDTH$}", "path");
        for &(b, one_flow) in &levels {
            let load = if b == 0 {
                "idle".to_string()
            } else {
                format!("+{} kpps", b / 1000)
            };
            let flows = if one_flow { "one flow" } else { "new flows" };
            let _ = write!(head, "{:>20}", format!("{load}, {flows}"));
        }
        let _ = writeln!(out, "{head}");
        for p in r.paths.iter().filter(|p| !p.latency.is_empty()) {
            let mut line = format!("{:<LABEL_WIDTH$}", format!("({}) {}", p.letter, p.label));
            for &(b, one_flow) in &levels {
                let cell = p
                    .latency
                    .iter()
                    .find(|l| l.background_pps == b && l.one_flow == one_flow)
                    .map_or("-".to_string(), latency_cell);
                let _ = write!(line, "{cell:>20}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

fn latency_cell(l: &Latency) -> String {
    match (&l.rtt_us, l.answered == l.requests) {
        (Some(rtt), true) => format!("{} / {}", rtt.p50, rtt.p99),
        (Some(rtt), false) => format!(
            "{} / {} ({} lost)",
            rtt.p50,
            rtt.p99,
            l.requests - l.answered
        ),
        (None, _) => "no answers".to_string(),
    }
}

fn fmt_cell(v: Option<Measured>, decimals: usize) -> String {
    v.map_or("-".to_string(), |v| v.render(decimals))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lab::probe::RttSummary;

    pub(crate) fn sample_report() -> BenchReport {
        let t = |mpps: f64, frame: u16, extra: u32| Throughput {
            frame_bytes: frame,
            wire_bytes: u32::from(frame) + extra,
            offered_pps: 4.0e6,
            generator_pps: 4.5e6,
            delivered_pps: mpps * 1e6,
            generator_bound: false,
            window_s: 3.0,
            delivered_packets: (mpps * 3e6) as u64,
            sink_per_cpu: vec![0, (mpps * 3e6) as u64],
            samples_mpps: vec![mpps],
        };
        let mut paths = Vec::new();
        for (id, m) in [
            (PathId::AfXdpCeiling, 0.6),
            (PathId::Kxdp, 0.45),
            (PathId::KernelIptables, 0.15),
            (PathId::KernelNftables, 0.1),
        ] {
            let mut p = PathResult::new(id);
            p.throughput = vec![
                t(m, 64, id.wire_overhead()),
                t(m * 0.9, 512, id.wire_overhead()),
            ];
            if id != PathId::AfXdpCeiling {
                p.latency = vec![
                    Latency {
                        background_pps: 0,
                        one_flow: false,
                        requests: 100,
                        answered: 100,
                        rtt_us: Some(RttSummary {
                            min: 50,
                            p50: 80,
                            p99: 200,
                            max: 300,
                        }),
                    },
                    Latency {
                        background_pps: 50_000,
                        one_flow: true,
                        requests: 100,
                        answered: 99,
                        rtt_us: Some(RttSummary {
                            min: 60,
                            p50: 90,
                            p99: 400,
                            max: 900,
                        }),
                    },
                ];
            }
            paths.push(p);
        }
        BenchReport::new(
            0,
            Machine {
                kernel: "6.18".into(),
                cpu_model: "Intel Xeon".into(),
                cpus: 2,
                iptables: "iptables v1.8.9 (nf_tables)".into(),
                load_before: 1.0,
                load_after: 1.5,
            },
            Settings {
                sizes: vec![64, 512],
                flows: 1024,
                warmup_s: 1.0,
                window_s: 3.0,
                requests: 100,
                repeat: 1,
                generator_cpu: 0,
                forwarding_cpu: 1,
                generator: GeneratorUsed {
                    kind: GenMode::FanOut,
                    mode: "fanout".into(),
                    why: "asked for".into(),
                },
            },
            paths,
        )
    }

    /// The last two cells of the line starting with `prefix`, last first.
    fn last_two_cells(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in\n{text}"))
            .split_whitespace()
            .rev()
            .take(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_table_has_every_path_and_the_ratios() {
        let r = sample_report();
        let text = render(&r);
        assert!(text.contains("(a) AF_XDP ceiling"), "{text}");
        assert!(text.contains("(d) kernel: kube-proxy nftables"), "{text}");
        let ratio_line = |prefix: &str| last_two_cells(&text, prefix);
        assert_eq!(ratio_line("b/a"), ["0.75", "0.75"]);
        assert_eq!(ratio_line("b/c"), ["3.00", "3.00"]);
        assert!(text.contains("80 / 200"), "{text}");
        assert!(text.contains("90 / 400 (1 lost)"), "{text}");
        assert!(text.contains("+50 kpps, one flow"), "{text}");
        assert!(text.contains("idle, new flows"), "{text}");
        assert!(text.contains("generator: fanout (asked for)"), "{text}");
        assert!(!text.contains(">="), "nothing is generator-bound: {text}");
    }

    #[test]
    fn generator_bound_cells_are_lower_bounds_and_so_are_their_ratios() {
        let mut r = sample_report();
        // The ceiling at 64 B forwarded everything that reached it.
        r.paths[0].throughput[0].generator_bound = true;
        // kxdp at 512 B too.
        r.paths[1].throughput[1].generator_bound = true;
        let r = BenchReport::new(r.started_unix, r.machine, r.settings, r.paths);
        let text = render(&r);
        let row = |prefix: &str| last_two_cells(&text, prefix);
        assert_eq!(row("(a) AF_XDP"), ["0.540", ">=0.600"]);
        // b/a: 64 B over a lower bound is an upper bound; 512 B a lower bound over an exact one.
        assert_eq!(row("b/a"), [">=0.75", "<=0.75"]);
        assert_eq!(row("b/c"), [">=3.00", "3.00"]);
        assert!(text.contains("generator-bound"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["paths"][0]["throughput"][0]["generator_bound"], true);
        assert_eq!(json["ratios"][0]["name"], "b/a (kxdp / AF_XDP ceiling)");
        assert_eq!(json["ratios"][0]["per_size"][0]["bound"], "at_most");
        assert_eq!(json["ratios"][0]["per_size"][1]["bound"], "at_least");
        let both = Measured {
            value: 1.0,
            bound: Bound::AtLeast,
        };
        assert_eq!(both.over(both).map(|m| m.bound), Some(Bound::Unknown));
    }

    #[test]
    fn a_skipped_path_says_why_and_has_no_ratio() {
        let mut r = sample_report();
        r.paths[3].skipped = Some("nft not found".into());
        let text = render(&r);
        assert!(text.contains("not measured: nft not found"), "{text}");
        assert_eq!(r.ratio(PathId::Kxdp, PathId::KernelNftables, 0), None);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["paths"][1]["path"], "kxdp");
        assert_eq!(json["paths"][3]["skipped"], "nft not found");
    }
}
