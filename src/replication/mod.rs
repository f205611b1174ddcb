//! Replication: how the leader gets each write to its followers and waits for a quorum.
//!
//! # How a write is replicated
//!
//! The leader assigns the write a [`Version`] and applies it to its own store first. Then
//! [`Replicator::replicate`] fans it out: for each follower it draws a simulated lag, uniform
//! in `MIN_DELAY_MS..=MAX_DELAY_MS` with sub-millisecond resolution, and a spawned task sleeps
//! until the write's application time plus that lag (not for the lag after the task happened to
//! start). Then the message joins that follower's [`pipeline`], which sends every write then due
//! in one batch (`POST /internal/replicate`) and keeps a few batches in flight, so that at zero
//! lag concurrent writes share a batch (group commit) while at the lab's 0..1000 ms lag batches
//! are mostly of one write. The follower applies a batch under one lock and acknowledges each
//! write in one answer; each ack is counted on the write's [`quorum`] tally, and the request
//! handler answers as soon as `quorum` of them have arrived, or gives up when
//! `REPLICATE_TIMEOUT_MS` has passed.
//!
//! The quorum, the lag range and the timeout are the leader's live [`Settings`], read at each
//! write and each retry, so a presenter can change them while the cluster runs; and each step
//! (the write, every message with the lag drawn for it, every ack or failure, the answer) is
//! published on the leader's [event feed](crate::events), which the dashboard animates.
//!
//! The answer does not stop replication: the pipelines go on in the background, which is what
//! makes this *semi*-synchronous. A quorum of 0 is fully asynchronous, a quorum equal to the
//! number of followers fully synchronous. A timeout is therefore "not yet confirmed", never a
//! rollback: the write stays applied on the leader and keeps replicating (as with MySQL
//! semi-sync, Redis `WAIT` or MongoDB's `wtimeout`).
//!
//! A failed batch (connection refused, timeout, non-2xx answer) is retried with exponential
//! backoff and jitter, each of its writes with a fresh lag, also after the client got its
//! answer, so a follower that was briefly away still receives every write. What one follower
//! may have pending is bounded (`REPLICATION_BACKLOG` writes): past the bound the leader stops
//! queueing for it and marks it for a state transfer instead (see [`recovery`](crate::recovery)).
//!
//! Because every message has its own lag, two writes to the same key can reach a follower in
//! either order. The follower applies a write only when its version is newer than what it holds
//! ([`Store::apply`](crate::store::Store::apply)) and acknowledges either way, so arrival order
//! does not matter and every follower converges on the leader's state.
//!
//! # Layout
//! - [`wire`]: the messages, used by both sides.
//! - [`lag`]: the clock the simulated lags are slept on, with sub-millisecond precision.
//! - [`link`]: one follower as the leader sees it; the only code that changes that state.
//! - [`pipeline`]: one follower's queue of due writes, its batches and their retries.
//! - [`quorum`]: the quorum wait of one write.
//! - [`hidden`]: the wait point `after_sync`, which hides a write from the leader's readers
//!   until its quorum acknowledged it.
//! - [`transport`]: the seam to the network, and its HTTP implementation.

pub mod announce;
pub mod hidden;
pub mod lag;
pub mod link;
pub mod pipeline;
pub mod quorum;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use crate::error::Error;
use crate::events::{Event, Events, FollowerIndex, millis, shorten};
use crate::metrics::Metrics;
use crate::settings::{Settings, SettingsChange, WaitPoint};
use crate::signal::Signal;
use crate::store::{Entry, Store, Version};
use announce::Announcement;
use hidden::{Hidden, Revealed};
pub use lag::LagClock;
pub use link::{FollowerState, FollowerView, GIVE_UP_AFTER_DOWN, Link};
use pipeline::{Message, Pipeline};
use quorum::Tally;
pub use transport::{Failure, HttpTransport, Transport};
pub use wire::{Epoch, Incarnation, Term, Write};

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

/// What became of the quorum wait for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumOutcome {
    /// Acks required.
    pub quorum: usize,
    /// How long the write waited for them at most (the timeout when it started).
    pub timeout: Duration,
    /// Node ids of the followers that acknowledged before the answer, in arrival order.
    pub acked_by: Vec<String>,
    /// When the write's quorum was below the term's floor at the answer (too few followers had
    /// heard of a quorum that low, see [`quorum::established`]): the write does not count,
    /// whatever its acks.
    pub unannounced: Option<Unannounced>,
}

