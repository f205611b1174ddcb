//! Replication: the leader-to-follower wire format, used by both sides, and the leader's quorum
//! fan-out.
//!
//! # How a write is replicated
//!
//! The leader assigns the write a [`Version`] and applies it to its own store first. Then
//! [`Replicator::replicate`] spawns one task per follower. Each task sleeps a random simulated lag
//! (`MIN_DELAY_MS..=MAX_DELAY_MS`), POSTs a [`ReplicateRequest`] to the follower's
//! [`REPLICATE_PATH`], and reports the outcome on a channel. The request handler counts the
//! acknowledgements coming off that channel and answers as soon as `quorum` of them have arrived,
//! or gives up when `REPLICATE_TIMEOUT_MS` has passed.
//!
//! The quorum, the lag range and the timeout are the leader's live [`Settings`], read at each write
//! and each delivery attempt, so a presenter can change them while the cluster runs; and each step
//! (the write, every message with the lag drawn for it, every ack or failure, the answer) is
//! published on the leader's [event feed](crate::events), which the dashboard animates.
//!
//! The answer does not stop the tasks: replication to every follower goes on in the background,
//! which is what makes this *semi*-synchronous. A quorum of 0 is fully asynchronous, a quorum equal
//! to the number of followers fully synchronous. A timeout is therefore "not yet confirmed", never
//! a rollback: the write stays applied on the leader and keeps replicating (as with MySQL
//! semi-sync, Redis `WAIT` or MongoDB's `wtimeout`).
//!
//! A failed message (connection refused, timeout, non-2xx answer) is retried with exponential
//! backoff and jitter, also after the client got its answer, so a follower that was briefly away
//! still receives every write. What one follower may have in flight is bounded
//! (`REPLICATION_BACKLOG`): past the bound the leader stops queueing for it and marks it for a
//! full state transfer instead (see [`recovery`](crate::recovery)).
//!
//! Because every task sleeps its own random lag, two writes to the same key can reach a follower in
//! either order. The follower applies a write only when its version is newer than what it holds
//! ([`Store::apply`](crate::store::Store::apply)) and acknowledges either way, so arrival order does
//! not matter and every follower converges on the leader's state.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::events::{Event, Events, FollowerIndex, shorten};
use crate::metrics::Metrics;
use crate::settings::{Settings, SettingsChange};
use crate::store::{Entry, Store, Version};

/// The follower route that receives replicated writes.
pub const REPLICATE_PATH: &str = "/internal/replicate";
/// The follower route the leader's heartbeat reads.
pub const STATUS_PATH: &str = "/internal/status";
/// The follower route that returns its whole state (read by a restarting leader).
pub const SNAPSHOT_PATH: &str = "/internal/snapshot";
/// The follower route that receives a full state transfer.
pub const SYNC_PATH: &str = "/internal/sync";

/// How long the leader waits to connect to a follower.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one replication request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest pause between two attempts to deliver the same message.
const RETRY_BACKOFF: RangeInclusive<Duration> = Duration::from_millis(50)..=Duration::from_secs(2);
/// A follower down for this long stops being retried: it gets a state transfer when it is back.
pub const GIVE_UP_AFTER_DOWN: Duration = Duration::from_secs(10);

/// Identifies one run of a node: a random number drawn at start-up. A follower that restarts
/// comes back with a new one, and a follower remembers the incarnation of the leader whose
/// state it holds.
pub type Incarnation = u64;

/// A node's replicated state: its store and, on a follower, the leader incarnation it has been
/// synchronized with (`None` until the first full state transfer). One lock guards both, so that
/// "am I synced with this leader?" and "apply" happen together.
#[derive(Debug, Default)]
pub struct Replica {
    /// The versioned map.
    pub store: Store,
    /// On a follower: the leader whose writes it accepts. Always `None` on the leader.
    pub following: Option<Incarnation>,
}

/// A [`Replica`] shared between request handlers and the leader's background tasks. The guard
/// is held for one synchronous step, never across an `.await`.
pub type SharedReplica = Arc<Mutex<Replica>>;

/// Locks a shared replica. Every operation under the lock leaves the map consistent (a single
/// insert or a whole replacement), so a lock poisoned by a panic is safe to keep using.
pub fn lock(replica: &Mutex<Replica>) -> MutexGuard<'_, Replica> {
    replica.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One versioned write of a key, as it travels in state transfers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// The key written.
    pub key: String,
    /// The new value, or `null` for a delete (a tombstone). Required: a message that leaves it
    /// out is refused rather than read as a delete.
    #[serde(deserialize_with = "Option::deserialize")]
    pub value: Option<String>,
    /// The leader's version of this write.
    pub version: Version,
}

