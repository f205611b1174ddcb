//! A node's replicated state and its lock: the store, the newest term seen, what the node knows
//! of that term's leader, and the writes an `after_sync` leader hides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::hidden::Hidden;
use super::wire::{Epoch, Incarnation, Term};
use crate::error::Error;
use crate::settings::Settings;
use crate::store::{Entry, Store};

/// A node's replicated state: its store, the newest term it has seen, and on a follower what it
/// knows of that term's leader. One lock guards them all, so that "is this message of my term,
/// and do I hold its leader's state?" and "apply" happen together.
#[derive(Debug, Default)]
pub struct Replica {
    /// The versioned map.
    pub store: Store,
    /// The newest term this node has seen: its own on a leader. Messages of older terms are
    /// refused (`409 stale_term`).
    pub term: Term,
    /// The term whose leader's state this node holds: on a follower the term of the last state
    /// transfer that replaced its state, whose writes it accepts while that term is its newest;
    /// on a leader that stepped down, its own term. `None` until then, and on a leader. A newer
    /// term adopted (a fence, a new leader's heartbeat) does not change it: the node still holds
    /// that state until the new leader's transfer replaces it.
    pub following: Option<Term>,
    /// Whether the store holds a leader's state: false from the node's start until a state
    /// transfer replaced it or the node began to lead. A node that restarted lost what it held
    /// and acknowledged; until then it acknowledged nothing (a follower refuses writes until
    /// its transfer), so a candidate does not count it.
    pub filled: bool,
    /// Where clients reach the leader of `term`: its `PUBLIC_URL`, when it has one.
    pub leader_url: Option<String>,
    /// Where Redis clients reach the leader of `term`: its `RESP_PUBLIC_ADDR`, as its latest
    /// heartbeat named it.
    pub leader_resp_addr: Option<String>,
    /// The node (by incarnation) that took `term` here: the candidate whose fence this node
    /// accepted, or the leader whose message came first, or this node while it leads. A message
    /// of `term` from any other node is refused (`409 term_taken`).
    pub term_owner: Option<Incarnation>,
    /// The smallest write quorum of the term `following` this node has heard of from that
    /// term's leader (on a leader that stepped down: its own). A candidate counts with it, so a
    /// newer term adopted does not reset it: only a state transfer that replaces the state does.
    pub smallest_quorum: Option<usize>,
    /// The epoch of `smallest_quorum`: the leader raises it when it announces a larger quorum
    /// again, and this node keeps the smallest quorum of the newest epoch it heard.
    pub quorum_epoch: Epoch,
    /// On a follower: the live settings of its leader, from its heartbeat; a promoted follower
    /// carries on with them.
    pub leader_settings: Option<Settings>,
    /// On a leader under the wait point `after_sync`: its writes that no quorum acknowledged
    /// yet, hidden from its readers.
    pub hidden: Hidden,
    /// On a follower: when it last heard of its leader (a heartbeat, batch or state transfer
    /// accepted), or of a candidate that fenced it; `None` until then. Automatic failover
    /// counts the silence from here.
    pub heard_leader_at: Option<tokio::time::Instant>,
}

/// A [`Replica`]'s store and hidden writes as of one moment ([`Replica::snapshot`]): whole-store
/// work (a fence's answer, a dump, a state transfer's copy) reads it after the lock is released,
/// so that it holds up no other request.
#[derive(Debug)]
pub struct Snapshot {
    /// The store at that moment.
    pub store: Store,
    hidden: Hidden,
}

impl Snapshot {
    /// What the node's readers saw of `key` at that moment ([`Replica::read`]).
    pub fn read(&self, key: &str) -> Option<&Entry> {
        self.hidden.read(key, &self.store)
    }

    /// Every live key the node's readers saw at that moment, with its value, sorted by key.
    pub fn dump(&self) -> BTreeMap<String, String> {
        self.hidden.dump(&self.store)
    }

    /// Whether the node hid writes from its readers (an `after_sync` leader, or one that just
    /// stepped down).
    pub fn hides_writes(&self) -> bool {
        !self.hidden.is_empty()
    }
}

impl Replica {
    /// Checks the term of a message from a leader or a candidate: an older one is refused with
    /// the newer term and its leader. A newer one is adopted: this node then accepts no write
    /// until that term's leader's state transfer, and keeps what it knows of the state it holds
    /// (`following`, `smallest_quorum`). Returns whether the term was newer.
    pub fn check_term(&mut self, term: Term, leader_url: Option<&str>) -> Result<bool, Error> {
        if term < self.term {
            return Err(Error::StaleTerm {
                term: self.term,
                leader: self.leader_url.clone(),
            });
        }
        let newer = term > self.term;
        if newer {
            self.term = term;
            self.leader_url = None;
            self.leader_resp_addr = None;
            self.term_owner = None;
            // Not `hidden`: a leader that steps down keeps hiding its unacknowledged writes
            // until the new leader's state transfer replaces them.
        }
        if let Some(url) = leader_url {
            self.leader_url = Some(url.to_owned());
        }
        Ok(newer)
    }

    /// What this node's readers see of `key`: the store's entry (a tombstone included), or on
    /// an `after_sync` leader the newest one its quorum acknowledged.
    pub fn read(&self, key: &str) -> Option<&Entry> {
        self.hidden.read(key, &self.store)
    }

    /// What this node holds and its readers see, as of now, to read after the lock is released:
    /// the store's snapshot costs the same whatever its size ([`Store`]), the hidden writes' is
    /// a copy of them (at most `REPLICATION_BACKLOG`).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            store: self.store.clone(),
            hidden: self.hidden.clone(),
        }
    }

    /// Records the smallest write quorum the leader of the term it follows announced in
    /// `epoch`: the smallest of the newest epoch heard, so that a late message of an older epoch
    /// changes nothing.
    pub fn hear_quorum(&mut self, epoch: Epoch, quorum: usize) {
        let heard = match self.smallest_quorum {
            Some(heard) if epoch == self.quorum_epoch => heard.min(quorum),
            Some(_) if epoch < self.quorum_epoch => return,
            _ => quorum,
        };
        self.smallest_quorum = Some(heard);
        self.quorum_epoch = epoch;
    }
}

/// A [`Replica`] shared between request handlers and the leader's background tasks. The guard
/// is held for one synchronous step, never across an `.await`.
pub type SharedReplica = Arc<Mutex<Replica>>;

/// Locks a shared replica. Every operation under the lock leaves the map consistent (a single
/// insert or a whole replacement), so a lock poisoned by a panic is safe to keep using.
pub fn lock(replica: &Mutex<Replica>) -> MutexGuard<'_, Replica> {
    replica.lock().unwrap_or_else(PoisonError::into_inner)
}
