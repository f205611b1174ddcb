//! The node-to-node wire format, defined once and used by both sides: the routes of each node's
//! internal listener and the JSON bodies that travel on them, and ([`binary`]) the form batches
//! take on the replication stream.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::config::Role;
use crate::settings::{Settings, WaitPoint};
use crate::store::{Entry, Store, Version};

/// The follower route that receives batches of replicated writes.
pub const REPLICATE_PATH: &str = "/internal/replicate";
/// The route that tells a node's role, term and leader, read by a starting node and a candidate
/// (`GET`).
pub const STATUS_PATH: &str = "/internal/status";
/// The follower route the leader's heartbeat posts to.
pub const HEARTBEAT_PATH: &str = "/internal/heartbeat";
/// The route a candidate fences a node on and reads its whole replica from, in one step.
pub const FENCE_PATH: &str = "/internal/fence";
/// The follower route that receives a state transfer.
pub const TRANSFER_PATH: &str = "/internal/transfer";
/// The follower route a leader opens its replication stream on: a `POST` that asks to upgrade
/// the connection to [`STREAM_PROTOCOL`], on which batches and their answers then travel in the
/// [`binary`] form, many in flight, for as long as the connection lasts.
pub const STREAM_PATH: &str = "/internal/stream";
/// The protocol the replication stream upgrades its connection to (the `Upgrade` header).
pub const STREAM_PROTOCOL: &str = "semisync-stream/1";

pub mod binary;

/// Identifies one run of a node: a random number drawn at start-up. A follower that restarts
/// comes back with a new one, so that a state transfer meant for its earlier run is refused.
pub type Incarnation = u64;

pub use crate::version::{MAX_JSON_INTEGER, Term};

/// Counts the leader's raises of its announced smallest quorum within one term
/// ([`Announcement`](super::announce::Announcement)).
pub type Epoch = u64;

/// One versioned write of a key: what a batch carries for each write, and what a state
/// transfer carries for each key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// The key written: 1 to 1024 bytes.
    #[schema(min_length = 1, max_length = 1024)]
    pub key: String,
    /// The new value, or `null` for a delete (a tombstone). Required: a message that leaves it
    /// out is refused rather than read as a delete.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true)]
    pub value: Option<String>,
    /// The leader's version of this write, `term.counter`: term and counter each from 1 to
    /// 2^53 - 1 (what JSON numbers hold exactly).
    pub version: Version,
}

/// Reads a whole number from 0 to [`MAX_JSON_INTEGER`], written either way JSON allows.
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = whole_number(deserializer)?;
    if value > MAX_JSON_INTEGER {
        return Err(serde::de::Error::custom(format!(
            "{value} is above {MAX_JSON_INTEGER}, the largest integer JSON holds exactly"
        )));
    }
    Ok(value)
}

/// Whether `version` is one a leader may have issued: term and counter at least 1 (each at most
/// 2^53 - 1, which reading a version checks).
pub fn issued(version: Version) -> bool {
    version.term >= 1 && version.counter >= 1
}

/// Reads the entries of a replica, refusing a version no leader issued ([`issued`]): a
/// candidate merges them all.
fn checked_writes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Write>, D::Error> {
    let writes = Vec::<Write>::deserialize(deserializer)?;
    match writes.iter().find(|write| !issued(write.version)) {
        Some(write) => Err(serde::de::Error::custom(format!(
            "the entry of {:?} has version {}; a version's term and counter are each at least 1",
            write.key, write.version
        ))),
        None => Ok(writes),
    }
}

/// Reads a count (a quorum) as [`integer`] does.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let value = integer(deserializer)?;
    usize::try_from(value).map_err(|_| serde::de::Error::custom(format!("{value} is too large")))
}

/// Reads a count that may be left out (then `None`, by `#[serde(default)]`).
fn some_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    count(deserializer).map(Some)
}

