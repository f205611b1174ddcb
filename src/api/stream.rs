//! The follower's end of the replication stream. A leader opens it with `POST /internal/stream`
//! (behind the cluster token and the partition, as every internal route) asking to upgrade the
//! connection; from the `101` on, the connection carries batches in the
//! [binary form](crate::replication::wire::binary), and each is applied by the very method
//! `POST /internal/replicate` calls ([`Node::receive_batch`](crate::node::Node::receive_batch))
//! and answered in order: its acks, or the refusal that route would have answered, as status
//! and JSON body. Answers wait to be written while the batches already read are applied, so
//! that those of batches that arrived together mostly go out in one write.
//!
//! A stream closes when the leader closes it, when the node stops (a batch read but not yet
//! applied is not applied then), after [`IDLE`] without a batch or a byte of answer written,
//! after a frame that is not a batch (answered `400 invalid_body` first), and when a partition
//! cuts this node off from the sender (answered `503 partitioned` first).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
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
/// Most bytes of answers waiting to be written before the stream stops reading batches.
const MAX_UNSENT: usize = 1 << 20;
/// How long the answers still unwritten when a stream closes may take to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

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
/// closes. It writes while it reads, so that a leader slow to read its answers never blocks
/// the batches behind them, and reads no more batches while [`MAX_UNSENT`] bytes of answers wait.
pub(super) async fn serve<IO: AsyncRead + AsyncWrite>(
    state: &AppState,
    io: IO,
    peer: Option<&str>,
) {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut frames = Frames::new(BODY_LIMIT as u64);
    // The answers not yet written, from `sent` on.
    let (mut out, mut sent) = (Vec::new(), 0);
    let stop = state.stopping();
    let idle = tokio::time::sleep(IDLE);
    let mut idle = std::pin::pin!(idle);
    let mut last = false;
    while !last {
        tokio::select! {
            // After stop, no batch is applied, even one already read.
            biased;
            () = stopped(stop.clone()) => break,
            frame = frames.next(&mut reader), if out.len() - sent < MAX_UNSENT => {
                let payload = match frame {
                    Ok(Some(payload)) => payload,
                    Ok(None) => break,
                    Err(err) => {
                        debug!(%err, "the replication stream broke");
                        break;
                    }
                };
                idle.as_mut().reset(Instant::now() + IDLE);
                let answer;
                (answer, last) = apply(state, peer, &payload);
                binary::encode_answer(&answer, &mut out);
            }
            written = writer.write(&out[sent..]), if sent < out.len() => match written {
                Ok(written) if written > 0 => {
                    sent += written;
                    if sent == out.len() {
                        (out, sent) = (Vec::new(), 0);
                    }
                    idle.as_mut().reset(Instant::now() + IDLE);
                }
                Ok(_) => break,
                Err(err) => {
                    debug!(%err, "the replication stream broke");
                    break;
                }
            },
            () = &mut idle => {
                debug!("the replication stream was idle for {IDLE:?}: closed");
                break;
            }
        }
    }
    // The answers not written yet go out before the stream closes, if the leader reads them.
    let flush = async {
        writer.write_all(&out[sent..]).await?;
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, flush).await;
}

/// Applies one frame from `peer`: the answer, and whether the stream closes after it.
fn apply(state: &AppState, peer: Option<&str>, payload: &[u8]) -> (Answer, bool) {
    if let Some(peer) = peer.filter(|peer| state.isolates(peer)) {
        let error = Error::Partitioned {
            peer: peer.to_owned(),
        };
        return (refused(&error), true);
    }
    match binary::decode_batch(payload) {
        Ok(batch) => match state.receive_batch(batch) {
            Ok(ack) => (Answer::Acked(ack), false),
            Err(error) => (refused(&error), false),
        },
        Err(malformed) => {
            let error = Error::InvalidBody(format!("not a batch: {malformed}"));
            (refused(&error), true)
        }
    }
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
