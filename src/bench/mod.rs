//! `semisync-kv bench`: the lab's benchmark. For each write quorum it sends a fixed number of
//! writes a few at a time, records each write's latency, and compares every follower's `/dump`
//! with the leader's right after the writes and again after a settle delay. A throughput mode
//! runs closed-loop load for a while at several concurrencies. Results go to
//! `benchmark_results.json` and two PNG charts. `--versus-redis` instead runs the same
//! closed-loop load against Redis with five replicas and a local cluster, side by side.
//!
//! The quorum is set per write (`?quorum=N`), so no restart is needed between quorums. The
//! benchmark runs against a running cluster (by default the compose one on localhost) or starts
//! a local cluster of its own with `--local`.

mod chart;
pub mod crash;
mod feed;
mod soak;
mod stale;
mod stats;
mod versus_redis;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client::Client;
use crate::config::parse_base_url;
use crate::local::{LocalCluster, LocalSettings};
use crate::protocol::ClusterStatus;
use crate::replication::FollowerState;
use crate::settings::{Settings, WaitPoint};
use crate::store::Version;
use feed::Feed;
pub use feed::Overhead;
pub use stale::{StalePass, StaleReads};
pub use stats::Latency;
pub use versus_redis::{Versus, VersusRun};

/// Settings of `semisync-kv bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Base URL of the leader (ignored with --local).
    #[arg(long, default_value = "http://localhost:8000", value_parser = parse_base_url)]
    pub leader: Url,
    /// Comma-separated base URLs of the followers to compare with the leader (ignored with
    /// --local).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_base_url,
        default_value = "http://localhost:8001,http://localhost:8002,http://localhost:8003,http://localhost:8004,http://localhost:8005"
    )]
    pub followers: Vec<Url>,
    /// Start a local cluster (a leader and --local-followers followers as processes on
    /// loopback) with the lag and timeout below, instead of using a running one.
    #[arg(long)]
    pub local: bool,
    /// Followers of the local cluster.
    #[arg(long, default_value_t = 5)]
    pub local_followers: usize,
    /// Smallest simulated lag of the local cluster, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub min_delay_ms: u64,
    /// Largest simulated lag of the local cluster, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub max_delay_ms: u64,
    /// REPLICATE_TIMEOUT_MS of the local cluster (and WAIT's timeout with --versus-redis), in
    /// milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// WAIT_POINT of the local cluster: after_commit or after_sync.
    #[arg(long, value_enum, default_value_t = WaitPoint::AfterCommit)]
    pub wait_point: WaitPoint,
    /// Writes per quorum.
    #[arg(long, default_value_t = 100)]
    pub writes: usize,
    /// Writes in flight at a time.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Number of keys written (k0, k1, ...).
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    /// Comma-separated write quorums to measure [default: 1 to the number of followers].
    #[arg(long, value_delimiter = ',')]
    pub quorums: Vec<usize>,
    /// Writes of each pass of the stale-read lesson (0 skips it): for each quorum and both wait
    /// points, each write is read back from a random follower right after its answer, once
    /// without min_version and once with it.
    #[arg(long, default_value_t = 50)]
    pub stale_writes: usize,
    /// Wait before the second comparison of the followers with the leader, in milliseconds
    /// [default: the cluster's MAX_DELAY_MS + 1000].
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// Also run the throughput mode (closed-loop load; at zero lag with --local).
    #[arg(long)]
    pub throughput: bool,
    /// Length of each throughput run, in seconds [default: 5; with --versus-redis: 10].
    #[arg(long)]
    pub throughput_seconds: Option<f64>,
    /// Comma-separated concurrencies of the throughput mode [default: 1,10,64; with
    /// --versus-redis: 64].
    #[arg(long, value_delimiter = ',')]
    pub throughput_concurrency: Vec<usize>,
    /// Comma-separated quorums of the throughput mode [default: 1,3,5; with --versus-redis: 3].
    #[arg(long, value_delimiter = ',')]
    pub throughput_quorums: Vec<usize>,
    /// Compare with Redis instead: a Redis primary with five replicas (`SET` then `WAIT`) and a
    /// local cluster with five followers at zero lag, under the same closed-loop load (the
    /// --throughput-* flags); writes versus_redis.json and versus_redis.png. Needs
    /// redis-server on the PATH.
    #[arg(long)]
    pub versus_redis: bool,
    /// Crash the leader instead (needs --local): for each of --quorums [default: 0 to the
    /// number of followers], --concurrency clients write fresh keys for 2 s, the leader is
    /// killed (SIGKILL) and follower1 promoted, and the writes answered 200 are looked up in the
    /// new leader's state; prints how many were lost and writes crash_results.json.
    #[arg(long)]
    pub crash: bool,
    /// Run the soak instead (needs --local): closed-loop writes for this many seconds on the
    /// --keys key set, sampling every node's memory, file descriptors and threads; writes
    /// soak_results.json.
    #[arg(long)]
    pub soak_seconds: Option<u64>,
    /// Load this many keys instead (k0, k1, ...), each with a value of --value-bytes bytes,
    /// into the leader (--leader, or a --local cluster that is stopped afterwards): 64 writes
    /// in flight, each waiting for every follower, so that the load goes at the followers' pace
    /// and in batches (at quorum 0 the leader would outrun them, and their backlogs would end in
    /// state transfers). For the catch-up measurement.
    #[arg(long)]
    pub fill: Option<usize>,
    /// Size of each value --fill writes, in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Clients writing in a loop during the soak.
    #[arg(long, default_value_t = 32)]
    pub soak_concurrency: usize,
    /// Seconds between two samples of the soak.
    #[arg(long, default_value_t = 5)]
    pub soak_sample_seconds: u64,
    /// Where the JSON and the charts are written.
    #[arg(long, default_value = "artifacts")]
    pub out_dir: PathBuf,
}

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

