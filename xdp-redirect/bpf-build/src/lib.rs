//! How kxdp compiles BPF C with clang, in one place: the flags ([`CLANG_ARGS`]), the
//! libbpf header check and the error hint, used by
//!
//! - the build scripts that embed programs: xdp-redirect's (`bpf/redirect.bpf.c`, the
//!   datapath's programs) and the throughput rig's (bench/rig, `bpf/pktgen.bpf.c`), through
//!   [`build_script`];
//! - the tests that compile a program of their own at run time (xdp-redirect's AF_XDP
//!   worker tests, the rig's candidate generators), through [`compile`].
//!
//! A crate rather than a file the build scripts `include!`: tests need the same
//! definition, and a dependency is how both a build script and a test get it. Rust-written
//! eBPF is not an option on this toolchain (ARCHITECTURE.md §5), so the programs are C,
//! built like libbpf's own examples.

use std::path::{Path, PathBuf};
use std::process::Command;

/// clang's arguments before `-c <source> -o <object>`. The multiarch include dir provides
/// `<asm/types.h>`, which the BPF target cannot find by itself on Debian.
pub const CLANG_ARGS: [&str; 7] = [
    "-O2",
    "-g",
    "-target",
    "bpf",
    "-Wall",
    "-Werror",
    "-I/usr/include/x86_64-linux-gnu",
];

/// The libbpf header every program includes; its absence means the toolchain is missing.
pub const LIBBPF_HEADER: &str = "/usr/include/bpf/bpf_helpers.h";

/// What to install when clang or libbpf is missing.
pub const MISSING_HINT: &str =
    "install the Debian packages `clang` and `libbpf-dev` (or run `scripts/install-deps.sh`)";

/// Why a program did not compile.
#[derive(Debug, thiserror::Error)]
pub enum BpfBuildError {
    #[error("{LIBBPF_HEADER} not found: {MISSING_HINT}")]
    NoLibbpf,
    #[error("cannot run clang ({0}): {MISSING_HINT}")]
    NoClang(std::io::Error),
    #[error("clang failed on {} ({status}):\n{stderr}", .program.display())]
    Failed {
        program: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Compiles `source` (BPF C) into the object file `object`.
pub fn compile(source: &Path, object: &Path) -> Result<(), BpfBuildError> {
    if !Path::new(LIBBPF_HEADER).exists() {
        return Err(BpfBuildError::NoLibbpf);
    }
    let output = Command::new("clang")
        .args(CLANG_ARGS)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output()
        .map_err(BpfBuildError::NoClang)?;
    if output.status.success() {
        return Ok(());
    }
    Err(BpfBuildError::Failed {
        program: source.to_path_buf(),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A build script's whole job: compiles each `bpf/<name>.bpf.c` of the package into
/// `$OUT_DIR/<name>.bpf.o` (for `aya::include_bytes_aligned!`), telling cargo to rerun
/// when a source changes. Panics (failing the build) with clang's message otherwise.
pub fn build_script(package: &str, names: &[&str]) {
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in names {
        let source = format!("bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={source}");
        let object = out_dir.join(format!("{name}.bpf.o"));
        if let Err(e) = compile(Path::new(&source), &object) {
            panic!("{package}: {e}");
        }
    }
}
