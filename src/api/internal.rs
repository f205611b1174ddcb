//! Internal routes, called only by the leader: a follower receives writes and state transfers
//! here, and reports its status and state.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use serde::de::DeserializeOwned;

use super::{AppState, Follower, check_key, parse_json};
use crate::error::{Error, Result};
use crate::replication::{
    Ack, FollowerStatus, REPLICATE_PATH, ReplicateRequest, SNAPSHOT_PATH, STATUS_PATH, SYNC_PATH,
    Snapshot, SyncAck, SyncRequest, Write,
};

/// Largest body an internal route accepts, in bytes: a state transfer can be large. The leader
/// has already checked each value against its own `MAX_VALUE_BYTES`, so a follower configured
/// with a smaller one still takes every write rather than refusing it forever.
const INTERNAL_BODY_LIMIT: usize = 4 << 30;

/// Largest version a message may carry: the largest integer JSON numbers hold exactly.
const MAX_VERSION: u64 = (1 << 53) - 1;

pub(super) fn routes() -> Router<AppState> {
    let limit = || DefaultBodyLimit::max(INTERNAL_BODY_LIMIT);
    Router::new()
        .route(REPLICATE_PATH, post(replicate).layer(limit()))
        .route(SYNC_PATH, post(sync).layer(limit()))
        .route(STATUS_PATH, get(status))
        .route(SNAPSHOT_PATH, get(snapshot))
}

/// Applies one replicated write if it is newer than what this follower holds, and acknowledges
/// either way: a duplicate or a late, older message is harmless. Writes from a leader this
/// follower is not synchronized with are refused until that leader's state transfer arrived.
async fn replicate(
    Follower: Follower,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Ack>> {
    let message: ReplicateRequest = read_body(body)?;
    check_key(&message.key)?;
    check_version(message.version)?;
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
    let transfer: SyncRequest = read_body(body)?;
    if transfer.follower != state.inner.incarnation {
        return Err(Error::StaleTransfer);
    }
    for write in &transfer.entries {
        check_key(&write.key)?;
        check_version(write.version)?;
    }
    let entries = transfer.entries.into_iter().map(Write::into_entry);
    let mut replica = state.replica();
    let replaced = replica.following != Some(transfer.leader);
    if replaced {
        replica.store.replace(entries, transfer.version);
        replica.following = Some(transfer.leader);
    } else {
        replica.store.merge(entries);
        replica.store.observe(transfer.version);
    }
    let version = replica.store.latest_version();
    Ok(axum::Json(SyncAck {
        node_id: state.node_id().to_owned(),
        replaced,
        version,
    }))
}

/// Reads an internal route's JSON body.
fn read_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            what: "request body",
            limit: INTERNAL_BODY_LIMIT,
        },
        _ => Error::InvalidBody(rejection.body_text()),
    })?;
    parse_json(&body)
}

fn check_version(version: u64) -> Result<()> {
    if !(1..=MAX_VERSION).contains(&version) {
        return Err(Error::InvalidBody(format!(
            "version must be between 1 and {MAX_VERSION}"
        )));
    }
    Ok(())
}
