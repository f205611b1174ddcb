//! The node: one member of the cluster, as logic with no HTTP in it. It owns the replica (the
//! store and what the node knows of terms) and its role, and is the one place a term is
//! adopted or a role changes. The HTTP layer ([`api`](crate::api)) parses a request, calls one
//! method here and maps the result; the simulator calls the same methods
//! through its fake network.
//!
//! - this file: the node, its role, the term check every message of a leader or candidate
//!   goes through, and what it reports of itself;
//! - `follower`: what a node does with its leader's batches, heartbeats and
//!   state transfers, and with a candidate's fence;
//! - [`kv`]: a client's reads (any node) and writes (the leader's write path);
//! - `promotion`: how a node becomes the leader, at start-up or promoted;
//! - [`election`]: automatic failover, a promotion that followers run by themselves.
//!
//! # Lock order
//! The replica's mutex first, then the role's lock, then the last election's (`health` reads it
//! under the replica lock); none is held across an `.await`. A term
//! is adopted and the role changes under the replica lock, so that no message of a newer term
//! can slip in between and find no leader to depose.

pub mod election;
mod follower;
pub mod kv;
mod promotion;

use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use crate::config::{self, Config};
use crate::error::{Error, StartError};
use crate::failover::Peers;
use crate::metrics::Metrics;
use crate::partition::{Partition, PartitionView};
use crate::protocol::{ClusterStatus, Health};
use crate::recovery::HEARTBEAT_INTERVAL;
use crate::replication::wire::NodeStatus;
use crate::replication::{
    HttpTransport, Incarnation, LagClock, Replica, Replicator, SharedReplica, Term, lock,
};
use crate::settings::Settings;
use crate::store::Version;

/// What a node does now. A leader that stepped down by itself (a follower refused it with a
/// newer term) keeps its `Leader` role until the next change, but its replicator says it is
/// deposed, and [`Node::replicator`] no longer returns it.
#[derive(Debug, Default)]
enum Role {
    /// It follows whoever leads its term.
    #[default]
    Follower,
    /// Started with `ROLE=leader`, it did not lead: it follows, and this says why.
    Waiting(String),
    /// It leads, through this replicator.
    Leader(Replicator),
}

/// What a node is, apart from its network: its identity and the configuration its logic reads.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The node's id (`NODE_ID`).
    pub node_id: String,
    /// The role `ROLE` gave: what the node does when it starts in a new cluster.
    pub start_role: config::Role,
    /// This run of the node: drawn at start, new at every restart.
    pub incarnation: Incarnation,
    /// `LEADER_URL`: the leader a follower names until it hears of one.
    pub leader_url: Option<String>,
    /// `PUBLIC_URL`: where clients reach this node when it leads.
    pub public_url: Option<String>,
    /// `RESP_PUBLIC_ADDR`: where Redis clients reach this node when it leads. Set once: from
    /// the configuration, or else from the RESP listener's address once it is bound
    /// ([`Node::advertise_resp`]).
    pub resp_public_addr: OnceLock<String>,
    /// The live settings a leader starts with when it has heard of none.
    pub settings: Settings,
    /// `REPLICATION_BACKLOG`.
    pub backlog: usize,
    /// `FAILOVER_AFTER_MS`: with automatic failover, how long a follower hears no leader
    /// before an election.
    pub failover_after: Duration,
}

/// One node: its replica, its role, and its peers.
#[derive(Debug)]
pub struct Node {
    identity: Identity,
    replica: SharedReplica,
    /// What the node does now (see the lock order above).
    role: RwLock<Role>,
    /// The other nodes, when `PEERS` names any: whom it leads, or fences when promoted.
    peers: Option<Peers>,
    /// The peers this node drops its traffic with (`/admin/partition`).
    partition: Arc<Partition>,
    /// One promotion at a time on this node.
    promoting: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    /// Woken whenever the replica applied something, or a hidden write became visible: reads
    /// waiting for a `min_version`.
    applied: Arc<Notify>,
    /// When this run of the node started: a follower that never heard a leader counts its
    /// silence from here.
    started: Instant,
    /// Its last election, if it ran one.
    election: Mutex<Option<election::Election>>,
    /// After an election: since when the cluster had no leader, until this leader's first
    /// acknowledged write, which the failover time metric measures.
    leaderless_from: Mutex<Option<Instant>>,
}