impl Write {
    /// The write of `entry` at `key`.
    pub fn new(key: String, entry: Entry) -> Self {
        Self {
            key,
            value: entry.value,
            version: entry.version,
        }
    }

    /// The key and the store entry this write carries.
    pub fn into_entry(self) -> (String, Entry) {
        (
            self.key,
            Entry {
                value: self.value,
                version: self.version,
            },
        )
    }
}

/// What the leader sends a follower for each write: `POST /internal/replicate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRequest {
    /// The sending leader's incarnation; a follower accepts writes only from the leader it is
    /// synchronized with.
    pub leader: Incarnation,
    /// The key written.
    pub key: String,
    /// The new value, or `null` for a delete (a tombstone). Required, as in [`Write`].
    #[serde(deserialize_with = "Option::deserialize")]
    pub value: Option<String>,
    /// The leader's version of this write.
    pub version: Version,
}

impl ReplicateRequest {
    /// The store entry this message carries.
    pub fn entry(&self) -> Entry {
        Entry {
            value: self.value.clone(),
            version: self.version,
        }
    }
}

/// A follower's answer to a [`ReplicateRequest`]: an acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The follower's node id.
    pub node_id: String,
    /// The version acknowledged.
    pub version: Version,
    /// Whether the follower applied it (false: it already held this or a newer version).
    pub applied: bool,
}

/// A follower's answer to the leader's heartbeat: `GET /internal/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    /// The follower's node id.
    pub node_id: String,
    /// The follower's incarnation (new after every restart).
    pub incarnation: Incarnation,
    /// The leader incarnation it is synchronized with, if any.
    pub following: Option<Incarnation>,
    /// Highest version it has applied.
    pub version: Version,
    /// Number of live keys it holds.
    pub keys: usize,
}

/// A follower's whole state: the answer to `GET /internal/snapshot`, read by a restarting
/// leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The leader incarnation the follower is synchronized with, if any.
    pub following: Option<Incarnation>,
    /// The follower's latest version.
    pub version: Version,
    /// Every entry, tombstones included.
    pub entries: Vec<Write>,
}

impl Snapshot {
    /// A snapshot of `store`, as held by a follower of `following`.
    pub fn of(store: &Store, following: Option<Incarnation>) -> Self {
        Self {
            following,
            version: store.latest_version(),
            entries: entries(store),
        }
    }
}

/// A full state transfer from the leader: `POST /internal/sync`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The sending leader's incarnation.
    pub leader: Incarnation,
    /// The follower incarnation the transfer is meant for. A follower that restarted since the
    /// leader's heartbeat refuses it: the transfer might lack writes the earlier run had
    /// acknowledged after the snapshot was taken, so the leader must take a fresh one.
    pub follower: Incarnation,
    /// The leader's latest version when the snapshot was taken.
    pub version: Version,
    /// Every entry of the leader, tombstones included.
    pub entries: Vec<Write>,
}

impl SyncRequest {
    /// A transfer of `store` from `leader` to the run `follower` of a follower.
    pub fn of(store: &Store, leader: Incarnation, follower: Incarnation) -> Self {
        Self {
            leader,
            follower,
            version: store.latest_version(),
            entries: entries(store),
        }
    }
}

fn entries(store: &Store) -> Vec<Write> {
    store
        .snapshot()
        .into_iter()
        .map(|(key, entry)| Write::new(key, entry))
        .collect()
}

/// A follower's answer to a state transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAck {
    /// The follower's node id.
    pub node_id: String,
    /// True when the follower replaced its state (it followed another leader or none); false
    /// when it merged the snapshot into what it had.
    pub replaced: bool,
    /// The follower's latest version after the transfer.
    pub version: Version,
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
}

impl QuorumOutcome {
    /// Number of acks received before the answer.
    pub fn acks(&self) -> usize {
        self.acked_by.len()
    }

    /// Whether the quorum was reached.
    pub fn reached(&self) -> bool {
        self.acks() >= self.quorum
    }
}

/// How the leader sees one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FollowerState {
    /// Answering and synchronized with this leader.
    Up,
    /// Not answering the heartbeat.
    Down,
    /// Answering, but waiting for or receiving a full state transfer.
    CatchingUp,
}

