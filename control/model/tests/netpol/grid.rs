//! Truth tables and the grid probe: every pod of a model probes every pod on one
//! (protocol, port), and the observed connectivity is compared with a [`Table`] of
//! expectations, the way upstream's e2e `Reachability` does it.
//!
//! Beyond connected / not connected, every probe is checked for what it claims:
//! - a denied probe is dropped with `policy_denied`, the observer was told the direction,
//!   egress is judged on the client's node and ingress on the server's; with an
//!   [`GridCheck::explain`], the policies named are exactly the ones it gives;
//! - a connected TCP probe's SYN-ACK gets back to the client, as the answer of the address
//!   the client talked to;
//! - a pod probing its own address (which never leaves the pod in a cluster) is refused as
//!   `hairpin`, never judged by policy; through a Service it is shown but not compared.

// Grid cells are (client, server) index pairs into several tables at once.
#![allow(clippy::needless_range_loop)]

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use datapath::DropReason;
use datapath::policy::PolicyDirection;

use crate::probe::{Cluster, Dest, Model, ModelPod, Outcome, Proto, probe};

/// What a cell expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Connected,
    /// Denied by policy, in whichever direction.
    Denied,
    /// Denied by policy in this direction.
    DeniedOn(PolicyDirection),
}

impl Expect {
    fn connected(self) -> bool {
        self == Expect::Connected
    }
}

/// A set of pods by namespace and name (upstream's `Peer`); `None` matches any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    pub ns: Option<&'static str>,
    pub pod: Option<&'static str>,
}

/// `&Peer{}`: every pod.
pub const ANY: Peer = Peer {
    ns: None,
    pod: None,
};

/// Every pod of namespace `n`.
pub fn ns(n: &'static str) -> Peer {
    Peer {
        ns: Some(n),
        pod: None,
    }
}

/// Pod `n`/`p`.
pub fn pod(n: &'static str, p: &'static str) -> Peer {
    Peer {
        ns: Some(n),
        pod: Some(p),
    }
}

impl Peer {
    fn matches(&self, (ns, name): &(String, String)) -> bool {
        self.ns.is_none_or(|n| n == ns) && self.pod.is_none_or(|p| p == name)
    }
}

/// Expectations over a model's pods: rows are clients, columns servers, in the model's
/// order; a cell `None` is not compared.
#[derive(Debug, Clone)]
pub struct Table {
    pods: Vec<(String, String)>,
    cells: Vec<Vec<Option<Expect>>>,
}

impl Table {
    /// Every cell `fill`.
    pub fn filled(model: &Model, fill: Option<Expect>) -> Table {
        Table::from_fn(model, |_, _| fill)
    }

    /// Cell (client, server) is `f(client, server)`.
    pub fn from_fn(model: &Model, f: impl Fn(&ModelPod, &ModelPod) -> Option<Expect>) -> Table {
        Table {
            pods: model
                .pods
                .iter()
                .map(|p| (p.ns.clone(), p.name.clone()))
                .collect(),
            cells: model
                .pods
                .iter()
                .map(|from| model.pods.iter().map(|to| f(from, to)).collect())
                .collect(),
        }
    }

    /// `NewReachability(..., true)`: everything connects.
    pub fn all(model: &Model) -> Table {
        Table::filled(model, Some(Expect::Connected))
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn get(&self, from: usize, to: usize) -> Option<Expect> {
        self.cells[from][to]
    }

    pub fn set(&mut self, from: usize, to: usize, cell: Option<Expect>) {
        self.cells[from][to] = cell;
    }

    /// `ExpectPeer(from, to, connected)`
    pub fn peer(mut self, from: Peer, to: Peer, connected: bool) -> Table {
        let cell = if connected {
            Expect::Connected
        } else {
            Expect::Denied
        };
        for f in 0..self.len() {
            for t in 0..self.len() {
                if from.matches(&self.pods[f]) && to.matches(&self.pods[t]) {
                    self.cells[f][t] = Some(cell);
                }
            }
        }
        self
    }

    /// `Expect(from, to, connected)`
    pub fn expect(
        self,
        from: (&'static str, &'static str),
        to: (&'static str, &'static str),
        c: bool,
    ) -> Table {
        self.peer(pod(from.0, from.1), pod(to.0, to.1), c)
    }

    /// `ExpectAllIngress(pod, connected)`
    pub fn all_ingress(self, to: (&'static str, &'static str), c: bool) -> Table {
        self.peer(ANY, pod(to.0, to.1), c)
    }

    /// `ExpectAllEgress(pod, connected)`
    pub fn all_egress(self, from: (&'static str, &'static str), c: bool) -> Table {
        self.peer(pod(from.0, from.1), ANY, c)
    }

    /// Upstream's `TruthTable.PrettyPrint` style: "." connects, "X" does not, "-" is not
    /// compared; rows are clients, columns servers; `marks` overrides cells (to point at
    /// problems).
    pub fn render(&self, marks: &[Vec<Option<char>>]) -> String {
        let mut s = String::from("-\t");
        for (ns, name) in &self.pods {
            let _ = write!(s, "{ns}/{name}\t");
        }
        s.push('\n');
        for (f, (ns, name)) in self.pods.iter().enumerate() {
            let _ = write!(s, "{ns}/{name}\t");
            for t in 0..self.len() {
                let c = marks
                    .get(f)
                    .and_then(|m| m[t])
                    .unwrap_or(match self.cells[f][t] {
                        Some(Expect::Connected) => '.',
                        Some(_) => 'X',
                        None => '-',
                    });
                let _ = write!(s, "{c}\t");
            }
            s.push('\n');
        }
        s
    }
}

/// How a probe addresses the server.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// The server pod's own address.
    PodAddress,
    /// The ClusterIP of the server's Service (by pod index), same port.
    Service(&'a dyn Fn(usize) -> [u8; 4]),
}

/// One grid: every pod of `cluster` to every pod, on (`proto`, `port`).
pub struct GridCheck<'a> {
    pub proto: Proto,
    pub port: u16,
    pub via: Via<'a>,
    pub expect: &'a Table,
    /// The policies a denial of pod `judged` in direction `dir` must name, all and only
    /// them (sorted); `None`: the names are not checked.
    pub explain: Option<&'a dyn Fn(usize, PolicyDirection) -> Vec<String>>,
}

