//! Running a node: bind the listener, serve until a shutdown future resolves, and the signal
//! future `main` passes in.

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::config::Config;

/// How long requests still in flight may run after shutdown was asked for. A write waiting for
/// its quorum would otherwise hold the node up to `REPLICATE_TIMEOUT_MS`; `docker stop` must
/// return in well under a second.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// Binds `config.listen_addr` and serves the node until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = TcpListener::bind(config.listen_addr).await?;
    run(listener, &config, shutdown).await
}

/// Serves a node configured by `config` on `listener` until `shutdown` resolves, then gives
/// in-flight requests a short grace period (300 ms) to finish.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens after it sent `true`.
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let state = AppState::new(config);
    info!(
        addr = %listener.local_addr()?,
        node_id = state.node_id(),
        role = config.role.as_str(),
        followers = ?config.followers.iter().map(|url| url.as_str()).collect::<Vec<_>>(),
        write_quorum = config.write_quorum,
        min_delay_ms = config.min_delay_ms,
        max_delay_ms = config.max_delay_ms,
        replicate_timeout_ms = config.replicate_timeout_ms,
        max_value_bytes = config.max_value_bytes,
        "listening"
    );

    if let Some(replicator) = state.replicator() {
        // Before serving anything: a restarted leader must not issue versions its followers
        // already hold, nor answer reads with an empty map.
        tokio::select! {
            _ = replicator.recover() => replicator.spawn_heartbeats(),
            () = stopped(stop_rx.clone()) => {
                info!("stopped during recovery");
                return Ok(());
            }
        }
    }

    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            warn!(%err, "could not set TCP_NODELAY");
        }
    });
    let server =
        axum::serve(listener, api::router(state)).with_graceful_shutdown(stopped(stop_rx.clone()));
    tokio::select! {
        result = server => result?,
        () = async {
            stopped(stop_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!("requests still in flight at shutdown were cut off"),
    }
    info!("stopped");
    Ok(())
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
