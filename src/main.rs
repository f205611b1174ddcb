//! The `semisync-kv` command line: parses arguments, starts tracing, and calls the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use semisync_kv::Config;
use tracing_subscriber::EnvFilter;

/// A single-leader, semi-synchronously replicated in-memory key-value store.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (leader or follower).
    Serve(Config),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(), // --help and --version
        Err(err) => {
            eprintln!("{}", one_line(&err.to_string()));
            return ExitCode::from(2);
        }
    };
    init_tracing();
    match cli.command {
        Command::Serve(config) => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(message) = config.validate() {
        eprintln!("error: invalid configuration: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listen_addr = config.listen_addr;
    match runtime.block_on(semisync_kv::server::serve(
        config,
        semisync_kv::server::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: cannot serve on {listen_addr}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info), in colour only on a terminal.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Folds a multi-line clap error into one line, without the "try --help" hint.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}
