//! The deterministic simulator: six real [`Node`]s in one process, on a simulated network
//! (`network.rs`), tokio's paused clock and one seeded generator ([`entropy`]), with clients
//! writing and reading, a nemesis (`nemesis.rs`) that partitions, crashes, restarts, pauses,
//! loses, duplicates and delays, changes the live settings and promotes, and checkers
//! (`history.rs`) that read the run afterwards. The same seed replays the same run, event for
//! event: a failure prints its seed, the schedule and the history, and `semisync-kv simulate
//! --seed S` replays it.
//!
//! Why not `turmoil` (the tokio project's simulator): it simulates TCP under the real HTTP
//! stack, which would mean replacing reqwest (it cannot take a custom connector) and the
//! listener, and it steps every host through every millisecond, where the paused clock jumps
//! straight to the next timer. The nodes talk to each other only through the
//! [`Transport`](crate::replication::Transport) seam, so a fake one is all a simulation needs,
//! and it runs the same node code as the HTTP handlers call.
//!
//! A run: the cluster starts (n0 with `ROLE=leader`), three clients write (`PUT`, the live
//! quorum or one from 0 to 5) and read on the leader for a few simulated seconds while the
//! nemesis strikes; then everything heals, crashed nodes restart, a node is promoted if none
//! leads, and the cluster is given time to converge. The checkers then ask:
//! - is every write answered 200 (quorum 1 or more) in the final state, or overwritten by a
//!   newer version, unless a promotion of a newer term said it might lose writes (`force`, or
//!   `safe: false`)?
//! - did at most one node lead, and acknowledge writes, in each term (forced leaders aside:
//!   force skips the majority that makes a term one node's)?
//! - did no node's version ever go back?
//! - does every read a leader answered under `after_sync` survive like an acknowledged write?
//! - are those reads, with the writes, linearizable key by key (`linearizability.rs`, the
//!   checker the cluster tests use)?
//! - did every node converge on one state, with one leader?

mod history;
pub mod linearizability;
mod nemesis;
mod network;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use rand::RngExt;
use reqwest::Url;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Role;
use crate::entropy;
use crate::error::Error;
use crate::failover::Peers;
use crate::node::{Identity, Node, election};
use crate::partition::Partition;
use crate::protocol::{ReadResponse, WriteResponse};
use crate::replication::LagClock;
use crate::settings::{Settings, SettingsChange, WaitPoint};
use crate::store::Version;
use history::{Acked, Applied, History, Leading, State, SyncedRead};
use linearizability::{Kind, Operation};
use nemesis::{Fault, Scene};
use network::{Net, SimTransport, Weather};

/// Nodes in a simulated cluster: one leader and five followers, as the lab runs.
pub const NODES: usize = 6;
/// Keys the clients write: few, so that writes overwrite each other.
const KEYS: usize = 5;
/// Clients writing and reading at once.
const CLIENTS: usize = 3;
/// How long the nemesis strikes, in simulated time.
const FAULT_PHASE: Duration = Duration::from_secs(8);
/// How long the cluster gets to settle after the last heal.
const SETTLE: Duration = Duration::from_secs(3);
/// How long it may take to converge after that.
const CONVERGE: Duration = Duration::from_secs(30);
/// Longest a run may take, in simulated time; a run that takes longer is a failure.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// `FAILOVER_AFTER_MS` of every node, when the run has automatic failover: the default.
const FAILOVER_AFTER: Duration = Duration::from_millis(1500);
/// With automatic failover, a leader must be elected within this long after the last heal
/// (when an operator's safe promotion would have made one).
const ELECTION_BOUND: Duration = Duration::from_secs(10);
/// What the simulated wall clock reads at the start (versions above it follow it).
const EPOCH_MICROS: u64 = 1_800_000_000_000_000;

/// What a run allows, drawn from its seed: most runs make neither asynchronous writes nor
/// forced promotions, so that their checks excuse nothing.
#[derive(Clone, Copy, Debug)]
struct Profile {
    /// Whether clients write with quorum 0 now and then (every promotion of such a term is
    /// unsafe).
    asynchronous: bool,
    /// Whether the nemesis forces promotions now and then.
    forcing: bool,
    /// Whether the nodes run with `AUTO_FAILOVER=true`: they elect a leader by themselves.
    auto_failover: bool,
}

/// The settings every node starts with: the lab's, with a short lag.
const SETTINGS: Settings = Settings {
    write_quorum: 3,
    min_delay_ms: 0,
    max_delay_ms: 5,
    replicate_timeout_ms: 1000,
    wait_point: WaitPoint::AfterCommit,
    auto_failover: false,
};

/// `semisync-kv simulate`: runs the simulator over many seeds, or replays one.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// How many seeds to run, from `--seed` on.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// The first seed (with `--seeds 1`, the default: replay this one seed and print its
    /// schedule and history).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads running seeds at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// What a run over many seeds found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// The runs that broke an invariant, by seed.
    pub failed: Vec<Outcome>,
    /// Writes answered 200, over every run.
    pub acked: usize,
    /// Promotions and starts that led, over every run.
    pub leaderships: usize,
    /// Leader reads of written keys the linearizability checker judged, over every run.
    pub judged_reads: usize,
    /// Over the runs with automatic failover where no node led at the last heal: how long
    /// until one did, in simulated milliseconds, sorted.
    pub elected_after_ms: Vec<u64>,
    /// Elections that led, over every run.
    pub elections: usize,
}

/// Runs `count` seeds from `first` on, on `jobs` threads.
pub fn run_seeds(first: u64, count: u64, jobs: usize) -> Result<Summary, String> {
    let next = AtomicU64::new(first);
    let end = first.saturating_add(count);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    loop {
                        let seed = next.fetch_add(1, Ordering::SeqCst);
                        if seed >= end {
                            return Ok(());
                        }
                        let outcome = run(seed)?;
                        let mut summary = summary.lock().unwrap_or_else(PoisonError::into_inner);
                        summary.seeds += 1;
                        summary.acked += outcome.acked;
                        summary.leaderships += outcome.leaderships;
                        summary.judged_reads += outcome.judged_reads;
                        summary
                            .elected_after_ms
                            .extend(outcome.leader_after_heal_ms);
                        summary.elections += outcome.elections;
                        if !outcome.passed() {
                            summary.failed.push(outcome);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| "a simulation thread panicked".to_owned())??;
        }
        Ok::<(), String>(())
    })?;
    let mut summary = summary.into_inner().unwrap_or_else(PoisonError::into_inner);
    summary.failed.sort_by_key(|outcome| outcome.seed);
    summary.elected_after_ms.sort_unstable();
    Ok(summary)
}

