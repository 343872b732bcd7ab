//! A client reusing a source port towards one backend, first through a ClusterIP and then
//! directly, under a NetworkPolicy (so the direct flow is tracked too): the two flows
//! would share a reply tuple. Linux conntrack moves the second flow's source port (an
//! implicit SNAT on tuple clash) and so must we; we once dropped it as snat_exhausted,
//! which the lab's checks caught as occasional timeouts.
use datapath::conntrack::Flows;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::observer::NoObserver;
use datapath::{PortId, Tables, Verdict, process};
use lab::layout::{NODE1, PODS, WEB_CLUSTER_IP};
use lab::manifests::{self, PlacedPod};
use std::net::Ipv4Addr;
use testkit::TempDir;
use testkit::frames::Headers;
use testkit::offline::{pod_mac, tables_for};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const WEB1: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);

fn node1() -> (TempDir, Tables) {
    let dir = TempDir::new("repro");
    let ips = [
        CLIENT,
        WEB1,
        Ipv4Addr::new(10, 244, 2, 2),
        Ipv4Addr::new(10, 244, 2, 3),
    ];
    let placed: Vec<PlacedPod> = PODS
        .iter()
        .zip(ips)
        .map(|(&plan, ip)| PlacedPod { plan, ip })
        .collect();
    manifests::write_base(dir.path()).unwrap();
    manifests::write_workloads(dir.path(), &placed).unwrap();
    let t = tables_for(dir.path(), "repro", &["node1"], 1).remove(0);
    (dir, t)
}

fn run(t: &Tables, f: &mut Flows, now: u64, port: PortId, pkt: &[u8]) -> Verdict {
    let mut buf = vec![0u8; DEFAULT_HEADROOM + pkt.len() + 256];
    let mut frame = Frame::load(&mut buf, DEFAULT_HEADROOM, pkt).unwrap();
    process(t, f, now, port, &mut frame, &mut NoObserver)
}

fn udp(s: Ipv4Addr, d: Ipv4Addr, sp: u16, dp: u16) -> Vec<u8> {
    Headers::new(pod_mac(s.octets()), pod_mac(NODE1.gateway().octets()), s, d).udp(sp, dp, b"x")
}

/// client:P -> 10.96.0.10:5353 (DNAT to web-1:8081, answered), then client:P -> web-1:8081.
#[test]
fn direct_flow_after_clusterip_flow_from_the_same_port() {
    let (_d, t) = node1();
    let client = t.port_by_name("pod-demo-client").unwrap();
    let web1 = t.port_by_name("pod-demo-web-1").unwrap();
    let mut f = Flows::default();
    let now = 1_000_000_000;
    // a source port whose Maglev pick is web-1
    let sp = (40000..41000)
        .find(|&p| {
            run(
                &t,
                &mut Flows::default(),
                now,
                client,
                &udp(CLIENT, WEB_CLUSTER_IP, p, 5353),
            ) == Verdict::Forward(web1)
        })
        .unwrap();
    assert_eq!(
        run(
            &t,
            &mut f,
            now,
            client,
            &udp(CLIENT, WEB_CLUSTER_IP, sp, 5353)
        ),
        Verdict::Forward(web1)
    );
    assert_eq!(
        run(&t, &mut f, now + 1000, web1, &udp(WEB1, CLIENT, 8081, sp)),
        Verdict::Forward(client)
    );
    // 1 s later, the same client port straight to the backend: forwarded (port moved).
    assert_eq!(
        run(
            &t,
            &mut f,
            now + 1_000_000_000,
            client,
            &udp(CLIENT, WEB1, sp, 8081)
        ),
        Verdict::Forward(web1)
    );
}
