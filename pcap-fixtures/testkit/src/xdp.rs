//! What the AF_XDP root tests of xdp-redirect (the workers) and of the rig (generators,
//! sink, ceiling) share (feature `xdp`): interfaces by name, and the generator a test
//! that wants live frames runs with.

use rig::traffic::{GenMode, GenRequest, LiveFrames, PktgenError, choose, live_frames};
use xdp_redirect::Interface;

/// Interface `name` in the calling thread's namespace.
pub fn interface(name: &str) -> Interface {
    Interface::by_name(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    interface(name).index()
}

/// The generator a live-frames test runs with: live frames where the kernel allows them.
/// Where the probe proved that it refuses them (a kernel capability, the one reason a test
/// may run something else under `CI=true`), says so on stdout, checks that asking for live
/// frames gives the clear refusal, and returns the fan-out, whose checks run instead.
///
/// `KXDP_TEST_FALLBACK=1` runs the fallback where the kernel allows live frames too: how a
/// developer on such a kernel checks what CI's kernels run (the refusal checks need a
/// refusing kernel and do not run then).
pub fn live_frames_or_fallback(what: &str) -> GenMode {
    if std::env::var("KXDP_TEST_FALLBACK").as_deref() == Ok("1") {
        println!("{what}: KXDP_TEST_FALLBACK=1: checking the fan-out generator");
        return GenMode::FanOut;
    }
    match live_frames().expect("probing live frames") {
        LiveFrames::Allowed => GenMode::LiveFrames,
        LiveFrames::Refused(answer) => {
            crate::root::skipped(
                what,
                &format!(
                    "the kernel refuses BPF_PROG_TEST_RUN live frames ({answer}): checked the fallback, the fan-out generator, instead"
                ),
            );
            let refusal = choose(GenRequest::Exactly(GenMode::LiveFrames))
                .expect_err("asking for live frames where the kernel refuses them");
            assert!(
                matches!(refusal, PktgenError::LiveFramesRefused(_)),
                "{refusal}"
            );
            assert!(
                refusal
                    .to_string()
                    .contains("refuses BPF_PROG_TEST_RUN with live frames"),
                "a clear refusal: {refusal}"
            );
            let auto = choose(GenRequest::Auto).expect("auto choice");
            assert_eq!(auto.mode, GenMode::FanOut, "auto falls back: {auto:?}");
            GenMode::FanOut
        }
    }
}
