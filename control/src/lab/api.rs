//! Talking to an agent over its local API socket (agent_api's wire format: one JSON
//! request line, one JSON response line).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::error::LabError;

/// `{"op":"status"}`: the `status` object of the answer, as JSON (whatever the agent
/// reports, so diagnostics show fields this code does not know about too).
pub fn status(node: &str, socket: &Path, timeout: Duration) -> Result<Value, LabError> {
    let err = |detail: String| LabError::Agent {
        node: node.to_string(),
        detail,
    };
    let stream = UnixStream::connect(socket)
        .map_err(|e| err(format!("connect {}: {e}", socket.display())))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| err(format!("socket timeout: {e}")))?;
    (&stream)
        .write_all(b"{\"op\":\"status\"}\n")
        .map_err(|e| err(format!("send status request: {e}")))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| err(format!("read status answer: {e}")))?;
    let answer: Value = serde_json::from_str(&line)
        .map_err(|e| err(format!("status answer {line:?} is not JSON: {e}")))?;
    if answer.get("ok") != Some(&Value::Bool(true)) {
        return Err(err(format!("status answered {answer}")));
    }
    answer
        .get("status")
        .cloned()
        .ok_or_else(|| err(format!("status answer without status: {answer}")))
}

/// The `table_ports` of a status object.
pub fn table_ports(status: &Value) -> Vec<String> {
    status
        .get("table_ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ports_are_read_from_status() {
        let s: Value =
            serde_json::json!({"node": "node1", "table_ports": ["pod-demo-web-1", "uplink"]});
        assert_eq!(table_ports(&s), vec!["pod-demo-web-1", "uplink"]);
        assert!(table_ports(&serde_json::json!({})).is_empty());
    }
}
