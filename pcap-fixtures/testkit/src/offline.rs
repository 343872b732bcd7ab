//! Packets through the pure pipeline with tables translated from a state directory: what
//! the offline tests of the model, the lab's manifests and the fixtures share.

use std::path::Path;

use datapath::conntrack::Flows;
use datapath::frame::{DEFAULT_HEADROOM, Frame};
use datapath::observer::Observer;
use datapath::policy::PolicyDirection;
use datapath::{PortId, Tables, Verdict, process};
use model::state::load_state_dir;
use model::translate::translate;

/// `0a:58:<IPv4>`: the MAC kxdp gives a pod or gateway, written out independently.
pub fn pod_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x0a, 0x58, ip[0], ip[1], ip[2], ip[3]]
}

/// Records what `process` says about a NetworkPolicy drop.
#[derive(Debug, Default)]
pub struct PolicyRecorder {
    pub policies: Vec<String>,
    pub direction: Option<&'static str>,
}

impl Observer for PolicyRecorder {
    fn policies(&mut self, names: &[&str]) {
        self.policies.extend(names.iter().map(|n| n.to_string()));
    }

    fn policy_direction(&mut self, direction: PolicyDirection) {
        self.direction = Some(direction.as_str());
    }
}

/// One packet through `process` with fresh flow state (a first packet): the verdict, the
/// frame as it left, and what the observer heard.
pub fn step(tables: &Tables, port: PortId, packet: &[u8]) -> (Verdict, Vec<u8>, PolicyRecorder) {
    let mut buf = vec![0u8; DEFAULT_HEADROOM + packet.len() + 256];
    let mut frame = Frame::load(&mut buf, DEFAULT_HEADROOM, packet).expect("buffer fits");
    let mut rec = PolicyRecorder::default();
    let mut flows = Flows::default();
    let verdict = process(
        tables,
        &mut flows,
        1_000_000_000,
        port,
        &mut frame,
        &mut rec,
    );
    (verdict, frame.data().to_vec(), rec)
}

/// Loads the state directory `dir` and translates it for each of `nodes`, asserting that
/// neither step warns (a warning means a test manifest is not what the test thinks).
pub fn tables_for(dir: &Path, tag: &str, nodes: &[&str], generation: u64) -> Vec<Tables> {
    let state = load_state_dir(dir).unwrap_or_else(|e| panic!("{tag}: {e}"));
    assert!(state.warnings.is_empty(), "{tag}: {:?}", state.warnings);
    nodes
        .iter()
        .map(|node| {
            let t = translate(&state.cluster, &state.config, node, generation)
                .unwrap_or_else(|e| panic!("{tag}: {node}: {e}"));
            assert!(
                t.warnings.is_empty(),
                "{tag}: {node}: translate warnings: {:?}",
                t.warnings
            );
            t.tables
        })
        .collect()
}
