//! Client routes: `/health`, `/kv/{key}` (GET on every node; PUT and DELETE on the leader),
//! `/dump`, `/cluster` (the leader's replication status), `/openapi.json` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::debug;
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Json, Key, Leader, Query};
use crate::error::{Error, ErrorBody, Result, Unconfirmed};
use crate::metrics::{LeaderGauges, NodeGauges, ReplicaGauges};
use crate::replication::wire::MAX_JSON_INTEGER;
use crate::replication::{FollowerState, FollowerView, Replicator, Term, Unannounced, Write};
use crate::settings::{Settings, WaitPoint};
use crate::store::Version;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/kv/{*key}", get(read).put(put).delete(delete))
        .route("/kv", any(empty_key))
        .route("/kv/", any(empty_key))
        .route("/dump", get(dump))
        .route("/cluster", get(cluster))
        .route("/openapi.json", get(super::openapi::serve))
        .route("/metrics", get(metrics))
}

/// Prometheus metrics in the text exposition format.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let (version, keys, term, hidden_writes) = {
        let replica = state.replica();
        let store = &replica.store;
        (
            store.latest_version(),
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
                acked_version: follower.acked_version,
                lag_versions: follower.lag_versions,
                pending: follower.pending,
            })
            .collect(),
    });
    let text = state.inner.metrics.render(&NodeGauges {
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

/// Body of `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always "ok" when the node answers.
    pub status: String,
    /// "leader" or "follower": what the node does now.
    pub role: String,
    /// The node's id.
    pub node_id: String,
    /// The newest term the node has seen: its own on the leader.
    pub term: Term,
    /// Where clients reach the leader of that term (its `PUBLIC_URL`), when the node knows.
    pub leader: Option<String>,
    /// Highest version the node has applied (on a leader under `after_sync`, hidden writes
    /// included: what the node holds, not what its readers see).
    pub version: Version,
    /// Number of live keys it holds (hidden writes included, as for `version`).
    pub keys: usize,
    /// On a node started with `ROLE=leader` that does not lead: why. It follows meanwhile, and
    /// leads once promoted (`semisync-kv failover`); absent once it leads or follows a leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// The node's role, id, term, leader and latest version. Any web page may read it (it says
/// nothing secret): a dashboard whose leader is gone asks the other nodes where the leader went.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
pub(super) async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let role = state.role();
    let waiting = state.waiting();
    let replica = state.replica();
    let health = axum::Json(Health {
        status: "ok".into(),
        role: role.as_str().into(),
        node_id: state.node_id().into(),
        term: replica.term,
        leader: replica
            .leader_url
            .clone()
            .or_else(|| state.inner.leader_url.clone()),
        version: replica.store.latest_version(),
        keys: replica.store.len(),
        waiting,
    });
    ([(ACCESS_CONTROL_ALLOW_ORIGIN, "*")], health)
}

/// Body of a successful `GET /kv/{key}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadResponse {
    /// The key read.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The version of the write that set it.
    pub version: Version,
}

