//! How a node becomes the leader: at start-up ([`Node::start`]) or promoted
//! ([`Node::promote`]). Both take over by the same steps (see [`failover`](crate::failover)):
//! fence the peers with a new term, merge their states, count them, and lead only when the
//! count allows it.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Node, Role};
use crate::config;
use crate::error::Error;
use crate::failover::{self, Count, Fenced, Peers, Promotion};
use crate::recovery::HEARTBEAT_INTERVAL;
use crate::replication::Failure;
use crate::replication::wire::{Fence, NodeStatus};
use crate::replication::{Leadership, Replicator, Term};
use crate::settings::{Settings, WaitPoint};

/// What a node heard from the leader of its term, kept when it takes a newer one: the smallest
/// write quorum of that term, and that leader's live settings.
#[derive(Debug)]
struct Heard {
    /// The term whose leader's state this node holds, and the smallest quorum of that term it
    /// heard of.
    following: Option<Term>,
    smallest_quorum: Option<usize>,
    settings: Option<Settings>,
    /// Whether this node held a leader's state: only then does it count itself among the
    /// followers merged (see `failover::not_counted`).
    holds_state: bool,
}

impl Heard {
    /// What this node reports of the state it holds, for its own merge.
    fn own_report(&self) -> failover::Report {
        failover::Report {
            following: self.following,
            smallest_quorum: self.smallest_quorum,
            counted: self.holds_state,
        }
    }
}

impl Node {
    /// Start-up, before the node serves anything: a node started as the leader asks its peers
    /// whether one of them leads, and follows it if so. In a new cluster (every peer answered
    /// and none has seen a term) it leads at once. Otherwise it takes over only by the same safe
    /// promotion as any follower ([`Node::promote`] without `force`): when that is refused
    /// it follows, and says why in its log and in `/health` (`waiting`) until it leads or
    /// follows a leader. A follower asks its peers for the newest term once, and waits for its
    /// leader's heartbeat.
    pub async fn start(&self) {
        let Some(peers) = &self.peers else {
            return;
        };
        if self.identity.start_role != config::Role::Leader {
            // A follower that restarted remembers no term: it learns the newest one now, so that
            // a deposed leader cannot get its acks before the current leader's heartbeat comes.
            let statuses = peers
                .statuses(Instant::now() + HEARTBEAT_INTERVAL, false)
                .await;
            let newest = statuses.iter().flatten().map(|status| status.term).max();
            let leader = failover::live_leader(&statuses);
            if let Some(term) = newest {
                // Named only when it leads that newest term.
                let leader_url = leader
                    .filter(|leader| leader.term == term)
                    .and_then(|leader| leader.leader_url.as_deref());
                let _ = self.replica().check_term(term, leader_url);
            }
            return;
        }
        let _one_at_a_time = self.promoting.lock().await;
        let deadline = Instant::now() + failover::START_TIMEOUT;
        let statuses = peers.statuses(deadline, true).await;
        if let Some(leader) = failover::live_leader(&statuses) {
            info!(leader = %leader.node_id, term = leader.term,
                "a leader is already running: following it instead of leading");
            let _ = self
                .replica()
                .check_term(leader.term, leader.leader_url.as_deref());
            return;
        }
        let new_cluster = statuses
            .iter()
            .all(|status| status.as_ref().is_ok_and(|status| status.term == 0));
        if new_cluster {
            // No node has ever led or followed: there is nothing to lose.
            let (fenced, heard) = match self.fence(peers, 1, false).await {
                Ok(fenced) => fenced,
                Err(err) => return self.wait(err),
            };
            let merged = peers.merge(&self.replica, 1, &fenced, heard.own_report());
            if merged.is_none() || self.lead(peers, 1, heard.settings, None, 0).is_none() {
                warn!("a newer term began while starting: following it instead of leading");
            }
            return;
        }
        // Fenced for nothing, the nodes it reaches would refuse a leader it cannot see.
        let reached = 1 + statuses.iter().flatten().filter(|s| remembers(s)).count();
        let majority = crate::replication::quorum::majority(peers.urls.len());
        if reached < majority {
            return self.wait(failover::refused(format!(
                "it reached {reached} of the {} nodes (itself included); a term is taken by a \
                 majority of all nodes ({majority}){}",
                peers.urls.len() + 1,
                failover::unauthorized_hint(&statuses)
            )));
        }
        match self.take_over(peers, &statuses, false, false).await {
            Ok(promotion) => info!(
                term = promotion.term,
                merged = promotion.merged,
                "started as the leader: {}",
                promotion.guarantee
            ),
            Err(err) => self.wait(err),
        }
    }

    /// A node started as the leader that does not lead: it follows, and says why.
    fn wait(&self, why: Error) {
        warn!(error = %why, "started with ROLE=leader, but not leading: following; promote a \
            node with `semisync-kv failover` once enough nodes answer");
        let _replica = self.replica();
        let mut role = self.role_mut();
        if !matches!(&*role, Role::Leader(replicator) if !replicator.is_deposed()) {
            *role = Role::Waiting(why.to_string());
        }
    }

