//! The leader's event feed (`GET /events`) as the latency runs read it: the simulated lags the
//! leader drew for each write's first attempts. A write's ideal latency at quorum k is the k-th
//! smallest of them; what the client saw above that is the write's overhead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::time::Instant;

use super::stats::Latency;
use crate::events::FollowerIndex;
use crate::store::Version;

/// Client-observed latency minus the write's own ideal, over one quorum's successful writes, in
/// milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// Mean overhead; `null` without samples.
    pub mean: Option<f64>,
    /// 99th percentile (nearest rank); `null` without samples.
    pub p99: Option<f64>,
    /// The leader's share of `mean`: the mean of its own `latency_ms` (its answer's: the clock of
    /// its write path, from the write's start to its outcome) minus the ideal. The rest of
    /// `mean` is outside that clock: the HTTP exchange on both ends (the client's request, the
    /// leader's routing, JSON parsing and answer). `null` without samples.
    #[serde(default)]
    pub leader_mean: Option<f64>,
    /// Writes measured.
    pub samples: usize,
    /// Successful writes left out because the feed did not carry every first-attempt lag of
    /// theirs (the stream reported missed events, or the leader skipped a follower).
    pub left_out: usize,
}

/// First-attempt lags seen on the feed, by write and follower, in milliseconds.
#[derive(Debug, Default)]
struct Lags {
    by_version: HashMap<Version, HashMap<FollowerIndex, f64>>,
    missed_events: u64,
}

impl Lags {
    /// Takes in one message of the stream.
    fn record(&mut self, message: &Value) {
        match message["type"].as_str() {
            Some("snapshot") => self.missed_events += message["missed"].as_u64().unwrap_or(0),
            Some("send") if message["attempt"].as_u64() == Some(1) => {
                // `as_f64` reads integer and fractional lags alike.
                let (Some(version), Some(follower), Some(delay_ms)) = (
                    message["version"]
                        .as_str()
                        .and_then(|v| v.parse::<Version>().ok()),
                    message["follower"].as_u64(),
                    message["delay_ms"].as_f64(),
                ) else {
                    return;
                };
                self.by_version
                    .entry(version)
                    .or_default()
                    .insert(follower as FollowerIndex, delay_ms);
            }
            _ => {}
        }
    }

    /// Whether every write of `versions` has a first-attempt lag for each of `followers`.
    fn complete(&self, mut versions: impl Iterator<Item = Version>, followers: usize) -> bool {
        versions.all(|v| {
            self.by_version
                .get(&v)
                .is_some_and(|l| l.len() >= followers)
        })
    }
}

/// A subscription to the leader's event feed, read until dropped on a runtime of its own (one
/// thread), so that parsing the feed does not delay the answers of the writes being measured.
#[derive(Debug)]
pub struct Feed {
    lags: Arc<Mutex<Lags>>,
    /// Runs the stream's connection and its reader; shut down on drop.
    runtime: Option<Runtime>,
}

impl Feed {
    /// Opens `GET /events` on the leader at `leader`. The leader subscribes before it answers,
    /// so every event published after this returns is seen (unless the reader falls behind).
    pub async fn subscribe(leader: &Url) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("event-feed")
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start the feed's runtime: {err}"))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|err| err.to_string())?;
        let mut url = leader.clone();
        url.set_path("/events");
        let request = http.get(url.clone()).send();
        let response = runtime
            .spawn(request)
            .await
            .map_err(|err| err.to_string())?
            .map_err(|err| format!("cannot reach {url}: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let lags = Arc::new(Mutex::new(Lags::default()));
        runtime.spawn(read(response, Arc::clone(&lags)));
        Ok(Self {
            lags,
            runtime: Some(runtime),
        })
    }

    /// Waits until the feed has carried every first-attempt lag of the writes `versions` to
    /// `followers` followers, or `patience` has passed.
    pub async fn wait_complete(&self, versions: &[Version], followers: usize, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self.lock().complete(versions.iter().copied(), followers)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The overhead of the `answered` writes at `quorum`, in a cluster of `followers`
    /// followers.
    pub fn overhead(&self, answered: &[Answered], quorum: usize, followers: usize) -> Overhead {
        overhead(&self.lock().by_version, answered, quorum, followers)
    }

    /// Events the stream reported missed so far.
    pub fn missed_events(&self) -> u64 {
        self.lock().missed_events
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lags> {
        self.lags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Without waiting: the feed may be dropped inside the benchmark's own runtime.
            runtime.shutdown_background();
        }
    }
}

/// Reads the stream until it ends, recording each message.
async fn read(mut response: reqwest::Response, lags: Arc<Mutex<Lags>>) {
    let mut parser = SseParser::default();
    while let Ok(Some(chunk)) = response.chunk().await {
        for data in parser.push(&chunk) {
            if let Ok(message) = serde_json::from_str::<Value>(&data) {
                lags.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(&message);
            }
        }
    }
}

/// Splits a Server-Sent Events byte stream into the `data` of its events.
#[derive(Debug, Default)]
struct SseParser {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// Takes in the next bytes; returns the data of every event they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                self.data
                    .push(data.strip_prefix(' ').unwrap_or(data).to_owned());
            }
            // Comments (keep-alives), `event:`, `id:` and `retry:` lines carry nothing we use.
        }
        events
    }
}

