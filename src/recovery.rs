//! Recovery: how a follower that restarted, froze or was cut off catches up without anyone's
//! help. Everything here talks to the followers through the
//! [`Transport`](crate::replication::Transport) and changes what the leader knows of them
//! through their [`Link`]s. How a leader gets its state back when it starts, or when a follower
//! is promoted, is [`failover`](crate::failover).
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
//! 3. **Failure detection**: the leader's heartbeat (`POST /internal/heartbeat`, with its term,
//!    its public URL, the smallest quorum of its term and its live settings) goes to every
//!    follower every 500 ms (and at once when the live settings change or a write lowers the
//!    smallest quorum), and the leader marks a follower `down` when it does not answer
//!    within 500 ms, so a failure or a return is noticed within about a second. A follower the
//!    presenter cut off (`POST /admin/followers/{follower}/cut`) is one the leader cannot reach:
//!    its messages and heartbeats fail without being sent, and it heals by these same steps.
//! 4. **Restarted followers**: every node draws a random *incarnation* at start, and a follower
//!    remembers the term whose leader's state it holds. A follower that restarted holds none,
//!    and refuses live writes (`409 not_synced`, which the leader retries) until the heartbeat
//!    has seen that and sent it a state transfer. Then it *replaces* its state with the
//!    transfer: nothing it held can be newer, since it accepted nothing from this leader. A
//!    follower that already holds this term's state and only missed writes *merges* the
//!    transfer instead, keeping the live writes that arrived meanwhile. A transfer meant for an
//!    earlier run of the follower is refused (`409 stale_transfer`) and sent again.
//! 5. **A new term**: a follower that holds an older term's state (the leader restarted, or a
//!    follower was promoted) gets a transfer that replaces its state, which also removes writes
//!    only it held ("orphans" the new leader never saw), so all nodes converge on the new
//!    leader's state.
//!
//! What this does not do: a write acknowledged only by followers that are all down while a new
//! leader takes over is lost. Surviving that needs persistence or consensus (Raft), which are
//! non-goals here.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::info;

use crate::events::FollowerIndex;
use crate::replication::transport::Failure;
use crate::replication::wire::{Heartbeat, StateTransfer};
use crate::replication::{Link, Replicator, Shared, lock};

/// How often the leader sends each follower its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

impl Replicator {
    /// Starts one heartbeat task per follower; each also sends the state transfers its follower
    /// needs. They run until the leader steps down or the runtime ends.
    pub fn spawn_heartbeats(&self) {
        for link in &self.shared.links {
            tokio::spawn(heartbeat(Arc::clone(&self.shared), link.index));
        }
    }
}

impl Shared {
    /// The heartbeat this leader sends.
    fn heartbeat(&self) -> Heartbeat {
        let (quorum_epoch, smallest_quorum) = self.announced();
        Heartbeat {
            term: self.term,
            leader: self.incarnation,
            leader_url: self.public_url.clone(),
            leader_resp_addr: self.resp_public_addr.clone(),
            smallest_quorum,
            quorum_epoch,
            settings: self.settings(),
        }
    }
}

/// Watches one follower: marks it up or down, and catches it up when it needs a transfer. A
/// follower that answers with a newer term deposes this leader.
async fn heartbeat(shared: Arc<Shared>, follower: FollowerIndex) {
    let link = &shared.links[follower];
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deposed = std::pin::pin!(shared.deposed());
    loop {
        tokio::select! {
            biased;
            () = &mut deposed => return,
            _ = ticker.tick() => {}
            () = link.wake.notified() => {}
        }
        // A chance to announce the settings' quorum again, when every write is held widely.
        shared.try_raise();
        let sent = shared.heartbeat();
        let announced = (sent.quorum_epoch, sent.smallest_quorum);
        let status = match link.cut_off() {
            Some(failure) => Err(failure),
            None => shared.transport.heartbeat(follower, sent).await,
        };
        if let Err(failure) = &status {
            if shared.refused(failure) {
                return;
            }
        }
        // A follower that holds this term's state hears of the quorum a heartbeat carries.
        if let Ok(status) = &status {
            if status.following == Some(shared.term) {
                shared.heard(follower, announced.0, announced.1);
            }
        }
        if link.on_heartbeat(status.as_ref(), shared.term) {
            if let Ok(status) = &status {
                transfer(&shared, link, status.incarnation).await;
            }
        }
    }
}

/// Sends the follower (its run `incarnation`) a state transfer of the leader's whole map.
async fn transfer(shared: &Shared, link: &Link, incarnation: u64) {
    // Before the copy: a write given up from now on goes with the next transfer.
    link.begin_transfer();
    // A snapshot, taken under the lock at no cost: the copy is made after it.
    let store = lock(&shared.replica).store.clone();
    let transfer = StateTransfer::of(
        &store,
        (shared.term, shared.incarnation),
        shared.public_url.clone(),
        shared.announced(),
        incarnation,
    );
    let (version, entries) = (transfer.version, transfer.entries.len());
    let announced = (transfer.quorum_epoch, transfer.smallest_quorum);
    let started = Instant::now();
    let result: Result<_, Failure> = shared.transport.transfer(link.index, transfer).await;
    match &result {
        Ok(ack) => {
            info!(follower = %link.url, node_id = %ack.node_id, entries, %version,
                replaced = ack.replaced, ms = started.elapsed().as_millis() as u64,
                "state transfer done");
            if let (epoch, Some(quorum)) = announced {
                shared.heard(link.index, epoch, quorum);
            }
            // The follower holds every write up to `version`: an ack of each.
            shared.reveal(|hidden| hidden.ack_through(link.index, version, shared.floor()));
        }
        Err(failure) => {
            shared.refused(failure);
        }
    }
    link.end_transfer(result.as_ref(), version);
    if result.is_ok() {
        shared.transfers.notify_waiters();
    }
}
