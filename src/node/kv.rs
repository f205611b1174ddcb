//! What a client asks of a node: a read, on any node, and a write, on the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::Node;
use crate::error::{Error, Result, Unconfirmed};
use crate::metrics::Protocol;
use crate::protocol::{ReadResponse, WriteResponse};
use crate::replication::quorum::Tally;
use crate::replication::{Sending, Unannounced, Write};
use crate::settings::WaitPoint;
use crate::store::Version;

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a key taken from a path or a message: not empty, at most [`MAX_KEY_BYTES`].
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "key is {} bytes long; the limit is {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

impl Node {
    /// The value of `key` on this node (a follower may lag behind the leader; a leader under
    /// the wait point `after_sync` shows the key's newest write its quorum acknowledged). The
    /// answer waits until the key holds `min_version` or a newer one here, and is never older;
    /// if it does not get there within `wait`, it is `503 not_yet_replicated`. On a new leader
    /// under `after_sync` it also waits, as long, until enough followers of its term hold the
    /// state it took over ([`Node::readable`]).
    pub async fn read(
        &self,
        key: String,
        min_version: Version,
        wait: Duration,
    ) -> Result<ReadResponse> {
        let started = Instant::now();
        let deadline = started + wait;
        loop {
            // Registered before the check, so that a write applied right after it wakes this
            // read.
            let applied = self.applied.notified();
            let mut applied = std::pin::pin!(applied);
            applied.as_mut().enable();
            {
                let replica = self.replica();
                // Asked under the replica lock, under which a promotion installs its leader.
                if let Err(err) = self.readable() {
                    if Instant::now() >= deadline {
                        return Err(match err {
                            Error::StateNotReplicated { held, needed, .. } => {
                                Error::StateNotReplicated {
                                    held,
                                    needed,
                                    waited_ms: started.elapsed().as_millis() as u64,
                                }
                            }
                            err => err,
                        });
                    }
                    drop(replica);
                    let _ = tokio::time::timeout_at(deadline, applied).await;
                    continue;
                }
                let entry = replica.read(&key);
                let held = entry.map(|entry| entry.version);
                if held.unwrap_or_default() >= min_version {
                    let (value, version) = entry
                        .and_then(|entry| Some((entry.value.clone()?, entry.version)))
                        .ok_or_else(|| Error::NotFound { key: key.clone() })?;
                    return Ok(ReadResponse {
                        value,
                        key,
                        version,
                    });
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

    /// Every live key this node's readers see, with its value, sorted by key (`GET /dump`):
    /// read from a snapshot, after the lock, so that a large store holds up no other request.
    /// `503 state_not_replicated` when they may not see it yet ([`Node::readable`]).
    pub fn dump(&self) -> Result<BTreeMap<String, String>> {
        let snapshot = {
            let replica = self.replica();
            self.readable()?;
            replica.snapshot()
        };
        Ok(snapshot.dump())
    }

    /// Whether this node's readers may see what it holds: `503 state_not_replicated` on a new
    /// leader under `after_sync` while too few followers of its term hold the state it took
    /// over (the writes of older terms it held and merged, some of which no quorum
    /// acknowledged). Shown at once, a reader could see a write that only this leader holds and
    /// that the next safe promotion, merging followers of the older term, does not have. Once
    /// as many followers of its term as the floor hold it, it counts as a write of the term
    /// would, and stays readable. Ask it under the replica lock, as the readers do: a promotion
    /// installs its leader under that lock.
    pub fn readable(&self) -> Result<()> {
        let Some((held, needed)) = self.replicator().and_then(|leader| leader.unreadable()) else {
            return Ok(());
        };
        Err(Error::StateNotReplicated {
            held,
            needed,
            waited_ms: 0,
        })
    }

    /// The leader's write path: writes `value` to `key` (`None` deletes it), waiting for
    /// `quorum` follower acks, or the live `write_quorum`: assigns a version and applies it
    /// here, then replicates it and waits for the quorum. `421 not_leader` on a follower.
    pub async fn write(
        &self,
        key: String,
        value: Option<String>,
        quorum: Option<usize>,
    ) -> Result<WriteResponse> {
        (self.begin_write(key, value, quorum)?)
            .finish(self, Protocol::Http)
            .await
    }

    /// The first half of [`Node::write`], which does not wait: assigns the write a version,
    /// applies it here and sends it to the followers, so that what this connection reads next
    /// sees it (pipelined RESP commands answer in order, and a write's wait must not hold up
    /// the reads behind it). [`Writing::finish`] waits for the quorum.
    pub fn begin_write(
        &self,
        key: String,
        value: Option<String>,
        quorum: Option<usize>,
    ) -> Result<Writing> {
        let started = Instant::now();
        let replicator = self.leader()?;
        let followers = replicator.follower_count();
        let quorum = quorum.unwrap_or(replicator.settings().write_quorum);
        if quorum > followers {
            return Err(Error::InvalidQuery(format!(
                "quorum must be between 0 and {followers} (the number of followers), got {quorum}"
            )));
        }
        let (entry, wait_point) = replicator.apply(&key, value, quorum)?;
        self.applied();
        let write = Arc::new(Write::new(key, entry));
        // In the same poll as `apply`, which counts on it.
        let sending = replicator.send(Arc::clone(&write), quorum, wait_point);
        Ok(Writing {
            write,
            sending,
            quorum,
            wait_point,
            started,
        })
    }
}

/// A write applied on the leader and sent to its followers ([`Node::begin_write`]), whose
/// quorum [`Writing::finish`] waits for.
#[derive(Debug)]
pub struct Writing {
    write: Arc<Write>,
    sending: Sending,
    quorum: usize,
    wait_point: WaitPoint,
    started: Instant,
}

impl Writing {
    /// The write's acks, late ones included: the followers that hold it.
    pub fn tally(&self) -> &Arc<Tally> {
        self.sending.tally()
    }

    /// The version the leader gave the write.
    pub fn version(&self) -> Version {
        self.write.version
    }

    /// Waits for the write's quorum on `node`, the leader that began it, and answers as
    /// [`Node::write`] does; the metrics count it under `protocol`.
    pub async fn finish(self, node: &Node, protocol: Protocol) -> Result<WriteResponse> {
        let Writing {
            write,
            sending,
            quorum,
            wait_point,
            started,
        } = self;
        let outcome = sending.outcome().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let Write {
            key,
            value,
            version,
        } = Arc::unwrap_or_clone(write);
        debug!(%key, %version, acks = outcome.acks(), quorum, latency_ms, "write");
        let counted = match (&outcome.unannounced, outcome.reached()) {
            (Some(_), _) => "quorum_not_announced",
            (None, true) => "quorum_reached",
            (None, false) => "quorum_timeout",
        };
        node.metrics.write(counted, protocol, started.elapsed());

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
                visible_on_leader: !node.replica().hidden.hides(version),
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
        if let Some(leaderless_from) = node.elected_lock().take() {
            node.metrics.failover(leaderless_from.elapsed());
        }
        Ok(WriteResponse {
            key,
            value,
            version,
            quorum,
            acks: outcome.acks(),
            acked_by: outcome.acked_by,
            latency_ms,
            wait_point,
        })
    }
}
