//! The agent's local API socket (`agent_api`): a listener thread accepts connections and
//! hands each request to the control thread, which owns all state, and waits for its
//! answer. One request at a time: CNI calls are rare and each must see the previous one's
//! effect.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;

use crossbeam::channel::{Sender, bounded};

use crate::agent::Event;
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
pub fn start(path: &Path, events: Sender<Event>) -> Result<ApiSocket, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{}: another agent is answering on this socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    thread::Builder::new()
        .name("kxdp-api".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let events = events.clone();
                let mut handler = move |req: Request| -> Response {
                    let (tx, rx) = bounded(1);
                    if events.send(Event::Api(req, tx)).is_err() {
                        return Response::error("the agent is shutting down");
                    }
                    rx.recv()
                        .unwrap_or_else(|_| Response::error("the agent is shutting down"))
                };
                if let Err(e) = serve_connection(stream, &mut handler) {
                    tracing::debug!("api connection: {e}");
                }
            }
        })
        .map_err(|e| format!("starting the API thread: {e}"))?;
    Ok(ApiSocket {
        path: path.to_path_buf(),
    })
}
