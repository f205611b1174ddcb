//! Failover: how a node becomes the leader, when it starts with `ROLE=leader` or when a follower
//! is promoted (`POST /admin/promote`), without losing a write a client was told succeeded.
//!
//! # Terms and fencing
//!
//! Every leadership has a [`Term`], a number that only grows. Every message a leader sends
//! carries its term, and a node refuses messages of a term older than the newest it has seen
//! (`409 stale_term`, naming the newer term and its leader). A leader that learns of a newer term
//! (a follower refuses its batch, or a candidate fences it) steps down at once and follows.
//!
//! # Promotion by quorum intersection
//!
//! Followers apply writes in any order, so "the follower with the highest version" may still
//! lack an older acknowledged write. A candidate therefore **merges the states** of every
//! follower it reaches, its own included, and counts those that hold a leader's state, in
//! this order:
//!
//! 1. **Fence.** It takes a term above every one it has seen and sends it to every peer
//!    (`POST /internal/fence`). A peer adopts the term and answers its replica *in the same
//!    step*, under its lock: every write it acknowledged before is in that answer, and from then
//!    on it refuses the old leader. Reading first and fencing after would lose a write the old
//!    leader got acknowledged in between.
//! 2. **Count.** A write acknowledged by `W` of the `N` followers is in the merged state of any
//!    `N - W + 1` of them (the two sets must share a follower). So with `R` followers merged,
//!    every write acknowledged by at least `N - R + 1` followers is kept, and the promotion is
//!    safe when `R >= N - Wmin + 1`, where `Wmin` is the smallest quorum any write of the ending
//!    term used, per-request overrides included (followers hear of it with every batch and
//!    heartbeat, and report it for the term whose state they hold; the candidate counts with
//!    the reports of the newest such term among the followers it counts, and with a deposed
//!    leader's own). With asynchronous writes (`Wmin = 0`) no promotion is safe. Too few
//!    followers is a `409`, unless `force=true`. A candidate can only count with a quorum
//!    that one of the followers it merges heard of; so the leader lets a write with a quorum
//!    below every earlier one count only once enough followers heard of that quorum that
//!    every set a promotion may count contains one of them (the *floor*,
//!    [`quorum::established`](crate::replication::quorum::established)). Until then the write
//!    answers `503 quorum_not_announced`: the leader of a minority side of a partition cannot
//!    lower its quorum there.
//! 3. **Merge and lead.** The candidate merges the states (not a deposed leader's: no follower
//!    acknowledged what it alone holds; a node that holds no leader's state, a follower
//!    restarted and not refilled by a state transfer since, lost what it acknowledged: its
//!    state is merged but it does not count, the candidate itself included; a leader that
//!    stepped down before this fence answers as a follower holding its own term's state, and is
//!    merged and counted as one), issues versions of its new term (which beat every older
//!    term's, see [`version`](crate::version)), and leads the new term with the live settings
//!    of the old one, once a majority of all nodes took the term
//!    (nodes that restarted and forgot their terms do not count towards it).
//!    Every other node gets a state transfer that replaces its state, which removes the ending
//!    term's writes that no quorum kept.
//!
//! A node that starts with `ROLE=leader` first asks its peers whether one of them leads: if so it
//! follows, whatever its role says (the old leader restarted after a failover). In a new cluster
//! (every peer answered, none has seen a term) it leads term 1. Otherwise it takes over the same
//! way, count and majority included, and follows when refused.
//!
//! What this is not: an election. Nobody promotes by itself; a person or a script runs the
//! failover, as with MHA or orchestrator. The majority rule keeps two candidates from leading
//! one term; `force` skips it with the count.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use utoipa::ToSchema;

use crate::config::Role;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::replication::transport::Failure;
use crate::replication::wire::{Fence, FenceAck, MAX_JSON_INTEGER, NodeStatus, Write};
use crate::replication::{LagClock, Leadership, Replicator, SharedReplica, Term, Transport, lock};
use crate::settings::Settings;
use crate::store::Version;

/// How long a starting leader waits for its peers to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two attempts to reach a peer while a leader starts.
const RETRY: Duration = Duration::from_millis(200);

/// A node's peers: every other node, by the base URL of its internal listener, and what it
/// needs to lead them.
#[derive(Debug)]
pub struct Peers {
    /// Their internal base URLs (`PEERS`).
    pub urls: Vec<Url>,
    transport: Arc<dyn Transport>,
    clock: Arc<LagClock>,
}

