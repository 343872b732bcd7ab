//! Running an XDP program with BPF_PROG_TEST_RUN in live-frames mode: the kernel builds
//! real frames from `frame` (once per page of its page pool, then recycles the pages
//! untouched) and handles the program's verdict as a driver would; XDP_TX and
//! XDP_REDIRECT transmit. This is the in-kernel generator (ARCHITECTURE.md §5);
//! xdp-redirect's worker tests drive their own template program with it too.

use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};

/// Frames the kernel runs between flushes (and page-pool size): NAPI's weight, so one
/// flush never overfills a veth peer's 256-entry ring.
pub const LIVE_BATCH: u32 = 64;

/// Runs `program` `count` times in live-frames mode on `frame` as if it had arrived on
/// rx queue 0 of interface `ifindex` (of the calling thread's network namespace), so
/// XDP_TX sends out of that interface. Returns when all runs are done.
pub fn run_live_frames(
    program: &Xdp,
    ifindex: u32,
    frame: &[u8],
    count: u32,
) -> Result<(), ProgramError> {
    run_live(program, ifindex, frame, 0, count)
}

/// [`run_live_frames`] where the first `meta_len` bytes of `buf` are XDP metadata in front
/// of the frame (a multiple of 4, at most 32).
pub(crate) fn run_live(
    program: &Xdp,
    ifindex: u32,
    buf: &[u8],
    meta_len: u32,
    count: u32,
) -> Result<(), ProgramError> {
    if count == 0 {
        return Ok(());
    }
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    // struct xdp_md: data, data_end, data_meta (offsets into `buf`), ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    for (i, v) in [meta_len, len, 0, ifindex, 0, 0].into_iter().enumerate() {
        ctx[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    program.test_run(TestRunOptions {
        data_in: Some(buf),
        ctx_in: Some(&ctx),
        repeat: count,
        attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
        ..TestRunOptions::default()
    })?;
    Ok(())
}
