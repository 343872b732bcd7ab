//! The classic Prometheus text format from prometheus-client's OpenMetrics, and the time
//! formats the agent's HTTP answers use.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples `x_total`
/// and the text ends in `# EOF`. The classic text format names the family after its
/// samples and has no EOF marker (a parser of it would see `x` as a family without
/// samples and `x_total` as one without HELP or TYPE). OpenMetrics' `unknown` type is the
/// classic format's `untyped`.
pub(super) fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match header {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let tail = match (p, tail) {
                    ("# TYPE ", "unknown") => "untyped",
                    _ => tail,
                };
                let _ = writeln!(out, "{p}{name}{suffix} {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
