//! Runs the loaded (not attached) XDP programs on hand-built frames with
//! `BPF_PROG_TEST_RUN`, covering every branch of both programs.
//!
//! No socket is bound in `xsks` here, so `bpf_redirect_map(.., XDP_PASS)` takes its
//! fallback and the program returns XDP_PASS on the redirect path too. The `reasons`
//! counters tell the two paths apart: every run must bump exactly one of them.
//!
//! Needs root (CAP_BPF); skipped with a message otherwise, except under `CI=true`, where a
//! skip would hide a broken datapath and so fails instead.

use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::programs::{TestRun, TestRunOptions};
use xdp_redirect::{
    FrontendKey, POD_PROGRAM, Reason, UPLINK_PROGRAM, VxlanCfg, add_frontend, add_node_addr, load,
    program, reason_count, set_vxlan,
};

const XDP_PASS: u32 = 2;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VXLAN_PORT: u16 = 4789;
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const NODE_PORT: u16 = 30080;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The loaded programs with this node's maps filled, or `None` (test skipped) without root.
fn loaded() -> Option<Ebpf> {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: XDP program tests need root and must not be skipped"
        );
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root (CAP_BPF)");
        return None;
    }
    let mut ebpf = load().expect("load XDP programs");
    set_vxlan(&mut ebpf, VxlanCfg::new(NODE_IP, VXLAN_PORT)).unwrap();
    add_node_addr(&mut ebpf, NODE_IP).unwrap();
    for proto in [FrontendKey::TCP, FrontendKey::UDP, FrontendKey::SCTP] {
        add_frontend(&mut ebpf, FrontendKey::new(LB_IP, NODE_PORT, proto)).unwrap();
    }
    Some(ebpf)
}

fn counts(ebpf: &Ebpf) -> Vec<u64> {
    Reason::ALL
        .iter()
        .map(|&r| reason_count(ebpf, r).unwrap())
        .collect()
}

/// Runs `prog` once on `frame`; returns its action and the one reason it counted.
fn run(ebpf: &Ebpf, prog: &'static str, frame: &[u8]) -> (u32, Reason) {
    let before = counts(ebpf);
    let opts = TestRunOptions {
        data_in: Some(frame),
        ..TestRunOptions::default()
    };
    let result = program(ebpf, prog).unwrap().test_run(opts).unwrap();
    let after = counts(ebpf);
    let bumped: Vec<Reason> = Reason::ALL
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(&r, (b, a))| {
            assert_eq!(a - b, 1, "{r:?} counted more than once");
            r
        })
        .collect();
    assert_eq!(
        bumped.len(),
        1,
        "exactly one reason per run, got {bumped:?}"
    );
    (result.return_value, bumped[0])
}

const ETH_IPV4: [u8; 2] = [0x08, 0x00];

fn ethernet(ethertype: [u8; 2]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    f.extend_from_slice(&ethertype);
    f
}

/// An Ethernet + IPv4 frame carrying `l4` (already built) as protocol `proto`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(ETH_IPV4);
    let tot_len = u16::try_from(20 + l4.len()).unwrap();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot_len.to_be_bytes());
    // id, flags DF, ttl 64; the programs ignore the checksum, so leave it zero.
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    f
}

/// A TCP/UDP/SCTP header (the ports lead all three) plus 32 bytes of payload, so every
/// frame built from it is at least the 60-byte Ethernet minimum.
fn l4(proto: u8, dst_port: u16) -> Vec<u8> {
    let header_len = match proto {
        FrontendKey::TCP => 20,
        FrontendKey::SCTP => 12,
        _ => 8,
    };
    let mut h = vec![0xa5; header_len + 32];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    if proto == FrontendKey::UDP {
        let len = u16::try_from(h.len()).unwrap();
        h[4..6].copy_from_slice(&len.to_be_bytes());
    }
    if proto == FrontendKey::TCP {
        h[12] = 5 << 4; // data offset
    }
    h
}

fn vxlan_to(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    ipv4(OTHER_IP, dst, FrontendKey::UDP, &l4(FrontendKey::UDP, port))
}

fn frontend(dst: Ipv4Addr, port: u16, proto: u8) -> Vec<u8> {
    ipv4(CLIENT_IP, dst, proto, &l4(proto, port))
}

#[test]
fn uplink_vxlan_to_this_node_takes_redirect_path() {
    let Some(ebpf) = loaded() else { return };
    let frame = vxlan_to(NODE_IP, VXLAN_PORT);
    assert_eq!(
        run(&ebpf, UPLINK_PROGRAM, &frame),
        (XDP_PASS, Reason::UplinkVxlan)
    );
}

#[test]
fn uplink_vxlan_to_other_port_or_address_passes() {
    let Some(ebpf) = loaded() else { return };
    for frame in [vxlan_to(NODE_IP, 8472), vxlan_to(OTHER_IP, VXLAN_PORT)] {
        assert_eq!(
            run(&ebpf, UPLINK_PROGRAM, &frame),
            (XDP_PASS, Reason::UplinkPass)
        );
    }
}

