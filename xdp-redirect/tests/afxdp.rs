//! The AF_XDP workers on real veths in network namespaces (`kxsk-<pid>-*`), with the real
//! XDP programs, real sockets and `datapath::process` deciding every packet.
//!
//! Needs root; skipped with a message otherwise, except under `CI=true`. The tests run one
//! at a time (they measure rates and CPU time).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::Array;
use aya::programs::Xdp;
use common::*;
use datapath::DropReason;
use datapath::addr::MacAddr;
use datapath::tables::{HOST_MAC, proto};
use rig::traffic::{FanOut, GenMode, fanout};
use testkit::frames::Headers;
use xdp_redirect::{POD_PROGRAM, PortSpec, WorkerConfig, WorkerStats, spawn};

const POD_A: [u8; 4] = [10, 244, 1, 5];
const POD_B: [u8; 4] = [10, 244, 1, 6];
const POD_C: [u8; 4] = [10, 244, 1, 7];

/// Every frame a worker read went to exactly one verdict, every forward/pass was queued
/// for transmission or counted as an IO drop, and the ledger never saw a frame in the
/// wrong place.
fn assert_accounted(s: &WorkerStats) {
    assert_eq!(
        s.rx_packets,
        s.forwarded + s.passed + s.dropped,
        "rx == forwarded + passed + dropped: {s:#?}"
    );
    assert_eq!(
        s.forwarded + s.passed,
        s.tx_packets + s.io.total(),
        "every forward/pass queued or counted: {s:#?}"
    );
    assert!(s.frames.balanced(), "frame ledger: {:?}", s.frames);
    assert_eq!(
        s.low_headroom, 0,
        "rx data lands after 256 bytes of headroom"
    );
}

/// Frames attributed to open sockets, the free list and the worker add up to the UMEM:
/// nothing is left with a socket that closed.
fn assert_no_frames_on_closed_sockets(s: &WorkerStats) {
    let on_ports: u64 = s
        .ports
        .iter()
        .map(|p| u64::from(p.in_fill) + u64::from(p.in_tx))
        .sum();
    assert_eq!(
        on_ports + u64::from(s.frames.free) + u64::from(s.frames.in_worker),
        u64::from(s.frames.total),
        "frames: {:?}, ports: {:?}",
        s.frames,
        s.ports
    );
}

/// Lets a pod answer UDP datagrams on `port` with the same bytes.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl EchoServer {
    fn start(pod: &Pod, port: u16) -> EchoServer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let addr = SocketAddr::from((pod.ip, port));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = pod.ns.spawn(move || {
            let sock = UdpSocket::bind(addr).expect("echo bind");
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 2048];
            let mut echoed = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf)
                    && sock.send_to(&buf[..n], from).is_ok()
                {
                    echoed += 1;
                }
            }
            echoed
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("echo server up");
        EchoServer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("echo thread"))
            .unwrap_or(0)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends numbered datagrams from `pod` to `dst` one at a time, each waiting for its echo
/// (from `dst` itself: the socket is connected), until `n` round trips or `stop`. Returns
/// (sent, answered correctly).
fn round_trips(pod: &Pod, dst: SocketAddr, n: u64, stop: Option<Arc<AtomicBool>>) -> (u64, u64) {
    round_trips_with(pod, dst, n, stop, Duration::from_secs(1))
}

fn round_trips_with(
    pod: &Pod,
    dst: SocketAddr,
    n: u64,
    stop: Option<Arc<AtomicBool>>,
    reply_timeout: Duration,
) -> (u64, u64) {
    let src = SocketAddr::from((pod.ip, 0));
    pod.ns.within(move || {
        let sock = UdpSocket::bind(src).expect("client bind");
        sock.connect(dst).expect("connect");
        sock.set_read_timeout(Some(reply_timeout)).expect("timeout");
        let (mut sent, mut answered) = (0u64, 0u64);
        let mut buf = [0u8; 64];
        while sent < n && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            let msg = sent.to_be_bytes();
            sock.send(&msg).expect("send");
            sent += 1;
            // Skip late echoes of earlier datagrams; a timeout is a loss.
            while let Ok(len) = sock.recv(&mut buf) {
                if buf[..len] == msg {
                    answered += 1;
                    break;
                }
            }
        }
        (sent, answered)
    })
}

