//! `kxdp replay` end to end: the built binary on temporary directories.
//!
//! These tests check the driver's contract (docs/replay.md: arguments, errors, input
//! formats, ordering, output files), not what the pipeline decides about a packet; the
//! pipeline's decisions are tested where it lives.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use serde_json::Value;
use testkit::frames::Headers;

const CLIENT: &str = "pod-demo-client";
const WEB0: &str = "pod-demo-web-0";
const CLIENT_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 5];
const GATEWAY_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];

fn state_dir() -> PathBuf {
    testkit::paths::example("two-node")
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("replay_cli")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// client (10.244.1.5) -> web Service VIP, TCP SYN, as an Ethernet frame.
fn client_syn(src_port: u16) -> Vec<u8> {
    Headers::new(CLIENT_MAC, GATEWAY_MAC, [10, 244, 1, 5], [10, 96, 0, 10]).tcp_syn(src_port, 80, 1)
}

/// web-0 (10.244.1.6) -> client, UDP, as an Ethernet frame.
fn web0_udp(src_port: u16) -> Vec<u8> {
    Headers::new(
        [0x0a, 0x58, 10, 244, 1, 6],
        GATEWAY_MAC,
        [10, 244, 1, 6],
        [10, 244, 1, 5],
    )
    .udp(src_port, 53, b"hello")
}

/// client -> web-0 as a bare IPv4 packet (no link header).
fn raw_ipv4() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4([10, 244, 1, 5], [10, 244, 1, 6], 64)
        .udp(40000, 8080)
        .write(&mut out, b"raw")
        .expect("build packet");
    out
}

/// Writes a classic pcap; each packet is (time in µs, bytes, original length).
fn write_pcap_with(path: &Path, datalink: DataLink, packets: &[(u64, Vec<u8>, u32)]) {
    let file = fs::File::create(path).expect("create pcap");
    let header = PcapHeader {
        datalink,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("pcap header");
    for (us, data, orig_len) in packets {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(*us),
            *orig_len,
            data,
        ))
        .expect("write packet");
    }
}

fn write_pcap(path: &Path, packets: &[(u64, Vec<u8>)]) {
    let full: Vec<_> = packets
        .iter()
        .map(|(t, d)| (*t, d.clone(), d.len() as u32))
        .collect();
    write_pcap_with(path, DataLink::ETHERNET, &full);
}

fn kxdp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kxdp"))
        .args(args)
        .output()
        .expect("run kxdp")
}

