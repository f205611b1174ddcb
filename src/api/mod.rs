//! The HTTP API: the shared node state, the extractors that turn every bad input into an
//! [`Error`], and the routers of the client routes and of the internal (node-to-node) routes.

mod admin;
mod client;
mod dashboard;
mod internal;
mod linger;
pub mod openapi;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, FromRequestParts, OriginalUri, Request, State,
};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, Role};
use crate::error::{Error, StartError};
use crate::failover::{self, Count, Fenced, Peers, Promotion};
use crate::metrics::Metrics;
use crate::partition::{NODE_HEADER, Partition, PartitionView};
use crate::recovery::HEARTBEAT_INTERVAL;
use crate::replication::Failure;
use crate::replication::wire::{Fence, NodeStatus};
use crate::replication::{
    HttpTransport, Incarnation, LagClock, Leadership, Replica, Replicator, SharedReplica, Term,
    lock,
};
use crate::settings::Settings;
use crate::store::Version;

pub use client::{ClusterStatus, Health, ReadResponse, WriteResponse};

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Everything a request handler can reach: the node's identity, its replica (store), its
/// peers and, while it leads, the replicator.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    /// The role `ROLE` gave: what the node does when it starts in a new cluster.
    start_role: Role,
    incarnation: Incarnation,
    replica: SharedReplica,
    /// The replicator, while this node leads.
    leadership: RwLock<Option<Replicator>>,
    /// The other nodes, when `PEERS` names any: whom it leads, or fences when promoted.
    peers: Option<Peers>,
    /// The peers this node drops its traffic with (`/admin/partition`).
    partition: Arc<Partition>,
    /// One promotion at a time on this node.
    promoting: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    /// `LEADER_URL`: the leader a follower names until it hears of one.
    leader_url: Option<String>,
    public_url: Option<String>,
    /// The live settings a leader starts with when it has heard of none.
    settings: Settings,
    backlog: usize,
    max_value_bytes: usize,
    cluster_token: Option<String>,
    request_timeout: Duration,
    max_concurrent_requests: usize,
    /// Set when the node, started with `ROLE=leader`, did not lead: why (`/health` shows it).
    waiting: Mutex<Option<String>>,
    /// Bounds the dashboard's event streams.
    event_streams: Arc<Semaphore>,
    /// Woken whenever the replica applied something, or a hidden write became visible: reads
    /// waiting for a `min_version`.
    applied: Arc<Notify>,
}

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

