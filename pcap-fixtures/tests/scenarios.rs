//! Every case under `pcap-fixtures/cases/` replays to its expected outputs, and the
//! committed case files are exactly what the generator writes today.

use std::fs;
use std::path::{Path, PathBuf};

use pcap_fixtures::runner::case_dirs;
use pcap_fixtures::{cases_root, generate, run_case};

#[test]
fn every_case_replays_to_its_expected_outputs() {
    let dirs = case_dirs(&cases_root()).expect("cases dir");
    assert!(dirs.len() >= 24, "only {} cases", dirs.len());
    let mut failed = Vec::new();
    for dir in &dirs {
        match run_case(dir) {
            Ok(report) if report.passed() => println!("{report}"),
            Ok(report) => failed.push(report.to_string()),
            Err(e) => failed.push(format!("case {}: {e}", dir.display())),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        dirs.len(),
        failed.join("\n")
    );
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn committed_cases_equal_a_fresh_generation() {
    let root = std::env::temp_dir().join(format!("kxdp-fixtures-regen-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    generate::write_all(&root).expect("generate");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR"));

    let fresh_cases = files_under(&root.join("cases"));
    let committed_cases = files_under(&committed.join("cases"));
    assert_eq!(
        committed_cases, fresh_cases,
        "the committed case files differ in names from a fresh generation: run `cargo run -p pcap-fixtures --bin generate`"
    );
    let mut stale = Vec::new();
    for rel in &fresh_cases {
        if fs::read(root.join("cases").join(rel)).ok()
            != fs::read(committed.join("cases").join(rel)).ok()
        {
            stale.push(rel.display().to_string());
        }
    }
    for demo in ["client.pcap", "uplink.pcap"] {
        let rel = Path::new("examples/two-node").join(demo);
        if fs::read(root.join(&rel)).ok() != fs::read(committed.join(&rel)).ok() {
            stale.push(rel.display().to_string());
        }
    }
    let _ = fs::remove_dir_all(&root);
    assert!(
        stale.is_empty(),
        "committed fixtures differ from a fresh generation (run `cargo run -p pcap-fixtures --bin generate`): {stale:?}"
    );
}

#[test]
fn generation_is_deterministic() {
    let a = std::env::temp_dir().join(format!("kxdp-fixtures-det-a-{}", std::process::id()));
    let b = std::env::temp_dir().join(format!("kxdp-fixtures-det-b-{}", std::process::id()));
    generate::write_all(&a).expect("generate a");
    generate::write_all(&b).expect("generate b");
    let files = files_under(&a);
    assert_eq!(files, files_under(&b));
    for rel in &files {
        assert_eq!(
            fs::read(a.join(rel)).ok(),
            fs::read(b.join(rel)).ok(),
            "{}",
            rel.display()
        );
    }
    let _ = fs::remove_dir_all(&a);
    let _ = fs::remove_dir_all(&b);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).expect("copy");
        }
    }
}

#[test]
fn a_wrong_expectation_is_reported_with_offset_and_verdict_line() {
    // A case with its own state dir, so the copy is self-contained.
    let dir = std::env::temp_dir().join(format!("kxdp-fixtures-wrong-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_dir(&cases_root().join("service-no-endpoints"), &dir);
    let pcap = dir.join("expected/pod-demo-client.pcap");
    let mut bytes = fs::read(&pcap).expect("expected pcap");
    // Global header 24 + record header 16: byte 0x30 is frame byte 24 (IPv4 checksum).
    bytes[24 + 16 + 24] ^= 0x01;
    fs::write(&pcap, bytes).expect("write");
    let verdicts = dir.join("expected/verdicts.jsonl");
    let text = fs::read_to_string(&verdicts).expect("verdicts");
    fs::write(&verdicts, text.replacen("\"forward\"", "\"drop\"", 1)).expect("write");

    let report = run_case(&dir).expect("runs");
    let _ = fs::remove_dir_all(&dir);
    assert!(!report.passed());
    let all = report.to_string();
    assert!(all.contains("packet 0: differs at byte 24"), "{all}");
    assert!(all.contains("verdicts.jsonl line 1"), "{all}");
}
