//! One follower as the leader sees it: its health, what it acknowledged, what is pending for
//! it, and whether it needs a state transfer. [`Link`] is the only code that changes that
//! state; the pipeline, the heartbeat and the admin routes tell it what happened through its
//! methods (`admit`, `on_acks`, `on_failure`, `on_heartbeat`, `begin_transfer`, ...).

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::transport::Failure;
use super::wire::{NodeStatus, Term, TransferAck};
use crate::events::FollowerIndex;
use crate::metrics::Metrics;
use crate::partition::authority;
use crate::store::Version;

/// First and largest pause before a failed batch's writes are sent again.
pub const RETRY_BACKOFF: RangeInclusive<Duration> =
    Duration::from_millis(50)..=Duration::from_secs(2);
/// A follower that failed every exchange for this long stops being retried: its pending writes
/// are dropped, and it gets a state transfer when it is back.
pub const GIVE_UP_AFTER_DOWN: Duration = Duration::from_secs(10);

/// How the leader sees one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FollowerState {
    /// Answering and synchronized with this leader.
    Up,
    /// Not answering the heartbeat.
    Down,
    /// Answering, but waiting for or receiving a state transfer.
    CatchingUp,
}

/// The leader's view of one follower, as `GET /cluster` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FollowerView {
    /// The follower's node id (its URL's host until it first answers).
    pub node_id: String,
    /// The follower's base URL (its internal listener).
    pub url: String,
    /// Where clients reach the follower (its `PUBLIC_URL`), once it told; the dashboard asks
    /// these nodes where the leader went when its own stream ends.
    pub public_url: Option<String>,
    /// Where Redis clients reach the follower (its `RESP_PUBLIC_ADDR`), once it told.
    pub resp_addr: Option<String>,
    /// `up`, `down` or `catching_up`.
    pub state: FollowerState,
    /// Highest version the follower acknowledged (a write or a state transfer).
    pub acked_version: Version,
    /// Highest version the follower reported applying at the last heartbeat.
    pub applied_version: Version,
    /// How many writes the follower is behind the leader's latest version (by counter).
    pub lag_versions: u64,
    /// Milliseconds since the follower last answered anything; `null` if it never did.
    pub last_contact_ms_ago: Option<u64>,
    /// Time from the write to this follower's ack, for the last ack, in milliseconds
    /// (simulated lag included).
    pub last_ack_latency_ms: Option<f64>,
    /// Writes on their way to this follower: waiting out their lag, queued, in a batch in
    /// flight, or waiting to be retried. At most `REPLICATION_BACKLOG`.
    pub pending: usize,
    /// Of those, the writes being retried after a failure.
    pub retrying: usize,
    /// Whether a state transfer is due (after a restart, a refusal, a long outage or a full
    /// backlog).
    pub transfer_pending: bool,
    /// State transfers sent to this follower so far.
    pub transfers: u64,
    /// The last replication error, if the last exchange failed.
    pub last_error: Option<String>,
    /// Live keys the follower reported at the last heartbeat; `null` before the first one.
    pub keys: Option<usize>,
    /// Whether the presenter cut replication to this follower off
    /// (`POST /admin/followers/{follower}/cut`): the leader sends it nothing until it is
    /// restored, as in a network partition.
    pub cut_off: bool,
}

/// What the pipeline does with the writes of a batch that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send them again once this pause (backoff with jitter) has passed.
    RetryAfter(Duration),
    /// Drop them: a state transfer is due and will carry them.
    GiveUp,
}

/// The leader's bookkeeping for one follower.
#[derive(Debug)]
pub struct Link {
    /// Its position in `FOLLOWERS`.
    pub index: FollowerIndex,
    /// Its base URL.
    pub url: Url,
    /// Replication to this follower is cut off: batches and heartbeats fail without being sent.
    cut: AtomicBool,
    state: Mutex<LinkState>,
    /// Wakes the follower's heartbeat early: it needs a state transfer now, it was cut off or
    /// restored, the live settings changed, or a write lowered the term's smallest quorum.
    pub wake: Notify,
    /// The follower's ack latency histogram, looked up once rather than at every ack.
    ack_seconds: Histogram,
}

#[derive(Debug)]
struct LinkState {
    node_id: Option<String>,
    public_url: Option<String>,
    resp_addr: Option<String>,
    health: FollowerState,
    acked_version: Version,
    applied_version: Version,
    keys: Option<usize>,
    last_contact: Option<Instant>,
    /// Since when every exchange with the follower (batch or heartbeat) has failed.
    failing_since: Option<Instant>,
    /// The pause before the next retry, before jitter; doubles at each failure.
    backoff: Duration,
    last_ack_latency: Option<Duration>,
    pending: usize,
    retrying: usize,
    /// A state transfer is due. While it is, no write is admitted and failed batches give up:
    /// the transfer carries their writes. Cleared by [`Link::begin_transfer`] *before* the
    /// leader copies its map, so that every write given up is in that copy.
    transfer_due: bool,
    transfers: u64,
    /// The version of the newest state transfer the follower acknowledged: it holds every
    /// write up to it.
    transferred: Version,
    last_error: Option<String>,
}

