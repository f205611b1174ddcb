//! The consistency lesson of the benchmark: right after each write, read its key back from a
//! random follower, once without `min_version` (some answers are stale) and once with the
//! write's version (none may be), at both wait points. While each write waits for its quorum,
//! a read of the leader shows what the wait point changes: under `after_commit` the leader
//! shows the write before any follower acknowledged it, under `after_sync` only after.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::stats::Latency;
use super::target::Target;
use crate::client::{Client, ClientError};
use crate::settings::{SettingsChange, WaitPoint};

/// How long after sending a write the leader is read, while the write waits for its quorum:
/// long enough for the leader to have applied it, short next to the lab's lags.
const LEADER_PEEK_AFTER: Duration = Duration::from_millis(5);

/// Every pass of the lesson: the `stale_reads` of `benchmark_results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StaleReads {
    /// Writes in each pass.
    pub writes: usize,
    /// The followers, N: a read goes to one of them at random.
    pub followers: usize,
    /// How long after sending each write the leader was read, in milliseconds.
    pub leader_peek_after_ms: f64,
    /// One pass per wait point, quorum, and with or without `min_version`.
    pub passes: Vec<StalePass>,
}

impl StalePass {
    /// The follower reads that answered (200, or 404 for a key not there yet): the ones that
    /// can be stale.
    pub fn answered_reads(&self) -> usize {
        self.writes - self.not_yet_replicated - self.failed_reads
    }
}

impl StaleReads {
    /// The leader reads sent during the writes at `wait_point` and `quorum` (both passes), and
    /// how many of them already showed the write.
    pub fn leader_showed(&self, wait_point: WaitPoint, quorum: usize) -> (usize, usize) {
        (self.passes.iter())
            .filter(|p| p.wait_point == wait_point && p.quorum == quorum)
            .fold((0, 0), |(showed, reads), p| {
                (
                    showed + p.leader_showed_in_flight,
                    reads + p.leader_reads_in_flight,
                )
            })
    }
}

/// One pass: writes, each followed by a read of its key from a random follower.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StalePass {
    /// The leader's wait point during the pass.
    pub wait_point: WaitPoint,
    /// The write quorum.
    pub quorum: usize,
    /// Whether the follower reads asked for the write's version (`min_version`).
    pub min_version: bool,
    /// Writes answered 200: each was read back once.
    pub writes: usize,
    /// Writes answered otherwise (503 after the timeout, mostly): not read back.
    pub failed_writes: usize,
    /// Follower reads that answered an older version of the key, or none.
    pub stale: usize,
    /// Follower reads answered `503 not_yet_replicated` (only with `min_version`).
    pub not_yet_replicated: usize,
    /// Follower reads that failed otherwise.
    pub failed_reads: usize,
    /// Latency of the follower reads answered 200.
    pub read_latency_ms: Latency,
    /// Leader reads sent while the write waited for its quorum, answered before it.
    pub leader_reads_in_flight: usize,
    /// Those that already showed the write: under `after_commit` before its quorum
    /// acknowledged it; under `after_sync` only once it had.
    pub leader_showed_in_flight: usize,
}

/// Runs the lesson on `target` at both wait points, for each of `quorums`, `writes` writes per
/// pass over `keys` keys, `concurrency` at a time; the leader's wait point is set back as it
/// was at the end.
pub(super) async fn run(
    target: &Target,
    quorums: &[usize],
    writes: usize,
    concurrency: usize,
    keys: usize,
) -> Result<StaleReads, String> {
    let before = target
        .leader
        .settings()
        .await
        .map_err(|err| err.to_string())?
        .wait_point;
    let mut passes = Vec::new();
    let mut outcome = Ok(());
    'wait_points: for wait_point in [WaitPoint::AfterCommit, WaitPoint::AfterSync] {
        if let Err(err) = set_wait_point(&target.leader, wait_point).await {
            outcome = Err(err);
            break;
        }
        for &quorum in quorums {
            for min_version in [false, true] {
                let pass = Pass {
                    wait_point,
                    quorum,
                    min_version,
                    keys,
                };
                match pass.run(target, writes, concurrency).await {
                    Ok(pass) => passes.push(pass),
                    Err(err) => {
                        outcome = Err(err);
                        break 'wait_points;
                    }
                }
            }
        }
    }
    let restored = set_wait_point(&target.leader, before).await;
    outcome.and(restored)?;
    Ok(StaleReads {
        writes,
        followers: target.followers.len(),
        leader_peek_after_ms: LEADER_PEEK_AFTER.as_secs_f64() * 1000.0,
        passes,
    })
}

async fn set_wait_point(leader: &Client, wait_point: WaitPoint) -> Result<(), String> {
    let change = SettingsChange {
        wait_point: Some(wait_point),
        ..SettingsChange::default()
    };
    leader
        .change_settings(&change)
        .await
        .map(drop)
        .map_err(|err| format!("cannot set the leader's wait point to {wait_point}: {err}"))
}