impl AppState {
    /// The state of a node configured by `config`, with an empty store: the one place the
    /// library checks a configuration ([`Config::validate`]) and reads the cluster token. A node
    /// leads only after [`AppState::start`].
    pub fn new(config: &Config) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let cluster_token = config.read_cluster_token().map_err(StartError::Config)?;
        let urls = config.peers();
        let node_id = config.node_id();
        let partition = Arc::new(Partition::new(&urls));
        let peers = if urls.is_empty() {
            None
        } else {
            let transport = HttpTransport::new(
                &urls,
                &node_id,
                cluster_token.as_deref(),
                Arc::clone(&partition),
            )
            .map_err(StartError::Setup)?;
            let clock = LagClock::precise().map_err(|err| {
                StartError::Setup(format!("cannot start the lag clock's thread: {err}"))
            })?;
            Some(Peers::new(urls, Arc::new(transport), Arc::new(clock)))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                node_id,
                partition,
                start_role: config.role,
                incarnation: rand::random(),
                replica: Arc::new(Mutex::new(Replica::default())),
                leadership: RwLock::new(None),
                peers,
                promoting: tokio::sync::Mutex::new(()),
                metrics: Arc::new(Metrics::new()),
                leader_url: config.leader_url.as_ref().map(|url| url.to_string()),
                public_url: config.public_url.as_ref().map(|url| url.to_string()),
                settings: config.settings,
                backlog: config.replication_backlog,
                max_value_bytes: config.max_value_bytes,
                cluster_token,
                request_timeout: config.request_timeout(),
                max_concurrent_requests: config.max_concurrent_requests,
                waiting: Mutex::new(None),
                event_streams: Arc::new(Semaphore::new(dashboard::MAX_EVENT_STREAMS)),
                applied: Arc::new(Notify::new()),
            }),
        })
    }

    /// Start-up, before the node serves anything: a node started as the leader asks its peers
    /// whether one of them leads, and follows it if so. In a new cluster (every peer answered
    /// and none has seen a term) it leads at once. Otherwise it takes over only by the same safe
    /// promotion as any follower ([`AppState::promote`] without `force`): when that is refused
    /// it follows, and says why in its log and in `/health` (`waiting`) until it leads or
    /// follows a leader. A follower asks its peers for the newest term once, and waits for its
    /// leader's heartbeat.
    pub async fn start(&self) {
        let Some(peers) = &self.inner.peers else {
            return;
        };
        if self.inner.start_role != Role::Leader {
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
        let _one_at_a_time = self.inner.promoting.lock().await;
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
            let (fenced, heard) = match self.fence(peers, 1).await {
                Ok(fenced) => fenced,
                Err(err) => return self.wait(err),
            };
            peers.merge(&self.inner.replica, &fenced, heard.own_report());
            if self.lead(peers, 1, heard.settings, None).is_none() {
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
                 majority of all nodes ({majority})",
                peers.urls.len() + 1
            )));
        }
        match self.take_over(peers, &statuses, false).await {
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
        *lock_waiting(&self.inner.waiting) = Some(why.to_string());
    }

    /// Why this node, started with `ROLE=leader`, does not lead, while it neither leads nor
    /// follows a leader's state transfer.
    pub fn waiting(&self) -> Option<String> {
        if self.replicator().is_some() || self.replica().following.is_some() {
            return None;
        }
        lock_waiting(&self.inner.waiting).clone()
    }

    /// Leads term 1 at once, without asking the peers: the router tests have none that answer,
    /// and test the routes, not the start.
    #[cfg(test)]
    pub(crate) fn lead_at_once(&self) {
        if let Some(peers) = &self.inner.peers {
            let _ = self.replica().check_term(1, None);
            self.lead(peers, 1, None, None);
        }
    }

    /// Adopts `term` on this node, then fences every peer with it and reads their states.
    /// Returns them, and what this node had heard from the ending term's leader; refuses when
    /// this node has already seen `term` or a newer one (another candidate fenced it first): a
    /// node takes each term from one candidate only, itself included.
    async fn fence(&self, peers: &Peers, term: Term) -> Result<(Fenced, Heard), Error> {
        let leader_url = self.inner.public_url.clone();
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
            replica.term_owner = Some(self.inner.incarnation);
            heard
        };
        let fence = Fence {
            term,
            leader_url,
            candidate: self.inner.incarnation,
        };
        Ok((peers.fence(&fence).await, heard))
    }

    /// Leads `term` over `peers`, with the live settings the old leader's heartbeat carried
    /// (`heard`) when they fit, else this node's configured ones, and the smallest quorum of the
    /// writes it inherited (`inherited`), which its followers must hear of. `None` when a newer
    /// term began meanwhile: the node follows it instead.
    fn lead(
        &self,
        peers: &Peers,
        term: Term,
        heard: Option<Settings>,
        inherited: Option<usize>,
    ) -> Option<Replicator> {
        let settings = failover::settings_for(heard, self.inner.settings, peers.urls.len());
        let leadership = Leadership {
            term,
            incarnation: self.inner.incarnation,
            public_url: self.inner.public_url.clone(),
            settings,
            backlog: self.inner.backlog,
            // Asynchronous writes promised nothing: a quorum of 0 is not inherited.
            smallest_quorum: inherited
                .filter(|&quorum| quorum > 0)
                .map_or(settings.write_quorum, |q| q.min(settings.write_quorum)),
            wake_reads: Arc::clone(&self.inner.applied),
        };
        let replicator = {
            // The term checked and the replicator installed under the replica lock (taken before
            // the leadership lock, as everywhere), so that no message of a newer term can slip
            // in between and find no leader to depose.
            let mut replica = self.replica();
            if replica.term != term {
                return None;
            }
            replica.following = None;
            replica.filled = true;
            replica.leader_url = self.inner.public_url.clone();
            replica.term_owner = Some(self.inner.incarnation);
            // It leads with what it holds and merged: all of it visible, as a follower's was.
            replica.hidden.clear();
            let replicator = peers.replicator(leadership, &self.inner.replica, &self.inner.metrics);
            *self
                .inner
                .leadership
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(replicator.clone());
            replicator
        };
        replicator.spawn_heartbeats();
        Some(replicator)
    }

    /// Promotes this follower to leader of a new term (`POST /admin/promote`): refuses while a
    /// peer still leads or when too few followers can be merged, unless `force`.
    pub async fn promote(&self, force: bool) -> Result<Promotion, Error> {
        let Some(peers) = &self.inner.peers else {
            return Err(failover::refused(
                "this node has no PEERS: it cannot reach the other nodes to lead them",
            ));
        };
        let _one_at_a_time = self.inner.promoting.lock().await;
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
        let smallest_quorum = self.replica().smallest_quorum;
        let followers = peers.urls.len();
        // Only the followers that hold a leader's state count (`failover::not_counted`). This
        // node counts itself here even when it holds none: then it has not heard the ending
        // term's quorum either, which the fence tells it; the count after the fence decides.
        let reachable = 1 + statuses
            .iter()
            .flatten()
            .filter(|status| status.role == Role::Follower && status.filled)
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

        self.take_over(peers, &statuses, force).await
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
    ) -> Result<Promotion, Error> {
        let followers = peers.urls.len();
        let own_term = self.replica().term;
        let term = failover::next_term(own_term, statuses);
        let (fenced, heard) = self.fence(peers, term).await?;
        let (merged, smallest_quorum) =
            peers.merge(&self.inner.replica, &fenced, heard.own_report());
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
            // Nobody leads this term: this node must not name itself in its 421s.
            self.replica().leader_url = None;
            return Err(failover::refuse(&count, Some(term)));
        }
        let Some(replicator) = self.lead(peers, term, heard.settings, smallest_quorum) else {
            return Err(failover::refused(
                "a newer term began during the promotion; this node follows it",
            ));
        };
        let (version, keys) = self.version_and_keys();
        let promotion = Promotion {
            node_id: self.node_id().to_owned(),
            term,
            leader_url: self.inner.public_url.clone(),
            followers,
            merged: count.merged,
            smallest_quorum: count.smallest_quorum,
            kept_if_acked_by: count.kept_if_acked_by(),
            safe: count.safe(),
            forced: force && !count.allows(),
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

    /// Checks the term of a message from a leader or a candidate, `sender` (its incarnation),
    /// under the replica lock: an older term is refused (`409 stale_term`); this node's own term
    /// from another node than the one that took it here is refused too (`409 term_taken`: two
    /// leaders of one term), which deposes the sender; a newer one is adopted, taken by the
    /// sender, and if this node leads it steps down.
    fn accept_term(
        &self,
        replica: &mut Replica,
        term: Term,
        leader_url: Option<&str>,
        sender: Incarnation,
    ) -> Result<bool, Error> {
        if term == replica.term && replica.term_owner.is_some_and(|owner| owner != sender) {
            return Err(Error::TermTaken {
                term,
                leader: replica.leader_url.clone(),
            });
        }
        let leading = self.replicator();
        if let Some(replicator) = &leading {
            if term < replicator.term() {
                return Err(Error::StaleTerm {
                    term: replica.term,
                    leader: replica.leader_url.clone(),
                });
            }
            replicator.step_down(replica);
        }
        let newer = replica.check_term(term, leader_url)?;
        replica.term_owner = Some(sender);
        Ok(newer)
    }

    /// Drops this node's traffic with the peers named in `names` (node ids, hosts or
    /// `host:port`), both directions, or with none when it is empty (`POST /admin/partition`).
    /// Peers whose node id it has not learned yet are asked for their status first, so that a
    /// name finds them.
    pub async fn isolate(&self, names: &[String]) -> Result<PartitionView, Error> {
        let partition = &self.inner.partition;
        if let Some(peers) = &self.inner.peers {
            let unnamed = partition.unnamed();
            if !unnamed.is_empty() && !names.is_empty() {
                // Each answer names its node (the transport learns it); one that fails is
                // named by its URL only.
                let deadline = Instant::now() + HEARTBEAT_INTERVAL;
                let _ = peers.statuses(deadline, false).await;
            }
        }
        partition.isolate(names)?;
        let view = partition.view(self.node_id());
        warn!(isolated = ?view.isolated, "partition set");
        Ok(view)
    }

    /// The peers this node drops its traffic with.
    pub fn partition(&self) -> PartitionView {
        self.inner.partition.view(self.node_id())
    }

    /// Wakes the reads waiting for a version: the replica applied something.
    fn applied(&self) {
        self.inner.applied.notify_waiters();
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The leader's URL as a follower names it: the `PUBLIC_URL` its leader gave, else this
    /// follower's `LEADER_URL`.
    fn leader_url(&self) -> Option<String> {
        let learned = self.replica().leader_url.clone();
        learned.or_else(|| self.inner.leader_url.clone())
    }

    /// Whether internal requests must carry the cluster token.
    pub fn has_cluster_token(&self) -> bool {
        self.inner.cluster_token.is_some()
    }

    /// The replicator while this node leads; `None` on a follower, and on a leader that
    /// stepped down.
    pub fn replicator(&self) -> Option<Replicator> {
        let leadership = self
            .inner
            .leadership
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        leadership
            .clone()
            .filter(|replicator| !replicator.is_deposed())
    }

    /// What this node does now.
    pub fn role(&self) -> Role {
        match self.replicator() {
            Some(_) => Role::Leader,
            None => Role::Follower,
        }
    }

    /// The leader's replication status, as `GET /cluster` and the dashboard show it.
    fn cluster_status(&self, replicator: &Replicator) -> ClusterStatus {
        let (version, keys) = self.version_and_keys();
        ClusterStatus {
            node_id: self.node_id().to_owned(),
            term: replicator.term(),
            leader_url: self.inner.public_url.clone(),
            version,
            keys,
            smallest_quorum: replicator.smallest_quorum(),
            settings: replicator.settings(),
            followers: replicator.followers(),
        }
    }

    /// This node's status as its peers read it, from its locked replica.
    fn status_of(&self, replica: &Replica) -> NodeStatus {
        let role = self.role();
        NodeStatus {
            node_id: self.node_id().to_owned(),
            role,
            term: replica.term,
            incarnation: self.inner.incarnation,
            following: replica.following,
            filled: replica.filled,
            leader_url: replica.leader_url.clone(),
            public_url: self.inner.public_url.clone(),
            version: replica.store.latest_version(),
            keys: replica.store.len(),
        }
    }

    /// The highest version applied and the number of live keys, read under one lock.
    fn version_and_keys(&self) -> (Version, usize) {
        let replica = self.replica();
        (replica.store.latest_version(), replica.store.len())
    }

    /// Locks the replica for one synchronous step; never held across an `.await`.
    fn replica(&self) -> MutexGuard<'_, Replica> {
        lock(&self.inner.replica)
    }

    /// Largest body a request may carry: a value of `MAX_VALUE_BYTES` with every byte escaped by
    /// JSON as `\u00XX` (six bytes), plus room for the key and the field names.
    fn body_limit(&self) -> usize {
        self.inner
            .max_value_bytes
            .saturating_mul(6)
            .saturating_add(MAX_KEY_BYTES * 6 + 1024)
    }

    /// Refuses a value larger than `MAX_VALUE_BYTES`.
    fn check_value(&self, value: Option<&str>) -> Result<(), Error> {
        match value {
            Some(value) if value.len() > self.inner.max_value_bytes => {
                Err(Error::PayloadTooLarge {
                    what: "value",
                    limit: self.inner.max_value_bytes,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Whether a peer remembers the terms it took: it leads, or holds a leader's state (a node that
/// restarted holds none, and has forgotten them).
fn remembers(status: &NodeStatus) -> bool {
    status.filled || status.role == Role::Leader
}

/// Locks the reason a node started as the leader does not lead; a plain value, safe to keep
/// after a panic.
fn lock_waiting(waiting: &Mutex<Option<String>>) -> MutexGuard<'_, Option<String>> {
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The public API of a node: the client routes, the leader's dashboard and admin routes, with
/// JSON errors for unknown routes and methods, the body limit, and the request limits.
pub fn client_router(state: AppState) -> Router {
    let routes = client::routes()
        .merge(dashboard::routes())
        .merge(admin::routes());
    let body_limit = state.body_limit();
    finish(routes, state, body_limit)
}

/// The internal API of a node, for its own listener: the routes its leader, a starting node or
/// a candidate calls, behind
/// the cluster token when one is set, and their OpenAPI description at `/openapi.json`, which
/// holds no secret.
pub fn internal_router(state: AppState) -> Router {
    let routes = internal::routes()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            partitioned,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route("/openapi.json", axum::routing::get(openapi::serve_internal));
    finish(routes, state, internal::BODY_LIMIT)
}

/// Adds what every route of a listener shares: JSON errors for unknown routes and methods, the
/// body limit [`Json`] reads under, the request limits, and the lingering close, outermost, so
/// that every early answer gets it.
fn finish(routes: Router<AppState>, state: AppState, body_limit: usize) -> Router {
    let limits = Limits {
        permits: Arc::new(Semaphore::new(state.inner.max_concurrent_requests)),
        timeout: state.inner.request_timeout,
    };
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyLimit(body_limit)))
        .layer(axum::middleware::from_fn_with_state(limits, limit))
        .layer(tower::util::MapRequestLayer::new(linger::lend))
        .with_state(state)
}

/// The per-listener request limits.
#[derive(Clone, Debug)]
struct Limits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Sheds load past `MAX_CONCURRENT_REQUESTS` with a 503 rather than queueing without bound, and
/// answers 408 when a request outlives `REQUEST_TIMEOUT_MS`.
async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire_owned() else {
        return Error::Overloaded.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::RequestTimeout {
            timeout_ms: limits.timeout.as_millis() as u64,
        }
        .into_response(),
    }
}

/// Refuses an internal request without the cluster token (when one is set) with a 401. The
/// comparison takes the same time wherever the first wrong byte is.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    if let Some(expected) = &state.inner.cluster_token {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            return Err(Error::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Drops an internal request from a peer this node is partitioned from (`503 partitioned`, which
/// the sender's transport takes for an unreachable peer), and names this node in every answer,
/// so that its peers learn its node id.
async fn partitioned(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let sender = request.headers().get(NODE_HEADER);
    let sender = sender.and_then(|name| name.to_str().ok());
    let mut response = match sender {
        Some(peer) if state.inner.partition.isolates(peer) => Error::Partitioned {
            peer: peer.to_owned(),
        }
        .into_response(),
        _ => next.run(request).await,
    };
    if let Ok(name) = axum::http::HeaderValue::from_str(state.node_id()) {
        response.headers_mut().insert(NODE_HEADER, name);
    }
    response
}

/// Compares two secrets in a time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn route_not_found(method: Method, OriginalUri(uri): OriginalUri) -> Error {
    Error::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Checks a key taken from a path or a message: not empty, at most [`MAX_KEY_BYTES`].
fn check_key(key: &str) -> Result<(), Error> {
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

/// The key of a `/kv/{*key}` route, percent-decoded and checked with [`check_key`].
#[derive(Debug)]
struct Key(String);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let key = path_param(parts, state, Error::InvalidKey).await?;
        check_key(&key)?;
        Ok(Key(key))
    }
}

/// The one path parameter of a route, percent-decoded; `error` makes the error for one that
/// cannot be read.
async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    error: fn(String) -> Error,
) -> Result<String, Error> {
    let axum::extract::Path(value) =
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| error(rejection.body_text()))?;
    Ok(value)
}

