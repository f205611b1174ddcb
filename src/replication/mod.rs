//! Replication: how the leader gets each write to its followers and waits for a quorum.
//!
//! # How a write is replicated
//!
//! The leader assigns the write a [`Version`] and applies it to its own store first. Then
//! [`Replicator::replicate`] fans it out: for each follower it draws a simulated lag, uniform
//! in `MIN_DELAY_MS..=MAX_DELAY_MS` with sub-millisecond resolution, and a spawned task sleeps
//! until the write's application time plus that lag (not for the lag after the task happened to
//! start). Then the message joins that follower's [`pipeline`], which sends every write then due
//! in one batch (on the follower's replication [`stream`]) and keeps a few batches in flight, so
//! that at zero lag concurrent writes share a batch (group commit) while at the lab's 0..1000 ms
//! lag batches are mostly of one write. The follower applies a batch under one lock and acknowledges each
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
//! - [`quorum`]: the quorum wait of one write, and what became of it.
//! - [`replica`]: a node's replicated state and its lock; snapshots of it.
//! - `shared`: what the fan-out, the pipelines and recovery share (a leader's term, links,
//!   settings, announced quorum and floor). Its own module, so that the pipelines use it
//!   without importing this one, which imports them.
//! - [`hidden`]: the wait point `after_sync`, which hides a write from the leader's readers
//!   until its quorum acknowledged it.
//! - [`transport`]: the seam to the network, and its HTTP implementation.
//! - [`stream`]: the leader's end of the replication stream to one follower, on which that
//!   implementation sends the batches.

pub mod announce;
pub mod hidden;
pub mod lag;
pub mod link;
pub mod pipeline;
pub mod quorum;
pub mod replica;
mod shared;
pub mod stream;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;
use crate::events::{Event, Events, millis, shorten};
use crate::metrics::Metrics;
use crate::settings::{Settings, SettingsChange, WaitPoint};
use crate::signal::Signal;
use crate::store::{Entry, Version};
use announce::Announcement;
pub use lag::LagClock;
pub use link::{FollowerState, FollowerView, GIVE_UP_AFTER_DOWN, Link};
use pipeline::{Message, Pipeline};
use quorum::Tally;
pub use quorum::{QuorumOutcome, Unannounced};
pub use replica::{Replica, SharedReplica, Snapshot, lock};
pub(crate) use shared::Shared;
pub use transport::{Failure, HttpTransport, Transport};
pub use wire::{Epoch, Incarnation, Term, Write};

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
    /// Its `RESP_PUBLIC_ADDR`, which its heartbeats name.
    pub resp_public_addr: Option<String>,
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
    /// Whether it leads with a state it inherited (what it held and merged), which readers
    /// under `after_sync` see only once enough of its term's followers hold it
    /// ([`Replicator::unreadable`]).
    pub inherits: bool,
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
            resp_public_addr,
            settings,
            backlog,
            smallest_quorum: leadership_quorum,
            wake_reads,
            inherits,
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
            resp_public_addr,
            announcement: Mutex::new(announcement),
            floor: Signal::new(floor),
            applying: AtomicUsize::new(0),
            raise_to: settings.write_quorum,
            deposed: Signal::new(false),
            wake_reads,
            inherited_shown: AtomicBool::new(!inherits),
            transfers: Notify::new(),
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
        if changed.wait_point == WaitPoint::AfterCommit {
            // Reads waiting for the state this leader took over may show it now.
            self.shared.wake_reads.notify_waiters();
        }
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

    /// Under `after_sync`, while too few of this term's followers hold the state this leader
    /// inherited: how many do, and how many must (`Shared::inherited_unshown`). `None` when
    /// its readers may see it.
    pub fn unreadable(&self) -> Option<(usize, usize)> {
        if self.settings().wait_point != WaitPoint::AfterSync {
            return None;
        }
        self.shared.inherited_unshown()
    }

    /// The followers that hold a write of this leader (its `tally`, at `version`): those that
    /// acknowledged it, late acks included, and those it gave up on in favour of a state
    /// transfer that has since carried it. What Redis's `WAIT` counts. Each follower has one
    /// message per write, acknowledged or given up, never both, so none counts twice.
    pub fn holders(&self, tally: &Tally, version: Version) -> usize {
        tally.held() + self.transferred(tally, version)
    }

    /// Of a write's [holders](Replicator::holders), those a state transfer carried it to.
    pub fn transferred(&self, tally: &Tally, version: Version) -> usize {
        (tally.given_up().into_iter())
            .filter(|&follower| {
                (self.shared.links.get(follower)).is_some_and(|link| link.transferred() >= version)
            })
            .count()
    }

    /// Woken each time a follower acknowledges a state transfer.
    pub fn transfer_acked(&self) -> &Notify {
        &self.shared.transfers
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
        self.send(write, quorum, wait_point).outcome().await
    }

    /// The first half of [`Replicator::replicate`], which does not wait: sends `write`, which
    /// the leader has just applied, to every follower's pipeline. Call it in the same poll as
    /// [`Replicator::apply`]. The returned [`Sending`] waits for the quorum, and counts every
    /// follower that holds the write, later ones included (Redis's `WAIT` asks for those).
    pub fn send(&self, write: Arc<Write>, quorum: usize, wait_point: WaitPoint) -> Sending {
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
                tally.give_up(link.index);
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
                follower: link.index,
            };
            pipeline.schedule(shared, message, applied_at + lag);
        }
        shared.applying.fetch_sub(1, Ordering::SeqCst);
        Sending {
            shared: Arc::clone(shared),
            version: write.version,
            tally,
            quorum,
            applied_at,
            timeout,
        }
    }
}

/// A write on its way to the followers: [`Replicator::send`] sent it, and
/// [`Sending::outcome`] waits for its quorum.
#[derive(Debug)]
pub struct Sending {
    shared: Arc<Shared>,
    version: Version,
    tally: Arc<Tally>,
    quorum: usize,
    applied_at: Instant,
    timeout: Duration,
}

impl Sending {
    /// The write's acks, the late ones included: how many followers hold it, and a way to wait
    /// for more.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Waits until `quorum` followers acknowledged the write or the replication timeout
    /// passed, once. Delivery to the other followers goes on after this returns.
    pub async fn outcome(&self) -> QuorumOutcome {
        let Self {
            shared,
            version,
            tally,
            quorum,
            applied_at,
            timeout,
        } = self;
        let (quorum, applied_at, timeout) = (*quorum, *applied_at, *timeout);
        // A leader that steps down meanwhile answers at once: no more acks can come.
        let acked_by = tally.wait(applied_at + timeout, shared.deposed()).await;
        // Acked by its quorum: it counts once a promotion is sure to know that quorum. An
        // asynchronous write (quorum 0) promised nothing, and waits for nothing.
        let unannounced = match quorum > 0 && acked_by.len() >= quorum {
            true => {
                shared
                    .wait_for_floor(quorum, tally, applied_at + timeout)
                    .await
            }
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
            version: *version,
            status: if outcome.reached() { 200 } else { 503 },
            quorum,
            acked_by,
            latency_ms: millis(applied_at.elapsed()),
        });
        outcome
    }
}
