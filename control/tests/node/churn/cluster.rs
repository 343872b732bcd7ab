//! The cluster objects of the churn test and the churn itself: one change per call, in a
//! fixed schedule, each one an API object applied or deleted through the double.
//!
//! Service S (TCP and UDP) has backends a and b (always ready) and c (a serving pod whose
//! readiness the churn flips). The churn's changes to S only ever do what must not hurt a
//! flow: c going not ready (new flows avoid it, flows to it continue, as it stays listed),
//! c ready again, and a not-ready endpoint for an address with no pod appearing and
//! disappearing (never chosen while ready endpoints exist; no flow ever went to it). The
//! other changes are to other Services no traffic uses: created and deleted with their
//! EndpointSlices, endpoints added, removed, flipped.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::node::{NAMESPACE, NODE, NODE_IP, POD_CIDR, UPLINK_MAC};
use lab::apiserver_double::ApiServerDouble;

pub const SERVICE: &str = "s";
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
/// What the backends listen on (`kxdp-lab probe serve`).
pub const TARGET_TCP: u16 = 8080;
pub const TARGET_UDP: u16 = 8081;
/// S's endpoint for an address no pod has: listed not ready, so never chosen.
const GHOST: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 200);
/// The other Services' extra endpoint, also podless (no traffic goes to them).
const OTHER_GHOST: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 201);
/// Other Services alive at once, at most (each with a TCP and a UDP port).
pub const OTHER_SLOTS: usize = 8;
/// One change in this many is to S's EndpointSlice.
const S_EVERY: u64 = 5;

pub fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "annotations": {"kxdp.io/underlay-mac": UPLINK_MAC}},
        "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]},
    })
}

pub fn namespace() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}},
    })
}

pub fn pod(name: &str, ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"nodeName": NODE, "containers": [{"name": "probe", "image": "kxdp-probe"}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

/// A ClusterIP Service with a TCP and a UDP port.
fn service(name: &str, ip: Ipv4Addr, target_tcp: u16, target_udp: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ports": [
                {"name": "tcp", "protocol": "TCP", "port": TCP_PORT, "targetPort": target_tcp},
                {"name": "udp", "protocol": "UDP", "port": UDP_PORT, "targetPort": target_udp},
            ],
        },
    })
}

/// The Service's one EndpointSlice, `<service>-1`, listing `endpoints` (address, ready).
fn slice(service: &str, target_tcp: u16, target_udp: u16, endpoints: &[(Ipv4Addr, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| {
            json!({
                "addresses": [ip.to_string()],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": NODE,
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"), "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "tcp", "protocol": "TCP", "port": target_tcp},
            {"name": "udp", "protocol": "UDP", "port": target_udp},
        ],
        "endpoints": endpoints,
    })
}

/// Service S as the test holds it.
#[derive(Debug, Clone)]
pub struct ServiceS {
    /// Backends in slice order: (pod name, address, ready).
    pub backends: Vec<(String, Ipv4Addr, bool)>,
    /// Whether the podless not-ready endpoint is listed.
    pub ghost: bool,
}

impl ServiceS {
    pub fn service() -> Value {
        service(SERVICE, SERVICE_IP, TARGET_TCP, TARGET_UDP)
    }

    pub fn slice(&self) -> Value {
        let mut endpoints: Vec<(Ipv4Addr, bool)> = self
            .backends
            .iter()
            .map(|(_, ip, ready)| (*ip, *ready))
            .collect();
        if self.ghost {
            endpoints.push((GHOST, false));
        }
        slice(SERVICE, TARGET_TCP, TARGET_UDP, &endpoints)
    }

    fn set_ready(&mut self, pod: &str, ready: bool) {
        for b in &mut self.backends {
            if b.0 == pod {
                b.2 = ready;
            }
        }
    }

    /// Drops `pod` from the slice (the intended-drop phase).
    pub fn remove(&mut self, pod: &str) {
        self.backends.retain(|b| b.0 != pod);
    }
}

/// Where one other Service is in its life: each step does the next of these.
const OTHER_SCRIPT: [&str; 8] = [
    "other: service created",
    "other: endpointslice created",
    "other: endpoint went not ready",
    "other: endpoint added",
    "other: endpoint went ready",
    "other: endpoint removed",
    "other: endpointslice deleted",
    "other: service deleted",
];

const S_SCRIPT: [&str; 4] = [
    "s: backend c went not ready",
    "s: podless not-ready endpoint added",
    "s: backend c went ready",
    "s: podless not-ready endpoint removed",
];

/// The churn: [`Churn::step`] makes one change.
#[derive(Debug)]
pub struct Churn {
    pub s: ServiceS,
    /// The two real pods the other Services list (a and b: any address does, no traffic
    /// goes to those Services).
    other_backends: [Ipv4Addr; 2],
    /// Per slot: the next script step.
    slots: [usize; OTHER_SLOTS],
    s_step: usize,
    step: u64,
    /// Changes made, by kind.
    pub counts: BTreeMap<&'static str, u64>,
}

impl Churn {
    pub fn new(s: ServiceS, other_backends: [Ipv4Addr; 2]) -> Churn {
        Churn {
            s,
            other_backends,
            slots: [0; OTHER_SLOTS],
            s_step: 0,
            step: 0,
            counts: BTreeMap::new(),
        }
    }

    /// Makes the next change through `api`.
    pub fn step(&mut self, api: &ApiServerDouble) {
        let kind = if self.step % S_EVERY == S_EVERY - 1 {
            self.step_s(api)
        } else {
            let slot = (self.step - self.step / S_EVERY) as usize % OTHER_SLOTS;
            self.step_other(api, slot)
        };
        *self.counts.entry(kind).or_default() += 1;
        self.step += 1;
    }

    fn step_s(&mut self, api: &ApiServerDouble) -> &'static str {
        let kind = S_SCRIPT[self.s_step % S_SCRIPT.len()];
        match self.s_step % S_SCRIPT.len() {
            0 => self.s.set_ready("c", false),
            1 => self.s.ghost = true,
            2 => self.s.set_ready("c", true),
            _ => self.s.ghost = false,
        }
        api.apply(&self.s.slice()).unwrap();
        self.s_step += 1;
        kind
    }

    fn step_other(&mut self, api: &ApiServerDouble, slot: usize) -> &'static str {
        let name = format!("o{slot}");
        let ip = Ipv4Addr::new(10, 96, 1, slot as u8 + 1);
        let (tcp, udp) = (9000 + slot as u16, 9100 + slot as u16);
        let [a, b] = self.other_backends;
        let step = self.slots[slot];
        let endpoints: &[(Ipv4Addr, bool)] = match step {
            2 => &[(a, false), (b, true)],
            3 => &[(a, false), (b, true), (OTHER_GHOST, true)],
            4 => &[(a, true), (b, true), (OTHER_GHOST, true)],
            _ => &[(a, true), (b, true)],
        };
        match step {
            0 => {
                api.apply(&service(&name, ip, tcp, udp)).unwrap();
            }
            6 => {
                api.delete("EndpointSlice", NAMESPACE, &format!("{name}-1"))
                    .unwrap();
            }
            7 => {
                api.delete("Service", NAMESPACE, &name).unwrap();
            }
            _ => {
                api.apply(&slice(&name, tcp, udp, endpoints)).unwrap();
            }
        }
        self.slots[slot] = (step + 1) % OTHER_SCRIPT.len();
        OTHER_SCRIPT[step]
    }
}