/// What one pass does.
#[derive(Clone, Copy)]
struct Pass {
    wait_point: WaitPoint,
    quorum: usize,
    min_version: bool,
    keys: usize,
}

/// What one client of a pass counted.
#[derive(Default)]
struct Counts {
    writes: usize,
    failed_writes: usize,
    stale: usize,
    not_yet_replicated: usize,
    failed_reads: usize,
    read_latencies_ms: Vec<f64>,
    leader_reads: usize,
    leader_showed: usize,
    /// Why the first write failed, when every write did.
    first_error: Option<String>,
}

impl Counts {
    /// Adds what another client of the pass counted.
    fn add(&mut self, other: Counts) {
        self.writes += other.writes;
        self.failed_writes += other.failed_writes;
        self.stale += other.stale;
        self.not_yet_replicated += other.not_yet_replicated;
        self.failed_reads += other.failed_reads;
        self.read_latencies_ms.extend(other.read_latencies_ms);
        self.leader_reads += other.leader_reads;
        self.leader_showed += other.leader_showed;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

impl Pass {
    async fn run(
        self,
        target: &Target,
        writes: usize,
        concurrency: usize,
    ) -> Result<StalePass, String> {
        let next = Arc::new(AtomicUsize::new(0));
        let clients = (0..concurrency.clamp(1, writes.max(1))).map(|_| {
            let (leader, followers, next) = (
                target.leader.clone(),
                target.followers.clone(),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let mut counts = Counts::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= writes {
                        return counts;
                    }
                    let follower = &followers[rand::random_range(0..followers.len())];
                    self.write_and_read(&leader, follower, i, &mut counts).await;
                }
            })
        });
        let mut all = Counts::default();
        for client in clients.collect::<Vec<_>>() {
            let counts = client
                .await
                .map_err(|err| format!("a client of the pass failed: {err}"))?;
            all.add(counts);
        }
        if all.writes == 0 {
            return Err(format!(
                "no write of the pass at quorum {} succeeded: {}",
                self.quorum,
                all.first_error.unwrap_or_default()
            ));
        }
        Ok(StalePass {
            wait_point: self.wait_point,
            quorum: self.quorum,
            min_version: self.min_version,
            writes: all.writes,
            failed_writes: all.failed_writes,
            stale: all.stale,
            not_yet_replicated: all.not_yet_replicated,
            failed_reads: all.failed_reads,
            read_latency_ms: Latency::of(&all.read_latencies_ms),
            leader_reads_in_flight: all.leader_reads,
            leader_showed_in_flight: all.leader_showed,
        })
    }

    /// Write number `i`, a look at the leader while it waits for its quorum, and a read of its
    /// key from `follower` once it is answered.
    async fn write_and_read(
        self,
        leader: &Client,
        follower: &Client,
        i: usize,
        counts: &mut Counts,
    ) {
        let key = format!("k{}", i % self.keys);
        let value = format!(
            "{}-q{}-{}-w{i}",
            self.wait_point,
            self.quorum,
            if self.min_version { "min" } else { "plain" }
        );
        let write = leader.put(&key, &value, Some(self.quorum));
        let peek = async {
            tokio::time::sleep(LEADER_PEEK_AFTER).await;
            let read = leader.get(&key).await;
            (read, Instant::now())
        };
        let (written, (peeked, peeked_at)) = tokio::join!(
            async {
                let written = write.await;
                (written, Instant::now())
            },
            peek
        );
        let (written, written_at) = written;
        // Only a peek answered while the write still waited tells what the leader showed then.
        // It showed the write if it answered it, or a newer write of the key (another client's).
        if peeked_at < written_at {
            counts.leader_reads += 1;
            let showed = match (&peeked, &written) {
                (Ok(read), Ok(answer)) => read.version >= answer.version,
                (Ok(read), Err(_)) => read.value == value,
                (Err(_), _) => false,
            };
            counts.leader_showed += usize::from(showed);
        }
        let version = match written {
            Ok(answer) => answer.version,
            Err(err) => {
                counts.failed_writes += 1;
                counts.first_error.get_or_insert(err.to_string());
                return;
            }
        };
        counts.writes += 1;
        let started = Instant::now();
        let read = follower
            .get_at_least(&key, self.min_version.then_some(version))
            .await;
        match read {
            Ok(read) => {
                counts
                    .read_latencies_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
                counts.stale += usize::from(read.version < version);
            }
            Err(ClientError::Api { code, .. }) if code == "not_found" => counts.stale += 1,
            Err(ClientError::Api { code, .. }) if code == "not_yet_replicated" => {
                counts.not_yet_replicated += 1;
            }
            Err(_) => counts.failed_reads += 1,
        }
    }
}