/// Why a write acknowledged by its quorum does not count: its quorum is below the term's
/// floor, and too few followers heard of it for a promotion to be sure to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unannounced {
    /// The floor: the smallest quorum at which a write of this term counts now.
    pub floor: usize,
    /// The followers known to have heard of the write's quorum or a lower one; `floor` of
    /// them are needed.
    pub heard: usize,
    /// When no write of this new term counts yet: the followers known to hold its state, and
    /// how many must.
    pub unsynced: Option<(usize, usize)>,
}

impl QuorumOutcome {
    /// Number of acks received before the answer.
    pub fn acks(&self) -> usize {
        self.acked_by.len()
    }

    /// Whether the quorum was reached, at a quorum that counts.
    pub fn reached(&self) -> bool {
        self.acks() >= self.quorum && self.unannounced.is_none()
    }
}

/// What the fan-out, the pipelines and recovery share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) term: Term,
    /// This leader's incarnation, which its messages carry: its followers take no other node's
    /// messages of its term.
    pub(crate) incarnation: Incarnation,
    pub(crate) replica: SharedReplica,
    pub(crate) links: Vec<Link>,
    pub(crate) transport: Arc<dyn Transport>,
    settings: RwLock<Settings>,
    backlog: usize,
    metrics: Arc<Metrics>,
    pub(crate) events: Events,
    clock: Arc<LagClock>,
    /// The leader's `PUBLIC_URL`, sent with its state transfers and heartbeats.
    pub(crate) public_url: Option<String>,
    /// The term's smallest quorum as announced to the followers, and the floor at which a write
    /// counts. Locked after the replica lock, when both are taken.
    announcement: Mutex<Announcement>,
    /// The floor, published for the writes that wait for it to reach their quorum.
    floor: Signal<usize>,
    /// The write quorum of the settings the term began with: a raise announces no more than
    /// this (nor than the live settings' quorum), so that raising the live quorum does not make
    /// every lower per-request quorum need all followers to hear of it.
    raise_to: usize,
    /// Writes applied whose messages are not yet admitted to every follower's link: while
    /// there are any, the links do not show everything the leader holds (see `try_raise`).
    applying: AtomicUsize,
    /// Turns true once this leader stepped down: its tasks end.
    deposed: Signal<bool>,
    /// Woken when a hidden write becomes visible: reads waiting for a `min_version`.
    wake_reads: Arc<Notify>,
}

impl Shared {
    pub(crate) fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn announcement(&self) -> MutexGuard<'_, Announcement> {
        // Every step under the lock leaves the announcement consistent.
        self.announcement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The smallest write quorum of this term as announced, and its epoch: what every batch,
    /// heartbeat and state transfer carries.
    pub(crate) fn announced(&self) -> (Epoch, usize) {
        self.announcement().announced()
    }

    /// The smallest write quorum of this term as announced.
    pub(crate) fn smallest_quorum(&self) -> usize {
        self.announced().1
    }

    /// The smallest quorum at which a write of this term counts now.
    pub(crate) fn floor(&self) -> usize {
        self.announcement().floor()
    }

    /// Records that `follower` accepted a message that carried `quorum` in `epoch`; when that
    /// lowers the floor, shows the hidden writes that now count and wakes the writes waiting.
    pub(crate) fn heard(&self, follower: FollowerIndex, epoch: Epoch, quorum: usize) {
        let lowered = {
            let mut announcement = self.announcement();
            let lowered = announcement.heard(follower, epoch, quorum);
            // Published under the lock, so that the signal never shows an older floor.
            if let Some(floor) = lowered {
                self.floor.replace(floor);
            }
            lowered.is_some()
        };
        if lowered {
            // The floor read again under the replica lock: a raise may have come in between.
            self.reveal(|hidden| hidden.lower_floor(self.floor()));
        }
    }

