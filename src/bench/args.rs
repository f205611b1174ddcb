//! The settings of `semisync-kv bench`, and the defaults of its lists.

use std::path::PathBuf;

use clap::Args;
use reqwest::Url;

use crate::config::parse_base_url;
use crate::settings::WaitPoint;

/// Settings of `semisync-kv bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Base URL of the leader (ignored with --local).
    #[arg(long, default_value = "http://localhost:8000", value_parser = parse_base_url)]
    pub leader: Url,
    /// Comma-separated base URLs of the followers to compare with the leader (ignored with
    /// --local). With --leader, they are the nodes the benchmark asks for the new leader when
    /// its leader is gone (refuses connections) after a failover.
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

/// `values`, or `default` when none were given.
pub(super) fn or_default(values: &[usize], default: &[usize]) -> Vec<usize> {
    if values.is_empty() {
        default.to_vec()
    } else {
        values.to_vec()
    }
}
