//! A client of a node's public API, used by the command line and the benchmark. It reads the
//! same response types the server writes, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{ClusterStatus, Health, ReadResponse, WriteResponse};
use crate::replication::FollowerView;
use crate::settings::{Settings, SettingsChange};

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

/// A client of one node, with pooled connections.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://localhost:8000`).
    pub fn new(base: Url) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, base }
    }

    /// The node's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `PUT /kv/{key}`, with an optional quorum override.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        quorum: Option<usize>,
    ) -> Result<WriteResponse, ClientError> {
        let body = serde_json::json!({ "value": value });
        self.call(Method::PUT, &self.key_url(key, quorum), Some(&body))
            .await
    }

    /// `DELETE /kv/{key}`, with an optional quorum override.
    pub async fn delete(
        &self,
        key: &str,
        quorum: Option<usize>,
    ) -> Result<WriteResponse, ClientError> {
        self.call(Method::DELETE, &self.key_url(key, quorum), None)
            .await
    }

    /// `GET /kv/{key}`.
    pub async fn get(&self, key: &str) -> Result<ReadResponse, ClientError> {
        self.call(Method::GET, &self.key_url(key, None), None).await
    }

    /// `GET /dump`: the node's whole state.
    pub async fn dump(&self) -> Result<BTreeMap<String, String>, ClientError> {
        self.call(Method::GET, &self.url("/dump"), None).await
    }

    /// `GET /cluster` on the leader.
    pub async fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        self.call(Method::GET, &self.url("/cluster"), None).await
    }

    /// `GET /admin/settings` on the leader: its live settings.
    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.call(Method::GET, &self.url("/admin/settings"), None)
            .await
    }

    /// `PATCH /admin/settings` on the leader: changes the settings `change` names.
    pub async fn change_settings(&self, change: &SettingsChange) -> Result<Settings, ClientError> {
        let body = serde_json::to_value(change).unwrap_or_default();
        self.call(Method::PATCH, &self.url("/admin/settings"), Some(&body))
            .await
    }

    /// `POST /admin/followers/{follower}/cut` (`cut`) or `.../restore` on the leader.
    pub async fn cut_off(&self, follower: &str, cut: bool) -> Result<FollowerView, ClientError> {
        let mut url = self.url("/admin/followers");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend([follower, if cut { "cut" } else { "restore" }]);
        }
        self.call(Method::POST, &url, None).await
    }

    /// `GET /health`, with a short timeout; an error unless the node reports "ok".
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = self.url("/health");
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

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    /// `/kv/{key}` with the key percent-encoded as one path segment (it may contain `/`).
    fn key_url(&self, key: &str, quorum: Option<usize>) -> Url {
        let mut url = self.url("/kv");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(key);
        }
        if let Some(quorum) = quorum {
            url.query_pairs_mut()
                .append_pair("quorum", &quorum.to_string());
        }
        url
    }

    async fn call<T: DeserializeOwned>(
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

/// Sends a request and reads a `T`, or the API's JSON error.
async fn read<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &Url,
) -> Result<T, ClientError> {
    let unreachable = |err: reqwest::Error| ClientError::Unreachable {
        url: url.to_string(),
        reason: crate::replication::transport::describe(&err),
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