    /// Waits until a write of `quorum` counts (the floor is at or below it), `deadline` passes
    /// or this leader steps down; says why when the write does not count.
    async fn wait_for_floor(&self, quorum: usize, deadline: Instant) -> Option<Unannounced> {
        tokio::select! {
            biased;
            _ = tokio::time::timeout_at(deadline, self.floor.wait_for(|floor| floor <= quorum)) => {}
            () = self.deposed() => {}
        }
        let announcement = self.announcement();
        let floor = announcement.floor();
        let heard = announcement.heard_at_most(quorum);
        let (synced, needed) = announcement.synced();
        (floor > quorum).then_some(Unannounced {
            floor,
            heard,
            unsynced: (synced < needed).then_some((synced, needed)),
        })
    }

    /// Counts `quorum` as used by a write of this term. When it is the smallest yet, every
    /// follower's heartbeat goes at once, rather than within 500 ms: a follower that the
    /// write's batch does not reach (yet) learns it too, and the floor can reach it.
    fn use_quorum(&self, quorum: usize) {
        if self.announcement().lower(quorum) {
            self.wake_heartbeats();
        }
    }

    /// Announces the write quorum `W` of the live settings (at most the one the term began with)
    /// again, in a new epoch, once at least `W` followers hold every write the leader applied: a
    /// promotion that merges `N - W + 1` followers then meets each write, whatever quorum it was
    /// made with. Takes the replica lock, under which writes are applied, so that no write slips
    /// between the check and the raise.
    pub(crate) fn try_raise(&self) {
        let target = (self.settings().write_quorum)
            .min(self.raise_to)
            .min(announce::ceiling(self.links.len()));
        if target == 0 || self.smallest_quorum() >= target {
            return;
        }
        let replica = lock(&self.replica);
        if self.applying.load(Ordering::SeqCst) > 0 {
            return;
        }
        let holding = self.links.iter().filter(|link| link.holds_everything());
        if holding.count() < target {
            return;
        }
        let mut announcement = self.announcement();
        if !announcement.raise(target) {
            return;
        }
        self.floor.replace(announcement.floor());
        drop(announcement);
        drop(replica);
        self.wake_heartbeats();
    }

    /// Sends every follower's heartbeat now.
    fn wake_heartbeats(&self) {
        for link in &self.links {
            link.wake.notify_one();
        }
    }

    /// Steps down on learning of `term`, newer than this leader's, led from `leader_url`: the
    /// node adopts the term and follows, and this leader's tasks end. Its writes that no
    /// follower acknowledged go when the new leader's state transfer replaces its state.
    /// Returns whether it stepped down: a refusal naming this leader's own term (another leader
    /// of the same term) changes nothing.
    pub(crate) fn depose(&self, term: Term, leader_url: Option<&str>) -> bool {
        if term <= self.term {
            return false;
        }
        let mut replica = lock(&self.replica);
        self.step_down(&mut replica);
        let _ = replica.check_term(term, leader_url);
        true
    }

    /// What a leader does with a refusal of its message: steps down when the follower serves a
    /// newer term (adopting it), or when another node took this leader's own term there
    /// (`term_taken`: two leaders of one term, after a forced promotion; both step down, and a
    /// promotion with a newer term settles it). Returns whether it stepped down.
    pub(crate) fn refused(&self, failure: &Failure) -> bool {
        if let Some((term, leader)) = &failure.newer_term {
            if self.depose(*term, leader.as_deref()) {
                return true;
            }
        }
        if !failure.term_taken() {
            return false;
        }
        warn!(
            term = self.term,
            "another node leads this term: stepping down"
        );
        self.step_down(&mut lock(&self.replica));
        true
    }

    /// Steps this leader down: records in `replica` what a candidate must learn from it (it
    /// holds its own term's state, whose smallest quorum only it knows for sure), and ends its
    /// pipelines and heartbeats.
    pub(crate) fn step_down(&self, replica: &mut Replica) {
        // Once only: a refusal that comes back after the node followed a newer term's leader
        // must not put back what this leader recorded over what that leader's transfer set.
        if self.is_deposed() {
            return;
        }
        replica.following = Some(self.term);
        let (epoch, quorum) = self.announced();
        replica.quorum_epoch = epoch;
        replica.smallest_quorum = Some(quorum);
        // Its live settings, as its followers heard them: what it leads with if promoted again.
        replica.leader_settings = Some(self.settings());
        self.stop();
    }

