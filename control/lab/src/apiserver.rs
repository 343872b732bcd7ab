//! `--source api`: the agents take the cluster state from `kxdp-lab apiserver-double` (a test
//! double of the API server's list/watch protocol, not an API server) instead of reading
//! DIR/state themselves.
//!
//! The double runs in `<p>-fabric` on the bridge's address (layout::API_SERVER_IP), so
//! both agents reach it over their uplinks, as nodes reach a real API endpoint, and no
//! packet leaves the lab's namespaces. It serves the objects the lab writes to DIR/state
//! and follows that directory: when the lab writes the Pods after CNI ADD, the double
//! applies the difference and the agents' watches see it. The agents still get
//! `--state DIR/state`, for its kxdp.yaml only (as a mounted ConfigMap).
//!
//! The agents bootstrap as on a node without kube-proxy: `--in-cluster` with a service
//! account (a token and the CA of the lab's own PKI, made with openssl under
//! DIR/apiserver), `KUBERNETES_SERVICE_HOST` at the `kubernetes` Service's ClusterIP, which
//! nothing routes before kxdp runs, and `--api-server` naming the API server itself. The
//! double answers only requests with the token, behind TLS: socat's OpenSSL listener on
//! API_SERVER_PORT with a certificate for API_SERVER_IP, forwarding to the double's plain
//! port (the double speaks plain HTTP; socat is a recorded process like the others).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Lab;
use super::cmd;
use super::error::LabError;
use super::layout::{API_SERVER_IP, API_SERVER_PLAIN_PORT, API_SERVER_PORT};
use super::procs::{self, ProcRecord};
use crate::apiserver_double::READY_PREFIX;

pub const LABEL: &str = "apiserver-double";
/// The TLS front's process record.
pub const TLS_LABEL: &str = "apiserver-tls";
/// The service account's token: the double refuses requests without it.
pub const TOKEN: &str = "kxdp-lab-service-account-token";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The double ends at once on SIGTERM (it has nothing to undo).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn dir(lab: &Lab) -> PathBuf {
    lab.dir.join("apiserver")
}

/// The kubeconfig the double writes and the agents read.
pub fn kubeconfig(lab: &Lab) -> PathBuf {
    dir(lab).join("kubeconfig")
}

pub fn log(lab: &Lab) -> PathBuf {
    dir(lab).join("apiserver.log")
}

/// Where the agents reach the API server (HTTPS, through the TLS front).
pub fn address() -> SocketAddr {
    SocketAddr::from((API_SERVER_IP, API_SERVER_PORT))
}

/// The double's plain-HTTP address behind the TLS front.
pub fn plain_address() -> SocketAddr {
    SocketAddr::from((API_SERVER_IP, API_SERVER_PLAIN_PORT))
}

/// The service account as the kubelet mounts it into a pod: `token`, `ca.crt`,
/// `namespace`.
pub fn service_account_dir(lab: &Lab) -> PathBuf {
    dir(lab).join("serviceaccount")
}

fn pki_dir(lab: &Lab) -> PathBuf {
    dir(lab).join("pki")
}

/// Starts the double in the fabric namespace and waits for its ready line (it has read
/// DIR/state, listens, and has written the kubeconfig), then its TLS front; writes the
/// service account the agents use.
pub fn start(lab: &Lab) -> Result<ProcRecord, LabError> {
    let d = dir(lab);
    std::fs::create_dir_all(&d).map_err(|e| LabError::io(&d, e))?;
    make_pki(&pki_dir(lab), &format!("IP:{API_SERVER_IP}"))?;
    write_service_account(lab)?;
    let args: Vec<String> = vec![
        "apiserver-double".into(),
        "--manifests".into(),
        lab.state_dir().display().to_string(),
        "--listen".into(),
        plain_address().to_string(),
        "--kubeconfig-out".into(),
        kubeconfig(lab).display().to_string(),
        "--token".into(),
        TOKEN.into(),
    ];
    let rec = procs::spawn(
        &lab.procs_dir(),
        LABEL,
        &lab.names().fabric(),
        &lab.tools_binary()?,
        &args,
        &d.join("apiserver.out"),
        &log(lab),
    )?;
    procs::wait_for_line(&rec, READY_PREFIX, READY_TIMEOUT)?;
    start_tls_front(lab)?;
    Ok(rec)
}

/// socat's OpenSSL listener on API_SERVER_PORT, one forked child per connection, each
/// forwarding to the double; waits until it accepts connections.
fn start_tls_front(lab: &Lab) -> Result<ProcRecord, LabError> {
    let pki = pki_dir(lab);
    let args = vec![
        format!(
            "OPENSSL-LISTEN:{},bind={},reuseaddr,fork,verify=0,cert={},key={}",
            API_SERVER_PORT,
            API_SERVER_IP,
            pki.join("server.crt").display(),
            pki.join("server.key").display()
        ),
        format!("TCP:{}", plain_address()),
    ];
    let d = dir(lab);
    let rec = procs::spawn(
        &lab.procs_dir(),
        TLS_LABEL,
        &lab.names().fabric(),
        std::path::Path::new("socat"),
        &args,
        &d.join("tls.out"),
        &d.join("tls.log"),
    )?;
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        // A TCP connection that opens and closes: the listener is up.
        let mut probe = cmd::in_netns(&lab.names().fabric(), "socat");
        probe.args(["-u", "OPEN:/dev/null", &format!("TCP:{}", address())]);
        if cmd::run(&mut probe).is_ok() {
            return Ok(rec);
        }
        if std::time::Instant::now() > deadline {
            return Err(LabError::Setup(format!(
                "the API server's TLS front did not listen on {} within {} s; log {}",
                address(),
                READY_TIMEOUT.as_secs(),
                d.join("tls.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PKI made with openssl: a CA, and an API server certificate with the subject
/// alternative names `san` (`IP:192.168.77.1`, `IP:127.0.0.1,DNS:...`) signed by it (ca.crt,
/// server.crt, server.key in `pki`).
pub fn make_pki(pki: &std::path::Path, san: &str) -> Result<(), LabError> {
    std::fs::create_dir_all(pki).map_err(|e| LabError::io(pki, e))?;
    let openssl = |args: &[&str]| -> Result<(), LabError> {
        let mut c = std::process::Command::new("openssl");
        c.args(args).current_dir(pki);
        cmd::run(&mut c).map(drop)
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=kxdp-lab-ca",
        "-days",
        "7",
    ])?;
    let ext = pki.join("san.ext");
    let san = format!("subjectAltName={san}\n");
    std::fs::write(&ext, san).map_err(|e| LabError::io(&ext, e))?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "7",
        "-extfile",
        "san.ext",
    ])
}

fn write_service_account(lab: &Lab) -> Result<(), LabError> {
    let sa = service_account_dir(lab);
    std::fs::create_dir_all(&sa).map_err(|e| LabError::io(&sa, e))?;
    let write = |name: &str, text: &[u8]| {
        let path = sa.join(name);
        std::fs::write(&path, text).map_err(|e| LabError::io(&path, e))
    };
    write("token", TOKEN.as_bytes())?;
    write("namespace", b"kube-system")?;
    let ca = pki_dir(lab).join("ca.crt");
    let ca_text = std::fs::read(&ca).map_err(|e| LabError::io(&ca, e))?;
    write("ca.crt", &ca_text)
}
