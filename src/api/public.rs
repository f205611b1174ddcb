//! The public routes a client calls: `/health`, `/kv/{key}` (GET on every node; PUT and DELETE
//! on the leader), `/dump`, `/cluster` (the leader's replication status) and `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Key, Leader, Query};
use super::state::AppState;
use crate::error::{Error, ErrorBody, Result};
use crate::metrics::{LeaderGauges, NodeGauges, ReplicaGauges};
use crate::protocol::{ClusterStatus, Health, ReadResponse, WriteResponse};
use crate::replication::FollowerState;
use crate::store::Version;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/kv/{*key}", get(read).put(put).delete(delete))
        .route("/kv", any(empty_key))
        .route("/kv/", any(empty_key))
        .route("/dump", get(dump))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
}

/// Prometheus metrics in the text exposition format.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let (version, keys, term, hidden_writes) = {
        let replica = state.replica();
        let store = &replica.store;
        (
            store.latest_version().counter,
            store.len(),
            replica.term,
            replica.hidden.len(),
        )
    };
    let leader = state.replicator().map(|replicator| LeaderGauges {
        settings: replicator.settings(),
        followers: replicator
            .followers()
            .into_iter()
            .map(|follower| ReplicaGauges {
                up: follower.state == FollowerState::Up,
                follower: follower.url,
                acked_version: follower.acked_version.counter,
                lag_versions: follower.lag_versions,
                pending: follower.pending,
            })
            .collect(),
    });
    let text = state.metrics().render(&NodeGauges {
        version,
        keys,
        term,
        hidden_writes,
        leader,
    });
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

/// The `{key}` path parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes the parameter; the `Key` extractor reads it.
pub(super) struct KeyParam {
    /// The key: 1 to 1024 bytes of UTF-8 (so at most 1024 characters), `/` allowed.
    #[param(min_length = 1, max_length = 1024)]
    key: String,
}

/// The node's role, id, term, leader and latest version. Any web page may read it (it says
/// nothing secret): a dashboard whose leader is gone asks the other nodes where the leader went.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
pub(super) async fn health(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(state.health()),
    )
}

/// The query string of `GET /kv/{key}`: the session guarantee of a read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadParams {
    /// Answer only once the key holds this version or a newer one on this node: pass the
    /// version of your own write (read-your-writes) or of your last read (monotonic reads), as
    /// its answer gave it (`term.counter`, such as `3.42`). Versions order by term first, so
    /// this works across failovers: a node still holding an older term's version of the key
    /// waits for the newer one.
    #[param(value_type = Option<String>, pattern = r"^[0-9]{1,16}\.[0-9]{1,16}$", example = "3.42")]
    min_version: Option<Version>,
    /// How long to wait for `min_version` (and, on a new leader under `after_sync`, for enough
    /// followers of its term to hold the state it took over), in milliseconds, below
    /// `REQUEST_TIMEOUT_MS`; unless given, 1000, or half of `REQUEST_TIMEOUT_MS` if that is less.
    #[param(minimum = 0)]
    wait_ms: Option<u64>,
}

/// How long a read waits for its `min_version` unless it says.
const DEFAULT_WAIT_MS: u64 = 1000;

/// The value of a key on this node (a follower may lag behind the leader; a leader under the
/// wait point `after_sync` shows the key's newest write its quorum acknowledged). With
/// `min_version`, the answer waits until the key holds that version or a newer one here, and is
/// never older; if it does not get there within `wait_ms`, the answer is
/// `503 not_yet_replicated`.
#[utoipa::path(get, path = "/kv/{key}", params(KeyParam, ReadParams), responses(
    (status = 200, body = ReadResponse),
    (status = 400, description = "invalid key or query", body = ErrorBody),
    (status = 404, description = "no such key (at min_version or newer: deleted)", body = ErrorBody),
    (status = 503, description = "not_yet_replicated: the key is older than min_version here; or state_not_replicated: a new leader under after_sync shows the state it took over once enough followers of its term hold it", body = ErrorBody),
))]
pub(super) async fn read(
    State(state): State<AppState>,
    Key(key): Key,
    Query(params): Query<ReadParams>,
) -> Result<axum::Json<ReadResponse>> {
    let limit = state.request_timeout_ms();
    let wait_ms = params.wait_ms.unwrap_or(DEFAULT_WAIT_MS.min(limit / 2));
    if wait_ms >= limit {
        return Err(Error::InvalidQuery(format!(
            "wait_ms must be below REQUEST_TIMEOUT_MS ({limit}), got {wait_ms}"
        )));
    }
    let min_version = params.min_version.unwrap_or_default();
    let wait = Duration::from_millis(wait_ms);
    state.read(key, min_version, wait).await.map(axum::Json)
}

