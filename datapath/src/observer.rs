//! A cheap, optional window into `process`'s decisions.
//!
//! `kxdp replay` records these into verdicts.jsonl, `kxdp trace` (later) prints them as
//! steps; the workers pass [`NoObserver`], whose empty methods compile away. There is no
//! second implementation of the pipeline for explaining it.

use crate::addr::IpKey;
use crate::policy::PolicyDirection;
use crate::tables::ServicePort;

pub trait Observer {
    /// False for observers that record nothing: lets `process` skip lookups it would do
    /// only to report (e.g. the Service of an established flow), at compile time.
    const RECORDS: bool = true;

    /// The packet matched this Service port.
    #[inline]
    fn service(&mut self, _service: &ServicePort) {}
    /// The backend chosen (or kept by conntrack) for the packet.
    #[inline]
    fn backend(&mut self, _ip: IpKey, _port: u16) {}
    /// The NetworkPolicies that decided the packet (`namespace/name`).
    #[inline]
    fn policies(&mut self, _names: &[&str]) {}
    /// The direction a NetworkPolicy drop was decided in.
    #[inline]
    fn policy_direction(&mut self, _direction: PolicyDirection) {}
    /// A step of the walk, for tracing (`"arp_reply"`, `"vxlan_encap"`, ...).
    #[inline]
    fn step(&mut self, _what: &'static str) {}
}

/// The observer for the hot path: records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    const RECORDS: bool = false;
}
