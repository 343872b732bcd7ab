//! `kxdp-cni`: the CNI plugin. Everything lives in `cni`; see its docs.

fn main() -> std::process::ExitCode {
    cni::main()
}
