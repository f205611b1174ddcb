//! The public API's answers: the bodies of the client routes, which the server writes and the
//! client ([`client`](crate::client)) reads. The one place they are defined; the internal
//! routes' messages are in [`replication::wire`](crate::replication::wire).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::replication::{FollowerView, Term};
use crate::settings::{Settings, WaitPoint};
use crate::store::Version;

/// Body of `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always "ok" when the node answers.
    pub status: String,
    /// "leader" or "follower": what the node does now.
    pub role: String,
    /// The node's id.
    pub node_id: String,
    /// The newest term the node has seen: its own on the leader.
    pub term: Term,
    /// Where clients reach the leader of that term (its `PUBLIC_URL`), when the node knows.
    pub leader: Option<String>,
    /// Highest version the node has applied (on a leader under `after_sync`, hidden writes
    /// included: what the node holds, not what its readers see).
    pub version: Version,
    /// Number of live keys it holds (hidden writes included, as for `version`).
    pub keys: usize,
    /// On a node started with `ROLE=leader` that does not lead: why. It follows meanwhile, and
    /// leads once promoted (`semisync-kv failover`); absent once it leads or follows a leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// With automatic failover: this node's last election (absent if it ran none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::node::election::FailoverView>,
}

/// Body of a successful `GET /kv/{key}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadResponse {
    /// The key read.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The version of the write that set it.
    pub version: Version,
}

/// Body of a successful write (PUT or DELETE): the quorum was reached.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteResponse {
    /// The key written.
    pub key: String,
    /// The value written; `null` for a delete.
    pub value: Option<String>,
    /// The version the leader assigned to the write.
    pub version: Version,
    /// Acks the write waited for.
    pub quorum: usize,
    /// Acks received before the answer.
    pub acks: usize,
    /// Node ids of the followers that acknowledged, in arrival order.
    pub acked_by: Vec<String>,
    /// Time from receiving the request to the answer, in milliseconds.
    pub latency_ms: f64,
    /// When the leader's readers saw the write: `after_commit` (as soon as it was applied) or
    /// `after_sync` (once the quorum acknowledged it, before this answer).
    pub wait_point: WaitPoint,
}

/// Body of `GET /cluster`: the leader's replication status, in the spirit of PostgreSQL's
/// `pg_stat_replication` and Redis `INFO replication`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The leader's node id.
    pub node_id: String,
    /// The leader's term: new at every promotion and every leader start.
    pub term: Term,
    /// Where clients reach the leader (its `PUBLIC_URL`), if it has one.
    pub leader_url: Option<String>,
    /// The smallest write quorum of this term as announced to the followers: the smallest any
    /// write used, per-request overrides included, since the leader last announced the live
    /// quorum again, and at most a majority of the followers. What a promotion must merge enough
    /// followers for.
    pub smallest_quorum: usize,
    /// The leader's latest version.
    pub version: Version,
    /// Live keys on the leader.
    pub keys: usize,
    /// The live settings: `write_quorum`, `min_delay_ms`, `max_delay_ms` and
    /// `replicate_timeout_ms`.
    #[serde(flatten)]
    pub settings: Settings,
    /// Each follower as the leader sees it.
    pub followers: Vec<FollowerView>,
    /// When this leader was elected by automatic failover: that election (absent when it
    /// started as the leader or was promoted by a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::node::election::FailoverView>,
}