    /// Counts acks on the hidden writes under `after_sync`: `count` does so under the replica
    /// lock, and the writes that became visible are announced. Under `after_commit` nothing is
    /// hidden, and the lock is not taken.
    pub(crate) fn reveal(&self, count: impl FnOnce(&mut Hidden) -> Vec<Revealed>) {
        if self.settings().wait_point != WaitPoint::AfterSync {
            return;
        }
        let revealed = count(&mut lock(&self.replica).hidden);
        self.announce(revealed);
    }

    /// Wakes the reads waiting for a `min_version`, and publishes a `visible` event for each
    /// write that became visible.
    fn announce(&self, revealed: Vec<Revealed>) {
        if revealed.is_empty() {
            return;
        }
        self.wake_reads.notify_waiters();
        for Revealed { key, version, acks } in revealed {
            self.events.publish(|| Event::Visible {
                version,
                key: shorten(&key),
                acks,
            });
        }
    }

    /// Ends this leader's tasks.
    pub(crate) fn stop(&self) {
        if !self.deposed.replace(true) {
            warn!(term = self.term, "stepped down: a newer term has begun");
        }
    }

    /// Whether this leader stepped down.
    pub(crate) fn is_deposed(&self) -> bool {
        self.deposed.get()
    }

    /// Resolves once this leader stepped down.
    pub(crate) async fn deposed(&self) {
        self.deposed.wait_for(|deposed| deposed).await;
    }
}

/// The leader's side of replication: fans each write out to every follower's pipeline, and
/// keeps the per-follower links that recovery and `GET /cluster` use.
#[derive(Clone, Debug)]
pub struct Replicator {
    pub(crate) shared: Arc<Shared>,
    pipelines: Arc<Vec<Pipeline>>,
    pub(crate) replica: SharedReplica,
}

/// What a leader of one term is made of, besides its followers.
#[derive(Debug)]
pub struct Leadership {
    /// The term it leads.
    pub term: Term,
    /// The leading node's incarnation.
    pub incarnation: Incarnation,
    /// Its `PUBLIC_URL`, which its state transfers and heartbeats name.
    pub public_url: Option<String>,
    /// The live settings it starts with.
    pub settings: Settings,
    /// Most writes pending for one follower (`REPLICATION_BACKLOG`).
    pub backlog: usize,
    /// The smallest write quorum to announce from the start: at most the settings' quorum, and
    /// at most that of the writes this leader inherited from the ending term (the announcement
    /// also caps it at a majority of the followers).
    pub smallest_quorum: usize,
    /// Woken when a write hidden by the wait point `after_sync` becomes visible: reads waiting
    /// for a `min_version`.
    pub wake_reads: Arc<Notify>,
}

impl Replicator {
    /// A replicator for the leader of `leadership.term`, for `followers` (base URLs of their
    /// internal listeners), that replicates writes applied to `replica` over `transport`,
    /// sleeping lags on `clock`. Starts one pipeline task per follower, so it must be called
    /// inside a tokio runtime.
    pub fn new(
        leadership: Leadership,
        followers: &[Url],
        transport: Arc<dyn Transport>,
        replica: SharedReplica,
        metrics: Arc<Metrics>,
        clock: Arc<LagClock>,
    ) -> Self {
        let Leadership {
            term,
            incarnation,
            public_url,
            settings,
            backlog,
            smallest_quorum: leadership_quorum,
            wake_reads,
        } = leadership;
        let links = followers
            .iter()
            .enumerate()
            .map(|(index, url)| Link::new(index, url, &metrics))
            .collect();
        let announcement = Announcement::new(followers.len(), leadership_quorum);
        let floor = announcement.floor();
        let shared = Arc::new(Shared {
            term,
            incarnation,
            replica: Arc::clone(&replica),
            links,
            transport,
            settings: RwLock::new(settings),
            backlog,
            metrics,
            events: Events::new(),
            clock,
            public_url,
            announcement: Mutex::new(announcement),
            floor: Signal::new(floor),
            applying: AtomicUsize::new(0),
            raise_to: settings.write_quorum,
            deposed: Signal::new(false),
            wake_reads,
        });
        let pipelines = (0..followers.len())
            .map(|index| Pipeline::spawn(Arc::clone(&shared), index))
            .collect();
        Self {
            shared,
            pipelines: Arc::new(pipelines),
            replica,
        }
    }