/// `semisync-kv simulate`: prints what it found; `Ok(false)` when a seed failed.
pub fn simulate(args: &SimulateArgs) -> Result<bool, String> {
    let started = std::time::Instant::now();
    if args.seeds == 1 {
        let outcome = run(args.seed)?;
        print_outcome(&outcome, true);
        return Ok(outcome.passed());
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let summary = run_seeds(args.seed, args.seeds, jobs)?;
    println!(
        "{} seeds ({}..{}) on {jobs} threads in {:.1} s: {} failed; {} writes acknowledged, {} \
         leaderships ({} by election), {} leader reads of written keys checked for linearizability",
        summary.seeds,
        args.seed,
        args.seed.saturating_add(args.seeds),
        started.elapsed().as_secs_f64(),
        summary.failed.len(),
        summary.acked,
        summary.leaderships,
        summary.elections,
        summary.judged_reads
    );
    let times = &summary.elected_after_ms;
    if !times.is_empty() {
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "automatic failover: {} runs had no leader at the last heal; a leader after {} ms \
             (median), {} ms (p90), {} ms (p99), {} ms (max), simulated",
            times.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
    if let Some(first) = summary.failed.first() {
        let seeds: Vec<String> = summary.failed.iter().map(|o| o.seed.to_string()).collect();
        println!("failed seeds: {}", seeds.join(" "));
        print_outcome(first, true);
    }
    Ok(summary.failed.is_empty())
}

/// Prints a run: its verdict, and with `full` its schedule and history.
fn print_outcome(outcome: &Outcome, full: bool) {
    if full {
        println!("schedule of seed {}:", outcome.seed);
        for line in &outcome.schedule {
            println!("  {line}");
        }
        println!("history of seed {}:", outcome.seed);
        for line in &outcome.history {
            println!("  {line}");
        }
    }
    if outcome.passed() {
        println!(
            "seed {}: passed ({} writes acknowledged, {} leaderships; history digest {:016x})",
            outcome.seed,
            outcome.acked,
            outcome.leaderships,
            outcome.digest()
        );
    } else {
        println!("seed {}: FAILED", outcome.seed);
        for violation in &outcome.violations {
            println!("  - {violation}");
        }
        println!(
            "replay it with: semisync-kv simulate --seed {}",
            outcome.seed
        );
    }
}

/// What one seed's run found.
#[derive(Debug)]
pub struct Outcome {
    /// The seed that made the run.
    pub seed: u64,
    /// The invariants it broke; empty when none.
    pub violations: Vec<String>,
    /// The faults, in order, with their simulated time.
    pub schedule: Vec<String>,
    /// Every event, in order, with its simulated time.
    pub history: Vec<String>,
    /// Writes answered 200.
    pub acked: usize,
    /// Promotions and starts that led.
    pub leaderships: usize,
    /// Leader reads of written keys the linearizability checker judged.
    pub judged_reads: usize,
    /// With automatic failover, when no node led at the last heal: how long until one did,
    /// in simulated milliseconds.
    pub leader_after_heal_ms: Option<u64>,
    /// Elections that led.
    pub elections: usize,
}

impl Outcome {
    /// Whether the run broke no invariant.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// A digest of the history: the same seed gives the same one.
    pub fn digest(&self) -> u64 {
        // FNV-1a: stable across runs and builds, unlike `DefaultHasher`'s promise.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.history.iter().flat_map(|line| line.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
}

/// Runs the simulation of `seed` on this thread, with its own runtime on the paused clock.
pub fn run(seed: u64) -> Result<Outcome, String> {
    in_world(seed, None, async |world| {
        let played = tokio::time::timeout(RUN_LIMIT, Arc::clone(&world).play(seed)).await;
        played.unwrap_or_else(|_| {
            let mut outcome = world.finish(seed, world.leaders());
            outcome.violations.insert(
                0,
                format!(
                    "the run did not end within {} simulated seconds: something waits forever",
                    RUN_LIMIT.as_secs()
                ),
            );
            outcome
        })
    })
}

/// Runs `script` on a new world seeded with `seed`, in a runtime of its own on the paused
/// clock, on this thread; then empties the network.
fn in_world<T>(
    seed: u64,
    profile: Option<Profile>,
    script: impl AsyncFnOnce(Arc<World>) -> T,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|err| format!("cannot build the simulation's runtime: {err}"))?;
    entropy::seed(seed);
    let result = runtime.block_on(async {
        entropy::simulate_clock(EPOCH_MICROS);
        let world = World::new(profile);
        let result = script(Arc::clone(&world)).await;
        // The nodes hold the network through their transports: emptied, nothing is left.
        for slot in 0..NODES {
            world.crash(slot);
        }
        result
    });
    // Tasks still running (a node's heartbeats) end with the runtime.
    drop(runtime);
    Ok(result)
}

/// The simulated cluster and what it recorded.
struct World {
    net: Arc<Net>,
    /// Each node's internal URL, as its peers name it.
    urls: Vec<Url>,
    history: Mutex<History>,
    started: Instant,
    /// The tasks run on behalf of each node (its start, its promotions): aborted when it
    /// crashes.
    tasks: Mutex<Vec<Vec<JoinHandle<()>>>>,
    /// The next value a client writes: every value is unique.
    next_value: AtomicU64,
    /// The linearizability checker's clock, stepped at each call and each return: it orders
    /// the operations as they ran, which simulated milliseconds, shared by many events, do not.
    steps: AtomicU64,
    /// Set when the clients stop.
    stopping: AtomicBool,
    schedule: Mutex<Vec<String>>,
    profile: Profile,
}

impl World {
    /// A world whose profile is drawn from the seed, or is `profile`.
    fn new(profile: Option<Profile>) -> Arc<Self> {
        let urls = (0..NODES)
            .filter_map(|node| Url::parse(&format!("http://n{node}:9090/")).ok())
            .collect();
        Arc::new(Self {
            net: Arc::new(Net::new(NODES)),
            urls,
            history: Mutex::new(History::default()),
            started: Instant::now(),
            tasks: Mutex::new((0..NODES).map(|_| Vec::new()).collect()),
            next_value: AtomicU64::new(1),
            steps: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            schedule: Mutex::new(Vec::new()),
            profile: profile.unwrap_or_else(|| {
                entropy::with(|rng| Profile {
                    asynchronous: rng.random_bool(0.2),
                    forcing: rng.random_bool(0.4),
                    auto_failover: rng.random_bool(0.5),
                })
            }),
        })
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulated milliseconds since the start.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The next step of the linearizability checker's clock.
    fn step(&self) -> u64 {
        self.steps.fetch_add(1, Ordering::SeqCst)
    }

    fn log(&self, line: impl std::fmt::Display) {
        let at = self.now_ms();
        self.history().log(at, line);
    }

    /// Starts a node in `slot`, empty, with a new incarnation, and runs its start-up.
    fn boot(self: &Arc<Self>, slot: usize, role: Role) {
        let incarnation = entropy::incarnation();
        let peers: Vec<usize> = (0..NODES).filter(|&peer| peer != slot).collect();
        let urls: Vec<Url> = peers.iter().map(|&peer| self.urls[peer].clone()).collect();
        let transport = SimTransport::new(Arc::clone(&self.net), slot, incarnation, peers);
        let identity = Identity {
            node_id: format!("n{slot}"),
            start_role: role,
            incarnation,
            leader_url: None,
            public_url: Some(format!("http://n{slot}:8080/")),
            resp_public_addr: OnceLock::from(format!("n{slot}:6379")),
            settings: Settings {
                auto_failover: self.profile.auto_failover,
                ..SETTINGS
            },
            backlog: 10_000,
            failover_after: FAILOVER_AFTER,
        };
        let peers = Peers::new(
            urls.clone(),
            Arc::new(transport),
            Arc::new(LagClock::tokio()),
        );
        let node = Arc::new(Node::new(
            identity,
            Some(peers),
            Arc::new(Partition::new(&urls)),
        ));
        self.net.place(slot, Some(Arc::clone(&node)));
        self.log(format!(
            "n{slot} starts (ROLE={}, incarnation {incarnation:x})",
            role.as_str()
        ));
        let (world, watcher) = (Arc::clone(self), Arc::clone(&node));
        self.track(slot, async move {
            let node = &watcher;
            node.watch_leader(|outcome| world.elected(slot, node, outcome))
                .await;
        });
        let world = Arc::clone(self);
        self.track(slot, async move {
            node.start().await;
            match node.replicator() {
                Some(replicator) => {
                    world.led(slot, &node, replicator.term(), false, false);
                    world.log(format!(
                        "n{slot} leads term {} after its start",
                        replicator.term()
                    ));
                }
                None => {
                    if let Some(why) = node.waiting() {
                        world.log(format!("n{slot} waits: {why}"));
                    }
                }
            }
        });
    }

    /// Starts the cluster: n0 with `ROLE=leader`, the others as followers.
    fn boot_cluster(self: &Arc<Self>) {
        self.boot(0, Role::Leader);
        for slot in 1..NODES {
            self.boot(slot, Role::Follower);
        }
    }

    /// Records that `node` in `slot` leads `term`.
    fn led(&self, slot: usize, node: &Node, term: u64, may_lose: bool, forced: bool) {
        self.history().leadings.push(Leading {
            node: slot,
            incarnation: node.incarnation(),
            term,
            may_lose,
            forced,
        });
    }

    /// Records what an election of the node in `slot` did.
    fn elected(&self, slot: usize, node: &Node, outcome: &election::Outcome) {
        let silence = outcome.silence.as_millis();
        match &outcome.result {
            Ok(promotion) => {
                self.led(slot, node, promotion.term, !promotion.safe, false);
                self.log(format!(
                    "n{slot} elected after {silence} ms without a leader: term {}, merged {}, \
                     safe {}",
                    promotion.term, promotion.merged, promotion.safe
                ));
                self.history().elections.push(self.now_ms());
            }
            Err(err) => self.log(format!(
                "n{slot} ran an election after {silence} ms without a leader: {}: {err}",
                err.status_and_code().1
            )),
        }
    }

    /// Runs `task` on behalf of the node in `slot`: it ends if the node crashes.
    fn track(&self, slot: usize, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks[slot].retain(|task| !task.is_finished());
        tasks[slot].push(handle);
    }

    /// The run: start, clients and nemesis, heal, settle, check.
    async fn play(self: Arc<Self>, seed: u64) -> Outcome {
        self.log(format!("{:?}", self.profile));
        self.boot_cluster();
        let clients: Vec<JoinHandle<()>> = (0..CLIENTS)
            .map(|client| tokio::spawn(Arc::clone(&self).client(client)))
            .collect();
        let watcher = tokio::spawn(Arc::clone(&self).watch_versions());

        let end = Instant::now() + FAULT_PHASE;
        loop {
            let pause = entropy::with(|rng| rng.random_range(50..=900));
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if Instant::now() >= end {
                break;
            }
            let scene = self.scene();
            let mut fault = entropy::with(|rng| nemesis::draw(rng, &scene));
            if let Fault::Promote { force, .. } = &mut fault {
                *force &= self.profile.forcing;
            }
            self.strike(fault);
        }

        self.stopping.store(true, Ordering::SeqCst);
        // Healed first: a client may wait for a paused node's answer.
        self.heal_all();
        for client in clients {
            let _ = client.await;
        }
        let leaders = self.settle().await;
        watcher.abort();
        self.finish(seed, leaders)
    }

    /// What the nemesis sees.
    fn scene(&self) -> Scene {
        let nodes = self.net.nodes();
        Scene {
            nodes: NODES,
            crashed: (0..NODES).filter(|&slot| nodes[slot].is_none()).collect(),
            paused: (0..NODES)
                .filter(|&slot| self.net.is_paused(slot))
                .collect(),
        }
    }

    /// Applies one fault.
    fn strike(self: &Arc<Self>, fault: Fault) {
        let at = self.now_ms();
        self.log(format!("nemesis: {fault}"));
        self.schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{at:>7} ms  {fault}"));
        match fault {
            Fault::Split(side) => {
                for &inside in &side {
                    for outside in (0..NODES).filter(|node| !side.contains(node)) {
                        self.net.block(inside, outside, true);
                        self.net.block(outside, inside, true);
                    }
                }
            }
            Fault::OneWay(from, to) => self.net.block(from, to, true),
            Fault::Heal => self.net.heal(),
            Fault::Crash(slot) => self.crash(slot),
            Fault::Restart { node, leader } => {
                let role = if leader { Role::Leader } else { Role::Follower };
                self.boot(node, role);
            }
            Fault::Pause(slot) => self.net.pause(slot, true),
            Fault::Resume(slot) => self.net.pause(slot, false),
            Fault::Weather(weather) => self.net.set_weather(weather),
            Fault::Quorum(quorum) => self.change(SettingsChange {
                write_quorum: Some(quorum),
                ..SettingsChange::default()
            }),
            Fault::WaitPoint(point) => self.change(SettingsChange {
                wait_point: Some(point),
                ..SettingsChange::default()
            }),
            Fault::Promote { nodes, force } => {
                for slot in nodes {
                    self.promote(slot, force);
                }
            }
        }
    }

    /// Crashes the node in `slot`: its tasks end and its memory is lost.
    fn crash(&self, slot: usize) {
        if let Some(node) = self.net.place(slot, None) {
            node.halt();
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for task in tasks[slot].drain(..) {
            task.abort();
        }
    }

    /// Changes the live settings on the leader, as `PATCH /admin/settings` does.
    fn change(&self, change: SettingsChange) {
        let Some((slot, node)) = self.leader() else {
            self.log("  no leader to change the settings of");
            return;
        };
        if let Ok(replicator) = node.leader() {
            // What a switch back to after_commit will show before its quorum: read in the same
            // step as the switch, with nothing run in between.
            let hidden: Vec<(String, Version)> = match change.wait_point {
                Some(WaitPoint::AfterCommit) => (node.replica().hidden.writes())
                    .map(|(key, version)| (key.to_owned(), version))
                    .collect(),
                _ => Vec::new(),
            };
            match replicator.change_settings(change, 60_000) {
                Ok(settings) => {
                    let mut history = self.history();
                    for (key, version) in hidden {
                        history.shown_early.insert(version);
                        let why = format!("{version} was shown by a switch to after_commit");
                        history.unjudged.entry(key).or_insert(why);
                    }
                    drop(history);
                    self.log(format!("  n{slot}: {settings}"));
                }
                Err(err) => self.log(format!("  n{slot} refused the settings: {err}")),
            }
        }
    }

    /// Promotes the node in `slot`, as `POST /admin/promote` does, in a task of its own.
    fn promote(self: &Arc<Self>, slot: usize, force: bool) {
        let Some(node) = self.net.node(slot) else {
            self.log(format!("  n{slot} is down: not promoted"));
            return;
        };
        let world = Arc::clone(self);
        self.track(slot, async move {
            // A stopped process reads the request when it goes on.
            world.net.running(slot).await;
            match node.promote(force).await {
                Ok(promotion) => {
                    let may_lose = promotion.forced || !promotion.safe;
                    world.led(slot, &node, promotion.term, may_lose, promotion.forced);
                    world.log(format!(
                        "n{slot} promoted: term {}, merged {}, safe {}, forced {}",
                        promotion.term, promotion.merged, promotion.safe, promotion.forced
                    ));
                }
                Err(err) => world.log(format!(
                    "n{slot} not promoted: {}: {err}",
                    err.status_and_code().1
                )),
            }
        });
    }

    /// The node that leads the newest term, among those up and not paused.
    fn leader(&self) -> Option<(usize, Arc<Node>)> {
        let nodes = self.net.nodes();
        nodes
            .into_iter()
            .enumerate()
            .filter(|(slot, _)| !self.net.is_paused(*slot))
            .filter_map(|(slot, node)| {
                let node = node?;
                let term = node.replicator()?.term();
                Some((term, slot, node))
            })
            .max_by_key(|(term, slot, _)| (*term, *slot))
            .map(|(_, slot, node)| (slot, node))
    }

    /// One client: writes and leader reads until the run stops.
    async fn client(self: Arc<Self>, client: usize) {
        while !self.stopping.load(Ordering::SeqCst) {
            let pause = entropy::with(|rng| rng.random_range(1..=40));
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let target = if entropy::with(|rng| rng.random_bool(0.9)) {
                self.leader()
            } else {
                let slot = entropy::with(|rng| rng.random_range(0..NODES));
                self.net
                    .node(slot)
                    .filter(|_| !self.net.is_paused(slot))
                    .map(|node| (slot, node))
            };
            let Some((slot, node)) = target else {
                continue;
            };
            // Half the keys are hot, written again and again; half are written once, so that
            // the final state says exactly whether the write survived.
            let key = entropy::with(|rng| match rng.random_bool(0.5) {
                true => format!("k{}", rng.random_range(0..KEYS)),
                false => format!("u{}", self.next_value.fetch_add(1, Ordering::SeqCst)),
            });
            if entropy::with(|rng| rng.random_bool(0.25)) {
                self.read(slot, &node, key).await;
            } else {
                self.write(client, slot, &node, key).await;
            }
        }
    }

    /// A write on `node`, recorded when it is answered 200.
    async fn write(&self, client: usize, slot: usize, node: &Node, key: String) {
        let value = format!("v{}", self.next_value.fetch_add(1, Ordering::SeqCst));
        // The live quorum half of the time; now and then 0 (asynchronous), which makes every
        // promotion of the term unsafe.
        let asynchronous = self.profile.asynchronous;
        let quorum = entropy::with(|rng| match rng.random_range(0..100) {
            0..50 => None,
            50..55 if asynchronous => Some(0),
            _ => Some(rng.random_range(1..NODES)),
        });
        let term = node.replicator().map(|replicator| replicator.term());
        let call = self.step();
        let result = node.write(key.clone(), Some(value.clone()), quorum).await;
        // A stopped process answers when it goes on.
        self.net.running(slot).await;
        let answered = self.net.runs(slot, node.incarnation());
        let ret = self.step();
        self.record_write(&key, &value, call, answered.then_some(ret), &result);
        if !answered {
            self.log(format!(
                "c{client}: PUT {key}={value} on n{slot}: no answer (it crashed)"
            ));
            return;
        }
        let at_ms = self.now_ms();
        let applied = match &result {
            Ok(written) => Some((written.version, written.quorum, written.wait_point)),
            Err(Error::QuorumTimeout(write)) | Err(Error::QuorumNotAnnounced { write, .. }) => {
                Some((write.version, write.quorum, write.wait_point))
            }
            Err(_) => None,
        };
        if let Some((version, quorum, wait_point)) = applied {
            let after_sync = wait_point == WaitPoint::AfterSync;
            let applied = Applied { quorum, after_sync };
            self.history().applied.insert(version, applied);
        }
        match (result, term) {
            (Ok(written), Some(term)) => {
                self.log(format!(
                    "c{client}: PUT {key}={value} quorum {} on n{slot}: 200, version {}, term \
                     {term}, acked by {:?}",
                    written.quorum, written.version, written.acked_by
                ));
                self.history().acked.push(Acked {
                    at_ms,
                    node: slot,
                    incarnation: node.incarnation(),
                    term,
                    key,
                    value,
                    version: written.version,
                    quorum: written.quorum,
                });
            }
            (Ok(_), None) => self.log(format!(
                "c{client}: PUT {key}={value} on n{slot}: 200 from a node that did not lead"
            )),
            (Err(err), _) => self.log(format!(
                "c{client}: PUT {key}={value} quorum {quorum:?} on n{slot}: {}",
                err.status_and_code().1
            )),
        }
    }

    /// Records a write for the linearizability checker. Answered 200, it took effect between
    /// its call and its answer. Applied but not confirmed (a 503, or no answer: `ret` is `None`),
    /// it may have taken effect, or never. Refused before it was applied, it is no operation. A
    /// write that readers may see and that a safe promotion may still lose leaves its key
    /// unjudged: one of quorum 0, or one not confirmed under `after_commit`, which shows writes
    /// before their quorum.
    fn record_write(
        &self,
        key: &str,
        value: &str,
        call: u64,
        ret: Option<u64>,
        result: &Result<WriteResponse, Error>,
    ) {
        let (quorum, wait_point, confirmed) = match result {
            Ok(written) => (written.quorum, written.wait_point, true),
            Err(Error::QuorumTimeout(write)) | Err(Error::QuorumNotAnnounced { write, .. }) => {
                (write.quorum, write.wait_point, false)
            }
            Err(_) => return,
        };
        let ret = ret.filter(|_| confirmed);
        let mut history = self.history();
        if quorum == 0 {
            let why = format!("{value} was written at quorum 0");
            history.unjudged.entry(key.to_owned()).or_insert(why);
        } else if ret.is_none() && wait_point == WaitPoint::AfterCommit {
            let why = format!("{value} was not confirmed, under after_commit");
            history.unjudged.entry(key.to_owned()).or_insert(why);
        }
        let kind = Kind::Write(Some(value.to_owned()));
        let operation = Operation { call, ret, kind };
        history.operations.push((key.to_owned(), operation));
    }

    /// A read of `key` on `node`; recorded when the node leads under `after_sync`, and for the
    /// linearizability checker when no node holds a newer term than the one it leads.
    async fn read(&self, slot: usize, node: &Node, key: String) {
        let leading = node
            .replicator()
            .map(|replicator| (replicator.term(), replicator.settings().wait_point));
        let call = self.step();
        let read = node.read(key.clone(), Version::ZERO, Duration::ZERO).await;
        // Asked in the same poll as the read answered.
        let newest = (self.net.nodes().iter().flatten())
            .map(|node| node.replica().term)
            .max();
        self.net.running(slot).await;
        let answered = self.net.runs(slot, node.incarnation());
        let ret = self.step();
        let judged = match leading {
            Some((term, WaitPoint::AfterSync)) => answered && newest <= Some(term),
            _ => false,
        };
        if judged {
            self.record_read(key, call, ret, &read);
        }
        let Ok(read) = read else {
            return;
        };
        if let Some((term, WaitPoint::AfterSync)) = leading {
            let at_ms = self.now_ms();
            self.history().synced_reads.push(SyncedRead {
                at_ms,
                node: slot,
                incarnation: node.incarnation(),
                term,
                key: read.key,
                version: read.version,
            });
        }
    }

    /// Records a read for the linearizability checker: what it saw (nothing, when the key was
    /// not found).
    fn record_read(&self, key: String, call: u64, ret: u64, read: &Result<ReadResponse, Error>) {
        let seen = match read {
            Ok(read) => Some(read.value.clone()),
            Err(Error::NotFound { .. }) => None,
            Err(_) => return,
        };
        let kind = Kind::Read(seen);
        let operation = Operation {
            call,
            ret: Some(ret),
            kind,
        };
        self.history().operations.push((key, operation));
    }

    /// Samples every node's latest version, to catch one going back.
    async fn watch_versions(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            for (slot, node) in self.net.nodes().into_iter().enumerate() {
                if let Some(node) = node {
                    let version = node.version_and_keys().0;
                    self.history()
                        .observe_version(slot, node.incarnation(), version);
                }
            }
        }
    }

    /// Heals every fault: partitions, the weather, paused and crashed nodes (restarted as
    /// followers).
    fn heal_all(self: &Arc<Self>) {
        self.strike(Fault::Heal);
        self.strike(Fault::Weather(Weather::CALM));
        for slot in 0..NODES {
            if self.net.is_paused(slot) {
                self.strike(Fault::Resume(slot));
            }
            if self.net.node(slot).is_none() {
                self.strike(Fault::Restart {
                    node: slot,
                    leader: false,
                });
            }
        }
    }

    /// Once every fault healed: promotes a node if none leads, and waits for the cluster to
    /// converge. Returns the slots of the nodes that lead.
    async fn settle(self: &Arc<Self>) -> Vec<usize> {
        if self.profile.auto_failover {
            self.await_election().await;
        }
        tokio::time::sleep(SETTLE).await;
        // As an operator would: promote a node, and force it only when safe promotions were
        // refused (asynchronous writes, or too few nodes that hold a leader's state).
        for attempt in 0..NODES {
            if self.leader().is_some() {
                break;
            }
            let slot = entropy::with(|rng| rng.random_range(0..NODES));
            self.strike(Fault::Promote {
                nodes: vec![slot],
                force: attempt >= 3,
            });
            tokio::time::sleep(SETTLE).await;
        }
        let deadline = Instant::now() + CONVERGE;
        loop {
            let leaders = self.leaders();
            let states = self.states();
            let converged = states.windows(2).all(|pair| pair[0] == pair[1]);
            if (leaders.len() == 1 && converged) || Instant::now() >= deadline {
                return leaders;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// With automatic failover, right after the last heal: waits up to [`ELECTION_BOUND`] for a
    /// leader, and records how long it took when none led at the heal. When none was elected,
    /// tries a person's safe promotion on each node in turn: if one leads, the elections were
    /// less live than a person, which the run reports.
    async fn await_election(self: &Arc<Self>) {
        let healed = Instant::now();
        let led_at_heal = self.leader().is_some();
        let deadline = healed + ELECTION_BOUND;
        while self.leader().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.leader().is_some() {
            if !led_at_heal {
                let took = healed.elapsed().as_millis() as u64;
                self.log(format!("a leader {took} ms after the last heal"));
                self.history().leader_after_heal_ms = Some(took);
            }
            return;
        }
        for slot in 0..NODES {
            let Some(node) = self.net.node(slot) else {
                continue;
            };
            self.log(format!(
                "no leader {} s after the last heal: a person promotes n{slot}",
                ELECTION_BOUND.as_secs()
            ));
            match node.promote(false).await {
                Ok(promotion) => {
                    self.led(slot, &node, promotion.term, !promotion.safe, false);
                    self.log(format!("n{slot} promoted: term {}", promotion.term));
                    self.history().not_elected = Some(format!(
                        "no leader was elected within {} s of the last heal, though a person's \
                         safe promotion of n{slot} then led term {}",
                        ELECTION_BOUND.as_secs(),
                        promotion.term
                    ));
                    return;
                }
                Err(err) => self.log(format!("  n{slot} not promoted: {err}")),
            }
        }
    }

    /// The slots of the nodes that lead.
    fn leaders(&self) -> Vec<usize> {
        let nodes = self.net.nodes();
        (0..NODES)
            .filter(|&slot| {
                nodes[slot]
                    .as_ref()
                    .is_some_and(|node| node.replicator().is_some())
            })
            .collect()
    }

    /// Every node's state, as its readers see it.
    fn states(&self) -> Vec<State> {
        let nodes = self.net.nodes();
        nodes
            .iter()
            .map(|node| {
                let Some(node) = node else {
                    return State::new();
                };
                let replica = node.replica();
                (replica.store.entries())
                    .filter_map(|(key, _)| {
                        let entry = replica.read(key)?;
                        Some((key.to_owned(), (entry.value.clone(), entry.version)))
                    })
                    .collect()
            })
            .collect()
    }

    fn finish(&self, seed: u64, leaders: Vec<usize>) -> Outcome {
        let states = self.states();
        let history = self.history();
        let violations = history::check(&history, &states, &leaders);
        let mut lines = history.lines.clone();
        for (slot, state) in states.iter().enumerate() {
            let hot: Vec<String> = (state.iter())
                .filter(|(key, _)| key.starts_with('k'))
                .map(|(key, (value, version))| format!("{key}={value:?}@{version}"))
                .collect();
            let status = self.net.node(slot).map(|node| node.status());
            let role = status.map_or_else(
                || "down".to_owned(),
                |status| {
                    format!(
                        "{} of term {}, following {:?}",
                        status.role.as_str(),
                        status.term,
                        status.following
                    )
                },
            );
            lines.push(format!(
                "final n{slot}: {role}; {} keys; hot: {}",
                state.len(),
                hot.join(" ")
            ));
        }
        Outcome {
            seed,
            violations,
            schedule: self
                .schedule
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            history: lines,
            acked: history.acked.len(),
            leaderships: history.leadings.len(),
            // Of keys that were written: a read of a key nobody wrote proves little.
            judged_reads: (history.judged().values())
                .filter(|ops| ops.iter().any(|op| matches!(op.kind, Kind::Write(_))))
                .flatten()
                .filter(|op| matches!(op.kind, Kind::Read(_)))
                .count(),
            leader_after_heal_ms: history.leader_after_heal_ms,
            elections: history.elections.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's gate in `cargo test`: a few hundred seeds, each a run of faults, and
    /// every invariant checked after each.
    #[test]
    fn three_hundred_seeds_keep_every_invariant() {
        let summary = run_seeds(0, 300, 2).expect("the simulation runs");
        if let Some(first) = summary.failed.first() {
            print_outcome(first, true);
        }
        let failed: Vec<u64> = summary.failed.iter().map(|outcome| outcome.seed).collect();
        assert!(
            failed.is_empty(),
            "seeds that broke an invariant: {failed:?}"
        );
        // The runs did something: writes were acknowledged, leaders changed.
        assert!(
            summary.acked > 300 * 20,
            "{} writes acknowledged",
            summary.acked
        );
        assert!(
            summary.leaderships > 300,
            "{} leaderships",
            summary.leaderships
        );
    }

    /// A scripted run, on the same world: the test drives each step. No asynchronous writes,
    /// no forced promotions, and automatic failover as `auto_failover` says.
    fn scripted_with<T>(auto_failover: bool, script: impl AsyncFnOnce(Arc<World>) -> T) -> T {
        let profile = Profile {
            asynchronous: false,
            forcing: false,
            auto_failover,
        };
        let ran = in_world(1, Some(profile), async |world| {
            world.boot_cluster();
            tokio::time::sleep(Duration::from_secs(1)).await;
            script(world).await
        });
        ran.expect("a runtime")
    }

    /// [`scripted_with`], without automatic failover: only the test promotes.
    fn scripted<T>(script: impl AsyncFnOnce(Arc<World>) -> T) -> T {
        scripted_with(false, script)
    }

    /// With automatic failover, the leader crashed: a follower is elected within a few seconds
    /// by itself, safely (it merged enough followers), and the writes acknowledged before the
    /// crash are on it. The old leader, restarted as a follower, follows the new term.
    #[test]
    fn a_crashed_leader_is_replaced_by_an_election() {
        let (elected, value, rejoined) = scripted_with(true, async |world| {
            let node = |slot| world.net.node(slot).expect("up");
            let written = node(0).write("x".into(), Some("kept".into()), None).await;
            assert!(written.is_ok(), "{written:?}");
            let crashed = Instant::now();
            world.crash(0);
            let deadline = crashed + Duration::from_secs(10);
            while world.leader().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (slot, leader) = world.leader().expect("a leader was elected");
            let elected = (slot, crashed.elapsed(), leader.failover());
            let read = leader.read("x".into(), Version::ZERO, Duration::ZERO).await;
            world.boot(0, Role::Follower);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rejoined = node(0).status();
            (elected, read.map(|read| read.value), rejoined)
        });
        let (slot, took, failover) = elected;
        assert_ne!(slot, 0);
        let failover = failover.expect("the new leader says how it was elected");
        assert_eq!(
            failover.state,
            election::ElectionState::Elected,
            "{failover:?}"
        );
        assert_eq!(failover.term, Some(2));
        assert!(
            failover.why.contains("every write acknowledged"),
            "{failover:?}"
        );
        // Simulated time: FAILOVER_AFTER from the last heartbeat heard (up to one 500 ms tick
        // before the crash), plus at most half of it again, plus the election's round trips.
        let tick = crate::recovery::HEARTBEAT_INTERVAL;
        assert!(
            took >= FAILOVER_AFTER - tick && took < FAILOVER_AFTER * 3 / 2 + tick,
            "{took:?}"
        );
        assert_eq!(value.expect("the acknowledged write is kept"), "kept");
        assert_eq!(rejoined.term, 2);
        assert_eq!(
            rejoined.following,
            Some(2),
            "the old leader follows the new term"
        );
    }

    /// With automatic failover, a follower that alone stops hearing the leader (cut off from
    /// it, not from the others) does not raise the term: the others still hear the leader, so
    /// its pre-vote fails, and the leader leads on in term 1.
    #[test]
    fn a_follower_cut_off_from_the_leader_alone_does_not_depose_it() {
        let (term, failover) = scripted_with(true, async |world| {
            world.net.block(0, 3, true);
            world.net.block(3, 0, true);
            tokio::time::sleep(Duration::from_secs(6)).await;
            let (slot, leader) = world.leader().expect("a leader");
            assert_eq!(slot, 0);
            let cut_off = world.net.node(3).expect("up");
            (leader.replicator().map(|r| r.term()), cut_off.failover())
        });
        assert_eq!(term, Some(1));
        let failover = failover.expect("n3 ran elections");
        assert_eq!(failover.state, election::ElectionState::Refused);
        assert_eq!(
            failover.term, None,
            "the pre-vote refused: no term was raised"
        );
        assert!(failover.why.contains("hear no leader"), "{failover:?}");
    }

    /// Makes n0 a deposed leader under after_sync at quorum 5 holding a write no follower
    /// holds (hidden, answered 503) over an acknowledged one, with n1 (which took term 2)
    /// crashed: then promotes `candidate`, and returns what a read of the key shows on it at
    /// once, and once n1 is back and the new term's transfers went out.
    async fn promote_after_a_hidden_write(world: Arc<World>, candidate: usize) -> (String, String) {
        let node = |slot| world.net.node(slot).expect("up");
        acked_under_after_sync(&world, 5).await;
        // n0 alone: its next write reaches no follower, and stays hidden.
        world.strike(Fault::Split(vec![0]));
        let hidden = node(0).write("x".into(), Some("hidden".into()), None).await;
        assert_eq!(
            hidden.expect_err("no quorum").status_and_code().1,
            "quorum_timeout"
        );
        // n1 takes over with the others, then crashes; n0 hears of the newer term and steps
        // down, keeping what it holds.
        let promoted = node(1).promote(false).await.expect("a safe promotion");
        assert_eq!(promoted.term, 2);
        world.crash(1);
        world.strike(Fault::Heal);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(node(0).replicator().is_none(), "n0 stepped down");
        let promoted = node(candidate).promote(false).await.expect("promoted");
        assert_eq!(promoted.term, 3);
        let shown = read_x(node(candidate)).await;
        // n1 back: five followers hold the state of term 3, and the write its quorum.
        world.boot(1, Role::Follower);
        tokio::time::sleep(Duration::from_secs(3)).await;
        (shown, read_x(node(candidate)).await)
    }

    /// Switches n0, the leader, to after_sync at `quorum` and writes `x = acked` there.
    async fn acked_under_after_sync(world: &World, quorum: usize) {
        world.change(SettingsChange {
            write_quorum: Some(quorum),
            wait_point: Some(WaitPoint::AfterSync),
            ..SettingsChange::default()
        });
        let node = world.net.node(0).expect("up");
        let acked = node.write("x".into(), Some("acked".into()), None).await;
        assert!(acked.is_ok(), "{acked:?}");
    }

    /// What a read of `x` on `node` shows, or its error's code: waiting, as `GET /kv` does,
    /// for a new leader's followers to hold its state.
    async fn read_x(node: Arc<Node>) -> String {
        let read = node
            .read("x".into(), Version::ZERO, Duration::from_secs(1))
            .await;
        read.map_or_else(|err| err.status_and_code().1.to_owned(), |read| read.value)
    }

    /// A leader under after_sync, deposed with a write no follower holds, and promoted again:
    /// its readers must not see that write before the new term's quorum holds it (issue 22:
    /// `lead()` cleared what it hid, and showed it at once).
    #[test]
    fn a_deposed_after_sync_leader_promoted_again_hides_what_no_follower_holds() {
        let (shown, later) = scripted(async |world| promote_after_a_hidden_write(world, 0).await);
        assert_eq!(shown, "acked", "no follower held the hidden write");
        assert_eq!(later, "hidden", "its quorum holds it now");
    }

    /// The same deposed leader fenced by another candidate: its answer carries what its
    /// readers saw, not the write it hid, which the new leader must not show.
    #[test]
    fn a_candidate_does_not_merge_what_a_deposed_after_sync_leader_hid() {
        let (shown, later) = scripted(async |world| promote_after_a_hidden_write(world, 2).await);
        assert_eq!(shown, "acked", "no follower held the hidden write");
        assert_eq!(
            later, "acked",
            "only the deposed leader held it, and its state was replaced"
        );
    }

    /// The linearizability checker judges the clients' operations as the simulator records
    /// them. Under after_sync, a write no follower holds (answered 503) stays hidden from the
    /// leader's readers; after a safe promotion on the other side of a partition, the new leader
    /// has only the acknowledged write. Had the first read shown the hidden write (a phantom
    /// read, as under after_commit), the second read would have unseen it: with
    /// `Replica::read` returning the store's entry instead of what `hidden` shows, this test
    /// fails with "x is not linearizable".
    #[test]
    fn leader_reads_under_after_sync_are_linearizable_across_a_partition() {
        let (judged, reads) = scripted(async |world| {
            let node = |slot| world.net.node(slot).expect("up");
            world.change(SettingsChange {
                write_quorum: Some(5),
                wait_point: Some(WaitPoint::AfterSync),
                ..SettingsChange::default()
            });
            world.write(0, 0, &node(0), "x".into()).await;
            world.strike(Fault::Split(vec![0]));
            world.write(0, 0, &node(0), "x".into()).await;
            world.read(0, &node(0), "x".into()).await;
            let promoted = node(1).promote(false).await.expect("a safe promotion");
            assert!(promoted.safe, "{promoted:?}");
            world.change(SettingsChange {
                wait_point: Some(WaitPoint::AfterSync),
                ..SettingsChange::default()
            });
            // Its followers took the state of its term.
            tokio::time::sleep(Duration::from_millis(100)).await;
            world.read(1, &node(1), "x".into()).await;
            let history = world.history();
            let reads = (history.operations.iter())
                .filter(|(_, op)| matches!(op.kind, Kind::Read(_)))
                .count();
            (history::check_linearizable(&history), reads)
        });
        assert_eq!(reads, 2, "both reads were on a leader of the newest term");
        assert!(judged.is_empty(), "{judged:?}");
    }

    /// Under after_sync, a new leader shows what it inherited only once its term's followers
    /// hold it. n1 alone holds a write that no quorum acknowledged (answered 503); n0 crashes,
    /// n1 is promoted safely, and is cut off before its state transfer reaches anyone. Had n1
    /// shown that write, a reader would have seen a write the next safe promotion (n2, which
    /// merges the followers of the older term) does not have: a phantom read (seed 43046 of the
    /// long run found it, with a forced leader).
    #[test]
    fn a_new_leader_under_after_sync_shows_what_it_inherited_once_its_followers_hold_it() {
        let (shown, kept) = scripted(async |world| {
            let node = |slot| world.net.node(slot).expect("up");
            acked_under_after_sync(&world, 3).await;
            world.strike(Fault::Split(vec![0, 1]));
            let unconfirmed = node(0)
                .write("x".into(), Some("n1 only".into()), None)
                .await;
            assert_eq!(
                unconfirmed.expect_err("one ack of 3").status_and_code().1,
                "quorum_timeout"
            );
            world.crash(0);
            world.strike(Fault::Heal);
            let promoted = node(1).promote(false).await.expect("a safe promotion");
            assert!(promoted.safe, "{promoted:?}");
            world.strike(Fault::Split(vec![1]));
            let shown = read_x(node(1)).await;
            world.crash(1);
            world.boot(0, Role::Follower);
            world.boot(1, Role::Follower);
            world.strike(Fault::Heal);
            let promoted = node(2).promote(false).await.expect("a safe promotion");
            assert!(promoted.safe, "{promoted:?}");
            (shown, read_x(node(2)).await)
        });
        assert_eq!(
            kept, "acked",
            "no follower of the older term had the other write"
        );
        assert_eq!(
            shown, "state_not_replicated",
            "n1's followers did not take its state; showing its own would be a phantom read"
        );
    }

    /// The runs in which the simulator found defects (issue 22's long run over 100,000 seeds):
    /// a raise that lowered the floor below what most followers heard (8039, 67920, 89663: writes
    /// of quorum 1 acknowledged on a minority side and lost by a safe promotion), and a refused
    /// candidate that merged older states over a newer leader's transfer (46648: it never
    /// converged), and a new leader under after_sync that showed a write it alone held, which
    /// the next safe promotion lost (43046). Code changes make a seed run differently, so each
    /// fix has its own test too; these stay as runs that must keep passing.
    #[test]
    fn the_runs_that_found_defects_pass() {
        // 395704 found a gap in the checker, not the node: a forced candidate that reached
        // nobody took a term another leader held, which force is allowed to do. So did 164639:
        // a switch back to after_commit showed a write made under after_sync before its quorum
        // (as it shows every write), a read under after_sync after the switch back saw it, and
        // a safe promotion lost it, as it may lose any write made under after_commit.
        for seed in [8039, 43046, 46648, 67920, 89663, 164639, 395704] {
            let outcome = run(seed).expect("the simulation runs");
            if !outcome.passed() {
                print_outcome(&outcome, true);
            }
            assert!(outcome.passed(), "seed {seed}: {:?}", outcome.violations);
        }
    }

    /// A seed replays its run exactly, event for event; another seed makes another run.
    #[test]
    fn a_seed_replays_its_run_exactly() {
        for seed in [3, 42, 1000] {
            let first = run(seed).expect("the simulation runs");
            let again = run(seed).expect("the simulation runs");
            let differ = first
                .history
                .iter()
                .zip(&again.history)
                .find(|(a, b)| a != b);
            assert_eq!(differ, None, "seed {seed} ran differently");
            assert_eq!(first.history.len(), again.history.len());
            assert_eq!(first.schedule, again.schedule);
            let other = run(seed + 1).expect("the simulation runs");
            assert_ne!(first.digest(), other.digest());
        }
    }
}
