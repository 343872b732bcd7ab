//! When to stop and how fast to go: [`RunLimit`] and the pacer every generator shares.

use std::time::{Duration, Instant};

/// How much to send and how fast. A run ends at `count` packets or after `duration`,
/// whichever comes first; at least one of them must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunLimit {
    /// Send exactly this many packets (the kernel generator) / descriptors handed to the
    /// kernel (AF_XDP).
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Packets per second at most; `None`: as fast as possible.
    pub rate_pps: Option<u64>,
}

impl RunLimit {
    /// A run needs a packet count or a duration: a pps cap alone never ends.
    pub fn check_bounded(&self) -> Result<(), super::PktgenError> {
        if self.count.is_none() && self.duration.is_none() {
            return Err(super::PktgenError::Spec(
                "a run needs a packet count or a duration".into(),
            ));
        }
        Ok(())
    }
}

/// Hands out how many packets may go now so that `sent` stays at or below `rate * t`, in
/// chunks of at most `max_chunk`.
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Instant,
    limit: RunLimit,
    max_chunk: u64,
}

/// What the pacer says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send this many now.
    Send(u64),
    /// Nothing yet: come back at this instant.
    WaitUntil(Instant),
    /// The count is reached or the time is up.
    Done,
}

impl Pacer {
    pub(crate) fn new(limit: RunLimit, max_chunk: u64) -> Pacer {
        Pacer {
            start: Instant::now(),
            limit,
            max_chunk: max_chunk.max(1),
        }
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    pub(crate) fn next(&self, sent: u64, now: Instant) -> Next {
        let elapsed = now.saturating_duration_since(self.start);
        if self.limit.duration.is_some_and(|d| elapsed >= d) {
            return Next::Done;
        }
        let left = match self.limit.count {
            Some(c) if sent >= c => return Next::Done,
            Some(c) => c - sent,
            None => u64::MAX,
        };
        let mut chunk = left.min(self.max_chunk);
        if let Some(rate) = self.limit.rate_pps.filter(|&r| r > 0) {
            // Allowed so far: rate * elapsed, plus a 1 ms burst so slow rates start at once.
            let allowed = (u128::from(rate) * (elapsed.as_nanos() + 1_000_000) / 1_000_000_000)
                .min(u128::from(u64::MAX)) as u64;
            if allowed <= sent {
                let due = Duration::from_nanos(
                    (u128::from(sent + 1) * 1_000_000_000 / u128::from(rate))
                        .saturating_sub(1_000_000)
                        .min(u128::from(u64::MAX)) as u64,
                );
                return Next::WaitUntil(self.start + due);
            }
            chunk = chunk.min(allowed - sent);
        }
        Next::Send(chunk)
    }

    /// Sleeps until `at`, but not past the end of the run.
    pub(crate) fn wait_until(&self, at: Instant) {
        let end = self.limit.duration.map_or(at, |d| at.min(self.start + d));
        let now = Instant::now();
        if end > now {
            std::thread::sleep(end - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_a_count_or_a_duration() {
        assert!(RunLimit::default().check_bounded().is_err());
        let capped = RunLimit {
            rate_pps: Some(10),
            ..RunLimit::default()
        };
        assert!(capped.check_bounded().is_err());
        let counted = RunLimit {
            count: Some(1),
            ..RunLimit::default()
        };
        assert!(counted.check_bounded().is_ok());
    }

    #[test]
    fn counts_and_durations_end_runs() {
        let p = Pacer::new(
            RunLimit {
                count: Some(10),
                ..RunLimit::default()
            },
            4,
        );
        let now = p.start();
        assert_eq!(p.next(0, now), Next::Send(4));
        assert_eq!(p.next(8, now), Next::Send(2));
        assert_eq!(p.next(10, now), Next::Done);
        let p = Pacer::new(
            RunLimit {
                duration: Some(Duration::from_millis(5)),
                ..RunLimit::default()
            },
            4,
        );
        assert_eq!(p.next(0, p.start()), Next::Send(4));
        assert_eq!(p.next(0, p.start() + Duration::from_millis(5)), Next::Done);
    }

    #[test]
    fn the_rate_caps_what_may_go() {
        let p = Pacer::new(
            RunLimit {
                rate_pps: Some(1000),
                duration: Some(Duration::from_secs(10)),
                ..RunLimit::default()
            },
            1 << 20,
        );
        let t0 = p.start();
        // 1 ms burst at the start, then one packet per ms.
        assert_eq!(p.next(0, t0), Next::Send(1));
        assert!(matches!(p.next(1, t0), Next::WaitUntil(_)));
        assert_eq!(p.next(0, t0 + Duration::from_secs(1)), Next::Send(1001));
        let Next::WaitUntil(at) = p.next(1001, t0 + Duration::from_secs(1)) else {
            panic!("must wait");
        };
        assert_eq!(at, t0 + Duration::from_millis(1001));
    }
}
