//! `process`: the one function every driver calls for every packet.
//!
//! The walk (ARCHITECTURE.md §2): classify by the port the frame came in on, answer what
//! the datapath answers itself (ARP for the gateway, ICMP errors, rejects), translate
//! Service traffic (conntrack keeps a flow's backend and reverse-NATs its replies), route
//! the destination, then deliver: L2 rewrite to a local pod or the host, or VXLAN encap
//! towards another node. Decisions are made before the frame is touched, so an ICMP error
//! always quotes the packet as its sender sent it.

mod arp;
mod icmp_error;
mod nat;
mod ndp;
pub mod packet;

use crate::addr::{IpKey, MacAddr};
use crate::conntrack::{FlowKey, FlowMatch, Flows, NatBinding};
use crate::frame::Frame;
use crate::hash;
use crate::lb;
use crate::observer::Observer;
use crate::overlay::{self, DecapError};
use crate::tables::{HOST_MAC, LocalPod, PortId, PortKind, RemoteNode, Route, ServiceKey, Tables};
use crate::verdict::{DropReason, Verdict};
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::vlan::{L2Info, walk_l2};
use crate::wire::{checksum, icmpv6};

use icmp_error::IcmpError;
use nat::End;
use packet::{Family, IpHeaders, parse_ip};

/// Time in nanoseconds on the driver's clock (monotonic live, pcap timestamps in replay).
pub type Nanos = u64;

/// Decides what happens to one frame that arrived on `in_port`; rewrites it in place.
/// Any byte sequence is a valid input: malformed frames are dropped with a reason.
pub fn process<O: Observer>(
    tables: &Tables,
    flows: &mut Flows,
    now: Nanos,
    in_port: PortId,
    frame: &mut Frame<'_>,
    obs: &mut O,
) -> Verdict {
    let Some(port) = tables.port(in_port) else {
        return Verdict::Drop(DropReason::UnknownPort);
    };
    let Ok(l2) = walk_l2(frame.data()) else {
        return Verdict::Drop(DropReason::MalformedEthernet);
    };
    let mut walk = Walk {
        tables,
        flows,
        now,
        in_port,
        obs,
    };
    match port.kind {
        PortKind::Uplink => walk.on_uplink(frame, &l2),
        PortKind::Host => walk.on_inside(frame, &l2, Inside::Host),
        PortKind::Pod(i) => match tables.local_pods.get(i) {
            Some(pod) => walk.on_inside(frame, &l2, Inside::Pod(pod)),
            None => Verdict::Drop(DropReason::UnknownPort),
        },
    }
}

/// Where a packet entered the node's inside (a pod or the host stack).
#[derive(Clone, Copy)]
enum Inside<'t> {
    Pod(&'t LocalPod),
    Host,
}

/// Where a routed packet came from, for the checks that differ.
#[derive(Clone, Copy)]
enum Origin {
    Pod,
    Host,
    Overlay,
}

/// The NAT decided for a packet, applied only once it is known to be forwarded.
#[derive(Clone, Copy)]
enum Translation {
    None,
    /// A new Service flow: DNAT to the backend and remember it.
    NewFlow(FlowKey, NatBinding),
    /// A known Service flow, client -> VIP: DNAT.
    Dnat(NatBinding),
    /// A reply, backend -> client: source back to the VIP.
    ReverseNat(NatBinding),
}

struct Walk<'a, 't, O> {
    tables: &'t Tables,
    flows: &'a mut Flows,
    now: Nanos,
    in_port: PortId,
    obs: &'a mut O,
}

