//! `kxdp-lab`: its manifests decide as its checks expect (offline, through the pure
//! pipeline), its topology and probe tool carry real traffic (root), and the whole lab
//! passes every check and cleans up after itself (root; needs `kxdp agent` and kxdp-cni).
//!
//! Root tests print why and skip when not root, unless CI=true (then they fail).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use datapath::{DropReason, PortId, Tables, Verdict};
use lab::layout::{
    self, ADMIN_PORT, CLIENT_IP, ECHO_PORT, HTTP_PORT, NODE_PORT, NODE1, NODE2, NODE3, Names,
    POD_CLIENT, POD_OTHER, POD_WEB1, POD_WEB2, PODS, PodPlan, WEB_CLUSTER_IP, WEB_TCP_PORT,
};
use lab::manifests::{self, PlacedPod};
use lab::topology;
use testkit::TempDir;
use testkit::frames::Headers;
use testkit::netns::netns_left;
use testkit::offline::{pod_mac, step, tables_for};
use testkit::root::root_test;

const KXDP_LAB: &str = env!("CARGO_BIN_EXE_kxdp-lab");

// ---------------------------------------------------------------- offline: the manifests

/// Addresses as host-local would hand them out: .2, .3 on each node.
fn placed() -> Vec<PlacedPod> {
    let mut next = [2u8; 4];
    PODS.iter()
        .map(|&plan| {
            let i = usize::from(plan.node.index);
            let ip = Ipv4Addr::new(10, 244, plan.node.index, next[i]);
            next[i] += 1;
            PlacedPod { plan, ip }
        })
        .collect()
}

fn ip_of(pod: &PodPlan) -> Ipv4Addr {
    placed()
        .into_iter()
        .find(|p| p.plan == *pod)
        .map(|p| p.ip)
        .unwrap()
}

fn port(t: &Tables, pod: &PodPlan) -> PortId {
    t.port_by_name(&format!("pod-demo-{}", pod.name))
        .unwrap_or_else(|| panic!("no port for {}", pod.name))
}

fn mac(ip: Ipv4Addr) -> [u8; 6] {
    pod_mac(ip.octets())
}

/// A frame a pod sends: to its gateway's MAC.
fn from_pod(pod: &PodPlan, dst: Ipv4Addr, proto: u8, dport: u16, sport: u16) -> Vec<u8> {
    let src = ip_of(pod);
    let h = Headers::new(mac(src), mac(pod.node.gateway()), src, dst);
    if proto == 6 {
        h.tcp_syn(sport, dport, 1)
    } else {
        h.udp(sport, dport, b"kxdp")
    }
}

/// What the kernel vxlan device of node3 sends to a pod on node1.
fn from_vtep(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let inner = Headers::new(NODE3.gateway_mac().0, mac(dst), NODE3.gateway(), dst)
        .udp(40000, dport, b"kxdp");
    Headers::new(
        NODE3.underlay_mac().0,
        NODE1.underlay_mac().0,
        NODE3.underlay_ip(),
        NODE1.underlay_ip(),
    )
    .vxlan(51234, layout::VXLAN_PORT, 1, &inner)
}

/// The lab's manifests loaded and translated for node1 and node2 (index 0 and 1).
fn lab_tables() -> (TempDir, Vec<Tables>) {
    let dir = TempDir::new("lab-manifests");
    manifests::write_base(dir.path()).unwrap();
    manifests::write_workloads(dir.path(), &placed()).unwrap();
    let tables = tables_for(dir.path(), "lab", &["node1", "node2"], 1);
    (dir, tables)
}

