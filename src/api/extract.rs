//! The extractors: each turns its part of a request into a value, or every bad input into an
//! [`Error`] (a 4xx with a JSON body), never a panic.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::state::AppState;
use crate::error::Error;
use crate::node::kv::check_key;
use crate::replication::Replicator;

/// The key of a `/kv/{*key}` route, percent-decoded and checked with [`check_key`].
#[derive(Debug)]
pub(super) struct Key(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let key = path_param(parts, state, Error::InvalidKey).await?;
        check_key(&key)?;
        Ok(Key(key))
    }
}

/// The one path parameter of a route, percent-decoded; `error` makes the error for one that
/// cannot be read.
pub(super) async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    error: fn(String) -> Error,
) -> Result<String, Error> {
    let axum::extract::Path(value) =
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| error(rejection.body_text()))?;
    Ok(value)
}

/// A query string deserialized into `T`; anything it cannot read is an `invalid_query` error.
#[derive(Debug)]
pub(super) struct Query<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| Error::InvalidQuery(rejection.body_text()))?;
        Ok(Query(value))
    }
}

/// The largest request body a listener reads, in bytes: the public one's follows
/// `MAX_VALUE_BYTES`, the internal one's is
/// [`BODY_LIMIT`](super::internal::BODY_LIMIT).
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyLimit(pub(super) usize);

/// A JSON body deserialized into `T`, whatever the content type says (so that a plain
/// `curl -d '{"value":"x"}'` works): the one body reader of every route. Its errors say whether
/// the JSON was malformed, of the wrong shape, or larger than the listener's [`BodyLimit`].
#[derive(Debug)]
pub(super) struct Json<T>(pub(super) T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or_else(|| state.body_limit(), |limit| limit.0);
        let too_large = Error::PayloadTooLarge {
            what: "request body",
            limit,
        };
        // Refuse a declared oversize body before reading any of it; the body limit layer stops
        // one without a Content-Length as soon as it grows past the limit.
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if declared.is_some_and(|length: usize| length > limit) {
            return Err(too_large);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large
            } else {
                Error::InvalidBody(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON object into `T`; the error says whether the JSON was malformed or of the wrong
/// shape. Straight from the bytes, without a `Value` tree in between: a state transfer can be
/// a hundred megabytes.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    use serde_json::error::Category;
    // serde would also read a struct from a JSON array: only an object is a body.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'[')) {
        return Err(Error::InvalidBody("body must be a JSON object".into()));
    }
    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        Category::Data => Error::InvalidBody(err.to_string()),
        Category::Syntax | Category::Eof | Category::Io => Error::InvalidJson(err.to_string()),
    })
}

/// Present only on the leader: handlers that take it refuse to run on a follower.
pub(super) struct Leader(pub(super) Replicator);

impl FromRequestParts<AppState> for Leader {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state.leader().map(Leader)
    }
}