    /// Number of followers.
    pub fn follower_count(&self) -> usize {
        self.shared.links.len()
    }

    /// The live settings: quorum, lag range and timeout.
    pub fn settings(&self) -> Settings {
        self.shared.settings()
    }

    /// Applies `change` to the live settings if the result is valid for this leader, whose
    /// requests may take `request_timeout_ms`; returns the new settings. The next write and the
    /// next retry use them; a wait point back at `after_commit` shows every hidden write now.
    pub fn change_settings(
        &self,
        change: SettingsChange,
        request_timeout_ms: u64,
    ) -> Result<Settings, String> {
        let (changed, revealed) = {
            // The replica lock first, as in `apply`, and held until the hidden writes are
            // shown: a write reads the wait point under it, and a read that follows an ack
            // which found the new wait point waits for it.
            let mut replica = lock(&self.replica);
            let mut settings = self
                .shared
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let changed = settings.with(change);
            changed.validate(Some(self.shared.links.len()), Some(request_timeout_ms))?;
            *settings = changed;
            let revealed = match changed.wait_point {
                WaitPoint::AfterCommit => replica.hidden.show_all(),
                WaitPoint::AfterSync => Vec::new(),
            };
            (changed, revealed)
        };
        self.shared.announce(revealed);
        // A heartbeat now, rather than within 500 ms: the followers hold the settings a
        // promoted one carries on with.
        self.shared.wake_heartbeats();
        Ok(changed)
    }

    /// Cuts replication to one follower off (`cut`) or restores it. The follower is named by
    /// its node id, or by its URL's `host:port`. A cut-off follower looks down to the leader;
    /// once restored, retries and, after a long cut, a state transfer catch it up.
    pub fn set_cut_off(&self, follower: &str, cut: bool) -> Result<FollowerView, Error> {
        let links = &self.shared.links;
        let matches: Vec<&Link> = links
            .iter()
            .filter(|link| link.name() == follower || link.authority() == follower)
            .collect();
        let link = match matches[..] {
            [link] => link,
            [] => {
                return Err(Error::UnknownFollower {
                    follower: follower.to_owned(),
                    known: links.iter().map(Link::name).collect(),
                });
            }
            _ => {
                return Err(Error::AmbiguousFollower {
                    follower: follower.to_owned(),
                    urls: matches.iter().map(|link| link.url.to_string()).collect(),
                });
            }
        };
        link.set_cut_off(cut);
        Ok(link.view(self.latest_version()))
    }

    /// The live feed of replication events, for the dashboard.
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    /// The term this replicator leads.
    pub fn term(&self) -> Term {
        self.shared.term
    }

    /// Whether this leader stepped down, having learned of a newer term.
    pub fn is_deposed(&self) -> bool {
        self.shared.is_deposed()
    }

    /// Resolves once this leader stepped down.
    pub async fn stepped_down(&self) {
        self.shared.deposed().await;
    }

    /// Steps this leader down on a newer term: records in `replica` what it keeps of its own
    /// term (the term whose state it holds, and its smallest quorum); its pipelines and
    /// heartbeats end. The caller adopts the newer term in the replica.
    pub fn step_down(&self, replica: &mut Replica) {
        self.shared.step_down(replica);
    }

    /// The smallest write quorum of this term as announced to the followers (see
    /// `replication::announce`): what a promotion counts with.
    pub fn smallest_quorum(&self) -> usize {
        self.shared.smallest_quorum()
    }

    /// The leader's view of every follower.
    pub fn followers(&self) -> Vec<FollowerView> {
        let leader_version = self.latest_version();
        self.shared
            .links
            .iter()
            .map(|link| link.view(leader_version))
            .collect()
    }

    fn latest_version(&self) -> Version {
        lock(&self.replica).store.latest_version()
    }

