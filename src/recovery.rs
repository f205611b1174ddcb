//! Recovery: how a follower that restarted, froze or was cut off catches up, and how a restarted
//! leader gets its state back, without anyone's help. Everything here talks to the followers
//! through the [`Transport`](crate::replication::Transport) and changes what the leader knows
//! of them through their [`Link`]s.
//!
//! # The mechanism, and why this one
//!
//! Real systems keep a log and replay its tail to a replica that fell behind (Redis partial
//! resync from its backlog, MongoDB's oplog, PostgreSQL streaming from the WAL), and fall back to
//! copying the whole data set when the tail is gone (Redis full resync from an RDB file, MongoDB
//! initial sync, `pg_basebackup`). semisync-kv keeps the fallback and replaces the log with the
//! simplest thing that is still correct: a **full state transfer** of the leader's map, tombstones
//! included. It is safe to *merge* while live replication goes on, because a follower keeps the
//! newest version of each key whatever order writes arrive in
//! ([`Store::apply`](crate::store::Store::apply)): the transfer and the live messages commute.
//! For an in-memory store of this size a transfer is cheap; a log would only save bandwidth.
//!
//! 1. **Short outages** are covered by retries: a failed message is retried with exponential
//!    backoff and jitter ([`pipeline`](crate::replication::pipeline)), also after the client got
//!    its answer.
//! 2. **Long outages** are bounded: at most `REPLICATION_BACKLOG` writes may be pending for one
//!    follower. Past that, or once the follower has been down for 10 s, the leader marks it for
//!    a state transfer, stops queueing for it, and its pending messages stop retrying at their
//!    next failure, so its memory stays bounded however long the follower is away.
//! 3. **Failure detection**: the leader's heartbeat asks every follower for its status
//!    (`GET /internal/status`) every 500 ms, and marks it `down` when it does not answer within
//!    500 ms, so a failure or a return is noticed within about a second. A follower the
//!    presenter cut off (`POST /admin/followers/{follower}/cut`) is one the leader cannot reach:
//!    its messages and heartbeats fail without being sent, and it heals by these same steps.
//! 4. **Restarted followers**: every node draws a random *incarnation* at start, and a follower
//!    remembers the incarnation of the leader it is synchronized with. A follower that restarted
//!    remembers none, and refuses live writes (`409 not_synced`, which the leader retries) until
//!    the heartbeat has seen that and sent it a state transfer. Then it *replaces* its state with
//!    the transfer: nothing it held can be newer, since it accepted nothing from this leader.
//!    A follower already synchronized with this leader that only missed writes *merges* the
//!    transfer instead, keeping the live writes that arrived meanwhile.
//! 5. **Leader restart**: the new leader is a new incarnation with an empty map. Before it
//!    accepts any request it asks every follower for its whole state (`GET /internal/state`,
//!    waiting up to 2 s for them) and merges what the reachable ones hold: every write that a
//!    follower still up has acknowledged stays readable, and versions continue after the highest
//!    one any of them holds, so they never go backwards. Then every follower, synchronized with
//!    the old incarnation, gets a state transfer that replaces its state, which also removes
//!    writes that only a follower that was down held ("orphans" the new leader never saw), so all
//!    nodes converge on the new leader's state.
//!
//! What this does not do: a write acknowledged only by followers that are all down while the
//! leader restarts is lost, and a leader that finds no follower starts empty from version 0.
//! Surviving that needs persistence or consensus (Raft), which are non-goals here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::events::FollowerIndex;
use crate::replication::transport::Failure;
use crate::replication::wire::{ReplicaState, StateTransfer, Write};
use crate::replication::{Link, Replicator, Shared, SharedReplica, lock};

/// How often the leader asks each follower for its status.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a restarting leader waits for its followers' state.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two attempts to reach a follower during recovery.
const RECOVERY_RETRY: Duration = Duration::from_millis(200);

/// What a restarting leader recovered from its followers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Followers that answered.
    pub followers: usize,
    /// Live keys after the merge.
    pub keys: usize,
    /// The version new writes continue after.
    pub version: u64,
}

