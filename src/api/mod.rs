//! The HTTP API: the shared node state, the extractors that turn every bad input into an
//! [`Error`], and the router that joins the client routes and the internal (follower) routes.

mod admin;
mod client;
mod dashboard;
mod internal;
mod linger;
pub mod openapi;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, FromRequestParts, OriginalUri, Request, State,
};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::config::{Config, Role};
use crate::error::{Error, StartError};
use crate::metrics::Metrics;
use crate::replication::{
    HttpTransport, Incarnation, LagClock, Replica, Replicator, SharedReplica, lock,
};
use crate::store::Version;

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
    metrics: Arc<Metrics>,
    leader_url: Option<String>,
    max_value_bytes: usize,
    cluster_token: Option<String>,
    request_timeout: Duration,
    max_concurrent_requests: usize,
    /// Bounds the dashboard's event streams.
    event_streams: Arc<Semaphore>,
}

impl AppState {
    /// The state of a node configured by `config`, with an empty store: the one place the
    /// library checks a configuration ([`Config::validate`]) and reads the cluster token. On the
    /// leader it starts the followers' pipelines, so it must be called inside a tokio runtime.
    pub fn new(config: &Config) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let cluster_token = config.read_cluster_token().map_err(StartError::Config)?;
        let replica = Arc::new(Mutex::new(Replica::default()));
        let metrics = Arc::new(Metrics::new());
        let replicator = match config.role {
            Role::Leader => {
                let transport = HttpTransport::new(&config.followers, cluster_token.as_deref())
                    .map_err(StartError::Setup)?;
                let clock = LagClock::precise().map_err(|err| {
                    StartError::Setup(format!("cannot start the lag clock's thread: {err}"))
                })?;
                let replicator = Replicator::new(
                    &config.followers,
                    Arc::new(transport),
                    Arc::clone(&replica),
                    config.settings,
                    config.replication_backlog,
                    Arc::clone(&metrics),
                    clock,
                );
                if let Some(url) = &config.public_url {
                    replicator.set_public_url(url.to_string());
                }
                Some(replicator)
            }
            Role::Follower => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                node_id: config.node_id(),
                role: config.role,
                incarnation: rand::random(),
                replica,
                replicator,
                metrics,
                leader_url: config.leader_url.as_ref().map(|url| url.to_string()),
                max_value_bytes: config.max_value_bytes,
                cluster_token,
                request_timeout: config.request_timeout(),
                max_concurrent_requests: config.max_concurrent_requests,
                event_streams: Arc::new(Semaphore::new(dashboard::MAX_EVENT_STREAMS)),
            }),
        })
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The leader's URL as a follower names it: the `PUBLIC_URL` its leader's state transfer
    /// gave, else this follower's `LEADER_URL`.
    fn leader_url(&self) -> Option<String> {
        let learned = self.replica().leader_url.clone();
        learned.or_else(|| self.inner.leader_url.clone())
    }

    /// Whether internal requests must carry the cluster token.
    pub fn has_cluster_token(&self) -> bool {
        self.inner.cluster_token.is_some()
    }

    /// The leader's replicator; `None` on a follower.
    pub fn replicator(&self) -> Option<&Replicator> {
        self.inner.replicator.as_ref()
    }

    /// The leader's replication status, as `GET /cluster` and the dashboard show it.
    fn cluster_status(&self, replicator: &Replicator) -> ClusterStatus {
        let (version, keys) = self.version_and_keys();
        ClusterStatus {
            node_id: self.node_id().to_owned(),
            incarnation: replicator.incarnation(),
            version,
            keys,
            settings: replicator.settings(),
            followers: replicator.followers(),
        }
    }

    /// The highest version applied and the number of live keys, read under one lock.
    fn version_and_keys(&self) -> (Version, usize) {
        let replica = self.replica();
        (replica.store.latest_version(), replica.store.len())
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

/// The public API of a node: the client routes, the leader's dashboard and admin routes, with
/// JSON errors for unknown routes and methods, the body limit, and the request limits.
pub fn client_router(state: AppState) -> Router {
    let routes = client::routes()
        .merge(dashboard::routes())
        .merge(admin::routes());
    let body_limit = state.body_limit();
    finish(routes, state, body_limit)
}

/// The internal API of a follower, for its own listener: the routes the leader calls, behind
/// the cluster token when one is set, and their OpenAPI description at `/openapi.json`, which
/// holds no secret.
pub fn internal_router(state: AppState) -> Router {
    let routes = internal::routes()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route("/openapi.json", axum::routing::get(openapi::serve_internal));
    finish(routes, state, internal::BODY_LIMIT)
}

/// Adds what every route of a listener shares: JSON errors for unknown routes and methods, the
/// body limit [`Json`] reads under, the request limits, and the lingering close, outermost, so
/// that every early answer gets it.
fn finish(routes: Router<AppState>, state: AppState, body_limit: usize) -> Router {
    let limits = Limits {
        permits: Arc::new(Semaphore::new(state.inner.max_concurrent_requests)),
        timeout: state.inner.request_timeout,
    };
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .layer(axum::middleware::from_fn_with_state(limits, limit))
        .layer(tower::util::MapRequestLayer::new(linger::lend))
        .with_state(state)
}

/// The per-listener request limits.
#[derive(Clone, Debug)]
struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Sheds load past `MAX_CONCURRENT_REQUESTS` with a 503 rather than queueing without bound, and
/// answers 408 when a request outlives `REQUEST_TIMEOUT_MS`.
async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire_owned() else {
        return Error::Overloaded.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::RequestTimeout {
            timeout_ms: limits.timeout.as_millis() as u64,
        }
        .into_response(),
    }
}

/// Refuses an internal request without the cluster token (when one is set) with a 401. The
/// comparison takes the same time wherever the first wrong byte is.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    if let Some(expected) = &state.inner.cluster_token {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            return Err(Error::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Compares two secrets in a time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
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
        let key = path_param(parts, state, Error::InvalidKey).await?;
        check_key(&key)?;
        Ok(Key(key))
    }
}

/// The one path parameter of a route, percent-decoded; `error` makes the error for one that
/// cannot be read.
async fn path_param<S: Send + Sync>(
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

/// The largest request body a listener reads, in bytes: the public one's follows
/// `MAX_VALUE_BYTES`, the internal one's is [`internal::BODY_LIMIT`].
#[derive(Clone, Copy, Debug)]
struct BodyLimit(usize);

/// A JSON body deserialized into `T`, whatever the content type says (so that a plain
/// `curl -d '{"value":"x"}'` works): the one body reader of every route. Its errors say whether
/// the JSON was malformed, of the wrong shape, or larger than the listener's [`BodyLimit`].
#[derive(Debug)]
struct Json<T>(T);

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
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
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
struct Leader(Replicator);

impl FromRequestParts<AppState> for Leader {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match &state.inner.replicator {
            Some(replicator) => Ok(Leader(replicator.clone())),
            None => Err(Error::NotLeader {
                leader: state.leader_url(),
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
