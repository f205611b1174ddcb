//! `semisync-kv bench --versus-redis`: the throughput mode's closed-loop write load against a
//! Redis primary with five replicas, then against a local semisync-kv cluster with five
//! followers at zero lag, with the same clients, quorum and duration, side by side.
//!
//! A Redis write is `SET` then `WAIT quorum timeout` on the client's own connection, measured in
//! two forms: sent together (one round trip, as a semisync-kv write is one request), and one
//! after the other (two round trips, as a client that waits for `SET`'s answer does). It counts
//! only when `WAIT` reports the quorum. Each client has a connection of its own, as with
//! redis-benchmark: a shared multiplexed connection would pipeline the clients' writes and
//! measure something else.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use super::args::{BenchArgs, or_default};
use super::chart;
use super::output::{progress_bar, write};
use super::results::{RespRuns, ThroughputRun, Versus, VersusRun};
use super::target::{Target, Writes};

/// The JSON file's name in the output folder.
pub const JSON_FILE: &str = "versus_redis.json";
/// Redis replicas, and followers of the local cluster.
const REPLICAS: usize = 5;
/// Keys written: `k0` to `k99`.
const KEYS: usize = 100;
/// How long Redis may take to start with every replica online.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a Redis client sends a write's two commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `SET` and `WAIT` together, in one round trip.
    Pipelined,
    /// `SET`, then `WAIT` once `SET` answered.
    TwoTrips,
    /// `SET` alone: semisync-kv's, which waits for the write quorum itself.
    SetAlone,
}

/// Rounds of the comparison: Redis, then semisync-kv, twice.
const ROUNDS: usize = 2;

