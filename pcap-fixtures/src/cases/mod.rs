//! Every scenario case, by theme. Each module builds its cases' inputs and expected
//! outputs with [`crate::packet`] from the documented contract, never by running the
//! datapath.

mod arp;
mod config;
mod dualstack;
mod icmp;
mod local;
mod malformed;
mod merge;
mod overlay;
mod policy;
mod policy_flows;
mod services;
mod services_clusterip;
mod services_endpoints;
mod services_external;
mod services_icmp;
mod services_kit;
pub mod world;

use crate::case::Case;

/// All cases, in a fixed order (names are unique).
pub fn all() -> Vec<Case> {
    let mut out = Vec::new();
    out.extend(arp::cases());
    out.extend(local::cases());
    out.extend(overlay::cases());
    out.extend(services::cases());
    out.extend(services_clusterip::cases());
    out.extend(services_endpoints::cases());
    out.extend(services_external::cases());
    out.extend(services_icmp::cases());
    out.extend(icmp::cases());
    out.extend(malformed::cases());
    out.extend(config::cases());
    out.extend(dualstack::cases());
    out.extend(merge::cases());
    out.extend(policy::cases());
    out.extend(policy_flows::cases());
    out
}
