//! Automatic failover (`AUTO_FAILOVER=true`): a follower that hears nothing of its leader for
//! `FAILOVER_AFTER_MS`, plus a random extra delay so that two rarely start at once, runs an
//! election. It is the safe promotion of `semisync-kv failover`, with two more rules:
//!
//! - **Pre-vote.** The candidate first reads every peer's status, changing nothing. It goes on
//!   only when no leader answers and a majority of all nodes (itself included) hears no leader:
//!   a follower cut off alone does not raise the term and depose a leader the others still hear.
//! - **Votes.** The candidate's fence is its request for votes. A node votes at most once per
//!   term (it takes each term from one candidate: [`Node::receive_fence`]), and not while it
//!   still hears its leader (`409 hears_leader`). The candidate leads only when the count that
//!   any promotion needs allows it: a majority took the term, and `N - W + 1` of the followers
//!   it merged hold a leader's state ([`crate::failover::Count::allows`]). Votes from nodes the
//!   merge could not count are not enough.
//!
//! An election is never forced: when the count refuses, the candidate does not lead. It says why
//! in `/health` (`failover`) and tries again: after `FAILOVER_AFTER_MS` when the pre-vote refused
//! (nothing changed anywhere), after a backoff that doubles up to [`MAX_BACKOFF`] when it had
//! fenced (it raised the term). News of a leader starts the count afresh. A person can still
//! `failover --force`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::Node;
use crate::error::Error;
use crate::failover::Promotion;
use crate::replication::{Replica, Term};

/// How often a follower looks at how long it has heard nothing of its leader.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// The longest pause between two refused elections of one node.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Where a node's automatic failover stands, as `/health` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ElectionState {
    /// It asks for votes now.
    Candidate,
    /// Its last election could not lead safely; it tries again later.
    Refused,
    /// Its last election made it the leader.
    Elected,
}

/// A node's last election, as `/health` shows it (absent on a node that never ran one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailoverView {
    /// `candidate`, `refused` or `elected`.
    pub state: ElectionState,
    /// The term it asked for, once it fenced; `null` when the pre-vote already refused.
    pub term: Option<Term>,
    /// What happened, in words: why it ran, why it was refused, or what it merged.
    pub why: String,
    /// How long it had heard nothing of a leader when it ran, in milliseconds.
    pub silence_ms: u64,
    /// How long ago this happened, in milliseconds.
    pub ms_ago: u64,
    /// When refused: in how many milliseconds it tries again, if it still hears no leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// A node's last election, kept with the instants its view is computed from.
#[derive(Clone, Debug)]
pub(super) struct Election {
    state: ElectionState,
    term: Option<Term>,
    why: String,
    silence: Duration,
    at: Instant,
    retry_at: Option<Instant>,
}

impl Election {
    fn view(&self) -> FailoverView {
        let now = Instant::now();
        FailoverView {
            state: self.state,
            term: self.term,
            why: self.why.clone(),
            silence_ms: self.silence.as_millis() as u64,
            ms_ago: now.saturating_duration_since(self.at).as_millis() as u64,
            retry_in_ms: (self.retry_at)
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
        }
    }
}

/// What one election did: what the simulator and the event stream are told.
#[derive(Debug)]
pub struct Outcome {
    /// How long the candidate had heard nothing of a leader.
    pub silence: Duration,
    /// The promotion, or why there was none.
    pub result: Result<Promotion, Error>,
    /// Whether it got as far as the fence, which raised the term on the nodes it reached.
    pub fenced: bool,
}

impl Node {
    /// Whether this node heard of its leader lately, as its status and its vote say: within two
    /// thirds of `FAILOVER_AFTER_MS` (two heartbeats at the default); a leader hears itself.
    ///
    /// Shorter than the silence that makes a candidate: the leader's heartbeats to its followers
    /// go out on each follower's own 500 ms tick, so when a candidate has heard nothing for
    /// `FAILOVER_AFTER_MS`, another follower may have heard the dead leader up to a tick later.
    /// With the same window it would still count as hearing, the pre-vote would fail, and the
    /// election would wait out a backoff (measured: 3.9 s instead of under 2.2 s, once in 20).
    pub(super) fn hears_leader_in(&self, replica: &Replica) -> bool {
        let window = self.identity.failover_after * 2 / 3;
        self.replicator().is_some()
            || (replica.heard_leader_at).is_some_and(|at| at.elapsed() < window)
    }

    /// Whether this node heard of its leader lately (or leads), as its status and its vote say:
    /// what `INFO replication` shows as the link to the leader.
    pub fn hears_leader(&self) -> bool {
        self.hears_leader_in(&self.replica())
    }