    /// Applies a write of `value` (`None` deletes) to `key` on the leader's store, and under
    /// the wait point `after_sync` hides it from the leader's readers until `quorum` followers
    /// acknowledged it. Returns the entry and the wait point that applies to it; the caller
    /// passes the write to [`Replicator::replicate`] at once. A leader deposed meanwhile
    /// refuses: its replica follows the newer term.
    pub fn apply(
        &self,
        key: &str,
        value: Option<String>,
        quorum: usize,
    ) -> Result<(Entry, WaitPoint), Error> {
        let mut replica = lock(&self.replica);
        if replica.term != self.shared.term {
            return Err(Error::NotLeader {
                leader: replica.leader_url.clone(),
            });
        }
        // Read under the replica lock: see `change_settings`.
        let wait_point = self.shared.settings().wait_point;
        // Hidden writes keep their entries: as many as the replication backlog, no more.
        let limit = self.shared.backlog;
        if wait_point == WaitPoint::AfterSync && quorum > 0 && replica.hidden.len() >= limit {
            let hidden = replica.hidden.len();
            return Err(Error::TooManyHidden { hidden, limit });
        }
        // Before the write is in the store: a state transfer that carries it, copied under
        // this lock, names a smallest quorum no larger than its own, and so does every batch.
        self.shared.use_quorum(quorum);
        let previous = match wait_point {
            WaitPoint::AfterSync => replica.store.entry(key).cloned(),
            WaitPoint::AfterCommit => None,
        };
        let entry = replica.store.write(key, value);
        if wait_point == WaitPoint::AfterSync {
            replica.hidden.hide(key, previous, entry.clone(), quorum);
        }
        // Until `replicate` admitted it to every link (in the same poll of the caller).
        self.shared.applying.fetch_add(1, Ordering::SeqCst);
        Ok((entry, wait_point))
    }

    /// Sends `write`, which the leader has just applied, to every follower and waits until
    /// `quorum` of them acknowledged or the replication timeout passed. Delivery to the other
    /// followers goes on after this returns.
    pub async fn replicate(
        &self,
        write: Arc<Write>,
        quorum: usize,
        wait_point: WaitPoint,
    ) -> QuorumOutcome {
        let applied_at = Instant::now();
        let shared = &self.shared;
        let settings = shared.settings();
        let timeout = Duration::from_millis(settings.replicate_timeout_ms);
        shared.events.publish(|| Event::Write {
            version: write.version,
            key: shorten(&write.key),
            value: write.value.as_deref().map(shorten),
            quorum,
            timeout_ms: settings.replicate_timeout_ms,
            wait_point,
        });
        let tally = Arc::new(Tally::new(quorum, shared.links.len()));
        for (link, pipeline) in shared.links.iter().zip(self.pipelines.iter()) {
            if !link.admit(shared.backlog) {
                shared.events.publish(|| Event::Failure {
                    version: write.version,
                    follower: link.index,
                    reason: "a state transfer is due; it will carry this write".into(),
                    gave_up: true,
                });
                tally.give_up();
                continue;
            }
            let lag = settings.draw_lag();
            shared.events.publish(|| Event::Send {
                version: write.version,
                follower: link.index,
                delay_ms: millis(lag),
                attempt: 1,
            });
            let message = Message {
                write: Arc::clone(&write),
                tally: Arc::clone(&tally),
                applied_at,
                attempt: 1,
            };
            pipeline.schedule(shared, message, applied_at + lag);
        }
        shared.applying.fetch_sub(1, Ordering::SeqCst);

        // A leader that steps down meanwhile answers at once: no more acks can come.
        let acked_by = tally.wait(applied_at + timeout, shared.deposed()).await;
        // Acked by its quorum: it counts once a promotion is sure to know that quorum. An
        // asynchronous write (quorum 0) promised nothing, and waits for nothing.
        let unannounced = match quorum > 0 && acked_by.len() >= quorum {
            true => shared.wait_for_floor(quorum, applied_at + timeout).await,
            false => None,
        };
        let outcome = QuorumOutcome {
            quorum,
            timeout,
            unannounced,
            acked_by: acked_by
                .iter()
                .map(|&index| shared.links[index].name())
                .collect(),
        };
        shared.events.publish(|| Event::Outcome {
            version: write.version,
            status: if outcome.reached() { 200 } else { 503 },
            quorum,
            acked_by,
            latency_ms: millis(applied_at.elapsed()),
        });
        outcome
    }
}
