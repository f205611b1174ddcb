//! A client of a node's public API, used by the command line and the benchmark. It reads the
//! same response types the server writes, so the two cannot drift apart. A request that only the
//! leader serves, sent to a follower, is answered `421 not_leader` with the leader's URL: the
//! client sends it again there, once, and sends its next requests there too.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::parse_base_url;
use crate::failover::Promotion;
use crate::partition::PartitionView;
use crate::protocol::{ClusterStatus, Health, ReadResponse, WriteResponse};
use crate::replication::FollowerView;
use crate::settings::{Settings, SettingsChange};
use crate::store::Version;

/// How long a probe (`health`) may take in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long any other request may take; a write can wait `REPLICATE_TIMEOUT_MS` for its quorum.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached, or did not answer in time.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL asked for.
        url: String,
        /// Why.
        reason: String,
        /// Whether the connection was refused or could not be made: nothing was sent, so the
        /// request can go to another node without being applied twice.
        #[source]
        not_sent: Option<NotSent>,
    },
    /// The node answered with an error (a JSON `{"error", "message"}` body).
    #[error("{code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code, e.g. `quorum_timeout`.
        code: String,
        /// The node's message.
        message: String,
        /// The whole error body.
        body: Value,
    },
    /// The node answered something that is not what the API promises.
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer {
        /// The URL asked for.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Why a request was never sent: its node could not be connected to.
#[derive(Debug, thiserror::Error)]
#[error("no connection could be made")]
pub struct NotSent;

/// How long a client with other nodes to ask ([`Client::with_nodes`]) looks for a leader when
/// its own is gone: long enough for an election (`FAILOVER_AFTER_MS`, 1.5 s by default, and
/// the election itself), or for a person's `failover`.
const FIND_LEADER_FOR: Duration = Duration::from_secs(15);
/// Pause between two rounds of asking the nodes for a leader.
const FIND_LEADER_EVERY: Duration = Duration::from_millis(250);

/// A client of one node, with pooled connections. Its clones share the node they talk to.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// The node's base URL: the one given, until a `421 not_leader` names the leader.
    base: Arc<RwLock<Url>>,
    /// The other nodes it asks for the leader when its node does not answer, or names no
    /// leader that does ([`Client::with_nodes`]).
    nodes: Arc<Vec<Url>>,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://localhost:8000`).
    pub fn new(base: Url) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|err| ClientError::Unreachable {
                url: base.to_string(),
                reason: format!("cannot build an HTTP client: {err}"),
                not_sent: None,
            })?;
        Ok(Self {
            http,
            base: Arc::new(RwLock::new(base)),
            nodes: Arc::new(Vec::new()),
        })
    }

    /// This client, which asks `nodes` (the cluster's nodes, e.g. the compose ports) for the
    /// leader when its node refuses the connection or names no leader that answers: after a
    /// failover, the request goes to the new leader by itself. It waits up to 15 s for one,
    /// and never resends a request that may have reached a node.
    pub fn with_nodes(mut self, nodes: Vec<Url>) -> Self {
        self.nodes = Arc::new(nodes);
        self
    }

    /// Asks every node for its `/health`, round after round for up to [`FIND_LEADER_FOR`], until
    /// one says it leads; `None` when none did.
    async fn find_leader(&self) -> Option<Url> {
        if self.nodes.is_empty() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + FIND_LEADER_FOR;
        loop {
            for node in self.nodes.iter() {
                let url = at(node, "/health");
                let request = self.http.get(url.clone()).timeout(PROBE_TIMEOUT);
                if let Ok(health) = read::<Health>(request, &url).await {
                    if health.role == "leader" {
                        return Some(node.clone());
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(FIND_LEADER_EVERY).await;
        }
    }

    /// The node's base URL: the one given, or the leader a follower sent this client to.
    pub fn base(&self) -> Url {
        self.base
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `PUT /kv/{key}`, with an optional quorum override.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        quorum: Option<usize>,
    ) -> Result<WriteResponse, ClientError> {
        let body = serde_json::json!({ "value": value });
        self.call(Method::PUT, |base| key_url(base, key, quorum), Some(&body))
            .await
    }

    /// `DELETE /kv/{key}`, with an optional quorum override.
    pub async fn delete(
        &self,
        key: &str,
        quorum: Option<usize>,
    ) -> Result<WriteResponse, ClientError> {
        self.call(Method::DELETE, |base| key_url(base, key, quorum), None)
            .await
    }

    /// `GET /kv/{key}`.
    pub async fn get(&self, key: &str) -> Result<ReadResponse, ClientError> {
        self.get_at_least(key, None).await
    }

    /// `GET /kv/{key}?min_version=V`: the value once the node holds version `V` of the key or
    /// a newer one (read-your-writes on a follower); `503 not_yet_replicated` if it did not get
    /// there within the node's default wait.
    pub async fn get_at_least(
        &self,
        key: &str,
        min_version: Option<Version>,
    ) -> Result<ReadResponse, ClientError> {
        let url = |base: &Url| {
            let mut url = key_url(base, key, None);
            if let Some(version) = min_version {
                url.query_pairs_mut()
                    .append_pair("min_version", &version.to_string());
            }
            url
        };
        self.call(Method::GET, url, None).await
    }

    /// `GET /dump`: the node's whole state.
    pub async fn dump(&self) -> Result<BTreeMap<String, String>, ClientError> {
        self.call(Method::GET, |base| at(base, "/dump"), None).await
    }

    /// `GET /cluster` on the leader.
    pub async fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        self.call(Method::GET, |base| at(base, "/cluster"), None)
            .await
    }

    /// `GET /admin/settings` on the leader: its live settings.
    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.call(Method::GET, |base| at(base, "/admin/settings"), None)
            .await
    }

    /// `PATCH /admin/settings` on the leader: changes the settings `change` names.
    pub async fn change_settings(&self, change: &SettingsChange) -> Result<Settings, ClientError> {
        let body = serde_json::to_value(change).unwrap_or_default();
        self.call(
            Method::PATCH,
            |base| at(base, "/admin/settings"),
            Some(&body),
        )
        .await
    }

    /// `POST /admin/followers/{follower}/cut` (`cut`) or `.../restore` on the leader.
    pub async fn cut_off(&self, follower: &str, cut: bool) -> Result<FollowerView, ClientError> {
        let url = |base: &Url| {
            let mut url = at(base, "/admin/followers");
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.extend([follower, if cut { "cut" } else { "restore" }]);
            }
            url
        };
        self.call(Method::POST, url, None).await
    }

    /// `POST /admin/partition` (the node drops its traffic with the peers named) or, with no
    /// peer named, `DELETE /admin/partition` (healed).
    pub async fn partition(&self, isolate: &[String]) -> Result<PartitionView, ClientError> {
        let url = |base: &Url| at(base, "/admin/partition");
        if isolate.is_empty() {
            return self.call(Method::DELETE, url, None).await;
        }
        let body = serde_json::json!({ "isolate": isolate });
        self.call(Method::POST, url, Some(&body)).await
    }

    /// `POST /admin/promote[?force=true]` on a follower: makes it the leader of a new term.
    pub async fn promote(&self, force: bool) -> Result<Promotion, ClientError> {
        let url = |base: &Url| {
            let mut url = at(base, "/admin/promote");
            if force {
                url.set_query(Some("force=true"));
            }
            url
        };
        self.call(Method::POST, url, None).await
    }

    /// `GET /health`, with a short timeout; an error unless the node reports "ok".
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = at(&self.base(), "/health");
        let request = self.http.get(url.clone()).timeout(PROBE_TIMEOUT);
        let health: Health = read(request, &url).await?;
        if health.status != "ok" {
            let reason = format!("status is {:?}", health.status);
            return Err(ClientError::BadAnswer {
                url: url.to_string(),
                reason,
            });
        }
        Ok(health)
    }

    /// Sends a request to the URL `url` makes of the base, and reads a `T`. When a follower
    /// answers `421 not_leader` naming another node, sends it there once more, and keeps that
    /// node as the base: a write refused by a follower was not applied, so sending it again is
    /// safe.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: impl Fn(&Url) -> Url,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let mut base = self.base();
        let mut answer = self.send(method.clone(), &url(&base), body).await;
        // A follower's 421 names its leader; a node that refused the connection, or a 421 that
        // names none (an election is on), sends the client to look for one among its nodes.
        // Three hops at most: a named leader that is gone, then the one found.
        for _ in 0..3 {
            let next = match &answer {
                Err(ClientError::Api {
                    status: 421,
                    code,
                    body: error,
                    ..
                }) if code == "not_leader" => match leader_named(error, &base) {
                    Some(leader) => Some(leader),
                    None => self.find_leader().await,
                },
                Err(ClientError::Unreachable {
                    not_sent: Some(_), ..
                }) => self.find_leader().await.filter(|leader| *leader != base),
                _ => None,
            };
            let Some(leader) = next else { break };
            *self.base.write().unwrap_or_else(PoisonError::into_inner) = leader.clone();
            base = leader;
            answer = self.send(method.clone(), &url(&base), body).await;
        }
        answer
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request, url).await
    }
}