/// Probes the grid: the number of cells compared, or a report of every problem with the
/// expected and observed tables.
pub fn check_grid(c: &Cluster, g: &GridCheck) -> Result<usize, String> {
    let n = c.model.pods.len();
    let mut observed = Table::filled(&c.model, None);
    let mut marks = vec![vec![None; n]; n];
    let mut problems = Vec::new();
    let mut compared = 0;
    for f in 0..n {
        for t in 0..n {
            let to = &c.model.pods[t];
            let dst = match g.via {
                Via::PodAddress => to.ip,
                Via::Service(vip) => vip(t),
            };
            let want = (Ipv4Addr::from(to.ip), g.port);
            let (outcome, reply) = probe(c, f, dst, g.proto, g.port, Dest::Pod(t), want);
            let pair = format!("{} -> {}", c.model.pods[f].key(), to.key());
            observed.set(
                f,
                t,
                outcome
                    .allowed()
                    .map(|a| if a { Expect::Connected } else { Expect::Denied }),
            );
            if f == t {
                // ignoreLoopback; addressed to itself, it must be refused as a loop.
                if matches!(g.via, Via::PodAddress)
                    && !matches!(
                        outcome,
                        Outcome::Dropped {
                            reason: DropReason::Hairpin,
                            ..
                        }
                    )
                {
                    marks[f][t] = Some('h');
                    problems.push(format!(
                        "{pair}: not refused as hairpin: {}",
                        outcome.describe()
                    ));
                }
                continue;
            }
            let Some(want) = g.expect.get(f, t) else {
                continue;
            };
            compared += 1;
            let connected = matches!(outcome, Outcome::Delivered { .. });
            if want.connected() != connected {
                marks[f][t] = Some('!');
                problems.push(format!(
                    "{pair}: expected {}, got {}",
                    if want.connected() {
                        "connected"
                    } else {
                        "denied"
                    },
                    outcome.describe()
                ));
                continue;
            }
            if connected {
                if let Some(Err(e)) = reply {
                    marks[f][t] = Some('r');
                    problems.push(format!("{pair}: connected, but the reply: {e}"));
                }
            } else if let Err(e) = check_denial(c, f, t, &outcome, want, g.explain) {
                marks[f][t] = Some('?');
                problems.push(format!("{pair}: denied, but {e}"));
            }
        }
    }
    if problems.is_empty() {
        return Ok(compared);
    }
    let mut s = String::new();
    let _ = writeln!(s, "expected:\n{}", g.expect.render(&[]));
    let _ = writeln!(s, "observed:\n{}", observed.render(&[]));
    let _ = writeln!(
        s,
        "observed, '!' where it differs from expected, '?' a denial with the wrong \
         explanation, 'r' a reply that did not get back, 'h' a loop not refused:\n{}",
        observed.render(&marks)
    );
    for p in problems {
        let _ = writeln!(s, "  {p}");
    }
    Err(s)
}

/// A probe from pod `from` to pod `to` that did not connect must be a policy denial, told
/// with its direction, judged where that direction is (egress on the client's node,
/// ingress on the server's), in the direction `want` pins, naming what `explain` says.
pub fn check_denial(
    c: &Cluster,
    from: usize,
    to: usize,
    outcome: &Outcome,
    want: Expect,
    explain: Option<&dyn Fn(usize, PolicyDirection) -> Vec<String>>,
) -> Result<(), String> {
    let Outcome::Dropped {
        hop,
        reason,
        policies,
        direction,
    } = outcome
    else {
        return Err(format!("it was not dropped: {}", outcome.describe()));
    };
    if *reason != DropReason::PolicyDenied {
        return Err(format!(
            "the reason is {}, not policy_denied",
            reason.as_str()
        ));
    }
    let Some(dir) = *direction else {
        return Err(format!(
            "the observer was told no direction (policies {policies:?})"
        ));
    };
    if let Expect::DeniedOn(d) = want
        && d != dir
    {
        return Err(format!("judged on {}, not {}", dir.as_str(), d.as_str()));
    }
    let same_node = c.model.pods[from].node == c.model.pods[to].node;
    let judged = match dir {
        PolicyDirection::Egress => {
            if *hop != 1 {
                return Err("an egress denial on the server's node".into());
            }
            from
        }
        PolicyDirection::Ingress => {
            if *hop == 1 && !same_node {
                return Err("an ingress denial on the client's node".into());
            }
            to
        }
    };
    let Some(explain) = explain else {
        return Ok(());
    };
    let mut want = explain(judged, dir);
    want.sort();
    let mut got = policies.clone();
    got.sort();
    let who = c.model.pods[judged].key();
    if want.is_empty() {
        return Err(format!(
            "{} of {who} is not isolated by any policy, yet it was named ({got:?})",
            dir.as_str()
        ));
    }
    if want != got {
        return Err(format!(
            "{} of {who}: the observer named {got:?}, the policies selecting it are {want:?}",
            dir.as_str()
        ));
    }
    Ok(())
}
