//! `kxdp-lab`: the two-node lab in network namespaces (`run`, or `up` / `check` / `down`),
//! and the helpers it runs inside them (`probe`, `apiserver-double`, and `pause` for the
//! containerd mode's pod sandboxes). A tool for this machine: the binary a node runs
//! (`kxdp`) contains none of it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lab::{LabAction, LabOptions, apiserver_double, pause, probe};

/// kxdp-lab: a two-node kxdp cluster in network namespaces on this machine, checked with
/// real traffic.
#[derive(Debug, Parser)]
#[command(name = "kxdp-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// up, check, down (always); the exit code is the checks'.
    Run(LabOptions),
    /// Build the lab (after removing any previous one in DIR).
    Up(LabOptions),
    /// Run the checks against a lab that is up; exit 1 if any fails.
    Check(LabOptions),
    /// Remove everything `up` made; safe to run twice.
    Down(LabOptions),
    /// The lab's traffic tool (serve, tcp, udp, flood, sink), run inside its namespaces.
    #[command(hide = true)]
    Probe(probe::ProbeArgs),
    /// A test double of the API server's list/watch protocol serving a manifest directory
    /// (what `kxdp-lab run --source api` feeds its agents from). Not an API server.
    #[command(name = "apiserver-double", hide = true)]
    ApiServerDouble(apiserver_double::ApiServerDoubleArgs),
    /// A pod sandbox's infra container: waits for SIGTERM or SIGINT (exit 0), reaping
    /// orphans meanwhile, as PID 1 of the pod's PID namespace.
    #[command(hide = true)]
    Pause,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lab::init_logging();
    match cli.command {
        Command::Run(o) => lab::main(LabAction::Run, &o),
        Command::Up(o) => lab::main(LabAction::Up, &o),
        Command::Check(o) => lab::main(LabAction::Check, &o),
        Command::Down(o) => lab::main(LabAction::Down, &o),
        Command::Probe(args) => probe::main(args),
        Command::ApiServerDouble(args) => apiserver_double::main(args),
        Command::Pause => pause::main(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