/// A query string deserialized into `T`; anything it cannot read is an `invalid_query` error.
#[derive(Debug)]
struct Query<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| Error::InvalidQuery(rejection.body_text()))?;
        Ok(Query(value))
    }
}

/// The largest request body a listener reads, in bytes: the public one's follows
/// `MAX_VALUE_BYTES`, the internal one's is [`internal::BODY_LIMIT`].
#[derive(Clone, Copy, Debug)]
struct BodyLimit(usize);

/// A JSON body deserialized into `T`, whatever the content type says (so that a plain
/// `curl -d '{"value":"x"}'` works): the one body reader of every route. Its errors say whether
/// the JSON was malformed, of the wrong shape, or larger than the listener's [`BodyLimit`].
#[derive(Debug)]
struct Json<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or_else(|| state.body_limit(), |limit| limit.0);
        let too_large = Error::PayloadTooLarge {
            what: "request body",
            limit,
        };
        // Refuse a declared oversize body before reading any of it; the body limit layer stops
        // one without a Content-Length as soon as it grows past the limit.
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if declared.is_some_and(|length: usize| length > limit) {
            return Err(too_large);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large
            } else {
                Error::InvalidBody(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON object into `T`; the error says whether the JSON was malformed or of the wrong
/// shape. Straight from the bytes, without a `Value` tree in between: a state transfer can be
/// a hundred megabytes.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    use serde_json::error::Category;
    // serde would also read a struct from a JSON array: only an object is a body.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'[')) {
        return Err(Error::InvalidBody("body must be a JSON object".into()));
    }
    serde_json::from_slice(bytes).map_err(|err| match err.classify() {
        Category::Data => Error::InvalidBody(err.to_string()),
        Category::Syntax | Category::Eof | Category::Io => Error::InvalidJson(err.to_string()),
    })
}

/// Present only on the leader: handlers that take it refuse to run on a follower.
struct Leader(Replicator);

impl FromRequestParts<AppState> for Leader {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match state.replicator() {
            Some(replicator) => Ok(Leader(replicator)),
            None => Err(Error::NotLeader {
                leader: state.leader_url(),
            }),
        }
    }
}
