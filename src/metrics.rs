//! Prometheus metrics, served at `GET /metrics` in the text format. Names follow the exporters
//! people already use: writes by semi-sync outcome (mysqld_exporter's
//! `rpl_semi_sync_master_yes_tx`/`no_tx`), each replica's acknowledged version and lag
//! (redis_exporter's replica offsets, postgres_exporter's replication lag), replica up/down.
//!
//! The registry lives in the application state, not in a global, so that several nodes can run
//! in one process (as the router tests do). Counters and histograms are updated where things
//! happen; gauges that describe the current state are set from it when scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::settings::{Settings, WaitPoint};

/// Labels of a write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Of a write: `quorum_reached`, `quorum_timeout` or `quorum_not_announced`; of an
    /// election: `elected` or the refusal's code.
    pub outcome: &'static str,
}

/// Labels of the write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `quorum_reached`, `quorum_timeout` or `quorum_not_announced`.
    pub outcome: &'static str,
    /// The front end the write came through: `http` or `resp`.
    pub protocol: &'static str,
}

/// The front end a client's request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The HTTP API (`PUT` and `DELETE /kv/{key}`).
    Http,
    /// Redis's protocol (`SET`, `DEL`).
    Resp,
}

impl Protocol {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Resp => "resp",
        }
    }
}

/// Labels of a per-follower metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    /// The follower's base URL.
    pub follower: String,
}

/// Labels of a replication error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The follower's base URL.
    pub follower: String,
    /// `connect`, `timeout`, `not_synced`, `unauthorized` (401), `refused` (another 4xx),
    /// `server_error` (5xx) or `other`.
    pub reason: &'static str,
}

/// What a node measures.
#[derive(Debug)]
pub struct Metrics {
    /// Written only while `new` registers the metrics.
    registry: Registry,
    writes: Family<WriteLabels, Counter>,
    write_seconds: Histogram,
    ack_seconds: Family<FollowerLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    version: Gauge,
    keys: Gauge,
    term: Gauge,
    leader: Gauge,
    replica_acked_version: Family<FollowerLabels, Gauge>,
    replica_lag_versions: Family<FollowerLabels, Gauge>,
    replica_up: Family<FollowerLabels, Gauge>,
    replica_pending: Family<FollowerLabels, Gauge>,
    write_quorum: Gauge,
    min_delay_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    max_delay_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    replicate_timeout_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    after_sync: Gauge,
    hidden_writes: Gauge,
    elections: Family<OutcomeLabels, Counter>,
    failover_seconds: Histogram,
}