/// `kxdp replay` with the example state for node-a.
fn replay(inputs: &[(&str, &Path)], out: &Path, extra: &[&str]) -> Output {
    let state = state_dir();
    let mut args: Vec<String> = vec![
        "replay".into(),
        "--state".into(),
        state.display().to_string(),
        "--node".into(),
        "node-a".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    for (port, file) in inputs {
        args.push("--in".into());
        args.push(format!("{port}={}", file.display()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    kxdp(&refs)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "kxdp failed: {}", stderr(o));
}

fn assert_fails_with(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "kxdp should have failed");
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// The keys of a verdicts.jsonl record, in the order §4 tooling expects them.
const KEY_ORDER: [&str; 8] = [
    "in_port", "index", "verdict", "out_port", "reason", "service", "backend", "policy",
];

/// Parses verdicts.jsonl, checking the §4 structure of every line.
fn verdicts(out: &Path) -> Vec<Value> {
    let text = fs::read_to_string(out.join("verdicts.jsonl")).expect("verdicts.jsonl");
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("valid JSON line");
            let obj = v.as_object().expect("a JSON object");
            // serde_json's Map sorts keys, so the order is checked on the text itself.
            let positions: Vec<usize> = KEY_ORDER
                .iter()
                .filter_map(|k| line.find(&format!("\"{k}\":")))
                .collect();
            assert!(positions.is_sorted(), "keys out of order: {line}");
            assert_eq!(positions.len(), obj.len(), "unexpected key in {line}");
            for key in ["in_port", "index", "verdict"] {
                assert!(obj.contains_key(key), "{key} missing: {line}");
            }
            assert!(obj["index"].is_u64(), "{line}");
            match obj["verdict"].as_str() {
                Some("forward") => assert!(obj["out_port"].is_string(), "{line}"),
                Some("drop") => assert!(obj["reason"].is_string(), "{line}"),
                Some("pass") => {}
                other => panic!("bad verdict {other:?} in {line}"),
            }
            if obj.contains_key("out_port") {
                assert_eq!(obj["verdict"], "forward", "{line}");
            }
            if obj.contains_key("reason") {
                assert_eq!(obj["verdict"], "drop", "{line}");
            }
            v
        })
        .collect()
}

fn port_and_index(v: &[Value]) -> Vec<(String, u64)> {
    v.iter()
        .map(|r| {
            (
                r["in_port"].as_str().unwrap_or_default().to_string(),
                r["index"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Every file in a directory, by name, with its bytes.
fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read file"),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn bad_in_syntax_is_rejected() {
    let dir = scratch("bad_in_syntax");
    let o = kxdp(&[
        "replay",
        "--state",
        "x",
        "--node",
        "node-a",
        "--out",
        dir.to_str().unwrap_or_default(),
        "--in",
        "no-equals-sign.pcap",
    ]);
    assert_fails_with(&o, &["no-equals-sign.pcap", "PORT=FILE"]);
}

#[test]
fn unknown_port_lists_known_ports() {
    let dir = scratch("unknown_port");
    let pcap = dir.join("in.pcap");
    write_pcap(&pcap, &[(1, client_syn(40000))]);
    let o = replay(&[("pod-demo-nobody", &pcap)], &dir.join("out"), &[]);
    assert_fails_with(&o, &["pod-demo-nobody", "uplink", "host", CLIENT]);
}

#[test]
fn missing_pcap_is_named() {
    let dir = scratch("missing_pcap");
    let missing = dir.join("does-not-exist.pcap");
    let o = replay(&[(CLIENT, &missing)], &dir.join("out"), &[]);
    assert_fails_with(&o, &["does-not-exist.pcap"]);
}

#[test]
fn corrupt_pcap_names_file_and_packet() {
    let dir = scratch("corrupt_pcap");
    let pcap = dir.join("cut.pcap");
    write_pcap(
        &pcap,
        &[(1, client_syn(1)), (2, client_syn(2)), (3, client_syn(3))],
    );
    // Cut the file in the middle of the third packet.
    let mut bytes = fs::read(&pcap).expect("read pcap");
    bytes.truncate(bytes.len() - 10);
    fs::write(&pcap, &bytes).expect("rewrite pcap");
    let o = replay(&[(CLIENT, &pcap)], &dir.join("out"), &[]);
    assert_fails_with(&o, &["cut.pcap", "packet index 2"]);

    let garbage = dir.join("garbage.pcap");
    fs::write(&garbage, b"this is not a capture file").expect("write garbage");
    let o = replay(&[(CLIENT, &garbage)], &dir.join("out"), &[]);
    assert_fails_with(&o, &["garbage.pcap"]);
}

#[test]
fn bad_state_dir_error_passes_through() {
    let dir = scratch("bad_state");
    let state = dir.join("state");
    fs::create_dir_all(&state).expect("state dir");
    fs::write(
        state.join("broken.yaml"),
        "kind: Pod\nmetadata: [this, is, not, a, map]\n",
    )
    .expect("write manifest");
    let pcap = dir.join("in.pcap");
    write_pcap(&pcap, &[(1, client_syn(40000))]);
    let o = kxdp(&[
        "replay",
        "--state",
        state.to_str().unwrap_or_default(),
        "--node",
        "node-a",
        "--in",
        &format!("{CLIENT}={}", pcap.display()),
        "--out",
        dir.join("out").to_str().unwrap_or_default(),
    ]);
    assert_fails_with(&o, &["broken.yaml"]);
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));

    let o = kxdp(&[
        "replay",
        "--state",
        dir.join("no-such-state").to_str().unwrap_or_default(),
        "--node",
        "node-a",
        "--in",
        &format!("{CLIENT}={}", pcap.display()),
        "--out",
        dir.join("out").to_str().unwrap_or_default(),
    ]);
    assert_fails_with(&o, &["no-such-state"]);
}

#[test]
fn pcapng_input() {
    let dir = scratch("pcapng");
    let path = dir.join("in.pcapng");
    let file = fs::File::create(&path).expect("create pcapng");
    let mut w = PcapNgWriter::new(file).expect("pcapng header");
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .expect("idb");
    for (i, pkt) in [client_syn(1), client_syn(2)].iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(1_000 + i as u64),
            original_len: pkt.len() as u32,
            data: Cow::Borrowed(pkt),
            options: vec![],
        })
        .expect("epb");
    }
    drop(w);
    let out = dir.join("out");
    assert_ok(&replay(&[(CLIENT, &path)], &out, &[]));
    let v = verdicts(&out);
    assert_eq!(
        port_and_index(&v),
        vec![(CLIENT.to_string(), 0), (CLIENT.to_string(), 1)]
    );
}

