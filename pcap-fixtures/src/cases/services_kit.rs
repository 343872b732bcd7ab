//! What the Service scenario modules share: the outside client on the uplink, the
//! endpoints the two-node world offers, and short forms of the Service specs they use.
//!
//! Every Service here has exactly one endpoint a new flow may take, so the backend of
//! each expected packet is known without computing a Maglev choice (the datapath's own
//! tests and `tests/services_stats.rs` cover the choice itself).

use super::world::*;
use crate::case::StateSource;
use crate::packet::{L2, Mac, mac_for};
use testkit::manifests::service::{Conditions, EndpointSpec, PortSpec, ServiceSpec};

/// A client outside the cluster, on the underlay's L2 (so its frames reach node-a's
/// uplink directly and replies go back to its own MAC).
pub const OUTSIDE: [u8; 4] = [192, 168, 50, 200];
pub const OUTSIDE_MAC: Mac = [0x02, 0x00, 0xc0, 0xa8, 0x32, 0xc8];

/// web-0 and web-1 as `ip:port` in verdicts, at the usual target port.
pub const WEB0_8080: &str = "10.244.1.6:8080";
pub const WEB1_8080: &str = "10.244.2.7:8080";

/// The outside client's frames to node-a's uplink.
pub fn from_outside() -> L2 {
    L2 {
        src: OUTSIDE_MAC,
        dst: NODE_A_MAC,
    }
}

/// node-a's frames back to the outside client: from its underlay MAC to the MAC the
/// client's packet came from.
pub fn to_outside() -> L2 {
    L2 {
        src: NODE_A_MAC,
        dst: OUTSIDE_MAC,
    }
}

/// What node-a answers a local pod with itself (RSTs, ICMP errors): gateway MAC to pod.
pub fn answer_to_pod(ip: [u8; 4]) -> L2 {
    L2 {
        src: mac_for(GW_A),
        dst: mac_for(ip),
    }
}

/// web-0 (node-a) with these conditions.
pub fn web0(conditions: Conditions) -> EndpointSpec {
    EndpointSpec::new("10.244.1.6", "node-a", conditions)
}

/// web-1 (node-b) with these conditions.
pub fn web1(conditions: Conditions) -> EndpointSpec {
    EndpointSpec::new("10.244.2.7", "node-b", conditions)
}

/// Port `http`: TCP `port` -> 8080.
pub fn http(port: u16) -> PortSpec {
    PortSpec::new("http", port, "TCP", 8080)
}

/// A ClusterIP Service with one TCP port 80 -> 8080 and these endpoints.
pub fn web_service(name: &str, vip: &str, endpoints: Vec<EndpointSpec>) -> ServiceSpec {
    ServiceSpec::cluster_ip(name, vip, vec![http(80)]).endpoints(endpoints)
}

/// A NodePort Service: TCP 80 -> 8080 at `node_port`, externalTrafficPolicy `etp`
/// (the API server always fills the field in for this type).
pub fn node_port_service(
    name: &str,
    vip: &str,
    node_port: u16,
    etp: &'static str,
    endpoints: Vec<EndpointSpec>,
) -> ServiceSpec {
    ServiceSpec::cluster_ip(name, vip, vec![http(80).node_port(node_port)])
        .kind("NodePort")
        .external_traffic_policy(etp)
        .endpoints(endpoints)
}

/// The two-node world with these Services.
pub fn state(services: Vec<ServiceSpec>) -> StateSource {
    StateSource::Own(two_node_with(None, services))
}
