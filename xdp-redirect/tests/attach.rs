//! Attaches the programs to real interfaces in a namespace `kxld-<pid>-<n>` and checks
//! what the kernel reports (`ip -d link show`): the program's id and the XDP mode. The
//! namespace guard deletes the namespace, its interfaces and with them any attachment even
//! when a test fails.
//!
//! Needs root; skipped with a message otherwise, except under `CI=true`, where it fails.

mod support;

use aya::Ebpf;
use support::{Netns, root_or_skip};
use xdp_redirect::{
    AttachMode, HOST_PROGRAM, Interface, POD_PROGRAM, UPLINK_PROGRAM, XdpError, attach,
    attach_by_index, attach_by_name, detach, load, program,
};

/// The XDP program the kernel reports on `dev`: its attach mode as `ip` names it (`xdp`
/// for driver mode, `xdpgeneric` for SKB mode) and its id; `None` without one.
fn xdp_on(netns: &Netns, dev: &str) -> Option<(String, u32)> {
    let out = netns.ip(&["-d", "link", "show", "dev", dev]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let id = words
        .windows(3)
        .find(|w| w[0] == "prog/xdp" && w[1] == "id")
        .map(|w| {
            w[2].parse::<u32>()
                .unwrap_or_else(|e| panic!("prog id in {out}: {e}"))
        })?;
    let mode = words
        .iter()
        .find(|w| ["xdp", "xdpgeneric", "xdpoffload", "xdpmulti"].contains(w))
        .unwrap_or_else(|| panic!("XDP program without a mode in {out}"));
    Some((mode.to_string(), id))
}

fn program_id(ebpf: &Ebpf, name: &'static str) -> u32 {
    program(ebpf, name).unwrap().info().unwrap().id()
}

#[test]
fn pod_and_host_programs_attach_natively_to_a_veth_pair_and_detach() {
    if !root_or_skip("XDP attach") {
        return;
    }
    let netns = support::netns();
    netns.veth_pair("kxld-pod", "kxld-dp", 2);
    netns.within(|| {
        let mut ebpf = load().unwrap();
        let pod = Interface::by_name("kxld-pod").unwrap();
        let dp_index = Interface::by_name("kxld-dp").unwrap().index();
        assert_eq!(Interface::by_index(pod.index()).unwrap(), pod);

        let on_pod = attach(&mut ebpf, POD_PROGRAM, &pod).unwrap();
        let on_dp = attach_by_index(&mut ebpf, HOST_PROGRAM, dp_index).unwrap();
        for (attachment, dev, name) in [
            (&on_pod, "kxld-pod", POD_PROGRAM),
            (&on_dp, "kxld-dp", HOST_PROGRAM),
        ] {
            assert_eq!(attachment.mode(), AttachMode::Driver, "{dev}");
            assert_eq!(attachment.program(), name);
            assert_eq!(attachment.interface().name(), dev);
            assert_eq!(
                xdp_on(&netns, dev),
                Some(("xdp".to_string(), program_id(&ebpf, name))),
                "{dev}"
            );
        }

        detach(&mut ebpf, on_pod).unwrap();
        assert_eq!(xdp_on(&netns, "kxld-pod"), None);
        // The other attachment is untouched.
        assert!(xdp_on(&netns, "kxld-dp").is_some());
        detach(&mut ebpf, on_dp).unwrap();
        assert_eq!(xdp_on(&netns, "kxld-dp"), None);

        // Detached programs can be attached again.
        let again = attach_by_name(&mut ebpf, POD_PROGRAM, "kxld-pod").unwrap();
        assert!(xdp_on(&netns, "kxld-pod").is_some());
        detach(&mut ebpf, again).unwrap();
        assert_eq!(xdp_on(&netns, "kxld-pod"), None);
    });
}

#[test]
fn interface_without_native_xdp_gets_skb_mode() {
    if !root_or_skip("XDP attach") {
        return;
    }
    let netns = support::netns();
    netns.within(|| {
        let mut ebpf = load().unwrap();
        // Loopback has no native XDP (and this is the namespace's own).
        let attachment = attach_by_name(&mut ebpf, UPLINK_PROGRAM, "lo").unwrap();
        assert_eq!(attachment.mode(), AttachMode::Skb);
        assert_eq!(
            xdp_on(&netns, "lo"),
            Some(("xdpgeneric".to_string(), program_id(&ebpf, UPLINK_PROGRAM)))
        );
        detach(&mut ebpf, attachment).unwrap();
        assert_eq!(xdp_on(&netns, "lo"), None);
    });
}

#[test]
fn errors_name_the_interface() {
    if !root_or_skip("XDP attach") {
        return;
    }
    let netns = support::netns();
    netns.veth_pair("kxld-pod", "kxld-dp", 1);
    netns.within(|| {
        let mut ebpf = load().unwrap();

        let missing = attach_by_name(&mut ebpf, POD_PROGRAM, "kxld-nothere").unwrap_err();
        assert!(matches!(missing, XdpError::UnknownInterface(_)));
        assert!(missing.to_string().contains("kxld-nothere"), "{missing}");
        let missing = attach_by_index(&mut ebpf, POD_PROGRAM, 999_999).unwrap_err();
        assert!(missing.to_string().contains("999999"), "{missing}");

        // A second program on the same interface is refused in both modes.
        let first = attach_by_name(&mut ebpf, POD_PROGRAM, "kxld-pod").unwrap();
        let busy = attach_by_name(&mut ebpf, HOST_PROGRAM, "kxld-pod").unwrap_err();
        assert!(matches!(busy, XdpError::Attach { .. }), "{busy}");
        let message = busy.to_string();
        assert!(
            message.contains("kxld-pod") && message.contains(HOST_PROGRAM),
            "{message}"
        );
        // ... and leaves the first one in place.
        assert_eq!(
            xdp_on(&netns, "kxld-pod").map(|(_, id)| id),
            Some(program_id(&ebpf, POD_PROGRAM))
        );
        detach(&mut ebpf, first).unwrap();
    });
}

#[test]
fn detach_after_the_interface_is_gone_succeeds() {
    if !root_or_skip("XDP attach") {
        return;
    }
    let netns = support::netns();
    netns.veth_pair("kxld-pod", "kxld-dp", 1);
    netns.within(|| {
        let mut ebpf = load().unwrap();
        let attachment = attach_by_name(&mut ebpf, POD_PROGRAM, "kxld-pod").unwrap();
        // What a CNI DEL does before the agent hears of it.
        netns.ip(&["link", "del", "kxld-pod"]);
        detach(&mut ebpf, attachment).unwrap();
    });
}

#[test]
fn dropping_the_loaded_programs_detaches_them() {
    if !root_or_skip("XDP attach") {
        return;
    }
    let netns = support::netns();
    netns.veth_pair("kxld-pod", "kxld-dp", 1);
    netns.within(|| {
        let mut ebpf = load().unwrap();
        let _pod = attach_by_name(&mut ebpf, POD_PROGRAM, "kxld-pod").unwrap();
        let _dp = attach_by_name(&mut ebpf, HOST_PROGRAM, "kxld-dp").unwrap();
        assert!(xdp_on(&netns, "kxld-pod").is_some());
        assert!(xdp_on(&netns, "kxld-dp").is_some());
        drop(ebpf);
        assert_eq!(xdp_on(&netns, "kxld-pod"), None);
        assert_eq!(xdp_on(&netns, "kxld-dp"), None);
    });
}
