//! `TestCluster`: a leader and its followers as real `semisync-kv serve` processes on loopback,
//! each bound to port 0 and read back from its "listening" log line. Dropping the cluster kills
//! every node.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;

pub use crate::common::{eventually, send};
use serde_json::Value;
use tokio::time::Instant;

/// Lag and timeout settings of a test cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    pub followers: usize,
    pub write_quorum: usize,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub replicate_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            followers: 5,
            write_quorum: 3,
            min_delay_ms: 0,
            max_delay_ms: 20,
            replicate_timeout_ms: 5000,
        }
    }
}

/// One node process.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `semisync-kv serve` with `env` and waits for it to listen.
    fn start(id: &str, env: Vec<(String, String)>) -> Self {
        let mut node = Self {
            id: id.to_owned(),
            addr: ([127, 0, 0, 1], 0).into(),
            env,
            child: None,
            log: Arc::default(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_semisync-kv"))
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NODE_ID", &self.id)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start semisync-kv");
        let stderr = child.stderr.take().expect("piped stderr");
        let (addr_tx, addr_rx) = mpsc::channel();
        let log = Arc::clone(&self.log);
        // Keeps draining the node's stderr, so that a chatty node never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next());
                    if let Some(addr) = addr {
                        let _ = addr_tx.send(addr.to_owned());
                    }
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "node {} did not start listening; log:\n{}",
                    self.id,
                    self.log_text()
                )
            });
        self.addr = addr.parse().expect("listening address");
        // Restart on the same port: the leader knows its followers by URL.
        self.env.retain(|(k, _)| k != "LISTEN_ADDR");
        self.env.push(("LISTEN_ADDR".into(), self.addr.to_string()));
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("node is running").id() as i32)
    }

    /// Sends `signal` to the node's process.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("send signal");
    }

    /// Kills the node (SIGKILL) and waits for it; its memory is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again, empty, on the same address.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Polls until the process has exited, up to `deadline`; returns its exit status.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.id, self.log_text());
        }
    }
}

/// A leader and its followers.
pub struct TestCluster {
    pub leader: Node,
    pub followers: Vec<Node>,
    pub http: reqwest::Client,
}

impl TestCluster {
    pub fn start(settings: Settings) -> Self {
        Self::start_with(settings, &[])
    }

    /// Starts a cluster whose leader also gets the environment variables `leader_env`.
    pub fn start_with(settings: Settings, leader_env: &[(&str, &str)]) -> Self {
        // The followers name the leader in their errors, so its port is chosen first.
        let leader_addr = free_port();
        let followers: Vec<Node> = (1..=settings.followers)
            .map(|i| {
                Node::start(
                    &format!("follower{i}"),
                    vec![
                        ("ROLE".into(), "follower".into()),
                        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
                        ("LEADER_URL".into(), format!("http://{leader_addr}")),
                    ],
                )
            })
            .collect();
        let follower_urls: Vec<String> = followers.iter().map(Node::url).collect();
        let mut env: Vec<(String, String)> = vec![
            ("ROLE".into(), "leader".into()),
            ("LISTEN_ADDR".into(), leader_addr.to_string()),
            ("FOLLOWERS".into(), follower_urls.join(",")),
            ("WRITE_QUORUM".into(), settings.write_quorum.to_string()),
            ("MIN_DELAY_MS".into(), settings.min_delay_ms.to_string()),
            ("MAX_DELAY_MS".into(), settings.max_delay_ms.to_string()),
            (
                "REPLICATE_TIMEOUT_MS".into(),
                settings.replicate_timeout_ms.to_string(),
            ),
        ];
        env.extend(
            leader_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let leader = Node::start("leader", env);
        // No idle connections kept: a pooled connection to a node that a test killed would
        // fail the next request that reuses it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        Self {
            leader,
            followers,
            http,
        }
    }

    /// PUT `value` at `key` on the leader, with an optional quorum override.
    pub async fn put(&self, key: &str, value: &str, quorum: Option<usize>) -> (StatusCode, Value) {
        let url = write_url(&self.leader.url(), key, quorum);
        let body = serde_json::json!({ "value": value });
        send(self.http.put(url).json(&body)).await
    }

    /// PUT with quorum 1, taking owned strings (for building many writes at once).
    pub async fn put_q1(&self, key: String, value: String) -> (StatusCode, Value) {
        self.put(&key, &value, Some(1)).await
    }

    /// DELETE `key` on the leader, with an optional quorum override.
    pub async fn delete(&self, key: &str, quorum: Option<usize>) -> (StatusCode, Value) {
        send(self.http.delete(write_url(&self.leader.url(), key, quorum))).await
    }

    /// GET `path` on the node at `base`.
    pub async fn get(&self, base: &str, path: &str) -> (StatusCode, Value) {
        send(self.http.get(format!("{base}{path}"))).await
    }

    /// The leader's `GET /cluster`.
    pub async fn cluster_status(&self) -> Value {
        let (status, body) = self.get(&self.leader.url(), "/cluster").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls `/cluster` until follower `i` (0-based) is in `state` (`up`, `down`, `catching_up`).
    pub async fn wait_follower(&self, i: usize, state: &str, within: Duration) -> Value {
        eventually(within, || async {
            let cluster = self.cluster_status().await;
            let follower = cluster["followers"][i].clone();
            if follower["state"] == state {
                Ok(follower)
            } else {
                Err(format!(
                    "{} is not {state}: {follower}",
                    self.followers[i].id
                ))
            }
        })
        .await
        .expect("follower state")
    }

    /// A node's `/dump`, or `None` when it does not answer.
    pub async fn dump(&self, base: &str) -> Option<BTreeMap<String, String>> {
        let response = self.http.get(format!("{base}/dump")).send().await.ok()?;
        response.json().await.ok()
    }

    /// Polls until every running follower's `/dump` equals the leader's, up to `within`.
    pub async fn converged(&self, within: Duration) -> Result<BTreeMap<String, String>, String> {
        eventually(within, || async {
            let leader = self
                .dump(&self.leader.url())
                .await
                .ok_or("leader does not answer")?;
            for follower in self.followers.iter().filter(|f| f.child.is_some()) {
                let dump = self.dump(&follower.url()).await;
                if dump.as_ref() != Some(&leader) {
                    return Err(format!(
                        "{} differs from the leader:\n  leader:   {leader:?}\n  follower: {dump:?}",
                        follower.id
                    ));
                }
            }
            Ok(leader)
        })
        .await
    }
}

fn write_url(base: &str, key: &str, quorum: Option<usize>) -> String {
    match quorum {
        Some(quorum) => format!("{base}/kv/{key}?quorum={quorum}"),
        None => format!("{base}/kv/{key}"),
    }
}

/// A loopback address that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}