/// Latency buckets from 1 ms to about 33 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("semisync"),
            writes: Family::default(),
            write_seconds: latency_histogram(),
            ack_seconds: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            version: Gauge::default(),
            keys: Gauge::default(),
            term: Gauge::default(),
            leader: Gauge::default(),
            replica_acked_version: Family::default(),
            replica_lag_versions: Family::default(),
            replica_up: Family::default(),
            replica_pending: Family::default(),
            write_quorum: Gauge::default(),
            min_delay_seconds: Gauge::default(),
            max_delay_seconds: Gauge::default(),
            replicate_timeout_seconds: Gauge::default(),
            after_sync: Gauge::default(),
            hidden_writes: Gauge::default(),
            elections: Family::default(),
            // 100 ms to about 200 s.
            failover_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 12)),
        };
        {
            let r = &mut metrics.registry;
            r.register(
                "writes",
                "Writes answered, by outcome of the quorum wait and protocol",
                metrics.writes.clone(),
            );
            r.register(
                "write_duration_seconds",
                "Time from a write's arrival to its answer",
                metrics.write_seconds.clone(),
            );
            r.register(
                "replica_ack_duration_seconds",
                "Time from a write to a follower's ack, simulated lag and retries included",
                metrics.ack_seconds.clone(),
            );
            r.register(
                "replication_errors",
                "Failed replication messages, by follower and reason",
                metrics.errors.clone(),
            );
            r.register(
                "version",
                "The counter of the highest version this node has applied (versions are term.counter)",
                metrics.version.clone(),
            );
            r.register("keys", "Live keys on this node", metrics.keys.clone());
            r.register(
                "term",
                "The newest term this node has seen (its own on the leader)",
                metrics.term.clone(),
            );
            r.register(
                "leader",
                "1 while this node leads, else 0",
                metrics.leader.clone(),
            );
            r.register(
                "replica_acked_version",
                "The counter of the highest version each follower acknowledged (leader)",
                metrics.replica_acked_version.clone(),
            );
            r.register(
                "replica_lag_versions",
                "Versions each follower is behind the leader (leader)",
                metrics.replica_lag_versions.clone(),
            );
            r.register(
                "replica_up",
                "Whether each follower is up and synchronized (leader)",
                metrics.replica_up.clone(),
            );
            r.register(
                "replica_pending_writes",
                "Writes on their way to each follower (leader)",
                metrics.replica_pending.clone(),
            );
            r.register(
                "write_quorum",
                "The default write quorum, WRITE_QUORUM (leader)",
                metrics.write_quorum.clone(),
            );
            r.register(
                "min_delay_seconds",
                "Smallest simulated lag, MIN_DELAY_MS (leader)",
                metrics.min_delay_seconds.clone(),
            );
            r.register(
                "max_delay_seconds",
                "Largest simulated lag, MAX_DELAY_MS (leader)",
                metrics.max_delay_seconds.clone(),
            );
            r.register(
                "replicate_timeout_seconds",
                "REPLICATE_TIMEOUT_MS (leader)",
                metrics.replicate_timeout_seconds.clone(),
            );
            r.register(
                "after_sync",
                "1 when WAIT_POINT is after_sync, 0 for after_commit (leader)",
                metrics.after_sync.clone(),
            );
            r.register(
                "hidden_writes",
                "Writes hidden from the leader's readers until their quorum acknowledges them \
                 (leader, after_sync; a leader that stepped down keeps hiding them until its new \
                 leader's state transfer)",
                metrics.hidden_writes.clone(),
            );
            r.register(
                "elections",
                "Elections this node ran (AUTO_FAILOVER), by outcome: elected, or the code of \
                 the refusal (promotion_refused, leader_alive...)",
                metrics.elections.clone(),
            );
            r.register(
                "failover_duration_seconds",
                "On an elected leader: time from the last news it had of a leader (the old one's \
                 last heartbeat, or a refused candidate's fence) to its own first acknowledged write",
                metrics.failover_seconds.clone(),
            );
        }
        metrics
    }

    /// Records a write's outcome (`quorum_reached`, `quorum_timeout` or
    /// `quorum_not_announced`), the protocol it came by, and its latency.
    pub fn write(&self, outcome: &'static str, protocol: Protocol, latency: Duration) {
        let protocol = protocol.as_str();
        self.writes
            .get_or_create(&WriteLabels { outcome, protocol })
            .inc();
        self.write_seconds.observe(latency.as_secs_f64());
    }

    /// Records an election's outcome: `elected`, or the code of its refusal.
    pub fn election(&self, outcome: &'static str) {
        self.elections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records the time from the old leader's last heartbeat to an elected leader's first
    /// acknowledged write.
    pub fn failover(&self, took: Duration) {
        self.failover_seconds.observe(took.as_secs_f64());
    }

    /// The histogram of the time from a write to `follower`'s ack, to keep and observe in
    /// place of a look-up by label at every ack.
    pub fn ack_histogram(&self, follower: &str) -> Histogram {
        let labels = FollowerLabels {
            follower: follower.to_owned(),
        };
        self.ack_seconds.get_or_create(&labels).clone()
    }

    /// Records a failed replication message.
    pub fn replication_error(&self, follower: &str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                follower: follower.to_owned(),
                reason,
            })
            .inc();
    }

    /// The text exposition, with the state gauges set from `node` first.
    pub fn render(&self, node: &NodeGauges) -> String {
        self.version.set(node.version as i64);
        self.keys.set(node.keys as i64);
        self.term.set(node.term as i64);
        self.leader.set(i64::from(node.leader.is_some()));
        self.hidden_writes.set(node.hidden_writes as i64);
        if let Some(leader) = &node.leader {
            let settings = &leader.settings;
            self.write_quorum.set(settings.write_quorum as i64);
            self.min_delay_seconds
                .set(settings.min_delay_ms as f64 / 1000.0);
            self.max_delay_seconds
                .set(settings.max_delay_ms as f64 / 1000.0);
            self.replicate_timeout_seconds
                .set(settings.replicate_timeout_ms as f64 / 1000.0);
            self.after_sync
                .set(i64::from(settings.wait_point == WaitPoint::AfterSync));
            for follower in &leader.followers {
                let labels = FollowerLabels {
                    follower: follower.follower.clone(),
                };
                self.replica_acked_version
                    .get_or_create(&labels)
                    .set(follower.acked_version as i64);
                self.replica_lag_versions
                    .get_or_create(&labels)
                    .set(follower.lag_versions as i64);
                let up = i64::from(follower.up);
                self.replica_up.get_or_create(&labels).set(up);
                self.replica_pending
                    .get_or_create(&labels)
                    .set(follower.pending as i64);
            }
        } else {
            // Not leading (a follower, or a leader that stepped down): the leader's gauges read
            // as on a node that never led, not as they were when it last led.
            for gauge in [&self.write_quorum, &self.after_sync] {
                gauge.set(0);
            }
            for gauge in [
                &self.min_delay_seconds,
                &self.max_delay_seconds,
                &self.replicate_timeout_seconds,
            ] {
                gauge.set(0.0);
            }
            for family in [
                &self.replica_acked_version,
                &self.replica_lag_versions,
                &self.replica_up,
                &self.replica_pending,
            ] {
                family.clear();
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The node's state the gauges show.
#[derive(Debug)]
pub struct NodeGauges {
    /// Highest version applied.
    pub version: u64,
    /// Live keys.
    pub keys: usize,
    /// The newest term the node has seen.
    pub term: u64,
    /// Writes hidden from the node's readers (`after_sync`): on the leader, and on a leader
    /// that stepped down until its new leader's state transfer.
    pub hidden_writes: usize,
    /// On the leader, its settings and followers.
    pub leader: Option<LeaderGauges>,
}

/// The leader's part of [`NodeGauges`].
#[derive(Debug)]
pub struct LeaderGauges {
    /// The live settings.
    pub settings: Settings,
    /// Each follower as the leader sees it.
    pub followers: Vec<ReplicaGauges>,
}

/// One follower as the leader's gauges show it.
#[derive(Debug)]
pub struct ReplicaGauges {
    /// The follower's base URL: the `follower` label.
    pub follower: String,
    /// The counter of the highest version it acknowledged.
    pub acked_version: u64,
    /// Versions it is behind the leader.
    pub lag_versions: u64,
    /// Whether it is up and synchronized.
    pub up: bool,
    /// Writes on their way to it.
    pub pending: usize,
}
