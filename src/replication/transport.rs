//! The seam between the replication and failover logic and the network: a [`Transport`]
//! carries the five exchanges a node has with a peer (three as its leader, two as a starting
//! node or a candidate). [`HttpTransport`] is the real one (reqwest,
//! one pooled client, the cluster token on every request); the unit tests use a fake one, so the
//! logic that decides (batching, retries, backoff, give-up) runs without sockets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::stream::Stream;
use super::wire::{
    Batch, BatchAck, FENCE_PATH, Fence, FenceAck, HEARTBEAT_PATH, Heartbeat, NodeStatus,
    REPLICATE_PATH, STATUS_PATH, STREAM_PATH, STREAM_PROTOCOL, StateTransfer, TRANSFER_PATH, Term,
    TransferAck,
};
use crate::events::FollowerIndex;
use crate::partition::{NODE_HEADER, Partition};

/// A future a transport returns; boxed so that the trait can be used as `dyn Transport`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a node talks to its peers, each named by its position in `PEERS`: as their leader, and
/// as a starting node or a candidate.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends one batch of writes and returns the follower's per-write answer.
    fn replicate(&self, follower: FollowerIndex, batch: Batch) -> BoxFuture<'_, Result<BatchAck>>;
    /// Sends the follower the leader's heartbeat; returns its status.
    fn heartbeat(
        &self,
        follower: FollowerIndex,
        heartbeat: Heartbeat,
    ) -> BoxFuture<'_, Result<NodeStatus>>;
    /// Sends the follower a state transfer.
    fn transfer(
        &self,
        follower: FollowerIndex,
        transfer: StateTransfer,
    ) -> BoxFuture<'_, Result<TransferAck>>;
    /// Asks a peer for its role, term and leader, changing nothing (a starting node does).
    fn status(&self, peer: FollowerIndex) -> BoxFuture<'_, Result<NodeStatus>>;
    /// Fences a peer with a new term and reads its whole replica, in one step (a candidate
    /// does).
    fn fence(&self, peer: FollowerIndex, fence: Fence) -> BoxFuture<'_, Result<FenceAck>>;
}

/// A transport's result.
pub type Result<T> = std::result::Result<T, Failure>;

/// Why an exchange with a follower failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure, as the metrics' `reason` label says it: `connect`, `timeout`,
    /// `not_synced`, `stale_term`, `term_taken`, `unauthorized` (401: another `CLUSTER_TOKEN`),
    /// `refused` (another 4xx), `server_error` (5xx), `cut_off`, `partitioned` or `other`.
    pub kind: &'static str,
    /// What went wrong, for people.
    pub reason: String,
    /// On a `stale_term` refusal: the peer's newer term, and where its leader is, if it knows.
    pub newer_term: Option<(Term, Option<String>)>,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            newer_term: None,
        }
    }

    /// Whether a retry cannot change the outcome: the follower refused the message itself.
    pub fn permanent(&self) -> bool {
        self.kind == "refused"
    }

    /// Whether the peer refused this node's `CLUSTER_TOKEN` (`401`).
    pub fn unauthorized(&self) -> bool {
        self.kind == "unauthorized"
    }

    /// Whether another node took the sender's term at the follower (`409 term_taken`).
    pub fn term_taken(&self) -> bool {
        self.kind == "term_taken"
    }

    /// Whether the follower is not synchronized with this leader (it restarted, or the leader
    /// did): a state transfer is what it needs.
    pub fn not_synced(&self) -> bool {
        self.kind == "not_synced"
    }

    fn from_reqwest(err: &reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            "timeout"
        } else if err.is_connect() {
            "connect"
        } else {
            "other"
        };
        Self::new(kind, describe(err))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// How long the leader waits to connect to a follower.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a batch may wait for its stream to open, and then for its answer.
const BATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the leader sends a follower that has no stream route its batches as JSON before it
/// tries to open a stream again.
const NO_STREAM_RETRY: Duration = Duration::from_secs(30);
/// How long a heartbeat may take before the follower counts as down.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one state transfer, or one fence with the replica it answers, may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a fenced node may take to begin its answer: a frozen node accepts the connection and
/// then says nothing, and a candidate must not wait for it as long as for a large state.
const FENCE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pooled connection may sit idle before it is dropped rather than reused. A node
/// closes a connection idle for its `HEADER_READ_TIMEOUT_MS` (5 s by default: hyper's header
/// deadline also runs while it waits for the next request), and a heartbeat (or a batch sent as
/// JSON to a follower without the stream) sent on a connection that the follower is closing
/// fails with "connection closed before message completed". Well below that, so this side lets
/// go first.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The real transport: HTTP/1.1 to each follower's internal listener, on one pooled client with
/// keep-alive, no proxy (a proxy variable in the environment must not reroute traffic between
/// nodes), and the cluster token on every request. Batches travel on a replication stream per
/// follower ([`Stream`]), a connection upgraded once and kept; everything else is JSON.
#[derive(Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
    followers: Vec<FollowerUrls>,
    /// Each follower's replication stream; the lock is held while one opens.
    streams: Vec<tokio::sync::Mutex<Slot>>,
    /// The peers this node is cut off from, which learns their node ids from their answers.
    partition: Arc<Partition>,
}

/// One follower's replication stream, as the leader knows it.
#[derive(Debug, Default)]
enum Slot {
    /// None is open.
    #[default]
    Closed,
    /// Open, or ended without the leader having noticed yet ([`Stream::usable`] says).
    Open(Arc<Stream>),
    /// The follower answered `404` to `POST /internal/stream` at this moment: it runs a version
    /// without the stream (a rolling upgrade), and takes its batches as JSON.
    Unsupported(tokio::time::Instant),
}

#[derive(Debug)]
struct FollowerUrls {
    stream: Url,
    replicate: Url,
    heartbeat: Url,
    status: Url,
    fence: Url,
    transfer: Url,
}

impl HttpTransport {
    /// A transport to the followers at these base URLs, from the node `node_id` (named in every
    /// request), sending `cluster_token` if there is one, and nothing to the peers `partition`
    /// isolates.
    pub fn new(
        followers: &[Url],
        node_id: &str,
        cluster_token: Option<&str>,
        partition: Arc<Partition>,
    ) -> std::result::Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        let name = reqwest::header::HeaderValue::from_str(node_id)
            .map_err(|err| format!("the node id {node_id:?} is not a valid header value: {err}"))?;
        headers.insert(NODE_HEADER, name);
        if let Some(token) = cluster_token {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|err| format!("the cluster token is not a valid header value: {err}"))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .default_headers(headers)
            .build()
            .map_err(|err| {
                format!(
                    "cannot build the replication HTTP client: {}",
                    describe(&err)
                )
            })?;
        let join = |url: &Url, path: &str| {
            url.join(path)
                .map_err(|err| format!("{url}{path} is not a URL: {err}"))
        };
        let followers: Vec<FollowerUrls> = followers
            .iter()
            .map(|url| {
                Ok(FollowerUrls {
                    stream: join(url, STREAM_PATH)?,
                    replicate: join(url, REPLICATE_PATH)?,
                    heartbeat: join(url, HEARTBEAT_PATH)?,
                    status: join(url, STATUS_PATH)?,
                    fence: join(url, FENCE_PATH)?,
                    transfer: join(url, TRANSFER_PATH)?,
                })
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(Self {
            client,
            streams: followers.iter().map(|_| Default::default()).collect(),
            followers,
            partition,
        })
    }

    /// The replication stream to `follower`: the open one, or a new one if it has ended or sat
    /// unused for [`IDLE`](super::stream::IDLE). `None` when the follower has no stream route
    /// (it runs an older version): its batches then go as JSON, and the stream is tried again
    /// after [`NO_STREAM_RETRY`]. Its caller bounds the time it takes, the wait for the lock
    /// included.
    async fn stream(&self, follower: FollowerIndex, url: Url) -> Result<Option<Arc<Stream>>> {
        let mut slot = self.streams[follower].lock().await;
        match &*slot {
            Slot::Open(stream) if stream.usable() => return Ok(Some(Arc::clone(stream))),
            Slot::Unsupported(since) if since.elapsed() < NO_STREAM_RETRY => return Ok(None),
            _ => *slot = Slot::Closed,
        }
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, STREAM_PROTOCOL);
        let response = self.send(follower, request).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            *slot = Slot::Unsupported(tokio::time::Instant::now());
            return Ok(None);
        }
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(refused(response).await);
        }
        let upgraded = (response.upgrade().await).map_err(|err| Failure::from_reqwest(&err))?;
        let stream = Arc::new(Stream::start(upgraded));
        *slot = Slot::Open(Arc::clone(&stream));
        Ok(Some(stream))
    }

    /// Ends `stream`, and forgets it if it is still `follower`'s: a batch on it took too long,
    /// so the ones behind it would wait as long. The next batch opens a new one.
    async fn drop_stream(&self, follower: FollowerIndex, stream: &Arc<Stream>) {
        stream.abort();
        let mut slot = self.streams[follower].lock().await;
        if matches!(&*slot, Slot::Open(open) if Arc::ptr_eq(open, stream)) {
            *slot = Slot::Closed;
        }
    }

    /// The URLs of peer `follower`; fails at once when the partition isolates it.
    fn urls(&self, follower: FollowerIndex) -> Result<&FollowerUrls> {
        if self.partition.isolates_peer(follower) {
            return Err(Failure::new(
                "partitioned",
                "this node is partitioned from that peer (DELETE /admin/partition heals it)",
            ));
        }
        self.followers
            .get(follower)
            .ok_or_else(|| Failure::new("other", format!("no follower number {follower}")))
    }

    /// Sends `request` to peer `follower` and reads its JSON answer.
    async fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        follower: FollowerIndex,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        read(self.send(follower, request).await?).await
    }

    /// Sends `request` to peer `follower`; resolves once the answer's head has arrived, and
    /// learns the peer's node id from it.
    async fn send(
        &self,
        follower: FollowerIndex,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|err| Failure::from_reqwest(&err))?;
        let named = response.headers().get(NODE_HEADER);
        if let Some(node_id) = named.and_then(|name| name.to_str().ok()) {
            self.partition.learn(follower, node_id);
        }
        Ok(response)
    }
}

