//! The admin routes, which the dashboard calls and curl and the CLI can too: on the leader, read
//! and change the live settings (`/admin/settings`), and cut off or restore replication to one
//! follower (`/admin/followers/{follower}/cut` and `/restore`); on a follower, promote it to
//! leader (`/admin/promote`); on any node, cut it off from named peers, as a network partition
//! would (`/admin/partition`).
//!
//! They are as open as the write routes: whoever can write to this lab can also slow it down.
//! But a browser request from a page of another site is refused (`403 cross_origin`): a
//! cross-site POST without a body needs no CORS preflight, so without that check any web page
//! the presenter opens could cut a follower off. They are left out of `/openapi.json`, so that
//! the conformance run, which tries every route it finds there, cannot change the settings
//! under it.

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tracing::info;

use serde::Deserialize;

use super::extract::{Json, Leader, Query, path_param};
use super::state::AppState;
use crate::error::{Error, Result};
use crate::failover::Promotion;
use crate::partition::PartitionView;
use crate::replication::FollowerView;
use crate::settings::{Settings, SettingsChange};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/settings", get(settings).patch(change_settings))
        .route("/admin/followers/{follower}/cut", post(cut))
        .route("/admin/followers/{follower}/restore", post(restore))
        .route("/admin/promote", post(promote))
        .route(
            "/admin/partition",
            get(partition).post(isolate).delete(heal),
        )
        .route_layer(axum::middleware::from_fn(same_origin))
}

/// Refuses a request whose `Origin` (sent by browsers) is not this node itself. curl and the
/// CLI send no `Origin`, and the dashboard's own requests carry this node's.
async fn same_origin(request: Request, next: Next) -> Result<Response> {
    let headers = request.headers();
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let host = headers.get(HOST).map(|host| host.as_bytes());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest.as_bytes());
        if origin_host.is_none() || origin_host != host {
            return Err(Error::CrossOrigin { origin });
        }
    }
    Ok(next.run(request).await)
}

/// `?force=true` on `POST /admin/promote`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteParams {
    /// Promote even while the leader answers, or with too few followers to keep every
    /// acknowledged write.
    #[serde(default)]
    force: bool,
}

/// Makes this follower the leader of a new term: fences the peers it reaches, merges their
/// states, and says which acknowledged writes that keeps (see [`failover`](crate::failover)).
async fn promote(
    State(state): State<AppState>,
    Query(params): Query<PromoteParams>,
) -> Result<axum::Json<Promotion>> {
    // In a task of its own: a client that goes away, or the request timeout, must not stop a
    // promotion between its fence and its lead, which would leave the cluster without a leader.
    let promotion = tokio::spawn(async move { state.promote(params.force).await });
    promotion.await.map_err(task_failed)?.map(axum::Json)
}

/// A promotion whose task panicked: `500 promotion_failed`, not a refusal, which would say the
/// request was at fault.
pub(super) fn task_failed(err: tokio::task::JoinError) -> Error {
    Error::PromotionFailed(err.to_string())
}

/// `GET /admin/settings`: the live settings.
async fn settings(Leader(replicator): Leader) -> axum::Json<Settings> {
    axum::Json(replicator.settings())
}

/// `PATCH /admin/settings`: changes the settings the body names; the next write and the next
/// message use them.
async fn change_settings(
    Leader(replicator): Leader,
    State(state): State<AppState>,
    Json(change): Json<SettingsChange>,
) -> Result<axum::Json<Settings>> {
    let request_timeout_ms = state.request_timeout_ms();
    let settings = replicator
        .change_settings(change, request_timeout_ms)
        .map_err(Error::InvalidSettings)?;
    info!(?settings, "settings changed");
    Ok(axum::Json(settings))
}

/// The body of `POST /admin/partition`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Isolate {
    /// The peers to drop traffic with, by node id, host or `host:port`; every other peer is
    /// reachable again.
    isolate: Vec<String>,
}

/// `GET /admin/partition`: the peers this node drops its traffic with.
async fn partition(State(state): State<AppState>) -> axum::Json<PartitionView> {
    axum::Json(state.partition())
}

/// `POST /admin/partition`: this node drops its traffic with the peers named, both directions,
/// as a network partition would, and with no other.
async fn isolate(
    State(state): State<AppState>,
    Json(body): Json<Isolate>,
) -> Result<axum::Json<PartitionView>> {
    state.isolate(&body.isolate).await.map(axum::Json)
}

/// `DELETE /admin/partition`: heals this node's partition.
async fn heal(State(state): State<AppState>) -> Result<axum::Json<PartitionView>> {
    state.isolate(&[]).await.map(axum::Json)
}

/// `POST /admin/followers/{follower}/cut`: the leader stops sending to this follower, as if
/// the network between them had failed.
async fn cut(
    Leader(replicator): Leader,
    FollowerName(name): FollowerName,
) -> Result<axum::Json<FollowerView>> {
    replicator.set_cut_off(&name, true).map(axum::Json)
}

/// `POST /admin/followers/{follower}/restore`: replication to this follower resumes, and it
/// catches up.
async fn restore(
    Leader(replicator): Leader,
    FollowerName(name): FollowerName,
) -> Result<axum::Json<FollowerView>> {
    replicator.set_cut_off(&name, false).map(axum::Json)
}

/// The `{follower}` of an admin route: a node id, or a URL's `host:port`.
struct FollowerName(String);

impl<S: Send + Sync> FromRequestParts<S> for FollowerName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        path_param(parts, state, Error::InvalidPath)
            .await
            .map(FollowerName)
    }
}
