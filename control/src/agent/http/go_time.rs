//! Times as kube-proxy's health bodies show them: Go's `time.Time.String()` of a UTC time
//! read from the clock, `2006-01-02 15:04:05.999999999 +0000 UTC m=+1.000000001` (fraction
//! without trailing zeros, the monotonic reading as seconds since the process started).
//! Tools that parse kube-proxy's `/healthz` body read these the same way from kxdp.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// Go's zero `time.Time`, what kube-proxy shows as `lastUpdated` before its first sync.
pub const ZERO: &str = "0001-01-01 00:00:00 +0000 UTC";

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Marks the process's start (the origin of the `m=` reading); the first call wins.
pub fn mark_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// `wall` (taken at `at`) as Go prints a time read from the clock.
pub fn clock_reading(wall: SystemTime, at: Instant) -> String {
    let since_start = at.saturating_duration_since(*PROCESS_START.get_or_init(Instant::now));
    format(wall, Some(since_start))
}

fn format(wall: SystemTime, monotonic: Option<Duration>) -> String {
    let Ok(ts) = jiff::Timestamp::try_from(wall) else {
        return ZERO.to_string();
    };
    let mut s = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = ts.subsec_nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        let _ = write!(s, ".{}", fraction.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    if let Some(m) = monotonic {
        let _ = write!(s, " m=+{}.{:09}", m.as_secs(), m.subsec_nanos());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn formats_as_go_does() {
        let at = |secs: u64, nanos: u32| UNIX_EPOCH + Duration::new(secs, nanos);
        assert_eq!(
            format(at(1_796_685_833, 0), None),
            "2026-12-07 23:23:53 +0000 UTC"
        );
        assert_eq!(
            format(at(1_796_685_833, 120_000_000), Some(Duration::new(12, 5))),
            "2026-12-07 23:23:53.12 +0000 UTC m=+12.000000005"
        );
        assert_eq!(
            format(at(951_782_400, 1), Some(Duration::ZERO)),
            "2000-02-29 00:00:00.000000001 +0000 UTC m=+0.000000000"
        );
    }
}