/// Adds `pod`'s port to `worker`, attaches xdp_pod to its host side with slots from
/// `base` and puts the socket at `base + queue`.
fn plug(
    progs: &mut Programs,
    worker: &xdp_redirect::WorkerHandle,
    pod: &Pod,
    base: u32,
    queue: u32,
    attach: bool,
) {
    let fd = worker
        .add_port(PortSpec {
            name: pod.port(),
            ifindex: ifindex(&pod.host_if),
            queue,
        })
        .expect("add_port");
    if attach {
        progs.attach(POD_PROGRAM, &pod.host_if, base, pod.queues);
    }
    progs.set_xsk(base + queue, fd);
}

#[test]
fn forwards_ping_and_udp_between_two_pods() {
    let Some(_serial) = root_test("AF_XDP forwarding") else {
        return;
    };
    let node = netns("fwd");
    let a = Pod::new(&node, "t", "a", POD_A, 1);
    let b = Pod::new(&node, "t", "b", POD_B, 1);
    let shared = shared_state(node_tables(1, &[(&a).into(), (&b).into()], &[]));
    let b_addr = SocketAddr::from((POD_B, 7777));

    let (before_swap, stats) = node.within(|| {
        let mut progs = Programs::load();
        let worker = spawn(WorkerConfig::new(0), shared.clone()).expect("spawn");
        plug(&mut progs, &worker, &a, 0, 0, true);
        plug(&mut progs, &worker, &b, 1, 0, true);

        let out = a.ns.exec(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", &ip_string(POD_B)],
        );
        assert!(out.contains("3 received"), "ping a -> b:\n{out}");

        let echo = EchoServer::start(&b, 7777);
        let (sent, answered) = round_trips(&a, b_addr, 200, None);
        assert_eq!((sent, answered), (200, 200), "UDP round trips a -> b -> a");
        let before_swap = worker.stats();

        // Generation 2 renumbers the ports (b before a): the idle worker picks it up
        // within its 100 ms wakeup and maps its sockets to the new ids by name.
        shared
            .tables
            .store(Arc::new(node_tables(2, &[(&b).into(), (&a).into()], &[])));
        wait_until("generation 2", Duration::from_secs(2), || {
            worker.published_stats().generation == 2
        });
        let renumbered = worker.stats();
        assert_eq!(renumbered.port(&a.port()).and_then(|p| p.port_id), Some(3));
        assert_eq!(renumbered.port(&b.port()).and_then(|p| p.port_id), Some(2));
        let (sent, answered) = round_trips(&a, b_addr, 50, None);
        assert_eq!(
            (sent, answered),
            (50, 50),
            "still forwarding after renumbering"
        );

        // Generation 3 no longer has b: a -> b has no route, b's own frames are from an
        // unknown port.
        shared
            .tables
            .store(Arc::new(node_tables(3, &[(&a).into()], &[])));
        wait_until("generation 3", Duration::from_secs(2), || {
            worker.published_stats().generation == 3
        });
        let (_, answered) = round_trips_with(&a, b_addr, 3, None, Duration::from_millis(200));
        assert_eq!(answered, 0, "b is gone from the tables");
        assert!(
            !b.ns
                .exec_ok("ping", &["-c", "1", "-W", "1", &ip_string(POD_A)]),
            "b has no datapath port any more"
        );
        echo.stop();
        (before_swap, worker.stop().expect("stop"))
    });

    eprintln!("forwarding: {stats:#?}");
    assert_accounted(&before_swap);
    // 3 pings + 200 datagrams each way, plus ARP.
    assert!(
        before_swap.forwarded >= 2 * 203,
        "{}",
        before_swap.forwarded
    );
    assert_eq!(before_swap.io.total(), 0);
    for (reason, n) in before_swap.drops.nonzero() {
        assert_eq!(
            reason,
            DropReason::BroadcastNotForwarded,
            "unexpected drops: {reason:?} x{n}"
        );
    }
    assert_accounted(&stats);
    assert!(
        stats.frames.all_free(),
        "all frames back: {:?}",
        stats.frames
    );
    assert!(stats.forwarded >= before_swap.forwarded + 2 * 50);
    assert!(
        stats.drops.get(DropReason::NoRoute) >= 3,
        "a -> b after b left"
    );
    assert!(
        stats.drops.get(DropReason::UnknownPort) >= 1,
        "b's own frames after it left the tables"
    );
    assert_eq!(stats.generation, 3);
    assert!(stats.lock_acquisitions > 0);
}