/// The leader's live settings as a heartbeat carries them, each a whole number written either
/// way JSON allows; whether they make sense is checked when a promoted follower adopts them.
fn settings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Settings, D::Error> {
    #[derive(Deserialize)]
    struct Json {
        #[serde(deserialize_with = "count")]
        write_quorum: usize,
        #[serde(deserialize_with = "integer")]
        min_delay_ms: u64,
        #[serde(deserialize_with = "integer")]
        max_delay_ms: u64,
        #[serde(deserialize_with = "integer")]
        replicate_timeout_ms: u64,
        #[serde(default)]
        wait_point: WaitPoint,
        #[serde(default)]
        auto_failover: bool,
    }
    let json = Json::deserialize(deserializer)?;
    Ok(Settings {
        write_quorum: json.write_quorum,
        min_delay_ms: json.min_delay_ms,
        max_delay_ms: json.max_delay_ms,
        replicate_timeout_ms: json.replicate_timeout_ms,
        wait_point: json.wait_point,
        auto_failover: json.auto_failover,
    })
}

/// Reads a whole number written either way JSON allows: `3` or `3.0` (JSON has one number
/// type, and to JSON Schema both are the integer 3). A fraction or a negative number is refused.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number from 0 to 2^64 - 1")
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom(format!("{value} is negative")))
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<u64, E> {
            // Below 2^64, where every whole f64 converts exactly.
            if value.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&value) {
                Ok(value as u64)
            } else {
                Err(E::custom(format!(
                    "{value} is not a whole number from 0 to 2^64 - 1"
                )))
            }
        }
    }
    deserializer.deserialize_any(Visitor)
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

    /// Bytes this write takes on the wire, roughly: what bounds the size of a batch.
    pub fn wire_bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(4, String::len) + 48
    }
}

/// Every write of `store`, tombstones included: the entries of a state transfer.
fn writes_of(store: &Store) -> Vec<Write> {
    store
        .entries()
        .map(|(key, entry)| Write::new(key.to_owned(), entry.clone()))
        .collect()
}

/// What the leader sends a follower: every write whose simulated lag has passed, in one message,
/// on the follower's replication stream ([`binary`]), or as JSON to `POST /internal/replicate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The sending leader's term; a follower accepts writes only from the leader whose state
    /// transfer it holds, and refuses an older term's.
    #[serde(deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub term: Term,
    /// The smallest write quorum of this term so far: what a candidate needs to know to say
    /// which acknowledged writes a promotion keeps. It goes with every write that needs it.
    #[serde(deserialize_with = "count")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub smallest_quorum: usize,
    /// The epoch of that quorum: raised each time the leader announces a larger one again
    /// (`replication::announce`); a follower keeps the quorum of the newest epoch it heard.
    #[serde(default, deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub quorum_epoch: Epoch,
    /// The sending leader's incarnation: a node refuses a message of its term from any other
    /// node than the one that took the term (`409 term_taken`).
    #[serde(default, deserialize_with = "whole_number")]
    pub leader: Incarnation,
    /// The writes, in the order they became due. Shared with the other followers' batches.
    #[schema(value_type = Vec<Write>)]
    pub writes: Vec<Arc<Write>>,
}

/// A follower's answer to a [`Batch`]: one [`EntryAck`] per write, in the batch's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchAck {
    /// The follower's node id.
    pub node_id: String,
    /// One per write of the batch, in the same order.
    pub acks: Vec<EntryAck>,
}

impl BatchAck {
    /// Whether its acks name exactly `versions`, in order: it answers the batch of those
    /// writes, and not another.
    pub fn names(&self, versions: impl IntoIterator<Item = Version>) -> bool {
        self.acks.iter().map(|ack| ack.version).eq(versions)
    }
}

/// What became of one write of a batch on the follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EntryAck {
    /// The write's version.
    pub version: Version,
    /// Whether the follower applied it (false: it already held this or a newer version, or it
    /// refused the write).
    pub applied: bool,
    /// Why the follower refused this write (a bad key or version); absent when it accepted it.
    /// A refused write does not hold back the others of its batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The leader's heartbeat: `POST /internal/heartbeat`, every 500 ms to every follower. It tells
/// the follower the term, where clients reach the leader, the smallest quorum of the term and
/// the live settings, which a follower promoted later carries on with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The leader's term.
    #[serde(deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub term: Term,
    /// The leader's `PUBLIC_URL`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
    /// The leader's `RESP_PUBLIC_ADDR` (host:port), if it has one: its followers name it in
    /// their `READONLY` errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_resp_addr: Option<String>,
    /// The smallest write quorum of this term, as announced.
    #[serde(deserialize_with = "count")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub smallest_quorum: usize,
    /// The epoch of that quorum, as in [`Batch`].
    #[serde(default, deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub quorum_epoch: Epoch,
    /// The leader's incarnation, as in [`Batch`].
    #[serde(default, deserialize_with = "whole_number")]
    pub leader: Incarnation,
    /// The leader's live settings.
    #[serde(deserialize_with = "settings")]
    pub settings: Settings,
}