impl<O: Observer> Walk<'_, '_, O> {
    fn on_uplink(&mut self, frame: &mut Frame<'_>, l2: &L2Info) -> Verdict {
        if l2.vlan_tags > 0 {
            // Our underlay is untagged: tagged traffic is the kernel's (its VLAN devices).
            return Verdict::Pass;
        }
        let t = self.tables;
        let endpoint = overlay::Endpoint {
            local_ip: t.node.underlay_ip,
            udp_port: t.overlay.udp_port,
            vni: t.overlay.vni,
        };
        match overlay::decap(frame, l2, &endpoint) {
            Err(DecapError::NotOurs) => Verdict::Pass,
            Err(DecapError::WrongVni) => Verdict::Drop(DropReason::VxlanWrongVni),
            Err(DecapError::Malformed) => Verdict::Drop(DropReason::MalformedVxlan),
            Ok(decapped) => {
                self.obs.step("vxlan_decap");
                let Some(sender) = t.remote_node_by_underlay(decapped.outer_src) else {
                    return Verdict::Drop(DropReason::OverlayUnknownNode);
                };
                let Ok(inner) = walk_l2(frame.data()) else {
                    return Verdict::Drop(DropReason::MalformedVxlan);
                };
                if inner.vlan_tags > 0 {
                    return Verdict::Drop(DropReason::VlanUnsupported);
                }
                let family = match inner.ethertype {
                    ethernet::ethertype::IPV4 => Family::V4,
                    ethernet::ethertype::IPV6 => Family::V6,
                    // kxdp nodes never send ARP over the overlay: every MAC is derived.
                    ethernet::ethertype::ARP => return Verdict::Drop(DropReason::OverlayArp),
                    _ => return Verdict::Drop(DropReason::UnsupportedEthertype),
                };
                let h = match parse_ip(frame.data(), inner.l3_offset, family) {
                    Ok(h) => h,
                    Err(reason) => return Verdict::Drop(reason),
                };
                // A node only speaks for its own pods (and its gateway, which SNATed
                // traffic and the node's own traffic come from): policy trusts the source
                // address, so a node must not be able to claim another node's pods.
                if !sender.pod_cidrs.iter().any(|c| c.contains(h.src)) {
                    return Verdict::Drop(DropReason::OverlaySourceMismatch);
                }
                self.route_ip(frame, h, Origin::Overlay)
            }
        }
    }

    fn on_inside(&mut self, frame: &mut Frame<'_>, l2: &L2Info, inside: Inside<'_>) -> Verdict {
        let t = self.tables;
        if l2.vlan_tags > 0 {
            return Verdict::Drop(DropReason::VlanUnsupported);
        }
        if l2.ethertype == ethernet::ethertype::ARP {
            return self.answer_arp(frame, l2, inside);
        }
        let family = match l2.ethertype {
            ethernet::ethertype::IPV4 => Family::V4,
            ethernet::ethertype::IPV6 => Family::V6,
            _ => return Verdict::Drop(DropReason::UnsupportedEthertype),
        };
        let h = match parse_ip(frame.data(), l2.l3_offset, family) {
            Ok(h) => h,
            Err(reason) => return Verdict::Drop(reason),
        };
        if h.family == Family::V6 && h.icmp_type == Some(icmpv6::TYPE_NEIGHBOR_SOLICIT) {
            return self.answer_ndp(frame, &h, inside);
        }
        let dst_mac = EthernetFrame::new_unchecked(frame.data()).dst_addr();
        if dst_mac.is_multicast() {
            return Verdict::Drop(DropReason::BroadcastNotForwarded);
        }
        if dst_mac != t.node.gateway_mac {
            return Verdict::Drop(DropReason::NotOurMac);
        }
        match inside {
            Inside::Pod(pod) => {
                if !pod.ips.contains(&h.src) {
                    return Verdict::Drop(DropReason::SourceSpoofed);
                }
                self.route_ip(frame, h, Origin::Pod)
            }
            Inside::Host => self.route_ip(frame, h, Origin::Host),
        }
    }

    fn answer_arp(&mut self, frame: &mut Frame<'_>, l2: &L2Info, inside: Inside<'_>) -> Verdict {
        let t = self.tables;
        let req = match arp::parse_request(frame.data(), l2.l3_offset) {
            Ok(req) => req,
            Err(reason) => return Verdict::Drop(reason),
        };
        let target = IpKey::v4(req.target_ip);
        let ours = match inside {
            // The gateway, or a neighbour the pod believes is on its link.
            Inside::Pod(pod) => {
                !pod.ips.contains(&target)
                    && (req.target_ip == t.node.gateway_ip
                        || t.node.pod_cidrs.iter().any(|c| c.contains(target)))
            }
            // The host routes whole ranges into the host port: answer for anything not its own.
            Inside::Host => !t.node.addresses.contains(&target),
        };
        if !ours {
            return Verdict::Drop(DropReason::ArpNotForGateway);
        }
        arp::reply_in_place(frame, l2.l3_offset, &req, t.node.gateway_mac);
        self.obs.step("arp_reply");
        Verdict::Forward(self.in_port)
    }

