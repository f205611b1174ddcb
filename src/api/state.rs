//! What every handler reaches: the node, and the limits of its HTTP listeners.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::error::{Error, StartError};
use crate::node::Node;
use crate::node::kv::MAX_KEY_BYTES;

/// Event streams (the dashboard's) open at once; more are refused with `503 overloaded`.
pub(super) const MAX_EVENT_STREAMS: usize = 32;
/// Replication streams open at once: one per leader that reaches this node, and a few more while
/// a broken one closes. More are refused with `503 overloaded`.
pub(super) const MAX_REPLICATION_STREAMS: usize = 32;

/// The node behind the routers, and what only HTTP needs: the cluster token and the request
/// limits. Dereferences to the [`Node`].
#[derive(Clone, Debug)]
pub struct AppState {
    node: Arc<Node>,
    http: Arc<Http>,
}

/// The HTTP layer's own configuration.
#[derive(Debug)]
pub(super) struct Http {
    pub(super) max_value_bytes: usize,
    pub(super) cluster_token: Option<String>,
    pub(super) request_timeout: Duration,
    pub(super) max_concurrent_requests: usize,
    /// Bounds the dashboard's event streams.
    pub(super) event_streams: Arc<Semaphore>,
    /// Bounds the replication streams.
    pub(super) replication_streams: Arc<Semaphore>,
    /// Turns true when the node stops: what ends the connections that outlive a request (the
    /// replication streams) and the listeners.
    stop: watch::Sender<bool>,
}

impl AppState {
    /// The state of a node configured by `config`, with an empty store: the one place the
    /// library checks a configuration ([`Config::validate`]) and reads the cluster token. A node
    /// leads only after [`Node::start`].
    pub fn new(config: &Config) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let cluster_token = config.read_cluster_token().map_err(StartError::Config)?;
        let node = Node::from_config(config, cluster_token.as_deref())?;
        Ok(Self {
            node: Arc::new(node),
            http: Arc::new(Http {
                max_value_bytes: config.max_value_bytes,
                cluster_token,
                request_timeout: config.request_timeout(),
                max_concurrent_requests: config.max_concurrent_requests,
                event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
                replication_streams: Arc::new(Semaphore::new(MAX_REPLICATION_STREAMS)),
                stop: watch::channel(false).0,
            }),
        })
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The HTTP layer's configuration.
    pub(super) fn http(&self) -> &Http {
        &self.http
    }

    /// Tells the node's listeners and long-lived connections to stop.
    pub fn stop(&self) {
        self.http.stop.send_replace(true);
    }

    /// Turns true once [`AppState::stop`] was called.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.http.stop.subscribe()
    }

    /// Whether internal requests must carry the cluster token.
    pub fn has_cluster_token(&self) -> bool {
        self.http.cluster_token.is_some()
    }

    /// `REQUEST_TIMEOUT_MS`, in milliseconds.
    pub(super) fn request_timeout_ms(&self) -> u64 {
        self.http.request_timeout.as_millis() as u64
    }

    /// Largest body a request may carry: a value of `MAX_VALUE_BYTES` with every byte escaped by
    /// JSON as `\u00XX` (six bytes), plus room for the key and the field names.
    pub(super) fn body_limit(&self) -> usize {
        self.http
            .max_value_bytes
            .saturating_mul(6)
            .saturating_add(MAX_KEY_BYTES * 6 + 1024)
    }

    /// Refuses a value larger than `MAX_VALUE_BYTES`.
    pub(super) fn check_value(&self, value: Option<&str>) -> Result<(), Error> {
        match value {
            Some(value) if value.len() > self.http.max_value_bytes => Err(Error::PayloadTooLarge {
                what: "value",
                limit: self.http.max_value_bytes,
            }),
            _ => Ok(()),
        }
    }
}

impl Deref for AppState {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}
