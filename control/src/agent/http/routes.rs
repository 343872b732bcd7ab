//! The agent's own endpoints: `/healthz` and `/livez` with kube-proxy's bodies and rules
//! (`super::super::health`), `/readyz` (ready once the first tables run, saying what it
//! waits for until then) and, on the metrics address, `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam::channel::{Sender, bounded};

use super::super::Event;
use super::super::health::{ProxyHealth, Reading};
use super::super::metrics::{self, Snapshot};
use super::{Answer, Handler, Reply, go_time};

/// How long the control thread has to answer for `/metrics`.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// Says why a probe failed (kube-proxy's body has no room for it).
const WHY_HEADER: &str = "x-kxdp-unhealthy";

/// Whether the agent is ready (`/readyz` 200) and, until it is, what it waits for (the
/// 503's body): set by the control thread, read by the listeners without asking it.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    waiting_for: Mutex<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            ready: AtomicBool::new(false),
            waiting_for: Mutex::new("starting".to_string()),
        }
    }
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// What the agent waits for before it can be ready (one line).
    pub fn waiting_for(&self, what: &str) {
        match self.waiting_for.lock() {
            Ok(mut w) => what.clone_into(&mut w),
            Err(poisoned) => what.clone_into(&mut poisoned.into_inner()),
        }
    }

    fn reason(&self) -> String {
        match self.waiting_for.lock() {
            Ok(w) => w.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Probe answers by endpoint and code: kube-proxy's `proxy_healthz_total` and
/// `proxy_livez_total`.
#[derive(Debug, Default)]
pub struct ProbeCounts {
    pub healthz_ok: AtomicU64,
    pub healthz_unavailable: AtomicU64,
    pub livez_ok: AtomicU64,
    pub livez_unavailable: AtomicU64,
}

impl ProbeCounts {
    fn count(ok: &AtomicU64, unavailable: &AtomicU64, healthy: bool) {
        let counter = if healthy { ok } else { unavailable };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn totals(&self) -> metrics::ProbeTotals {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metrics::ProbeTotals {
            healthz_ok: read(&self.healthz_ok),
            healthz_unavailable: read(&self.healthz_unavailable),
            livez_ok: read(&self.livez_ok),
            livez_unavailable: read(&self.livez_unavailable),
        }
    }
}

/// What one listener of the agent serves.
#[derive(Debug, Clone)]
pub struct Routes {
    /// Whether `/metrics` is served here.
    pub metrics: bool,
    pub events: Sender<Event>,
    pub ready: Arc<Readiness>,
    pub health: Arc<ProxyHealth>,
    pub counts: Arc<ProbeCounts>,
}

impl Handler for Routes {
    fn answer(&self, method: &hyper::Method, path: &str) -> Answer {
        let known = matches!(path, "/healthz" | "/livez" | "/readyz")
            || (self.metrics && path == "/metrics");
        if !known {
            return Answer::Now(Reply::text(404, "not found\n"));
        }
        if method != hyper::Method::GET && method != hyper::Method::HEAD {
            let mut reply = Reply::text(405, "method not allowed\n");
            reply.headers.push(("allow", "GET, HEAD".to_string()));
            return Answer::Now(reply);
        }
        match path {
            "/readyz" => Answer::Now(if self.ready.is_ready() {
                Reply::text(200, "ok\n")
            } else {
                Reply::text(503, format!("not ready: {}\n", self.ready.reason()))
            }),
            "/healthz" => {
                let reading = self.health.read();
                let c = &self.counts;
                ProbeCounts::count(&c.healthz_ok, &c.healthz_unavailable, reading.serving());
                Answer::Now(healthz(&reading))
            }
            "/livez" => {
                let reading = self.health.read();
                let c = &self.counts;
                ProbeCounts::count(&c.livez_ok, &c.livez_unavailable, reading.healthy);
                Answer::Now(livez(&reading))
            }
            _ => {
                let (events, counts) = (self.events.clone(), self.counts.clone());
                Answer::Blocking(Box::new(move || metrics_reply(&events, &counts)))
            }
        }
    }
}

/// kube-proxy's `/healthz`: 200 while healthy and the node eligible, else 503, with
/// `{"lastUpdated": ...,"currentTime": ..., "nodeEligible": ...}` spaced as kube-proxy
/// spaces it; `lastUpdated` is the current time while healthy (kube-proxy's compatibility
/// rule), else the last programming (Go's zero time before the first).
pub fn healthz(reading: &Reading) -> Reply {
    let (status, last, current) = times(reading, reading.serving());
    with_why(
        Reply::json(
            status,
            format!(
                r#"{{"lastUpdated": "{last}","currentTime": "{current}", "nodeEligible": {}}}"#,
                reading.node_eligible
            ),
        ),
        reading,
    )
}

/// kube-proxy's `/livez`: as `/healthz` without the node's eligibility.
pub fn livez(reading: &Reading) -> Reply {
    let (status, last, current) = times(reading, reading.healthy);
    with_why(
        Reply::json(
            status,
            format!(r#"{{"lastUpdated": "{last}","currentTime": "{current}"}}"#),
        ),
        reading,
    )
}

fn times(reading: &Reading, healthy: bool) -> (u16, String, String) {
    let current = go_time::clock_reading(SystemTime::now(), Instant::now());
    if healthy {
        return (200, current.clone(), current);
    }
    let last = reading.last_updated.map_or_else(
        || go_time::ZERO.to_string(),
        |u| go_time::clock_reading(u.wall, u.at),
    );
    (503, last, current)
}

fn with_why(mut reply: Reply, reading: &Reading) -> Reply {
    if reply.status != 200
        && let Some(why) = &reading.why
    {
        reply.headers.push((WHY_HEADER, why.clone()));
    }
    reply
}

/// Asks the control thread; `None` when it does not answer in time.
fn ask<T>(events: &Sender<Event>, make: impl FnOnce(Sender<T>) -> Event) -> Option<T> {
    let (tx, rx) = bounded(1);
    events.send(make(tx)).ok()?;
    rx.recv_timeout(CONTROL_TIMEOUT).ok()
}

fn metrics_reply(events: &Sender<Event>, counts: &ProbeCounts) -> Reply {
    let Some(mut snapshot): Option<Snapshot> = ask(events, Event::Metrics) else {
        return Reply::text(503, "the control thread did not answer within 2 s\n");
    };
    // The listeners count the probes themselves; the control thread never sees them.
    snapshot.probes = counts.totals();
    match metrics::render(&snapshot) {
        Ok(body) => Reply {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            headers: Vec::new(),
            body,
        },
        Err(e) => Reply::text(500, format!("encoding the metrics: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::channel::unbounded;

    fn routes(metrics: bool, ready: bool) -> (Routes, crossbeam::channel::Receiver<Event>) {
        let (events, rx) = unbounded();
        let routes = Routes {
            metrics,
            events,
            ready: Arc::new({
                let r = Readiness::default();
                r.set_ready(ready);
                r
            }),
            health: Arc::new(ProxyHealth::new(Duration::from_secs(60))),
            counts: Arc::default(),
        };
        (routes, rx)
    }

    fn now(routes: &Routes, method: hyper::Method, path: &str) -> Reply {
        match routes.answer(&method, path) {
            Answer::Now(reply) => reply,
            Answer::Blocking(work) => work(),
        }
    }

    fn get(routes: &Routes, path: &str) -> Reply {
        now(routes, hyper::Method::GET, path)
    }

    #[test]
    fn routes_by_method_and_path() {
        let (r, _rx) = routes(true, false);
        assert_eq!(get(&r, "/readyz").status, 503);
        r.ready
            .waiting_for("the uplink: no interface holds 192.0.2.1");
        let waiting = get(&r, "/readyz");
        assert_eq!(
            (waiting.status, waiting.body.as_str()),
            (503, "not ready: the uplink: no interface holds 192.0.2.1\n")
        );
        r.ready.set_ready(true);
        assert_eq!(get(&r, "/readyz").status, 200);
        assert_eq!(get(&r, "/nope").status, 404);
        let delete = now(&r, hyper::Method::DELETE, "/metrics");
        assert_eq!(delete.status, 405);
        assert_eq!(delete.headers, [("allow", "GET, HEAD".to_string())]);
        assert_eq!(now(&r, hyper::Method::HEAD, "/livez").status, 200);
        let (h, _rx) = routes(false, true);
        assert_eq!(get(&h, "/metrics").status, 404);
    }

    #[test]
    fn healthz_and_livez_have_kube_proxys_bodies() {
        let (r, _rx) = routes(false, true);
        let healthz = get(&r, "/healthz");
        assert_eq!(healthz.status, 200);
        assert_eq!(healthz.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&healthz.body).unwrap();
        assert_eq!(body["lastUpdated"], body["currentTime"], "{}", healthz.body);
        assert_eq!(body["nodeEligible"], true);
        assert!(
            healthz.body.starts_with(r#"{"lastUpdated": ""#)
                && healthz.body.contains(r#"","currentTime": ""#)
                && healthz.body.ends_with(r#"", "nodeEligible": true}"#),
            "{}",
            healthz.body
        );
        // A node on its way out: /healthz 503 (never programmed: Go's zero time), /livez 200.
        r.health.set_node_eligible(false);
        let healthz = get(&r, "/healthz");
        assert_eq!(healthz.status, 503);
        assert!(
            healthz
                .body
                .starts_with(r#"{"lastUpdated": "0001-01-01 00:00:00 +0000 UTC","#),
            "{}",
            healthz.body
        );
        assert!(healthz.headers.iter().any(|(h, _)| *h == WHY_HEADER));
        let livez = get(&r, "/livez");
        assert_eq!(livez.status, 200);
        assert!(!livez.body.contains("nodeEligible"), "{}", livez.body);
        assert_eq!(r.counts.healthz_ok.load(Ordering::Relaxed), 1);
        assert_eq!(r.counts.healthz_unavailable.load(Ordering::Relaxed), 1);
        assert_eq!(r.counts.livez_ok.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_absent_control_thread_fails_metrics_not_probes() {
        let (r, rx) = routes(true, true);
        drop(rx);
        assert_eq!(get(&r, "/metrics").status, 503);
        assert_eq!(get(&r, "/healthz").status, 200);
    }
}
