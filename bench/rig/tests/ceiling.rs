//! The AF_XDP ceiling forwarder (`rig::ceiling`, path a of the rig) on real veths in a network
//! namespace of our own (`kc-<pid>-<n>-rig`, deleted on drop even when a test fails, which
//! takes the veths and their XDP programs with it):
//!
//! ```text
//! FanOutGenerator -> kc-gen ==veth== kc-in -> [xdp_host -> AF_XDP -> MAC swap]
//!                                              -> AF_XDP tx kc-out ==veth== kc-sink -> Sink
//! ```
//!
//! Needs root; skipped with a message otherwise, except under `CI=true`. The tests run one
//! at a time (the measurement wants the machine to itself).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rig::ceiling::{CeilingError, CeilingForwarder, EGRESS_PORT, INGRESS_PORT};
use rig::traffic::{
    GenMode, GenReport, GenRequest, Generator, PacketSpec, Protocol, RunLimit, Sink, SinkAction,
    SinkCounts, choose,
};
use testkit::netns::Netns;
use testkit::root::root_test;
use testkit::wait::eventually;
use testkit::xdp::{ifindex, interface};
use xdp_redirect::{AttachMode, WorkerStats};

const GEN_IF: &str = "kc-gen";
const INGRESS_IF: &str = "kc-in";
const EGRESS_IF: &str = "kc-out";
const SINK_IF: &str = "kc-sink";

/// A network namespace `kc-<pid>-<n>-rig` with the two veth pairs of the rig (one queue
/// each: the forwarder serves queue 0); IPv6 is off so the kernel sends nothing of its own
/// on them.
fn rig() -> Netns {
    let rig = Netns::with_prefix("kc", "rig");
    rig.veth_pair(GEN_IF, INGRESS_IF, 1);
    rig.veth_pair(EGRESS_IF, SINK_IF, 1);
    rig
}

fn spec(size: u16, flows: u32) -> PacketSpec {
    PacketSpec {
        size,
        protocol: Protocol::Udp,
        flows,
        src_ip: Ipv4Addr::new(10, 77, 1, 1),
        ..PacketSpec::default()
    }
}

/// Sends from `kc-gen`, pinned to `cpu` if given (call inside the namespace). With the
/// fan-out generator on every kernel: the one the kernels that refuse live frames run, so
/// that a machine that allows them tests the same path (live frames have their own tests in
/// pktgen.rs).
fn generate(spec: &PacketSpec, limit: RunLimit, cpu: Option<usize>) -> GenReport {
    if let Some(cpu) = cpu {
        assert!(
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
            "pin the generator to CPU {cpu}"
        );
    }
    let choice = choose(GenRequest::Exactly(GenMode::FanOut)).expect("generator choice");
    let mut generator =
        Generator::new(choice.mode, &interface(GEN_IF), 0, spec).expect("generator");
    generator.run(&limit).expect("generate")
}

/// Starts the forwarder from `kc-in` to `kc-out`, its worker pinned to `worker_cpu` if
/// given (call inside the namespace).
fn start_forwarder(worker_cpu: Option<usize>) -> CeilingForwarder {
    CeilingForwarder::start(&interface(INGRESS_IF), &interface(EGRESS_IF), worker_cpu)
        .expect("start the ceiling forwarder")
}

/// What the kernel dropped before our rx ring: it was full, or the fill ring was empty.
fn ring_drops(s: &WorkerStats) -> u64 {
    s.xdp.rx_ring_full + s.xdp.rx_dropped
}

/// Every frame read went out or was counted as dropped, and the ledger balances.
fn assert_accounted(s: &WorkerStats) {
    assert_eq!(
        s.rx_packets,
        s.forwarded + s.dropped,
        "rx == forwarded + dropped: {s:#?}"
    );
    assert_eq!(s.passed, 0, "the MAC swap never passes: {s:#?}");
    assert_eq!(
        s.forwarded,
        s.tx_packets + s.io.total(),
        "every forward queued or counted: {s:#?}"
    );
    assert!(s.frames.balanced(), "frame ledger: {:?}", s.frames);
}

/// A raw packet socket on `ifname` (ETH_P_ALL) with a receive timeout: sees every frame
/// the interface receives, before the stack drops it as not ours.
fn capture(ifname: &str) -> OwnedFd {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set next.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = ifindex(ifname) as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    testkit::sock::setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
        .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
    fd
}

