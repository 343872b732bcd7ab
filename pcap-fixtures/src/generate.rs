//! Writes every case directory (and the demo pcaps) from the definitions in
//! [`crate::cases`]. Deterministic: fixed timestamps, fixed order, no randomness, so a
//! regeneration is byte-identical and `tests/scenarios.rs` can insist on it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::case::{Case, Expect, StateSource};
use crate::pcapio::{self, PcapError};
use crate::spec::{
    CASE_FILE, CaseFile, EXPECTED_DIR, InputFile, UpdateFile, VERDICTS_FILE, VerdictLine,
};
use crate::{cases, demo};

/// Why the cases could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("two cases are named {0}")]
    DuplicateName(&'static str),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("case {case}: encoding {what}: {source}")]
    Json {
        case: &'static str,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("case {case}: step on an unlisted port {port}")]
    UnlistedPort { case: &'static str, port: String },
    #[error("case {case}: {problem}")]
    Order {
        case: &'static str,
        problem: OrderError,
    },
}

/// How a case's steps and updates are out of the order replay processes them in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("steps are not in processing order")]
    Steps,
    /// `update` counts from 1, as the case's `updates` are numbered in messages.
    #[error("update {update} at {at_ns} ns does not fall between its steps")]
    Update { update: usize, at_ns: u64 },
}

/// A frame and its timestamp, as a pcap holds it.
type TimedFrame<'a> = (u64, &'a [u8]);

/// The example state dir, as a case dir sees it.
pub const EXAMPLE_STATE: &str = "../../examples/two-node";

