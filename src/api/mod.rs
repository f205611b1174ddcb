//! The HTTP API: the routers of the public routes (the client's, the dashboard's and the admin
//! routes) and of the internal (node-to-node) routes, and the layers every request passes. A
//! handler parses its input with the extractors (`extract.rs`), calls the [`Node`](crate::node::Node)
//! and maps the result to HTTP; no role logic lives here.

mod admin;
mod dashboard;
mod extract;
mod internal;
mod linger;
pub mod openapi;
mod public;
mod state;
mod stream;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, OriginalUri, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::partition::NODE_HEADER;
use extract::BodyLimit;
pub use state::AppState;

/// The public API of a node: the client routes, the leader's dashboard and admin routes, with
/// JSON errors for unknown routes and methods, the body limit, and the request limits.
pub fn client_router(state: AppState) -> Router {
    let routes = public::routes()
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .merge(dashboard::routes())
        .merge(admin::routes());
    let body_limit = state.body_limit();
    finish(routes, state, body_limit)
}

/// The internal API of a node, for its own listener: the routes its leader, a starting node or
/// a candidate calls, behind
/// the cluster token when one is set, and their OpenAPI description at `/openapi.json`, which
/// holds no secret.
pub fn internal_router(state: AppState) -> Router {
    let routes = internal::routes()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            partitioned,
        ))
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
        permits: Arc::new(Semaphore::new(state.http().max_concurrent_requests)),
        timeout: state.http().request_timeout,
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
    if let Some(expected) = &state.http().cluster_token {
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

/// Drops an internal request from a peer this node is partitioned from (`503 partitioned`, which
/// the sender's transport takes for an unreachable peer), and names this node in every answer,
/// so that its peers learn its node id.
async fn partitioned(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let sender = request.headers().get(NODE_HEADER);
    let sender = sender.and_then(|name| name.to_str().ok());
    let mut response = match sender {
        Some(peer) if state.isolates(peer) => Error::Partitioned {
            peer: peer.to_owned(),
        }
        .into_response(),
        _ => next.run(request).await,
    };
    if let Ok(name) = axum::http::HeaderValue::from_str(state.node_id()) {
        response.headers_mut().insert(NODE_HEADER, name);
    }
    response
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