/// The next frame on a [`capture`] socket, or `None` after its timeout.
fn next_frame(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn the_same_interface_twice_is_refused() {
    let lo = interface("lo");
    match CeilingForwarder::start(&lo, &lo, None) {
        Err(CeilingError::SameInterface(_)) => {}
        other => panic!("expected SameInterface, got {other:?}"),
    }
}

/// Frames from the generator come out of the egress veth with source and destination MAC
/// swapped and nothing else changed; a bounded run is accounted for exactly (sent = read
/// by the worker + dropped by the kernel at our rx ring; the sink counts exactly what the
/// worker forwarded); stopping detaches the program.
#[test]
fn forwards_every_frame_mac_swapped_and_detaches() {
    let Some(_serial) = root_test("AF_XDP ceiling forwarder") else {
        return;
    };
    let rig = rig();
    let (forwarder, attached_link) = rig.within(|| {
        let fwd = start_forwarder(None);
        (fwd, rig.link_details(INGRESS_IF))
    });
    assert_eq!(forwarder.attach_mode(), Some(AttachMode::Driver));
    assert!(
        attached_link.contains("prog/xdp"),
        "xdp_host on {INGRESS_IF}:\n{attached_link}"
    );
    assert!(
        !rig.link_details(EGRESS_IF).contains("prog/xdp"),
        "copy-mode TX needs no program on {EGRESS_IF}"
    );

    // 1. The bytes: capture what reaches kc-sink (no XDP there yet, so the stack sees it).
    let few = spec(128, 8);
    let sent_frame = few.frame();
    const FEW: u64 = 32;
    let captured = rig.within(|| {
        let cap = capture(SINK_IF);
        let report = generate(
            &few,
            RunLimit {
                count: Some(FEW),
                ..RunLimit::default()
            },
            None,
        );
        assert_eq!(report.packets, FEW);
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while (frames.len() as u64) < FEW && Instant::now() < deadline {
            if let Some(f) = next_frame(&cap) {
                frames.push(f);
            }
        }
        frames
    });
    let s = forwarder.stats();
    assert_eq!(
        captured.len() as u64,
        FEW,
        "frames at {SINK_IF}; worker: {s:#?}"
    );
    for f in &captured {
        assert_eq!(f.len(), sent_frame.len(), "length unchanged");
        assert_eq!(f[0..6], few.src_mac, "destination = the sender's source");
        assert_eq!(f[6..12], few.dst_mac, "source = the sender's destination");
        // The flows differ only in the source port (and so the UDP checksum): the rest is
        // flow 0's frame byte for byte.
        assert_eq!(f[12..34], sent_frame[12..34], "EtherType and IPv4 header");
        assert_eq!(
            f[36..40],
            sent_frame[36..40],
            "destination port, UDP length"
        );
        assert_eq!(f[42..], sent_frame[42..], "payload");
    }
    assert_eq!(s.port(INGRESS_PORT).map(|p| p.rx_packets), Some(FEW));
    assert_eq!(s.port(EGRESS_PORT).map(|p| p.tx_packets), Some(FEW));

    // 2. The count: a bounded, paced run into a dropping sink.
    let sink = rig
        .within(|| Sink::attach(&interface(SINK_IF), SinkAction::Drop, false))
        .expect("attach the sink");
    let before = forwarder.stats();
    const N: u64 = 20_000;
    let report = rig.within(|| {
        generate(
            &spec(64, 64),
            RunLimit {
                count: Some(N),
                rate_pps: Some(20_000),
                ..RunLimit::default()
            },
            None,
        )
    });
    assert_eq!(report.packets, N, "the generator sent the count");
    let mut counts = SinkCounts::default();
    let mut now = before.clone();
    let settled = eventually(Duration::from_secs(10), || {
        now = forwarder.stats();
        counts = sink.counts().expect("sink counts");
        let seen = (now.rx_packets - before.rx_packets) + (ring_drops(&now) - ring_drops(&before));
        seen == N && counts.packets == now.tx_packets - before.tx_packets
    });
    let diag = || {
        format!(
            "sent {N}, worker before {before:#?}\nafter {now:#?}\nsink {counts:?}\n{}\n{}",
            rig.link_details(INGRESS_IF),
            rig.link_details(SINK_IF)
        )
    };
    assert!(settled, "the run did not add up: {}", diag());
    let rx = now.rx_packets - before.rx_packets;
    let forwarded = now.forwarded - before.forwarded;
    let dropped_at_ring = ring_drops(&now) - ring_drops(&before);
    eprintln!(
        "ceiling: sent {N}, worker read {rx}, dropped at our rx ring {dropped_at_ring}, forwarded {forwarded}, sink {}",
        counts.packets
    );
    assert_eq!(rx + dropped_at_ring, N, "{}", diag());
    assert_eq!(forwarded, rx, "every frame read was forwarded: {}", diag());
    assert_eq!(now.io.total(), 0, "no tx ring overflow: {}", diag());
    assert_eq!(counts.packets, forwarded, "the sink got every forward");
    assert_eq!(counts.udp, forwarded, "and they still parse as UDP");
    assert!(forwarded > 0, "something went through: {}", diag());
    assert_eq!(now.dropped, 0, "no frame from egress, none malformed");

    // Stopped inside the namespace: the program is detached where it was attached.
    let last = rig.within(|| forwarder.stop()).expect("stop");
    assert_accounted(&last);
    assert_eq!(last.forwarded, FEW + forwarded);
    let link = rig.link_details(INGRESS_IF);
    assert!(!link.contains("prog/xdp"), "detached on stop:\n{link}");
    drop(sink);
}

/// Dropping the forwarder (as a failing test would) detaches its program too.
#[test]
fn dropping_the_forwarder_detaches() {
    let Some(_serial) = root_test("AF_XDP ceiling forwarder drop") else {
        return;
    };
    let rig = rig();
    let attached = rig.within(|| {
        let fwd = start_forwarder(None);
        let link = rig.link_details(INGRESS_IF);
        drop(fwd);
        link
    });
    assert!(attached.contains("prog/xdp"), "attached:\n{attached}");
    let link = rig.link_details(INGRESS_IF);
    assert!(!link.contains("prog/xdp"), "detached on drop:\n{link}");
}

/// Not a check: the ceiling on this machine. The kernel generator (unpaced, 2 s, 1024 UDP
/// flows) on CPU 0, the worker pinned to CPU 1, at 64, 512 and 1500 B. Run with
/// `cargo test --release -p rig --test ceiling -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run by hand in a release build"]
fn measure_mpps() {
    let Some(_serial) = root_test("ceiling measurement") else {
        return;
    };
    for size in [64u16, 512, 1500] {
        let rig = rig();
        let (report, stats, counts, egress_budget) = rig.within(|| {
            let fwd = start_forwarder(Some(1));
            let sink = Sink::attach(&interface(SINK_IF), SinkAction::Drop, false)
                .expect("attach the sink");
            let report = generate(
                &spec(size, 1024),
                RunLimit {
                    duration: Some(Duration::from_secs(2)),
                    ..RunLimit::default()
                },
                Some(0),
            );
            // Let the rings drain: done when the worker has read or seen dropped every
            // frame and the sink stops moving.
            let mut last = u64::MAX;
            eventually(Duration::from_secs(5), || {
                let s = fwd.stats();
                let c = sink.counts().map(|c| c.packets).unwrap_or(0);
                let settled = s.rx_packets + ring_drops(&s) >= report.packets && c == last;
                last = c;
                settled
            });
            let counts = sink.counts().expect("sink counts");
            let egress_budget = fwd.stats().port(EGRESS_PORT).and_then(|p| p.tx_budget);
            let stats = fwd.stop().expect("stop");
            (report, stats, counts, egress_budget)
        });
        let secs = report.elapsed.as_secs_f64();
        let mpps = |n: u64| n as f64 / secs / 1e6;
        eprintln!(
            "ceiling {size:>4} B: offered {:.3} Mpps, worker read {:.3} Mpps (rx ring drops {:.3} Mpps), \
             forwarded {:.3} Mpps, sink {:.3} Mpps ({:.2} Gbit/s); worker: busy {:.0}% of its life \
             (setup and drain included), {:.1} frames per batch, {} sleeps, tx ring full {}, TX budget {:?}",
            report.pps() / 1e6,
            mpps(stats.rx_packets),
            mpps(ring_drops(&stats)),
            mpps(stats.forwarded),
            mpps(counts.packets),
            counts.bytes as f64 * 8.0 / secs / 1e9,
            stats.busy_ratio() * 100.0,
            stats.rx_packets as f64 / stats.batches.max(1) as f64,
            stats.sleeps,
            stats.io.tx_ring_full,
            egress_budget,
        );
    }
}
