//! A local cluster: a leader and its followers as `semisync-kv serve` child processes on
//! loopback, each bound to port 0 and read back from its "listening" log line. Used by
//! `semisync-kv bench --local` and by the cluster tests. Dropping a node kills its process.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use crate::settings::Settings;

/// How long a node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a local cluster.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    /// Number of followers.
    pub followers: usize,
    /// The leader's live settings at start.
    pub settings: Settings,
    /// The `CLUSTER_TOKEN` of every node, if any.
    pub cluster_token: Option<String>,
    /// More environment variables for the leader, e.g. `REPLICATION_BACKLOG`.
    pub leader_env: Vec<(String, String)>,
    /// The nodes' `RUST_LOG` filter (the start-up line is always logged).
    pub log_filter: String,
    /// Whether every node also speaks RESP (`RESP_LISTEN_ADDR`, on a port of its own).
    pub resp: bool,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            followers: 5,
            settings: Settings::DEFAULT,
            cluster_token: None,
            leader_env: Vec::new(),
            log_filter: "info".into(),
            resp: false,
        }
    }
}

/// One node process.
#[derive(Debug)]
pub struct LocalNode {
    /// The node's id (`NODE_ID`).
    pub id: String,
    /// Where its public API listens.
    pub addr: SocketAddr,
    /// Where its internal API listens.
    pub internal_addr: Option<SocketAddr>,
    /// Where its RESP listener listens, if it has one.
    pub resp_addr: Option<SocketAddr>,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log_filter: String,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl LocalNode {
    /// Starts `binary serve` with `env`, logging with the `RUST_LOG` filter `log_filter`, and
    /// waits until it listens.
    pub fn start(
        binary: &Path,
        id: &str,
        env: Vec<(String, String)>,
        log_filter: &str,
    ) -> io::Result<Self> {
        let mut node = Self {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal_addr: None,
            resp_addr: None,
            binary: binary.to_owned(),
            env,
            log_filter: log_filter.to_owned(),
            child: None,
            log: Arc::default(),
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NODE_ID", &self.id)
            // The "listening" line tells the address, whatever the filter asked for.
            .env(
                "RUST_LOG",
                format!("{},semisync_kv::server=info", self.log_filter),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr pipe"))?;
        let (addr_tx, addr_rx) = mpsc::channel();
        let log = Arc::clone(&self.log);
        // Keeps draining the node's stderr, so that a chatty node never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let field = |name: &str| {
                        let value = line.split(&format!(" {name}=")).nth(1)?;
                        value.split_whitespace().next().map(str::to_owned)
                    };
                    if let Some(addr) = field("addr") {
                        let _ = addr_tx.send((addr, field("internal_addr"), field("resp_addr")));
                    }
                }
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let addrs = addr_rx
            .recv_timeout(START_TIMEOUT)
            .ok()
            .and_then(|(addr, internal, resp)| {
                Some((
                    addr.parse().ok()?,
                    internal.and_then(|internal| internal.parse().ok()),
                    resp.and_then(|resp| resp.parse().ok()),
                ))
            });
        let Some((addr, internal_addr, resp_addr)) = addrs else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "node {} did not start listening; its log:\n{}",
                self.id,
                self.log_text()
            )));
        };
        self.addr = addr;
        self.internal_addr = internal_addr;
        self.resp_addr = resp_addr;
        // A restart reuses the addresses: the leader knows its followers by URL.
        self.env.retain(|(k, _)| {
            k != "LISTEN_ADDR" && k != "INTERNAL_LISTEN_ADDR" && k != "RESP_LISTEN_ADDR"
        });
        self.env.push(("LISTEN_ADDR".into(), addr.to_string()));
        if let Some(internal) = internal_addr {
            self.env
                .push(("INTERNAL_LISTEN_ADDR".into(), internal.to_string()));
        }
        if let Some(resp) = resp_addr {
            self.env.push(("RESP_LISTEN_ADDR".into(), resp.to_string()));
        }
        self.child = Some(child);
        Ok(())
    }

    /// The node's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of the node's internal API.
    pub fn internal_url(&self) -> Option<String> {
        self.internal_addr.map(|addr| format!("http://{addr}"))
    }

    /// The process id, while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and not yet seen to exit.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL) and waits for it; the node's memory is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again, empty, on the same address.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Everything the node logged so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A leader and its followers on loopback.
#[derive(Debug)]
pub struct LocalCluster {
    /// The leader.
    pub leader: LocalNode,
    /// The followers, `follower1` first.
    pub followers: Vec<LocalNode>,
}

impl LocalCluster {
    /// Starts the followers, then the leader, from `binary` (a `semisync-kv` executable). Every
    /// node knows every other one (`PEERS`) and its own public URL (`PUBLIC_URL`), so that any
    /// follower can be promoted.
    ///
    /// Each node's ports are chosen before it starts, since every node names the others': another
    /// process may take one in between (a test's outgoing connection draws from the same ports).
    /// A node that then cannot listen says so, and the whole cluster starts again on new ports,
    /// up to three times.
    pub fn start(binary: &Path, settings: &LocalSettings) -> io::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(binary, settings) {
                Err(err) if attempt < 3 && err.to_string().contains("Address already in use") => {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_once(binary: &Path, settings: &LocalSettings) -> io::Result<Self> {
        // Every address is chosen first, since each node names the others'. Holding all the
        // listeners at once makes the ports distinct.
        let nodes = settings.followers + 1;
        let listeners = (0..2 * nodes)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()?;
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        drop(listeners);
        let (public, internal) = addrs.split_at(nodes);
        let token = settings
            .cluster_token
            .clone()
            .map(|token| ("CLUSTER_TOKEN".to_owned(), token));
        // Node 0 is the leader, node i the follower i.
        let env_of = |node: usize, role: &str| {
            let peers: Vec<String> = (0..nodes)
                .filter(|&other| other != node)
                .map(|other| format!("http://{}", internal[other]))
                .collect();
            let mut env: Vec<(String, String)> = vec![
                ("ROLE".into(), role.into()),
                ("LISTEN_ADDR".into(), public[node].to_string()),
                ("INTERNAL_LISTEN_ADDR".into(), internal[node].to_string()),
                ("PUBLIC_URL".into(), format!("http://{}", public[node])),
                ("PEERS".into(), peers.join(",")),
            ];
            env.extend(
                (settings.settings.env().into_iter()).map(|(name, value)| (name.to_owned(), value)),
            );
            env.extend(token.clone());
            if settings.resp {
                env.push(("RESP_LISTEN_ADDR".into(), "127.0.0.1:0".into()));
            }
            env
        };
        let followers = (1..nodes)
            .map(|i| {
                let mut env = env_of(i, "follower");
                env.push(("LEADER_URL".into(), format!("http://{}", public[0])));
                LocalNode::start(binary, &format!("follower{i}"), env, &settings.log_filter)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut env = env_of(0, "leader");
        env.extend(settings.leader_env.iter().cloned());
        let leader = LocalNode::start(binary, "leader", env, &settings.log_filter)?;
        Ok(Self { leader, followers })
    }
}