/// Runs the benchmark and returns the exit code.
pub async fn run(args: BenchArgs) -> ExitCode {
    if args.versus_redis {
        return versus_redis::run(&args).await;
    }
    if let Some(keys) = args.fill {
        return match fill(&args, keys).await {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if args.crash {
        return match run_crash(&args).await {
            Ok(crash) => {
                println!("{}", crash::table(&crash));
                println!("wrote {}", args.out_dir.join(crash::CRASH_FILE).display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(seconds) = args.soak_seconds {
        return match run_soak(&args, seconds).await {
            Ok(soak) => {
                println!("{}", soak::table(&soak));
                println!("wrote {}", args.out_dir.join(SOAK_FILE).display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    match bench(&args).await {
        Ok(results) => {
            println!("{}", stats::table(&results));
            let charts = [
                Some(chart::LATENCY_FILE),
                results.throughput.as_ref().map(|_| chart::THROUGHPUT_FILE),
                results
                    .stale_reads
                    .as_ref()
                    .map(|_| chart::STALE_READS_FILE),
            ];
            let files: Vec<String> = std::iter::once(JSON_FILE)
                .chain(charts.into_iter().flatten())
                .map(|file| args.out_dir.join(file).display().to_string())
                .collect();
            println!("wrote {}", files.join(", "));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The JSON file's name in the output folder.
pub const JSON_FILE: &str = "benchmark_results.json";
/// The soak's JSON file's name in the output folder.
pub const SOAK_FILE: &str = "soak_results.json";

/// Writes in flight while `--fill` loads keys.
const FILL_CONCURRENCY: usize = 64;

/// Writes `keys` keys of `--value-bytes` bytes each to the leader, each acknowledged by every
/// follower.
async fn fill(args: &BenchArgs, keys: usize) -> Result<String, String> {
    let (target, status) = Target::connect(args, args.min_delay_ms, args.max_delay_ms).await?;
    let quorum = status.followers.len();
    let value: Arc<str> = "v".repeat(args.value_bytes).into();
    let started = Instant::now();
    let progress = progress_bar(keys as u64);
    let writes = target
        .write_batch(keys, FILL_CONCURRENCY, keys, quorum, Some(value), &progress)
        .await;
    progress.finish_and_clear();
    if let Some(first) = &writes.first_error {
        return Err(format!(
            "{} of {keys} writes failed; the first: {first}",
            writes.failed
        ));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "wrote {keys} keys of {} bytes in {seconds:.1} s ({:.0} writes/s)",
        args.value_bytes,
        keys as f64 / seconds
    ))
}

async fn run_crash(args: &BenchArgs) -> Result<crash::Crash, String> {
    if !args.local {
        return Err("--crash kills the leader: run it with --local".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|err| format!("cannot create {}: {err}", args.out_dir.display()))?;
    let (mut target, status) = Target::connect(args, args.min_delay_ms, args.max_delay_ms).await?;
    let quorums = or_default(
        &args.quorums,
        &(0..=status.followers.len()).collect::<Vec<_>>(),
    );
    if let Some(quorum) = quorums.iter().find(|&&q| q > status.followers.len()) {
        return Err(format!(
            "--quorums: {quorum} is more than the {} followers",
            status.followers.len()
        ));
    }
    let runs = crash::run(&mut target, &quorums, args.concurrency).await?;
    let result = crash::Crash {
        min_delay_ms: args.min_delay_ms,
        max_delay_ms: args.max_delay_ms,
        clients: args.concurrency,
        seconds_before_crash: crash::CRASH_AFTER.as_secs_f64(),
        runs,
    };
    let json = serde_json::to_string_pretty(&result).map_err(|err| err.to_string())?;
    write(&args.out_dir.join(crash::CRASH_FILE), json.as_bytes())?;
    Ok(result)
}

async fn run_soak(args: &BenchArgs, seconds: u64) -> Result<soak::Soak, String> {
    if !args.local {
        return Err("--soak-seconds samples the nodes' processes: run it with --local".into());
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|err| format!("cannot create {}: {err}", args.out_dir.display()))?;
    let (target, _) = Target::connect(args, args.min_delay_ms, args.max_delay_ms).await?;
    let pids = target.pids();
    let duration = Duration::from_secs(seconds);
    let every = Duration::from_secs(args.soak_sample_seconds.max(1));
    let until = Instant::now() + duration;
    let (writes, samples) = tokio::join!(
        target.closed_loop(duration, args.soak_concurrency.max(1), args.keys, 1),
        soak::sample_until(&pids, every, until),
    );
    let nodes = pids
        .into_iter()
        .zip(samples)
        .map(|((id, _), s)| soak::summarize(id, s))
        .collect();
    let result = soak::Soak {
        seconds: seconds as f64,
        concurrency: args.soak_concurrency,
        keys: args.keys,
        writes: writes.latencies_ms.len(),
        failed: writes.failed,
        nodes,
    };
    let json = serde_json::to_string_pretty(&result).map_err(|err| err.to_string())?;
    write(&args.out_dir.join(SOAK_FILE), json.as_bytes())?;
    Ok(result)
}

async fn bench(args: &BenchArgs) -> Result<Results, String> {
    if args.writes == 0 || args.concurrency == 0 || args.keys == 0 {
        return Err("--writes, --concurrency and --keys must be at least 1".into());
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|err| format!("cannot create {}: {err}", args.out_dir.display()))?;

    let (lagged, status) = Target::connect(args, args.min_delay_ms, args.max_delay_ms).await?;
    let followers = lagged.followers.len();
    let quorums: Vec<usize> = if args.quorums.is_empty() {
        (1..=followers).collect()
    } else {
        args.quorums.clone()
    };
    if let Some(q) = quorums.iter().find(|&&q| q > status.followers.len()) {
        return Err(format!("quorum {q} is above the number of followers"));
    }
    let settle_ms = args
        .settle_ms
        .unwrap_or(status.settings.max_delay_ms + 1000);
    // Subscribed before the first write, so that it sees every write's lags.
    let feed = match Feed::subscribe(&lagged.leader.base()).await {
        Ok(feed) => Some(feed),
        Err(err) => {
            eprintln!(
                "note: no overhead over the ideal: cannot read the leader's event feed: {err}"
            );
            None
        }
    };
    let config = BenchConfig {
        leader: lagged.leader.base().to_string(),
        followers: lagged
            .followers
            .iter()
            .map(|f| f.base().to_string())
            .collect(),
        local: args.local,
        min_delay_ms: status.settings.min_delay_ms,
        max_delay_ms: status.settings.max_delay_ms,
        replicate_timeout_ms: status.settings.replicate_timeout_ms,
        writes: args.writes,
        concurrency: args.concurrency,
        keys: args.keys,
        settle_ms,
    };

    let progress = progress_bar((quorums.len() * args.writes) as u64);
    let mut results = Vec::new();
    for &quorum in &quorums {
        progress.set_message(format!("quorum {quorum}"));
        let writes = lagged
            .write_batch(
                args.writes,
                args.concurrency,
                args.keys,
                quorum,
                None,
                &progress,
            )
            .await;
        let immediate = lagged.mismatching_followers().await;
        tokio::time::sleep(Duration::from_millis(settle_ms)).await;
        let settled = lagged.mismatching_followers().await;
        let overhead_ms = match &feed {
            Some(feed) => {
                let n = status.followers.len();
                // Normally complete already: a write's first attempts leave before its answer.
                feed.wait_complete(&writes.versions, n, Duration::from_secs(1))
                    .await;
                Some(feed.overhead(&writes.answered(), quorum, n))
            }
            None => None,
        };
        let (a, b) = (
            status.settings.min_delay_ms as f64,
            status.settings.max_delay_ms as f64,
        );
        results.push(QuorumResult {
            quorum,
            sent: writes.sent,
            succeeded: writes.latencies_ms.len(),
            failed: writes.failed,
            latency_ms: Latency::of(&writes.latencies_ms),
            theoretical_mean_ms: a + quorum as f64 * (b - a) / (followers as f64 + 1.0),
            immediate_mismatching_followers: immediate,
            settled_mismatching_followers: settled,
            samples_ms: writes.latencies_ms,
            overhead_ms,
        });
    }
    progress.finish_and_clear();
    if let Some(missed) = feed.as_ref().map(Feed::missed_events).filter(|&m| m > 0) {
        eprintln!("note: the event feed missed {missed} events; the writes they hid are left out");
    }
    drop(feed);
    let stale_reads = if args.stale_writes > 0 {
        eprintln!("stale reads: {} writes per pass", args.stale_writes);
        let lesson = stale::run(
            &lagged,
            &quorums,
            args.stale_writes,
            args.concurrency,
            args.keys,
        );
        Some(lesson.await?)
    } else {
        None
    };
    drop(lagged);

    let throughput = if args.throughput {
        Some(throughput(args).await?)
    } else {
        None
    };
    let results = Results {
        config,
        quorums: results,
        throughput,
        stale_reads,
    };
    let json = serde_json::to_string_pretty(&results).map_err(|err| err.to_string())?;
    write(&args.out_dir.join(JSON_FILE), json.as_bytes())?;
    chart::latency(&results, &args.out_dir.join(chart::LATENCY_FILE))?;
    if let Some(throughput) = &results.throughput {
        chart::throughput(throughput, &args.out_dir.join(chart::THROUGHPUT_FILE))?;
    }
    if let Some(stale_reads) = &results.stale_reads {
        chart::stale_reads(stale_reads, &args.out_dir.join(chart::STALE_READS_FILE))?;
    }
    Ok(results)
}

async fn throughput(args: &BenchArgs) -> Result<Throughput, String> {
    // With --local the throughput runs get a cluster of their own with no simulated lag.
    let (target, status) = Target::connect(args, 0, 0).await?;
    if status.settings.max_delay_ms > 0 {
        eprintln!(
            "note: the cluster simulates {}..{} ms of lag; throughput is measured at zero lag \
             with --local, or with MIN_DELAY_MS=0 MAX_DELAY_MS=0",
            status.settings.min_delay_ms, status.settings.max_delay_ms
        );
    }
    let duration = Duration::from_secs_f64(args.throughput_seconds.unwrap_or(5.0).max(0.1));
    let quorums = or_default(&args.throughput_quorums, &[1, 3, 5]);
    let concurrencies = or_default(&args.throughput_concurrency, &[1, 10, 64]);
    let total = quorums.len() * concurrencies.len();
    let progress = progress_bar(total as u64);
    let mut runs = Vec::new();
    for &quorum in &quorums {
        for &concurrency in &concurrencies {
            progress.set_message(format!(
                "throughput: quorum {quorum}, {concurrency} clients"
            ));
            let started = Instant::now();
            let writes = target
                .closed_loop(duration, concurrency.max(1), args.keys, quorum)
                .await;
            runs.push(ThroughputRun::of(quorum, concurrency, &writes, started));
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    Ok(Throughput {
        min_delay_ms: status.settings.min_delay_ms,
        max_delay_ms: status.settings.max_delay_ms,
        seconds: duration.as_secs_f64(),
        runs,
    })
}

/// `values`, or `default` when none were given.
fn or_default(values: &[usize], default: &[usize]) -> Vec<usize> {
    if values.is_empty() {
        default.to_vec()
    } else {
        values.to_vec()
    }
}

impl ThroughputRun {
    /// The run of `writes`, closed-loop from `started` until now.
    fn of(quorum: usize, concurrency: usize, writes: &Writes, started: Instant) -> Self {
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

/// The cluster under test: clients of its leader and followers, and the local cluster when the
/// benchmark started one (stopped when this is dropped).
struct Target {
    leader: Client,
    followers: Vec<Client>,
    local: Option<LocalCluster>,
}

impl Target {
    /// The cluster under test with its leader's status; a local cluster of its own (with the
    /// given lag) once every follower is up, since followers take writes only after the
    /// leader's first state transfer.
    async fn connect(
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

    fn new(args: &BenchArgs, min_delay_ms: u64, max_delay_ms: u64) -> Result<Self, String> {
        if !args.local {
            let client = |url: &Url| Client::new(url.clone()).map_err(|err| err.to_string());
            return Ok(Self {
                leader: client(&args.leader)?,
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
            },
            cluster_token: None,
            leader_env: Vec::new(),
            log_filter: "warn".into(),
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
    fn pids(&self) -> Vec<(String, u32)> {
        let Some(cluster) = &self.local else {
            return Vec::new();
        };
        std::iter::once(&cluster.leader)
            .chain(&cluster.followers)
            .filter_map(|node| Some((node.id.clone(), node.pid()?)))
            .collect()
    }

    /// Waits until the leader reports every follower up.
    async fn wait_all_up(&self) -> Result<(), String> {
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
    async fn write_batch(
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
    async fn closed_loop(
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
    async fn mismatching_followers(&self) -> usize {
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
struct Writes {
    sent: usize,
    failed: usize,
    /// Latency of each successful write.
    latencies_ms: Vec<f64>,
    /// The version of each successful write, in the order of `latencies_ms` (empty for Redis).
    versions: Vec<Version>,
    /// Why the first failed write failed.
    first_error: Option<String>,
}

impl Writes {
    /// Sends write number `i` (key `k{i % keys}`, `value` or by default one that names the
    /// write) with `quorum`, and records its outcome.
    async fn record(
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
            }
            Err(err) => self.fail(err.to_string()),
        }
    }

    /// Counts a failed write.
    fn fail(&mut self, reason: String) {
        self.failed += 1;
        self.first_error.get_or_insert(reason);
    }

    /// Each successful write's version and latency.
    fn answered(&self) -> Vec<(Version, f64)> {
        self.versions
            .iter()
            .copied()
            .zip(self.latencies_ms.iter().copied())
            .collect()
    }

    /// Adds the outcomes of `other`.
    fn extend(&mut self, other: Writes) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.latencies_ms.extend(other.latencies_ms);
        self.versions.extend(other.versions);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

async fn join(workers: impl Iterator<Item = tokio::task::JoinHandle<Writes>>) -> Writes {
    let mut all = Writes::default();
    for worker in workers.collect::<Vec<_>>() {
        if let Ok(writes) = worker.await {
            all.extend(writes);
        }
    }
    all
}

fn progress_bar(total: u64) -> ProgressBar {
    let progress = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg:32} [{bar:40}] {pos}/{len} {elapsed}") {
        progress.set_style(style.progress_chars("=> "));
    }
    progress
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|err| format!("cannot write {}: {err}", path.display()))
}
