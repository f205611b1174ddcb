//! The cluster under test (clients of its leader and followers, and the local cluster the
//! benchmark may have started), and the outcomes of the writes sent to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::Url;
use tokio::time::Instant;

use super::args::BenchArgs;
use super::feed::Answered;
use crate::client::Client;
use crate::local::{LocalCluster, LocalSettings};
use crate::protocol::ClusterStatus;
use crate::replication::FollowerState;
use crate::settings::Settings;
use crate::store::Version;

/// The cluster under test: clients of its leader and followers, and the local cluster when the
/// benchmark started one (stopped when this is dropped).
pub(super) struct Target {
    pub(super) leader: Client,
    pub(super) followers: Vec<Client>,
    pub(super) local: Option<LocalCluster>,
}

impl Target {
    /// The local cluster leader's RESP listener, when it has one.
    pub(super) fn resp_addr(&self) -> Option<std::net::SocketAddr> {
        self.local.as_ref()?.leader.resp_addr
    }

    /// Sets the leader's live write quorum.
    pub(super) async fn set_write_quorum(&self, write_quorum: usize) -> Result<(), String> {
        let change = crate::settings::SettingsChange {
            write_quorum: Some(write_quorum),
            ..Default::default()
        };
        (self.leader.change_settings(&change).await)
            .map(|_| ())
            .map_err(|err| format!("cannot set the write quorum to {write_quorum}: {err}"))
    }

    /// The cluster under test with its leader's status; a local cluster of its own (with the
    /// given lag) once every follower is up, since followers take writes only after the
    /// leader's first state transfer.
    pub(super) async fn connect(
        args: &BenchArgs,
        min_delay_ms: u64,
        max_delay_ms: u64,
    ) -> Result<(Self, ClusterStatus), String> {
        let target = Self::new(args, min_delay_ms, max_delay_ms)?;
        if args.local {
            target.wait_all_up().await?;
        }
        let status = target
            .leader
            .cluster()
            .await
            .map_err(|err| err.to_string())?;
        Ok((target, status))
    }

    pub(super) fn new(
        args: &BenchArgs,
        min_delay_ms: u64,
        max_delay_ms: u64,
    ) -> Result<Self, String> {
        if !args.local {
            let client = |url: &Url| Client::new(url.clone()).map_err(|err| err.to_string());
            // After a failover, the leader's client finds the new leader among all the nodes.
            let nodes = std::iter::once(&args.leader)
                .chain(&args.followers)
                .cloned();
            return Ok(Self {
                leader: client(&args.leader)?.with_nodes(nodes.collect()),
                followers: args
                    .followers
                    .iter()
                    .map(client)
                    .collect::<Result<_, _>>()?,
                local: None,
            });
        }
        let binary = std::env::current_exe().map_err(|err| format!("cannot find myself: {err}"))?;
        let settings = LocalSettings {
            followers: args.local_followers,
            settings: Settings {
                write_quorum: 1,
                min_delay_ms,
                max_delay_ms,
                replicate_timeout_ms: args.timeout_ms,
                wait_point: args.wait_point,
                auto_failover: false,
            },
            cluster_token: None,
            leader_env: Vec::new(),
            log_filter: "warn".into(),
            // The comparison with Redis drives it with Redis's own protocol too.
            resp: args.versus_redis,
        };
        let cluster = LocalCluster::start(&binary, &settings)
            .map_err(|err| format!("cannot start a local cluster: {err}"))?;
        let client = |url: String| {
            let url = Url::parse(&url).map_err(|err| err.to_string())?;
            Client::new(url).map_err(|err| err.to_string())
        };
        Ok(Self {
            leader: client(cluster.leader.url())?,
            followers: cluster
                .followers
                .iter()
                .map(|f| client(f.url()))
                .collect::<Result<_, _>>()?,
            local: Some(cluster),
        })
    }

    /// The node ids and process ids of the local cluster (none for a remote one).
    pub(super) fn pids(&self) -> Vec<(String, u32)> {
        let Some(cluster) = &self.local else {
            return Vec::new();
        };
        std::iter::once(&cluster.leader)
            .chain(&cluster.followers)
            .filter_map(|node| Some((node.id.clone(), node.pid()?)))
            .collect()
    }

