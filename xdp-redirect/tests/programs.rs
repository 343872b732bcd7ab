//! Runs the loaded (not attached) XDP programs on hand-built frames with
//! `BPF_PROG_TEST_RUN`, covering every branch of the three programs and the port-slot
//! lookup.
//!
//! Each test gets its own network namespace `kxld-<pid>-<n>` with a veth pair of
//! [`QUEUES`] queues, because the test run's context (ingress ifindex, rx queue) must name
//! a real device and queue of the caller's namespace. `kxld-a` has the base slot [`BASE`]
//! unless a test says otherwise.
//!
//! Mostly no socket is bound in `xsks`, so `bpf_redirect_map(.., XDP_PASS)` takes its
//! fallback and the program returns XDP_PASS on the redirect path too. The `reasons`
//! counters tell the paths apart: every run must bump exactly one of them. Where the slot
//! arithmetic matters, a real AF_XDP socket sits in the map and the redirect path returns
//! XDP_REDIRECT instead.
//!
//! Needs root (CAP_BPF, namespaces); skipped with a message otherwise, except under
//! `CI=true`, where it fails instead.

mod support;

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use aya::Ebpf;
use aya::programs::{TestRun, TestRunOptions};
use support::root_or_skip;
use xdp_redirect::{
    FrontendKey, HOST_PROGRAM, Interface, POD_PROGRAM, PortRange, Reason, UPLINK_PROGRAM, VxlanCfg,
    XSKS_ENTRIES, XdpError, add_frontend, add_node_addr, load, port_slots, program, reason_count,
    remove_port_slots, remove_xsk, set_port_slots, set_vxlan, set_xsk, xsk_map,
};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const VXLAN_PORT: u16 = 4789;
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const NODE_PORT: u16 = 30080;

/// rx/tx queues of each test veth end.
const QUEUES: u32 = 4;
/// Base slot of `kxld-a`, the port every run arrives on unless a test says otherwise.
const BASE: u32 = 8;

/// The loaded programs with this node's maps filled, inside a namespace with a veth pair.
struct Bench {
    ebpf: Ebpf,
    /// `kxld-a`, which has [`BASE`].
    port: u32,
    /// `kxld-b`, which has no slots.
    other_port: u32,
}

/// Runs `test` with a [`Bench`] in a fresh namespace, or skips it without root.
fn with_bench(test: impl FnOnce(&mut Bench) + Send) {
    if !root_or_skip("BPF_PROG_TEST_RUN") {
        return;
    }
    let netns = support::netns();
    netns.veth_pair("kxld-a", "kxld-b", QUEUES);
    netns.within(|| {
        let mut ebpf = load().expect("load XDP programs");
        set_vxlan(&mut ebpf, VxlanCfg::new(NODE_IP, VXLAN_PORT)).unwrap();
        add_node_addr(&mut ebpf, NODE_IP).unwrap();
        for proto in [FrontendKey::TCP, FrontendKey::UDP, FrontendKey::SCTP] {
            add_frontend(&mut ebpf, FrontendKey::new(LB_IP, NODE_PORT, proto)).unwrap();
            // The same NodePort on the node's own address, for pods reaching it.
            add_frontend(&mut ebpf, FrontendKey::new(NODE_IP, NODE_PORT, proto)).unwrap();
        }
        let port = Interface::by_name("kxld-a").unwrap().index();
        let other_port = Interface::by_name("kxld-b").unwrap().index();
        let range = PortRange {
            base: BASE,
            queues: QUEUES,
        };
        set_port_slots(&mut ebpf, port, range).unwrap();
        test(&mut Bench {
            ebpf,
            port,
            other_port,
        });
    });
}

impl Bench {
    fn counts(&self) -> Vec<u64> {
        Reason::ALL
            .iter()
            .map(|&r| reason_count(&self.ebpf, r).unwrap())
            .collect()
    }