/// The leader's view of one follower, as `GET /cluster` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FollowerView {
    /// The follower's node id (its URL's host until it first answers).
    pub node_id: String,
    /// The follower's base URL.
    pub url: String,
    /// `up`, `down` or `catching_up`.
    pub state: FollowerState,
    /// Highest version the follower acknowledged (a write or a state transfer).
    pub acked_version: Version,
    /// Highest version the follower reported applying at the last heartbeat.
    pub applied_version: Version,
    /// How many versions the follower is behind the leader's latest.
    pub lag_versions: Version,
    /// Milliseconds since the follower last answered anything; `null` if it never did.
    pub last_contact_ms_ago: Option<u64>,
    /// Time from the write to this follower's ack, for the last ack, in milliseconds
    /// (simulated lag included).
    pub last_ack_latency_ms: Option<f64>,
    /// Writes on their way to this follower (first attempt or retrying).
    pub pending: usize,
    /// Of those, the writes being retried after a failure.
    pub retrying: usize,
    /// Whether a full state transfer is due (after a restart, or too much pending).
    pub sync_pending: bool,
    /// Full state transfers sent to this follower so far.
    pub syncs: u64,
    /// The last replication error, if the last message failed.
    pub last_error: Option<String>,
    /// Live keys the follower reported at the last heartbeat; `null` before the first one.
    pub keys: Option<usize>,
    /// Whether the presenter cut replication to this follower off
    /// (`POST /admin/followers/{follower}/cut`): the leader sends it nothing until it is
    /// restored, as in a network partition.
    pub cut_off: bool,
}

/// The leader's bookkeeping for one follower.
#[derive(Debug)]
pub(crate) struct Link {
    /// Its position in `FOLLOWERS`.
    index: FollowerIndex,
    pub(crate) url: Url,
    replicate_url: Url,
    /// Replication to this follower is cut off: messages and heartbeats fail without being sent.
    cut: AtomicBool,
    pub(crate) state: Mutex<LinkState>,
    /// Wakes the follower's heartbeat early: a delivery found the follower not synchronized,
    /// so the state transfer should not wait for the next tick.
    pub(crate) wake: Notify,
}

#[derive(Debug)]
pub(crate) struct LinkState {
    pub(crate) node_id: Option<String>,
    pub(crate) health: FollowerState,
    pub(crate) acked_version: Version,
    pub(crate) applied_version: Version,
    pub(crate) keys: Option<usize>,
    pub(crate) last_contact: Option<Instant>,
    /// Since when the heartbeat has found the follower down.
    pub(crate) down_since: Option<Instant>,
    last_ack_latency: Option<Duration>,
    pending: usize,
    retrying: usize,
    /// A full state transfer is due. Set by a delivery that gives up (which it may do only while
    /// this is set); cleared by the transfer *before* it takes its snapshot, so that every write
    /// whose delivery gave up is applied on the leader before that snapshot.
    pub(crate) needs_sync: bool,
    pub(crate) syncs: u64,
    pub(crate) last_error: Option<String>,
}