/// Runs the comparison and returns the exit code: 2 without redis-server, 130 on Ctrl-C.
pub async fn run(args: &BenchArgs) -> ExitCode {
    let Some(server) = find_program("redis-server") else {
        eprintln!(
            "error: --versus-redis needs redis-server on the PATH: install it with \
             `apt-get install redis-server` (Debian, Ubuntu) or `brew install redis` (macOS)"
        );
        return ExitCode::from(2);
    };
    // On Ctrl-C the comparison is dropped, and with it the guards that stop every process it
    // started.
    let outcome = tokio::select! {
        outcome = compare(args, &server) => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
    };
    match outcome {
        None => {
            eprintln!("interrupted: Redis and the local cluster are stopped");
            ExitCode::from(130)
        }
        Some(Ok(versus)) => {
            println!("{}", table(&versus));
            println!(
                "wrote {}, {}",
                args.out_dir.join(JSON_FILE).display(),
                args.out_dir.join(chart::VERSUS_REDIS_FILE).display()
            );
            ExitCode::SUCCESS
        }
        Some(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn compare(args: &BenchArgs, server: &Path) -> Result<Versus, String> {
    let quorums = or_default(&args.throughput_quorums, &[3]);
    let concurrencies = or_default(&args.throughput_concurrency, &[64]);
    if let Some(q) = quorums.iter().find(|&&q| q == 0 || q > REPLICAS) {
        return Err(format!(
            "quorum {q}: --throughput-quorums must be between 1 and {REPLICAS}"
        ));
    }
    if concurrencies.contains(&0) {
        return Err("--throughput-concurrency must be at least 1".into());
    }
    let duration = Duration::from_secs_f64(args.throughput_seconds.unwrap_or(10.0).max(0.1));
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|err| format!("cannot create {}: {err}", args.out_dir.display()))?;
    let redis_version = redis_version(server).await?;
    let loads: Vec<(usize, usize)> = quorums
        .iter()
        .flat_map(|&q| concurrencies.iter().map(move |&c| (q, c)))
        .collect();
    // Per load and round: Redis in two forms; semisync-kv over HTTP, and over RESP in three.
    let progress = progress_bar((ROUNDS * 6 * loads.len()) as u64);
    let mut runs = Vec::new();
    // Redis and semisync-kv alternate, so that a drift of the machine's speed shows as a
    // difference between rounds rather than between systems. Each runs alone: both would
    // compete for the same cores.
    for round in 1..=ROUNDS {
        progress.set_message(format!("round {round}: starting Redis"));
        let redis = RedisGroup::start(server).await?;
        let mut redis_runs = Vec::new();
        for &(quorum, concurrency) in &loads {
            let run = |form| {
                let redis = &redis;
                let progress = &progress;
                async move {
                    progress.set_message(format!(
                        "round {round}, Redis: quorum {quorum}, {concurrency} clients"
                    ));
                    let connections = redis.connect(concurrency, args.timeout_ms).await?;
                    let started = Instant::now();
                    let writes =
                        closed_loop(connections, duration, quorum, args.timeout_ms, form).await;
                    report_failures("Redis", progress, &writes);
                    progress.inc(1);
                    Ok::<_, String>(ThroughputRun::of(quorum, concurrency, &writes, started))
                }
            };
            let pipelined = run(Form::Pipelined).await?;
            let two_trips = run(Form::TwoTrips).await?;
            redis_runs.push((pipelined, two_trips));
        }
        drop(redis);

        progress.set_message(format!("round {round}: starting the local cluster"));
        let cluster_args = BenchArgs {
            local: true,
            local_followers: REPLICAS,
            ..args.clone()
        };
        let (target, _) = Target::connect(&cluster_args, 0, 0).await?;
        let resp = target
            .resp_addr()
            .ok_or("the local cluster does not speak RESP")?;
        for (&(quorum, concurrency), (redis, redis_two_trips)) in loads.iter().zip(redis_runs) {
            let label = |what: &str| {
                format!("round {round}, semisync-kv {what}: quorum {quorum}, {concurrency} clients")
            };
            progress.set_message(label("over HTTP"));
            let started = Instant::now();
            let writes = target
                .closed_loop(duration, concurrency, KEYS, quorum)
                .await;
            report_failures("semisync-kv", &progress, &writes);
            let semisync = ThroughputRun::of(quorum, concurrency, &writes, started);
            progress.inc(1);

            // Over RESP, by Redis's client code: with WRITE_QUORUM=0, SET answers at once and
            // WAIT waits, as in Redis; then SET alone at WRITE_QUORUM=quorum.
            let resp_run = async |live_quorum: usize, form: Form, what: &str| {
                progress.set_message(label(what));
                target.set_write_quorum(live_quorum).await?;
                let connections = connect(resp, concurrency, args.timeout_ms).await?;
                let started = Instant::now();
                let writes =
                    closed_loop(connections, duration, quorum, args.timeout_ms, form).await;
                report_failures("semisync-kv over RESP", &progress, &writes);
                progress.inc(1);
                Ok::<_, String>(ThroughputRun::of(quorum, concurrency, &writes, started))
            };
            let set_then_wait = resp_run(0, Form::TwoTrips, "over RESP, SET then WAIT").await?;
            let pipelined = resp_run(0, Form::Pipelined, "over RESP, SET + WAIT").await?;
            let set_at_quorum = resp_run(quorum, Form::SetAlone, "over RESP, SET").await?;
            let mut run = VersusRun::new(redis, redis_two_trips, semisync);
            run.resp = Some(RespRuns::new(
                set_then_wait,
                pipelined,
                set_at_quorum,
                &run.redis,
                &run.redis_two_trips,
            ));
            run.round = round;
            runs.push(run);
        }
        drop(target);
    }
    progress.finish_and_clear();

    let versus = Versus {
        redis_version,
        replicas: REPLICAS,
        keys: KEYS,
        seconds: duration.as_secs_f64(),
        timeout_ms: args.timeout_ms,
        runs,
    };
    let json = serde_json::to_string_pretty(&versus).map_err(|err| err.to_string())?;
    write(&args.out_dir.join(JSON_FILE), json.as_bytes())?;
    chart::versus_redis(&versus, &args.out_dir.join(chart::VERSUS_REDIS_FILE))?;
    Ok(versus)
}

/// Tells on stderr why writes failed, if some did.
fn report_failures(system: &str, progress: &indicatif::ProgressBar, writes: &Writes) {
    if let Some(reason) = &writes.first_error {
        progress.println(format!(
            "note: {} {system} writes failed; the first: {reason}",
            writes.failed
        ));
    }
}

/// One client per connection, each writing `SET` + `WAIT` in `form` in a loop until `duration`
/// has passed.
async fn closed_loop(
    connections: Vec<MultiplexedConnection>,
    duration: Duration,
    quorum: usize,
    timeout_ms: u64,
    form: Form,
) -> Writes {
    let deadline = Instant::now() + duration;
    let next = Arc::new(AtomicUsize::new(0));
    let workers = connections.into_iter().map(|mut connection| {
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            let mut writes = Writes::default();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let (key, value) = (format!("k{}", i % KEYS), format!("q{quorum}-w{i}"));
                let mut wait = redis::cmd("WAIT");
                wait.arg(quorum).arg(timeout_ms);
                let result: redis::RedisResult<(redis::Value, usize)> = match form {
                    Form::Pipelined => {
                        redis::pipe()
                            .cmd("SET")
                            .arg(&key)
                            .arg(&value)
                            .add_command(wait)
                            .query_async(&mut connection)
                            .await
                    }
                    Form::TwoTrips => {
                        let set = redis::cmd("SET")
                            .arg(&key)
                            .arg(&value)
                            .query_async::<redis::Value>(&mut connection)
                            .await;
                        match set {
                            Ok(set) => wait
                                .query_async::<usize>(&mut connection)
                                .await
                                .map(|acked| (set, acked)),
                            Err(err) => Err(err),
                        }
                    }
                    // semisync-kv's `SET` answers once the write quorum has it: `+OK` counts
                    // as the quorum, an error (`-NOQUORUM`) as a failure.
                    Form::SetAlone => redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .query_async::<redis::Value>(&mut connection)
                        .await
                        .map(|set| (set, quorum)),
                };
                writes.sent += 1;
                match result {
                    Ok((_, acked)) if acked >= quorum => writes
                        .latencies_ms
                        .push(started.elapsed().as_secs_f64() * 1000.0),
                    Ok((_, acked)) => {
                        writes.fail(format!("WAIT reported {acked} of {quorum} replicas"));
                    }
                    Err(err) => {
                        let unrecoverable = err.is_unrecoverable_error();
                        writes.fail(err.to_string());
                        // A lost connection would fail every later write at once.
                        if unrecoverable {
                            break;
                        }
                    }
                }
            }
            writes
        })
    });
    super::target::join(workers).await
}

