//! `cargo run -p pcap-fixtures --bin generate`: rewrites every case under
//! `pcap-fixtures/cases/` and the demo pcaps of `pcap-fixtures/examples/two-node/`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match pcap_fixtures::generate::write_all(root) {
        Ok(names) => {
            println!(
                "wrote {} cases under {}",
                names.len(),
                root.join("cases").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}
