//! A scenario case in memory: what each port receives, and what must come of each packet.
//!
//! A case is a list of steps in processing order; each step is one input frame and its
//! expected fate (forwarded as an exact frame on a port, passed to the kernel, or dropped
//! with a reason). The generator turns that into input pcaps, expected pcaps and the
//! expected verdicts.jsonl; the runner never sees this type, only the files.

use crate::state::StateDef;

/// Where a case's state directory comes from.
#[derive(Debug, Clone)]
pub enum StateSource {
    /// `pcap-fixtures/examples/two-node`, the README's example.
    TwoNodeExample,
    /// The case's own `state/` directory.
    Own(StateDef),
}

/// What must happen to one input frame.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Sent on `port` as exactly `frame`.
    Forward { port: String, frame: Vec<u8> },
    /// Handed to the kernel untouched.
    Pass,
    /// Dropped with this stable reason.
    Drop(&'static str),
}

/// One input frame and its expected fate.
#[derive(Debug, Clone)]
pub struct Step {
    pub port: String,
    pub ts_ns: u64,
    pub frame: Vec<u8>,
    pub expect: Expect,
    /// `namespace/name:port` the verdict must name.
    pub service: Option<String>,
    /// `ip:port` the verdict must name.
    pub backend: Option<String>,
    /// `namespace/name` of the policies the verdict must name, in the order reported.
    pub policy: Vec<String>,
    /// `ingress` / `egress`: the side a policy drop must be reported on.
    pub direction: Option<&'static str>,
}

/// A state change during the run (`kxdp replay --update`): `state` becomes the cluster
/// before the first packet at or after `at_ns`, with flow state kept.
#[derive(Debug, Clone)]
pub struct Update {
    pub at_ns: u64,
    /// How many steps come before it; the generator checks that the times agree, so an
    /// expectation is never written for the wrong generation.
    pub after_steps: usize,
    pub state: StateSource,
}

/// A whole case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub description: &'static str,
    pub node: &'static str,
    pub state: StateSource,
    /// Input ports in `--in` order (every port of a step must be listed).
    pub inputs: Vec<String>,
    /// In processing order (timestamps never decrease).
    pub steps: Vec<Step>,
    /// State changes, in time order.
    pub updates: Vec<Update>,
}

/// First packet time of every case: 2024-01-01T00:00:00Z. Steps are 1 ms apart unless a
/// case sets its own times, so every timestamp is whole microseconds (classic pcap).
pub const BASE_NS: u64 = 1_704_067_200_000_000_000;
pub const STEP_NS: u64 = 1_000_000;

impl Case {
    /// A case replayed as node-a.
    pub fn new(name: &'static str, description: &'static str, state: StateSource) -> Case {
        Case {
            name,
            description,
            node: "node-a",
            state,
            inputs: Vec::new(),
            steps: Vec::new(),
            updates: Vec::new(),
        }
    }

    /// Swaps in `state` before the next step, at the time [`Case::send`] would give that
    /// step (so a following `send` is the first packet the new generation sees).
    pub fn update(&mut self, state: StateSource) {
        let at_ns = self.steps.last().map_or(BASE_NS, |s| s.ts_ns + STEP_NS);
        self.updates.push(Update {
            at_ns,
            after_steps: self.steps.len(),
            state,
        });
    }

    /// Adds a step 1 ms after the previous one.
    pub fn send(&mut self, port: &str, frame: Vec<u8>, expect: Expect) -> &mut Step {
        let ts = self.steps.last().map_or(BASE_NS, |s| s.ts_ns + STEP_NS);
        self.send_at(port, ts, frame, expect)
    }

    /// Adds a step at an explicit time.
    pub fn send_at(&mut self, port: &str, ts_ns: u64, frame: Vec<u8>, expect: Expect) -> &mut Step {
        if !self.inputs.iter().any(|p| p == port) {
            self.inputs.push(port.to_string());
        }
        self.steps.push(Step {
            port: port.to_string(),
            ts_ns,
            frame,
            expect,
            service: None,
            backend: None,
            policy: Vec::new(),
            direction: None,
        });
        let last = self.steps.len() - 1;
        &mut self.steps[last]
    }
}

impl Step {
    /// The verdict names this service and backend.
    pub fn via(&mut self, service: &str, backend: Option<&str>) -> &mut Step {
        self.service = Some(service.to_string());
        self.backend = backend.map(str::to_string);
        self
    }

    /// The verdict names these policies, decided on `direction` (a NetworkPolicy drop).
    pub fn denied_by(&mut self, policies: &[&str], direction: &'static str) -> &mut Step {
        self.policy = policies.iter().map(|p| p.to_string()).collect();
        self.direction = Some(direction);
        self
    }
}

/// Forwarded on `port` as `frame`.
pub fn forward(port: &str, frame: Vec<u8>) -> Expect {
    Expect::Forward {
        port: port.to_string(),
        frame,
    }
}

/// Dropped for `reason`.
pub fn drop(reason: &'static str) -> Expect {
    Expect::Drop(reason)
}