/// What a node reports of the state it holds, as a candidate counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// The term whose leader's state it holds.
    pub following: Option<Term>,
    /// The smallest quorum of that term it heard of.
    pub smallest_quorum: Option<usize>,
    /// Whether it counts among the followers merged (`not_counted`).
    pub counted: bool,
}

/// The smallest quorum of the ending term, from what the counted nodes report: the smallest
/// that those holding the newest state among them (the largest `following`) heard of. An older
/// term's quorum says nothing of the newer term's writes, so it is left out; a node fenced by
/// a candidate that was then refused still holds and reports its term's, so the next
/// promotion counts with it. `None` when none of them heard of any.
pub fn smallest_quorum(reports: &[Report]) -> Option<usize> {
    let counted = || reports.iter().filter(|report| report.counted);
    let newest = counted().filter_map(|report| report.following).max()?;
    counted()
        .filter(|report| report.following == Some(newest))
        .filter_map(|report| report.smallest_quorum)
        .min()
}

/// What one peer answered during a promotion.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PeerReport {
    /// The peer's internal URL.
    pub url: String,
    /// Its node id, when it answered.
    pub node_id: Option<String>,
    /// Its role before the fence, when it answered.
    pub role: Option<Role>,
    /// Its latest version before the fence, when it answered.
    pub version: Option<Version>,
    /// Whether its state was merged.
    pub merged: bool,
    /// Why it was not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a promotion did and what it guarantees: the answer to `POST /admin/promote`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Promotion {
    /// The new leader's node id.
    pub node_id: String,
    /// The new term.
    pub term: Term,
    /// Where clients reach the new leader (its `PUBLIC_URL`), if it has one.
    pub leader_url: Option<String>,
    /// The followers a leader of this cluster has (`N`: the new leader's peers).
    pub followers: usize,
    /// Followers that count as merged (`R`): merged and holding a leader's state, the new
    /// leader's own included if it holds one.
    pub merged: usize,
    /// The smallest write quorum of the ending term that the merged followers heard of
    /// (`Wmin`); `null` when none heard of any write (then 1 is assumed).
    pub smallest_quorum: Option<usize>,
    /// Every write acknowledged by at least this many followers is kept (`N - R + 1`).
    pub kept_if_acked_by: usize,
    /// Whether every acknowledged write of the ending term is kept (`R >= N - Wmin + 1`).
    pub safe: bool,
    /// Whether `force=true` promoted a node the count refused.
    pub forced: bool,
    /// The guarantee, in words.
    pub guarantee: String,
    /// The version new writes continue after.
    pub version: Version,
    /// Live keys after the merge.
    pub keys: usize,
    /// What each peer answered.
    pub peers: Vec<PeerReport>,
}

/// How the states a candidate collected count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    /// `N`: the followers of a leader of this cluster.
    pub followers: usize,
    /// `R`: followers merged that hold a leader's state, the candidate included if it does.
    pub merged: usize,
    /// `Wmin`, when known.
    pub smallest_quorum: Option<usize>,
    /// Nodes that took the new term (answered the fence, or the status before it) and remember
    /// the terms they take (they lead, or hold a leader's state: a node that restarted forgot
    /// them), the candidate included.
    pub reached: usize,
}

impl Count {
    /// Writes acknowledged by at least this many followers are in the merge: `N - R + 1`.
    pub fn kept_if_acked_by(&self) -> usize {
        (self.followers + 1).saturating_sub(self.merged).max(1)
    }

    /// The smallest quorum, 1 when no merged follower heard of any write: the weakest a
    /// synchronous write can be.
    fn quorum(&self) -> usize {
        self.smallest_quorum.unwrap_or(1)
    }

    /// Followers a safe promotion must merge: `N - Wmin + 1`; `None` when no number suffices
    /// (asynchronous writes). A reported quorum above `N` counts as `N`: no write can have had
    /// more acks.
    pub fn needed(&self) -> Option<usize> {
        match self.quorum().min(self.followers) {
            0 => None,
            quorum => Some(self.followers + 1 - quorum),
        }
    }

    /// Whether every write of the ending term acknowledged to its client is in the merge.
    pub fn safe(&self) -> bool {
        self.needed().is_some_and(|needed| self.merged >= needed)
    }

