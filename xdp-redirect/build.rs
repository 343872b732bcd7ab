//! Compiles `bpf/redirect.bpf.c` (the datapath's programs, embedded by `src/lib.rs`) into
//! `$OUT_DIR/redirect.bpf.o`; how is bpf-build's (one definition for every BPF build).

fn main() {
    bpf_build::build_script("xdp-redirect", &["redirect"]);
}
