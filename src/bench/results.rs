//! Everything the benchmark measures, as `benchmark_results.json` and `versus_redis.json` hold it,
//! and the table the benchmark prints.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::feed::Overhead;
use super::stale::StaleReads;
use super::stats::Latency;
use super::target::Writes;

/// Everything the benchmark measured: the content of `benchmark_results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// The cluster and the load.
    pub config: BenchConfig,
    /// One entry per quorum.
    pub quorums: Vec<QuorumResult>,
    /// The throughput mode, when it ran.
    pub throughput: Option<Throughput>,
    /// The stale-read lesson, when it ran.
    #[serde(default)]
    pub stale_reads: Option<StaleReads>,
}

/// The cluster and the load of the latency runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchConfig {
    /// The leader's URL.
    pub leader: String,
    /// The followers compared with the leader.
    pub followers: Vec<String>,
    /// Whether the benchmark started its own local cluster.
    pub local: bool,
    /// The cluster's simulated lag range, in milliseconds.
    pub min_delay_ms: u64,
    /// See `min_delay_ms`.
    pub max_delay_ms: u64,
    /// The cluster's `REPLICATE_TIMEOUT_MS`.
    pub replicate_timeout_ms: u64,
    /// Writes per quorum.
    pub writes: usize,
    /// Writes in flight at a time.
    pub concurrency: usize,
    /// Number of keys written.
    pub keys: usize,
    /// The wait before the second comparison, in milliseconds.
    pub settle_ms: u64,
}

/// The latency run of one quorum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuorumResult {
    /// The write quorum.
    pub quorum: usize,
    /// Writes sent.
    pub sent: usize,
    /// Writes answered 200.
    pub succeeded: usize,
    /// Writes answered otherwise (503 after the timeout, mostly).
    pub failed: usize,
    /// Latency of the successful writes, as the client saw it.
    pub latency_ms: Latency,
    /// Expected mean latency for lag uniform in [a, b] with N followers: a + k(b - a)/(N + 1),
    /// the mean of the k-th smallest of N uniform delays.
    pub theoretical_mean_ms: f64,
    /// The theory's median and 99th percentile of the same: the quantiles of the k-th smallest
    /// of N uniform lags, a Beta(k, N + 1 - k) scaled to [a, b]; `null` in results written
    /// before they were added.
    #[serde(default)]
    pub theoretical_p50_ms: Option<f64>,
    /// See `theoretical_p50_ms`.
    #[serde(default)]
    pub theoretical_p99_ms: Option<f64>,
    /// Followers whose `/dump` differed from the leader's right after the writes.
    pub immediate_mismatching_followers: usize,
    /// Followers whose `/dump` differed from the leader's after the settle delay.
    pub settled_mismatching_followers: usize,
    /// Every successful write's latency in milliseconds, for the chart.
    pub samples_ms: Vec<f64>,
    /// Latency over each write's own ideal (the quorum-th smallest of the lags the leader drew
    /// for its first attempts, read from its event feed); `null` when the feed could not be read.
    #[serde(default)]
    pub overhead_ms: Option<Overhead>,
}

/// The throughput mode's runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    /// The lag range of the cluster it ran against, in milliseconds.
    pub min_delay_ms: u64,
    /// See `min_delay_ms`.
    pub max_delay_ms: u64,
    /// Length of each run, in seconds.
    pub seconds: f64,
    /// One per quorum and concurrency.
    pub runs: Vec<ThroughputRun>,
}

/// One closed-loop run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThroughputRun {
    /// The write quorum.
    pub quorum: usize,
    /// Clients writing in a loop.
    pub concurrency: usize,
    /// Writes answered 200.
    pub succeeded: usize,
    /// Writes answered otherwise.
    pub failed: usize,
    /// Successful writes per second.
    pub writes_per_sec: f64,
    /// Latency of the successful writes.
    pub latency_ms: Latency,
}

impl ThroughputRun {
    /// The run of `writes`, closed-loop from `started` until now.
    pub(super) fn of(quorum: usize, concurrency: usize, writes: &Writes, started: Instant) -> Self {
        let seconds = started.elapsed().as_secs_f64();
        Self {
            quorum,
            concurrency,
            succeeded: writes.latencies_ms.len(),
            failed: writes.failed,
            writes_per_sec: writes.latencies_ms.len() as f64 / seconds,
            latency_ms: Latency::of(&writes.latencies_ms),
        }
    }
}

/// The comparison: the content of `versus_redis.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Versus {
    /// The version `redis-server --version` reports.
    pub redis_version: String,
    /// Redis replicas, and followers of the local cluster.
    pub replicas: usize,
    /// Keys written.
    pub keys: usize,
    /// Length of each run, in seconds.
    pub seconds: f64,
    /// `WAIT`'s timeout and the cluster's `REPLICATE_TIMEOUT_MS`, in milliseconds.
    pub timeout_ms: u64,
    /// One per quorum and concurrency.
    pub runs: Vec<VersusRun>,
}

