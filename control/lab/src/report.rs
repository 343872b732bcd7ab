//! The check table `kxdp-lab check` prints.

use std::fmt::Write;
use std::time::Duration;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// What was measured (RTTs, answers per backend, packets per second), or why it failed.
    pub measured: String,
    pub elapsed: Duration,
}

/// The table: check | result | time | measured, then a count.
pub fn render(results: &[CheckResult]) -> String {
    let name_w = results
        .iter()
        .map(|r| r.name.len())
        .chain(["check".len()])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let _ = writeln!(out, "{:<name_w$}  result  {:>7}  measured", "check", "time");
    let _ = writeln!(out, "{}", "-".repeat(name_w + 28));
    for r in results {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<6}  {:>6.2}s  {}",
            r.name,
            if r.passed { "pass" } else { "FAIL" },
            r.elapsed.as_secs_f64(),
            r.measured
        );
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let _ = writeln!(out, "{passed}/{} checks passed", results.len());
    out
}

/// "p50 0.21 ms, p99 0.80 ms" from microseconds.
pub fn rtt(p50_us: u64, p99_us: u64) -> String {
    format!("rtt p50 {} p99 {}", ms(p50_us), ms(p99_us))
}

pub fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_check_and_a_count() {
        let rows = vec![
            CheckResult {
                name: "same node TCP".into(),
                passed: true,
                measured: "20/20".into(),
                elapsed: Duration::from_millis(120),
            },
            CheckResult {
                name: "policy deny".into(),
                passed: false,
                measured: "answered 1/3".into(),
                elapsed: Duration::from_secs(3),
            },
        ];
        let t = render(&rows);
        assert!(t.contains("same node TCP  pass      0.12s  20/20"), "{t}");
        assert!(
            t.contains("policy deny    FAIL      3.00s  answered 1/3"),
            "{t}"
        );
        assert!(t.ends_with("1/2 checks passed\n"));
        assert_eq!(rtt(210, 1500), "rtt p50 0.21 ms p99 1.50 ms");
    }
}