    /// Whether automatic failover is on: as the leader's heartbeats last said, else as this
    /// node was configured.
    fn auto_failover_in(&self, replica: &Replica) -> bool {
        (replica.leader_settings).map_or(self.identity.settings.auto_failover, |settings| {
            settings.auto_failover
        })
    }

    /// Since when this follower has heard nothing of a leader, when automatic failover is on;
    /// `None` on a leader, or with automatic failover off.
    fn leaderless_since(&self) -> Option<Instant> {
        let replica = self.replica();
        if self.replicator().is_some() || !self.auto_failover_in(&replica) {
            return None;
        }
        Some(replica.heard_leader_at.unwrap_or(self.started))
    }

    /// Where this node's automatic failover stands, when it ran an election.
    pub fn failover(&self) -> Option<FailoverView> {
        self.election_lock().as_ref().map(Election::view)
    }

    fn record(&self, election: Election) {
        *self.election_lock() = Some(election);
    }

    /// Watches the leader, for as long as the node runs: when automatic failover is on and
    /// this follower has heard nothing of a leader for `FAILOVER_AFTER_MS` plus a random extra
    /// delay, it runs an election ([`Node::elect`]), and tells `report` what it did.
    pub async fn watch_leader(&self, mut report: impl FnMut(&Outcome)) {
        let after = self.identity.failover_after;
        let jitter = || after.mul_f64(crate::entropy::range(0.0..=0.5));
        let mut extra = jitter();
        let mut backoff = after;
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let now = Instant::now();
            // A leader, automatic failover off, or news of a leader (or of a candidate's fence)
            // within `FAILOVER_AFTER_MS`: the next silence starts afresh, backoff included.
            let since = self
                .leaderless_since()
                .filter(|&since| now >= since + after);
            let Some(since) = since else {
                (retry_at, backoff) = (None, after);
                continue;
            };
            let due = (since + after + extra).max(retry_at.unwrap_or(now));
            if now < due {
                continue;
            }
            let outcome = self.elect(now - since).await;
            report(&outcome);
            extra = jitter();
            if outcome.result.is_ok() {
                (retry_at, backoff) = (None, after);
                continue;
            }
            // Refused by the pre-vote (or a live leader): nothing changed anywhere, so the next
            // try comes as soon as a first one would. Refused after its fence raised the term:
            // the pause doubles, so that candidates do not take term after term.
            let pause = match outcome.fenced {
                false => after,
                true => {
                    let doubled = (backoff * 2).min(MAX_BACKOFF.max(after));
                    std::mem::replace(&mut backoff, doubled)
                }
            };
            let at = Instant::now() + pause + extra;
            retry_at = Some(at);
            if let Some(election) = self.election_lock().as_mut() {
                election.retry_at = Some(at);
            }
        }
    }

    /// Runs one election now, after `silence` without a leader: pre-vote, fence (the votes),
    /// merge, count, and lead only if the count allows it; never forced.
    pub async fn elect(&self, silence: Duration) -> Outcome {
        let seconds = silence.as_secs_f64();
        info!(
            silence_ms = silence.as_millis() as u64,
            "no leader heard: asking for votes"
        );
        self.record(Election {
            state: ElectionState::Candidate,
            term: None,
            why: format!("no leader heard for {seconds:.1} s: asking for votes"),
            silence,
            at: Instant::now(),
            retry_at: None,
        });
        let term_before = self.replica().term;
        let result = self.promote_by(false, true).await;
        let term_after = self.replica().term;
        let fenced = term_after > term_before;
        let (state, term, why) = match &result {
            Ok(promotion) => {
                warn!(term = promotion.term, "elected: {}", promotion.guarantee);
                (
                    ElectionState::Elected,
                    Some(promotion.term),
                    format!(
                        "no leader heard for {seconds:.1} s; elected for term {}: {}",
                        promotion.term, promotion.guarantee
                    ),
                )
            }
            Err(err) => {
                warn!(error = %err, "election refused: not leading");
                // The term it fenced with, if it got that far.
                let term = Some(term_after).filter(|_| fenced);
                (ElectionState::Refused, term, err.to_string())
            }
        };
        self.record(Election {
            state,
            term,
            why,
            silence,
            at: Instant::now(),
            retry_at: None,
        });
        if result.is_ok() {
            *self.elected_lock() = Some(Instant::now() - silence);
        }
        self.metrics.election(match &result {
            Ok(_) => "elected",
            Err(err) => err.status_and_code().1,
        });
        Outcome {
            silence,
            result,
            fenced,
        }
    }
}