#[test]
fn raw_ip_and_unsupported_linktypes() {
    let dir = scratch("linktypes");
    let raw = dir.join("raw.pcap");
    let pkt = raw_ipv4();
    write_pcap_with(&raw, DataLink::RAW, &[(1, pkt.clone(), pkt.len() as u32)]);
    let ipv4 = dir.join("ipv4.pcap");
    write_pcap_with(&ipv4, DataLink::IPV4, &[(2, pkt.clone(), pkt.len() as u32)]);
    let sll = dir.join("sll.pcap");
    write_pcap_with(&sll, DataLink::LINUX_SLL, &[(3, vec![0u8; 40], 40)]);
    let out = dir.join("out");
    assert_ok(&replay(
        &[(CLIENT, &raw), (CLIENT, &ipv4), (CLIENT, &sll)],
        &out,
        &[],
    ));
    let v = verdicts(&out);
    assert_eq!(v.len(), 3);
    for raw_ip in &v[..2] {
        assert_ne!(raw_ip["reason"], "unsupported_linktype", "{raw_ip}");
    }
    assert_eq!(v[2]["verdict"], "drop");
    assert_eq!(v[2]["reason"], "unsupported_linktype");
}

#[test]
fn truncated_capture_is_processed() {
    let dir = scratch("truncated");
    let pcap = dir.join("snap.pcap");
    let pkt = client_syn(40000);
    // Captured 40 bytes of a longer packet, with a snaplen below the original length.
    let file = fs::File::create(&pcap).expect("create pcap");
    let header = PcapHeader {
        snaplen: 40,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("pcap header");
    let raw = pcap_file::pcap::RawPcapPacket {
        ts_sec: 1,
        ts_frac: 0,
        incl_len: 40,
        orig_len: 1400,
        data: Cow::Borrowed(&pkt[..40]),
    };
    w.write_raw_packet(&raw).expect("write packet");
    drop(w);
    let out = dir.join("out");
    assert_ok(&replay(&[(CLIENT, &pcap)], &out, &[]));
    assert_eq!(verdicts(&out).len(), 1);
}

#[test]
fn replay_is_deterministic_and_out_is_created() {
    let dir = scratch("determinism");
    let a = dir.join("a.pcap");
    let b = dir.join("b.pcap");
    write_pcap(
        &a,
        &[
            (10, client_syn(40000)),
            (30, client_syn(40001)),
            (50, client_syn(40002)),
        ],
    );
    write_pcap(&b, &[(20, web0_udp(5000)), (40, web0_udp(5001))]);
    let inputs = [(CLIENT, a.as_path()), (WEB0, b.as_path())];
    // Nested and missing: --out is created with its parents.
    let out1 = dir.join("deep/er/out1");
    let out2 = dir.join("out2");
    assert_ok(&replay(&inputs, &out1, &[]));
    assert_ok(&replay(&inputs, &out2, &[]));
    let first = dir_contents(&out1);
    assert!(first.iter().any(|(name, _)| name == "verdicts.jsonl"));
    assert_eq!(first, dir_contents(&out2));
    // Every output pcap is an Ethernet pcap (link type 1 at offset 20, little-endian).
    for (name, bytes) in &first {
        if name.ends_with(".pcap") {
            assert!(bytes.len() >= 24, "{name}");
            assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "{name}");
            assert_eq!(&bytes[20..24], &[1, 0, 0, 0], "{name}");
        }
    }

    // A rerun into a used directory replaces stale port pcaps and leaves other files alone.
    fs::write(out2.join("uplink.pcap"), b"stale").expect("stale pcap");
    fs::write(out2.join("notes.txt"), b"mine").expect("unrelated file");
    assert_ok(&replay(&inputs, &out2, &[]));
    let mut again = dir_contents(&out2);
    again.retain(|(name, _)| name != "notes.txt");
    assert_eq!(first, again);
    assert_eq!(
        fs::read(out2.join("notes.txt")).ok(),
        Some(b"mine".to_vec())
    );
}