impl Node {
    /// A node configured by `config`, which [`Config::validate`] accepted, with an empty store,
    /// talking to its peers over HTTP with `cluster_token`.
    pub fn from_config(config: &Config, cluster_token: Option<&str>) -> Result<Self, StartError> {
        let urls = config.peers();
        let node_id = config.node_id();
        let partition = Arc::new(Partition::new(&urls));
        let peers = if urls.is_empty() {
            None
        } else {
            let transport =
                HttpTransport::new(&urls, &node_id, cluster_token, Arc::clone(&partition))
                    .map_err(StartError::Setup)?;
            let clock = LagClock::precise().map_err(|err| {
                StartError::Setup(format!("cannot start the lag clock's thread: {err}"))
            })?;
            Some(Peers::new(urls, Arc::new(transport), Arc::new(clock)))
        };
        let identity = Identity {
            node_id,
            start_role: config.role,
            incarnation: crate::entropy::incarnation(),
            leader_url: config.leader_url.as_ref().map(|url| url.to_string()),
            public_url: config.public_url.as_ref().map(|url| url.to_string()),
            resp_public_addr: (config.resp_public_addr.clone())
                .map_or_else(OnceLock::new, OnceLock::from),
            settings: config.settings,
            backlog: config.replication_backlog,
            failover_after: config.failover_after(),
        };
        Ok(Self::new(identity, peers, partition))
    }