impl Link {
    fn new(index: FollowerIndex, url: &Url) -> Self {
        Self {
            index,
            url: url.clone(),
            replicate_url: url.join(REPLICATE_PATH).unwrap_or_else(|_| url.clone()),
            cut: AtomicBool::new(false),
            wake: Notify::new(),
            state: Mutex::new(LinkState {
                node_id: None,
                // Unknown until the first heartbeat; a follower starts out needing a transfer.
                health: FollowerState::CatchingUp,
                acked_version: 0,
                applied_version: 0,
                keys: None,
                last_contact: None,
                down_since: None,
                last_ack_latency: None,
                pending: 0,
                retrying: 0,
                needs_sync: false,
                syncs: 0,
                last_error: None,
            }),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why nothing may be sent to this follower now, if replication to it is cut off.
    pub(crate) fn cut_off(&self) -> Option<String> {
        self.cut.load(Ordering::Relaxed).then(|| {
            let name = self.name();
            format!(
                "replication to {name} is cut off (POST /admin/followers/{name}/restore restores \
                 it)"
            )
        })
    }

    /// The follower's URL's `host:port`, which names it even before it first answers.
    fn authority(&self) -> String {
        match (self.url.host_str(), self.url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => self.url.to_string(),
        }
    }

    /// The follower's node id, or its URL's host until it first answers.
    fn name(&self) -> String {
        let state = self.state();
        state
            .node_id
            .clone()
            .unwrap_or_else(|| self.url.host_str().unwrap_or("").into())
    }

    fn view(&self, leader_version: Version) -> FollowerView {
        let node_id = self.name();
        let state = self.state();
        FollowerView {
            node_id,
            url: self.url.to_string(),
            state: state.health,
            acked_version: state.acked_version,
            applied_version: state.applied_version,
            lag_versions: leader_version
                .saturating_sub(state.applied_version.max(state.acked_version)),
            last_contact_ms_ago: state.last_contact.map(|at| at.elapsed().as_millis() as u64),
            last_ack_latency_ms: state.last_ack_latency.map(|d| d.as_secs_f64() * 1000.0),
            pending: state.pending,
            retrying: state.retrying,
            sync_pending: state.needs_sync,
            syncs: state.syncs,
            last_error: state.last_error.clone(),
            keys: state.keys,
            cut_off: self.cut.load(Ordering::Relaxed),
        }
    }
}

/// The leader's side of replication: fans each write out to every follower, and keeps the
/// per-follower bookkeeping that recovery and `GET /cluster` use.
#[derive(Clone, Debug)]
pub struct Replicator {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) incarnation: Incarnation,
    pub(crate) links: Vec<Arc<Link>>,
    pub(crate) client: reqwest::Client,
    pub(crate) replica: SharedReplica,
    settings: Mutex<Settings>,
    backlog: usize,
    metrics: Arc<Metrics>,
    events: Events,
}

impl Inner {
    fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Replicator {
    /// A replicator for `followers` (base URLs of their internal listeners) that replicates
    /// writes applied to `replica`, starting with `settings`, with the most writes that may be
    /// pending for one follower and the cluster token its requests carry.
    pub fn new(
        followers: &[Url],
        replica: SharedReplica,
        settings: Settings,
        backlog: usize,
        cluster_token: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // One pooled client for all followers; no proxy, so that a proxy variable in the
        // environment cannot reroute traffic between nodes. Every request carries the token.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = cluster_token {
            // The configuration only accepts printable ASCII, which is a valid header value.
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .default_headers(headers)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let links = followers
            .iter()
            .enumerate()
            .map(|(index, url)| Arc::new(Link::new(index, url)))
            .collect();
        let incarnation = rand::random();
        Self {
            inner: Arc::new(Inner {
                incarnation,
                links,
                client,
                replica,
                settings: Mutex::new(settings),
                backlog,
                metrics,
                events: Events::new(),
            }),
        }
    }

    /// Number of followers.
    pub fn follower_count(&self) -> usize {
        self.inner.links.len()
    }

    /// The live settings: quorum, lag range and timeout.
    pub fn settings(&self) -> Settings {
        self.inner.settings()
    }

    /// Applies `change` to the live settings if the result is valid for this leader, whose
    /// requests may take `request_timeout_ms`; returns the new settings. The next write and the
    /// next delivery attempt use them.
    pub fn change_settings(
        &self,
        change: SettingsChange,
        request_timeout_ms: u64,
    ) -> Result<Settings, String> {
        let mut settings = self
            .inner
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = settings.with(change);
        changed.validate(Some(self.inner.links.len()), Some(request_timeout_ms))?;
        *settings = changed;
        Ok(changed)
    }

    /// Cuts replication to one follower off (`cut`) or restores it. The follower is named by
    /// its node id, or by its URL's `host:port`. A cut-off follower looks down to the leader;
    /// once restored, retries and, after a long cut, a state transfer catch it up.
    pub fn set_cut_off(&self, follower: &str, cut: bool) -> Result<FollowerView, Error> {
        let links = &self.inner.links;
        let matches: Vec<&Arc<Link>> = links
            .iter()
            .filter(|link| link.name() == follower || link.authority() == follower)
            .collect();
        let link = match matches[..] {
            [link] => link,
            [] => {
                return Err(Error::UnknownFollower {
                    follower: follower.to_owned(),
                    known: links.iter().map(|link| link.name()).collect(),
                });
            }
            _ => {
                return Err(Error::AmbiguousFollower {
                    follower: follower.to_owned(),
                    urls: matches.iter().map(|link| link.url.to_string()).collect(),
                });
            }
        };
        if link.cut.swap(cut, Ordering::Relaxed) != cut {
            if cut {
                warn!(follower = %link.url, "replication cut off by the presenter");
            } else {
                info!(follower = %link.url, "replication restored by the presenter");
            }
        }
        // Let the heartbeat notice at once rather than at its next tick.
        link.wake.notify_one();
        let leader_version = lock(&self.inner.replica).store.latest_version();
        Ok(link.view(leader_version))
    }

    /// The live feed of replication events, for the dashboard.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// This leader's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// The leader's view of every follower.
    pub fn followers(&self) -> Vec<FollowerView> {
        let leader_version = lock(&self.inner.replica).store.latest_version();
        self.inner
            .links
            .iter()
            .map(|link| link.view(leader_version))
            .collect()
    }

    /// Sends the write to every follower and waits until `quorum` of them acknowledged or the
    /// replication timeout passed. Delivery to the other followers goes on after this returns.
    pub async fn replicate(&self, key: &str, entry: &Entry, quorum: usize) -> QuorumOutcome {
        let timeout_ms = self.settings().replicate_timeout_ms;
        let timeout = Duration::from_millis(timeout_ms);
        self.inner.events.publish(|| Event::Write {
            version: entry.version,
            key: shorten(key),
            value: entry.value.as_deref().map(shorten),
            quorum,
            timeout_ms,
        });
        let message = Arc::new(ReplicateRequest {
            leader: self.inner.incarnation,
            key: key.to_owned(),
            value: entry.value.clone(),
            version: entry.version,
        });
        let started = Instant::now();
        let deadline = started + timeout;
        let (acks_tx, mut acks_rx) = mpsc::channel(self.inner.links.len());
        for link in &self.inner.links {
            let delivery = Delivery {
                inner: Arc::clone(&self.inner),
                link: Arc::clone(link),
                message: Arc::clone(&message),
                started,
            };
            let acks_tx = acks_tx.clone();
            tokio::spawn(async move {
                let index = delivery.link.index;
                if delivery.run().await.is_some() {
                    // The receiver is gone once the answer was sent: nobody counts late acks.
                    let _ = acks_tx.send(index).await;
                }
            });
        }
        drop(acks_tx);

        let mut acked_by = Vec::with_capacity(quorum);
        while acked_by.len() < quorum {
            match tokio::time::timeout_at(deadline, acks_rx.recv()).await {
                Ok(Some(index)) => acked_by.push(index),
                // The deadline passed, or every delivery still running ended without an ack
                // (they gave up in favour of state transfers): no more acks can come.
                Ok(None) | Err(_) => break,
            }
        }
        let outcome = QuorumOutcome {
            quorum,
            timeout,
            acked_by: acked_by
                .iter()
                .map(|&index| self.inner.links[index].name())
                .collect(),
        };
        self.inner.events.publish(|| Event::Outcome {
            version: entry.version,
            status: if outcome.reached() { 200 } else { 503 },
            quorum,
            acked_by,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        outcome
    }
}

/// One write on its way to one follower.
struct Delivery {
    inner: Arc<Inner>,
    link: Arc<Link>,
    message: Arc<ReplicateRequest>,
    started: Instant,
}

impl Delivery {
    /// Delivers the message, retrying with backoff; returns the follower's ack, or `None` when
    /// the delivery gave up in favour of a full state transfer.
    async fn run(self) -> Option<Ack> {
        if !self.enter() {
            self.publish_failure("a state transfer is due; it will carry this write", true);
            return None;
        }
        let mut backoff = *RETRY_BACKOFF.start();
        let mut retrying = false;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let settings = self.inner.settings();
            let delay_ms = rand::random_range(settings.min_delay_ms..=settings.max_delay_ms);
            self.inner.events.publish(|| Event::Send {
                version: self.message.version,
                follower: self.link.index,
                delay_ms,
                attempt,
            });
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let failure = match self.send().await {
                Ok(ack) => break Some(ack),
                Err(failure) => failure,
            };
            let error = &failure.reason;
            let gave_up = self.give_up(&failure, &mut retrying);
            self.publish_failure(&failure.reason, gave_up);
            if gave_up {
                break None;
            }
            debug!(follower = %self.link.url, version = self.message.version, %error, "retrying");
            // Jitter: a random part of the backoff, so that the retries of many writes do not
            // hit a recovering follower in lockstep.
            tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..=1.0))).await;
            backoff = (backoff * 2).min(*RETRY_BACKOFF.end());
        };
        self.leave(result.as_ref(), retrying);
        result
    }