    /// Nodes that must take a term before one leads it: a majority of all `N + 1`. A node takes
    /// each term once, so two candidates never both reach a majority with one term.
    pub fn majority(&self) -> usize {
        crate::replication::quorum::majority(self.followers)
    }

    /// Whether a promotion that is not forced may lead: it is safe, and a majority took its
    /// term.
    pub fn allows(&self) -> bool {
        self.safe() && self.reached >= self.majority()
    }

    /// The guarantee in words.
    pub fn guarantee(&self) -> String {
        let (n, r, kept) = (self.followers, self.merged, self.kept_if_acked_by());
        let merged = format!(
            "merged {r} of {n} followers: every write acknowledged by at least {kept} {} is kept",
            plural(kept, "follower")
        );
        match self.needed() {
            None => format!(
                "{merged}; but the ending term wrote with quorum 0 (asynchronous), so a write \
                 acknowledged to its client before any follower had it may be lost"
            ),
            Some(_) if self.safe() => format!(
                "{merged}, and the ending term's smallest quorum was {}: no acknowledged write \
                 is lost",
                self.quorum()
            ),
            Some(_) => format!(
                "{merged}; the ending term's smallest quorum was {q}, so a write acknowledged by \
                 only {q} to {} followers may be lost",
                kept - 1,
                q = self.quorum()
            ),
        }
    }
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// The states a candidate collected by fencing its peers.
#[derive(Debug)]
pub struct Fenced {
    /// What each peer answered, in `PEERS` order.
    pub answers: Vec<Result<FenceAck, Failure>>,
}

impl Peers {
    /// The peers at `urls`, reached over `transport`; `clock` is the lag clock a leader of
    /// them sleeps on.
    pub fn new(urls: Vec<Url>, transport: Arc<dyn Transport>, clock: Arc<LagClock>) -> Self {
        Self {
            urls,
            transport,
            clock,
        }
    }

