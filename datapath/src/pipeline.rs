//! `process`: the one function every driver calls for every packet.

use crate::conntrack::Flows;
use crate::frame::Frame;
use crate::observer::Observer;
use crate::tables::{PortId, Tables};
use crate::verdict::{DropReason, Verdict};

/// Time in nanoseconds on the driver's clock (monotonic live, pcap timestamps in replay).
pub type Nanos = u64;

/// Decides what happens to one frame that arrived on `in_port`; rewrites it in place.
pub fn process<O: Observer>(
    tables: &Tables,
    flows: &mut Flows,
    now: Nanos,
    in_port: PortId,
    frame: &mut Frame<'_>,
    obs: &mut O,
) -> Verdict {
    let _ = (tables, flows, now, in_port, frame, obs);
    Verdict::Drop(DropReason::UnknownPort)
}
