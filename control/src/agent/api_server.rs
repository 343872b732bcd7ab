//! The agent's local API socket (`agent_api`): a listener thread accepts connections and
//! hands each request to the control thread, which owns all state, and waits for its
//! answer. One request at a time: CNI calls are rare and each must see the previous one's
//! effect.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;

use crossbeam::channel::{Sender, bounded};

use crate::agent::{AgentError, Event};
use agent_api::{Request, Response, serve_connection};

/// The bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct ApiSocket {
    path: PathBuf,
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (creating its directory) and serves it on a thread that forwards every
/// request to `events`. A socket file left by a dead agent is replaced; one a live agent
/// answers on is an error, so two agents never fight over a node.
pub fn start(path: &Path, events: Sender<Event>) -> Result<ApiSocket, AgentError> {
    let failed = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::ApiSocket { step, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed("creating", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AgentError::ApiSocketTaken(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(failed("removing stale", path))?;
    }
    let listener = UnixListener::bind(path).map_err(failed("binding", path))?;
    thread::Builder::new()
        .name("kxdp-api".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let events = events.clone();
                let mut handler = move |req: Request| -> Response {
                    let (tx, rx) = bounded(1);
                    // Unavailable, not refused: kxdp-cni tells the runtime to try again later.
                    if events.send(Event::Api(req, tx)).is_err() {
                        return Response::unavailable("the agent is shutting down");
                    }
                    rx.recv()
                        .unwrap_or_else(|_| Response::unavailable("the agent is shutting down"))
                };
                if let Err(e) = serve_connection(stream, &mut handler) {
                    tracing::debug!("api connection: {e}");
                }
            }
        })
        .map_err(|source| AgentError::Thread {
            thread: "API",
            source,
        })?;
    Ok(ApiSocket {
        path: path.to_path_buf(),
    })
}
