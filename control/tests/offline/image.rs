//! The image recipe, deploy/image/, without building the image (that takes half an hour;
//! `deploy/image/build.sh` does it by hand):
//!
//! - the Containerfile's default build base carries the toolchain rust-toolchain.toml pins,
//!   and it builds the binaries the packages declare;
//! - `assemble-rootfs.sh`, the build stage's last step, run here on this Debian 12 machine
//!   (what the build stage is) against a scratch root: it must produce exactly the image's
//!   file list, and its programs must start in the result (it chroots: root only); and it
//!   must refuse a dynamically linked kxdp-cni;
//! - what `build.sh --binaries` (the test suite's image, from this machine's binaries) takes
//!   from the Containerfile: its runtime stage, the last, the one `FROM ${RUNTIME_BASE}`, fed
//!   by a stage `build`'s /rootfs; and the script's options.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use testkit::TempDir;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn repo_file(path: &str) -> String {
    let path = Path::new(REPO).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of the first `key = "value"` line of a TOML text (no TOML parser in the
/// workspace, and these files keep such keys on one line).
fn toml_string(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix(key)?
            .trim_start()
            .strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

/// A user's build uses the Containerfile's default BUILD_BASE: if its Rust is not the
/// channel rust-toolchain.toml pins, rustup downloads that one in every build (or, without
/// rustup, the build runs on another compiler than CI's).
#[test]
fn default_build_base_has_the_pinned_toolchain() {
    let channel = toml_string(&repo_file("rust-toolchain.toml"), "channel").expect("channel");
    let containerfile = repo_file("deploy/image/Containerfile");
    let base = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG BUILD_BASE="))
        .expect("ARG BUILD_BASE=... in the Containerfile");
    assert_eq!(
        base,
        format!("docker.io/library/rust:{channel}-bookworm"),
        "the default build base is the rust image of rust-toolchain.toml's channel"
    );
}

/// The Containerfile builds `--bin NAME` of `-p PACKAGE`; each must be a [[bin]] of that
/// package (a renamed binary would otherwise fail only in a user's CI).
#[test]
fn containerfile_builds_declared_binaries() {
    let containerfile = repo_file("deploy/image/Containerfile");
    for (package, manifest, bin) in [
        ("control", "control/Cargo.toml", "kxdp"),
        ("cni", "control/cni/Cargo.toml", "kxdp-cni"),
    ] {
        assert!(
            containerfile.contains(&format!("-p {package} --bin {bin}")),
            "the Containerfile builds {package}'s {bin}"
        );
        let manifest = repo_file(manifest);
        assert_eq!(
            toml_string(&manifest, "name").as_deref(),
            Some(package),
            "{package}'s manifest"
        );
        assert!(
            manifest.contains(&format!("[[bin]]\nname = \"{bin}\"")),
            "{package} declares the binary {bin}"
        );
    }
}

/// `build.sh --binaries` runs the Containerfile's runtime stage as it is, on an image of its
/// own as the stage `build`: it keeps the ARGs before the first FROM and the file from the
/// one line `FROM ${RUNTIME_BASE}` on, and refuses to build unless that line starts the last
/// stage. A Containerfile that renamed the build stage, moved /rootfs or added a stage after
/// the runtime one would break the test suite's image only when a lab test ran.
#[test]
fn runtime_stage_is_the_last_and_copies_the_build_stage_rootfs() {
    let containerfile = repo_file("deploy/image/Containerfile");
    let lines: Vec<&str> = containerfile.lines().collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    // As build.sh matches it: `FROM ${RUNTIME_BASE}`, then a blank or the line's end.
    let runtime: Vec<usize> = froms
        .iter()
        .copied()
        .filter(|&i| {
            lines[i]
                .strip_prefix("FROM ${RUNTIME_BASE}")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        })
        .collect();
    assert_eq!(
        runtime.len(),
        1,
        "one stage FROM ${{RUNTIME_BASE}}: {froms:?} {runtime:?}"
    );
    assert_eq!(
        runtime.last(),
        froms.last(),
        "the stage FROM ${{RUNTIME_BASE}} is the last"
    );

    // The generated file's FROM ${RUNTIME_BASE} is resolved by the global ARG it keeps.
    assert!(
        lines[..froms[0]]
            .iter()
            .any(|l| l.starts_with("ARG RUNTIME_BASE=")),
        "ARG RUNTIME_BASE before the first FROM"
    );
    // The stage build.sh stands in for is `build`, and the runtime stage takes its /rootfs.
    assert!(
        froms[..froms.len() - 1]
            .iter()
            .any(|&i| lines[i].ends_with(" AS build")),
        "a stage `AS build` before the runtime stage"
    );
    assert!(
        lines[runtime[0]..].contains(&"COPY --from=build /rootfs/ /"),
        "the runtime stage copies the build stage's /rootfs"
    );
}

/// Runs deploy/image/build.sh with arguments its parsing rejects (before it checks for
/// root, installs or builds anything).
fn build_sh_rejects(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("deploy/image/build.sh"))
        .args(args)
        .output()
        .expect("run build.sh");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        testkit::cmd::describe(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The usage names both builds and --out; --binaries builds no base, so --rebuild-base
/// with it is a usage error (whichever comes first), not a full build.
#[test]
fn build_sh_usage() {
    let usage = build_sh_rejects(&["--no-such-option"]);
    for form in [
        "[--rebuild-base] [--out ARCHIVE]",
        "--binaries DIR [--out ARCHIVE]",
        "--clean",
    ] {
        assert!(usage.contains(form), "{form}: {usage}");
    }
    for args in [
        ["--binaries", "/nonexistent", "--rebuild-base"],
        ["--rebuild-base", "--binaries", "/nonexistent"],
    ] {
        let stderr = build_sh_rejects(&args);
        assert!(
            stderr.contains("--rebuild-base does not go with it"),
            "{args:?}: {stderr}"
        );
    }
}

/// A scratch root as the build stage has it before assemble-rootfs.sh: the two binaries in
/// /usr/local/bin.
fn staged_root(kxdp_cni: &Path) -> TempDir {
    let dir = TempDir::new("image-rootfs");
    let bin = dir.path().join("root/usr/local/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy(env!("CARGO_BIN_EXE_kxdp"), bin.join("kxdp")).expect("copy kxdp");
    std::fs::copy(kxdp_cni, bin.join("kxdp-cni")).expect("copy kxdp-cni");
    dir
}

fn assemble(dir: &TempDir) -> std::process::Output {
    Command::new("bash")
        .arg(Path::new(REPO).join("deploy/image/assemble-rootfs.sh"))
        .arg(dir.path().join("root"))
        .output()
        .expect("run assemble-rootfs.sh")
}

/// Every file (not directory) under `root`, as absolute paths in the image.
fn files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                out.insert(format!("/{}", rel.display()));
            }
        }
    }
    out
}

