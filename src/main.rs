//! The `semisync-kv` command line: parses arguments, starts tracing, and calls the library.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use semisync_kv::Config;
use semisync_kv::cli::ClientCommand;
use semisync_kv::error::StartError;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the C library's allocator: the static musl binary of the image spends
/// a large share of each request in musl's malloc otherwise (docs/measured.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Measure write latency per quorum, replica convergence and throughput; write
    /// artifacts/benchmark_results.json and PNG charts.
    #[cfg(feature = "bench")]
    Bench(semisync_kv::bench::BenchArgs),
    /// Run the deterministic simulator: six nodes in one process on a simulated network,
    /// with partitions, crashes, restarts, pauses, lost, duplicated and late messages,
    /// settings changes and promotions, then check that no acknowledged write was lost, one
    /// node led each term, versions never went back, and the nodes converged. A failure prints
    /// its seed, schedule and history; `--seed S` replays it exactly.
    Simulate(semisync_kv::sim::SimulateArgs),
    #[command(flatten)]
    Client(ClientCommand),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(config) => {
            init_tracing("info");
            serve(runtime, config)
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            init_tracing("warn");
            runtime.block_on(semisync_kv::bench::run(args))
        }
        Command::Simulate(args) => match semisync_kv::sim::simulate(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Client(command) => runtime.block_on(semisync_kv::cli::run(command)),
    }
}

fn serve(runtime: tokio::runtime::Runtime, config: Config) -> ExitCode {
    let result = runtime.block_on(async {
        let shutdown = semisync_kv::server::shutdown_signal()
            .map_err(|err| StartError::Setup(format!("cannot listen for signals: {err}")))?;
        semisync_kv::server::serve(config, shutdown).await
    });
    // Do not wait for stragglers (a DNS lookup of a stopped container, a retry): `docker stop`
    // must return at once.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            match err {
                StartError::Config(_) => ExitCode::from(2),
                StartError::Setup(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default`), in colour only on a terminal.
fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
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