impl Link {
    /// The link to the follower at `url`, number `index` in `FOLLOWERS`.
    pub fn new(index: FollowerIndex, url: &Url, metrics: &Metrics) -> Self {
        Self {
            index,
            url: url.clone(),
            cut: AtomicBool::new(false),
            wake: Notify::new(),
            ack_seconds: metrics.ack_histogram(url.as_str()),
            state: Mutex::new(LinkState {
                node_id: None,
                public_url: None,
                resp_addr: None,
                // Unknown until the first heartbeat; a follower starts out needing a transfer.
                health: FollowerState::CatchingUp,
                acked_version: Version::ZERO,
                applied_version: Version::ZERO,
                keys: None,
                last_contact: None,
                failing_since: None,
                backoff: *RETRY_BACKOFF.start(),
                last_ack_latency: None,
                pending: 0,
                retrying: 0,
                transfer_due: false,
                transfers: 0,
                transferred: Version::ZERO,
                last_error: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        // Every step under the lock leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new write as pending for this follower, unless a state transfer is due (it
    /// will carry the write, which the leader applied before replicating it) or the backlog of
    /// `backlog` writes is full, which makes a transfer due.
    pub fn admit(&self, backlog: usize) -> bool {
        let mut state = self.state();
        if !state.transfer_due && state.pending >= backlog {
            warn!(follower = %self.url, backlog,
                "replication backlog full; switching to a state transfer");
            state.transfer_due = true;
        }
        if state.transfer_due {
            return false;
        }
        state.pending += 1;
        true
    }

    /// The version of the newest state transfer the follower acknowledged.
    pub fn transferred(&self) -> Version {
        self.state().transferred
    }

    /// Whether a state transfer is due: pending writes are dropped rather than sent.
    pub fn transfer_due(&self) -> bool {
        self.state().transfer_due
    }

    /// Records the follower `node_id`'s acks of a batch: `latencies` holds, for each write it
    /// acknowledged, the time since the leader applied it; `retried` of them had been retried,
    /// and `version` is the newest.
    pub fn on_acks(&self, node_id: &str, version: Version, latencies: &[Duration], retried: usize) {
        for latency in latencies {
            self.ack_seconds.observe(latency.as_secs_f64());
        }
        let mut state = self.state();
        state.pending -= latencies.len();
        state.retrying -= retried;
        state.acked_version = state.acked_version.max(version);
        state.last_ack_latency = latencies.last().copied().or(state.last_ack_latency);
        state.last_contact = Some(Instant::now());
        state.failing_since = None;
        state.backoff = *RETRY_BACKOFF.start();
        state.last_error = None;
        if state.node_id.as_deref() != Some(node_id) {
            state.node_id = Some(node_id.to_owned());
        }
    }

    /// Whether the follower holds every write the leader admitted for it: it is up (it holds
    /// this term's state), nothing is pending for it, no state transfer is due, and it is not
    /// cut off. See `Shared::try_raise`.
    pub fn holds_everything(&self) -> bool {
        let state = self.state();
        state.health == FollowerState::Up
            && state.pending == 0
            && !state.transfer_due
            && !self.cut.load(Ordering::Relaxed)
    }

    /// Records that `writes` pending writes were dropped, `retried` of them after retries: a
    /// state transfer carries them.
    pub fn release(&self, writes: usize, retried: usize) {
        let mut state = self.state();
        state.pending -= writes;
        state.retrying -= retried;
    }

    /// Asks for a state transfer: the follower refused a write that a retry cannot change.
    pub fn request_transfer(&self, reason: &str) {
        let mut state = self.state();
        if !state.transfer_due {
            warn!(follower = %self.url, reason, "follower refused a write; a state transfer will carry it");
            state.transfer_due = true;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// After a failed batch whose first attempt `first_failures` of its writes were: records
    /// the failure and decides what becomes of the writes. They are dropped only when a state
    /// transfer is due, which then carries them: after a refusal that a retry cannot change,
    /// once the follower has failed every exchange for [`GIVE_UP_AFTER_DOWN`], or once the
    /// backlog was found full.
    pub fn on_failure(&self, failure: &Failure, first_failures: usize) -> Verdict {
        let mut state = self.state();
        if state.last_error.is_none() {
            warn!(follower = %self.url, error = %failure, "replication failed; retrying");
        }
        state.last_error = Some(failure.reason.clone());
        state.retrying += first_failures;
        let since = *state.failing_since.get_or_insert_with(Instant::now);
        if failure.permanent() || since.elapsed() >= GIVE_UP_AFTER_DOWN {
            state.transfer_due = true;
        }
        if failure.not_synced() {
            // The heartbeat sends the state transfer now rather than at its next tick.
            self.wake.notify_one();
        }
        if state.transfer_due {
            return Verdict::GiveUp;
        }
        let pause = state.backoff;
        state.backoff = (state.backoff * 2).min(*RETRY_BACKOFF.end());
        // Jitter: a random part of the backoff, so that the retries of many followers do not
        // hit a recovering network in lockstep.
        Verdict::RetryAfter(pause.mul_f64(crate::entropy::range(0.5..=1.0)))
    }

    /// Records the heartbeat's answer; returns whether the follower needs a state transfer
    /// from the leader of `term` (it holds another term's state or none, or one is due).
    pub fn on_heartbeat(&self, status: Result<&NodeStatus, &Failure>, term: Term) -> bool {
        let mut state = self.state();
        let status = match status {
            Ok(status) => status,
            Err(failure) => {
                if state.health != FollowerState::Down {
                    warn!(follower = %self.url, error = %failure, "follower down");
                    state.health = FollowerState::Down;
                }
                state.failing_since.get_or_insert_with(Instant::now);
                state.last_error = Some(failure.reason.clone());
                return false;
            }
        };
        state.last_contact = Some(Instant::now());
        state.failing_since = None;
        state.node_id = Some(status.node_id.clone());
        state.public_url = status.public_url.clone();
        state.resp_addr = crate::config::dialable(status.resp_addr.clone());
        state.applied_version = status.version;
        state.keys = Some(status.keys);
        let needs_transfer = state.transfer_due || status.following != Some(term);
        if !needs_transfer && state.health != FollowerState::Up {
            info!(follower = %self.url, node_id = %status.node_id, "follower up");
            state.health = FollowerState::Up;
        }
        needs_transfer
    }

    /// A state transfer starts: no longer due, and the follower is catching up. Called before
    /// the leader copies its map, so that a write given up from now on is in a later transfer.
    pub fn begin_transfer(&self) {
        let mut state = self.state();
        state.transfer_due = false;
        state.health = FollowerState::CatchingUp;
    }

    /// A state transfer of the leader's map at `version` ended with `result`.
    pub fn end_transfer(&self, result: Result<&TransferAck, &Failure>, version: Version) {
        let mut state = self.state();
        match result {
            Ok(ack) => {
                state.acked_version = state.acked_version.max(version);
                state.applied_version = state.applied_version.max(ack.version);
                state.transfers += 1;
                state.transferred = state.transferred.max(version);
                state.last_contact = Some(Instant::now());
                state.failing_since = None;
                state.last_error = None;
                state.health = FollowerState::Up;
            }
            Err(failure) => {
                warn!(follower = %self.url, error = %failure, "state transfer failed; will retry");
                state.transfer_due = true;
                state.last_error = Some(failure.reason.clone());
            }
        }
    }

    /// Cuts replication to this follower off, or restores it; returns whether that changed
    /// anything.
    pub fn set_cut_off(&self, cut: bool) -> bool {
        let changed = self.cut.swap(cut, Ordering::Relaxed) != cut;
        if changed && cut {
            warn!(follower = %self.url, "replication cut off by the presenter");
        } else if changed {
            info!(follower = %self.url, "replication restored by the presenter");
        }
        // Let the heartbeat notice at once rather than at its next tick.
        self.wake.notify_one();
        changed
    }

    /// Why nothing may be sent to this follower now, if replication to it is cut off.
    pub fn cut_off(&self) -> Option<Failure> {
        self.cut.load(Ordering::Relaxed).then(|| {
            let name = self.name();
            Failure::new(
                "cut_off",
                format!(
                    "replication to {name} is cut off (POST /admin/followers/{name}/restore \
                     restores it)"
                ),
            )
        })
    }

    /// The follower's URL's `host:port`, which names it even before it first answers.
    pub fn authority(&self) -> String {
        authority(&self.url)
    }

    /// The follower's node id, or its URL's host until it first answers.
    pub fn name(&self) -> String {
        let state = self.state();
        state
            .node_id
            .clone()
            .unwrap_or_else(|| self.url.host_str().unwrap_or("").into())
    }

    /// The follower as `GET /cluster` shows it, behind a leader at `leader_version`.
    pub fn view(&self, leader_version: Version) -> FollowerView {
        let node_id = self.name();
        let state = self.state();
        FollowerView {
            node_id,
            url: self.url.to_string(),
            public_url: state.public_url.clone(),
            resp_addr: state.resp_addr.clone(),
            state: state.health,
            acked_version: state.acked_version,
            applied_version: state.applied_version,
            lag_versions: leader_version
                .writes_since(state.applied_version.max(state.acked_version)),
            last_contact_ms_ago: state.last_contact.map(|at| at.elapsed().as_millis() as u64),
            last_ack_latency_ms: state.last_ack_latency.map(|d| d.as_secs_f64() * 1000.0),
            pending: state.pending,
            retrying: state.retrying,
            transfer_pending: state.transfer_due,
            transfers: state.transfers,
            last_error: state.last_error.clone(),
            keys: state.keys,
            cut_off: self.cut.load(Ordering::Relaxed),
        }
    }
}
