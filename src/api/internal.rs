//! Internal routes, called only by other nodes: a follower receives the leader's writes here.

use axum::Router;
use axum::extract::State;
use axum::routing::post;

use super::{AppState, Follower, Json, check_key};
use crate::error::{Error, Result};
use crate::replication::{Ack, REPLICATE_PATH, ReplicateRequest};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(REPLICATE_PATH, post(replicate))
}

/// Applies one replicated write if it is newer than what this follower holds, and acknowledges
/// either way: a duplicate or a late, older message is harmless.
async fn replicate(
    Follower: Follower,
    State(state): State<AppState>,
    Json(message): Json<ReplicateRequest>,
) -> Result<axum::Json<Ack>> {
    check_key(&message.key)?;
    if message.version == 0 {
        return Err(Error::InvalidBody("version must be at least 1".into()));
    }
    state.check_value(message.value.as_deref())?;
    let applied = state.store().apply(&message.key, message.entry());
    Ok(axum::Json(Ack {
        node_id: state.node_id().to_owned(),
        version: message.version,
        applied,
    }))
}
