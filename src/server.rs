//! Running a node: bind the public and internal listeners, serve each connection with hyper's
//! limits, stop when a shutdown future resolves, and the signal future `main` passes in.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::error::StartError;
use crate::resp::{self, RespLimits};

/// How long requests still in flight (HTTP requests, and RESP commands already read) may run
/// after shutdown was asked for. A write waiting for its quorum would otherwise hold the node up
/// to `REPLICATE_TIMEOUT_MS`; `docker stop` must return in well under a second.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;
/// Most bytes a request's head (request line and headers) may take; hyper's minimum is 8 KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Checks `config`, binds the public listener (`LISTEN_ADDR`), the internal one
/// (`INTERNAL_LISTEN_ADDR`) and the RESP one (`RESP_LISTEN_ADDR`, if set), and serves the node
/// until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState::new(&config)?;
    let public = bind(config.listen_addr).await?;
    let internal = Some(bind(config.internal_listen_addr).await?);
    let resp = match config.resp_listen_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    // Without RESP_PUBLIC_ADDR, a RESP listener on one interface is reached where it listens
    // (its port as bound, when RESP_LISTEN_ADDR asked for port 0). One on every interface
    // (0.0.0.0 in a container) is reached through an address only its operator knows.
    if let Some(addr) = (resp.as_ref())
        .and_then(|listener| listener.local_addr().ok())
        .filter(|addr| !addr.ip().is_unspecified())
    {
        state.node().advertise_resp(addr.to_string());
    }
    serve_state(state, public, internal, resp, &config, shutdown).await
}

/// Serves a node configured by `config` until `shutdown` resolves: the client API on `public`,
/// the internal API on `internal`. Then gives requests in flight a short grace period (300 ms).
pub async fn run(
    public: TcpListener,
    internal: Option<TcpListener>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState::new(config)?;
    serve_state(state, public, internal, None, config, shutdown).await
}

/// Binds a listener; the error names the address.
async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| StartError::Setup(format!("cannot listen on {addr}: {err}")))
}

/// Serves `state` on the listeners until `shutdown` resolves; the public ones (HTTP and RESP)
/// once the node has started ([`Node::start`](crate::node::Node::start)).
async fn serve_state(
    state: AppState,
    public: TcpListener,
    internal: Option<TcpListener>,
    resp: Option<TcpListener>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let stop_rx = state.stopping();
    let stopper = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.stop();
    });

    let address = |listener: &TcpListener| {
        listener
            .local_addr()
            .map_err(|err| StartError::Setup(format!("a listener has no address: {err}")))
    };
    let public_addr = address(&public)?;
    let internal_addr = internal.as_ref().map(address).transpose()?;
    let resp_addr = resp.as_ref().map(address).transpose()?;
    info!(
        addr = %public_addr,
        internal_addr = %internal_addr.map_or("none".to_owned(), |addr| addr.to_string()),
        resp_addr = %resp_addr.map_or("none".to_owned(), |addr| addr.to_string()),
        node_id = state.node_id(),
        role = config.role.as_str(),
        peers = ?config.peers().iter().map(|url| url.as_str()).collect::<Vec<_>>(),
        settings = %config.settings,
        max_value_bytes = config.max_value_bytes,
        "listening"
    );
    if !state.has_cluster_token() {
        warn!("no CLUSTER_TOKEN: internal routes accept requests from anyone who reaches them");
    }

    // Before serving the public API: a starting leader must not issue versions its followers
    // already hold, nor answer reads with an empty map. The internal listener serves already, so
    // that two nodes starting at once can answer each other.
    let header_read_timeout = config.header_read_timeout();
    let internal = async {
        if let Some(listener) = internal {
            let router = api::internal_router(state.clone());
            accept(listener, router, header_read_timeout, stop_rx.clone()).await;
        }
    };
    let public = async {
        tokio::select! {
            () = state.start() => {}
            () = stopped(stop_rx.clone()) => {
                info!("stopped while starting");
                return;
            }
        }
        // Automatic failover watches the leader for as long as the node serves.
        let node = Arc::clone(state.node());
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = node.watch_leader(|_| {}) => {}
                () = stopped(stop) => {}
            }
        });
        let router = api::client_router(state.clone());
        let http = accept(public, router, header_read_timeout, stop_rx.clone());
        let resp = async {
            if let Some(listener) = resp {
                let limits = RespLimits {
                    max_value_bytes: config.max_value_bytes,
                    max_connections: config.max_concurrent_requests,
                    command_timeout: header_read_timeout,
                };
                resp::serve(listener, Arc::clone(state.node()), limits, stop_rx.clone()).await;
            }
        };
        tokio::join!(http, resp);
    };
    tokio::join!(public, internal);
    info!("stopped");
    Ok(())
}

/// Accepts connections on `listener` and serves `router` on each until `stop` turns true. Each
/// connection gets hyper's protections that `axum::serve` leaves off: a deadline for the
/// request headers (against slowloris), and caps on their number and size. A connection may be
/// upgraded (the replication stream is); the upgraded one is its route's to serve.
///
/// At stop, each connection finishes the request it is serving and closes; requests still
/// running after [`SHUTDOWN_GRACE`] are cut off.
async fn accept(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    while let Some((stream, peer)) = next_connection(&listener, &mut stop).await {
        // Reap the connections that have ended, so that the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopped(stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        warn!("requests still in flight at shutdown were cut off");
    }
}

/// The next connection on `listener`, with `TCP_NODELAY` set; `None` once `stop` turns true.
/// An accept error (out of file descriptors and the like) pauses rather than spins. The HTTP
/// listeners and the RESP listener accept by it.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        debug!(%err, "could not set TCP_NODELAY");
                    }
                    return Some((stream, peer));
                }
                Err(err) => {
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // An error means the sender is gone, which only happens after it sent `true`.
            _ = stop.wait_for(|stop| *stop) => return None,
        }
    }
}

/// Resolves once `stop` has turned true.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent `true`.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Listens for Ctrl-C (SIGINT) and SIGTERM (what `docker stop` sends to PID 1) from the moment
/// it is called, and returns a future that resolves on the first of them. Call it inside the
/// runtime before the node announces itself, so that no early signal takes the default action.
#[cfg(unix)]
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("Ctrl-C received, shutting down"),
            _ = terminate.recv() => info!("SIGTERM received, shutting down"),
        }
    })
}

/// Listens for Ctrl-C and returns a future that resolves on it.
#[cfg(not(unix))]
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("Ctrl-C received, shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    })
}