impl Transport for HttpTransport {
    fn replicate(&self, follower: FollowerIndex, batch: Batch) -> BoxFuture<'_, Result<BatchAck>> {
        Box::pin(async move {
            let urls = self.urls(follower)?;
            let no_answer =
                || Failure::new("timeout", format!("no answer within {BATCH_TIMEOUT:?}"));
            // Each step has its deadline: the stream's lock and its opening, then the answer.
            let opened =
                tokio::time::timeout(BATCH_TIMEOUT, self.stream(follower, urls.stream.clone()));
            let opened = opened.await.map_err(|_| {
                Failure::new(
                    "timeout",
                    format!("the replication stream did not open within {BATCH_TIMEOUT:?}"),
                )
            })??;
            let Some(stream) = opened else {
                let request = self.client.post(urls.replicate.clone()).json(&batch);
                let answer = tokio::time::timeout(BATCH_TIMEOUT, self.exchange(follower, request));
                return answer.await.map_err(|_| no_answer())?;
            };
            match tokio::time::timeout(BATCH_TIMEOUT, stream.send(batch)).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.drop_stream(follower, &stream).await;
                    Err(no_answer())
                }
            }
        })
    }

    fn heartbeat(
        &self,
        follower: FollowerIndex,
        heartbeat: Heartbeat,
    ) -> BoxFuture<'_, Result<NodeStatus>> {
        Box::pin(async move {
            let url = self.urls(follower)?.heartbeat.clone();
            let request = self
                .client
                .post(url)
                .timeout(STATUS_TIMEOUT)
                .json(&heartbeat);
            self.exchange(follower, request).await
        })
    }

    fn status(&self, peer: FollowerIndex) -> BoxFuture<'_, Result<NodeStatus>> {
        Box::pin(async move {
            let url = self.urls(peer)?.status.clone();
            self.exchange(peer, self.client.get(url).timeout(STATUS_TIMEOUT))
                .await
        })
    }

    fn fence(&self, peer: FollowerIndex, fence: Fence) -> BoxFuture<'_, Result<FenceAck>> {
        Box::pin(async move {
            let url = self.urls(peer)?.fence.clone();
            let request = self.client.post(url).timeout(TRANSFER_TIMEOUT).json(&fence);
            let response = tokio::time::timeout(FENCE_ANSWER_TIMEOUT, self.send(peer, request))
                .await
                .map_err(|_| {
                    Failure::new(
                        "timeout",
                        format!("no answer began within {FENCE_ANSWER_TIMEOUT:?}"),
                    )
                })??;
            read(response).await
        })
    }

    fn transfer(
        &self,
        follower: FollowerIndex,
        transfer: StateTransfer,
    ) -> BoxFuture<'_, Result<TransferAck>> {
        Box::pin(async move {
            let url = self.urls(follower)?.transfer.clone();
            let request = self
                .client
                .post(url)
                .timeout(TRANSFER_TIMEOUT)
                .json(&transfer);
            self.exchange(follower, request).await
        })
    }
}