/// Both systems under one load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersusRun {
    /// The write quorum (`WAIT`'s replica count).
    pub quorum: usize,
    /// Clients writing in a loop, each on its own connection.
    pub concurrency: usize,
    /// Redis with `SET` + `WAIT` sent together: one round trip.
    pub redis: ThroughputRun,
    /// Redis with `SET`, then `WAIT` once `SET` answered: two round trips.
    pub redis_two_trips: ThroughputRun,
    /// The local semisync-kv cluster.
    pub semisync: ThroughputRun,
    /// semisync-kv's writes per second over pipelined Redis's; `null` when Redis made none.
    pub rate_ratio: Option<f64>,
    /// semisync-kv's p99 latency over pipelined Redis's; `null` when either has none.
    pub p99_ratio: Option<f64>,
    /// semisync-kv's writes per second over two-round-trip Redis's.
    pub rate_ratio_two_trips: Option<f64>,
    /// semisync-kv's p99 latency over two-round-trip Redis's.
    pub p99_ratio_two_trips: Option<f64>,
    /// The same load over RESP, when the cluster spoke it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<RespRuns>,
    /// Which round of the comparison (1, 2, ...): Redis and semisync-kv alternate.
    #[serde(default)]
    pub round: usize,
}

/// semisync-kv driven over RESP by the very client code that drives Redis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RespRuns {
    /// `SET`, then `WAIT quorum timeout`, with `WRITE_QUORUM=0`: `SET` answers at once and
    /// `WAIT` waits, as in Redis.
    pub set_then_wait: ThroughputRun,
    /// The same two commands sent together.
    pub pipelined: ThroughputRun,
    /// `SET` alone at `WRITE_QUORUM=quorum`: it answers once the quorum acknowledged it.
    pub set_at_quorum: ThroughputRun,
    /// `set_then_wait`'s writes per second over Redis's `SET` then `WAIT`.
    pub rate_ratio_set_then_wait: Option<f64>,
    /// `set_then_wait`'s p99 over Redis's `SET` then `WAIT`.
    pub p99_ratio_set_then_wait: Option<f64>,
    /// `pipelined`'s writes per second over Redis's pipelined form.
    pub rate_ratio_pipelined: Option<f64>,
    /// `pipelined`'s p99 over Redis's pipelined form.
    pub p99_ratio_pipelined: Option<f64>,
}

impl RespRuns {
    pub(super) fn new(
        set_then_wait: ThroughputRun,
        pipelined: ThroughputRun,
        set_at_quorum: ThroughputRun,
        redis: &ThroughputRun,
        redis_two_trips: &ThroughputRun,
    ) -> Self {
        Self {
            rate_ratio_set_then_wait: rate_ratio(&set_then_wait, redis_two_trips),
            p99_ratio_set_then_wait: p99_ratio(&set_then_wait, redis_two_trips),
            rate_ratio_pipelined: rate_ratio(&pipelined, redis),
            p99_ratio_pipelined: p99_ratio(&pipelined, redis),
            set_then_wait,
            pipelined,
            set_at_quorum,
        }
    }
}

/// `ours`'s writes per second over `theirs`; `None` when `theirs` made none.
fn rate_ratio(ours: &ThroughputRun, theirs: &ThroughputRun) -> Option<f64> {
    (theirs.writes_per_sec > 0.0).then(|| ours.writes_per_sec / theirs.writes_per_sec)
}

/// `ours`'s p99 latency over `theirs`; `None` when either has none.
fn p99_ratio(ours: &ThroughputRun, theirs: &ThroughputRun) -> Option<f64> {
    let (ours, theirs) = (ours.latency_ms.p99?, theirs.latency_ms.p99?);
    (theirs > 0.0).then(|| ours / theirs)
}