/// A node's role, term and replica as it reports them: the answer to a heartbeat, and to
/// `GET /internal/status`, which a starting node and a candidate read from every peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: String,
    /// Whether it leads now.
    pub role: Role,
    /// The newest term it has seen (its own, on a leader).
    pub term: Term,
    /// The node's incarnation (new after every restart).
    pub incarnation: Incarnation,
    /// The term whose leader's state it holds, if any; always `None` on a leader.
    pub following: Option<Term>,
    /// Whether it holds a leader's state at all: false on a node that restarted and has had no
    /// state transfer since (a candidate does not count it).
    pub filled: bool,
    /// Where clients reach the leader of its term, when it knows.
    pub leader_url: Option<String>,
    /// Where clients reach this node (its `PUBLIC_URL`), if it has one.
    pub public_url: Option<String>,
    /// Where Redis clients reach this node (its `RESP_PUBLIC_ADDR`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_addr: Option<String>,
    /// Highest version it has applied.
    pub version: Version,
    /// Number of live keys it holds.
    pub keys: usize,
    /// Whether it heard its leader lately, within two thirds of its `FAILOVER_AFTER_MS` (true
    /// on a leader): a candidate asks for an election only when a majority hears none (the
    /// pre-vote).
    #[serde(default)]
    pub hears_leader: bool,
}

/// What a candidate sends to every node it reaches before it reads their states:
/// `POST /internal/fence`. The node adopts the new term at once, so it refuses the old leader's
/// batches from then on, and answers its replica in the same step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    /// The candidate's new term; it must be above the node's.
    #[serde(deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub term: Term,
    /// The candidate's `PUBLIC_URL`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
    /// The candidate's incarnation: the node takes the term from it, and from then on refuses
    /// that term's messages from any other node.
    #[serde(default, deserialize_with = "whole_number")]
    pub candidate: Incarnation,
    /// Whether the candidate runs an election (automatic failover): a node that still hears
    /// its leader then refuses (`409 hears_leader`), its vote withheld. A person's promotion
    /// is not refused so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub election: bool,
}

/// A fenced node's answer: its replica as of the moment it adopted the new term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FenceAck {
    /// The node's id.
    pub node_id: String,
    /// Whether it was a leader until this fence (it has stepped down). A candidate does not
    /// merge a deposed leader's writes: no follower acknowledged those it alone holds.
    pub was_leader: bool,
    /// The smallest write quorum of the ending term the node heard of, if it heard of any.
    pub smallest_quorum: Option<usize>,
    /// Its whole replica.
    pub state: ReplicaState,
}

/// A node's whole replica, as a fence answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicaState {
    /// The term whose leader's state the node held, if any.
    pub following: Option<Term>,
    /// Whether it holds a leader's state at all: false on a node that restarted and has had no
    /// state transfer since (it lost what it acknowledged before).
    pub filled: bool,
    /// The node's latest version.
    pub version: Version,
    /// Every entry, tombstones included, each with a version a leader issued.
    #[serde(deserialize_with = "checked_writes")]
    pub entries: Vec<Write>,
}

impl ReplicaState {
    /// The state of `store`, as held by a follower of `following`; `filled` unless the node
    /// restarted and had no state transfer since.
    pub fn of(store: &Store, following: Option<Term>, filled: bool) -> Self {
        Self {
            following,
            filled,
            version: store.latest_version(),
            entries: writes_of(store),
        }
    }
}

