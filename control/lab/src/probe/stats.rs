//! What a probe client prints: one JSON object per run, read back by `kxdp-lab check`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Requests that got no (good) answer, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// Nothing came back in time (what a policy drop looks like).
    pub timeout: u32,
    /// TCP RST or ICMP port unreachable: the packet arrived but nobody listens there.
    pub refused: u32,
    /// An answer that does not echo our request.
    pub mismatch: u32,
    /// Anything else (unreachable network, local errors).
    pub error: u32,
}

impl Failures {
    pub fn total(&self) -> u32 {
        self.timeout + self.refused + self.mismatch + self.error
    }
}

/// Round-trip times of the answered requests, microseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttSummary {
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl RttSummary {
    /// None when nothing was answered.
    pub fn from_samples(samples: &[Duration]) -> Option<RttSummary> {
        let mut us: Vec<u64> = samples
            .iter()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .collect();
        us.sort_unstable();
        let first = *us.first()?;
        let last = *us.last()?;
        Some(RttSummary {
            min: first,
            p50: nearest_rank(&us, 50),
            p99: nearest_rank(&us, 99),
            max: last,
        })
    }
}

/// The smallest sample with at least `pct`% of the samples at or below it.
fn nearest_rank(sorted: &[u64], pct: usize) -> u64 {
    let n = sorted.len();
    let rank = (pct * n).div_ceil(100).max(1);
    sorted[rank.min(n) - 1]
}

/// The result of `kxdp-lab probe tcp|udp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub proto: String,
    pub to: String,
    pub count: u32,
    pub answered: u32,
    pub failures: Failures,
    /// Answers per server name (the `--name` of `kxdp-lab probe serve`).
    pub answered_by: BTreeMap<String, u32>,
    pub rtt_us: Option<RttSummary>,
    /// The first failure's message, to say what went wrong.
    pub first_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = RttSummary::from_samples(&samples).unwrap();
        assert_eq!((s.min, s.p50, s.p99, s.max), (1, 50, 99, 100));
        let one = RttSummary::from_samples(&[Duration::from_micros(7)]).unwrap();
        assert_eq!((one.min, one.p50, one.p99, one.max), (7, 7, 7, 7));
        let two = RttSummary::from_samples(&[Duration::from_micros(3), Duration::from_micros(9)])
            .unwrap();
        assert_eq!((two.p50, two.p99), (3, 9));
        assert!(RttSummary::from_samples(&[]).is_none());
    }
}