/// The decisions the live checks count on, made by the pure pipeline from the lab's own
/// state directory: when a live check fails, this says whether the manifests or the live
/// datapath is at fault.
#[test]
fn lab_manifests_decide_as_the_checks_expect() {
    let (_dir, t) = lab_tables();
    let (n1, n2) = (&t[0], &t[1]);

    // Same node, and the policy's label rule: client -> web-1.
    let (v, _, _) = step(
        n1,
        port(n1, &POD_CLIENT),
        &from_pod(&POD_CLIENT, ip_of(&POD_WEB1), 6, HTTP_PORT, 40000),
    );
    assert_eq!(v, Verdict::Forward(port(n1, &POD_WEB1)));

    // Across nodes: client -> web-2 on the admin port (label rule, any port).
    let (v, out, _) = step(
        n1,
        port(n1, &POD_CLIENT),
        &from_pod(&POD_CLIENT, ip_of(&POD_WEB2), 6, ADMIN_PORT, 40001),
    );
    assert_eq!(v, Verdict::Forward(PortId::UPLINK));
    let (v, _, _) = step(n2, PortId::UPLINK, &out);
    assert_eq!(v, Verdict::Forward(port(n2, &POD_WEB2)));

    // Deny: other (node2) -> web-1 (node1): leaves node2, dropped at node1's ingress.
    let (v, out, _) = step(
        n2,
        port(n2, &POD_OTHER),
        &from_pod(&POD_OTHER, ip_of(&POD_WEB1), 6, HTTP_PORT, 40002),
    );
    assert_eq!(v, Verdict::Forward(PortId::UPLINK));
    let (v, _, rec) = step(n1, PortId::UPLINK, &out);
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDenied));
    assert_eq!(rec.policies, vec!["demo/web-ingress".to_string()]);
    // Deny on one node: other -> web-2 UDP.
    let (v, _, _) = step(
        n2,
        port(n2, &POD_OTHER),
        &from_pod(&POD_OTHER, ip_of(&POD_WEB2), 17, ECHO_PORT, 40003),
    );
    assert_eq!(v, Verdict::Drop(DropReason::PolicyDenied));
    // The deny is specific: other -> client is fine.
    let (v, out, _) = step(
        n2,
        port(n2, &POD_OTHER),
        &from_pod(&POD_OTHER, ip_of(&POD_CLIENT), 6, HTTP_PORT, 40004),
    );
    assert_eq!(v, Verdict::Forward(PortId::UPLINK));
    let (v, _, _) = step(n1, PortId::UPLINK, &out);
    assert_eq!(v, Verdict::Forward(port(n1, &POD_CLIENT)));

    // ClusterIP: new flows reach the local backend and the remote one.
    let mut local = 0;
    let mut remote = 0;
    for sport in 41000..41064 {
        let frame = from_pod(&POD_CLIENT, WEB_CLUSTER_IP, 6, WEB_TCP_PORT, sport);
        match step(n1, port(n1, &POD_CLIENT), &frame).0 {
            Verdict::Forward(p) if p == port(n1, &POD_WEB1) => local += 1,
            Verdict::Forward(PortId::UPLINK) => remote += 1,
            other => panic!("ClusterIP flow: {other:?}"),
        }
    }
    assert!(local > 0 && remote > 0, "local {local} remote {remote}");

    // NodePort on node2 from the external client: SNATed to node2's gateway, which the
    // policy's ipBlock rule lets into web-1 on node1.
    let mut seen_local = false;
    let mut seen_remote = false;
    for sport in 42000..42064 {
        let frame = Headers::new(
            [0x02, 0, 192, 168, 77, 100],
            NODE2.underlay_mac().0,
            CLIENT_IP,
            NODE2.underlay_ip(),
        )
        .tcp_syn(sport, NODE_PORT, 1);
        match step(n2, PortId::UPLINK, &frame) {
            (Verdict::Forward(p), _, _) if p == port(n2, &POD_WEB2) => seen_local = true,
            (Verdict::Forward(PortId::UPLINK), out, _) => {
                let (v, _, _) = step(n1, PortId::UPLINK, &out);
                assert_eq!(
                    v,
                    Verdict::Forward(port(n1, &POD_WEB1)),
                    "NodePort via node2 to web-1"
                );
                seen_remote = true;
            }
            other => panic!("NodePort flow: {:?}", other.0),
        }
    }
    assert!(seen_local && seen_remote);

    // node3, the kernel vxlan device: its packets reach a pod on node1 ...
    let (v, _, _) = step(
        n1,
        PortId::UPLINK,
        &from_vtep(ip_of(&POD_CLIENT), ECHO_PORT),
    );
    assert_eq!(v, Verdict::Forward(port(n1, &POD_CLIENT)));
    // ... and ours reach it with the inner destination MAC its device has.
    let (v, out, _) = step(
        n1,
        port(n1, &POD_CLIENT),
        &from_pod(&POD_CLIENT, NODE3.gateway(), 17, ECHO_PORT, 40005),
    );
    assert_eq!(v, Verdict::Forward(PortId::UPLINK));
    assert_eq!(&out[0..6], &NODE3.underlay_mac().0, "outer destination MAC");
    assert_eq!(
        &out[30..34],
        &NODE3.underlay_ip().octets(),
        "outer destination"
    );
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), layout::VXLAN_PORT);
    assert_eq!(
        &out[50..56],
        &NODE3.gateway_mac().0,
        "inner destination MAC = vxlan0's MAC"
    );
}

// ---------------------------------------------------------------- root: live namespaces