    /// A node of `identity` with an empty store, reaching `peers` (any transport) and
    /// dropping its traffic with the peers `partition` isolates. It leads only after
    /// [`Node::start`].
    pub fn new(identity: Identity, peers: Option<Peers>, partition: Arc<Partition>) -> Self {
        Self {
            identity,
            replica: Arc::new(Mutex::new(Replica::default())),
            role: RwLock::new(Role::Follower),
            peers,
            partition,
            promoting: tokio::sync::Mutex::new(()),
            metrics: Arc::new(Metrics::new()),
            applied: Arc::new(Notify::new()),
            started: Instant::now(),
            election: Mutex::new(None),
            leaderless_from: Mutex::new(None),
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.identity.node_id
    }

    /// This run of the node.
    pub fn incarnation(&self) -> Incarnation {
        self.identity.incarnation
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The replicator while this node leads; `None` on a follower, and on a leader that
    /// stepped down.
    pub fn replicator(&self) -> Option<Replicator> {
        match &*self.role_lock() {
            Role::Leader(replicator) if !replicator.is_deposed() => Some(replicator.clone()),
            _ => None,
        }
    }

    /// The replicator, or `421 not_leader` naming the leader this node knows of.
    pub fn leader(&self) -> Result<Replicator, Error> {
        self.replicator().ok_or_else(|| Error::NotLeader {
            leader: self.leader_url(),
        })
    }

    /// What this node does now.
    pub fn role(&self) -> config::Role {
        match self.replicator() {
            Some(_) => config::Role::Leader,
            None => config::Role::Follower,
        }
    }

    /// Why this node, started with `ROLE=leader`, does not lead, while it neither leads nor
    /// follows a leader's state transfer.
    pub fn waiting(&self) -> Option<String> {
        self.waiting_in(&self.replica())
    }

    /// [`Node::waiting`], with the replica locked.
    fn waiting_in(&self, replica: &Replica) -> Option<String> {
        match (&*self.role_lock(), replica.following) {
            (Role::Waiting(why), None) => Some(why.clone()),
            _ => None,
        }
    }

    /// What `GET /health` says of this node, read under one lock.
    pub fn health(&self) -> Health {
        let replica = self.replica();
        let waiting = self.waiting_in(&replica);
        Health {
            status: "ok".into(),
            role: self.role().as_str().into(),
            node_id: self.node_id().into(),
            term: replica.term,
            leader: self.leader_url_in(&replica),
            version: replica.store.latest_version(),
            keys: replica.store.len(),
            waiting,
            failover: self.failover(),
        }
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
        if let Some(replicator) = self.replicator() {
            if term < replicator.term() {
                return Err(Error::StaleTerm {
                    term: replica.term,
                    leader: replica.leader_url.clone(),
                });
            }
            replicator.step_down(replica);
            *self.role_mut() = Role::Follower;
        }
        let newer = replica.check_term(term, leader_url)?;
        replica.term_owner = Some(sender);
        Ok(newer)
    }

    /// Ends what this node runs in the background, as its process's end would: a leader's
    /// pipelines, heartbeats and waiting writes. The simulator's crash; a real crash needs none.
    pub fn halt(&self) {
        let mut replica = self.replica();
        let mut role = self.role_mut();
        if let Role::Leader(replicator) = &*role {
            replicator.step_down(&mut replica);
        }
        *role = Role::Follower;
    }

    /// Drops this node's traffic with the peers named in `names` (node ids, hosts or
    /// `host:port`), both directions, or with none when it is empty (`POST /admin/partition`).
    /// Peers whose node id it has not learned yet are asked for their status first, so that a
    /// name finds them.
    pub async fn isolate(&self, names: &[String]) -> Result<PartitionView, Error> {
        let partition = &self.partition;
        if let Some(peers) = &self.peers {
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
        self.partition.view(self.node_id())
    }

    /// The partition table itself, for the router tests.
    #[cfg(test)]
    pub(crate) fn partition_table(&self) -> &Partition {
        &self.partition
    }

    /// Whether this node drops its traffic with `peer` (a node id, host or `host:port`).
    pub fn isolates(&self, peer: &str) -> bool {
        self.partition.isolates(peer)
    }

    /// Wakes the reads waiting for a version: the replica applied something.
    fn applied(&self) {
        self.applied.notify_waiters();
    }

    /// The leader's URL as a follower names it: the `PUBLIC_URL` its leader gave, else this
    /// follower's `LEADER_URL`.
    pub fn leader_url(&self) -> Option<String> {
        self.leader_url_in(&self.replica())
    }

    /// Makes `addr` this node's RESP address, unless `RESP_PUBLIC_ADDR` gave one: the RESP
    /// listener's, once bound. Call it before the node starts, so that its first heartbeats
    /// name it.
    pub fn advertise_resp(&self, addr: String) {
        let _ = self.identity.resp_public_addr.set(addr);
    }

    /// The leader as a follower names it, as of one moment: its URL ([`Node::leader_url`]) and
    /// the `RESP_PUBLIC_ADDR` its latest heartbeat gave, if any.
    pub fn leader_addresses(&self) -> (Option<String>, Option<String>) {
        let replica = self.replica();
        (
            self.leader_url_in(&replica),
            replica.leader_resp_addr.clone(),
        )
    }

    /// [`Node::leader_url`], with the replica locked.
    fn leader_url_in(&self, replica: &Replica) -> Option<String> {
        (replica.leader_url.clone()).or_else(|| self.identity.leader_url.clone())
    }

    /// The leader's replication status, as `GET /cluster` and the dashboard show it.
    pub fn cluster_status(&self, replicator: &Replicator) -> ClusterStatus {
        let (version, keys) = self.version_and_keys();
        ClusterStatus {
            node_id: self.node_id().to_owned(),
            term: replicator.term(),
            leader_url: self.identity.public_url.clone(),
            version,
            keys,
            smallest_quorum: replicator.smallest_quorum(),
            settings: replicator.settings(),
            followers: replicator.followers(),
            failover: self.failover().filter(|election| {
                election.state == election::ElectionState::Elected
                    && election.term == Some(replicator.term())
            }),
        }
    }

    /// This node's status as its peers read it, from its locked replica.
    fn status_of(&self, replica: &Replica) -> NodeStatus {
        NodeStatus {
            node_id: self.node_id().to_owned(),
            role: self.role(),
            term: replica.term,
            incarnation: self.identity.incarnation,
            following: replica.following,
            filled: replica.filled,
            leader_url: replica.leader_url.clone(),
            public_url: self.identity.public_url.clone(),
            resp_addr: self.identity.resp_public_addr.get().cloned(),
            version: replica.store.latest_version(),
            keys: replica.store.len(),
            hears_leader: self.hears_leader_in(replica),
        }
    }

    /// The highest version applied and the number of live keys, read under one lock.
    pub fn version_and_keys(&self) -> (Version, usize) {
        let replica = self.replica();
        (replica.store.latest_version(), replica.store.len())
    }

    /// Locks the replica for one synchronous step; never held across an `.await`.
    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        lock(&self.replica)
    }

    /// Reads the role; a plain value, safe to read after a panic.
    fn role_lock(&self) -> RwLockReadGuard<'_, Role> {
        self.role.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last election; a plain value, safe to read after a panic.
    fn election_lock(&self) -> MutexGuard<'_, Option<election::Election>> {
        self.election.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Since when the cluster had no leader, until this elected leader's first acknowledged
    /// write.
    fn elected_lock(&self) -> MutexGuard<'_, Option<Instant>> {
        self.leaderless_from
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the role: only under the replica lock (see the lock order).
    fn role_mut(&self) -> RwLockWriteGuard<'_, Role> {
        self.role.write().unwrap_or_else(PoisonError::into_inner)
    }
}