/// Frame templates for the generator: slot 0 forwards a -> b, slot 16 is passed (to the
/// gateway address), the other 30 are dropped for three different reasons.
fn generator_templates() -> Vec<[u8; 64]> {
    let gw_mac = MacAddr::for_ipv4(GATEWAY).0;
    let udp = |src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]| -> [u8; 64] {
        Headers::new(src_mac, gw_mac, src, dst)
            .udp(40000, 9, &[0x5a; 22])
            .try_into()
            .expect("64 bytes")
    };
    let a_mac = MacAddr::for_ipv4(POD_A).0;
    let forward = udp(a_mac, POD_A, POD_B);
    let pass = udp(a_mac, POD_A, GATEWAY);
    let spoofed = udp(a_mac, [10, 244, 1, 99], POD_B);
    let no_route = udp(a_mac, POD_A, [10, 244, 7, 7]);
    let mut bad_checksum = forward;
    bad_checksum[24] ^= 0xff; // IPv4 header checksum
    (0..32)
        .map(|slot| match slot {
            0 => forward,
            16 => pass,
            s if s % 3 == 0 => spoofed,
            s if s % 3 == 1 => no_route,
            _ => bad_checksum,
        })
        .collect()
}

/// The test generator (tests/bpf/kxsk_gen.bpf.c) on one interface: live frames where
/// the kernel allows them, else the fan-out (see `live_frames_or_fallback`).
struct TemplateGenerator {
    // Field order is drop order: the fan-out holds a duplicate of the object's program fd.
    fan: Option<FanOut>,
    ebpf: Ebpf,
    ifindex: u32,
}