/// One successful write, as the client and the leader measured it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Answered {
    pub version: Version,
    /// The client's latency: from sending the request to reading the answer, in ms.
    pub latency_ms: f64,
    /// The leader's: the `latency_ms` of its answer, in ms.
    pub leader_ms: f64,
}

/// Each answered write's latency minus its ideal: the `quorum`-th smallest of its
/// first-attempt lags, when all `followers` of them are known.
fn overhead(
    lags: &HashMap<Version, HashMap<FollowerIndex, f64>>,
    answered: &[Answered],
    quorum: usize,
    followers: usize,
) -> Overhead {
    let mut samples = Vec::with_capacity(answered.len());
    let mut leader_samples = Vec::with_capacity(answered.len());
    let mut left_out = 0;
    for Answered {
        version,
        latency_ms,
        leader_ms,
    } in answered
    {
        let ideal = lags.get(version).filter(|l| l.len() >= followers).map(|l| {
            let mut sorted: Vec<f64> = l.values().copied().collect();
            sorted.sort_by(f64::total_cmp);
            quorum
                .checked_sub(1)
                .and_then(|k| sorted.get(k).copied())
                .unwrap_or(0.0)
        });
        match ideal {
            Some(ideal) => {
                samples.push(latency_ms - ideal);
                leader_samples.push(leader_ms - ideal);
            }
            None => left_out += 1,
        }
    }
    let summary = Latency::of(&samples);
    Overhead {
        mean: summary.mean,
        p99: summary.p99,
        leader_mean: Latency::of(&leader_samples).mean,
        samples: samples.len(),
        left_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_joins_lines_across_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(
            parser.push(b":1}\r\n\r\ndata:x\ndata: y\n\n"),
            ["{\"a\":1}", "x\ny"]
        );
    }

    #[test]
    fn first_attempt_lags_are_kept_whole_or_fractional_and_misses_counted() {
        let mut lags = Lags::default();
        let send = |follower: u64, delay_ms: Value, attempt: u32| {
            serde_json::json!({"type": "send", "version": "2.7", "follower": follower,
                "delay_ms": delay_ms, "attempt": attempt, "at_ms": 1.0})
        };
        lags.record(&send(0, 12.into(), 1));
        lags.record(&send(1, 0.25.into(), 1));
        lags.record(&send(1, 99.into(), 2));
        lags.record(&serde_json::json!({"type": "snapshot", "missed": 3, "cluster": {}}));
        lags.record(&serde_json::json!({"type": "ack", "version": "2.7", "follower": 2}));
        let (v7, v8) = (Version::new(2, 7), Version::new(2, 8));
        assert_eq!(lags.missed_events, 3);
        assert_eq!(lags.by_version[&v7][&0], 12.0);
        assert_eq!(lags.by_version[&v7][&1], 0.25);
        assert!(lags.complete([v7].into_iter(), 2));
        assert!(!lags.complete([v7, v8].into_iter(), 2));
    }

    #[test]
    fn overhead_is_latency_minus_the_kth_smallest_lag() {
        let v = |counter| Version::new(1, counter);
        let lags = HashMap::from([
            (
                v(1),
                HashMap::from([(0, 40.0), (1, 10.0), (2, 30.0), (3, 20.0), (4, 50.0)]),
            ),
            (
                v(2),
                HashMap::from([(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.0), (4, 4.0)]),
            ),
            // Only four of five lags: left out.
            (
                v(3),
                HashMap::from([(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.0)]),
            ),
        ]);
        let answered = [(1, 32.0, 31.0), (2, 7.0, 3.5), (3, 9.0, 8.0), (4, 9.0, 8.0)].map(
            |(counter, latency_ms, leader_ms)| Answered {
                version: v(counter),
                latency_ms,
                leader_ms,
            },
        );
        let result = overhead(&lags, &answered, 3, 5);
        assert_eq!(result.samples, 2);
        assert_eq!(result.left_out, 2);
        assert_eq!(result.mean, Some(3.0)); // (32 - 30 + 7 - 3) / 2
        assert_eq!(result.p99, Some(4.0));
        assert_eq!(result.leader_mean, Some(0.75)); // (31 - 30 + 3.5 - 3) / 2
        let first = overhead(&lags, &answered[..1], 1, 5);
        assert_eq!(first.mean, Some(22.0));
    }
}