/// A prefix of this run (`kxl<pid % 1000>` plus a letter per test), so a CI run and a
/// manual one never share namespaces. `KXDP_LAB_TEST_PREFIX` replaces `kxl` (at most 3
/// characters) when several people run these tests on one machine.
fn run_prefix(test: char) -> String {
    let base = std::env::var("KXDP_LAB_TEST_PREFIX")
        .ok()
        .filter(|p| !p.is_empty() && p.len() <= 3)
        .unwrap_or_else(|| "kxl".into());
    format!("{base}{}{test}", std::process::id() % 1000)
}

fn kxdp_lab(args: &[&str]) -> Output {
    Command::new(KXDP_LAB)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kxdp-lab")
}

fn in_ns(ns: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter")
}

/// Removes the topology (and kills the child) even when the test panics.
struct TopologyGuard {
    names: Names,
    children: Vec<Child>,
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = topology::destroy(&self.names);
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The fabric without agents: every host reaches the others through the bridge, and the
/// probe tool's serve / tcp / udp / flood / sink work across it; the kernel VTEP comes up.
/// Then everything is gone.
#[test]
fn lab_topology_and_probe_tool_carry_traffic() {
    let Some(_lock) = root_test("the lab test (namespaces, XDP programs)") else {
        return;
    };
    let names = Names {
        prefix: run_prefix('t'),
    };
    let mut guard = TopologyGuard {
        names: names.clone(),
        children: Vec::new(),
    };
    let _ = topology::destroy(&names);
    topology::create(&names, 2).unwrap();
    topology::create_vtep(&names).unwrap();
    topology::add_vtep_peer(&names, Ipv4Addr::new(10, 244, 1, 2), NODE1).unwrap();

    for target in [
        NODE1.underlay_ip(),
        NODE2.underlay_ip(),
        NODE3.underlay_ip(),
    ] {
        let out = in_ns(
            &names.client(),
            &[
                "ping",
                "-q",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                &target.to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "ping {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // A server on node1, found by name; a sink on node2.
    let mut server = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", names.node(NODE1)))
        .args([
            KXDP_LAB, "probe", "serve", "--name", "n1", "--tcp", "8080", "--udp", "8081",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with(lab::probe::READY_PREFIX), "{line}");
    guard.children.push(server);

    let to = format!("{}:8080", NODE1.underlay_ip());
    let r = json(&in_ns(
        &names.client(),
        &[KXDP_LAB, "probe", "tcp", "--to", &to, "--count", "5"],
    ));
    assert_eq!(r["answered"], 5, "{r}");
    assert_eq!(r["answered_by"]["n1"], 5, "{r}");
    assert!(r["rtt_us"]["p50"].as_u64().is_some(), "{r}");
    let to = format!("{}:8081", NODE1.underlay_ip());
    let r = json(&in_ns(
        &names.client(),
        &[KXDP_LAB, "probe", "udp", "--to", &to, "--count", "5"],
    ));
    assert_eq!(r["answered_by"]["n1"], 5, "{r}");
    // A closed port is refused, not timed out; an unanswered address times out.
    let to = format!("{}:9", NODE1.underlay_ip());
    let r = json(&in_ns(
        &names.client(),
        &[KXDP_LAB, "probe", "tcp", "--to", &to, "--count", "2"],
    ));
    assert_eq!(r["failures"]["refused"], 2, "{r}");
    let r = json(&in_ns(
        &names.client(),
        &[
            KXDP_LAB,
            "probe",
            "udp",
            "--to",
            "192.168.77.99:9",
            "--count",
            "2",
            "--timeout-ms",
            "200",
        ],
    ));
    assert_eq!(r["answered"], 0, "{r}");
    assert!(
        r["failures"]["timeout"].as_u64().unwrap() + r["failures"]["error"].as_u64().unwrap() == 2,
        "{r}"
    );

    // Flood into a sink on node2.
    let mut sink = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", names.node(NODE2)))
        .args([
            KXDP_LAB,
            "probe",
            "sink",
            "--udp",
            "7000",
            "--idle-ms",
            "300",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(sink.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.starts_with(lab::probe::READY_PREFIX), "{line}");
    let to = format!("{}:7000", NODE2.underlay_ip());
    let f = json(&in_ns(
        &names.client(),
        &[
            KXDP_LAB,
            "probe",
            "flood",
            "--to",
            &to,
            "--duration-ms",
            "300",
        ],
    ));
    let mut report = String::new();
    std::io::BufRead::read_line(&mut reader, &mut report).unwrap();
    let _ = sink.wait();
    let s: serde_json::Value = serde_json::from_str(&report).unwrap();
    let sent = f["sent"].as_u64().unwrap();
    let got = s["received"].as_u64().unwrap();
    assert!(sent > 1000 && got > 0 && got <= sent, "flood {f} sink {s}");
    eprintln!(
        "kernel bridge path: sent {sent} ({} pps), received {got} ({} pps)",
        f["pps"], s["pps"]
    );

    drop(guard);
    assert!(
        netns_left(&names.prefix).is_empty(),
        "{:?}",
        netns_left(&names.prefix)
    );
}

/// Runs `kxdp-lab down` for the test's lab even when the test panics.
struct LabGuard {
    dir: PathBuf,
    prefix: String,
    /// `--source` for up (check and down read it from DIR).
    source: &'static str,
    /// `--runtime containerd --image ARCHIVE` for up, when set.
    containerd_image: Option<String>,
}

impl LabGuard {
    fn args<'a>(&'a self, action: &'a str) -> Vec<&'a str> {
        let mut args = vec![
            action,
            "--dir",
            self.dir.to_str().unwrap(),
            "--prefix",
            &self.prefix,
        ];
        if action == "up" {
            args.extend(["--source", self.source]);
            if let Some(image) = &self.containerd_image {
                args.extend(["--runtime", "containerd", "--image", image]);
            }
        }
        args
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = kxdp_lab(&self.args("down"));
    }
}

fn show(what: &str, out: &Output) {
    eprintln!("== kxdp-lab {what}: {}", testkit::cmd::describe(out));
}

/// The README's demo, with a per-run prefix and directory: up, every check passes, down
/// leaves nothing behind, and a second down is fine.
#[test]
fn lab_up_check_down() {
    let Some(_lock) = root_test("the lab test (namespaces, XDP programs)") else {
        return;
    };
    up_check_down(run_prefix('l'), "dir", None);
}

/// The same lab with the agents fed by the API server double (`--source api`) instead of
/// the manifest directory: every check passes on state that came over list/watch.
#[test]
fn lab_up_check_down_with_the_api_source() {
    let Some(_lock) = root_test("the lab test (namespaces, XDP programs)") else {
        return;
    };
    up_check_down(run_prefix('a'), "api", None);
}

/// The lab with containerd as each node's runtime (`--runtime containerd`): the agents run
/// from the kxdp image as the DaemonSet says, the pods are CRI sandboxes with probe
/// containers, and the checks include containerd's own calls (DEL twice, DEL without a
/// netns, a containerd restart, an agent container restart, a sandbox retried on CNI 11).
/// The image is this build's binaries through the Containerfile's runtime stage
/// (`deploy/image/build.sh --binaries`); down must leave no containerd, shim, mount or
/// cgroup behind.
#[test]
fn lab_up_check_down_with_containerd() {
    let Some(_lock) = root_test("the containerd lab (containerd, runc, XDP programs)") else {
        return;
    };
    let prefix = run_prefix('c');
    let images = TempDir::new("lab-image");
    let archive = images.path().join("kxdp.tar");
    let bin_dir = Path::new(KXDP_LAB).parent().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let build_image = format!(
        "bash deploy/image/build.sh --binaries {} --out {}",
        bin_dir.display(),
        archive.display()
    );
    if !root_is_a_mount_point() {
        run_in_a_rooted_mount_namespace(&prefix, &repo, &build_image, &archive);
        return;
    }
    let build = Command::new("sh")
        .args(["-c", &build_image])
        .current_dir(&repo)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build.sh --binaries: {}",
        testkit::cmd::describe(&build)
    );
    up_check_down(prefix.clone(), "api", Some(archive.display().to_string()));
    let dir = format!("/run/kxdp-lab-{prefix}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
    let cgroup = format!("kxdp-lab-{prefix}-");
    let cgroups_left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains(&cgroup))
        .collect();
    assert!(cgroups_left.is_empty(), "cgroups left: {cgroups_left:?}");
    let procs_left = processes_naming(&dir);
    assert!(procs_left.is_empty(), "processes left: {procs_left:?}");
}

/// Whether this process's root directory is a mount point (mountinfo lists "/"). In a
/// chroot of a plain directory it is not, and runc (which makes the container's root
/// propagation slave) and buildah (which makes it private to unpack layers) both fail there
/// with EINVAL.
fn root_is_a_mount_point() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/"))
}

/// Where the root is a plain directory (a bare build root entered with chroot): the image
/// build and `kxdp-lab run --runtime containerd` run in a private mount namespace whose root
/// is a bind mount of this one, as a container or a booted machine has it. Everything the
/// lab mounts there goes with the namespace; the run must pass and leave no process and no
/// network namespace behind.
fn run_in_a_rooted_mount_namespace(prefix: &str, repo: &Path, build_image: &str, archive: &Path) {
    println!(
        "the root directory is not a mount point here (a chroot): containerd's runc and \
         buildah need one, so the image build and `kxdp-lab run --runtime containerd` run in \
         a private mount namespace rooted at a bind mount of /"
    );
    let new_root = format!("/run/kxdp-lab-root-{prefix}");
    let dir = format!("/run/kxdp-lab-{prefix}");
    std::fs::create_dir_all(&new_root).unwrap();
    let inner = format!(
        "cd {repo} && {build_image} && {lab} run --dir {dir} --prefix {prefix} --source api \
         --runtime containerd --image {archive}",
        repo = repo.display(),
        lab = KXDP_LAB,
        archive = archive.display(),
    );
    // --propagation unchanged: unshare cannot make a root that is no mount point private.
    let script = format!(
        "set -e; mount --rbind / {new_root}; mount --make-rprivate {new_root}; \
         exec chroot {new_root} /bin/sh -c '{inner}'"
    );
    let run = Command::new("unshare")
        .args(["--mount", "--propagation", "unchanged", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&new_root);
    show("run (in a rooted mount namespace)", &run);
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "build or run failed:\n{table}");
    assert!(table.contains("checks passed"), "no table:\n{table}");
    assert!(
        netns_left(prefix).is_empty(),
        "left: {:?}",
        netns_left(prefix)
    );
    assert!(
        processes_naming(&dir).is_empty(),
        "{:?}",
        processes_naming(&dir)
    );
}

/// Command lines of running processes that contain `text`.
fn processes_naming(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(text))
        .collect()
}

fn up_check_down(prefix: String, source: &'static str, containerd_image: Option<String>) {
    let guard = LabGuard {
        dir: PathBuf::from(format!("/run/kxdp-lab-{prefix}")),
        prefix: prefix.clone(),
        source,
        containerd_image,
    };
    let up = kxdp_lab(&guard.args("up"));
    show("up", &up);
    assert!(up.status.success(), "lab up failed");
    if source == "api" && guard.containerd_image.is_none() {
        assert_fed_by_the_double(&guard.dir);
    }
    let check = kxdp_lab(&guard.args("check"));
    show("check", &check);
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(table.contains("checks passed"), "no table");
    assert!(check.status.success(), "a check failed:\n{table}");

    let down = kxdp_lab(&guard.args("down"));
    show("down", &down);
    assert!(down.status.success());
    assert!(
        netns_left(&prefix).is_empty(),
        "left: {:?}",
        netns_left(&prefix)
    );
    assert!(
        !Path::new(&guard.dir).exists(),
        "{} left",
        guard.dir.display()
    );
    let again = kxdp_lab(&guard.args("down"));
    assert!(
        again.status.success(),
        "second down: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// With `--source api`: the double runs (recorded for down) behind its TLS front, both
/// agents were started in-cluster (`--in-cluster --api-server` with the lab's service
/// account and KUBERNETES_SERVICE_HOST at the unrouted `kubernetes` ClusterIP), and the
/// double applied the Pods the lab wrote after CNI ADD (so the agents, which know every pod
/// once up returns, learned them over the API).
fn assert_fed_by_the_double(dir: &Path) {
    for label in ["apiserver-double", "apiserver-tls"] {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("procs/{label}.json"))).unwrap(),
        )
        .unwrap();
        let pid = record["pid"].as_i64().unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{record}");
    }
    let account = dir.join("apiserver/serviceaccount");
    for node in ["node1", "node2"] {
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("procs/agent-{node}.json"))).unwrap(),
        )
        .unwrap();
        let pid = rec["pid"].as_i64().unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let value = |flag: &str| {
            let at = args.iter().position(|a| a == flag);
            at.and_then(|i| args.get(i + 1)).cloned()
        };
        assert!(args.iter().any(|a| a == "--in-cluster"), "{node}: {args:?}");
        assert!(
            !args.iter().any(|a| a == "--kubeconfig"),
            "{node}: {args:?}"
        );
        assert_eq!(
            (value("--api-server"), value("--service-account")),
            (
                Some("192.168.77.1:6443".to_string()),
                account.to_str().map(str::to_string)
            ),
            "{node}: {args:?}"
        );
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            environ
                .split('\0')
                .any(|e| e == "KUBERNETES_SERVICE_HOST=10.96.0.1"),
            "{node}: {environ}"
        );
    }
    let log = std::fs::read_to_string(dir.join("apiserver/apiserver.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("changed:") && !l.contains(" 0 applied")),
        "the double never applied the workloads: {log}"
    );
}
