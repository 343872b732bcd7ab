//! `process`: the one function every driver calls for every packet.
//!
//! The walk (ARCHITECTURE.md §2): classify by the port the frame came in on, answer what
//! the datapath answers itself (ARP for the gateway, ICMP errors, rejects), translate
//! Service traffic (conntrack keeps a flow's backend and reverse-NATs its replies), route
//! the destination, then deliver: L2 rewrite to a local pod or the host, or VXLAN encap
//! towards another node. Decisions are made before the frame is touched, so an ICMP error
//! always quotes the packet as its sender sent it.

mod arp;
mod enforce;
mod icmp_error;
mod icmp_nat;
mod nat;
mod ndp;
pub mod packet;
mod reset;
mod service;

pub use service::end_flows_to_deleted_endpoints;

use crate::addr::{IpKey, MacAddr};
use crate::conntrack::Flows;
use crate::frame::Frame;
use crate::hash;
use crate::observer::Observer;
use crate::overlay::{self, DecapError};
use crate::tables::{HOST_MAC, LocalPod, PortId, PortKind, RemoteNode, Route, Tables};
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
    /// Traffic from outside the cluster to a Service frontend on this node.
    Uplink,
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
            Err(DecapError::NotOurs) => self.on_uplink_service(frame, l2),
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

    /// Uplink traffic that is not our overlay: Service traffic to a frontend of this node
    /// (NodePort, external and load-balancer IPs) or a tracked flow's; the rest is the kernel's.
    fn on_uplink_service(&mut self, frame: &mut Frame<'_>, l2: &L2Info) -> Verdict {
        let family = match l2.ethertype {
            ethernet::ethertype::IPV4 => Family::V4,
            ethernet::ethertype::IPV6 => Family::V6,
            _ => return Verdict::Pass,
        };
        match parse_ip(frame.data(), l2.l3_offset, family) {
            Ok(h) => self.route_ip(frame, h, Origin::Uplink),
            // Not ours to judge: the kernel counts its own malformed packets.
            Err(_) => Verdict::Pass,
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
        let translated = !translation.is_none();
        let uplink_return = translation.uplink_return();
        let route = t.route(translation.destination(&h));
        match (origin, route) {
            // Outside traffic is ours only when it is Service traffic.
            (Origin::Uplink, _) if !translated => return Verdict::Pass,
            (_, _) if uplink_return.is_some() => {}
            (Origin::Overlay, Route::LocalPod(_)) => {}
            (Origin::Overlay, _) if !translated => {
                return Verdict::Drop(DropReason::OverlayNotLocal);
            }
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
        let out_port = match (uplink_return, route) {
            (Some(_), _) | (None, Route::RemoteNode(_)) => PortId::UPLINK,
            (None, Route::LocalPod(pod)) => pod.port,
            (None, _) => PortId::HOST,
        };
        // Straight back where it came from is a loop, unless translated (a pod reaching
        // itself through its Service) or tunnelled (uplink in, overlay out).
        if out_port == self.in_port && !translated && !matches!(route, Route::RemoteNode(_)) {
            return Verdict::Drop(DropReason::Hairpin);
        }

        // NetworkPolicy, on the flow as translated, for flows not yet judged.
        let mut translation = translation;
        if let service::Translation::None | service::Translation::New { .. } = translation {
            let (src, dst, dst_port) = match &translation {
                service::Translation::New { src, dst, .. } => (
                    src.map_or(h.src, |e| e.0),
                    dst.map_or(h.dst, |e| e.0),
                    dst.map_or(h.dst_port, |e| e.1),
                ),
                _ => (h.src, h.dst, h.dst_port),
            };
            let flow = enforce::Judged {
                src,
                client: h.src,
                dst,
                dst_port,
                proto: h.proto,
            };
            if let Err(verdict) = self.judge(&flow) {
                return verdict;
            }
            // Once some pod is isolated, plain flows are tracked so their replies pass.
            // Not those of the node itself: never judged, and their replies to the node
            // go to the kernel as they would without any policy (walk 6).
            let node = &t.node.addresses;
            if translation.is_none()
                && h.has_ports()
                && !node.contains(&h.src)
                && !node.contains(&h.dst)
                && self.tracks_plain_flows()
            {
                let mut mac = [0u8; 6];
                if let Some(m) = frame.data().get(6..12) {
                    mac.copy_from_slice(m);
                }
                translation = service::Translation::New {
                    flow: service::plain_flow(&h, self.in_port.0, mac),
                    src: None,
                    dst: None,
                };
            }
            if let service::Translation::New { flow, src, .. } = &mut translation
                && let Err(verdict) = self.unclash(flow, src)
            {
                return verdict;
            }
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
        if let (None, Route::RemoteNode(_)) = (uplink_return, route) {
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
        if let Err(verdict) = self.apply(frame, &mut h, translation) {
            return verdict;
        }
        decrement_ttl(frame.data_mut(), &h);
        match (uplink_return, route) {
            (Some(mac), _) => {
                set_l2(frame.data_mut(), t.node.underlay_mac, mac);
                Verdict::Forward(PortId::UPLINK)
            }
            (None, Route::LocalPod(pod)) => {
                set_l2(frame.data_mut(), t.node.gateway_mac, pod.mac);
                Verdict::Forward(pod.port)
            }
            (None, Route::RemoteNode(node)) => self.encap_to(frame, &h, node),
            (None, _) => {
                set_l2(frame.data_mut(), t.node.gateway_mac, HOST_MAC);
                Verdict::Forward(PortId::HOST)
            }
        }
    }

    /// Rewrites the packet as its translation says and records the flow's progress.
    fn apply(
        &mut self,
        frame: &mut Frame<'_>,
        h: &mut IpHeaders,
        tr: service::Translation,
    ) -> Result<(), Verdict> {
        use service::Translation as T;
        let (src, dst) = match tr {
            T::None => return Ok(()),
            T::Related {
                quoted,
                quote,
                outer_src,
                outer_dst,
                ..
            } => {
                icmp_nat::rewrite(frame.data_mut(), h, &quoted, &quote, outer_src, outer_dst);
                return Ok(());
            }
            T::Flow {
                id, dir, src, dst, ..
            } => {
                self.flows.observe(id, dir, h.tcp_flags, self.now);
                (src, dst)
            }
            T::New { flow, src, dst } => {
                self.commit(flow, h.tcp_flags)?;
                (src, dst)
            }
        };
        if let Some((ip, port)) = dst {
            nat::rewrite(frame.data_mut(), h, End::Destination, ip, port);
            self.obs.step("dnat");
        }
        if let Some((ip, port)) = src {
            nat::rewrite(frame.data_mut(), h, End::Source, ip, port);
            self.obs
                .step(if dst.is_some() { "snat" } else { "reverse_nat" });
        }
        Ok(())
    }

    /// Ends a TCP flow whose endpoint was deleted: a RST to the client from the address it
    /// spoke to.
    fn reset(&mut self, frame: &mut Frame<'_>, h: &IpHeaders, origin: Origin) -> Verdict {
        let mac = self.own_mac(origin);
        if matches!(origin, Origin::Overlay) || !reset::build(frame, h, h.dst, h.dst_port, mac) {
            return Verdict::Drop(DropReason::EndpointDeleted);
        }
        self.obs.step("tcp_reset");
        Verdict::Forward(self.in_port)
    }

    /// The MAC we answer from on the port a packet came in on.
    fn own_mac(&self, origin: Origin) -> MacAddr {
        match origin {
            Origin::Uplink => self.tables.node.underlay_mac,
            _ => self.tables.node.gateway_mac,
        }
    }

    /// Answers a packet for a Service with no endpoint: ICMP port unreachable from the VIP.
    fn reject(&mut self, frame: &mut Frame<'_>, h: &IpHeaders, origin: Origin) -> Verdict {
        if matches!(origin, Origin::Overlay) || !icmp_error::may_answer(frame.data(), h) {
            return Verdict::Drop(DropReason::NoEndpoints);
        }
        let mac = self.own_mac(origin);
        if icmp_error::build(frame, h, IcmpError::PortUnreachable, h.dst, mac) {
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
        // Outside clients hear from the address they addressed (a frontend of ours); pods
        // and the host from their gateway.
        let from = match origin {
            Origin::Uplink => Some(h.dst),
            _ => gateway_address(self.tables, h.family),
        };
        let Some(from) = from else {
            return Verdict::Drop(reason);
        };
        let mac = self.own_mac(origin);
        if icmp_error::build(frame, h, error, from, mac) {
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
