//! Lingering close, as nginx calls it: a request answered before its body was read (a 413 from
//! its `Content-Length`, a 401, a 503 under load) still has the rest of its body read and
//! thrown away while the answer goes out, up to [`LINGER_BYTES`] or [`LINGER_TIME`]. A client
//! that writes its whole body before it reads the answer, as Python's `urllib` does, then gets
//! that answer: closing at once with unread bytes in the socket makes the kernel send a reset,
//! which destroys the answer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::EXPECT;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// Most bytes of an unread body that are read and discarded after the answer.
pub const LINGER_BYTES: usize = 64 << 20;
/// Longest time spent discarding an unread body after the answer.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// Lends the request's body to the handler: what the handler leaves unread when it drops the
/// body is discarded in a task of its own, within the bounds above, so that the connection
/// closes only once the client sent it all. A request without a body costs nothing; a client
/// that asked `Expect: 100-continue` has sent no body yet and will not, unless asked.
pub(super) fn lend(request: Request) -> Request {
    if request.headers().contains_key(EXPECT) || http_body::Body::is_end_stream(request.body()) {
        return request;
    }
    request.map(|body| Body::new(Lent(Some(body))))
}

/// Reads `body` to its end and throws it away. Past [`LINGER_BYTES`] or [`LINGER_TIME`] it
/// stops, and dropping the body makes hyper close the connection.
async fn discard(mut body: Body) {
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > LINGER_BYTES {
                return;
            }
        }
    })
    .await;
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
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(body));
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
        match &mut self.0 {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
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
