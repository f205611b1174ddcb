//! The crate's error types: [`Error`], what can go wrong in a request, with the single table
//! that maps it to HTTP; and [`StartError`], why a node could not start.
//!
//! Every error leaves a node as a JSON object with a stable machine-readable `error` code and a
//! `message` for people, plus fields specific to the error (the leader's URL, the acks so far).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::settings::WaitPoint;
use crate::store::Version;

/// Why a node could not start. `main` exits with code 2 on the first, 1 on the second.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong, or the file a setting names cannot be used; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Something the node runs on could not be had: a listener, a thread, the replication HTTP
    /// client.
    #[error("{0}")]
    Setup(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist (or was deleted).
    #[error("key {key:?} not found")]
    NotFound {
        /// The key that was asked for.
        key: String,
    },

    /// The key in the path is empty or too long.
    #[error("{0}")]
    InvalidKey(String),

    /// The request body is not valid JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),

    /// The body is JSON but not of the expected shape.
    #[error("{0}")]
    InvalidBody(String),

    /// A path parameter other than a key could not be read.
    #[error("{0}")]
    InvalidPath(String),

    /// The query string could not be understood.
    #[error("{0}")]
    InvalidQuery(String),

    /// The body or the value is larger than allowed.
    #[error("{what} is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// What was too large: "request body" or "value".
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },

    /// A write was sent to a follower.
    #[error("this node is a follower and does not accept writes; send writes to the leader{}",
        leader.as_ref().map(|url| format!(" at {url}")).unwrap_or_default())]
    NotLeader {
        /// The leader's base URL, when this follower knows it.
        leader: Option<String>,
    },

    /// A message from a leader or candidate of a term older than this node's: the sender was
    /// deposed (fencing).
    #[error("this node has seen term {term}, newer than the sender's: the sender no longer \
             leads{}", leader.as_ref().map(|url| format!("; the leader of term {term} is at {url}"))
             .unwrap_or_default())]
    StaleTerm {
        /// The newest term this node has seen.
        term: u64,
        /// Where clients reach that term's leader, when this node knows.
        leader: Option<String>,
    },

    /// A message of this node's term from another node than the one that took the term here
    /// (two leaders of one term, after a forced promotion): refused, and the sender steps down.
    #[error("another node took term {term} here; the sender does not lead it{}",
        leader.as_ref().map(|url| format!(" (the leader of term {term} is at {url})"))
        .unwrap_or_default())]
    TermTaken {
        /// The term.
        term: u64,
        /// Where clients reach the leader this node follows in that term, when it knows.
        leader: Option<String>,
    },

    /// A replicated write came from a leader whose state transfer this follower does not hold
    /// (it restarted, or a new term began); the leader's state transfer fixes that.
    #[error(
        "this follower does not hold the sending leader's state yet; it accepts its writes \
             after the leader's state transfer"
    )]
    NotSynced {
        /// The term whose leader's state this follower holds, if any.
        following: Option<u64>,
    },

    /// A promotion that would not keep every acknowledged write, or cannot be done.
    #[error("promotion refused: {reason}")]
    PromotionRefused {
        /// Why, and what to do.
        reason: String,
        /// Followers that count as merged: reached (or merged) and holding a leader's state,
        /// the candidate included if it holds one.
        merged: usize,
        /// Followers a safe promotion needs; `None` when no number suffices.
        needed: Option<usize>,
        /// The ending term's smallest write quorum, when known.
        smallest_quorum: Option<usize>,
    },

    /// A promotion while the leader still answers.
    #[error(
        "the leader {node_id} (term {term}) still answers; promote only when it is gone, or \
             with force=true to depose it (its writes that no follower acknowledged are lost)"
    )]
    LeaderAlive {
        /// The live leader's node id.
        node_id: String,
        /// Its term.
        term: u64,
        /// Where clients reach it, if it has a public URL.
        leader: Option<String>,
    },

    /// A candidate's election fence on a node that still hears its leader: it does not vote.
    #[error(
        "this node still hears the leader of term {term} (last heard {heard_ms_ago} ms ago): it \
         votes for no candidate while its leader lives"
    )]
    HearsLeader {
        /// The term whose leader it hears.
        term: u64,
        /// Where clients reach that leader, when it said.
        leader: Option<String>,
        /// How long ago it last heard of it.
        heard_ms_ago: u64,
    },

    /// A read with `min_version` on a node that did not hold that version of the key in time.
    #[error(
        "key {key:?} holds {} on this node, older than min_version {min_version}, and did not \
         get there within {waited_ms} ms: try again later, or read from the leader",
        version.map_or("no version".to_owned(), |v| format!("version {v}"))
    )]
    NotYetReplicated {
        /// The key read.
        key: String,
        /// The version asked for.
        min_version: Version,
        /// The version the key holds on this node, if any (a tombstone's included).
        version: Option<Version>,
        /// How long the read waited, in milliseconds.
        waited_ms: u64,
    },

    /// A read on a new leader under `after_sync` before enough followers of its term hold the
    /// state it took over: showing it, the leader could show a write that only it holds and
    /// that the next safe promotion does not have.
    #[error(
        "this leader's term is new: under after_sync it shows the state it took over once \
         {needed} followers of its term hold it, and {held} did after {waited_ms} ms; retry \
         shortly (a follower that is down or cut off keeps it from counting)"
    )]
    StateNotReplicated {
        /// Followers of the term that hold the state.
        held: usize,
        /// How many must.
        needed: usize,
        /// How long the read waited, in milliseconds.
        waited_ms: u64,
    },

    /// A state transfer meant for an earlier run of this follower (it restarted since the
    /// leader's heartbeat); the leader sends a fresh one.
    #[error("this state transfer was meant for an earlier run of this follower")]
    StaleTransfer,

    /// The write quorum was not reached in time. The write is NOT rolled back.
    #[error(
        "write quorum not reached within {} ms ({} of {} acks): the write was applied on the \
         leader (version {}){} and keeps replicating to the followers; it is not rolled back, \
         only not yet confirmed",
        .0.timeout_ms, .0.acks, .0.quorum, .0.version,
        hidden_until(.0.visible_on_leader, .0.quorum)
    )]
    QuorumTimeout(Box<Unconfirmed>),

    /// The write's quorum acknowledged it, but its quorum is below the term's floor: too few
    /// followers heard of a quorum that low for a promotion to be sure to know it, so the write
    /// does not count. Usually a partition has cut the leader off from most followers. The write
    /// is NOT rolled back.
    #[error(
        "quorum {} is not announced: {} of {} acks came, but {}. Reconnect the followers (a \
         partition?); the write was applied on the leader (version {}){} and keeps replicating, \
         not rolled back, only not confirmed",
        .write.quorum, .write.acks, .write.quorum,
        not_announced(.write.quorum, *.floor, *.heard, *.unsynced, .write.timeout_ms),
        .write.version,
        hidden_until(.write.visible_on_leader, .write.quorum)
    )]
    QuorumNotAnnounced {
        /// The write, as a quorum timeout describes it.
        write: Box<Unconfirmed>,
        /// The floor: the smallest quorum at which a write of this term counts now.
        floor: usize,
        /// Followers known to have heard of the write's quorum or a lower one.
        heard: usize,
        /// When no write of this new term counts yet: the followers known to hold its state,
        /// and how many must.
        unsynced: Option<(usize, usize)>,
    },

    /// A change to the live settings that would leave them invalid.
    #[error("{0}")]
    InvalidSettings(String),

    /// An admin request named a follower the leader does not have.
    #[error("no follower named {follower:?}; the followers are: {}", known.join(", "))]
    UnknownFollower {
        /// The name given.
        follower: String,
        /// The followers' names (node ids, or hosts until they first answer).
        known: Vec<String>,
    },

    /// A promotion's task ended without an answer (it panicked): a fault of this node, not of
    /// the request, so not a refusal.
    #[error("the promotion's task ended without an answer: {0}; see this node's log")]
    PromotionFailed(String),

    /// `POST /admin/partition` named a node that is not one of this node's peers.
    #[error("no peer named {peer:?}; the peers are: {}", known.join(", "))]
    UnknownPeer {
        /// The name given.
        peer: String,
        /// The peers' names (node ids, or `host:port` until they first answered).
        known: Vec<String>,
    },

    /// `POST /admin/partition` named a peer that has not answered this node yet: its node id is
    /// unknown, so its requests could not be told apart from the others'.
    #[error(
        "{peer} has not answered this node yet: its node id is unknown, so its requests could \
         not be dropped; try again once it is up"
    )]
    UnnamedPeer {
        /// The name given.
        peer: String,
    },

    /// An internal request from a peer this node was told to isolate (`POST /admin/partition`):
    /// dropped, as a network partition would.
    #[error("this node is partitioned from {peer} (DELETE /admin/partition heals it)")]
    Partitioned {
        /// The sender's node id.
        peer: String,
    },

    /// An admin request named a follower in a way that fits more than one (two followers with
    /// the same node id).
    #[error("{follower:?} names more than one follower; name one by its host:port instead")]
    AmbiguousFollower {
        /// The name given.
        follower: String,
        /// The URLs of the followers it names.
        urls: Vec<String>,
    },

    /// A browser on another site sent a request to an admin route.
    #[error(
        "admin requests from another site ({origin}) are refused; use the dashboard this node \
             serves, curl or the CLI"
    )]
    CrossOrigin {
        /// The `Origin` the browser sent.
        origin: String,
    },

    /// An internal request without the right cluster token.
    #[error(
        "missing or wrong cluster token: internal requests must carry \
             `Authorization: Bearer <CLUSTER_TOKEN>`"
    )]
    Unauthorized,

    /// A write under `after_sync` while the leader already hides `REPLICATION_BACKLOG` writes
    /// whose quorum has not acknowledged them: refused before it is applied.
    #[error(
        "the leader hides {hidden} writes made under after_sync that their quorum has not \
         acknowledged (REPLICATION_BACKLOG is {limit}), and takes no new one until some show: \
         bring the followers back, write with a smaller quorum, or set the wait point to \
         after_commit; this write was not applied"
    )]
    TooManyHidden {
        /// Writes hidden now.
        hidden: usize,
        /// The most it hides (`REPLICATION_BACKLOG`).
        limit: usize,
    },

    /// Too many requests at once (`MAX_CONCURRENT_REQUESTS`).
    #[error("too many requests at once; try again shortly")]
    Overloaded,

    /// The request took longer than `REQUEST_TIMEOUT_MS`.
    #[error("the request took longer than {timeout_ms} ms")]
    RequestTimeout {
        /// The limit that passed.
        timeout_ms: u64,
    },

    /// No route matches the path.
    #[error("no route for {method} {path}")]
    RouteNotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },

    /// The route exists but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
}