    /// Asks every peer for its status, concurrently; retries the ones that fail until
    /// `deadline` when `retry` is set (a starting cluster), else asks each once.
    pub async fn statuses(
        &self,
        deadline: Instant,
        retry: bool,
    ) -> Vec<Result<NodeStatus, Failure>> {
        let asks = (0..self.urls.len()).map(|peer| async move {
            loop {
                let asked = tokio::time::timeout_at(deadline, self.transport.status(peer)).await;
                match asked {
                    Err(_) => return Err(Failure::new("timeout", "no answer in time")),
                    Ok(Ok(status)) => return Ok(status),
                    Ok(Err(failure)) if retry && Instant::now() + RETRY < deadline => {
                        debug!(peer = %self.urls[peer], error = %failure, "retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                    Ok(Err(failure)) => return Err(failure),
                }
            }
        });
        join_all(asks).await
    }

    /// Fences every peer with `fence` and collects their replicas, concurrently, once each
    /// (the peers were just asked for their status). The transport bounds the wait: a peer that
    /// cannot be reached fails at once, a frozen one when its answer has not begun within 2 s,
    /// and a large state may take longer to arrive.
    pub async fn fence(&self, fence: &Fence) -> Fenced {
        let fences = (0..self.urls.len()).map(|peer| self.transport.fence(peer, fence.clone()));
        Fenced {
            answers: join_all(fences).await,
        }
    }

    /// Merges the fenced states into `replica`, and raises its latest version to the newest
    /// seen; returns how many followers' states were merged (not counting this
    /// node) and the smallest quorum of the ending term they, this node (`own`) and a deposed
    /// leader reported ([`smallest_quorum`]). Merges nothing, and returns `None`, when the
    /// replica is no longer at the candidate's `term` (a newer one began meanwhile).
    pub fn merge(
        &self,
        replica: &SharedReplica,
        term: Term,
        fenced: &Fenced,
        own: Report,
    ) -> Option<(usize, Option<usize>)> {
        let mut replica = lock(replica);
        if replica.term != term {
            // A newer term began while the candidate fenced: the node may hold that leader's
            // state already, which a merge of older states would make it diverge from.
            return None;
        }
        let mut reports = vec![own];
        let mut merged = 0;
        for ack in fenced.answers.iter().flatten() {
            replica.store.observe(ack.state.version);
            let counted = !ack.was_leader && ack.state.filled;
            reports.push(Report {
                following: ack.state.following,
                smallest_quorum: ack.smallest_quorum,
                counted,
            });
            if ack.was_leader {
                continue;
            }
            // Merged whatever it holds (it may have merged others' states itself, as a refused
            // candidate), but counted only when it holds a leader's state.
            let entries = ack.state.entries.iter().cloned().map(Write::into_entry);
            replica.store.merge(entries);
            merged += usize::from(counted);
        }
        let deposed = (fenced.answers.iter().flatten())
            .filter(|ack| ack.was_leader)
            .filter_map(|ack| ack.smallest_quorum);
        let smallest = smallest_quorum(&reports).into_iter().chain(deposed).min();
        Some((merged, smallest))
    }

    /// The replicator of a leader of `leadership.term` over these peers, writing to `replica`,
    /// with its pipelines started; the caller starts its heartbeats once it is installed.
    pub fn replicator(
        &self,
        leadership: Leadership,
        replica: &SharedReplica,
        metrics: &Arc<Metrics>,
    ) -> Replicator {
        info!(
            term = leadership.term,
            followers = self.urls.len(),
            "leading"
        );
        Replicator::new(
            leadership,
            &self.urls,
            Arc::clone(&self.transport),
            Arc::clone(replica),
            Arc::clone(metrics),
            Arc::clone(&self.clock),
        )
    }

    /// What each peer answered, for a promotion's report.
    pub fn reports(
        &self,
        statuses: &[Result<NodeStatus, Failure>],
        fenced: &Fenced,
    ) -> Vec<PeerReport> {
        self.urls
            .iter()
            .zip(statuses.iter().zip(&fenced.answers))
            .map(|(url, (status, answer))| {
                let status = status.as_ref().ok();
                PeerReport {
                    url: url.to_string(),
                    node_id: status.map(|s| s.node_id.clone()),
                    role: status.map(|s| s.role),
                    version: status.map(|s| s.version),
                    merged: answer.as_ref().is_ok_and(|ack| !ack.was_leader),
                    error: match answer {
                        Ok(ack) => not_counted(ack).map(str::to_owned),
                        Err(failure) => Some(format!("not reached ({})", failure.kind)),
                    },
                }
            })
            .collect()
    }
}

/// Why a fenced peer does not count among the followers merged, if it does not: it led (its
/// state is not merged: no follower acknowledged what a leader alone holds), or it holds no
/// leader's state: it restarted and had no state transfer since, so it lost what it
/// acknowledged before (and acknowledged nothing after: a follower refuses writes until its
/// transfer). What such a node holds is merged all the same.
fn not_counted(ack: &FenceAck) -> Option<&'static str> {
    if ack.was_leader {
        Some("was the leader: deposed, its writes not merged")
    } else if !ack.state.filled {
        Some("holds no leader's state (restarted, no state transfer since): merged, not counted")
    } else {
        None
    }
}

/// The live settings a new leader starts with: the ones its old leader's heartbeat carried,
/// when they fit this cluster, else `fallback`.
pub fn settings_for(heard: Option<Settings>, fallback: Settings, followers: usize) -> Settings {
    heard
        .filter(|settings| settings.validate(Some(followers), None).is_ok())
        .unwrap_or(fallback)
}

/// The term a new leader takes: above its own and every one its peers reported (at most the
/// largest a message may carry; a fence of a term not above a node's is refused).
pub fn next_term(own: Term, statuses: &[Result<NodeStatus, Failure>]) -> Term {
    let newest = statuses.iter().flatten().map(|status| status.term);
    newest
        .fold(own, Term::max)
        .saturating_add(1)
        .min(MAX_JSON_INTEGER)
}

/// The live leader among `statuses`, if one answered.
pub fn live_leader(statuses: &[Result<NodeStatus, Failure>]) -> Option<&NodeStatus> {
    statuses
        .iter()
        .flatten()
        .filter(|status| status.role == Role::Leader)
        .max_by_key(|status| status.term)
}

/// What to add to a refusal when peers answered `401`: this node's `CLUSTER_TOKEN` is not
/// theirs, which no waiting fixes. Empty when none did.
pub fn unauthorized_hint(statuses: &[Result<NodeStatus, Failure>]) -> String {
    let refused = statuses
        .iter()
        .filter(|status| status.as_ref().is_err_and(Failure::unauthorized))
        .count();
    match refused {
        0 => String::new(),
        n => format!(
            "; {n} of its {} peers answered 401 unauthorized: this node's CLUSTER_TOKEN is not \
             theirs. Start every node with the same one (with compose, `export CLUSTER_TOKEN=...` \
             in the shell that runs every `docker compose` command, not as a prefix of one)",
            statuses.len()
        ),
    }
}

/// Refuses a promotion that cannot be tried at all, before any follower was counted.
pub fn refused(reason: impl Into<String>) -> Error {
    Error::PromotionRefused {
        reason: reason.into(),
        merged: 0,
        needed: None,
        smallest_quorum: None,
    }
}

/// Refuses a promotion that the count does not make safe.
pub fn refuse(count: &Count, fenced_term: Option<Term>) -> Error {
    let needed = count.needed();
    // Before the fence, itself and the followers whose status answered; after it, those whose
    // fence answer counts (`not_counted`).
    let (counted, itself) = match fenced_term {
        Some(_) => ("merged", "itself included if it does"),
        None => ("reaches", "itself included"),
    };
    let why = match needed {
        None => "the ending term wrote with quorum 0 (asynchronous): no promotion can keep \
                 every acknowledged write"
            .to_owned(),
        Some(_) if count.safe() => format!(
            "it reached {} of the {} nodes (itself included), and a term is taken by a majority \
             of all nodes ({}), so that two candidates never lead one term",
            count.reached,
            count.followers + 1,
            count.majority()
        ),
        Some(needed) => format!(
            "it {counted} {} of {} followers that hold a leader's state ({itself}), and a write \
             acknowledged by {} (the ending term's smallest quorum) is only sure to be in the \
             merge of {needed}",
            count.merged,
            count.followers,
            count.quorum()
        ),
    };
    let fenced = match fenced_term {
        Some(term) => format!(
            " The reachable nodes were fenced with term {term}: they refuse the old leader; \
             promote again when more followers are back."
        ),
        None => String::new(),
    };
    if let Some(term) = fenced_term {
        warn!(
            term,
            merged = count.merged,
            "promotion refused after the fence"
        );
    }
    Error::PromotionRefused {
        reason: format!("{why}; force=true promotes anyway and may lose writes.{fenced}"),
        merged: count.merged,
        needed,
        smallest_quorum: count.smallest_quorum,
    }
}

/// Where the version counter of a new leader of `term` starts from, besides the newest version
/// it merged. Its term is above every one the nodes it merged had seen, so its versions beat
/// every older term's, those of peers it did not reach included (a deposed leader that kept
/// writing): it continues after what it merged. Only a leader that may share its term with
/// another one (`forced`, past the majority that makes a term one node's, and some peer did
/// not answer: that peer may have taken this term from another candidate) starts from the
/// clock in microseconds, above any counter an earlier leader issued (it would have needed more
/// than a million writes a second to get there), so that the two never issue one version.
pub fn counter_from(forced: bool, fenced: &Fenced) -> u64 {
    if forced && fenced.answers.iter().any(Result::is_err) {
        crate::entropy::wall_clock_micros().min(MAX_JSON_INTEGER / 2)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(followers: usize, merged: usize, smallest_quorum: Option<usize>) -> Count {
        Count {
            followers,
            merged,
            smallest_quorum,
            reached: followers + 1,
        }
    }

    #[test]
    fn a_term_is_taken_by_a_majority_of_all_nodes() {
        // W = 5: one follower merged keeps every acknowledged write, but 2 of 6 nodes are no
        // majority: another candidate could take the same term with the other four.
        let few = Count {
            reached: 2,
            ..count(5, 1, Some(5))
        };
        assert!(few.safe() && !few.allows());
        assert_eq!(few.majority(), 4);
        assert!(Count { reached: 4, ..few }.allows());
        let why = refuse(&few, None).to_string();
        assert!(why.contains("majority of all nodes (4)"), "{why}");
    }

    #[test]
    fn a_promotion_is_safe_when_the_merge_meets_every_quorum() {
        // N = 5: a write acknowledged by W followers is in any N - W + 1 of them.
        for (quorum, needed) in [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1)] {
            let at = |merged| count(5, merged, Some(quorum));
            assert_eq!(at(needed).needed(), Some(needed));
            assert!(at(needed).safe(), "W = {quorum}, R = {needed}");
            assert!(!at(needed - 1).safe(), "W = {quorum}, R = {}", needed - 1);
        }
    }

    #[test]
    fn asynchronous_writes_are_never_safe_and_unknown_quorums_count_as_one() {
        assert_eq!(count(5, 5, Some(0)).needed(), None);
        assert!(!count(5, 5, Some(0)).safe());
        assert!(count(5, 5, None).safe());
        assert!(!count(5, 4, None).safe());
    }

    #[test]
    fn the_guarantee_names_what_is_kept() {
        let safe = count(5, 4, Some(3)).guarantee();
        assert!(
            safe.starts_with(
                "merged 4 of 5 followers: every write acknowledged by at least 2 followers is kept"
            ),
            "{safe}"
        );
        assert!(safe.contains("no acknowledged write is lost"), "{safe}");
        let forced = count(5, 2, Some(1)).guarantee();
        assert!(
            forced.contains("acknowledged by only 1 to 3 followers may be lost"),
            "{forced}"
        );
        let asynchronous = count(5, 5, Some(0)).guarantee();
        assert!(asynchronous.contains("quorum 0"), "{asynchronous}");
    }

    fn report(following: Option<Term>, quorum: Option<usize>) -> Report {
        Report {
            following,
            smallest_quorum: quorum,
            counted: true,
        }
    }

    #[test]
    fn the_ending_terms_quorum_comes_from_the_nodes_that_hold_its_state() {
        // Term 4 wrote with quorum 1; term 5's leader, with quorum 3.
        let reports = [report(Some(4), Some(1)), report(Some(5), Some(3))];
        assert_eq!(smallest_quorum(&reports), Some(3));
        let lowered = [report(Some(5), Some(3)), report(Some(5), Some(2))];
        assert_eq!(smallest_quorum(&lowered), Some(2));
        let uncounted = Report {
            counted: false,
            ..report(Some(6), Some(1))
        };
        assert_eq!(
            smallest_quorum(&[uncounted, report(Some(5), Some(3))]),
            Some(3)
        );
        assert_eq!(smallest_quorum(&[report(None, None)]), None);
    }

    /// A deposed leader's own smallest quorum is the one it used: the merge counts with it,
    /// though it does not merge that leader's state.
    #[test]
    fn a_deposed_leaders_quorum_counts_though_its_state_is_not_merged() {
        let fence_ack = |node: &str, was_leader: bool, quorum: usize| FenceAck {
            node_id: node.into(),
            was_leader,
            smallest_quorum: Some(quorum),
            state: crate::replication::wire::ReplicaState {
                following: (!was_leader).then_some(5),
                filled: true,
                version: Version::new(5, 9),
                entries: vec![Write::new(
                    node.into(),
                    crate::store::Entry::value("v", Version::new(5, 9)),
                )],
            },
        };
        let peers = Peers::new(
            Vec::new(),
            Arc::new(
                crate::replication::HttpTransport::new(&[], "n", None, Arc::default())
                    .expect("a client"),
            ),
            Arc::new(LagClock::tokio()),
        );
        let fenced = Fenced {
            answers: vec![
                Ok(fence_ack("leader", true, 1)),
                Ok(fence_ack("f1", false, 3)),
            ],
        };
        let replica = SharedReplica::default();
        let own = report(Some(5), Some(3));
        assert_eq!(peers.merge(&replica, 0, &fenced, own), Some((1, Some(1))));
        // Found by the simulator (seed 46648): a candidate whose node took a newer term's
        // state transfer while it fenced merged the older states over it, and never converged.
        let before = lock(&replica).store.dump();
        assert_eq!(
            peers.merge(&replica, 5, &fenced, own),
            None,
            "the term moved on"
        );
        assert_eq!(lock(&replica).store.dump(), before, "nothing merged");
        let store = &lock(&replica).store;
        assert!(store.entry("f1").is_some());
        assert!(
            store.entry("leader").is_none(),
            "the leader's own state is not merged"
        );
    }

    #[test]
    fn a_new_term_is_above_every_term_seen() {
        let status = |term| {
            Ok(NodeStatus {
                node_id: "n".into(),
                role: Role::Follower,
                term,
                incarnation: 1,
                following: None,
                filled: true,
                leader_url: None,
                public_url: None,
                resp_addr: None,
                version: Version::ZERO,
                keys: 0,
                hears_leader: true,
            })
        };
        let statuses = [status(3), Err(Failure::new("connect", "down")), status(7)];
        assert_eq!(next_term(5, &statuses), 8);
        assert_eq!(next_term(9, &statuses), 10);
        assert!(live_leader(&statuses).is_none());
    }
}
