//! Container logs as containerd writes them for CRI: one line per entry,
//! `TIMESTAMP STREAM TAG CONTENT` (e.g. `2026-12-07T18:00:00.1Z stdout F kxdp agent ready`),
//! TAG `P` for a partial line that the next entry continues.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::super::error::LabError;

const POLL: Duration = Duration::from_millis(20);

/// The complete stdout lines of a CRI log, partial entries joined.
pub fn stdout_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for entry in text.lines() {
        let mut fields = entry.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag), content) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if stream != "stdout" {
            continue;
        }
        pending.push_str(content.unwrap_or(""));
        if tag != "P" {
            lines.push(std::mem::take(&mut pending));
        }
    }
    lines
}

/// Waits until the log at `path` has a stdout line starting with `prefix` and returns it;
/// `gone` says (with why) when the container stopped, which ends the wait early.
pub fn wait_for_line(
    path: &Path,
    prefix: &str,
    timeout: Duration,
    what: &str,
    gone: &dyn Fn() -> Option<String>,
) -> Result<String, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = stdout_lines(&text)
            .into_iter()
            .find(|l| l.starts_with(prefix))
        {
            return Ok(line);
        }
        if let Some(why) = gone() {
            return Err(LabError::Setup(format!(
                "{what} stopped before printing {prefix:?} ({why}); its log ends with:\n{}",
                tail(path, 20)
            )));
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: format!("{what} to print {prefix:?}"),
                detail: format!("its log ends with:\n{}", tail(path, 20)),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The last `n` entries of a log, as they are written.
pub fn tail(path: &Path, n: usize) -> String {
    super::super::procs::tail(path, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_are_read() {
        let log = "2026-12-07T18:00:00.1Z stdout F first line\n\
                   2026-12-07T18:00:00.2Z stderr F warn: x\n\
                   2026-12-07T18:00:00.3Z stdout P kxdp agent \n\
                   2026-12-07T18:00:00.4Z stdout F ready node=node1\n\
                   garbage\n\
                   2026-12-07T18:00:00.5Z stdout F \n";
        assert_eq!(
            stdout_lines(log),
            vec!["first line", "kxdp agent ready node=node1", ""]
        );
    }
}