/// A state transfer from the leader: `POST /internal/transfer` with the leader's whole map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateTransfer {
    /// The sending leader's term.
    #[serde(deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub term: Term,
    /// The follower incarnation the transfer is meant for. A follower that restarted since the
    /// leader's heartbeat refuses it: the transfer might lack writes the earlier run had
    /// acknowledged after the leader copied its map, so the leader must copy it again.
    pub follower: Incarnation,
    /// The leader's latest version when it copied its map.
    pub version: Version,
    /// The leader's `PUBLIC_URL`, which the follower names in its `not_leader` errors from
    /// then on; absent when the leader has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
    /// The smallest write quorum of this term so far, as the heartbeat carries it: a follower
    /// promoted right after its transfer knows it without waiting for the next heartbeat.
    #[serde(
        default,
        deserialize_with = "some_count",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u64>, maximum = 9_007_199_254_740_991_i64)]
    pub smallest_quorum: Option<usize>,
    /// The epoch of that quorum, as in [`Batch`].
    #[serde(default, deserialize_with = "integer")]
    #[schema(value_type = u64, maximum = 9_007_199_254_740_991_i64)]
    pub quorum_epoch: Epoch,
    /// The leader's incarnation, as in [`Batch`].
    #[serde(default, deserialize_with = "whole_number")]
    pub leader: Incarnation,
    /// Every entry of the leader, tombstones included.
    pub entries: Vec<Write>,
}

impl StateTransfer {
    /// A transfer of `store` from the leader of `term` (its incarnation `leader`, its public URL
    /// `leader_url`, the smallest quorum of its term as announced, `(epoch, quorum)`) to the run
    /// `follower` of a follower.
    pub fn of(
        store: &Store,
        (term, leader): (Term, Incarnation),
        leader_url: Option<String>,
        (epoch, quorum): (Epoch, usize),
        follower: Incarnation,
    ) -> Self {
        Self {
            term,
            leader,
            follower,
            version: store.latest_version(),
            leader_url,
            smallest_quorum: Some(quorum),
            quorum_epoch: epoch,
            entries: writes_of(store),
        }
    }
}

/// A follower's answer to a state transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferAck {
    /// The follower's node id.
    pub node_id: String,
    /// True when the follower replaced its state (it held another term's state or none); false
    /// when it merged the transfer into what it had.
    pub replaced: bool,
    /// The follower's latest version after the transfer.
    pub version: Version,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_what_it_wrote() {
        let batch = Batch {
            term: 7,
            smallest_quorum: 2,
            quorum_epoch: 1,
            leader: 3,
            writes: vec![
                Arc::new(Write::new(
                    "a".into(),
                    Entry::value("1", Version::new(7, 1)),
                )),
                Arc::new(Write::new("b".into(), Entry::tombstone(Version::new(7, 2)))),
            ],
        };
        let json = serde_json::to_value(&batch).expect("serializable");
        assert_eq!(
            json,
            serde_json::json!({"term": 7, "smallest_quorum": 2, "quorum_epoch": 1, "leader": 3, "writes": [
                {"key": "a", "value": "1", "version": "7.1"},
                {"key": "b", "value": null, "version": "7.2"},
            ]})
        );
        assert_eq!(
            serde_json::from_value::<Batch>(json).expect("readable"),
            batch
        );
    }

    #[test]
    fn versions_are_term_dot_counter_strings() {
        let read = |json: &str| serde_json::from_str::<Write>(json).map(|write| write.version);
        assert_eq!(
            read(r#"{"key":"k","value":null,"version":"3.42"}"#).ok(),
            Some(Version::new(3, 42))
        );
        for bad in [
            "3",
            "3.5",
            "\"3\"",
            "\"3.\"",
            "\"-1.2\"",
            "\"1.9007199254740992\"",
        ] {
            let json = format!(r#"{{"key":"k","value":null,"version":{bad}}}"#);
            assert!(read(&json).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_senders_incarnation_is_a_whole_number_however_json_writes_it() {
        let read = |leader: &str| {
            let json = format!(r#"{{"term":1,"leader":{leader},"smallest_quorum":1,"writes":[]}}"#);
            serde_json::from_str::<Batch>(&json).map(|batch| batch.leader)
        };
        assert_eq!(read("2632842168").ok(), Some(2_632_842_168));
        assert_eq!(read("2632842168.0").ok(), Some(2_632_842_168));
        assert!(read("-1").is_err() && read("1.5").is_err());
        let fence: Fence = serde_json::from_str(r#"{"term":2,"candidate":7.0}"#).expect("a fence");
        assert_eq!(fence.candidate, 7);
    }

    #[test]
    fn a_write_without_its_value_is_refused_not_read_as_a_delete() {
        let missing = r#"{"key":"k","version":"1.1"}"#;
        assert!(serde_json::from_str::<Write>(missing).is_err());
    }
}
