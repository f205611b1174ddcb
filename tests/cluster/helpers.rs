//! `TestCluster`: a [`LocalCluster`] (a leader and its followers as real `semisync-kv serve`
//! processes on loopback, bound to port 0) with the requests and polls the tests need. Dropping
//! it kills every node.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use futures::future::join_all;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use semisync_kv::local::{LocalCluster, LocalNode, LocalSettings};
use semisync_kv::settings::Settings;
use serde_json::Value;
use tokio::time::Instant;

use crate::common;
pub use crate::common::{eventually, send};

/// The cluster token of the test clusters.
pub const CLUSTER_TOKEN: &str = "test-cluster-token";

/// A test cluster: the token, and the live settings of [`base`] unless a test sets its own.
pub fn settings() -> LocalSettings {
    LocalSettings {
        settings: base(),
        cluster_token: Some(CLUSTER_TOKEN.into()),
        ..LocalSettings::default()
    }
}

/// A test cluster whose writes wait for `write_quorum` acks.
pub fn with_quorum(write_quorum: usize) -> LocalSettings {
    LocalSettings {
        settings: Settings {
            write_quorum,
            ..base()
        },
        ..settings()
    }
}

/// The live settings of a test cluster: quick lag, and a quorum timeout long enough for a
/// loaded machine.
pub fn base() -> Settings {
    Settings {
        max_delay_ms: 20,
        ..Settings::DEFAULT
    }
}

/// Signals and exit checks on a node process.
pub trait NodeExt {
    /// Sends `signal` to the node's process.
    fn signal(&self, signal: Signal);
    /// Polls until the process has exited, up to `within`; returns its exit status.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus>;
}

impl NodeExt for LocalNode {
    fn signal(&self, signal: Signal) {
        let pid = self.pid().expect("node is running");
        kill(Pid::from_raw(pid as i32), signal).expect("send signal");
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// A leader and its followers, and an HTTP client to talk to them. When a test fails, the
/// nodes' logs are printed.
pub struct TestCluster {
    pub leader: LocalNode,
    pub followers: Vec<LocalNode>,
    pub http: reqwest::Client,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in std::iter::once(&self.leader).chain(&self.followers) {
                eprintln!("----- log of {} -----\n{}", node.id, node.log_text());
            }
        }
    }
}

