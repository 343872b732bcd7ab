//! The node the churn test runs: a network namespace with an uplink, the real `kxdp
//! agent` fed by the API server double, pods made by the real `kxdp-cni` ADD (host-local
//! IPAM) and `kxdp-lab probe serve` in the backend pods. Everything it made goes on drop:
//! processes by PID, namespaces (with their veths and XDP attachments), files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use agent_api::{self, AgentStats, AgentStatus, Request};
use serde_json::{Value, json};
use testkit::netns::Uplink;

pub const NODE: &str = "node1";
pub const NODE_IP: &str = "192.168.81.1";
pub const UPLINK_MAC: &str = "02:81:00:00:00:01";
pub const POD_CIDR: &str = "10.244.1.0/24";
pub const GATEWAY: &str = "10.244.1.1";
pub const NAMESPACE: &str = "demo";
pub const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
/// The nftables table of [`Node::count_chatter`].
const CHATTER_TABLE: &str = "kxc_chatter";

/// Namespaces, processes and files of one run.
#[derive(Debug)]
pub struct Node {
    pub prefix: String,
    workers: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    /// Started with [`Node::start_agent`]; stopped with SIGTERM by the test, killed on drop.
    pub agent: Option<Child>,
    servers: Vec<Child>,
    /// Namespaces with a [`CHATTER_TABLE`].
    chatter: Vec<String>,
}

impl Node {
    /// The node namespace with its uplink (a veth whose peer stays in the namespace: no
    /// traffic leaves it) with a rx/tx queue per worker.
    pub fn new(workers: u32) -> Node {
        let prefix = format!("kxc{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("{prefix}-churn"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let mut node = Node {
            workers: workers.to_string(),
            prefix,
            dir,
            namespaces: Vec::new(),
            agent: None,
            servers: Vec::new(),
            chatter: Vec::new(),
        };
        let ns = node.netns("node");
        let cidr = format!("{NODE_IP}/24");
        Uplink {
            mac: UPLINK_MAC,
            addr: &cidr,
            queues: workers,
            outside: None,
        }
        .add(&ns);
        node
    }

    pub fn node_ns(&self) -> String {
        format!("{}-node", self.prefix)
    }