#[test]
fn assemble_rootfs_holds_exactly_the_image_files() {
    if !testkit::root::root_or_skip("assemble_rootfs_holds_exactly_the_image_files (chroot)") {
        return;
    }
    // The image's kxdp-cni is static (crt-static, a release build); any static program
    // that exits 0 stands in for it here.
    let stub_dir = TempDir::new("static-stub");
    let stub = stub_dir.path().join("kxdp-cni");
    let mut gcc = Command::new("gcc")
        .args(["-static", "-x", "c", "-", "-o"])
        .arg(&stub)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run gcc");
    std::io::Write::write_all(
        &mut gcc.stdin.take().expect("stdin"),
        b"int main(void) { return 0; }\n",
    )
    .expect("write the stub");
    assert!(gcc.wait().expect("gcc").success(), "gcc -static");

    let dir = staged_root(&stub);
    let out = assemble(&dir);
    assert!(out.status.success(), "{}", testkit::cmd::describe(&out));

    let files = files(&dir.path().join("root"));
    let programs: BTreeSet<&str> = [
        "/usr/local/bin/kxdp",
        "/usr/local/bin/kxdp-cni",
        "/usr/local/lib/kxdp/cni/host-local",
        "/usr/local/lib/kxdp/cni/portmap",
        "/usr/local/lib/kxdp/cni/loopback",
        "/usr/sbin/nft",
        "/lib64/ld-linux-x86-64.so.2",
    ]
    .into();
    let libs: Vec<&String> = files
        .iter()
        .filter(|f| !programs.contains(f.as_str()))
        .collect();
    assert!(
        programs.iter().all(|p| files.contains(*p)),
        "the image's programs: {files:#?}"
    );
    // Nothing else but shared libraries, the ones kxdp and nft load: glibc, libgcc_s and
    // nft's (libnftables and what it links), no shell, no `ip`, `ethtool` or `nsenter`.
    for lib in &libs {
        assert!(
            lib.starts_with("/usr/lib/x86_64-linux-gnu/lib") && lib.contains(".so"),
            "{lib} is not a shared library: {files:#?}"
        );
    }
    for needed in ["libc.so.6", "libgcc_s.so.1", "libnftables.so.1"] {
        assert!(
            libs.iter().any(|l| l.ends_with(needed)),
            "{needed}: {files:#?}"
        );
    }

    // The debug info is stripped, the symbols kept.
    let sections = testkit::cmd::run(
        "readelf",
        &[
            "-S",
            "--wide",
            dir.path()
                .join("root/usr/local/bin/kxdp")
                .to_str()
                .expect("UTF-8"),
        ],
    );
    assert!(!sections.contains(".debug_info"), "{sections}");
    assert!(sections.contains(".symtab"), "{sections}");
}

/// kxdp-cni runs on the node against the node's glibc, so a dynamically linked one (the
/// workspace's ordinary build) must stop the image build.
#[test]
fn assemble_rootfs_refuses_a_dynamic_kxdp_cni() {
    let dir = staged_root(&testkit::bins::workspace_binary("cni", "kxdp-cni"));
    let out = assemble(&dir);
    assert!(!out.status.success(), "{}", testkit::cmd::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kxdp-cni is dynamically linked"),
        "{stderr}"
    );
}
