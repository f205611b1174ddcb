//! Internal routes, called only by the leader: a follower receives writes and state transfers
//! here, and reports its status and state.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};

use super::{AppState, Follower, Json, check_key, parse_json};
use crate::error::{Error, Result};
use crate::replication::{
    Ack, FollowerStatus, REPLICATE_PATH, ReplicateRequest, SNAPSHOT_PATH, STATUS_PATH, SYNC_PATH,
    Snapshot, SyncAck, Write,
};

/// Largest state transfer a follower accepts, in bytes.
const SYNC_BODY_LIMIT: usize = 4 << 30;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(REPLICATE_PATH, post(replicate))
        .route(STATUS_PATH, get(status))
        .route(SNAPSHOT_PATH, get(snapshot))
        .route(
            SYNC_PATH,
            post(sync).layer(DefaultBodyLimit::max(SYNC_BODY_LIMIT)),
        )
}

/// Applies one replicated write if it is newer than what this follower holds, and acknowledges
/// either way: a duplicate or a late, older message is harmless. Writes from a leader this
/// follower is not synchronized with are refused until that leader's state transfer arrived.
async fn replicate(
    Follower: Follower,
    State(state): State<AppState>,
    Json(message): Json<ReplicateRequest>,
) -> Result<axum::Json<Ack>> {
    check_key(&message.key)?;
    check_version(message.version)?;
    state.check_value(message.value.as_deref())?;
    let applied = {
        let mut replica = state.replica();
        if replica.following != Some(message.leader) {
            return Err(Error::NotSynced {
                following: replica.following,
            });
        }
        replica.store.apply(&message.key, message.entry())
    };
    Ok(axum::Json(Ack {
        node_id: state.node_id().to_owned(),
        version: message.version,
        applied,
    }))
}

/// The heartbeat's answer: who this follower is and which leader it is synchronized with.
async fn status(Follower: Follower, State(state): State<AppState>) -> axum::Json<FollowerStatus> {
    let replica = state.replica();
    axum::Json(FollowerStatus {
        node_id: state.node_id().to_owned(),
        incarnation: state.inner.incarnation,
        following: replica.following,
        version: replica.store.latest_version(),
        keys: replica.store.len(),
    })
}

/// This follower's whole state, for a restarting leader.
async fn snapshot(Follower: Follower, State(state): State<AppState>) -> axum::Json<Snapshot> {
    let replica = state.replica();
    axum::Json(Snapshot::of(&replica.store, replica.following))
}

/// A full state transfer from the leader: merged when this follower already follows that
/// leader, otherwise it replaces the state and the follower starts following that leader.
async fn sync(
    Follower: Follower,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<SyncAck>> {
    let body = body.map_err(|_| Error::PayloadTooLarge {
        what: "state transfer",
        limit: SYNC_BODY_LIMIT,
    })?;
    let snapshot: Snapshot = parse_json(&body)?;
    let Some(leader) = snapshot.leader else {
        return Err(Error::InvalidBody(
            "a state transfer must name its leader".into(),
        ));
    };
    for write in &snapshot.entries {
        check_key(&write.key)?;
        check_version(write.version)?;
        state.check_value(write.value.as_deref())?;
    }
    let entries = snapshot.entries.into_iter().map(Write::into_entry);
    let mut replica = state.replica();
    let replaced = replica.following != Some(leader);
    if replaced {
        replica.store.replace(entries, snapshot.version);
        replica.following = Some(leader);
    } else {
        replica.store.merge(entries);
        replica.store.observe(snapshot.version);
    }
    let version = replica.store.latest_version();
    Ok(axum::Json(SyncAck {
        node_id: state.node_id().to_owned(),
        replaced,
        version,
    }))
}

fn check_version(version: u64) -> Result<()> {
    if version == 0 {
        return Err(Error::InvalidBody("version must be at least 1".into()));
    }
    Ok(())
}