    fn answer_ndp(&mut self, frame: &mut Frame<'_>, h: &IpHeaders, inside: Inside<'_>) -> Verdict {
        let t = self.tables;
        let sol = match ndp::parse_solicitation(frame.data(), h) {
            Ok(sol) => sol,
            Err(reason) => return Verdict::Drop(reason),
        };
        let gateway = gateway_address(t, Family::V6);
        let ours = match inside {
            Inside::Pod(pod) => {
                pod.ips.contains(&sol.sender)
                    && !pod.ips.contains(&sol.target)
                    && (Some(sol.target) == gateway
                        || t.node.pod_cidrs.iter().any(|c| c.contains(sol.target)))
            }
            Inside::Host => !t.node.addresses.contains(&sol.target),
        };
        if !ours {
            return Verdict::Drop(DropReason::NdpNotForGateway);
        }
        let router = Some(sol.target) == gateway;
        if !ndp::advertise_in_place(frame, &sol, t.node.gateway_mac, router) {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        self.obs.step("ndp_advert");
        Verdict::Forward(self.in_port)
    }

    /// Services, conntrack, routing and delivery of a parsed IP packet.
    fn route_ip(&mut self, frame: &mut Frame<'_>, h: IpHeaders, origin: Origin) -> Verdict {
        let t = self.tables;
        let translation = match self.translate(frame, &h, origin) {
            Ok(tr) => tr,
            Err(verdict) => return verdict,
        };
        let dst = match translation {
            Translation::NewFlow(_, nat) | Translation::Dnat(nat) => nat.backend,
            _ => h.dst,
        };
        let translated = !matches!(translation, Translation::None);
        let route = t.route(dst);
        match (origin, route) {
            (Origin::Overlay, Route::LocalPod(_)) => {}
            (Origin::Overlay, _) => return Verdict::Drop(DropReason::OverlayNotLocal),
            (Origin::Pod, Route::Node) if !translated => return Verdict::Pass,
            (Origin::Host, Route::Node | Route::Host) if !translated => {
                return Verdict::Drop(DropReason::Hairpin);
            }
            (_, Route::Unowned) => return Verdict::Drop(DropReason::NoRoute),
            (_, Route::ServiceRange) => {
                let reason = if h.fragment {
                    DropReason::Fragment
                } else {
                    DropReason::NoService
                };
                return Verdict::Drop(reason);
            }
            _ => {}
        }
        let out_port = match route {
            Route::LocalPod(pod) => pod.port,
            Route::RemoteNode(_) => PortId::UPLINK,
            _ => PortId::HOST,
        };
        if out_port == self.in_port {
            return Verdict::Drop(DropReason::Hairpin);
        }

        // Checks that answer the sender, on the packet as it was sent.
        if h.ttl <= 1 {
            return self.icmp_error(
                frame,
                &h,
                origin,
                IcmpError::TimeExceeded,
                DropReason::TtlExceeded,
            );
        }
        if let Route::RemoteNode(_) = route {
            // The underlay MTU counts outer IPv4 + UDP + VXLAN + the inner Ethernet header:
            // the same 50 bytes as OVERHEAD (which has the outer Ethernet header instead).
            let inner_mtu = usize::from(t.overlay.underlay_mtu).saturating_sub(overlay::OVERHEAD);
            if h.ip_len > inner_mtu {
                if !h.dont_frag {
                    // We do not fragment on the sender's behalf.
                    return Verdict::Drop(DropReason::MtuExceeded);
                }
                let mtu = inner_mtu.min(usize::from(u16::MAX)) as u16;
                return self.icmp_error(
                    frame,
                    &h,
                    origin,
                    IcmpError::TooBig { mtu },
                    DropReason::MtuExceeded,
                );
            }
        }

        // Act.
        let mut h = h;
        match translation {
            Translation::None => {}
            Translation::NewFlow(key, binding) => {
                if self.flows.insert(key, binding, self.now).is_err() {
                    return Verdict::Drop(DropReason::ConntrackFull);
                }
                self.dnat(frame, &mut h, &binding);
            }
            Translation::Dnat(binding) => self.dnat(frame, &mut h, &binding),
            Translation::ReverseNat(binding) => {
                nat::rewrite(
                    frame.data_mut(),
                    &mut h,
                    End::Source,
                    binding.vip,
                    binding.vip_port,
                );
                self.obs.step("reverse_nat");
            }
        }
        decrement_ttl(frame.data_mut(), &h);
        match route {
            Route::LocalPod(pod) => {
                set_l2(frame.data_mut(), t.node.gateway_mac, pod.mac);
                Verdict::Forward(pod.port)
            }
            Route::RemoteNode(node) => self.encap_to(frame, &h, node),
            _ => {
                set_l2(frame.data_mut(), t.node.gateway_mac, HOST_MAC);
                Verdict::Forward(PortId::HOST)
            }
        }
    }

    /// Decides the Service translation of a packet: a known flow (either direction) keeps
    /// its binding; a new flow to a Service VIP gets a backend; a Service without one is
    /// rejected as kube-proxy's REJECT rule does (ICMP port unreachable from the VIP).
    fn translate(
        &mut self,
        frame: &mut Frame<'_>,
        h: &IpHeaders,
        origin: Origin,
    ) -> Result<Translation, Verdict> {
        if !h.has_ports() {
            return Ok(Translation::None);
        }
        let key = FlowKey {
            src: h.src,
            dst: h.dst,
            src_port: h.src_port,
            dst_port: h.dst_port,
            proto: h.proto,
        };
        let service_key = ServiceKey {
            vip: h.dst,
            port: h.dst_port,
            proto: h.proto,
        };
        match self.flows.lookup(&key, self.now) {
            Some(FlowMatch::Original(binding)) => {
                self.report_flow(&binding, h.proto);
                return Ok(Translation::Dnat(binding));
            }
            Some(FlowMatch::Reply(binding)) => {
                self.report_flow(&binding, h.proto);
                return Ok(Translation::ReverseNat(binding));
            }
            None => {}
        }
        if matches!(origin, Origin::Overlay) {
            // The client's node translated this flow already.
            return Ok(Translation::None);
        }
        let Some(svc) = self.tables.service(&service_key) else {
            return Ok(Translation::None);
        };
        self.obs.service(svc);
        if h.fragment {
            // A first fragment could be translated, its followers could not: drop all alike.
            return Err(Verdict::Drop(DropReason::Fragment));
        }
        let tuple = h.five_tuple();
        let Some(backend) = lb::pick_backend(svc, hash::flow_hash(&tuple, hash::DEFAULT_SEED))
        else {
            return Err(self.reject(frame, h, origin));
        };
        self.obs.backend(backend);
        let binding = NatBinding {
            vip: h.dst,
            vip_port: h.dst_port,
            backend: backend.ip,
            backend_port: backend.port,
        };
        Ok(Translation::NewFlow(key, binding))
    }

    fn dnat(&mut self, frame: &mut Frame<'_>, h: &mut IpHeaders, binding: &NatBinding) {
        nat::rewrite(
            frame.data_mut(),
            h,
            End::Destination,
            binding.backend,
            binding.backend_port,
        );
        self.obs.step("dnat");
    }

    /// Tells the observer which Service and backend a known flow belongs to. The Service
    /// lookup is only for reporting, so the hot path (`NoObserver`) skips it.
    fn report_flow(&mut self, binding: &NatBinding, proto: u8) {
        if !O::RECORDS {
            return;
        }
        let key = ServiceKey {
            vip: binding.vip,
            port: binding.vip_port,
            proto,
        };
        if let Some(svc) = self.tables.service(&key) {
            self.obs.service(svc);
        }
        self.obs.backend(crate::tables::Backend {
            ip: binding.backend,
            port: binding.backend_port,
        });
    }

    /// Answers a packet for a Service with no endpoint: ICMP port unreachable from the VIP.
    fn reject(&mut self, frame: &mut Frame<'_>, h: &IpHeaders, origin: Origin) -> Verdict {
        if matches!(origin, Origin::Overlay) || !icmp_error::may_answer(frame.data(), h) {
            return Verdict::Drop(DropReason::NoEndpoints);
        }
        if icmp_error::build(
            frame,
            h,
            IcmpError::PortUnreachable,
            h.dst,
            self.tables.node.gateway_mac,
        ) {
            self.obs.step("reject_port_unreachable");
            Verdict::Forward(self.in_port)
        } else {
            Verdict::Drop(DropReason::NoEndpoints)
        }
    }

    /// Sends `error` back to the sender from the gateway, or drops with `reason`.
    fn icmp_error(
        &mut self,
        frame: &mut Frame<'_>,
        h: &IpHeaders,
        origin: Origin,
        error: IcmpError,
        reason: DropReason,
    ) -> Verdict {
        // Errors would have to be tunnelled back to the sending node: not yet.
        if matches!(origin, Origin::Overlay) || !icmp_error::may_answer(frame.data(), h) {
            return Verdict::Drop(reason);
        }
        let Some(from) = gateway_address(self.tables, h.family) else {
            return Verdict::Drop(reason);
        };
        if icmp_error::build(frame, h, error, from, self.tables.node.gateway_mac) {
            self.obs.step(match (error, h.family) {
                (IcmpError::TimeExceeded, _) => "icmp_time_exceeded",
                (IcmpError::TooBig { .. }, Family::V4) => "icmp_frag_needed",
                (IcmpError::TooBig { .. }, Family::V6) => "icmp_packet_too_big",
                (IcmpError::PortUnreachable, _) => "icmp_port_unreachable",
            });
            Verdict::Forward(self.in_port)
        } else {
            Verdict::Drop(reason)
        }
    }

    fn encap_to(&mut self, frame: &mut Frame<'_>, h: &IpHeaders, node: &RemoteNode) -> Verdict {
        let t = self.tables;
        let remote_gateway = node
            .pod_cidrs
            .iter()
            .find(|c| c.addr.is_v4())
            .map(|c| MacAddr::for_ip(c.first_host()))
            .unwrap_or(node.underlay_mac);
        set_l2(frame.data_mut(), t.node.gateway_mac, remote_gateway);
        let tuple = h.five_tuple();
        let encap = overlay::Encap {
            src_mac: t.node.underlay_mac,
            dst_mac: node.underlay_mac,
            src_ip: t.node.underlay_ip,
            dst_ip: node.underlay_ip,
            src_port: overlay::source_port(hash::flow_hash(&tuple, hash::DEFAULT_SEED)),
            dst_port: t.overlay.udp_port,
            vni: t.overlay.vni,
        };
        match overlay::encap(frame, &encap) {
            Ok(()) => {
                self.obs.step("vxlan_encap");
                Verdict::Forward(PortId::UPLINK)
            }
            Err(_) => Verdict::Drop(DropReason::NoHeadroom),
        }
    }
}

/// The node's gateway address of a family: where ICMP errors come from.
fn gateway_address(t: &Tables, family: Family) -> Option<IpKey> {
    match family {
        Family::V4 => Some(IpKey::v4(t.node.gateway_ip)),
        Family::V6 => t
            .node
            .pod_cidrs
            .iter()
            .find(|c| !c.addr.is_v4())
            .map(|c| c.first_host()),
    }
}

fn set_l2(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    if frame.len() >= ethernet::HEADER_LEN {
        let mut eth = EthernetFrame::new_unchecked(frame);
        eth.set_src_addr(src);
        eth.set_dst_addr(dst);
    }
}

/// One routing hop: TTL/hop limit minus one (the caller checked it is > 1), IPv4
/// header checksum updated incrementally.
fn decrement_ttl(frame: &mut [u8], h: &IpHeaders) {
    let Some(l3) = frame.get_mut(h.l3_offset..) else {
        return;
    };
    match h.family {
        Family::V4 => {
            let mut ip = Ipv4Packet::new_unchecked(l3);
            let ttl = ip.ttl();
            let proto = ip.protocol();
            let old = u16::from_be_bytes([ttl, proto]);
            let new = u16::from_be_bytes([ttl - 1, proto]);
            ip.set_ttl(ttl - 1);
            let sum = checksum::update_u16(ip.checksum(), old, new);
            ip.set_checksum(sum);
        }
        Family::V6 => {
            let mut ip = Ipv6Packet::new_unchecked(l3);
            let hl = ip.hop_limit();
            ip.set_hop_limit(hl - 1);
        }
    }
}

#[cfg(test)]
mod tests;