    /// Leads term 1 at once, without asking the peers: the router tests have none that answer,
    /// and test the routes, not the start.
    #[cfg(test)]
    pub(crate) fn lead_at_once(&self) {
        if let Some(peers) = &self.peers {
            let _ = self.replica().check_term(1, None);
            self.lead(peers, 1, None, None, 0);
        }
    }

    /// Adopts `term` on this node, then fences every peer with it (asking for their votes when
    /// `election`) and reads their states.
    /// Returns them, and what this node had heard from the ending term's leader; refuses when
    /// this node has already seen `term` or a newer one (another candidate fenced it first): a
    /// node takes each term from one candidate only, itself included.
    async fn fence(
        &self,
        peers: &Peers,
        term: Term,
        election: bool,
    ) -> Result<(Fenced, Heard), Error> {
        let leader_url = self.identity.public_url.clone();
        let heard = {
            let mut replica = self.replica();
            if term <= replica.term {
                return Err(failover::refused(format!(
                    "term {} began meanwhile (another candidate's); this node follows it",
                    replica.term
                )));
            }
            let heard = Heard {
                following: replica.following,
                smallest_quorum: replica.smallest_quorum,
                settings: replica.leader_settings,
                holds_state: replica.filled,
            };
            // This node first: from now on it refuses the old leader too, and other candidates
            // of this term.
            let _ = replica.check_term(term, leader_url.as_deref());
            replica.term_owner = Some(self.identity.incarnation);
            heard
        };
        let fence = Fence {
            term,
            leader_url,
            candidate: self.identity.incarnation,
            election,
        };
        Ok((peers.fence(&fence).await, heard))
    }

    /// Leads `term` over `peers`, with the live settings the old leader's heartbeat carried
    /// (`heard`) when they fit, else this node's configured ones, and the smallest quorum of the
    /// writes it inherited (`inherited`), which its followers must hear of; its versions are of
    /// `term`, their counter continuing after what it holds, and at least `counter_from`
    /// ([`failover::counter_from`]). `None` when a newer term began meanwhile: the node follows
    /// it instead.
    fn lead(
        &self,
        peers: &Peers,
        term: Term,
        heard: Option<Settings>,
        inherited: Option<usize>,
        counter_from: u64,
    ) -> Option<Replicator> {
        let settings = failover::settings_for(heard, self.identity.settings, peers.urls.len());
        // A new leadership: the failover time of an earlier election no longer applies.
        *self.elected_lock() = None;
        let replicator = {
            // The term checked and the replicator installed under the replica lock (taken before
            // the role lock, as everywhere), so that no message of a newer term can slip
            // in between and find no leader to depose.
            let mut replica = self.replica();
            if replica.term != term {
                return None;
            }
            let leadership = Leadership {
                term,
                incarnation: self.identity.incarnation,
                public_url: self.identity.public_url.clone(),
                resp_public_addr: self.identity.resp_public_addr.get().cloned(),
                settings,
                backlog: self.identity.backlog,
                // Asynchronous writes promised nothing: a quorum of 0 is not inherited.
                smallest_quorum: inherited
                    .filter(|&quorum| quorum > 0)
                    .map_or(settings.write_quorum, |q| q.min(settings.write_quorum)),
                wake_reads: Arc::clone(&self.applied),
                // What it held and merged, tombstones included.
                inherits: replica.store.entries().next().is_some(),
            };
            replica.following = None;
            replica.filled = true;
            replica.store.begin_term(term, counter_from);
            replica.leader_url = self.identity.public_url.clone();
            replica.term_owner = Some(self.identity.incarnation);
            // It leads with what it holds and merged, visible as a follower's was; but its own
            // writes hidden under after_sync (it led before, and was deposed) no follower may
            // hold: they stay hidden until the new term's quorum holds them, unless the term
            // begins under after_commit, which shows every write it holds.
            if leadership.settings.wait_point == WaitPoint::AfterSync {
                replica.hidden.forget_acks();
            } else {
                replica.hidden.clear();
            }
            let replicator = peers.replicator(leadership, &self.replica, &self.metrics);
            *self.role_mut() = Role::Leader(replicator.clone());
            replicator
        };
        replicator.spawn_heartbeats();
        Some(replicator)
    }

    /// Promotes this follower to leader of a new term (`POST /admin/promote`): refuses while a
    /// peer still leads or when too few followers can be merged, unless `force`.
    pub async fn promote(&self, force: bool) -> Result<Promotion, Error> {
        self.promote_by(force, false).await
    }