#[test]
fn uplink_frontend_hit_takes_redirect_path_for_tcp_udp_sctp() {
    let Some(ebpf) = loaded() else { return };
    for proto in [FrontendKey::TCP, FrontendKey::UDP, FrontendKey::SCTP] {
        let frame = frontend(LB_IP, NODE_PORT, proto);
        assert_eq!(
            run(&ebpf, UPLINK_PROGRAM, &frame),
            (XDP_PASS, Reason::UplinkFrontend),
            "proto {proto}"
        );
    }
}

#[test]
fn uplink_frontend_miss_passes() {
    let Some(ebpf) = loaded() else { return };
    let misses = [
        frontend(LB_IP, NODE_PORT + 1, FrontendKey::TCP),
        frontend(OTHER_IP, NODE_PORT, FrontendKey::TCP),
        // ssh to the node itself
        frontend(NODE_IP, 22, FrontendKey::TCP),
        // ICMP to a frontend address: not TCP/UDP/SCTP
        ipv4(CLIENT_IP, LB_IP, 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
    ];
    for frame in misses {
        assert_eq!(
            run(&ebpf, UPLINK_PROGRAM, &frame),
            (XDP_PASS, Reason::UplinkPass)
        );
    }
}

#[test]
fn uplink_fragment_to_frontend_passes() {
    let Some(ebpf) = loaded() else { return };
    let mut frame = frontend(LB_IP, NODE_PORT, FrontendKey::UDP);
    frame[20] = 0x20; // MF, offset 0: first fragment
    assert_eq!(
        run(&ebpf, UPLINK_PROGRAM, &frame),
        (XDP_PASS, Reason::UplinkPass)
    );
}

#[test]
fn uplink_arp_passes() {
    let Some(ebpf) = loaded() else { return };
    let mut frame = ethernet([0x08, 0x06]);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    frame.extend_from_slice(&OTHER_IP.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&NODE_IP.octets());
    frame.resize(60, 0);
    assert_eq!(
        run(&ebpf, UPLINK_PROGRAM, &frame),
        (XDP_PASS, Reason::UplinkPass)
    );
}

#[test]
fn uplink_ipv6_passes() {
    let Some(ebpf) = loaded() else { return };
    let mut frame = ethernet([0x86, 0xdd]);
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    frame.extend_from_slice(&[0xfd; 32]);
    frame.extend_from_slice(&l4(FrontendKey::UDP, VXLAN_PORT)[..8]);
    assert_eq!(
        run(&ebpf, UPLINK_PROGRAM, &frame),
        (XDP_PASS, Reason::UplinkPass)
    );
}

/// Every prefix of a packet the uplink redirects must be passed instead: a short frame
/// never reaches the workers. Below an Ethernet header the kernel refuses the test run
/// itself (EINVAL), so the program cannot be reached with those lengths.
#[test]
fn uplink_truncated_frames_pass() {
    let Some(ebpf) = loaded() else { return };
    let packets = [
        vxlan_to(NODE_IP, VXLAN_PORT),
        frontend(LB_IP, NODE_PORT, FrontendKey::TCP),
        frontend(LB_IP, NODE_PORT, FrontendKey::SCTP),
    ];
    for packet in packets {
        assert!(packet.len() >= 60);
        for len in 0..packet.len() {
            let frame = &packet[..len];
            if len < 14 {
                let opts = TestRunOptions {
                    data_in: Some(frame),
                    ..TestRunOptions::default()
                };
                let prog = program(&ebpf, UPLINK_PROGRAM).unwrap();
                assert!(prog.test_run(opts).is_err(), "len {len} accepted");
                continue;
            }
            assert_eq!(
                run(&ebpf, UPLINK_PROGRAM, frame),
                (XDP_PASS, Reason::UplinkPass),
                "len {len}"
            );
        }
    }
}

#[test]
fn pod_to_node_address_passes() {
    let Some(ebpf) = loaded() else { return };
    let frame = frontend(NODE_IP, 10250, FrontendKey::TCP);
    assert_eq!(
        run(&ebpf, POD_PROGRAM, &frame),
        (XDP_PASS, Reason::PodToNode)
    );
}

#[test]
fn pod_to_anything_else_takes_redirect_path() {
    let Some(ebpf) = loaded() else { return };
    let mut arp = ethernet([0x08, 0x06]);
    arp.resize(60, 0);
    let others = [
        frontend(OTHER_IP, 80, FrontendKey::TCP),
        frontend(LB_IP, NODE_PORT, FrontendKey::UDP),
        arp,
        // truncated IPv4 to the node: not a valid header, so the workers judge it
        frontend(NODE_IP, 10250, FrontendKey::TCP)[..30].to_vec(),
    ];
    for frame in others {
        assert_eq!(
            run(&ebpf, POD_PROGRAM, &frame),
            (XDP_PASS, Reason::PodRedirect)
        );
    }
}
