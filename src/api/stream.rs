//! The follower's end of the replication stream. A leader opens it with `POST /internal/stream`
//! (behind the cluster token and the partition, as every internal route) asking to upgrade the
//! connection; from the `101` on, the connection carries batches in the
//! [binary form](crate::replication::wire::binary), and each is applied by the very method
//! `POST /internal/replicate` calls ([`Node::receive_batch`](crate::node::Node::receive_batch))
//! and answered in order: its acks, or the refusal that route would have answered, as status
//! and JSON body. Answers to batches that arrived together go out in one write.
//!
//! A stream closes when the leader closes it, when the node stops, after [`IDLE`] without a
//! batch, after a frame that is not a batch (answered `400 invalid_body` first), and when a
//! partition cuts this node off from the sender (answered `503 partitioned` first).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::internal::BODY_LIMIT;
use super::state::AppState;
use crate::error::{Error, ErrorBody, Result};
use crate::partition::NODE_HEADER;
use crate::replication::wire::binary::{self, Answer, Frames};
use crate::replication::wire::{STREAM_PATH, STREAM_PROTOCOL};
use crate::server::stopped;

/// How long a stream may sit without a batch before this node closes it: above the leader's own
/// limit ([`replication::stream::IDLE`](crate::replication::stream::IDLE)), so that the leader
/// lets go first.
pub(super) const IDLE: Duration = Duration::from_secs(60);

/// Opens a replication stream: answers `101 Switching Protocols` and serves the upgraded
/// connection in a task of its own.
#[utoipa::path(post, path = "/internal/stream", responses(
    (status = 101, description = "the connection now carries the replication stream: batches in the binary form, each answered in order"),
    (status = 400, description = "the request did not ask to upgrade to semisync-stream/1", body = ErrorBody),
    (status = 401, description = "missing or wrong cluster token", body = ErrorBody),
    (status = 503, description = "overloaded: too many streams open; partitioned: this node is cut off from the sender", body = ErrorBody),
))]
pub(super) async fn open(State(state): State<AppState>, mut request: Request) -> Result<Response> {
    let asked = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|protocol| {
            protocol
                .as_bytes()
                .eq_ignore_ascii_case(STREAM_PROTOCOL.as_bytes())
        });
    if !asked {
        return Err(Error::InvalidBody(format!(
            "POST {STREAM_PATH} opens a replication stream: send `Connection: upgrade` and \
             `Upgrade: {STREAM_PROTOCOL}`"
        )));
    }
    let permit = state
        .http()
        .replication_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded)?;
    let peer = request
        .headers()
        .get(NODE_HEADER)
        .and_then(|name| name.to_str().ok())
        .map(str::to_owned);
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(&state, TokioIo::new(upgraded), peer.as_deref()).await,
            Err(err) => debug!(%err, "the replication stream did not open"),
        }
        drop(permit);
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, STREAM_PROTOCOL),
        ],
    )
        .into_response())
}

/// Serves one stream: reads each batch, applies it, answers it; see the module's doc for when it
/// closes.
pub(super) async fn serve<IO: AsyncRead + AsyncWrite>(
    state: &AppState,
    io: IO,
    peer: Option<&str>,
) {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut frames = Frames::new(BODY_LIMIT as u64);
    let mut out = Vec::new();
    let stop = state.stopping();
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(IDLE, frames.next(&mut reader)) => frame,
            () = stopped(stop.clone()) => break,
        };
        let payload = match frame {
            Ok(Ok(Some(payload))) => payload,
            Ok(Ok(None)) => break,
            Ok(Err(err)) => {
                debug!(%err, "the replication stream broke");
                break;
            }
            Err(_) => {
                debug!("the replication stream was idle for {IDLE:?}: closed");
                break;
            }
        };
        let (answer, last) = match peer {
            Some(peer) if state.isolates(peer) => (
                refused(&Error::Partitioned {
                    peer: peer.to_owned(),
                }),
                true,
            ),
            _ => match binary::decode_batch(&payload) {
                Ok(batch) => match state.receive_batch(batch) {
                    Ok(ack) => (Answer::Acked(ack), false),
                    Err(error) => (refused(&error), false),
                },
                Err(malformed) => (
                    refused(&Error::InvalidBody(format!("not a batch: {malformed}"))),
                    true,
                ),
            },
        };
        binary::encode_answer(&answer, &mut out);
        if last || !frames.has_frame() {
            if let Err(err) = writer.write_all(&out).await {
                debug!(%err, "the replication stream broke");
                break;
            }
            out.clear();
        }
        if last {
            break;
        }
    }
    // Answers held back for the next frame's go out before the stream closes.
    if !out.is_empty() {
        let _ = writer.write_all(&out).await;
    }
    let _ = writer.shutdown().await;
}

/// The refusal `error` is, as the JSON route answers it: its status and JSON body.
fn refused(error: &Error) -> Answer {
    let body = serde_json::to_string(&ErrorBody::from(error))
        .unwrap_or_else(|_| format!(r#"{{"error":"{}"}}"#, error.status_and_code().1));
    Answer::Refused {
        status: error.status_and_code().0.as_u16(),
        body,
    }
}