    /// Waits until the leader reports every follower up.
    pub(super) async fn wait_all_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.leader.cluster().await.map_err(|err| err.to_string())?;
            if status
                .followers
                .iter()
                .all(|f| f.state == FollowerState::Up)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("not every follower is up after 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `count` writes over keys `k0..`, `concurrency` at a time, with `quorum`; each
    /// writes `value`, or by default a value that names its quorum and number.
    pub(super) async fn write_batch(
        &self,
        count: usize,
        concurrency: usize,
        keys: usize,
        quorum: usize,
        value: Option<Arc<str>>,
        progress: &ProgressBar,
    ) -> Writes {
        let next = Arc::new(AtomicUsize::new(0));
        let workers = (0..concurrency.min(count)).map(|_| {
            let (leader, next, progress, value) = (
                self.leader.clone(),
                Arc::clone(&next),
                progress.clone(),
                value.clone(),
            );
            tokio::spawn(async move {
                let mut writes = Writes::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return writes;
                    }
                    writes
                        .record(&leader, i, keys, quorum, value.as_deref())
                        .await;
                    progress.inc(1);
                }
            })
        });
        join(workers).await
    }

    /// `concurrency` clients each writing in a loop until `duration` has passed.
    pub(super) async fn closed_loop(
        &self,
        duration: Duration,
        concurrency: usize,
        keys: usize,
        quorum: usize,
    ) -> Writes {
        let deadline = Instant::now() + duration;
        let next = Arc::new(AtomicUsize::new(0));
        let workers = (0..concurrency).map(|_| {
            let (leader, next) = (self.leader.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut writes = Writes::default();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    writes.record(&leader, i, keys, quorum, None).await;
                }
                writes
            })
        });
        join(workers).await
    }

    /// How many followers' `/dump` differ from the leader's (an unreachable one counts).
    pub(super) async fn mismatching_followers(&self) -> usize {
        let Ok(leader) = self.leader.dump().await else {
            return self.followers.len();
        };
        let mut mismatching = 0;
        for follower in &self.followers {
            if follower.dump().await.ok().as_ref() != Some(&leader) {
                mismatching += 1;
            }
        }
        mismatching
    }
}

/// Outcomes of a set of writes.
#[derive(Debug, Default)]
pub(super) struct Writes {
    pub(super) sent: usize,
    pub(super) failed: usize,
    /// Latency of each successful write.
    pub(super) latencies_ms: Vec<f64>,
    /// The version of each successful write, in the order of `latencies_ms` (empty for Redis).
    pub(super) versions: Vec<Version>,
    /// The leader's own latency of each successful write (its answer's `latency_ms`), in the
    /// order of `latencies_ms` (empty for Redis).
    pub(super) leader_latencies_ms: Vec<f64>,
    /// Why the first failed write failed.
    pub(super) first_error: Option<String>,
}

impl Writes {
    /// Sends write number `i` (key `k{i % keys}`, `value` or by default one that names the
    /// write) with `quorum`, and records its outcome.
    pub(super) async fn record(
        &mut self,
        leader: &Client,
        i: usize,
        keys: usize,
        quorum: usize,
        value: Option<&str>,
    ) {
        let started = Instant::now();
        let numbered;
        let value = match value {
            Some(value) => value,
            None => {
                numbered = format!("q{quorum}-w{i}");
                &numbered
            }
        };
        let result = leader
            .put(&format!("k{}", i % keys), value, Some(quorum))
            .await;
        self.sent += 1;
        match result {
            Ok(answer) => {
                self.latencies_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
                self.versions.push(answer.version);
                self.leader_latencies_ms.push(answer.latency_ms);
            }
            Err(err) => self.fail(err.to_string()),
        }
    }

    /// Counts a failed write.
    pub(super) fn fail(&mut self, reason: String) {
        self.failed += 1;
        self.first_error.get_or_insert(reason);
    }

    /// Each successful write, as the client and the leader measured it.
    pub(super) fn answered(&self) -> Vec<Answered> {
        (self.versions.iter().zip(&self.latencies_ms))
            .zip(&self.leader_latencies_ms)
            .map(|((&version, &latency_ms), &leader_ms)| Answered {
                version,
                latency_ms,
                leader_ms,
            })
            .collect()
    }

    /// Adds the outcomes of `other`.
    pub(super) fn extend(&mut self, other: Writes) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.latencies_ms.extend(other.latencies_ms);
        self.versions.extend(other.versions);
        self.leader_latencies_ms.extend(other.leader_latencies_ms);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub(super) async fn join(workers: impl Iterator<Item = tokio::task::JoinHandle<Writes>>) -> Writes {
    let mut all = Writes::default();
    for worker in workers.collect::<Vec<_>>() {
        if let Ok(writes) = worker.await {
            all.extend(writes);
        }
    }
    all
}