    fn netns(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        ip(&name, &["link", "set", "lo", "up"]);
        self.namespaces.push(name.clone());
        name
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    fn cni_state(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// Starts `kxdp agent` in the node namespace on the API at `kubeconfig`; returns its
    /// readiness line (or fails with its log).
    pub fn start_agent(&mut self, kubeconfig: &Path) -> String {
        let mut agent = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node_ns()))
            .arg(env!("CARGO_BIN_EXE_kxdp"))
            .args(["agent", "--node", NODE, "--uplink", "up0", "--workers"])
            .arg(&self.workers)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--api-socket")
            .arg(self.socket())
            .arg("--cni-state-dir")
            .arg(self.cni_state())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log()).expect("agent log"))
            .spawn()
            .expect("starting kxdp agent");
        let stdout = agent.stdout.take().expect("agent stdout");
        self.agent = Some(agent);
        first_line(stdout, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no readiness line; log:\n{}", read(&self.log())))
    }

    /// A pod as a runtime makes one: an empty namespace, then kxdp-cni ADD run in the node
    /// namespace (which asks the agent to open the pod's port). Returns its address.
    pub fn add_pod(&mut self, name: &str) -> Ipv4Addr {
        let netns = self.netns(name);
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "kxdp",
            "type": "kxdp-cni",
            "agentSocket": self.socket(),
            "stateDir": self.cni_state(),
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                "dataDir": self.dir.join("ipam"),
            },
        });
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=c-{name}"
        );
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node_ns()))
            .arg("--")
            .arg(testkit::bins::workspace_binary("cni", "kxdp-cni"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("c-{name}"))
            .env("CNI_NETNS", format!("/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kxdp-cni");
        std::io::Write::write_all(
            &mut child.stdin.take().expect("cni stdin"),
            conf.to_string().as_bytes(),
        )
        .expect("cni config");
        let out = child.wait_with_output().expect("kxdp-cni");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kxdp-cni ADD {name}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_str(&stdout).expect("CNI result");
        result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in the CNI result {result}"))
    }

    /// `kxdp-lab probe serve --name NAME` on TCP `tcp` and UDP `udp` in pod `pod`'s
    /// namespace; returns once it said it is bound.
    pub fn serve(&mut self, pod: &str, tcp: u16, udp: u16) {
        let mut server = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-{pod}", self.prefix))
            .arg(testkit::bins::workspace_binary("lab", "kxdp-lab"))
            .args(["probe", "serve", "--name", pod])
            .args(["--tcp", &tcp.to_string(), "--udp", &udp.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting kxdp-lab probe serve");
        let stdout = server.stdout.take().expect("server stdout");
        self.servers.push(server);
        let ready = first_line(stdout, Duration::from_secs(10));
        assert!(
            ready
                .as_deref()
                .is_some_and(|l| l.starts_with(lab::probe::READY_PREFIX)),
            "probe serve in {pod}: {ready:?}"
        );
    }

    /// Counts, from now on, the frames the kernel in `netns` sends out of `dev` that are
    /// not IPv4 unicast: its own link-local chatter (IPv6 router solicitations, MLD
    /// reports, duplicate address detection; IPv4 multicast), which kxdp does not forward.
    /// An nftables counter on the device's egress hook.
    pub fn count_chatter(&mut self, netns: &str, dev: &str) {
        let chain = format!("out_{}", dev.replace('-', "_"));
        let nft = |args: &[&str]| {
            run(Command::new("nsenter")
                .arg(format!("--net=/run/netns/{netns}"))
                .arg("nft")
                .args(args));
        };
        nft(&["add", "table", "netdev", CHATTER_TABLE]);
        nft(&[
            "add",
            "chain",
            "netdev",
            CHATTER_TABLE,
            &chain,
            &format!("{{ type filter hook egress device \"{dev}\" priority 0; }}"),
        ]);
        nft(&[
            "add",
            "rule",
            "netdev",
            CHATTER_TABLE,
            &chain,
            "meta",
            "protocol",
            "ip6",
            "counter",
        ]);
        nft(&[
            "add",
            "rule",
            "netdev",
            CHATTER_TABLE,
            &chain,
            "meta",
            "protocol",
            "ip",
            "ether",
            "daddr",
            "&",
            "01:00:00:00:00:00",
            "==",
            "01:00:00:00:00:00",
            "counter",
        ]);
        if !self.chatter.iter().any(|n| n == netns) {
            self.chatter.push(netns.to_string());
        }
    }

    /// The frames counted by every [`Node::count_chatter`] counter so far.
    pub fn chatter(&self) -> u64 {
        self.chatter
            .iter()
            .map(|netns| {
                let out = Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{netns}"))
                    .args(["nft", "list", "table", "netdev", CHATTER_TABLE])
                    .output()
                    .expect("nft list");
                assert!(out.status.success(), "nft list in {netns}: {out:?}");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let words: Vec<&str> = text.split_whitespace().collect();
                words
                    .windows(3)
                    .filter(|w| w[0] == "counter" && w[1] == "packets")
                    .map(|w| w[2].parse::<u64>().expect("counter value"))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Per pod: datagrams its kernel dropped for a full socket receive buffer (`Udp:
    /// RcvbufErrors` of its namespace's /proc/net/snmp): losses at the endpoints, which no
    /// datapath counter can see.
    pub fn udp_rcvbuf_errors(&self, pods: &[&str]) -> BTreeMap<String, u64> {
        pods.iter()
            .map(|pod| {
                let out = Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}-{pod}", self.prefix))
                    .args(["cat", "/proc/net/snmp"])
                    .output()
                    .expect("snmp");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
                let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
                let n = names
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .find(|(name, _)| *name == "RcvbufErrors")
                    .and_then(|(_, v)| v.parse().ok())
                    .expect("Udp RcvbufErrors");
                (pod.to_string(), n)
            })
            .collect()
    }

    /// Every interface's rx and tx drop counters in the node's and `pods`' namespaces
    /// (`ip -s link`: a veth counts a frame its peer's backlog refused as a tx drop, the
    /// stack counts a full backlog as an rx drop), keyed "namespace/ifname".
    pub fn link_drops(&self, pods: &[&str]) -> BTreeMap<String, u64> {
        let mut namespaces = vec!["node".to_string()];
        namespaces.extend(pods.iter().map(|p| p.to_string()));
        let mut drops = BTreeMap::new();
        for ns in namespaces {
            let out = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}-{ns}", self.prefix))
                .args(["ip", "-s", "-j", "link", "show"])
                .output()
                .expect("ip -s link");
            let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
            for link in links.as_array().into_iter().flatten() {
                let stats = &link["stats64"];
                let n = stats["rx"]["dropped"].as_u64().unwrap_or(0)
                    + stats["tx"]["dropped"].as_u64().unwrap_or(0);
                let name = link["ifname"].as_str().unwrap_or("?");
                drops.insert(format!("{ns}/{name}"), n);
            }
        }
        drops
    }

    pub fn status(&self) -> AgentStatus {
        agent_api::call(&self.socket(), &Request::Status, Duration::from_secs(5))
            .expect("status call")
            .into_result()
            .expect("status answer")
            .expect("status body")
    }

    pub fn stats(&self) -> AgentStats {
        agent_api::call(&self.socket(), &Request::Stats, Duration::from_secs(5))
            .expect("stats call")
            .stats
            .expect("stats body")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in self.servers.iter_mut().chain(self.agent.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first line a child prints, waited for at most `timeout` (the rest is drained so the
/// child never blocks on a full pipe).
fn first_line(stdout: std::process::ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx.recv_timeout(timeout).ok()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn run(c: &mut Command) {
    testkit::cmd::output(c);
}

/// `ip ARGS` inside `ns` (through nsenter: `ip -n` remounts /, which fails in a chroot).
fn ip(ns: &str, args: &[&str]) {
    run(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("ip")
        .args(args));
}
