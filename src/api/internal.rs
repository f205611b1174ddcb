//! Internal routes, called only by the leader: a follower receives batches of writes and state
//! transfers here, and reports its status and its whole replica.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};

use super::{AppState, Follower, Json, check_key};
use crate::error::{Error, ErrorBody, Result};
use crate::replication::wire::{
    Batch, BatchAck, EntryAck, FollowerStatus, REPLICATE_PATH, ReplicaState, STATE_PATH,
    STATUS_PATH, StateTransfer, TRANSFER_PATH, TransferAck, Write,
};

/// Largest body an internal route accepts, in bytes: a state transfer can be large. The leader
/// has already checked each value against its own `MAX_VALUE_BYTES`, so a follower configured
/// with a smaller one still takes every write rather than refusing it forever.
pub(super) const BODY_LIMIT: usize = 4 << 30;

/// Largest version a message may carry: the largest integer JSON numbers hold exactly.
const MAX_VERSION: u64 = (1 << 53) - 1;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(REPLICATE_PATH, post(replicate))
        .route(TRANSFER_PATH, post(transfer))
        .route(STATUS_PATH, get(status))
        .route(STATE_PATH, get(state))
}

/// Applies a batch of replicated writes under one lock, each only if it is newer than what
/// this follower holds, and acknowledges each in one answer: a duplicate or a late, older write
/// is acknowledged too, and a bad write is refused on its own without holding back the others.
/// Batches from a leader this follower is not synchronized with are refused whole until that
/// leader's state transfer arrived.
#[utoipa::path(post, path = "/internal/replicate", request_body = Batch, responses(
    (status = 200, description = "one ack or refusal per write, in the batch's order", body = BatchAck),
    (status = 400, description = "not a batch", body = ErrorBody),
    (status = 401, description = "missing or wrong cluster token", body = ErrorBody),
    (status = 409, description = "not_synced: the follower does not follow this leader (yet)", body = ErrorBody),
    (status = 413, description = "body too large", body = ErrorBody),
))]
pub(super) async fn replicate(
    Follower: Follower,
    State(state): State<AppState>,
    Json(batch): Json<Batch>,
) -> Result<axum::Json<BatchAck>> {
    let checks: Vec<Result<()>> = batch.writes.iter().map(|write| check(write)).collect();
    let acks = {
        let mut replica = state.replica();
        if replica.following != Some(batch.leader) {
            return Err(Error::NotSynced {
                following: replica.following,
            });
        }
        batch
            .writes
            .into_iter()
            .zip(checks)
            .map(|(write, checked)| {
                let version = write.version;
                match checked {
                    Ok(()) => {
                        let (key, entry) = Arc::unwrap_or_clone(write).into_entry();
                        let applied = replica.store.apply(key, entry);
                        EntryAck {
                            version,
                            applied,
                            refused: None,
                        }
                    }
                    Err(error) => EntryAck {
                        version,
                        applied: false,
                        refused: Some(error.to_string()),
                    },
                }
            })
            .collect()
    };
    Ok(axum::Json(BatchAck {
        node_id: state.node_id().to_owned(),
        acks,
    }))
}

/// The heartbeat's answer: who this follower is and which leader it is synchronized with.
#[utoipa::path(get, path = "/internal/status", responses(
    (status = 200, body = FollowerStatus),
    (status = 401, description = "missing or wrong cluster token", body = ErrorBody),
))]
pub(super) async fn status(
    Follower: Follower,
    State(state): State<AppState>,
) -> axum::Json<FollowerStatus> {
    let replica = state.replica();
    axum::Json(FollowerStatus {
        node_id: state.node_id().to_owned(),
        incarnation: state.inner.incarnation,
        following: replica.following,
        version: replica.store.latest_version(),
        keys: replica.store.len(),
    })
}

/// This follower's whole replica, for a restarting leader.
async fn state(Follower: Follower, State(state): State<AppState>) -> axum::Json<ReplicaState> {
    let replica = state.replica();
    axum::Json(ReplicaState::of(&replica.store, replica.following))
}

/// A state transfer from the leader: merged when this follower already follows that leader,
/// otherwise it replaces the state and the follower starts following that leader.
async fn transfer(
    Follower: Follower,
    State(state): State<AppState>,
    Json(transfer): Json<StateTransfer>,
) -> Result<axum::Json<TransferAck>> {
    if transfer.follower != state.inner.incarnation {
        return Err(Error::StaleTransfer);
    }
    for write in &transfer.entries {
        check(write)?;
    }
    let entries = transfer.entries.into_iter().map(Write::into_entry);
    let mut replica = state.replica();
    let replaced = replica.following != Some(transfer.leader);
    if replaced {
        replica.store.replace(entries, transfer.version);
        replica.following = Some(transfer.leader);
        replica.leader_url = transfer.leader_url;
    } else {
        replica.store.merge(entries);
        replica.store.observe(transfer.version);
    }
    let version = replica.store.latest_version();
    Ok(axum::Json(TransferAck {
        node_id: state.node_id().to_owned(),
        replaced,
        version,
    }))
}

/// Checks a replicated write's key and version.
fn check(write: &Write) -> Result<()> {
    check_key(&write.key)?;
    if !(1..=MAX_VERSION).contains(&write.version) {
        return Err(Error::InvalidBody(format!(
            "version must be between 1 and {MAX_VERSION}"
        )));
    }
    Ok(())
}