/// Compiles and loads the test generator for `interface` (of the calling thread's
/// namespace), running as `mode`.
fn load_generator(mode: GenMode, interface: &str) -> TemplateGenerator {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bpf/kxsk_gen.bpf.c");
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let obj = format!(
        "{}/kxsk-gen-{}-{}.bpf.o",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    bpf_build::compile(src.as_ref(), obj.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    let mut ebpf = Ebpf::load_file(&obj).expect("load generator object");
    let _ = std::fs::remove_file(&obj);
    let program = match mode {
        GenMode::LiveFrames => "kxsk_gen",
        _ => "kxsk_gen_copy",
    };
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .expect("generator program")
        .try_into()
        .expect("xdp");
    prog.load().expect("load generator");
    let mut templates: Array<_, [u8; 64]> =
        Array::try_from(ebpf.map_mut("templates").expect("templates map")).expect("array");
    for (i, t) in generator_templates().into_iter().enumerate() {
        templates.set(i as u32, t, 0).expect("template");
    }
    let iface = xdp_redirect::Interface::by_name(interface).expect("generator interface");
    let fan = (mode != GenMode::LiveFrames).then(|| {
        let prog: &Xdp = ebpf
            .program(program)
            .expect("generator program")
            .try_into()
            .expect("xdp");
        FanOut::new(
            &iface,
            prog.fd().expect("program fd"),
            &[0u8; 64],
            fanout::DEFAULT_COPIES,
        )
        .expect("fan-out")
    });
    TemplateGenerator {
        fan,
        ebpf,
        ifindex: iface.index(),
    }
}

impl TemplateGenerator {
    /// Sends `count` packets, the templates in turn.
    fn generate(&mut self, count: u32) {
        match &mut self.fan {
            Some(fan) => fan.send(u64::from(count)).expect("fan-out"),
            None => {
                let prog: &Xdp = self
                    .ebpf
                    .program("kxsk_gen")
                    .expect("generator")
                    .try_into()
                    .expect("xdp");
                rig::traffic::run_live_frames(prog, self.ifindex, &[0u8; 64], count)
                    .expect("generator test run");
            }
        }
    }
}

/// The generator topology: pod a's port `kxsk-a` (the workers receive here, xdp_pod,
/// slots 0..queues) whose peer `kxsk-ag` the generator transmits from; pod b's port
/// `kxsk-b` (forwards go out here) with a peer that discards them; the host port
/// `kxsk-dp`, whose kernel side `kxsk-hk` gets the passes. All in one namespace.
fn generator_node(queues: u32) -> (Netns, xdp_redirect::SharedState) {
    let node = netns("gen");
    veth_pair(&node, "kxsk-a", "kxsk-ag", queues);
    veth_pair(&node, "kxsk-b", "kxsk-bp", queues);
    veth_pair(&node, "kxsk-dp", "kxsk-hk", queues);
    node.ip(&["link", "set", "kxsk-hk", "address", &mac_string(HOST_MAC)]);
    let pods = [
        TestPod {
            namespace: "t".into(),
            name: "a".into(),
            ip: POD_A,
        },
        TestPod {
            namespace: "t".into(),
            name: "b".into(),
            ip: POD_B,
        },
    ];
    (node, shared_state(node_tables(1, &pods, &[])))
}

/// Opens the generator topology's ports on `worker` (on `queue` of `queues`), host first
/// (it anchors the UMEM, as in the agent), and puts its pod-a socket into the XSKMAP.
fn open_generator_ports(
    progs: &mut Programs,
    worker: &xdp_redirect::WorkerHandle,
    queue: u32,
    queues: u32,
) {
    for (name, ifname) in [
        ("host", "kxsk-dp"),
        ("pod-t-b", "kxsk-b"),
        ("pod-t-a", "kxsk-a"),
    ] {
        let fd = worker
            .add_port(PortSpec {
                name: name.into(),
                ifindex: ifindex(ifname),
                queue,
            })
            .expect("add_port");
        if name == "pod-t-a" {
            if queue == 0 {
                progs.attach(POD_PROGRAM, ifname, 0, queues);
            }
            progs.set_xsk(queue, fd);
        }
    }
}

fn pin_current_thread(cpu: usize) {
    assert!(
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
        "pin to cpu {cpu}"
    );
}

#[test]
fn ten_million_packets_and_every_frame_comes_back() {
    let Some(_serial) = root_test("AF_XDP frame accounting") else {
        return;
    };
    const TARGET: u64 = 10_000_000;
    const CHUNK: u32 = 1 << 18;
    let (node, shared) = generator_node(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let (stats, mid, elapsed, generated) = node.within(|| {
        // Generator (and the veth NAPI it drives) on CPU 0, the worker on CPU 1.
        if cpus > 1 {
            pin_current_thread(0);
        }
        let mut generator = load_generator(
            live_frames_or_fallback("AF_XDP frame accounting"),
            "kxsk-ag",
        );
        let mut progs = Programs::load();
        let mut cfg = WorkerConfig::new(0);
        cfg.cpu = (cpus > 1).then_some(1);
        let worker = spawn(cfg, shared.clone()).expect("spawn");
        open_generator_ports(&mut progs, &worker, 0, 1);
        let start = Instant::now();
        let mut generated = 0u64;
        loop {
            generator.generate(CHUNK);
            generated += u64::from(CHUNK);
            let now = worker.stats();
            if now.rx_packets >= TARGET {
                break;
            }
            assert!(
                // ~25 s in a debug build on this 2-vCPU VM, ~5 s in release; the rest is
                // margin for other load on the machine.
                start.elapsed() < Duration::from_secs(120),
                "only {} of {TARGET} received after {generated} generated",
                worker.stats().rx_packets
            );
        }
        let elapsed = start.elapsed();
        // Run time and time spent runnable but waiting for the CPU (other load on the
        // machine): explains slow runs.
        let sched = std::fs::read_to_string(format!(
            "/proc/self/task/{}/schedstat",
            worker.published_stats().tid
        ))
        .unwrap_or_default();
        eprintln!("worker schedstat (run ns, runqueue wait ns, slices): {sched}");
        // Traffic stopped: wait until nothing is in flight, then check the ledger live.
        wait_until("the worker to drain", Duration::from_secs(10), || {
            let s = worker.stats();
            s.frames.in_worker == 0 && s.frames.in_tx == 0 && s.frames.in_rx == 0
        });
        let mid = worker.stats();
        progs.remove_xsk(0);
        (worker.stop().expect("stop"), mid, elapsed, generated)
    });

    let secs = elapsed.as_secs_f64();
    eprintln!("accounting (drained, live): {mid:#?}");
    eprintln!(
        "10M test: {} frames received by the worker in {secs:.2} s = {:.2} Mpps \
         ({generated} generated = {:.2} Mpps offered); forwarded {} passed {} dropped {}; \
         kernel: rx_ring_full {} fill_ring_empty {} rx_dropped {}; tx budget {:?}; \
         busy {:.0}%; polls {} (empty {}), sleeps {}; lock wait mean {} ns max {} ns over {} batches",
        stats.rx_packets,
        stats.rx_packets as f64 / secs / 1e6,
        generated as f64 / secs / 1e6,
        stats.forwarded,
        stats.passed,
        stats.dropped,
        mid.xdp.rx_ring_full,
        mid.xdp.fill_ring_empty,
        mid.xdp.rx_dropped,
        mid.ports.iter().map(|p| p.tx_budget).collect::<Vec<_>>(),
        mid.busy_ratio() * 100.0,
        stats.polls,
        stats.empty_polls,
        stats.sleeps,
        stats.mean_lock_wait_ns(),
        stats.lock_wait_max_ns,
        stats.batches,
    );
    assert!(stats.rx_packets >= TARGET);
    assert_accounted(&mid);
    assert_no_frames_on_closed_sockets(&mid);
    assert_accounted(&stats);
    assert!(
        stats.frames.all_free(),
        "every frame back after stop: {:?}",
        stats.frames
    );
    // The mix the templates make (1 forward, 1 pass, 10 of each drop per 32), within 20%.
    let expect = |share: u64| stats.rx_packets * share / 32;
    let near = |got: u64, share: u64| {
        let e = expect(share);
        got > e * 8 / 10 && got < e * 12 / 10
    };
    assert!(near(stats.forwarded, 1), "forwarded {}", stats.forwarded);
    assert!(near(stats.passed, 1), "passed {}", stats.passed);
    for reason in [
        DropReason::SourceSpoofed,
        DropReason::NoRoute,
        DropReason::MalformedIpv4,
    ] {
        let n = stats.drops.get(reason);
        assert!(near(n, 10), "{reason:?}: {n}");
    }
    assert_eq!(
        stats.dropped,
        stats.drops.nonzero().map(|(_, n)| n).sum::<u64>()
    );
}

#[test]
fn ports_come_and_go_while_traffic_flows() {
    let Some(_serial) = root_test("AF_XDP port add/remove") else {
        return;
    };
    let node = netns("ports");
    let a = Pod::new(&node, "t", "a", POD_A, 1);
    let b = Pod::new(&node, "t", "b", POD_B, 1);
    let c = Pod::new(&node, "t", "c", POD_C, 1);
    let shared = shared_state(node_tables(
        1,
        &[(&a).into(), (&b).into(), (&c).into()],
        &[],
    ));

    let (during_c, after_c, last) = node.within(|| {
        let mut progs = Programs::load();
        let worker = spawn(WorkerConfig::new(0), shared.clone()).expect("spawn");
        plug(&mut progs, &worker, &a, 0, 0, true);
        plug(&mut progs, &worker, &b, 1, 0, true);
        let echo = EchoServer::start(&b, 7777);
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = {
            let stop = stop.clone();
            let dst = SocketAddr::from((POD_B, 7777));
            std::thread::scope(|s| {
                let flag = stop.clone();
                let t = s.spawn(|| round_trips(&a, dst, u64::MAX, Some(flag)));
                let settled = |n: u64| {
                    let start = worker.stats().port(&a.port()).map_or(0, |p| p.rx_packets);
                    wait_until("a -> b traffic", Duration::from_secs(10), || {
                        worker.stats().port(&a.port()).map_or(0, |p| p.rx_packets) >= start + n
                    });
                };
                settled(200);

                // Add c while a <-> b flows; it works (ping a -> c).
                plug(&mut progs, &worker, &c, 2, 0, true);
                let out = a.ns.exec(
                    "ping",
                    &["-c", "2", "-i", "0.2", "-W", "2", &ip_string(POD_C)],
                );
                assert!(out.contains("2 received"), "ping a -> c:\n{out}");
                let during_c = worker.stats();
                settled(200);

                // Remove it again: XSKMAP entry and program first, then the socket.
                progs.remove_xsk(2);
                progs.detach(&c.host_if);
                worker.remove_port(&c.port(), 0).expect("remove_port");
                let after_c = worker.stats();
                // a anchors the UMEM (its first socket): it cannot leave while b is open.
                assert!(matches!(
                    worker.remove_port(&a.port(), 0),
                    Err(xdp_redirect::WorkerError::AnchorInUse(..))
                ));
                assert!(matches!(
                    worker.remove_port(&c.port(), 0),
                    Err(xdp_redirect::WorkerError::NoSuchPort(..))
                ));
                settled(200);
                stop.store(true, Ordering::Relaxed);
                let counts = t.join().expect("traffic thread");
                (counts, during_c, after_c)
            })
        };
        echo.stop();
        let ((sent, answered), during_c, after_c) = traffic;
        assert!(sent >= 600, "{sent} round trips");
        assert_eq!(answered, sent, "no loss on a <-> b while c came and went");
        (during_c, after_c, worker.stop().expect("stop"))
    });

    assert!(during_c.port(&c.port()).is_some_and(|p| p.rx_packets >= 2));
    assert!(after_c.port(&c.port()).is_none(), "c's socket is gone");
    assert_accounted(&after_c);
    assert_no_frames_on_closed_sockets(&after_c);
    assert!(
        after_c.ports.iter().all(|p| p.in_fill > 0),
        "a and b keep their fill rings: {:?}",
        after_c.ports
    );
    assert_accounted(&last);
    assert!(last.frames.all_free(), "{:?}", last.frames);
}

#[test]
fn an_idle_worker_sleeps() {
    let Some(_serial) = root_test("AF_XDP idle") else {
        return;
    };
    let node = netns("idle");
    let a = Pod::new(&node, "t", "a", POD_A, 1);
    let b = Pod::new(&node, "t", "b", POD_B, 1);
    let shared = shared_state(node_tables(1, &[(&a).into(), (&b).into()], &[]));

    let (cpu_ns, wall_ns, before, after) = node.within(|| {
        let mut progs = Programs::load();
        let worker = spawn(WorkerConfig::new(0), shared.clone()).expect("spawn");
        plug(&mut progs, &worker, &a, 0, 0, true);
        plug(&mut progs, &worker, &b, 1, 0, true);
        // Some traffic first, so the worker has been busy and must go back to sleep.
        let out = a.ns.exec(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &ip_string(POD_B)],
        );
        assert!(out.contains("2 received"), "{out}");
        std::thread::sleep(Duration::from_millis(300));
        let tid = worker.published_stats().tid;
        let before = worker.published_stats();
        let cpu0 = thread_cpu_ns(tid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let cpu1 = thread_cpu_ns(tid);
        let wall = t0.elapsed().as_nanos() as u64;
        let after = worker.published_stats();
        worker.stop().expect("stop");
        (cpu1 - cpu0, wall, before, after)
    });

    let share = cpu_ns as f64 / wall_ns as f64;
    eprintln!(
        "idle: worker thread used {:.3}% of a CPU ({cpu_ns} ns in {wall_ns} ns); \
         sleeps {} -> {}, polls {} -> {}",
        share * 100.0,
        before.sleeps,
        after.sleeps,
        before.polls,
        after.polls
    );
    assert!(share < 0.02, "idle worker used {:.2}% CPU", share * 100.0);
    assert!(
        after.sleeps > before.sleeps,
        "it sleeps and wakes for maintenance"
    );
    assert!(after.sleeps - before.sleeps < 100, "but not in a loop");
}

/// Two workers, the client steered to queue 0 and the server to queue 1: runs `n` UDP
/// round trips from the client to VIP:53 and returns the workers' live stats and the
/// answered count. `shared_flows`: one flow table for both workers (else one each).
fn two_worker_round_trips(
    shared_flows: bool,
    n: u64,
    reply_timeout: Duration,
) -> (Vec<WorkerStats>, u64) {
    const WORKERS: u32 = 2;
    let node = netns("flows");
    let client = Pod::new(&node, "t", "client", POD_A, WORKERS);
    let server = Pod::new(&node, "t", "server", POD_B, WORKERS);
    // Requests leave the client on queue 0 (worker 0), replies the server on queue 1.
    client.steer_tx_queue(0, WORKERS);
    server.steer_tx_queue(1, WORKERS);
    let service = TestService {
        name: "t/dns:53".into(),
        vip: VIP,
        port: 53,
        proto: proto::UDP,
        backends: vec![(POD_B, 5353)],
    };
    let tables = node_tables(1, &[(&client).into(), (&server).into()], &[service]);
    let shared = shared_state(tables.clone());

    node.within(|| {
        let mut progs = Programs::load();
        let workers: Vec<_> = (0..WORKERS)
            .map(|q| {
                let state = if shared_flows {
                    shared.clone()
                } else {
                    shared_state(tables.clone())
                };
                spawn(WorkerConfig::new(q as usize), state).expect("spawn")
            })
            .collect();
        for (p, pod) in [&client, &server].into_iter().enumerate() {
            let base = p as u32 * WORKERS;
            for (q, w) in workers.iter().enumerate() {
                plug(&mut progs, w, pod, base, q as u32, q == 0);
            }
        }
        let echo = EchoServer::start(&server, 5353);
        // Connected to the VIP: only replies reverse-NATed back to VIP:53 are received.
        let (_, answered) =
            round_trips_with(&client, SocketAddr::from((VIP, 53)), n, None, reply_timeout);
        echo.stop();
        let live: Vec<_> = workers.iter().map(|w| w.stats()).collect();
        for w in workers {
            let last = w.stop().expect("stop");
            assert_accounted(&last);
            assert!(last.frames.all_free(), "{:?}", last.frames);
        }
        (live, answered)
    })
}

const VIP: [u8; 4] = [10, 96, 0, 10];

#[test]
fn a_reply_on_another_workers_queue_finds_the_flow() {
    let Some(_serial) = root_test("AF_XDP shared flows") else {
        return;
    };
    let (stats, answered) = two_worker_round_trips(true, 100, Duration::from_secs(1));
    for s in &stats {
        eprintln!(
            "worker {}: rx {:?}, forwarded {}, drops {:?}, lock taken {} times (mean wait {} ns, max {} ns)",
            s.id,
            s.ports
                .iter()
                .map(|p| (p.name.as_str(), p.rx_packets))
                .collect::<Vec<_>>(),
            s.forwarded,
            s.drops.nonzero().collect::<Vec<_>>(),
            s.lock_acquisitions,
            s.mean_lock_wait_ns(),
            s.lock_wait_max_ns
        );
        assert_accounted(s);
    }
    assert_eq!(answered, 100, "client <-> VIP round trips");
    let rx = |w: usize, port: &str| stats[w].port(port).map_or(0, |p| p.rx_packets);
    // Requests (and the client's ARP) only on worker 0, replies only on worker 1.
    assert!(rx(0, "pod-t-client") >= 100 && rx(1, "pod-t-client") == 0);
    assert!(rx(1, "pod-t-server") >= 100 && rx(0, "pod-t-server") == 0);
}

#[test]
fn without_a_shared_flow_table_the_reply_is_not_translated() {
    let Some(_serial) = root_test("AF_XDP shared flows (control)") else {
        return;
    };
    // The same steering with one flow table per worker: worker 1 does not know the
    // flow, so the reply reaches the client from the backend's address and the socket
    // connected to the VIP never sees it. This is what the shared table prevents.
    let (stats, answered) = two_worker_round_trips(false, 3, Duration::from_millis(300));
    assert_eq!(answered, 0);
    assert!(
        stats[1]
            .port("pod-t-server")
            .is_some_and(|p| p.rx_packets >= 3)
    );
}

#[test]
fn two_busy_workers_share_the_flow_table_lock() {
    let Some(_serial) = root_test("AF_XDP flow lock under load") else {
        return;
    };
    const WORKERS: u32 = 2;
    const PER_WORKER: u64 = 1_000_000;
    const CHUNK: u32 = 1 << 16;
    let (node, shared) = generator_node(WORKERS);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "needs two CPUs to feed two queues");
    let mode = live_frames_or_fallback("AF_XDP flow lock under load");
    let path = node.path();

    let (stats, elapsed) = node.within(|| {
        let mut progs = Programs::load();
        let workers: Vec<_> = (0..WORKERS)
            .map(|q| {
                let w = spawn(WorkerConfig::new(q as usize), shared.clone()).expect("spawn");
                open_generator_ports(&mut progs, &w, q, WORKERS);
                w
            })
            .collect();
        let start = Instant::now();
        // One generator per CPU: veth delivers XDP_TX frames to rx queue cpu % queues,
        // so generator i feeds worker i. Each stops when its worker has its share.
        std::thread::scope(|s| {
            for (q, w) in workers.iter().enumerate() {
                let path = path.clone();
                s.spawn(move || {
                    enter(&path);
                    pin_current_thread(q);
                    let mut generator = load_generator(mode, "kxsk-ag");
                    while w.published_stats().rx_packets < PER_WORKER {
                        generator.generate(CHUNK);
                        assert!(
                            start.elapsed() < Duration::from_secs(120),
                            "worker {q} starved"
                        );
                    }
                });
            }
        });
        let elapsed = start.elapsed();
        for w in &workers {
            wait_until("the worker to drain", Duration::from_secs(10), || {
                let s = w.stats();
                s.frames.in_worker == 0 && s.frames.in_tx == 0 && s.frames.in_rx == 0
            });
        }
        progs.remove_xsk(0);
        progs.remove_xsk(1);
        let stats: Vec<_> = workers
            .into_iter()
            .map(|w| w.stop().expect("stop"))
            .collect();
        (stats, elapsed)
    });

    let secs = elapsed.as_secs_f64();
    let total: u64 = stats.iter().map(|s| s.rx_packets).sum();
    for s in &stats {
        eprintln!(
            "flow lock: worker {} rx {} in {secs:.2} s; lock taken {} times, wait mean {} ns, \
             max {} ns, total {:.1} ms ({:.2}% of its busy time)",
            s.id,
            s.rx_packets,
            s.lock_acquisitions,
            s.mean_lock_wait_ns(),
            s.lock_wait_max_ns,
            s.lock_wait_ns as f64 / 1e6,
            s.lock_wait_ns as f64 / s.busy_ns.max(1) as f64 * 100.0
        );
        assert!(s.rx_packets >= PER_WORKER);
        assert_accounted(s);
        assert!(s.frames.all_free(), "{:?}", s.frames);
    }
    eprintln!(
        "flow lock: {total} frames through two workers in {secs:.2} s = {:.2} Mpps",
        total as f64 / secs / 1e6
    );
}