#[test]
fn two_inputs_merged_by_timestamp() {
    let dir = scratch("merge");
    let a = dir.join("a.pcap");
    let b = dir.join("b.pcap");
    // b's second packet ties with a's third: the input named first wins the tie.
    write_pcap(
        &a,
        &[
            (10, client_syn(1)),
            (30, client_syn(2)),
            (40, client_syn(3)),
        ],
    );
    write_pcap(
        &b,
        &[(20, web0_udp(1)), (40, web0_udp(2)), (45, web0_udp(3))],
    );
    let out = dir.join("out");
    assert_ok(&replay(&[(CLIENT, &a), (WEB0, &b)], &out, &[]));
    let order = port_and_index(&verdicts(&out));
    let c = |i| (CLIENT.to_string(), i);
    let w = |i| (WEB0.to_string(), i);
    assert_eq!(order, vec![c(0), w(0), c(1), c(2), w(1), w(2)]);
}

#[test]
fn summary_prints_one_row_per_packet() {
    let dir = scratch("summary");
    let a = dir.join("a.pcap");
    write_pcap(&a, &[(10, client_syn(1)), (20, client_syn(2))]);
    let out = dir.join("out");
    let o = replay(&[(CLIENT, &a)], &out, &["--summary"]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("in_port") && lines[0].contains("verdict"),
        "{text}"
    );
    assert!(lines[1].contains(CLIENT), "{text}");
    assert!(lines[3].starts_with("2 packets"), "{text}");

    // Without the flag, stdout stays empty.
    let o = replay(&[(CLIENT, &a)], &out, &[]);
    assert_ok(&o);
    assert!(o.stdout.is_empty());
}

/// Records in a capture, counted independently of kxdp (pcap-file directly).
fn count_records(path: &Path) -> usize {
    let file = fs::File::open(path).expect("open capture");
    if path.extension().is_some_and(|e| e == "pcapng") {
        let mut r = pcap_file::pcapng::PcapNgReader::new(file).expect("pcapng");
        let mut n = 0;
        while let Some(block) = r.next_block() {
            use pcap_file::pcapng::Block;
            match block.expect("pcapng block") {
                Block::EnhancedPacket(_) | Block::SimplePacket(_) | Block::Packet(_) => n += 1,
                _ => {}
            }
        }
        n
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(file).expect("pcap");
        let mut n = 0;
        while let Some(p) = r.next_raw_packet() {
            p.expect("pcap record");
            n += 1;
        }
        n
    }
}