/// The query string of `GET /kv/{key}`: the session guarantee of a read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadParams {
    /// Answer only once the key holds this version or a newer one on this node: pass the
    /// version of your own write (read-your-writes) or of your last read (monotonic reads).
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    min_version: Option<u64>,
    /// How long to wait for `min_version`, in milliseconds, below `REQUEST_TIMEOUT_MS`; unless
    /// given, 1000, or half of `REQUEST_TIMEOUT_MS` if that is less.
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
    (status = 503, description = "not_yet_replicated: the key is older than min_version here", body = ErrorBody),
))]
pub(super) async fn read(
    State(state): State<AppState>,
    Key(key): Key,
    Query(params): Query<ReadParams>,
) -> Result<axum::Json<ReadResponse>> {
    let min_version = params.min_version.unwrap_or(0);
    if min_version > MAX_JSON_INTEGER {
        return Err(Error::InvalidQuery(format!(
            "min_version must be at most {MAX_JSON_INTEGER}, got {min_version}"
        )));
    }
    let limit = state.inner.request_timeout.as_millis() as u64;
    let wait_ms = params.wait_ms.unwrap_or(DEFAULT_WAIT_MS.min(limit / 2));
    if wait_ms >= limit {
        return Err(Error::InvalidQuery(format!(
            "wait_ms must be below REQUEST_TIMEOUT_MS ({limit}), got {wait_ms}"
        )));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_millis(wait_ms);
    loop {
        // Registered before the check, so that a write applied right after it wakes this read.
        let applied = state.inner.applied.notified();
        let mut applied = std::pin::pin!(applied);
        applied.as_mut().enable();
        {
            let replica = state.replica();
            let entry = replica.read(&key);
            let held = entry.map(|entry| entry.version);
            if held.unwrap_or(0) >= min_version {
                let (value, version) = entry
                    .and_then(|entry| Some((entry.value.clone()?, entry.version)))
                    .ok_or_else(|| Error::NotFound { key: key.clone() })?;
                return Ok(axum::Json(ReadResponse {
                    value,
                    key,
                    version,
                }));
            }
            if Instant::now() >= deadline {
                return Err(Error::NotYetReplicated {
                    key,
                    min_version,
                    version: held,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
        let _ = tokio::time::timeout_at(deadline, applied).await;
    }
}

/// The node's whole state: every live key and its value, as `GET /kv/{key}` shows them.
#[utoipa::path(get, path = "/dump", responses((status = 200, body = BTreeMap<String, String>)))]
pub(super) async fn dump(State(state): State<AppState>) -> axum::Json<BTreeMap<String, String>> {
    axum::Json(state.replica().dump())
}

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

/// Body of a successful write (PUT or DELETE): the quorum was reached.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteResponse {
    /// The key written.
    pub key: String,
    /// The value written; `null` for a delete.
    pub value: Option<String>,
    /// The version the leader assigned to the write.
    pub version: Version,
    /// Acks the write waited for.
    pub quorum: usize,
    /// Acks received before the answer.
    pub acks: usize,
    /// Node ids of the followers that acknowledged, in arrival order.
    pub acked_by: Vec<String>,
    /// Time from receiving the request to the answer, in milliseconds.
    pub latency_ms: f64,
    /// When the leader's readers saw the write: `after_commit` (as soon as it was applied) or
    /// `after_sync` (once the quorum acknowledged it, before this answer).
    pub wait_point: WaitPoint,
}

/// Writes a value on the leader and waits for the write quorum.
#[utoipa::path(put, path = "/kv/{key}", params(KeyParam, WriteParams), request_body = PutBody,
    responses(
        (status = 200, description = "the quorum acknowledged", body = WriteResponse),
        (status = 400, description = "invalid key, body or quorum", body = ErrorBody),
        (status = 413, description = "value or body too large", body = ErrorBody),
        (status = 503, description = "quorum_timeout: quorum not reached in time; quorum_not_announced: the quorum is below the term's floor and too few followers heard of it (a partition?); either way applied, not rolled back (hidden from leader reads under after_sync)", body = ErrorBody),
    ))]
pub(super) async fn put(
    Leader(replicator): Leader,
    State(state): State<AppState>,
    Key(key): Key,
    Query(params): Query<WriteParams>,
    Json(body): Json<PutBody>,
) -> Result<axum::Json<WriteResponse>> {
    state.check_value(Some(&body.value))?;
    write(&state, &replicator, key, params, Some(body.value)).await
}

/// Deletes a key on the leader (a versioned tombstone) and waits for the write quorum.
#[utoipa::path(delete, path = "/kv/{key}", params(KeyParam, WriteParams), responses(
    (status = 200, description = "the quorum acknowledged", body = WriteResponse),
    (status = 400, description = "invalid key or quorum", body = ErrorBody),
    (status = 503, description = "quorum_timeout: quorum not reached in time; quorum_not_announced: the quorum is below the term's floor and too few followers heard of it (a partition?); either way applied, not rolled back (hidden from leader reads under after_sync)", body = ErrorBody),
))]
pub(super) async fn delete(
    Leader(replicator): Leader,
    State(state): State<AppState>,
    Key(key): Key,
    Query(params): Query<WriteParams>,
) -> Result<axum::Json<WriteResponse>> {
    write(&state, &replicator, key, params, None).await
}

