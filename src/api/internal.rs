//! Internal routes, between nodes: a follower receives its leader's batches, heartbeats and
//! state transfers here; every node reports its status to a starting node, and a candidate
//! fences it and reads its replica. Each message of a leader or candidate carries its term, and
//! an older term is refused.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

use super::extract::Json;
use super::state::AppState;
use crate::error::{ErrorBody, Result};
use crate::replication::wire::{
    Batch, BatchAck, FENCE_PATH, Fence, FenceAck, HEARTBEAT_PATH, Heartbeat, NodeStatus,
    REPLICATE_PATH, STATUS_PATH, STREAM_PATH, StateTransfer, TRANSFER_PATH, TransferAck,
};

/// Largest body an internal route accepts, in bytes: a state transfer can be large. The leader
/// has already checked each value against its own `MAX_VALUE_BYTES`, so a follower configured
/// with a smaller one still takes every write rather than refusing it forever.
pub(super) const BODY_LIMIT: usize = 4 << 30;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(REPLICATE_PATH, post(replicate))
        .route(STREAM_PATH, post(super::stream::open))
        .route(TRANSFER_PATH, post(transfer))
        .route(HEARTBEAT_PATH, post(heartbeat))
        .route(STATUS_PATH, get(status))
        .route(FENCE_PATH, post(fence))
}

/// Applies a batch of replicated writes under one lock, each only if it is newer than what
/// this follower holds, and acknowledges each in one answer: a duplicate or a late, older write
/// is acknowledged too, and a bad write is refused on its own without holding back the others.
/// Batches of an older term are refused (the sender was deposed), and so are batches of a
/// leader whose state transfer this follower does not hold yet.
#[utoipa::path(post, path = "/internal/replicate", request_body = Batch, responses(
    (status = 200, description = "one ack or refusal per write, in the batch's order", body = BatchAck),
    (status = 400, description = "not a batch", body = ErrorBody),
    (status = 401, description = "missing or wrong cluster token", body = ErrorBody),
    (status = 409, description = "stale_term: the sender's term is over; term_taken: another node took this term here; not_synced: this follower does not hold the sender's state (yet)", body = ErrorBody),
    (status = 413, description = "body too large", body = ErrorBody),
))]
pub(super) async fn replicate(
    State(state): State<AppState>,
    Json(batch): Json<Batch>,
) -> Result<axum::Json<BatchAck>> {
    state.receive_batch(batch).map(axum::Json)
}

/// The leader's heartbeat: this follower adopts its term, hears of its public URL, smallest
/// quorum and live settings, and answers its status.
#[utoipa::path(post, path = "/internal/heartbeat", request_body = Heartbeat, responses(
    (status = 200, body = NodeStatus),
    (status = 400, description = "not a heartbeat", body = ErrorBody),
    (status = 401, description = "missing or wrong cluster token", body = ErrorBody),
    (status = 409, description = "stale_term: the sender's term is over; term_taken: another node took this term here", body = ErrorBody),
))]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    Json(heartbeat): Json<Heartbeat>,
) -> Result<axum::Json<NodeStatus>> {
    state.receive_heartbeat(heartbeat).map(axum::Json)
}

/// This node's role, term and leader, changing nothing: what a starting node and a candidate
/// read from every peer.
#[utoipa::path(get, path = "/internal/status", responses(
    (status = 200, body = NodeStatus),
    (status = 401, description = "missing or wrong cluster token", body = ErrorBody),
))]
pub(super) async fn status(State(state): State<AppState>) -> axum::Json<NodeStatus> {
    axum::Json(state.node().status())
}

/// A candidate's fence: this node adopts the candidate's newer term, so that it refuses the old
/// leader from now on, and answers its whole replica as of that moment, in one step under the
/// lock. A leader steps down. A term that is not newer than this node's is refused: a node
/// takes each term from one candidate only.
async fn fence(
    State(state): State<AppState>,
    Json(fence): Json<Fence>,
) -> Result<axum::Json<FenceAck>> {
    state.receive_fence(fence).map(axum::Json)
}

/// A state transfer from the leader: merged when this follower already holds that leader's
/// state, otherwise it replaces the state and the follower follows that leader's term.
async fn transfer(
    State(state): State<AppState>,
    Json(transfer): Json<StateTransfer>,
) -> Result<axum::Json<TransferAck>> {
    state.receive_transfer(transfer).map(axum::Json)
}