/// A Redis primary and its replicas on loopback; dropping it stops them all.
struct RedisGroup {
    primary: RedisServer,
    replicas: Vec<RedisServer>,
}

impl RedisGroup {
    /// Starts the primary, then the replicas, and waits until the primary reports every
    /// replica online.
    async fn start(server: &Path) -> Result<Self, String> {
        let ports = free_ports(1 + REPLICAS)?;
        let Some((&primary_port, replica_ports)) = ports.split_first() else {
            return Err("no free port".into());
        };
        let mut group = Self {
            primary: RedisServer::start(server, primary_port, None)?,
            replicas: Vec::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // Replicas that find no primary retry only once a second.
        group.wait_until(deadline, |_| true).await?;
        for &port in replica_ports {
            let replica = RedisServer::start(server, port, Some(primary_port))?;
            group.replicas.push(replica);
        }
        group
            .wait_until(deadline, |info| online_replicas(info) >= REPLICAS)
            .await?;
        Ok(group)
    }

    /// Polls the primary's `INFO replication` until `ready` accepts it.
    async fn wait_until(
        &mut self,
        deadline: Instant,
        ready: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        let client = self.primary.client()?;
        let mut connection = None;
        loop {
            for server in std::iter::once(&mut self.primary).chain(&mut self.replicas) {
                if let Ok(Some(status)) = server.child.try_wait() {
                    return Err(format!(
                        "redis-server on port {} exited ({status}); its log:\n{}",
                        server.port,
                        server.log()
                    ));
                }
            }
            if connection.is_none() {
                connection = client.get_multiplexed_async_connection().await.ok();
            }
            if let Some(open) = connection.as_mut() {
                let info: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(open)
                    .await;
                match info {
                    Ok(info) if ready(&info) => return Ok(()),
                    Ok(_) => {}
                    Err(_) => connection = None,
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Redis is not ready after {} s (every replica online); the primary's log:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.primary.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `count` connections to the primary, whose answers may take `WAIT`'s timeout and more.
    async fn connect(
        &self,
        count: usize,
        timeout_ms: u64,
    ) -> Result<Vec<MultiplexedConnection>, String> {
        let primary = SocketAddr::from(([127, 0, 0, 1], self.primary.port));
        connect(primary, count, timeout_ms).await
    }
}

/// `count` connections to the RESP server at `addr` (Redis, or a semisync-kv leader), whose
/// answers may take `WAIT`'s timeout and more.
async fn connect(
    addr: SocketAddr,
    count: usize,
    timeout_ms: u64,
) -> Result<Vec<MultiplexedConnection>, String> {
    let client = redis::Client::open(format!("redis://{addr}/")).map_err(|err| err.to_string())?;
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(
        Duration::from_millis(timeout_ms) + Duration::from_secs(5),
    ));
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
        connections.push(connection);
    }
    Ok(connections)
}

/// One `redis-server` process with a scratch folder; dropping it kills the process and removes
/// the folder.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl RedisServer {
    /// Starts a server without persistence on `127.0.0.1:port`, replica of the primary on
    /// `primary` if given.
    fn start(server: &Path, port: u16, primary: Option<u16>) -> Result<Self, String> {
        let dir =
            std::env::temp_dir().join(format!("semisync-kv-redis-{}-{port}", std::process::id()));
        let fail = |err: std::io::Error| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot start {} on port {port}: {err}", server.display())
        };
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let log = File::create(dir.join("redis.log")).map_err(fail)?;
        let log_err = log.try_clone().map_err(fail)?;
        let mut command = Command::new(server);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // A replica writes the primary's snapshot to its working folder.
            .arg("--dir")
            .arg(&dir)
            // The primary would otherwise wait 5 s for more replicas before each sync.
            .args(["--repl-diskless-sync-delay", "0"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(primary) = primary {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = command.spawn().map_err(fail)?;
        Ok(Self { port, dir, child })
    }

    fn client(&self) -> Result<redis::Client, String> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .map_err(|err| err.to_string())
    }

    /// The last lines of the server's log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` distinct loopback ports that were free a moment ago.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    // All held at once, so that the system hands out distinct ports.
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|err| format!("no free port: {err}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|addr| addr.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|err| format!("no free port: {err}"))
}

/// Replicas that `INFO replication` shows online (`slave0:ip=...,state=online,...`).
fn online_replicas(info: &str) -> usize {
    info.lines()
        .filter(|line| {
            line.strip_prefix("slave")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                && line.contains("state=online")
        })
        .count()
}

/// The version `redis-server --version` reports (`v=7.0.15`), or its whole answer.
async fn redis_version(server: &Path) -> Result<String, String> {
    let output = tokio::process::Command::new(server)
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| format!("cannot run {}: {err}", server.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(text
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .map_or(text.clone(), str::to_owned))
}

/// The executable `name` in a folder of the `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The comparison as a text table for the terminal: one row per system and load, with
/// semisync-kv's ratios to each form of Redis.
pub fn table(versus: &Versus) -> String {
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let times = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.2}x"));
    let ratios = |ours: &ThroughputRun, theirs: &ThroughputRun| {
        let rate =
            (theirs.writes_per_sec > 0.0).then(|| ours.writes_per_sec / theirs.writes_per_sec);
        let p99 = ours
            .latency_ms
            .p99
            .zip(theirs.latency_ms.p99)
            .and_then(|(o, t)| (t > 0.0).then(|| o / t));
        [times(rate), times(p99)]
    };
    let row = |run: &VersusRun, system: &str, of: &ThroughputRun, ratios: [String; 2]| {
        format!(
            "{:>5} {:>6} {:>7}  {system:<40} {:>9.0} {:>8} {:>8} {:>6}  {:>10} {:>9}",
            run.round,
            run.quorum,
            run.concurrency,
            of.writes_per_sec,
            ms(of.latency_ms.p50),
            ms(of.latency_ms.p99),
            of.failed,
            ratios[0],
            ratios[1],
        )
    };
    let mut lines = vec![
        format!(
            "Redis {} (SET + WAIT) vs semisync-kv (zero lag), {} replicas each, {} keys, {:.0} s \
             per run, timeout {} ms",
            versus.redis_version, versus.replicas, versus.keys, versus.seconds, versus.timeout_ms
        ),
        format!(
            "{:>5} {:>6} {:>7}  {:<40} {:>9} {:>8} {:>8} {:>6}  {:>10} {:>9}",
            "round",
            "quorum",
            "clients",
            "system",
            "writes/s",
            "p50 ms",
            "p99 ms",
            "failed",
            "vs Redis",
            "p99 vs"
        ),
    ];
    let blank = || [String::new(), String::new()];
    for run in &versus.runs {
        let q = run.quorum;
        lines.push(row(
            run,
            "Redis, SET then WAIT",
            &run.redis_two_trips,
            blank(),
        ));
        lines.push(row(run, "Redis, SET + WAIT pipelined", &run.redis, blank()));
        lines.push(row(
            run,
            &format!("semisync-kv HTTP, PUT ?quorum={q}"),
            &run.semisync,
            ratios(&run.semisync, &run.redis_two_trips),
        ));
        if let Some(resp) = &run.resp {
            lines.push(row(
                run,
                "semisync-kv RESP, SET then WAIT (W=0)",
                &resp.set_then_wait,
                ratios(&resp.set_then_wait, &run.redis_two_trips),
            ));
            lines.push(row(
                run,
                "semisync-kv RESP, SET + WAIT pipelined",
                &resp.pipelined,
                ratios(&resp.pipelined, &run.redis),
            ));
            lines.push(row(
                run,
                &format!("semisync-kv RESP, SET at W={q}"),
                &resp.set_at_quorum,
                ratios(&resp.set_at_quorum, &run.redis_two_trips),
            ));
        }
    }
    lines.push(
        "vs Redis: the row's rate and p99 over Redis's in the same form (SET then WAIT, or \
         pipelined); HTTP and SET at W over SET then WAIT"
            .into(),
    );
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Latency;

    #[test]
    fn only_online_replicas_count() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
            slave0:ip=127.0.0.1,port=1,state=online,offset=1,lag=0\r\n\
            slave1:ip=127.0.0.1,port=2,state=wait_bgsave,offset=0,lag=0\r\n\
            slave2:ip=127.0.0.1,port=3,state=online,offset=1,lag=1\r\n\
            slave_read_repl_offset:1\r\n";
        assert_eq!(online_replicas(info), 2);
    }

    #[test]
    fn ratios_are_semisync_over_redis() {
        let run = |writes_per_sec: f64, p99: Option<f64>| ThroughputRun {
            quorum: 3,
            concurrency: 10,
            succeeded: 1,
            failed: 0,
            writes_per_sec,
            latency_ms: Latency {
                p99,
                ..Latency::default()
            },
        };
        let versus = VersusRun::new(
            run(1000.0, Some(2.0)),
            run(400.0, Some(4.0)),
            run(500.0, Some(5.0)),
        );
        assert_eq!(versus.rate_ratio, Some(0.5));
        assert_eq!(versus.p99_ratio, Some(2.5));
        assert_eq!(versus.rate_ratio_two_trips, Some(1.25));
        assert_eq!(versus.p99_ratio_two_trips, Some(1.25));
        let resp = RespRuns::new(
            run(800.0, Some(2.0)),
            run(3000.0, Some(1.0)),
            run(600.0, Some(3.0)),
            &versus.redis,
            &versus.redis_two_trips,
        );
        assert_eq!(resp.rate_ratio_set_then_wait, Some(2.0));
        assert_eq!(resp.p99_ratio_set_then_wait, Some(0.5));
        assert_eq!(resp.rate_ratio_pipelined, Some(3.0));
        assert_eq!(resp.p99_ratio_pipelined, Some(0.5));
        let none = VersusRun::new(run(0.0, None), run(0.0, None), run(500.0, Some(5.0)));
        assert_eq!((none.rate_ratio, none.p99_ratio), (None, None));
        assert_eq!(none.rate_ratio_two_trips, None);
    }

    #[test]
    fn a_program_is_found_on_the_path_only_if_executable() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-semisync-kv").is_none());
    }
}
