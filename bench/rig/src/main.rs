//! `kxdp-bench`: the throughput rig (with no subcommand), and its generator and sink on their
//! own (`pktgen`, `pktsink`). A tool for this machine: the binary a node runs (`kxdp`)
//! contains none of it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rig::BenchArgs;
use rig::traffic_cli::{PktgenArgs, PktsinkArgs};

/// kxdp-bench: measures, in one run on the same CPUs, the AF_XDP ceiling, kxdp, and the
/// kernel as kube-proxy (iptables, nftables) + Flannel configure it; prints Mpps with the
/// ratios and round-trip latencies, writes JSON and an SVG chart.
#[derive(Debug, Parser)]
#[command(name = "kxdp-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The rig's generator: BPF_PROG_TEST_RUN live frames (kernel), the fan-out, or AF_XDP
    /// TX, N flows, fixed size, optional pps cap; prints what it offered (and, with
    /// --sink-dev, what a sink counted).
    Pktgen(PktgenArgs),
    /// The rig's sink: counts packets and bytes per CPU with an XDP program on an interface
    /// (drop or pass) for a while, then prints them.
    Pktsink(PktsinkArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lab::init_logging();
    match cli.command {
        None => rig::main(cli.bench),
        Some(Command::Pktgen(a)) => rig::traffic_cli::pktgen_main(&a),
        Some(Command::Pktsink(a)) => rig::traffic_cli::pktsink_main(&a),
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

    #[test]
    fn no_subcommand_is_the_rig() {
        let cli = Cli::try_parse_from(["kxdp-bench", "--repeat", "3"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.bench.repeat, 3);
        let cli = Cli::try_parse_from(["kxdp-bench", "pktsink", "--dev", "x"]);
        assert!(
            matches!(
                cli,
                Ok(Cli {
                    command: Some(Command::Pktsink(_)),
                    ..
                })
            ),
            "{cli:?}"
        );
    }
}