impl Replicator {
    /// Leader start-up: merges the replica of every follower that answers within
    /// [`RECOVERY_TIMEOUT`], and raises the version counter past everything they hold.
    pub async fn recover(&self) -> Recovered {
        let deadline = Instant::now() + RECOVERY_TIMEOUT;
        let mut fetches = JoinSet::new();
        for link in &self.shared.links {
            let shared = Arc::clone(&self.shared);
            let index = link.index;
            fetches.spawn(async move {
                let link = &shared.links[index];
                let fetched = fetch_state(&shared, index, deadline).await;
                if let Err(error) = &fetched {
                    warn!(follower = %link.url, %error, "no state recovered from this follower");
                }
                fetched.ok()
            });
        }
        let states: Vec<ReplicaState> = fetches.join_all().await.into_iter().flatten().collect();

        let mut replica = lock(&self.replica);
        for state in &states {
            let entries = state.entries.iter().cloned().map(Write::into_entry);
            replica.store.merge(entries);
            replica.store.observe(state.version);
        }
        let complete = states.len() == self.shared.links.len();
        if !complete {
            // A follower that did not answer may hold versions nobody else has seen. Versions
            // from the clock are newer than any a previous leader issued (it would have needed
            // more than a million writes a second to get ahead of the clock), so new writes
            // still win over such writes and never reuse their versions.
            replica.store.observe(clock_version());
        }
        Recovered {
            followers: states.len(),
            keys: replica.store.len(),
            version: replica.store.latest_version(),
        }
    }

    /// Starts one heartbeat task per follower; each also sends the state transfers its follower
    /// needs. They run as long as the runtime does.
    pub fn spawn_heartbeats(&self) {
        for link in &self.shared.links {
            let (shared, replica) = (Arc::clone(&self.shared), Arc::clone(&self.replica));
            tokio::spawn(heartbeat(shared, replica, link.index));
        }
    }
}

/// Asks a follower for its whole replica until it answers or `deadline` passes. The deadline
/// bounds the wait for an answer to begin, not the transfer of a large state.
async fn fetch_state(
    shared: &Shared,
    follower: FollowerIndex,
    deadline: Instant,
) -> Result<ReplicaState, String> {
    loop {
        let fetch = shared.transport.fetch_state(follower);
        match tokio::time::timeout_at(deadline, fetch).await {
            Err(_) => return Err(format!("no answer within {RECOVERY_TIMEOUT:?}")),
            Ok(Ok(state)) => return Ok(state),
            Ok(Err(failure)) if Instant::now() + RECOVERY_RETRY < deadline => {
                debug!(follower, error = %failure, "retrying");
                tokio::time::sleep(RECOVERY_RETRY).await;
            }
            Ok(Err(failure)) => return Err(failure.reason),
        }
    }
}

/// Microseconds since the Unix epoch: a version floor newer than any earlier leader's versions.
fn clock_version() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Watches one follower: marks it up or down, and catches it up when it needs a transfer.
async fn heartbeat(shared: Arc<Shared>, replica: SharedReplica, follower: FollowerIndex) {
    let link = &shared.links[follower];
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = link.wake.notified() => {}
        }
        let status = match link.cut_off() {
            Some(failure) => Err(failure),
            None => shared.transport.status(follower).await,
        };
        if link.on_heartbeat(status.as_ref(), shared.incarnation) {
            if let Ok(status) = &status {
                transfer(&shared, &replica, link, status.incarnation).await;
            }
        }
    }
}

/// Sends the follower (its run `incarnation`) a state transfer of the leader's whole map.
async fn transfer(shared: &Shared, replica: &SharedReplica, link: &Link, incarnation: u64) {
    // Before the copy: a write given up from now on goes with the next transfer.
    link.begin_transfer();
    let leader_url = shared.public_url.get().cloned();
    let transfer = StateTransfer::of(
        &lock(replica).store,
        shared.incarnation,
        leader_url,
        incarnation,
    );
    let (version, entries) = (transfer.version, transfer.entries.len());
    let started = Instant::now();
    let result: Result<_, Failure> = shared.transport.transfer(link.index, transfer).await;
    if let Ok(ack) = &result {
        info!(follower = %link.url, node_id = %ack.node_id, entries, version,
            replaced = ack.replaced, ms = started.elapsed().as_millis() as u64,
            "state transfer done");
    }
    link.end_transfer(result.as_ref(), version);
}
