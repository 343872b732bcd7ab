//! Compiles each of `bpf/*.bpf.c` listed in `SOURCES` into `$OUT_DIR/<name>.bpf.o` with
//! clang: `redirect` (the datapath's programs, embedded by `src/lib.rs`) and `pktgen` (the
//! throughput rig's generator and sink, embedded by `src/pktgen/mod.rs`). Rust-written eBPF is not an option on this toolchain
//! (ARCHITECTURE.md §5), so the programs are C, built like libbpf's own examples.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: [&str; 2] = ["redirect", "pktgen"];
const LIBBPF_HEADER: &str = "/usr/include/bpf/bpf_helpers.h";
const MISSING_HINT: &str =
    "install the Debian packages `clang` and `libbpf-dev` (or run `scripts/install-deps.sh`)";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");

    if !Path::new(LIBBPF_HEADER).exists() {
        panic!("xdp-redirect: {LIBBPF_HEADER} not found: {MISSING_HINT}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in SOURCES {
        compile(
            &format!("bpf/{name}.bpf.c"),
            &out_dir.join(format!("{name}.bpf.o")),
        );
    }
}

fn compile(source: &str, object: &Path) {
    println!("cargo:rerun-if-changed={source}");

    // The multiarch include dir provides <asm/types.h>, which the BPF target cannot find by
    // itself on Debian.
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("xdp-redirect: clang failed on {source} ({s})"),
        Err(e) => panic!("xdp-redirect: cannot run clang ({e}): {MISSING_HINT}"),
    }
}