/// The leader a `not_leader` error names, if it is a URL other than `base`.
fn leader_named(error: &Value, base: &Url) -> Option<Url> {
    let leader = parse_base_url(error["leader"].as_str()?).ok()?;
    (leader != *base).then_some(leader)
}

/// `path` on the node at `base`.
fn at(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url
}

/// `/kv/{key}` with the key percent-encoded as one path segment (it may contain `/`).
fn key_url(base: &Url, key: &str, quorum: Option<usize>) -> Url {
    let mut url = at(base, "/kv");
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.push(key);
    }
    if let Some(quorum) = quorum {
        url.query_pairs_mut()
            .append_pair("quorum", &quorum.to_string());
    }
    url
}

/// Sends a request and reads a `T`, or the API's JSON error.
async fn read<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &Url,
) -> Result<T, ClientError> {
    let unreachable = |err: reqwest::Error| ClientError::Unreachable {
        url: url.to_string(),
        reason: crate::replication::transport::describe(&err),
        not_sent: err.is_connect().then_some(NotSent),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(unreachable)?;
    let bad_answer = |reason: String| ClientError::BadAnswer {
        url: url.to_string(),
        reason,
    };
    if !status.is_success() {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| bad_answer(format!("HTTP {status} without a JSON error body")))?;
        let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
        return Err(ClientError::Api {
            status: status.as_u16(),
            code: text("error"),
            message: text("message"),
            body,
        });
    }
    serde_json::from_slice(&bytes).map_err(|err| bad_answer(err.to_string()))
}