impl Error {
    /// The one table from error to HTTP status and stable error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            Error::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Error::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Error::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Error::InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::NotLeader { .. } => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
            Error::StaleTerm { .. } => (StatusCode::CONFLICT, "stale_term"),
            Error::TermTaken { .. } => (StatusCode::CONFLICT, "term_taken"),
            Error::NotSynced { .. } => (StatusCode::CONFLICT, "not_synced"),
            Error::PromotionRefused { .. } => (StatusCode::CONFLICT, "promotion_refused"),
            Error::LeaderAlive { .. } => (StatusCode::CONFLICT, "leader_alive"),
            Error::HearsLeader { .. } => (StatusCode::CONFLICT, "hears_leader"),
            Error::StaleTransfer => (StatusCode::CONFLICT, "stale_transfer"),
            Error::QuorumTimeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "quorum_timeout"),
            Error::QuorumNotAnnounced { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "quorum_not_announced")
            }
            Error::NotYetReplicated { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_yet_replicated")
            }
            Error::StateNotReplicated { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "state_not_replicated")
            }
            Error::InvalidSettings(_) => (StatusCode::BAD_REQUEST, "invalid_settings"),
            Error::UnknownFollower { .. } => (StatusCode::NOT_FOUND, "unknown_follower"),
            Error::AmbiguousFollower { .. } => (StatusCode::CONFLICT, "ambiguous_follower"),
            Error::UnknownPeer { .. } => (StatusCode::NOT_FOUND, "unknown_peer"),
            Error::UnnamedPeer { .. } => (StatusCode::CONFLICT, "unnamed_peer"),
            Error::PromotionFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "promotion_failed"),
            Error::Partitioned { .. } => (StatusCode::SERVICE_UNAVAILABLE, "partitioned"),
            Error::CrossOrigin { .. } => (StatusCode::FORBIDDEN, "cross_origin"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::TooManyHidden { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_hidden"),
            Error::RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Error::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "route_not_found"),
            Error::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
        }
    }

    /// Fields added to the JSON body beside `error` and `message`.
    fn details(&self) -> Map<String, Value> {
        let details = match self {
            Error::NotFound { key } => json!({ "key": key }),
            Error::PayloadTooLarge { limit, .. } => json!({ "limit_bytes": limit }),
            Error::NotLeader { leader } => json!({ "leader": leader }),
            Error::NotSynced { following } => json!({ "following": following }),
            Error::StaleTerm { term, leader } | Error::TermTaken { term, leader } => {
                json!({ "term": term, "leader": leader })
            }
            Error::NotYetReplicated {
                key,
                min_version,
                version,
                waited_ms,
            } => json!({
                "key": key,
                "min_version": min_version,
                "version": version,
                "waited_ms": waited_ms,
            }),
            Error::StateNotReplicated {
                held,
                needed,
                waited_ms,
            } => json!({ "held": held, "needed": needed, "waited_ms": waited_ms }),
            Error::PromotionRefused {
                merged,
                needed,
                smallest_quorum,
                ..
            } => json!({ "merged": merged, "needed": needed, "smallest_quorum": smallest_quorum }),
            Error::LeaderAlive {
                node_id,
                term,
                leader,
            } => json!({ "node_id": node_id, "term": term, "leader": leader }),
            Error::HearsLeader {
                term,
                leader,
                heard_ms_ago,
            } => json!({ "term": term, "leader": leader, "heard_ms_ago": heard_ms_ago }),
            Error::UnknownFollower { known, .. } => json!({ "followers": known }),
            Error::AmbiguousFollower { urls, .. } => json!({ "followers": urls }),
            Error::UnknownPeer { known, .. } => json!({ "peers": known }),
            Error::Partitioned { peer } | Error::UnnamedPeer { peer } => json!({ "peer": peer }),
            Error::QuorumTimeout(write) => write.json(),
            Error::TooManyHidden { hidden, limit } => json!({ "hidden": hidden, "limit": limit }),
            Error::QuorumNotAnnounced {
                write,
                floor,
                heard,
                unsynced,
            } => {
                let mut json = write.json();
                json["floor"] = json!(floor);
                json["heard"] = json!(heard);
                json["synced"] =
                    json!(unsynced.map(|(synced, needed)| {
                        json!({"followers": synced, "needed": needed})
                    }));
                json
            }
            _ => json!({}),
        };
        match details {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// What a 503 `quorum_timeout` says of the leader's readers: when the write is not
/// `visible_on_leader` (wait point `after_sync`), that they see it once `quorum` followers
/// acknowledged it.
/// A write that was applied on the leader but not confirmed to its client: what a `503
/// quorum_timeout` or `quorum_not_announced` says of it.
#[derive(Debug)]
pub struct Unconfirmed {
    /// The key written.
    pub key: String,
    /// The version the leader assigned to the write.
    pub version: Version,
    /// Acks required.
    pub quorum: usize,
    /// Acks received before the answer.
    pub acks: usize,
    /// Node ids of the followers that acknowledged in time.
    pub acked_by: Vec<String>,
    /// The deadline, in milliseconds.
    pub timeout_ms: u64,
    /// The wait point that applied to the write.
    pub wait_point: WaitPoint,
    /// Whether the leader's readers see the write: at once under `after_commit`; under
    /// `after_sync` only once its quorum acknowledged it, at a quorum that counts (late acks and
    /// state transfers included).
    pub visible_on_leader: bool,
}

impl Unconfirmed {
    /// The fields of its error body.
    fn json(&self) -> Value {
        json!({
            "key": self.key,
            "version": self.version,
            "quorum": self.quorum,
            "acks": self.acks,
            "acked_by": self.acked_by,
            "timeout_ms": self.timeout_ms,
            "applied_on_leader": true,
            "wait_point": self.wait_point,
            "visible_on_leader": self.visible_on_leader,
        })
    }
}

/// Why a write's quorum does not count yet, for [`Error::QuorumNotAnnounced`].
fn not_announced(
    quorum: usize,
    floor: usize,
    heard: usize,
    unsynced: Option<(usize, usize)>,
    timeout_ms: u64,
) -> String {
    match unsynced {
        Some((synced, needed)) => format!(
            "no write of this term counts yet: within {timeout_ms} ms only {synced} followers \
             came to hold the new leader's state and {needed} must, so that any promotion \
             learns of the term"
        ),
        None => format!(
            "only {heard} followers heard of quorum {quorum} within {timeout_ms} ms and {floor} \
             must, or a promotion among the other followers could count with quorum {floor} and \
             lose this write. Write with quorum {floor} or more"
        ),
    }
}

fn hidden_until(visible_on_leader: bool, quorum: usize) -> String {
    if visible_on_leader {
        return String::new();
    }
    format!(
        ", is hidden from the leader's readers until {quorum} followers acknowledge it (wait \
         point after_sync),"
    )
}

/// The JSON body of every error: a stable code, a message, and fields specific to the error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `quorum_timeout`.
    #[schema(value_type = String)]
    pub error: &'static str,
    /// Explanation for people.
    pub message: String,
    /// Fields specific to the error, beside these two: the leader's URL, the acks so far, ...
    #[serde(flatten)]
    #[schema(ignore)]
    pub details: Map<String, Value>,
}

impl From<&Error> for ErrorBody {
    fn from(error: &Error) -> Self {
        Self {
            error: error.status_and_code().1,
            message: error.to_string(),
            details: error.details(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status_and_code().0, Json(ErrorBody::from(&self))).into_response()
    }
}