/// Real captures (tcpdump's and suricata-verify's test pcaps: raw-IP link types, VLAN and
/// Q-in-Q, VXLAN, fuzz-derived malformed headers, snaplen-cut records, pcapng): every one
/// is replayed, one verdict per record, with a summary line per record, and nothing crashes.
#[test]
fn real_captures_replay_one_verdict_per_record() {
    let fixtures = testkit::paths::shared_fixtures();
    let files = testkit::paths::captures_under(&fixtures);
    if files.is_empty() {
        // Say why and skip, except under CI=true, which has the fixtures and must not pass
        // without replaying them.
        let why = if fixtures.is_dir() {
            "holds no .pcap or .pcapng file"
        } else {
            "is missing (the shared fixtures are not beside this checkout)"
        };
        testkit::root::skip_or_fail(
            "real_captures_replay_one_verdict_per_record",
            &format!("{} {why}", fixtures.display()),
        );
        return;
    }
    let dir = scratch("real_captures");
    for (i, file) in files.iter().enumerate() {
        let out = dir.join(i.to_string());
        let o = replay(&[("uplink", file)], &out, &["--summary"]);
        assert!(o.status.success(), "{}: {}", file.display(), stderr(&o));
        let records = count_records(file);
        assert_eq!(verdicts(&out).len(), records, "{}", file.display());
        // Header, one row per record, totals.
        let summary = String::from_utf8_lossy(&o.stdout);
        assert_eq!(summary.lines().count(), records + 2, "{}", file.display());
    }
}

/// The example with demo/web's ClusterIP moved to 10.200.0.10: outside kxdp.yaml's
/// serviceCIDR, inside a second ServiceCIDR object when `with_cidrs`.
fn second_cidr_state(dir: &Path, with_cidrs: bool) -> PathBuf {
    let state = dir.join(if with_cidrs { "with" } else { "without" });
    fs::create_dir_all(&state).expect("state dir");
    for entry in fs::read_dir(state_dir()).expect("example dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = fs::read_to_string(&path).expect("manifest");
            let name = path.file_name().expect("file name");
            fs::write(state.join(name), text.replace("10.96.0.10", "10.200.0.10"))
                .expect("copy manifest");
        }
    }
    if with_cidrs {
        let cidrs = "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\n\
                     metadata: {name: kubernetes}\nspec: {cidrs: [10.96.0.0/12]}\n---\n\
                     apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\n\
                     metadata: {name: second}\nspec: {cidrs: [10.200.0.0/24]}\n";
        fs::write(state.join("servicecidrs.yaml"), cidrs).expect("servicecidrs.yaml");
    }
    state
}

/// A Service allocated from a second ServiceCIDR is load-balanced in replay exactly when
/// the state directory holds that ServiceCIDR (the directory reads the kind as the API
/// source watches it).
#[test]
fn a_service_from_a_second_servicecidr_is_balanced() {
    let dir = scratch("second-servicecidr");
    let syn = Headers::new(CLIENT_MAC, GATEWAY_MAC, [10, 244, 1, 5], [10, 200, 0, 10])
        .tcp_syn(40000, 80, 1);
    let input = dir.join("client.pcap");
    write_pcap(&input, &[(10, syn)]);
    let mut services = Vec::new();
    for with_cidrs in [false, true] {
        let state = second_cidr_state(&dir, with_cidrs);
        let out = dir.join(format!("out-{with_cidrs}"));
        let o = kxdp(&[
            "replay",
            "--state",
            &state.display().to_string(),
            "--node",
            "node-a",
            "--in",
            &format!("{CLIENT}={}", input.display()),
            "--out",
            &out.display().to_string(),
        ]);
        assert_ok(&o);
        let v = verdicts(&out);
        assert_eq!(v.len(), 1);
        services.push(v[0].get("service").cloned());
        if with_cidrs {
            assert_eq!(v[0]["verdict"], "forward", "{}", v[0]);
        }
    }
    assert_eq!(
        services,
        [None, Some(Value::String("demo/web:80".into()))],
        "without the ServiceCIDR the VIP is no Service; with it, demo/web"
    );
}
