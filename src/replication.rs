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
//! The answer does not stop the tasks: replication to every follower goes on in the background,
//! which is what makes this *semi*-synchronous. A quorum of 0 is fully asynchronous, a quorum equal
//! to the number of followers fully synchronous. A timeout is therefore "not yet confirmed", never
//! a rollback: the write stays applied on the leader and keeps replicating (as with MySQL
//! semi-sync, Redis `WAIT` or MongoDB's `wtimeout`).
//!
//! A failed message (connection refused, timeout, non-2xx answer) is retried with exponential
//! backoff and jitter until the write's deadline; a follower that comes back within the deadline
//! still receives it and still counts towards the quorum.
//!
//! Because every task sleeps its own random lag, two writes to the same key can reach a follower in
//! either order. The follower applies a write only when its version is newer than what it holds
//! ([`Store::apply`](crate::store::Store::apply)) and acknowledges either way, so arrival order does
//! not matter and every follower converges on the leader's state.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::store::{Entry, Version};

/// The follower route that receives replicated writes.
pub const REPLICATE_PATH: &str = "/internal/replicate";

/// How long the leader waits to connect to a follower.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one replication request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest pause between two attempts to deliver the same message.
const RETRY_BACKOFF: RangeInclusive<Duration> = Duration::from_millis(50)..=Duration::from_secs(1);

/// What the leader sends a follower for each write: `POST /internal/replicate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRequest {
    /// The key written.
    pub key: String,
    /// The new value, or `null` for a delete (a tombstone). Required: a message that leaves it
    /// out is refused rather than read as a delete.
    #[serde(deserialize_with = "Option::deserialize")]
    pub value: Option<String>,
    /// The leader's version of this write.
    pub version: Version,
}

impl ReplicateRequest {
    /// The message for `entry` written at `key`.
    pub fn new(key: &str, entry: &Entry) -> Self {
        Self {
            key: key.to_owned(),
            value: entry.value.clone(),
            version: entry.version,
        }
    }

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

/// What became of the quorum wait for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumOutcome {
    /// Acks required.
    pub quorum: usize,
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

/// The leader's side of replication: fans each write out to every follower.
#[derive(Clone, Debug)]
pub struct Replicator {
    followers: Arc<[Url]>,
    client: reqwest::Client,
    lag_ms: RangeInclusive<u64>,
    timeout: Duration,
}

impl Replicator {
    /// A replicator for `followers` (base URLs), with a simulated lag range in milliseconds and the
    /// time a write waits for its quorum.
    pub fn new(followers: &[Url], lag_ms: RangeInclusive<u64>, timeout: Duration) -> Self {
        // One pooled client for all followers; no proxy, so that a proxy variable in the
        // environment cannot reroute traffic between nodes.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let followers = followers
            .iter()
            .map(|base| base.join(REPLICATE_PATH).unwrap_or_else(|_| base.clone()))
            .collect();
        Self {
            followers,
            client,
            lag_ms,
            timeout,
        }
    }

    /// Number of followers.
    pub fn follower_count(&self) -> usize {
        self.followers.len()
    }

    /// How long a write waits for its quorum.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends the write to every follower and waits until `quorum` of them acknowledged or the
    /// replication timeout passed. Delivery to the other followers goes on after this returns.
    pub async fn replicate(&self, key: &str, entry: &Entry, quorum: usize) -> QuorumOutcome {
        let message = Arc::new(ReplicateRequest::new(key, entry));
        let deadline = Instant::now() + self.timeout;
        let (acks_tx, mut acks_rx) = mpsc::channel(self.followers.len());
        for url in self.followers.iter() {
            let task = Delivery {
                client: self.client.clone(),
                url: url.clone(),
                message: Arc::clone(&message),
                lag_ms: self.lag_ms.clone(),
                deadline,
            };
            let acks_tx = acks_tx.clone();
            tokio::spawn(async move {
                if let Some(ack) = task.run().await {
                    // The receiver is gone once the quorum was reached: nobody counts late acks.
                    let _ = acks_tx.send(ack).await;
                }
            });
        }
        drop(acks_tx);

        let mut outcome = QuorumOutcome {
            quorum,
            acked_by: Vec::with_capacity(quorum),
        };
        while !outcome.reached() {
            match tokio::time::timeout_at(deadline, acks_rx.recv()).await {
                Ok(Some(ack)) => outcome.acked_by.push(ack.node_id),
                // Every delivery finished (gave up at the deadline) or the deadline passed.
                Ok(None) | Err(_) => break,
            }
        }
        outcome
    }
}

/// One write on its way to one follower.
struct Delivery {
    client: reqwest::Client,
    url: Url,
    message: Arc<ReplicateRequest>,
    lag_ms: RangeInclusive<u64>,
    deadline: Instant,
}

impl Delivery {
    /// Delivers the message, retrying until the deadline; returns the follower's ack.
    async fn run(self) -> Option<Ack> {
        let mut backoff = *RETRY_BACKOFF.start();
        loop {
            simulated_lag(&self.lag_ms).await;
            let error = match self.send().await {
                Ok(ack) => {
                    debug!(follower = %self.url, version = ack.version, applied = ack.applied, "ack");
                    return Some(ack);
                }
                Err(error) => error,
            };
            let now = Instant::now();
            if now >= self.deadline {
                warn!(
                    follower = %self.url,
                    key = %self.message.key,
                    version = self.message.version,
                    %error,
                    "replication failed"
                );
                return None;
            }
            debug!(follower = %self.url, version = self.message.version, %error, "retrying");
            // Jitter: a random part of the backoff, so that retries from many writes do not hit
            // a recovering follower in lockstep. The last attempt is made at the deadline.
            let pause = backoff.mul_f64(rand::random_range(0.5..=1.0));
            tokio::time::sleep(pause.min(self.deadline - now)).await;
            backoff = (backoff * 2).min(*RETRY_BACKOFF.end());
        }
    }

    async fn send(&self) -> Result<Ack, String> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&*self.message)
            .send()
            .await
            .map_err(|err| describe(&err))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("HTTP {status}: {body}"));
        }
        response
            .json::<Ack>()
            .await
            .map_err(|err| format!("unreadable ack: {}", describe(&err)))
    }
}

/// Sleeps a uniformly random time in `lag_ms`, the simulated network lag of one message.
async fn simulated_lag(lag_ms: &RangeInclusive<u64>) {
    let ms = rand::random_range(lag_ms.clone());
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A reqwest error with its causes, which its `Display` alone leaves out.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
