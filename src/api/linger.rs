//! Lingering close, as nginx calls it: a request answered before its body was read (a 413 from
//! its `Content-Length`, a 401, a 503 under load) still has the rest of its body read and
//! thrown away while the answer goes out, up to [`LINGER_BYTES`] and [`LINGER_TIME`]. A client
//! that writes its whole body before it reads the answer, as Python's `urllib` does, then gets
//! that answer: closing at once with unread bytes in the socket makes the kernel send a reset,
//! which destroys the answer.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, EXPECT};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

/// Most bytes of an unread body that are read and discarded after the answer. A body that
/// declares more is not read at all: the client would get its reset anyway.
pub const LINGER_BYTES: usize = 64 << 20;
/// Longest wait for the next chunk of an unread body (nginx's `lingering_timeout`).
pub const LINGER_IDLE: Duration = Duration::from_secs(2);
/// Longest time spent discarding one body in all (nginx's `lingering_time`).
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// Most bodies discarded at once; past it a body is dropped at once, as without lingering.
/// Discards are not requests: `MAX_CONCURRENT_REQUESTS` does not count them.
const MAX_DISCARDS: usize = 64;

/// Bodies being discarded now.
static DISCARDS: AtomicUsize = AtomicUsize::new(0);

/// Lends the request's body to the handler: what the handler leaves unread when it drops the
/// body is discarded in a task of its own, within the bounds above, so that the connection
/// closes only once the client sent it all. A request without a body costs nothing; a client
/// that asked `Expect: 100-continue` has sent no body yet, and sends none unless asked.
pub(super) fn lend(request: Request) -> Request {
    let headers = request.headers();
    let continues = headers
        .get(EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let too_long = declared.is_some_and(|length| length > LINGER_BYTES as u64);
    if continues || too_long || http_body::Body::is_end_stream(request.body()) {
        return request;
    }
    request.map(|body| Body::new(Lent(Some(body))))
}

/// Reads `body` to its end and throws it away. It stops past [`LINGER_BYTES`], after
/// [`LINGER_IDLE`] without a chunk or [`LINGER_TIME`] in all, and dropping the body then makes
/// hyper close the connection.
async fn discard(mut body: Body) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut read = 0;
    loop {
        let next = (Instant::now() + LINGER_IDLE).min(deadline);
        match tokio::time::timeout_at(next, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, Bytes::len),
            Ok(None | Some(Err(_))) | Err(_) => break,
        }
        if read > LINGER_BYTES {
            break;
        }
    }
    DISCARDS.fetch_sub(1, Ordering::Relaxed);
}

/// A request body lent to the handler; dropped before its end, it has the rest discarded.
struct Lent(Option<Body>);

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(body) = self.0.take() else { return };
        if http_body::Body::is_end_stream(&body) {
            return;
        }
        // Outside a runtime (never, in a server) the body is just dropped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if DISCARDS.fetch_add(1, Ordering::Relaxed) < MAX_DISCARDS {
            runtime.spawn(discard(body));
        } else {
            DISCARDS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl http_body::Body for Lent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(body) = &mut self.0 else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(body).poll_frame(cx);
        // A chunked body never says it is at its end before it is read to it: forget it once
        // it is, so that dropping it discards nothing.
        if matches!(frame, Poll::Ready(None)) {
            self.0 = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}
