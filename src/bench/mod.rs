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

mod args;
mod chart;
pub mod crash;
mod feed;
mod output;
mod results;
mod soak;
mod stale;
mod stats;
mod target;
mod versus_redis;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use args::BenchArgs;
use args::or_default;
use feed::Feed;
pub use feed::Overhead;
use output::{progress_bar, write};
pub use results::{
    BenchConfig, QuorumResult, Results, Throughput, ThroughputRun, Versus, VersusRun,
};
pub use stale::{StalePass, StaleReads};
pub use stats::Latency;
use target::Target;

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
            println!("{}", results::table(&results));
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
            theoretical_p50_ms: (quorum > 0)
                .then(|| a + (b - a) * stats::order_statistic_quantile(quorum, followers, 0.5)),
            theoretical_p99_ms: (quorum > 0)
                .then(|| a + (b - a) * stats::order_statistic_quantile(quorum, followers, 0.99)),
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