    fn publish_failure(&self, reason: &str, gave_up: bool) {
        self.inner.events.publish(|| Event::Failure {
            version: self.message.version,
            follower: self.link.index,
            reason: reason.to_owned(),
            gave_up,
        });
    }

    /// Counts the delivery as pending, unless a state transfer is already due (it will carry
    /// this write, which the leader applied before sending it) or the backlog is full.
    fn enter(&self) -> bool {
        let mut state = self.link.state();
        if !state.needs_sync && state.pending >= self.inner.backlog {
            warn!(follower = %self.link.url, backlog = self.inner.backlog,
                "replication backlog full; switching to a full state transfer");
            state.needs_sync = true;
        }
        if state.needs_sync {
            return false;
        }
        state.pending += 1;
        true
    }

    /// After a failure: records it, and decides whether to stop retrying. A delivery stops only
    /// when a state transfer is due, which then carries its write: after a refusal that a retry
    /// cannot change, once the follower has been down for [`GIVE_UP_AFTER_DOWN`], or once
    /// another delivery found the backlog full.
    fn give_up(&self, failure: &Failure, retrying: &mut bool) -> bool {
        self.inner
            .metrics
            .replication_error(self.link.url.as_str(), failure.kind);
        let mut state = self.link.state();
        if state.last_error.is_none() {
            warn!(follower = %self.link.url, version = self.message.version,
                error = %failure.reason, "replication failed; retrying");
        }
        state.last_error = Some(failure.reason.clone());
        if !*retrying {
            *retrying = true;
            state.retrying += 1;
        }
        let down_long = state
            .down_since
            .is_some_and(|since| since.elapsed() >= GIVE_UP_AFTER_DOWN);
        if failure.permanent || down_long {
            state.needs_sync = true;
        }
        state.needs_sync
    }

