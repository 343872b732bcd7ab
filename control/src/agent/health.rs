//! Whether the agent is healthy, by kube-proxy's rules (its `ProxyHealthServer`), plus what
//! only kxdp can get wrong (a worker that stopped, a control thread that stopped turning).
//!
//! kube-proxy's rule: an update noticed (a Service or EndpointSlice change) must be
//! programmed within the health timeout; the proxy is unhealthy while the oldest update not
//! yet programmed is older than that. Before the first programming it is healthy (starting),
//! so a slow initial sync is not a liveness failure. `/healthz` is also unhealthy while the
//! own Node is being deleted or tainted `ToBeDeletedByClusterAutoscaler` (`nodeEligible`),
//! so load balancers drain the node; `/livez` and the per-Service health checks ignore that.
//!
//! Shared between the control thread (which reports) and the HTTP server (which reads):
//! answering a probe never waits for the control thread.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// A moment on both clocks: the monotonic one decides, the wall clock is what is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

#[derive(Debug)]
struct State {
    /// When tables were last programmed; None until the first time.
    last_updated: Option<Stamp>,
    /// The oldest change noticed but not programmed yet.
    oldest_queued: Option<Instant>,
    node_eligible: bool,
    /// Why the datapath itself is unhealthy (a worker stopped), when it is.
    problem: Option<String>,
    /// The control thread's last turn, once it serves events (not while it starts).
    beat: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<State>,
}

/// One reading of the health.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// kube-proxy's `IsHealthy` and kxdp's own conditions (`/livez`, the Services' checks).
    pub healthy: bool,
    pub node_eligible: bool,
    /// When tables were last programmed (None: never), kube-proxy's `lastUpdated`.
    pub last_updated: Option<Stamp>,
    /// Why it is unhealthy, in words (None when healthy).
    pub why: Option<String>,
}

impl Reading {
    /// `/healthz`'s verdict: healthy and the node eligible.
    pub fn serving(&self) -> bool {
        self.healthy && self.node_eligible
    }
}

impl ProxyHealth {
    pub fn new(timeout: Duration) -> ProxyHealth {
        ProxyHealth {
            timeout,
            state: Mutex::new(State {
                last_updated: None,
                oldest_queued: None,
                // Eligible until the first Node seen says otherwise, as kube-proxy starts.
                node_eligible: true,
                problem: None,
                beat: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every write leaves the state whole: a panic elsewhere does not make it unusable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change was noticed that the tables do not have yet.
    pub fn queued(&self) {
        self.state().oldest_queued.get_or_insert_with(Instant::now);
    }

    /// Tables built from the state as it was at `snapshot` are programmed: changes noticed
    /// before then are done; one noticed since stays queued.
    pub fn updated(&self, snapshot: Instant) {
        let mut s = self.state();
        if s.oldest_queued.is_some_and(|q| q <= snapshot) {
            s.oldest_queued = None;
        }
        s.last_updated = Some(Stamp::now());
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.state().node_eligible = eligible;
    }

    /// The datapath's own trouble (None: none); whether that changed what was said.
    pub fn set_problem(&self, problem: Option<String>) -> bool {
        let mut s = self.state();
        let changed = s.problem != problem;
        s.problem = problem;
        changed
    }

    /// The control thread turned (from its first turn on, a stop in turning is unhealthy).
    pub fn beat(&self) {
        self.state().beat = Some(Instant::now());
    }

    pub fn read(&self) -> Reading {
        self.read_at(Instant::now())
    }

    fn read_at(&self, now: Instant) -> Reading {
        let s = self.state();
        let trouble = self.trouble(&s, now);
        let why = trouble.clone().or_else(|| {
            (!s.node_eligible).then(|| {
                "the node is being deleted or tainted ToBeDeletedByClusterAutoscaler".into()
            })
        });
        Reading {
            healthy: trouble.is_none(),
            node_eligible: s.node_eligible,
            last_updated: s.last_updated,
            why,
        }
    }

    /// Why the proxy itself is unhealthy, if it is.
    fn trouble(&self, s: &State, now: Instant) -> Option<String> {
        let age = |since: Instant| now.saturating_duration_since(since);
        if let (Some(queued), Some(_)) = (s.oldest_queued, s.last_updated)
            && age(queued) >= self.timeout
        {
            return Some(format!(
                "a change noticed {} s ago is not programmed yet (timeout {} s)",
                age(queued).as_secs(),
                self.timeout.as_secs()
            ));
        }
        if let Some(beat) = s.beat
            && age(beat) >= self.timeout
        {
            return Some(format!(
                "the control thread has not turned for {} s",
                age(beat).as_secs()
            ));
        }
        s.problem.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn healthy_while_starting_even_with_changes_queued() {
        let h = ProxyHealth::new(T);
        h.queued();
        let later = Instant::now() + 2 * T;
        let r = h.read_at(later);
        assert!(r.healthy && r.serving(), "{r:?}");
        assert_eq!(r.last_updated, None);
    }

    #[test]
    fn a_change_not_programmed_within_the_timeout_is_unhealthy() {
        let h = ProxyHealth::new(T);
        h.updated(Instant::now());
        h.queued();
        let soon = Instant::now() + T / 2;
        assert!(h.read_at(soon).healthy);
        let late = Instant::now() + T + Duration::from_secs(1);
        let r = h.read_at(late);
        assert!(!r.healthy && !r.serving());
        assert!(r.why.unwrap().contains("not programmed yet"));
        assert!(r.last_updated.is_some());
        // Programmed from a snapshot taken after the change: healthy again.
        h.updated(Instant::now());
        assert!(h.read_at(late).healthy);
    }

    #[test]
    fn a_change_after_the_snapshot_stays_queued() {
        let h = ProxyHealth::new(T);
        // Taken before the change was noticed.
        let snapshot = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        h.updated(snapshot);
        h.queued();
        h.updated(snapshot);
        assert!(!h.read_at(Instant::now() + 2 * T).healthy);
    }

    #[test]
    fn node_eligibility_fails_healthz_only() {
        let h = ProxyHealth::new(T);
        h.updated(Instant::now());
        h.set_node_eligible(false);
        let r = h.read();
        assert!(r.healthy && !r.serving());
        assert!(r.why.unwrap().contains("ToBeDeleted"));
    }

    #[test]
    fn a_stopped_control_thread_or_worker_is_unhealthy() {
        let h = ProxyHealth::new(T);
        h.updated(Instant::now());
        h.beat();
        assert!(h.read().healthy);
        assert!(!h.read_at(Instant::now() + 2 * T).healthy);
        h.beat();
        h.set_problem(Some("workers 1 published nothing for 3 s".into()));
        let r = h.read();
        assert_eq!(
            r.why.as_deref(),
            Some("workers 1 published nothing for 3 s")
        );
        assert!(!r.healthy);
        h.set_problem(None);
        assert!(h.read().healthy);
    }
}
