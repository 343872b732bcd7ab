//! The `kxdp` binary: parses the command line, sets up logging, runs a subcommand.
//!
//! Errors end the process with exit status 1 and one line on stderr; the line names the
//! file or argument at fault (see `replay::ReplayError`). Logs go to stderr, filtered by
//! `RUST_LOG` (default: info for the agent, whose log is what `kubectl logs` shows; warnings
//! for the one-shot commands), as text or JSON (`--log-format`), so stdout carries only what
//! a command prints on purpose.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use control::cli::{Cli, Command, LogFormat};

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Agent(_) => "info",
        _ => "warn",
    };
    init_tracing(default_level, cli.log_format);
    match cli.command {
        Command::Replay(args) => run_replay(args.into()),
        Command::Stats(args) => run_stats(&args),
        Command::Agent(args) => match control::agent::run(&(*args).into()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        },
        Command::Cleanup(args) => match control::cleanup::run(&args.into()) {
            Ok(report) if report.errors.is_empty() => ExitCode::SUCCESS,
            Ok(report) => fail(&format!(
                "{} cleanup step(s) failed (see above)",
                report.errors.len()
            )),
            Err(e) => fail(&e.to_string()),
        },
        Command::InstallCniPlugins(args) => {
            match control::cni_install::install_plugins(&args.to, &args.files) {
                Ok(installed) => {
                    for path in installed {
                        println!("installed {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Sysctl(args) => {
            for setting in &args.settings {
                let Some((key, value)) = setting.split_once('=') else {
                    return fail(&format!("{setting}: expected KEY=VALUE"));
                };
                if let Err(e) = netdev::sysctl::ensure(key, value) {
                    return fail(&e.to_string());
                }
                println!("{key} = {value}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn init_tracing(default_level: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person watching, never into a log file or a test's pipe.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level beside `message`, as log pipelines index them.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn run_replay(opts: replay::ReplayOptions) -> ExitCode {
    match replay::run(&opts) {
        Ok(report) => {
            tracing::info!(
                packets = report.packets,
                pcaps = report.pcaps.len(),
                out = %opts.out.display(),
                "replay done"
            );
            if opts.summary {
                let mut stdout = std::io::stdout().lock();
                let text = replay::summary::render(&report.rows)
                    + &replay::summary::render_drops(&report.drops);
                if let Err(e) = stdout.write_all(text.as_bytes()) {
                    return fail(&format!("writing the summary: {e}"));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn run_stats(args: &control::cli::StatsArgs) -> ExitCode {
    use agent_api::{Request, Response, call};
    let answer = match call(
        &args.api_socket,
        &Request::Stats,
        std::time::Duration::from_secs(5),
    ) {
        Ok(answer) => answer,
        Err(e) => return fail(&format!("{}: {e}", args.api_socket.display())),
    };
    let stats = match answer.accepted() {
        Ok(Response {
            stats: Some(stats), ..
        }) => stats,
        Ok(_) => return fail("the agent sent no stats"),
        Err(refused) => return fail(&refused.to_string()),
    };
    let text = if args.json {
        serde_json::to_string_pretty(&stats).unwrap_or_default() + "\n"
    } else {
        agent_api::render_stats(&stats)
    };
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        return fail(&format!("writing the stats: {e}"));
    }
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("kxdp: error: {message}");
    ExitCode::FAILURE
}