impl TestCluster {
    pub fn start(settings: LocalSettings) -> Self {
        let cluster = LocalCluster::start(Path::new(env!("CARGO_BIN_EXE_semisync-kv")), &settings)
            .expect("start a local cluster");
        // No idle connections kept: a pooled connection to a node that a test killed would
        // fail the next request that reuses it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        Self {
            leader: cluster.leader,
            followers: cluster.followers,
            http,
        }
    }

    /// Starts a cluster and waits until the leader has brought every follower up (followers
    /// refuse writes until the leader's first state transfer).
    pub async fn start_up(settings: LocalSettings) -> Self {
        let cluster = Self::start(settings);
        for i in 0..cluster.followers.len() {
            cluster
                .wait_follower(i, "up", Duration::from_secs(10))
                .await;
        }
        cluster
    }

    /// PUT `value` at `key` on the leader, with an optional quorum override.
    pub async fn put(&self, key: &str, value: &str, quorum: Option<usize>) -> (StatusCode, Value) {
        common::put(&self.http, &self.leader.url(), key, value, quorum).await
    }

    /// PUT with quorum 1, taking owned strings (for building many writes at once).
    pub async fn put_q1(&self, key: String, value: String) -> (StatusCode, Value) {
        self.put(&key, &value, Some(1)).await
    }

    /// DELETE `key` on the leader, with an optional quorum override.
    pub async fn delete(&self, key: &str, quorum: Option<usize>) -> (StatusCode, Value) {
        let query = quorum
            .map(|quorum| format!("?quorum={quorum}"))
            .unwrap_or_default();
        send(
            self.http
                .delete(format!("{}/kv/{key}{query}", self.leader.url())),
        )
        .await
    }

    /// GET `path` on the node at `base`.
    pub async fn get(&self, base: &str, path: &str) -> (StatusCode, Value) {
        send(self.http.get(format!("{base}{path}"))).await
    }

    /// Waits until the leader has applied the cluster's first write (its `/health` says version
    /// 1.1): a write that cannot reach its quorum is then in flight.
    pub async fn first_write_applied(&self) {
        eventually(Duration::from_secs(5), || async {
            let (_, health) = self.get(&self.leader.url(), "/health").await;
            if health["version"] == "1.1" {
                Ok(())
            } else {
                Err(format!("not yet applied: {health}"))
            }
        })
        .await
        .expect("the write is in flight");
    }

    /// The leader's `GET /cluster`.
    pub async fn cluster_status(&self) -> Value {
        let (status, body) = self.get(&self.leader.url(), "/cluster").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls `/cluster` until follower `i` (0-based) is in `state` (`up`, `down`, `catching_up`).
    pub async fn wait_follower(&self, i: usize, state: &str, within: Duration) -> Value {
        let id = &self.followers[i].id;
        eventually(within, || async {
            let follower = common::follower_status(&self.http, &self.leader.url(), id).await;
            if follower["state"] == state {
                Ok(follower)
            } else {
                Err(format!("{id} is not {state}: {follower}"))
            }
        })
        .await
        .expect("follower state")
    }

    /// Polls the leader's `/health` until it says why it does not lead (`waiting`: started with
    /// `ROLE=leader`, it could not take over safely), up to `within`; returns that `/health`.
    pub async fn leader_waiting(&self, within: Duration) -> Value {
        let leader = self.leader.url();
        eventually(within, || async {
            let (status, health) = self.get(&leader, "/health").await;
            match health["waiting"].as_str() {
                Some(_) => Ok(health),
                None => Err(format!("not waiting: {status} {health}")),
            }
        })
        .await
        .expect("the restarted leader says why it does not lead")
    }

    /// A node's `/dump`, or `None` when it does not answer.
    pub async fn dump(&self, base: &str) -> Option<BTreeMap<String, String>> {
        common::dump(&self.http, base).await
    }

    /// Polls until every running follower's `/dump` equals the leader's, up to `within`.
    pub async fn converged(&self, within: Duration) -> Result<BTreeMap<String, String>, String> {
        let running: Vec<(String, String)> = self
            .followers
            .iter()
            .filter(|follower| follower.is_running())
            .map(|follower| (follower.id.clone(), follower.url()))
            .collect();
        common::converged(&self.http, &self.leader.url(), &running, within).await
    }
}

/// Runs the `semisync-kv` binary with `args`; returns its exit code, stdout and stderr.
pub fn semisync_kv(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_semisync-kv"))
        .args(args)
        .output()
        .expect("run semisync-kv");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(output.stdout),
        text(output.stderr),
    )
}

/// `semisync-kv partition --node URL... PEER...` (or `--heal`); returns its stdout.
pub fn partition(nodes: &[String], peers: &[&str]) -> String {
    let mut args = vec!["partition"];
    for node in nodes {
        args.extend(["--node", node]);
    }
    if peers.is_empty() {
        args.push("--heal");
    }
    args.extend(peers);
    let (code, stdout, stderr) = semisync_kv(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    stdout
}

/// Writes `count` keys `prefix0..` on the leader, `concurrency` at a time, with quorum 1; returns
/// the versions of the writes that were acknowledged.
pub async fn write_many(
    cluster: &TestCluster,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Vec<semisync_kv::Version> {
    let mut versions = Vec::new();
    let keys: Vec<usize> = (0..count).collect();
    for chunk in keys.chunks(concurrency) {
        let writes = chunk
            .iter()
            .map(|i| cluster.put_q1(format!("{prefix}{i}"), format!("v{i}")));
        for (status, body) in join_all(writes).await {
            if status == StatusCode::OK {
                versions.push(crate::common::version(&body));
            } else {
                // Shown with the test's output when it fails: why the write did not count.
                eprintln!("write_many: {status} {body}");
            }
        }
    }
    versions
}