impl VersusRun {
    pub(super) fn new(
        redis: ThroughputRun,
        redis_two_trips: ThroughputRun,
        semisync: ThroughputRun,
    ) -> Self {
        Self {
            quorum: redis.quorum,
            concurrency: redis.concurrency,
            rate_ratio: rate_ratio(&semisync, &redis),
            p99_ratio: p99_ratio(&semisync, &redis),
            rate_ratio_two_trips: rate_ratio(&semisync, &redis_two_trips),
            p99_ratio_two_trips: p99_ratio(&semisync, &redis_two_trips),
            redis,
            redis_two_trips,
            semisync,
            resp: None,
            round: 1,
        }
    }
}
/// The results as a text table for the terminal.
pub fn table(results: &Results) -> String {
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let config = &results.config;
    let mut lines = vec![
        format!(
            "lag {}..{} ms, {} followers, {} writes per quorum, {} in flight, {} keys",
            config.min_delay_ms,
            config.max_delay_ms,
            config.followers.len(),
            config.writes,
            config.concurrency,
            config.keys
        ),
        format!(
            "{:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>10}",
            "quorum",
            "ok",
            "failed",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "theory ms",
            "diff now",
            "diff later",
            "over mean",
            "over p99"
        ),
    ];
    for q in &results.quorums {
        lines.push(format!(
            "{:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11.1} {:>9} {:>9} {:>10} {:>10}",
            q.quorum,
            q.succeeded,
            q.failed,
            ms(q.latency_ms.mean),
            ms(q.latency_ms.p50),
            ms(q.latency_ms.p90),
            ms(q.latency_ms.p99),
            ms(q.latency_ms.max),
            q.theoretical_mean_ms,
            q.immediate_mismatching_followers,
            q.settled_mismatching_followers,
            ms(q.overhead_ms.as_ref().and_then(|o| o.mean)),
            ms(q.overhead_ms.as_ref().and_then(|o| o.p99)),
        ));
    }
    let left_out: usize = results
        .quorums
        .iter()
        .filter_map(|q| q.overhead_ms.as_ref())
        .map(|o| o.left_out)
        .sum();
    lines.push(format!(
        "over: latency minus the write's ideal (the quorum-th smallest of its first-attempt \
         lags, from the leader's event feed){}",
        if left_out > 0 {
            format!("; {left_out} writes left out: the feed missed their lags")
        } else {
            String::new()
        }
    ));
    let leader_means: Vec<f64> = (results.quorums.iter())
        .filter_map(|q| q.overhead_ms.as_ref()?.leader_mean)
        .collect();
    if let Some(range) = range_ms(&leader_means) {
        lines.push(format!(
            "      of which the leader's write path (its answer's latency_ms minus the ideal): \
             {range} ms mean; the rest is the HTTP exchange around it, on both ends"
        ));
    }
    if let Some(throughput) = &results.throughput {
        lines.push(format!(
            "throughput (lag {}..{} ms, {:.0} s per run):",
            throughput.min_delay_ms, throughput.max_delay_ms, throughput.seconds
        ));
        lines.push(format!(
            "{:>6} {:>8} {:>10} {:>9} {:>9} {:>6}",
            "quorum", "clients", "writes/s", "p50 ms", "p99 ms", "failed"
        ));
        for run in &throughput.runs {
            lines.push(format!(
                "{:>6} {:>8} {:>10.0} {:>9} {:>9} {:>6}",
                run.quorum,
                run.concurrency,
                run.writes_per_sec,
                ms(run.latency_ms.p50),
                ms(run.latency_ms.p99),
                run.failed
            ));
        }
    }
    if let Some(stale) = &results.stale_reads {
        lines.extend(stale_table(stale));
    }
    lines.join("\n")
}

/// The stale-read lesson's lines: per wait point and quorum, the stale follower reads without
/// and with `min_version`, and how often the leader showed a write while it waited.
fn stale_table(stale: &StaleReads) -> Vec<String> {
    let mut lines = vec![
        format!(
            "stale reads: each write read back from a random follower right after its 200; the \
             leader read {:.0} ms into each write",
            stale.leader_peek_after_ms
        ),
        format!(
            "{:>12} {:>6} {:>14} {:>16} {:>8} {:>22}",
            "wait point",
            "quorum",
            "stale plain",
            "stale min_vers.",
            "not yet",
            "leader showed early"
        ),
    ];
    let ratio = |part: usize, whole: usize| format!("{part}/{whole}");
    for plain in stale.passes.iter().filter(|p| !p.min_version) {
        let Some(min) = stale.passes.iter().find(|p| {
            p.min_version && p.wait_point == plain.wait_point && p.quorum == plain.quorum
        }) else {
            continue;
        };
        lines.push(format!(
            "{:>12} {:>6} {:>14} {:>16} {:>8} {:>22}",
            plain.wait_point.as_str(),
            plain.quorum,
            ratio(plain.stale, plain.answered_reads()),
            ratio(min.stale, min.answered_reads()),
            min.not_yet_replicated,
            {
                let (showed, reads) = stale.leader_showed(plain.wait_point, plain.quorum);
                ratio(showed, reads)
            },
        ));
    }
    lines
}

/// "lo to hi" (or one figure when they round alike) of `values`, with one decimal; `None`
/// without values.
fn range_ms(values: &[f64]) -> Option<String> {
    let lo = values.iter().copied().reduce(f64::min)?;
    let hi = values.iter().copied().reduce(f64::max)?;
    let (lo, hi) = (format!("{lo:.1}"), format!("{hi:.1}"));
    Some(if lo == hi {
        lo
    } else {
        format!("{lo} to {hi}")
    })
}
