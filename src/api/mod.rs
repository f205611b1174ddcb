//! The HTTP API: the shared node state, the extractors that turn every bad input into an
//! [`Error`], and the router that joins the client routes and the internal (follower) routes.

mod client;
mod internal;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::config::{Config, Role};
use crate::error::Error;
use crate::replication::{Incarnation, Replica, Replicator, SharedReplica, lock};

pub use client::{ClusterStatus, Health, ReadResponse, WriteResponse};

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Everything a request handler can reach: the node's identity, its replica (store) and, on the
/// leader, the replicator.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    role: Role,
    incarnation: Incarnation,
    replica: SharedReplica,
    replicator: Option<Replicator>,
    leader_url: Option<String>,
    write_quorum: usize,
    max_value_bytes: usize,
}

impl AppState {
    /// The state of a node configured by `config` (which must have passed
    /// [`Config::validate`]), with an empty store.
    pub fn new(config: &Config) -> Self {
        let replica = Arc::new(Mutex::new(Replica::default()));
        let replicator = (config.role == Role::Leader).then(|| {
            Replicator::new(
                &config.followers,
                Arc::clone(&replica),
                config.lag_ms(),
                config.replicate_timeout(),
                config.replication_backlog,
            )
        });
        Self {
            inner: Arc::new(Inner {
                node_id: config.node_id(),
                role: config.role,
                incarnation: rand::random(),
                replica,
                replicator,
                leader_url: config.leader_url.as_ref().map(|url| url.to_string()),
                write_quorum: config.write_quorum,
                max_value_bytes: config.max_value_bytes,
            }),
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The leader's replicator; `None` on a follower.
    pub fn replicator(&self) -> Option<&Replicator> {
        self.inner.replicator.as_ref()
    }

    /// Locks the replica for one synchronous step; never held across an `.await`.
    fn replica(&self) -> MutexGuard<'_, Replica> {
        lock(&self.inner.replica)
    }

    /// Largest body a request may carry: a value of `MAX_VALUE_BYTES` with every byte escaped by
    /// JSON as `\u00XX` (six bytes), plus room for the key and the field names.
    fn body_limit(&self) -> usize {
        self.inner
            .max_value_bytes
            .saturating_mul(6)
            .saturating_add(MAX_KEY_BYTES * 6 + 1024)
    }

    /// Refuses a value larger than `MAX_VALUE_BYTES`.
    fn check_value(&self, value: Option<&str>) -> Result<(), Error> {
        match value {
            Some(value) if value.len() > self.inner.max_value_bytes => {
                Err(Error::PayloadTooLarge {
                    what: "value",
                    limit: self.inner.max_value_bytes,
                })
            }
            _ => Ok(()),
        }
    }
}

/// The whole API of a node: client routes, internal routes, and JSON errors for unknown routes
/// and methods.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit();
    Router::new()
        .merge(client::routes())
        .merge(internal::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn route_not_found(method: Method, OriginalUri(uri): OriginalUri) -> Error {
    Error::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Checks a key taken from a path or a message: not empty, at most [`MAX_KEY_BYTES`].
fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidKey("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "key is {} bytes long; the limit is {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// The key of a `/kv/{*key}` route, percent-decoded and checked with [`check_key`].
#[derive(Debug)]
struct Key(String);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let axum::extract::Path(key) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| Error::InvalidKey(rejection.body_text()))?;
        check_key(&key)?;
        Ok(Key(key))
    }
}

/// A query string deserialized into `T`; anything it cannot read is an `invalid_query` error.
#[derive(Debug)]
struct Query<T>(T);

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

/// A JSON body deserialized into `T`, whatever the content type says (so that a plain
/// `curl -d '{"value":"x"}'` works). Its errors say whether the JSON was malformed, of the wrong
/// shape, or too large.
#[derive(Debug)]
struct Json<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        // Refuse a declared oversize body before reading any of it; the body limit layer stops
        // one without a Content-Length as soon as it grows past the limit.
        let too_large = Error::PayloadTooLarge {
            what: "request body",
            limit: state.body_limit(),
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if declared.is_some_and(|length: usize| length > state.body_limit()) {
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
/// shape.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    // Through `Value` because serde would also read a struct from a JSON array.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| Error::InvalidJson(err.to_string()))?;
    if !value.is_object() {
        return Err(Error::InvalidBody("body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|err| Error::InvalidBody(err.to_string()))
}

/// Present only on the leader: handlers that take it refuse to run on a follower.
struct Leader(Replicator);

impl FromRequestParts<AppState> for Leader {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match &state.inner.replicator {
            Some(replicator) => Ok(Leader(replicator.clone())),
            None => Err(Error::NotLeader {
                leader: state.inner.leader_url.clone(),
            }),
        }
    }
}

/// Present only on a follower: internal handlers that take it refuse to run on the leader.
struct Follower;

impl FromRequestParts<AppState> for Follower {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match state.inner.role {
            Role::Follower => Ok(Follower),
            Role::Leader => Err(Error::NotFollower),
        }
    }
}
