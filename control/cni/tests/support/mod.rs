//! What kxdp-cni's end-to-end tests (tests/cni.rs) and its ADD benchmark (benches/add.rs)
//! share: the runtime's side (the built binary run with `CNI_*` in the environment and the
//! configuration on stdin, inside the node's namespace) and a fake agent serving the
//! agent_api socket from a thread inside that namespace.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use agent_api::{AgentStatus, Request, Response, serve_connection};
use serde_json::{Value, json};
use testkit::netns::Netns;

/// The kxdp-cni binary the runtime runs: `KXDP_CNI_BIN` when set (to run the tests and the
/// benchmark against another build of it, the static one say), else the one cargo built.
pub fn plugin_binary() -> PathBuf {
    std::env::var_os("KXDP_CNI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kxdp-cni")))
}

/// The fake agent: answers status/add_port/del_port/check_port like the contract says and
/// records every request. `add_port` also notes whether the host veth existed in the node
/// namespace at that moment (the real agent attaches XDP to it there).
pub struct FakeAgent {
    pub socket: PathBuf,
    calls: Arc<Mutex<Vec<Request>>>,
    pub veth_seen_at_add: Arc<Mutex<Vec<bool>>>,
    pub refuse_add: Arc<AtomicBool>,
    /// Answers everything "unavailable" (an agent that is stopping).
    pub unavailable: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    pub fn start(dir: &Path, node: &Netns) -> FakeAgent {
        FakeAgent::with_cidrs(dir, node, &["10.244.1.0/24"])
    }

    /// Serves from a thread inside `node`, so that "does the veth exist" is one
    /// `if_nametoindex` there (no tool run while a benchmark times the ADD).
    pub fn with_cidrs(dir: &Path, node: &Netns, pod_cidrs: &[&str]) -> FakeAgent {
        let pod_cidrs: Vec<String> = pod_cidrs.iter().map(|c| c.to_string()).collect();
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).expect("bind agent socket");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let veth_seen_at_add = Arc::new(Mutex::new(Vec::new()));
        let refuse_add = Arc::new(AtomicBool::new(false));
        let unavailable = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (calls, seen, refuse, not_now, stop) = (
                calls.clone(),
                veth_seen_at_add.clone(),
                refuse_add.clone(),
                unavailable.clone(),
                stop.clone(),
            );
            node.spawn(move || {
                let mut open: Vec<String> = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let mut handler = |req: Request| {
                        calls.lock().unwrap().push(req.clone());
                        if not_now.load(Ordering::SeqCst) {
                            return Response::unavailable("the agent is shutting down");
                        }
                        match req {
                            Request::Status => Response::status(AgentStatus {
                                node: "kcni-node".into(),
                                generation: 1,
                                workers: 2,
                                ports: open.clone(),
                                table_ports: vec![],
                                gateway: "10.244.1.1".into(),
                                pod_cidrs: pod_cidrs.clone(),
                                pod_mtu: 1450,
                                uplink: "eth0".into(),
                                uplink_found_by: "--uplink".into(),
                                state_source: "state directory /s".into(),
                                health_checks: Vec::new(),
                            }),
                            Request::AddPort { port, ifname, .. } => {
                                seen.lock().unwrap().push(link_exists(&ifname));
                                if refuse.load(Ordering::SeqCst) {
                                    Response::error("refused by the test")
                                } else {
                                    open.push(port);
                                    Response::ok()
                                }
                            }
                            Request::DelPort { port, .. } => {
                                open.retain(|p| *p != port);
                                Response::ok()
                            }
                            Request::CheckPort { port, .. } => {
                                if open.contains(&port) {
                                    Response::ok()
                                } else {
                                    Response::error(format!("port {port} is not open"))
                                }
                            }
                            Request::Stats => Response::error("the fake agent keeps no stats"),
                        }
                    };
                    let _ = serve_connection(stream, &mut handler);
                }
            })
        };
        FakeAgent {
            socket,
            calls,
            veth_seen_at_add,
            refuse_add,
            unavailable,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests since the last call.
    pub fn take_calls(&self) -> Vec<Request> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the calling thread's namespace has an interface `name`.
fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// One plugin run: exit success, stdout, stderr.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn expect_ok(self) -> Run {
        assert!(
            self.ok,
            "plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// The spec error object's code, after checking the object's shape.
    pub fn error_code(&self) -> u64 {
        assert!(!self.ok, "plugin succeeded: {}", self.stdout);
        let v = self.json();
        assert!(v["cniVersion"].is_string(), "{v}");
        assert!(v["msg"].is_string(), "{v}");
        assert!(v["details"].is_string(), "{v}");
        v["code"].as_u64().expect("code")
    }
}

/// The runtime's side: env + stdin, the plugin started in the node namespace (forked from
/// a thread inside it, as a runtime in the node's namespace starts it: no nsenter between).
pub struct Runtime<'a> {
    pub node: &'a Netns,
}

impl Runtime<'_> {
    pub fn run(&self, env: &[(&str, &str)], stdin: &str) -> Run {
        use std::io::Write;
        let binary = plugin_binary();
        self.node.within(|| {
            let mut child = Command::new(&binary)
                // A runtime's environment: a PATH and the CNI variables, nothing of ours.
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs(env.iter().copied())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(stdin.as_bytes())
                .expect("write stdin");
            let out = child.wait_with_output().expect("kxdp-cni");
            Run {
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            }
        })
    }

    pub fn attachment(&self, command: &str, container: &str, pod: &Pod<'_>, conf: &Value) -> Run {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container}",
            pod.name
        );
        self.run(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", &pod.netns_path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", &args),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
            &conf.to_string(),
        )
    }
}

pub struct Pod<'a> {
    pub name: &'a str,
    pub netns_path: String,
}

pub fn config(version: &str, network: &str, dir: &Path, socket: &Path, ipam: Value) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "kxdp-cni",
        "agentSocket": socket,
        "stateDir": dir.join("state"),
        "ipam": ipam,
    })
}

pub fn host_local(dir: &Path, range: Value) -> Value {
    json!({"type": "host-local", "ranges": [[range]], "dataDir": dir.join("ipam")})
}
