//! What the newer node tests share: a node's namespaces, state directory and agent, all
//! removed on drop (even when the test panicked), and running commands inside them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The test's namespaces, agent and files.
pub struct Node {
    prefix: String,
    namespaces: Vec<String>,
    agent: Option<Child>,
    pub dir: PathBuf,
}

impl Node {
    /// Names start with `kind` (a few letters per test module), the test process and `tag`
    /// (tests of one binary run side by side: the tag keeps them apart).
    pub fn new(kind: &str, tag: &str) -> Node {
        let prefix = format!("{kind}{}{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("{prefix}-node-test"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        Node {
            prefix,
            namespaces: Vec::new(),
            agent: None,
            dir,
        }
    }

    /// A fresh namespace `<prefix>-<suffix>` with `lo` up.
    pub fn netns(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        testkit::cmd::output(Command::new("ip").args(["netns", "add", &name]));
        self.namespaces.push(name.clone());
        ip_in(&name, &["link", "set", "lo", "up"]);
        name
    }

    /// The node's namespace with its uplink (`node_ip`/24, `queues` rx and tx queues) and a
    /// namespace outside it on the uplink's segment, holding `outside_ip`/24.
    pub fn with_uplink(
        &mut self,
        mac: &str,
        node_ip: &str,
        outside_ip: &str,
        queues: u32,
    ) -> (String, String) {
        let ns = self.netns("node");
        let outside = self.netns("out");
        testkit::netns::Uplink {
            mac,
            addr: &format!("{node_ip}/24"),
            queues,
            outside: Some(&outside),
        }
        .add(&ns);
        let peer = testkit::netns::Uplink::PEER;
        ip_in(
            &outside,
            &["addr", "add", &format!("{outside_ip}/24"), "dev", peer],
        );
        (ns, outside)
    }

    /// `<kind><pid><tag>`: what every namespace of this node starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// An agent started elsewhere, to be killed on drop like one of [`Node::start_agent`].
    pub fn adopt_agent(&mut self, agent: Child) {
        self.agent = Some(agent);
    }

    /// Whether the agent started here is still running.
    pub fn agent_running(&mut self) -> bool {
        self.agent
            .as_mut()
            .is_some_and(|a| a.try_wait().ok().flatten().is_none())
    }

    /// The running agent, no longer killed on drop (the caller stops it).
    pub fn take_agent(&mut self) -> Option<Child> {
        self.agent.take()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The agent's status through its API socket.
    pub fn status(&self) -> agent_api::AgentStatus {
        agent_api::call(
            &self.socket(),
            &agent_api::Request::Status,
            Duration::from_secs(5),
        )
        .expect("status call")
        .into_result()
        .expect("status answer")
        .expect("status body")
    }

    /// Starts `kxdp agent --node node1` in `ns` on the state directory with `extra`
    /// arguments; returns its stdout lines.
    pub fn start_agent(&mut self, ns: &str, extra: &[&str]) -> mpsc::Receiver<String> {
        let mut agent = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg(env!("CARGO_BIN_EXE_kxdp"))
            .args(["agent", "--node", "node1", "--state"])
            .arg(self.state_dir())
            .arg("--api-socket")
            .arg(self.socket())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .spawn()
            .expect("starting kxdp agent");
        let lines = testkit::process::stdout_lines(&mut agent);
        self.agent = Some(agent);
        lines
    }

    /// The agent's readiness line (panics with its log when none comes within 30 s).
    pub fn ready_line(&self, lines: &mpsc::Receiver<String>) -> String {
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no readiness line; log:\n{}", read(&self.log())))
    }

    /// SIGTERM to the agent; asserts it exits 0 (it must undo what it did).
    pub fn stop_agent(&mut self) {
        let agent = self.agent.take().expect("an agent is running");
        let status = testkit::process::stop_agent(agent, &self.log());
        assert!(
            status.success(),
            "agent exit {status:?}:\n{}",
            read(&self.log())
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn nsenter(ns: &str, cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(cmd)
        .args(args)
        .output()
        .unwrap()
}

pub fn ip_in(ns: &str, args: &[&str]) {
    let out = nsenter(ns, "ip", args);
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