    fn leave(&self, ack: Option<&Ack>, retrying: bool) {
        let mut state = self.link.state();
        state.pending -= 1;
        if retrying {
            state.retrying -= 1;
        }
        if let Some(ack) = ack {
            let latency = self.started.elapsed();
            self.inner.metrics.ack(self.link.url.as_str(), latency);
            self.inner.events.publish(|| Event::Ack {
                version: self.message.version,
                follower: self.link.index,
                applied: ack.applied,
                latency_ms: latency.as_secs_f64() * 1000.0,
            });
            state.acked_version = state.acked_version.max(ack.version);
            state.last_ack_latency = Some(latency);
            state.last_contact = Some(Instant::now());
            state.node_id = Some(ack.node_id.clone());
            state.last_error = None;
            debug!(follower = %self.link.url, version = ack.version, applied = ack.applied, "ack");
        }
    }

    async fn send(&self) -> Result<Ack, Failure> {
        if let Some(reason) = self.link.cut_off() {
            return Err(Failure::transient("cut_off", reason));
        }
        let response = self
            .inner
            .client
            .post(self.link.replicate_url.clone())
            .timeout(REQUEST_TIMEOUT)
            .json(&*self.message)
            .send()
            .await
            .map_err(|err| Failure::from_reqwest(&err))?;
        let status = response.status();
        if status.is_success() {
            return response.json::<Ack>().await.map_err(|err| {
                Failure::transient("other", format!("unreadable ack: {}", describe(&err)))
            });
        }
        let reason = format!(
            "HTTP {status}: {}",
            response.text().await.unwrap_or_default()
        );
        if status == reqwest::StatusCode::CONFLICT {
            // `not_synced`: the follower restarted, or this leader did. Its heartbeat sends the
            // state transfer now rather than at the next tick; this delivery retries after it.
            self.link.wake.notify_one();
            return Err(Failure::transient("not_synced", reason));
        }
        // Any other refusal would be refused again: leave the write to a state transfer.
        let permanent = status.is_client_error();
        let kind = if permanent { "refused" } else { "server_error" };
        Err(Failure {
            permanent,
            kind,
            reason,
        })
    }
}

/// Why a delivery attempt failed.
struct Failure {
    /// A retry cannot succeed (the follower refused the message itself).
    permanent: bool,
    /// The metrics' `reason` label.
    kind: &'static str,
    reason: String,
}

impl Failure {
    fn transient(kind: &'static str, reason: String) -> Self {
        Self {
            permanent: false,
            kind,
            reason,
        }
    }

    fn from_reqwest(err: &reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            "timeout"
        } else if err.is_connect() {
            "connect"
        } else {
            "other"
        };
        Self::transient(kind, describe(err))
    }
}

/// A reqwest error with its causes, which its `Display` alone leaves out.
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