/// The node's whole state: every live key and its value, as `GET /kv/{key}` shows them.
#[utoipa::path(get, path = "/dump", responses(
    (status = 200, body = BTreeMap<String, String>),
    (status = 503, description = STATE_NOT_REPLICATED, body = ErrorBody),
))]
pub(super) async fn dump(
    State(state): State<AppState>,
) -> Result<axum::Json<BTreeMap<String, String>>> {
    state.dump().map(axum::Json)
}

/// The 503 of a read on a new leader under `after_sync`, for the OpenAPI document.
const STATE_NOT_REPLICATED: &str = "state_not_replicated: a new leader under after_sync shows \
    the state it took over once enough followers of its term hold it (the read waits up to \
    wait_ms for them)";

async fn empty_key() -> Error {
    Error::InvalidKey("key must not be empty: use /kv/{key}".into())
}

/// Body of `PUT /kv/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutBody {
    /// The value to store.
    value: String,
}

/// Query string of a write.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WriteParams {
    /// Follower acks to wait for, overriding `WRITE_QUORUM` for this write.
    #[param(minimum = 0)]
    quorum: Option<usize>,
}

/// What a write's 503 means, in the OpenAPI document of PUT and DELETE.
const WRITE_UNAVAILABLE: &str = "quorum_timeout: quorum not reached in time; quorum_not_announced: the quorum is below the term's floor and too few followers heard of it (a partition?); either way applied, not rolled back (hidden from leader reads under after_sync); too_many_hidden: under after_sync the leader already hides REPLICATION_BACKLOG unacknowledged writes, and this one was not applied";

/// Writes a value on the leader and waits for the write quorum.
#[utoipa::path(put, path = "/kv/{key}", params(KeyParam, WriteParams), request_body = PutBody,
    responses(
        (status = 200, description = "the quorum acknowledged", body = WriteResponse),
        (status = 400, description = "invalid key, body or quorum", body = ErrorBody),
        (status = 413, description = "value or body too large", body = ErrorBody),
        (status = 503, description = WRITE_UNAVAILABLE, body = ErrorBody),
    ))]
pub(super) async fn put(
    // First: a follower refuses a write whatever its body says.
    _: Leader,
    State(state): State<AppState>,
    Key(key): Key,
    Query(params): Query<WriteParams>,
    Json(body): Json<PutBody>,
) -> Result<axum::Json<WriteResponse>> {
    state.check_value(Some(&body.value))?;
    let written = state.write(key, Some(body.value), params.quorum).await;
    written.map(axum::Json)
}

/// Deletes a key on the leader (a versioned tombstone) and waits for the write quorum.
#[utoipa::path(delete, path = "/kv/{key}", params(KeyParam, WriteParams), responses(
    (status = 200, description = "the quorum acknowledged", body = WriteResponse),
    (status = 400, description = "invalid key or quorum", body = ErrorBody),
    (status = 503, description = WRITE_UNAVAILABLE, body = ErrorBody),
))]
pub(super) async fn delete(
    // First: a follower refuses a write whatever its body says.
    _: Leader,
    State(state): State<AppState>,
    Key(key): Key,
    Query(params): Query<WriteParams>,
) -> Result<axum::Json<WriteResponse>> {
    state.write(key, None, params.quorum).await.map(axum::Json)
}

/// The leader's replication status: every follower's state, acks, lag and pending work.
#[utoipa::path(get, path = "/cluster", responses((status = 200, body = ClusterStatus)))]
pub(super) async fn cluster(
    Leader(replicator): Leader,
    State(state): State<AppState>,
) -> axum::Json<ClusterStatus> {
    axum::Json(state.cluster_status(&replicator))
}