/// Writes `root/cases/<name>/` for every case (replacing what was there) and the demo
/// pcaps into `root/examples/two-node/`. `root` is the pcap-fixtures crate directory.
/// Returns the case names.
pub fn write_all(root: &Path) -> Result<Vec<String>, GenerateError> {
    let mut names = Vec::new();
    for case in cases::all() {
        if names.iter().any(|n| n == case.name) {
            return Err(GenerateError::DuplicateName(case.name));
        }
        write_case(&root.join("cases").join(case.name), &case)?;
        names.push(case.name.to_string());
    }
    let examples = root.join("examples").join("two-node");
    fs::create_dir_all(&examples).map_err(io(&examples))?;
    for (file, packets) in demo::files() {
        let refs: Vec<(u64, &[u8])> = packets.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        pcapio::write(&examples.join(file), &refs)?;
    }
    Ok(names)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes one case directory from scratch.
pub fn write_case(dir: &Path, case: &Case) -> Result<(), GenerateError> {
    check_order(case).map_err(|problem| GenerateError::Order {
        case: case.name,
        problem,
    })?;
    let json = |what| {
        move |source| GenerateError::Json {
            case: case.name,
            what,
            source,
        }
    };
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    let input_dir = dir.join("input");
    let expected_dir = dir.join(EXPECTED_DIR);
    fs::create_dir_all(&input_dir).map_err(io(&input_dir))?;
    fs::create_dir_all(&expected_dir).map_err(io(&expected_dir))?;

    let state = write_state(dir, "state", &case.state)?;
    let mut updates = Vec::new();
    for (i, update) in case.updates.iter().enumerate() {
        updates.push(UpdateFile {
            at_ns: update.at_ns,
            state: write_state(dir, &format!("state-{}", i + 1), &update.state)?,
        });
    }

    let mut inputs = Vec::new();
    for port in &case.inputs {
        let file = format!("input/{port}.pcap");
        let packets: Vec<(u64, &[u8])> = case
            .steps
            .iter()
            .filter(|s| &s.port == port)
            .map(|s| (s.ts_ns, s.frame.as_slice()))
            .collect();
        pcapio::write(&dir.join(&file), &packets)?;
        inputs.push(InputFile {
            port: port.clone(),
            file,
        });
    }

    let mut outputs: Vec<(&str, Vec<TimedFrame<'_>>)> = Vec::new();
    let mut verdicts = String::new();
    let mut index_in_file = vec![0usize; case.inputs.len()];
    for step in &case.steps {
        let input = case
            .inputs
            .iter()
            .position(|p| p == &step.port)
            .ok_or_else(|| GenerateError::UnlistedPort {
                case: case.name,
                port: step.port.clone(),
            })?;
        let mut line = VerdictLine {
            in_port: step.port.clone(),
            index: index_in_file[input],
            verdict: "drop",
            out_port: None,
            reason: None,
            service: step.service.clone(),
            backend: step.backend.clone(),
            policy: step.policy.clone(),
            direction: step.direction,
        };
        index_in_file[input] += 1;
        match &step.expect {
            Expect::Forward { port, frame } => {
                line.verdict = "forward";
                line.out_port = Some(port.clone());
                match outputs.iter_mut().find(|(p, _)| p == port) {
                    Some((_, list)) => list.push((step.ts_ns, frame)),
                    None => outputs.push((port, vec![(step.ts_ns, frame)])),
                }
            }
            Expect::Pass => line.verdict = "pass",
            Expect::Drop(reason) => line.reason = Some((*reason).to_string()),
        }
        verdicts.push_str(&serde_json::to_string(&line).map_err(json(VERDICTS_FILE))?);
        verdicts.push('\n');
    }
    for (port, packets) in &outputs {
        pcapio::write(&expected_dir.join(format!("{port}.pcap")), packets)?;
    }
    let verdicts_path = expected_dir.join(VERDICTS_FILE);
    fs::write(&verdicts_path, verdicts).map_err(io(&verdicts_path))?;

    let spec = CaseFile {
        description: case.description.to_string(),
        node: case.node.to_string(),
        state,
        inputs,
        updates,
    };
    let mut text = serde_json::to_string_pretty(&spec).map_err(json(CASE_FILE))?;
    text.push('\n');
    let path = dir.join(CASE_FILE);
    fs::write(&path, text).map_err(io(&path))
}

/// Writes a state directory named `name` into the case directory (or, for the example,
/// writes nothing) and returns its path relative to the case directory.
fn write_state(dir: &Path, name: &str, source: &StateSource) -> Result<String, GenerateError> {
    match source {
        StateSource::TwoNodeExample => Ok(EXAMPLE_STATE.to_string()),
        StateSource::Own(def) => {
            let state_dir = dir.join(name);
            fs::create_dir_all(&state_dir).map_err(io(&state_dir))?;
            for (file, text) in def.files() {
                let path = state_dir.join(file);
                fs::write(&path, text).map_err(io(&path))?;
            }
            Ok(name.to_string())
        }
    }
}

/// The steps must be listed in the order replay processes them (§4: by timestamp across
/// files, ties to the file named first, each file in its own order), or the expected
/// verdicts would be in the wrong order.
fn check_order(case: &Case) -> Result<(), OrderError> {
    for pair in case.steps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let rank = |p: &str| case.inputs.iter().position(|i| i == p);
        let ordered = a.ts_ns < b.ts_ns || (a.ts_ns == b.ts_ns && rank(&a.port) <= rank(&b.port));
        if !ordered {
            return Err(OrderError::Steps);
        }
    }
    // Replay applies an update before the first packet at or after its time: every step
    // listed before it must be earlier, every step after it no earlier.
    let mut last_at = 0;
    for (i, u) in case.updates.iter().enumerate() {
        let before_ok = case.steps[..u.after_steps.min(case.steps.len())]
            .iter()
            .all(|s| s.ts_ns < u.at_ns);
        let after_ok = case
            .steps
            .get(u.after_steps..)
            .is_some_and(|rest| rest.iter().all(|s| s.ts_ns >= u.at_ns));
        if !before_ok || !after_ok || u.at_ns < last_at {
            return Err(OrderError::Update {
                update: i + 1,
                at_ns: u.at_ns,
            });
        }
        last_at = u.at_ns;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{BASE_NS, STEP_NS, Update};

    fn two_steps() -> Case {
        let mut c = Case::new("t", "t", StateSource::TwoNodeExample);
        c.send("uplink", vec![0; 14], Expect::Pass);
        c.update(StateSource::TwoNodeExample);
        c.send("uplink", vec![0; 14], Expect::Pass);
        c
    }

    #[test]
    fn an_update_between_its_steps_is_accepted() {
        let c = two_steps();
        assert_eq!(c.updates[0].at_ns, BASE_NS + STEP_NS);
        assert_eq!(c.updates[0].after_steps, 1);
        check_order(&c).expect("in order");
    }

    #[test]
    fn an_update_replay_would_apply_elsewhere_is_refused() {
        // Replay applies an update before the first packet at or after its time: one
        // listed after a step that is not earlier would land before that step.
        let mut c = two_steps();
        c.updates[0] = Update {
            at_ns: BASE_NS,
            ..c.updates[0].clone()
        };
        assert!(check_order(&c).is_err());
        let mut c = two_steps();
        c.updates[0].at_ns = BASE_NS + 2 * STEP_NS;
        assert!(check_order(&c).is_err());
    }
}
