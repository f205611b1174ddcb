//! semisync-kv: a single-leader, semi-synchronously replicated in-memory key-value store, built to
//! learn, demonstrate and measure replication.
//!
//! The leader assigns every write a version, applies it, and fans it out to every follower with a
//! simulated network lag per message; once a message's lag has passed it joins its follower's
//! pipeline, which sends everything then due in one batch. The leader answers once
//! `WRITE_QUORUM` followers have acknowledged, or with 503 after `REPLICATE_TIMEOUT_MS`, while
//! replication to the rest goes on. Followers keep the newest version of each key, so they
//! converge on the leader's state whatever order messages arrive in.
//!
//! # Layout
//! - [`store`]: the versioned map with tombstones; pure and synchronous. Start reading here.
//! - [`version`]: a write's version, `term.counter`, ordered by term first.
//! - [`replication`]: the leader's side of replication, one module per concern: the wire
//!   format, each follower's link and pipeline, the quorum wait, the lag clock, the transport.
//! - [`settings`]: the leader's live settings (quorum, lag, timeout) and their validation.
//! - [`events`]: the leader's live feed of replication events, which the dashboard animates.
//! - [`recovery`]: heartbeats, and state transfers to followers that fell behind.
//! - [`failover`]: terms, fencing, and how a node becomes the leader without losing an
//!   acknowledged write (a leader's start, a promotion).
//! - [`node`]: one node as logic with no HTTP in it: its replica and role, the follower's side of
//!   each message, reads and the leader's write path, start-up and promotion.
//! - [`api`]: the axum routers (public routes, the dashboard and admin routes, internal routes),
//!   their extractors, and the lingering close of early answers; each handler calls the node.
//! - [`resp`]: the RESP front end (Redis's protocol, for `redis-cli` and Redis clients): its
//!   wire format, its commands, and its listener; each command calls the node, as a handler does.
//! - [`protocol`]: the public routes' answers, shared by the server and the client.
//! - [`sim`]: the deterministic simulator: six real nodes in one process on a fake network, a
//!   nemesis, and the checkers (`semisync-kv simulate`).
//! - [`signal`]: a value tasks wait on, waking them in a fixed order (a replayable watch).
//! - [`entropy`]: what a run depends on besides its input: every random choice a node makes,
//!   from one seedable generator, and the wall clock; the simulator replaces both.
//! - [`error`]: the request error enum and its HTTP status table, and why a node cannot start.
//! - [`config`]: settings from flags and environment variables, and their validation.
//! - [`server`]: binding, serving until shutdown, and the shutdown signal.
//! - [`client`]: a client of the public API, for the command line and the benchmark.
//! - [`cli`]: the command line's client commands (`put`, `get`, `status`, ...).
//! - `bench` (feature `bench`, on by default): the benchmark and its charts.
//! - [`metrics`]: Prometheus metrics for `GET /metrics`.
//! - [`partition`]: the lab's fault injection, a network partition between named nodes.
//! - [`local`]: a local cluster of node processes on loopback, for the benchmark and the tests.

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod entropy;
pub mod error;
pub mod events;
pub mod failover;
pub mod local;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod protocol;
pub mod recovery;
pub mod replication;
pub mod resp;
pub mod server;
pub mod settings;
pub mod signal;
pub mod sim;
pub mod store;
pub mod version;

pub use config::{Config, Role};
pub use error::{Error, Result};
pub use replication::Replicator;
pub use store::{Entry, Store, Version};