/// The leader's write path: assign a version and apply locally, then wait for the quorum.
async fn write(
    state: &AppState,
    replicator: &Replicator,
    key: String,
    params: WriteParams,
    value: Option<String>,
) -> Result<axum::Json<WriteResponse>> {
    let started = Instant::now();
    let followers = replicator.follower_count();
    let quorum = params.quorum.unwrap_or(replicator.settings().write_quorum);
    if quorum > followers {
        return Err(Error::InvalidQuery(format!(
            "quorum must be between 0 and {followers} (the number of followers), got {quorum}"
        )));
    }

    let (entry, wait_point) = replicator.apply(&key, value, quorum)?;
    state.applied();
    let write = Arc::new(Write::new(key, entry));
    let outcome = replicator
        .replicate(Arc::clone(&write), quorum, wait_point)
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let Write {
        key,
        value,
        version,
    } = Arc::unwrap_or_clone(write);
    debug!(%key, version, acks = outcome.acks(), quorum, latency_ms, "write");
    let counted = match (&outcome.unannounced, outcome.reached()) {
        (Some(_), _) => "quorum_not_announced",
        (None, true) => "quorum_reached",
        (None, false) => "quorum_timeout",
    };
    state.inner.metrics.write(counted, started.elapsed());

    if !outcome.reached() {
        let write = Box::new(Unconfirmed {
            key,
            version,
            quorum,
            acks: outcome.acks(),
            acked_by: outcome.acked_by,
            timeout_ms: outcome.timeout.as_millis() as u64,
            wait_point,
            // Asked now: a late ack or a state transfer may have shown it already.
            visible_on_leader: !state.replica().hidden.hides(version),
        });
        return Err(match outcome.unannounced {
            Some(Unannounced {
                floor,
                heard,
                unsynced,
            }) => Error::QuorumNotAnnounced {
                write,
                floor,
                heard,
                unsynced,
            },
            None => Error::QuorumTimeout(write),
        });
    }
    Ok(axum::Json(WriteResponse {
        key,
        value,
        version,
        quorum,
        acks: outcome.acks(),
        acked_by: outcome.acked_by,
        latency_ms,
        wait_point,
    }))
}

/// Body of `GET /cluster`: the leader's replication status, in the spirit of PostgreSQL's
/// `pg_stat_replication` and Redis `INFO replication`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The leader's node id.
    pub node_id: String,
    /// The leader's term: new at every promotion and every leader start.
    pub term: Term,
    /// Where clients reach the leader (its `PUBLIC_URL`), if it has one.
    pub leader_url: Option<String>,
    /// The smallest write quorum of this term as announced to the followers: the smallest any
    /// write used, per-request overrides included, since the leader last announced the live
    /// quorum again, and at most a majority of the followers. What a promotion must merge enough
    /// followers for.
    pub smallest_quorum: usize,
    /// The leader's latest version.
    pub version: Version,
    /// Live keys on the leader.
    pub keys: usize,
    /// The live settings: `write_quorum`, `min_delay_ms`, `max_delay_ms` and
    /// `replicate_timeout_ms`.
    #[serde(flatten)]
    pub settings: Settings,
    /// Each follower as the leader sees it.
    pub followers: Vec<FollowerView>,
}

/// The leader's replication status: every follower's state, acks, lag and pending work.
#[utoipa::path(get, path = "/cluster", responses((status = 200, body = ClusterStatus)))]
pub(super) async fn cluster(
    Leader(replicator): Leader,
    State(state): State<AppState>,
) -> axum::Json<ClusterStatus> {
    axum::Json(state.cluster_status(&replicator))
}
