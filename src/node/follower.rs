//! A node's side of its leader's messages and of a candidate's fence: each checks the sender's
//! term first ([`Node::accept_term`]), then changes the replica in one step under its lock.

use std::sync::Arc;

use tokio::time::Instant;

use super::Node;
use super::kv::check_key;
use crate::error::{Error, Result};
use crate::replication::wire::{
    Batch, BatchAck, EntryAck, Fence, FenceAck, Heartbeat, NodeStatus, ReplicaState, StateTransfer,
    TransferAck, Write, issued,
};
use crate::store::Store;

impl Node {
    /// Applies a batch of replicated writes under one lock, each only if it is newer than what
    /// this follower holds, and acknowledges each in one answer: a duplicate or a late, older
    /// write is acknowledged too, and a bad write is refused on its own without holding back
    /// the others. Batches of an older term are refused (the sender was deposed), and so are
    /// batches of a leader whose state transfer this follower does not hold yet.
    pub fn receive_batch(&self, batch: Batch) -> Result<BatchAck> {
        let checks: Vec<Result<()>> = batch.writes.iter().map(|write| check(write)).collect();
        let acks = {
            let mut replica = self.replica();
            self.accept_term(&mut replica, batch.term, None, batch.leader)?;
            if replica.following != Some(batch.term) {
                return Err(Error::NotSynced {
                    following: replica.following,
                });
            }
            replica.hear_quorum(batch.quorum_epoch, batch.smallest_quorum);
            replica.heard_leader_at = Some(Instant::now());
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
        self.applied();
        Ok(BatchAck {
            node_id: self.node_id().to_owned(),
            acks,
        })
    }

    /// The leader's heartbeat: this follower adopts its term, hears of its public URL and RESP
    /// address, smallest quorum and live settings, and answers its status.
    pub fn receive_heartbeat(&self, heartbeat: Heartbeat) -> Result<NodeStatus> {
        let mut replica = self.replica();
        self.accept_term(
            &mut replica,
            heartbeat.term,
            heartbeat.leader_url.as_deref(),
            heartbeat.leader,
        )?;
        replica.leader_resp_addr = crate::config::dialable(heartbeat.leader_resp_addr);
        // A follower that does not hold this leader's state yet lacks writes of this term: what
        // it would report of their quorum could not be trusted by a candidate.
        if replica.following == Some(heartbeat.term) {
            replica.hear_quorum(heartbeat.quorum_epoch, heartbeat.smallest_quorum);
        }
        replica.leader_settings = Some(heartbeat.settings);
        replica.heard_leader_at = Some(Instant::now());
        Ok(self.status_of(&replica))
    }

    /// This node's role, term and leader, changing nothing: what a starting node and a
    /// candidate read from every peer.
    pub fn status(&self) -> NodeStatus {
        let replica = self.replica();
        self.status_of(&replica)
    }

    /// A candidate's fence: this node adopts the candidate's newer term, so that it refuses the
    /// old leader from now on, and answers its whole replica as of that moment, in one step
    /// under the lock. A leader steps down. A term that is not newer than this node's is
    /// refused: a node takes each term from one candidate only.
    pub fn receive_fence(&self, fence: Fence) -> Result<FenceAck> {
        let (snapshot, following, filled, smallest_quorum, leading) = {
            let mut replica = self.replica();
            if fence.term <= replica.term {
                return Err(Error::StaleTerm {
                    term: replica.term,
                    leader: replica.leader_url.clone(),
                });
            }
            // An election's vote is withheld while this node hears its leader (a leader hears
            // itself): a candidate that misses the heartbeats alone does not depose it.
            if fence.election && self.hears_leader_in(&replica) {
                let heard = replica.heard_leader_at;
                return Err(Error::HearsLeader {
                    term: replica.term,
                    leader: self.leader_url_in(&replica),
                    heard_ms_ago: heard.map_or(0, |at| at.elapsed().as_millis() as u64),
                });
            }
            let leading = self.replicator();
            let smallest_quorum = match &leading {
                Some(replicator) => Some(replicator.smallest_quorum()),
                None => replica.smallest_quorum,
            };
            // The replica as of the fence, in the same step: its copy is made after the lock.
            let snapshot = replica.snapshot();
            let (following, filled) = (replica.following, replica.filled);
            // Not the candidate's URL: it leads only if its count allows, and then says so in
            // its heartbeat; a refused candidate must not be named as the leader in this node's
            // 421s.
            self.accept_term(&mut replica, fence.term, None, fence.candidate)?;
            // The candidate gets `FAILOVER_AFTER_MS` to lead before this node runs an election
            // of its own.
            replica.heard_leader_at = Some(Instant::now());
            (snapshot, following, filled, smallest_quorum, leading)
        };
        let mut replica_state = ReplicaState::of(&snapshot.store, following, filled);
        if snapshot.hides_writes() {
            // A leader deposed under after_sync answers what its readers saw, not the writes it
            // hid: no quorum holds those, and a candidate that merged them would show them.
            replica_state
                .entries
                .retain_mut(|write| match snapshot.read(&write.key) {
                    Some(shown) if shown.version == write.version => true,
                    Some(shown) => {
                        *write = Write::new(write.key.clone(), shown.clone());
                        true
                    }
                    None => false,
                });
        }
        Ok(FenceAck {
            node_id: self.node_id().to_owned(),
            was_leader: leading.is_some(),
            smallest_quorum,
            state: replica_state,
        })
    }

    /// A state transfer from the leader: merged when this follower already holds that leader's
    /// state, otherwise it replaces the state and the follower follows that leader's term.
    pub fn receive_transfer(&self, transfer: StateTransfer) -> Result<TransferAck> {
        if transfer.follower != self.incarnation() {
            return Err(Error::StaleTransfer);
        }
        for write in &transfer.entries {
            check(write)?;
        }
        // Built before the lock: a transfer that replaces the state is a swap under it.
        let entries = transfer.entries.into_iter().map(Write::into_entry);
        let fresh = Store::of(entries, transfer.version);
        let mut replica = self.replica();
        self.accept_term(
            &mut replica,
            transfer.term,
            transfer.leader_url.as_deref(),
            transfer.leader,
        )?;
        let replaced = replica.following != Some(transfer.term);
        replica.heard_leader_at = Some(Instant::now());
        // The store replaced, or the transfer's once merged: dropped after the lock, since
        // freeing a store takes as long as it is large.
        let garbage = if replaced {
            // The quorum heard of was the replaced state's term's.
            replica.smallest_quorum = None;
            replica.quorum_epoch = 0;
            // What a deposed leader hid went with the state it held.
            replica.hidden.clear();
            replica.following = Some(transfer.term);
            replica.filled = true;
            let mut fresh = fresh;
            // Keep the version counter where it was: versions never go backwards on a node.
            fresh.observe(replica.store.latest_version());
            std::mem::replace(&mut replica.store, fresh)
        } else {
            // This leader's state already: merged into it, where its live writes go on landing
            // (a follower that fell behind and missed some).
            let copied = fresh
                .entries()
                .map(|(key, entry)| (key.to_owned(), entry.clone()));
            replica.store.merge(copied);
            replica.store.observe(transfer.version);
            fresh
        };
        // It holds this term's state now: what it hears of the term's quorum can be trusted.
        if let Some(quorum) = transfer.smallest_quorum {
            replica.hear_quorum(transfer.quorum_epoch, quorum);
        }
        let version = replica.store.latest_version();
        drop(replica);
        drop(garbage);
        self.applied();
        Ok(TransferAck {
            node_id: self.node_id().to_owned(),
            replaced,
            version,
        })
    }
}

/// Checks a replicated write's key and version.
fn check(write: &Write) -> Result<()> {
    check_key(&write.key)?;
    if !issued(write.version) {
        return Err(Error::InvalidBody(format!(
            "version {} was not issued by a leader: its term and counter are each at least 1",
            write.version
        )));
    }
    Ok(())
}
