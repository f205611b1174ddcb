//! The `semisync-kv` command line: parses arguments, starts tracing, and calls the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
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
    /// Probe a node's /health and exit 0 if it answers "ok", 1 otherwise (for container
    /// healthchecks: the image has no shell and no curl).
    Health {
        /// Base URL of the node to probe [default: the port of LISTEN_ADDR on 127.0.0.1].
        #[arg(long, value_parser = semisync_kv::config::parse_base_url)]
        url: Option<reqwest::Url>,
        /// The address the node listens on, used when --url is not given.
        #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
        listen_addr: SocketAddr,
    },
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
        Command::Health { url, listen_addr } => {
            let url = url.unwrap_or_else(|| local_url(listen_addr));
            match runtime().and_then(|rt| rt.block_on(semisync_kv::client::health(&url))) {
                Ok(health) => {
                    println!(
                        "ok: {} {} at version {}",
                        health.role, health.node_id, health.version
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("unhealthy: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The URL of a node listening on `addr`, reached from the same host.
fn local_url(addr: SocketAddr) -> reqwest::Url {
    let ip = if addr.ip().is_unspecified() {
        [127, 0, 0, 1].into()
    } else {
        addr.ip()
    };
    let text = format!("http://{}", SocketAddr::new(ip, addr.port()));
    reqwest::Url::parse(&text).unwrap_or_else(|_| unreachable!("an IP address and port form a URL"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))
}

fn serve(config: Config) -> ExitCode {
    if let Err(message) = config.validate() {
        eprintln!("error: invalid configuration: {message}");
        return ExitCode::from(2);
    }
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
    let listen_addr = config.listen_addr;
    let result = runtime.block_on(async {
        let shutdown = semisync_kv::server::shutdown_signal()?;
        semisync_kv::server::serve(config, shutdown).await
    });
    match result {
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