/// Reads an answer's JSON body. A 409 `not_synced` or `stale_term` and any other error status
/// become a [`Failure`] of their own kind ([`refusal`]).
async fn read<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(|err| {
            Failure::new("other", format!("unreadable answer: {}", describe(&err)))
        });
    }
    Err(refused(response).await)
}

/// The failure an answer that is not the one asked for means: its status and body, read by
/// [`refusal`].
async fn refused(response: reqwest::Response) -> Failure {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    refusal(status, &body)
}

/// The failure an error answer of a peer means: its status and JSON body (`{"error": code,
/// ...}`), as the peer's [`Error`](crate::error::Error) table wrote them. A `stale_term`
/// refusal names the newer term and its leader.
pub fn refusal(status: StatusCode, body: &str) -> Failure {
    let error: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let kind = match error["error"].as_str() {
        Some("not_synced") if status == StatusCode::CONFLICT => "not_synced",
        Some("stale_term") if status == StatusCode::CONFLICT => "stale_term",
        Some("term_taken") if status == StatusCode::CONFLICT => "term_taken",
        Some("partitioned") if status == StatusCode::SERVICE_UNAVAILABLE => "partitioned",
        // The peer requires another CLUSTER_TOKEN: a retry cannot change that either, but it
        // is named on its own, since a person must fix the configuration.
        _ if status == StatusCode::UNAUTHORIZED => "unauthorized",
        _ if status.is_client_error() => "refused",
        _ => "server_error",
    };
    let mut failure = Failure::new(kind, format!("HTTP {status}: {body}"));
    if kind == "stale_term" {
        let leader = error["leader"].as_str().map(str::to_owned);
        failure.newer_term = error["term"].as_u64().map(|term| (term, leader));
    }
    failure
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::wire::{EntryAck, Write};
    use crate::store::Version;

    /// A follower that runs a version without the stream route (a rolling upgrade) answers
    /// `POST /internal/stream` with a 404: it gets its batches as JSON, and the leader does not
    /// ask again for a while.
    #[tokio::test]
    async fn a_follower_without_the_stream_route_gets_its_batches_as_json() {
        let acks = |axum::Json(batch): axum::Json<Batch>| async move {
            axum::Json(BatchAck {
                node_id: "older".to_owned(),
                acks: (batch.writes.iter())
                    .map(|write| EntryAck {
                        version: write.version,
                        applied: true,
                        refused: None,
                    })
                    .collect(),
            })
        };
        let older = axum::Router::new().route(REPLICATE_PATH, axum::routing::post(acks));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let url = Url::parse(&format!(
            "http://{}/",
            listener.local_addr().expect("bound")
        ))
        .expect("a URL");
        tokio::spawn(async move { axum::serve(listener, older).await });
        let partition = Arc::new(Partition::new(std::slice::from_ref(&url)));
        let transport = HttpTransport::new(&[url], "leader", None, partition).expect("built");
        for counter in 1..=2 {
            let batch = Batch {
                term: 1,
                smallest_quorum: 1,
                quorum_epoch: 0,
                leader: 1,
                writes: vec![Arc::new(Write {
                    key: "k".to_owned(),
                    value: Some("v".to_owned()),
                    version: Version::new(1, counter),
                })],
            };
            let ack = transport.replicate(0, batch).await.expect("acked");
            assert_eq!(ack.node_id, "older");
            assert_eq!(ack.acks[0].version, Version::new(1, counter));
            let slot = transport.streams[0].lock().await;
            assert!(matches!(*slot, Slot::Unsupported(_)), "{slot:?}");
        }
    }
}