    /// Runs `prog` once on `frame` arriving on `kxld-a` queue 0.
    fn run(&self, prog: &'static str, frame: &[u8]) -> (u32, Reason) {
        self.run_at(prog, frame, self.port, 0)
    }

    /// Runs `prog` once on `frame` arriving on `ifindex`, rx queue `queue`; returns its
    /// action and the one reason it counted.
    fn run_at(&self, prog: &'static str, frame: &[u8], ifindex: u32, queue: u32) -> (u32, Reason) {
        let before = self.counts();
        let ctx = xdp_md(frame.len(), ifindex, queue);
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        };
        let result = program(&self.ebpf, prog).unwrap().test_run(opts).unwrap();
        let after = self.counts();
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
}

/// The input `struct xdp_md` of a test run: data at offset 0 (no metadata), data_end the
/// frame length (the kernel insists on both), and where the frame arrived.
fn xdp_md(len: usize, ifindex: u32, queue: u32) -> Vec<u8> {
    let len = u32::try_from(len).unwrap();
    [0, len, 0, ifindex, queue, 0]
        .iter()
        .flat_map(|f: &u32| f.to_ne_bytes())
        .collect()
}

/// An AF_XDP socket, enough for the XSKMAP to hold (it is never bound, so nothing ever
/// reaches it: test runs do not perform the redirect, they only return XDP_REDIRECT).
fn xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2); the fd is checked, then owned.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "AF_XDP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
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

/// IPv6 + UDP to the VXLAN port.
fn ipv6() -> Vec<u8> {
    let mut frame = ethernet([0x86, 0xdd]);
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    frame.extend_from_slice(&[0xfd; 32]);
    frame.extend_from_slice(&l4(FrontendKey::UDP, VXLAN_PORT)[..8]);
    frame
}

#[test]
fn uplink_vxlan_to_this_node_takes_redirect_path() {
    with_bench(|t| {
        let frame = vxlan_to(NODE_IP, VXLAN_PORT);
        assert_eq!(
            t.run(UPLINK_PROGRAM, &frame),
            (XDP_PASS, Reason::UplinkVxlan)
        );
    });
}

#[test]
fn uplink_vxlan_to_other_port_or_address_passes() {
    with_bench(|t| {
        for frame in [vxlan_to(NODE_IP, 8472), vxlan_to(OTHER_IP, VXLAN_PORT)] {
            assert_eq!(
                t.run(UPLINK_PROGRAM, &frame),
                (XDP_PASS, Reason::UplinkPass)
            );
        }
    });
}

#[test]
fn uplink_frontend_hit_takes_redirect_path_for_tcp_udp_sctp() {
    with_bench(|t| {
        for proto in [FrontendKey::TCP, FrontendKey::UDP, FrontendKey::SCTP] {
            let frame = frontend(LB_IP, NODE_PORT, proto);
            assert_eq!(
                t.run(UPLINK_PROGRAM, &frame),
                (XDP_PASS, Reason::UplinkFrontend),
                "proto {proto}"
            );
        }
    });
}

#[test]
fn uplink_frontend_miss_passes() {
    with_bench(|t| {
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
                t.run(UPLINK_PROGRAM, &frame),
                (XDP_PASS, Reason::UplinkPass)
            );
        }
    });
}

#[test]
fn uplink_fragment_to_frontend_passes() {
    with_bench(|t| {
        let mut frame = frontend(LB_IP, NODE_PORT, FrontendKey::UDP);
        frame[20] = 0x20; // MF, offset 0: first fragment
        assert_eq!(
            t.run(UPLINK_PROGRAM, &frame),
            (XDP_PASS, Reason::UplinkPass)
        );
    });
}

#[test]
fn uplink_arp_passes() {
    with_bench(|t| {
        let mut frame = ethernet([0x08, 0x06]);
        frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        frame.extend_from_slice(&OTHER_IP.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&NODE_IP.octets());
        frame.resize(60, 0);
        assert_eq!(
            t.run(UPLINK_PROGRAM, &frame),
            (XDP_PASS, Reason::UplinkPass)
        );
    });
}

