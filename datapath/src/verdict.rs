//! What `process` decided about one packet.

use crate::tables::PortId;

/// The outcome of processing one frame. The frame buffer may have been rewritten in
/// place (NAT, L2 rewrite, encap/decap, or replaced by a reply the datapath generated
/// such as an ARP reply or an ICMP error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (possibly rewritten) frame on this port.
    Forward(PortId),
    /// Not ours: hand the untouched frame to the kernel stack (XDP_PASS).
    Pass,
    /// Discard, for a reason that is counted and reported.
    Drop(DropReason),
}

impl Verdict {
    /// Stable lower-case name used in verdicts.jsonl and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Forward(_) => "forward",
            Verdict::Pass => "pass",
            Verdict::Drop(_) => "drop",
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[doc = $doc:expr])* $variant:ident => $name:literal,)*) => {
        /// Why a packet was dropped. The names are a stable interface: they appear in
        /// counters, flow logs, replay output and metrics. Add variants; never rename.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order (for per-reason counter arrays).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    MalformedEthernet => "malformed_ethernet",
    /// More VLAN tags than we walk, or a VLAN-tagged frame on a port that carries none.
    VlanUnsupported => "vlan_unsupported",
    /// An IPv6 neighbour solicitation not for an address the datapath answers for, or
    /// duplicate address detection (which only the address's owner answers).
    NdpNotForGateway => "ndp_not_for_gateway",
    /// An ARP packet too short or not Ethernet/IPv4.
    MalformedArp => "malformed_arp",
    /// ARP that is not a request for an address the datapath answers for.
    ArpNotForGateway => "arp_not_for_gateway",
    /// IPv4 header invalid: version, IHL, total length, or header checksum.
    MalformedIpv4 => "malformed_ipv4",
    /// IPv6 header invalid or an extension-header chain longer than we walk.
    MalformedIpv6 => "malformed_ipv6",
    /// A transport header (TCP/UDP/SCTP/ICMP) cut short or inconsistent.
    MalformedL4 => "malformed_l4",
    /// An EtherType the datapath does not carry.
    UnsupportedEthertype => "unsupported_ethertype",
    /// A pod sent from an address (or MAC) that is not its own.
    SourceSpoofed => "source_spoofed",
    /// Time-to-live / hop limit ran out; an ICMP error was not possible.
    TtlExceeded => "ttl_exceeded",
    /// Too big for the underlay MTU; an ICMP error was not possible.
    MtuExceeded => "mtu_exceeded",
    /// Destination inside the cluster CIDR but no node or pod owns it.
    NoRoute => "no_route",
    /// Destination in the Service CIDR with no such Service port.
    NoService => "no_service",
    /// A Service port with no usable endpoint (and no reject could be built).
    NoEndpoints => "no_endpoints",
    /// A Service port whose traffic policy allows only this node's endpoints, and this
    /// node has none (externalTrafficPolicy or internalTrafficPolicy Local).
    NoLocalEndpoints => "no_local_endpoints",
    /// A packet of a flow whose Service endpoint has been deleted (TCP clients get a RST).
    EndpointDeleted => "endpoint_deleted",
    /// No free source port at the gateway for a translated flow.
    SnatExhausted => "snat_exhausted",
    /// A new flow whose tuple a live flow already holds (lookup and insert disagreed).
    FlowConflict => "flow_conflict",
    /// Denied by NetworkPolicy (egress of the client's pod or ingress of the server's).
    PolicyDenied => "policy_denied",
    /// A frame from a port the tables do not know (e.g. a pod just removed).
    UnknownPort => "unknown_port",
    /// VXLAN to our address and port but with a VNI that is not ours.
    VxlanWrongVni => "vxlan_wrong_vni",
    /// VXLAN header invalid (I flag clear) or inner frame cut short.
    MalformedVxlan => "malformed_vxlan",
    /// Decapsulated traffic addressed to something that is not a local pod.
    OverlayNotLocal => "overlay_not_local",
    /// ARP inside the overlay: kxdp nodes never send it (every MAC is derived from its IP).
    OverlayArp => "overlay_arp",
    /// VXLAN from an underlay address that is no node of the cluster.
    OverlayUnknownNode => "overlay_unknown_node",
    /// Decapsulated traffic whose source is not inside the sending node's PodCIDR.
    OverlaySourceMismatch => "overlay_source_mismatch",
    /// IP fragments are not load-balanced or policed piecemeal; dropped and counted.
    Fragment => "fragment",
    /// No headroom left in the frame for encapsulation.
    NoHeadroom => "no_headroom",
    /// The flow table is full and nothing could be evicted.
    ConntrackFull => "conntrack_full",
    /// A packet that would go straight back out of the port it came from.
    Hairpin => "hairpin_loop",
    /// A multicast/broadcast frame that no one in the datapath handles.
    BroadcastNotForwarded => "broadcast_not_forwarded",
    /// Frame addressed to another MAC than ours on a pod port.
    NotOurMac => "not_our_mac",
    /// A new flow to a LoadBalancer IP from a source outside its Service's
    /// `loadBalancerSourceRanges` (kube-proxy's firewall chain drops these too).
    LbSourceRange => "lb_source_range",
}
