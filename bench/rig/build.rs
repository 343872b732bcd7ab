//! Compiles `bpf/pktgen.bpf.c` (the generator and sink programs, embedded by
//! `src/traffic/mod.rs`) into `$OUT_DIR/pktgen.bpf.o`; how is bpf-build's (one definition
//! for every BPF build).

fn main() {
    bpf_build::build_script("rig", &["pktgen"]);
}