#[test]
fn uplink_ipv6_passes() {
    with_bench(|t| {
        assert_eq!(
            t.run(UPLINK_PROGRAM, &ipv6()),
            (XDP_PASS, Reason::UplinkPass)
        );
    });
}

/// Every prefix of a packet the uplink redirects must be passed instead: a short frame
/// never reaches the workers. Below an Ethernet header the kernel refuses the test run
/// itself (EINVAL), so the program cannot be reached with those lengths.
#[test]
fn uplink_truncated_frames_pass() {
    with_bench(|t| {
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
                    let ctx = xdp_md(len, t.port, 0);
                    let opts = TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(&ctx),
                        ..TestRunOptions::default()
                    };
                    let prog = program(&t.ebpf, UPLINK_PROGRAM).unwrap();
                    assert!(prog.test_run(opts).is_err(), "len {len} accepted");
                    continue;
                }
                assert_eq!(
                    t.run(UPLINK_PROGRAM, frame),
                    (XDP_PASS, Reason::UplinkPass),
                    "len {len}"
                );
            }
        }
    });
}

#[test]
fn pod_to_node_address_passes() {
    with_bench(|t| {
        let mut later_fragment = frontend(NODE_IP, NODE_PORT, FrontendKey::UDP);
        later_fragment[21] = 0x10; // offset 16 units: no ports in this one
        let mut short_tcp = frontend(NODE_IP, NODE_PORT, FrontendKey::TCP);
        // A valid IPv4 header whose datagram ends 8 bytes into the TCP header: the ports
        // are there, but not a whole TCP header, so it is no NodePort packet.
        short_tcp[16..18].copy_from_slice(&28u16.to_be_bytes());
        let to_node = [
            frontend(NODE_IP, 10250, FrontendKey::TCP),
            // a node port number, but no frontend for this protocol
            ipv4(CLIENT_IP, NODE_IP, 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
            frontend(NODE_IP, NODE_PORT + 1, FrontendKey::UDP),
            later_fragment,
            short_tcp,
        ];
        for frame in to_node {
            assert_eq!(t.run(POD_PROGRAM, &frame), (XDP_PASS, Reason::PodToNode));
        }
    });
}

#[test]
fn pod_to_own_node_port_takes_redirect_path() {
    with_bench(|t| {
        for proto in [FrontendKey::TCP, FrontendKey::UDP, FrontendKey::SCTP] {
            let frame = frontend(NODE_IP, NODE_PORT, proto);
            assert_eq!(
                t.run(POD_PROGRAM, &frame),
                (XDP_PASS, Reason::PodNodePort),
                "proto {proto}"
            );
        }
        // A first fragment carries the ports, so it is judged like a whole datagram.
        let mut first_fragment = frontend(NODE_IP, NODE_PORT, FrontendKey::UDP);
        first_fragment[20] = 0x20; // MF, offset 0
        assert_eq!(
            t.run(POD_PROGRAM, &first_fragment),
            (XDP_PASS, Reason::PodNodePort)
        );
    });
}

#[test]
fn pod_to_anything_else_takes_redirect_path() {
    with_bench(|t| {
        let mut arp = ethernet([0x08, 0x06]);
        arp.resize(60, 0);
        let others = [
            frontend(OTHER_IP, 80, FrontendKey::TCP),
            frontend(LB_IP, NODE_PORT, FrontendKey::UDP),
            arp,
            ipv6(),
            // truncated IPv4 to the node: not a valid header, so the workers judge it
            frontend(NODE_IP, 10250, FrontendKey::TCP)[..30].to_vec(),
        ];
        for frame in others {
            assert_eq!(t.run(POD_PROGRAM, &frame), (XDP_PASS, Reason::PodRedirect));
        }
    });
}

#[test]
fn host_redirects_everything() {
    with_bench(|t| {
        let mut arp = ethernet([0x08, 0x06]);
        arp.resize(60, 0);
        let frames = [
            frontend(OTHER_IP, 80, FrontendKey::TCP),
            frontend(NODE_IP, 22, FrontendKey::TCP),
            vxlan_to(NODE_IP, VXLAN_PORT),
            arp,
            ipv6(),
            ethernet([0xff, 0xff]),
        ];
        for frame in frames {
            assert_eq!(
                t.run(HOST_PROGRAM, &frame),
                (XDP_PASS, Reason::HostRedirect)
            );
        }
    });
}

/// One frame each program redirects, for the slot tests.
fn redirected_by_each_program() -> [(&'static str, Vec<u8>, Reason); 4] {
    [
        (
            UPLINK_PROGRAM,
            vxlan_to(NODE_IP, VXLAN_PORT),
            Reason::UplinkVxlan,
        ),
        (
            POD_PROGRAM,
            frontend(OTHER_IP, 80, FrontendKey::TCP),
            Reason::PodRedirect,
        ),
        (
            POD_PROGRAM,
            frontend(NODE_IP, NODE_PORT, FrontendKey::TCP),
            Reason::PodNodePort,
        ),
        (
            HOST_PROGRAM,
            frontend(OTHER_IP, 80, FrontendKey::UDP),
            Reason::HostRedirect,
        ),
    ]
}

#[test]
fn redirect_from_port_without_slot_passes_as_no_slot() {
    with_bench(|t| {
        for (prog, frame, _) in redirected_by_each_program() {
            assert_eq!(
                t.run_at(prog, &frame, t.other_port, 0),
                (XDP_PASS, Reason::NoSlot),
                "{prog} on the port without slots"
            );
        }
        // What a program passes anyway is still counted as its own reason.
        let ssh = frontend(NODE_IP, 22, FrontendKey::TCP);
        assert_eq!(
            t.run_at(UPLINK_PROGRAM, &ssh, t.other_port, 0),
            (XDP_PASS, Reason::UplinkPass)
        );
        assert_eq!(
            t.run_at(POD_PROGRAM, &ssh, t.other_port, 0),
            (XDP_PASS, Reason::PodToNode)
        );

        // Taking the slots away from a port that had them does the same.
        assert!(remove_port_slots(&mut t.ebpf, t.port).unwrap());
        assert!(!remove_port_slots(&mut t.ebpf, t.port).unwrap());
        for (prog, frame, _) in redirected_by_each_program() {
            assert_eq!(t.run(prog, &frame), (XDP_PASS, Reason::NoSlot), "{prog}");
        }
    });
}

#[test]
fn redirect_goes_to_slot_port_base_plus_rx_queue() {
    with_bench(|t| {
        let socket = xdp_socket();
        set_xsk(&mut t.ebpf, BASE + 2, socket.as_fd()).unwrap();
        // kxld-b's queue 1 lands on the same slot.
        let other = PortRange {
            base: BASE + 1,
            queues: QUEUES,
        };
        set_port_slots(&mut t.ebpf, t.other_port, other).unwrap();
        assert_eq!(port_slots(&t.ebpf, t.other_port).unwrap(), Some(other));

        for (prog, frame, reason) in redirected_by_each_program() {
            for queue in 0..QUEUES {
                let expected = if queue == 2 { XDP_REDIRECT } else { XDP_PASS };
                assert_eq!(
                    t.run_at(prog, &frame, t.port, queue),
                    (expected, reason),
                    "{prog} on kxld-a queue {queue}"
                );
                let expected = if queue == 1 { XDP_REDIRECT } else { XDP_PASS };
                assert_eq!(
                    t.run_at(prog, &frame, t.other_port, queue),
                    (expected, reason),
                    "{prog} on kxld-b queue {queue}"
                );
            }
        }

        // An emptied slot falls back to the kernel again...
        remove_xsk(&mut t.ebpf, BASE + 2).unwrap();
        let (prog, frame, reason) = &redirected_by_each_program()[1];
        assert_eq!(t.run_at(prog, frame, t.port, 2), (XDP_PASS, *reason));
        // ... and so does the slot of a socket that was closed.
        set_xsk(&mut t.ebpf, BASE + 2, socket.as_fd()).unwrap();
        assert_eq!(t.run_at(prog, frame, t.port, 2), (XDP_REDIRECT, *reason));
        drop(socket);
        // The kernel clears the slot when it releases the socket, which the last close may
        // leave to deferred work (seen in a chroot): wait for it, with a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while t.run_at(prog, frame, t.port, 2) != (XDP_PASS, *reason) {
            assert!(
                std::time::Instant::now() < deadline,
                "the closed socket's slot still redirects"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
}

/// A queue the agent does not serve yet (the NIC's channels grew) must reach the kernel,
/// not the next port's slot: that socket is bound to another device, and the kernel would
/// drop the packet.
#[test]
fn queues_beyond_the_port_range_pass_as_no_slot() {
    with_bench(|t| {
        let socket = xdp_socket();
        let served = 2;
        set_port_slots(
            &mut t.ebpf,
            t.port,
            PortRange {
                base: BASE,
                queues: served,
            },
        )
        .unwrap();
        // Slots past the range hold a socket (another port's, as the agent packs ranges).
        for slot in BASE..BASE + QUEUES {
            set_xsk(&mut t.ebpf, slot, socket.as_fd()).unwrap();
        }
        let frame = frontend(OTHER_IP, 80, FrontendKey::TCP);
        for queue in 0..QUEUES {
            let expected = if queue < served {
                (XDP_REDIRECT, Reason::HostRedirect)
            } else {
                (XDP_PASS, Reason::NoSlot)
            };
            assert_eq!(
                t.run_at(HOST_PROGRAM, &frame, t.port, queue),
                expected,
                "queue {queue}"
            );
        }
    });
}

#[test]
fn slot_numbers_are_checked_against_the_xskmap_size() {
    with_bench(|t| {
        let socket = xdp_socket();
        // A range must hold a slot and end inside the map.
        for (base, queues) in [(XSKS_ENTRIES, 1), (XSKS_ENTRIES - 1, 2), (0, 0)] {
            assert!(
                matches!(
                    set_port_slots(&mut t.ebpf, t.port, PortRange { base, queues }),
                    Err(XdpError::RangeOutOfBounds { .. })
                ),
                "{base}+{queues}"
            );
        }
        let last = PortRange {
            base: XSKS_ENTRIES - 1,
            queues: 1,
        };
        set_port_slots(&mut t.ebpf, t.port, last).unwrap();
        assert!(matches!(
            set_xsk(&mut t.ebpf, XSKS_ENTRIES, socket.as_fd()),
            Err(XdpError::SlotOutOfRange { slot: XSKS_ENTRIES })
        ));
        assert!(matches!(
            remove_xsk(&mut t.ebpf, XSKS_ENTRIES),
            Err(XdpError::SlotOutOfRange { slot: XSKS_ENTRIES })
        ));
        // XSKS_ENTRIES is the C map's size: its last slot takes a socket, the next one
        // (bypassing the check above) does not.
        set_xsk(&mut t.ebpf, XSKS_ENTRIES - 1, socket.as_fd()).unwrap();
        assert!(
            xsk_map(&mut t.ebpf)
                .unwrap()
                .set(XSKS_ENTRIES, socket.as_fd(), 0)
                .is_err()
        );
        // Emptying an empty slot is fine.
        remove_xsk(&mut t.ebpf, 0).unwrap();
        remove_xsk(&mut t.ebpf, 0).unwrap();
    });
}