    /// [`Node::promote`], or with `election` an election of automatic failover: then a
    /// majority of all nodes must hear no leader first (the pre-vote), and the fence asks for
    /// votes, which a node that still hears its leader withholds.
    pub(super) async fn promote_by(&self, force: bool, election: bool) -> Result<Promotion, Error> {
        let Some(peers) = &self.peers else {
            return Err(failover::refused(
                "this node has no PEERS: it cannot reach the other nodes to lead them",
            ));
        };
        let _one_at_a_time = self.promoting.lock().await;
        if let Some(replicator) = self.replicator() {
            return Err(failover::refused(format!(
                "this node already leads term {}",
                replicator.term()
            )));
        }
        let deadline = Instant::now() + HEARTBEAT_INTERVAL;
        let statuses = peers.statuses(deadline, false).await;
        if let (Some(leader), false) = (failover::live_leader(&statuses), force) {
            return Err(Error::LeaderAlive {
                node_id: leader.node_id.clone(),
                term: leader.term,
                leader: leader.leader_url.clone(),
            });
        }
        let followers = peers.urls.len();
        if election {
            // Pre-vote: changing nothing, so that a node cut off alone raises no term.
            let voters = 1
                + (statuses.iter().flatten())
                    .filter(|status| remembers(status) && !status.hears_leader)
                    .count();
            let majority = crate::replication::quorum::majority(followers);
            if voters < majority {
                return Err(failover::refused(format!(
                    "{voters} of the {} nodes (itself included) hear no leader: an election needs \
                     a majority ({majority}); the others still hear theirs, or do not answer",
                    followers + 1
                )));
            }
        }
        let smallest_quorum = self.replica().smallest_quorum;
        // Only the followers that hold a leader's state count (`failover::not_counted`). This
        // node counts itself here even when it holds none: then it has not heard the ending
        // term's quorum either, which the fence tells it; the count after the fence decides.
        let reachable = 1 + statuses
            .iter()
            .flatten()
            .filter(|status| status.role == config::Role::Follower && status.filled)
            .count();
        let before = Count {
            followers,
            merged: reachable,
            smallest_quorum,
            reached: 1 + statuses.iter().flatten().filter(|s| remembers(s)).count(),
        };
        if !force && !before.allows() {
            return Err(failover::refuse(&before, None));
        }

        self.take_over(peers, &statuses, force, election).await
    }

    /// Takes a term above every one in `statuses` (the peers' answers) and this node's: fences
    /// the peers, merges their states, counts them, and leads when the count allows it
    /// ([`Count::allows`]) or `force`. A refusal leaves the fenced nodes at the new term, which
    /// nobody leads.
    async fn take_over(
        &self,
        peers: &Peers,
        statuses: &[Result<NodeStatus, Failure>],
        force: bool,
        election: bool,
    ) -> Result<Promotion, Error> {
        let followers = peers.urls.len();
        let own_term = self.replica().term;
        let term = failover::next_term(own_term, statuses);
        let (fenced, heard) = self.fence(peers, term, election).await?;
        let newer =
            || failover::refused("a newer term began during the promotion; this node follows it");
        let (merged, smallest_quorum) = peers
            .merge(&self.replica, term, &fenced, heard.own_report())
            .ok_or_else(newer)?;
        self.applied();
        let count = Count {
            followers,
            merged: (merged + usize::from(heard.holds_state)).min(followers),
            smallest_quorum,
            // A node that restarted forgot its terms: it could take this one from another
            // candidate too, so it does not count towards the majority.
            reached: 1
                + (fenced.answers.iter().flatten())
                    .filter(|ack| ack.state.filled || ack.was_leader)
                    .count(),
        };
        if !force && !count.allows() {
            // Nobody leads this term: this node must not name itself in its 421s (unless a
            // newer term's leader was named meanwhile).
            let mut replica = self.replica();
            if replica.term == term {
                replica.leader_url = None;
            }
            drop(replica);
            return Err(failover::refuse(&count, Some(term)));
        }
        let forced = force && !count.allows();
        let counter_from = failover::counter_from(forced, &fenced);
        let Some(replicator) =
            self.lead(peers, term, heard.settings, smallest_quorum, counter_from)
        else {
            return Err(newer());
        };
        let (version, keys) = self.version_and_keys();
        let promotion = Promotion {
            node_id: self.node_id().to_owned(),
            term,
            leader_url: self.identity.public_url.clone(),
            followers,
            merged: count.merged,
            smallest_quorum: count.smallest_quorum,
            kept_if_acked_by: count.kept_if_acked_by(),
            safe: count.safe(),
            forced,
            guarantee: if heard.holds_state {
                count.guarantee()
            } else {
                format!(
                    "{}; this node does not count itself: it restarted and had no state transfer \
                     since, so it holds no leader's state",
                    count.guarantee()
                )
            },
            version,
            keys,
            peers: peers.reports(statuses, &fenced),
        };
        warn!(term, merged = count.merged, of = followers, safe = promotion.safe,
            settings = %replicator.settings(), "promoted: {}", promotion.guarantee);
        Ok(promotion)
    }
}

/// Whether a peer remembers the terms it took: it leads, or holds a leader's state (a node that
/// restarted holds none, and has forgotten them).
fn remembers(status: &NodeStatus) -> bool {
    status.filled || status.role == config::Role::Leader
}
