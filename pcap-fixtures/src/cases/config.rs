//! A non-default `kxdp.yaml` (VNI 42, UDP 8472 as Flannel uses, underlayMTU 9000): the
//! overlay parameters come from the config everywhere, in encap, decap and the MTU check.

use super::world::*;
use crate::case::{Case, Expect, StateSource, drop, forward};
use crate::packet::{
    IcmpError, L2, L4, V4, Vxlan, eth_v4, icmpv4_error, ipv4_packet, mac_for, mapped,
};

const CONFIG: &str = "# Jumbo-frame underlay, Flannel's VXLAN port, a VNI of our own.\nvxlan:\n  vni: 42\n  port: 8472\nunderlayMTU: 9000\n";

pub fn cases() -> Vec<Case> {
    let mut c = Case::new(
        "custom-config",
        "kxdp.yaml with vxlan {vni: 42, port: 8472} and underlayMTU 9000: client -> web-1 is \
         tunnelled to UDP 8472 with VNI 42; an 8950-byte packet (9000 - 50) fits, 8951 with DF \
         gets ICMP fragmentation needed with MTU 8950; VXLAN from node-b on 8472/VNI 42 is \
         delivered, VNI 1 on 8472 is vxlan_wrong_vni, and 4789 is no longer ours (pass).",
        StateSource::Own(two_node_state(Some(CONFIG), vec![])),
    );
    let l4 = L4::udp(5000, 8080);
    let ip = V4::new(CLIENT, WEB1);
    let outer = a_to_b_outer(mapped(CLIENT), mapped(WEB1), l4, false, 8472, 42);
    for len in [100, 8950] {
        let payload: Vec<u8> = (0..len - 28).map(|i| (i % 253) as u8).collect();
        let inner = eth_v4(a_to_b_inner(), ip.ttl(63), l4, &payload);
        c.send(
            CLIENT_PORT,
            eth_v4(from_pod(CLIENT), ip, l4, &payload),
            forward(UPLINK, outer.wrap(&inner)),
        );
    }
    let payload: Vec<u8> = (0..8951 - 28).map(|i| (i % 253) as u8).collect();
    let back = L2 {
        src: mac_for(GW_A),
        dst: mac_for(CLIENT),
    };
    let error = icmpv4_error(
        back,
        GW_A,
        CLIENT,
        IcmpError::FragNeeded { mtu: 8950 },
        &ipv4_packet(ip, l4, &payload),
    );
    c.send(
        CLIENT_PORT,
        eth_v4(from_pod(CLIENT), ip, l4, &payload),
        forward(CLIENT_PORT, error),
    );

    let reply = L4::udp(8080, 5000);
    let inner_ip = V4::new(WEB1, CLIENT).ttl(63);
    let inner = eth_v4(b_to_a_inner(), inner_ip, reply, b"flannel port");
    let ours = Vxlan {
        dport: 8472,
        ..b_to_a(50100, 42)
    };
    c.send(
        UPLINK,
        ours.wrap(&inner),
        forward(
            CLIENT_PORT,
            eth_v4(to_pod(CLIENT), inner_ip.ttl(62), reply, b"flannel port"),
        ),
    );
    let wrong_vni = Vxlan { vni: 1, ..ours };
    c.send(UPLINK, wrong_vni.wrap(&inner), drop("vxlan_wrong_vni"));
    c.send(UPLINK, b_to_a(50100, 42).wrap(&inner), Expect::Pass);
    vec![c]
}
