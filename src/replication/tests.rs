//! The leader's replication logic (fan-out, pipelines, links, quorum wait, heartbeats) driven
//! through a fake [`Transport`] on a paused clock: deterministic, and done in milliseconds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::transport::{BoxFuture, Failure, Result};
use super::wire::{
    Batch, BatchAck, EntryAck, Fence, FenceAck, Heartbeat, NodeStatus, StateTransfer, TransferAck,
};
use super::*;
use crate::events::{Event, FollowerIndex, Subscription};
use crate::settings::{SettingsChange, WaitPoint};

/// One batch as the fake follower received it.
#[derive(Clone, Debug)]
struct Received {
    follower: FollowerIndex,
    versions: Vec<Version>,
    at: Instant,
    answered: bool,
}

/// A transport to followers that live in memory and do what the test says.
#[derive(Debug, Default)]
struct Fake {
    /// The leader's term, which the followers report following.
    leader: AtomicU64,
    /// A newer term every follower has seen, when set: they refuse everything with
    /// `stale_term`.
    newer_term: Mutex<Option<Term>>,
    /// Whether another node took the leader's term at every follower: they refuse everything
    /// with `term_taken`.
    taken: AtomicBool,
    /// Followers that do not answer anything (down, or cut off by the network).
    down: Mutex<HashSet<FollowerIndex>>,
    /// Followers whose batches fail with a 500 while their heartbeat answers.
    failing_batches: Mutex<HashSet<FollowerIndex>>,
    /// How many of its next batches each follower fails before it answers again.
    fail_next: Mutex<HashMap<FollowerIndex, usize>>,
    /// How many of its next batches each follower answers with acks that name other versions
    /// (as an answer meant for another batch would).
    misanswer_next: Mutex<HashMap<FollowerIndex, usize>>,
    /// Versions every follower refuses.
    refused: Mutex<HashSet<Version>>,
    /// How long a batch takes.
    latency: Mutex<Duration>,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    transfers: AtomicUsize,
    heartbeats: AtomicBool,
    /// The settings the last heartbeat carried.
    heard: Mutex<Option<Settings>>,
    /// The smallest quorum the last heartbeat carried.
    heard_quorum: AtomicUsize,
}

impl Fake {
    fn received(&self, follower: FollowerIndex) -> Vec<Received> {
        let received = self.received.lock().expect("not poisoned");
        received
            .iter()
            .filter(|r| r.follower == follower)
            .cloned()
            .collect()
    }

    fn set(set: &Mutex<HashSet<FollowerIndex>>, follower: FollowerIndex, on: bool) {
        let mut set = set.lock().expect("not poisoned");
        if on {
            set.insert(follower);
        } else {
            set.remove(&follower);
        }
    }

    fn is_down(&self, follower: FollowerIndex) -> bool {
        self.down.lock().expect("not poisoned").contains(&follower)
    }

    /// The refusal of a follower that has seen a newer term, or that another node of this term
    /// took, if one was set.
    fn stale(&self) -> Result<()> {
        if self.taken.load(Ordering::SeqCst) {
            return Err(Failure::new("term_taken", "HTTP 409"));
        }
        match *self.newer_term.lock().expect("not poisoned") {
            Some(term) => Err(Failure {
                newer_term: Some((term, Some("http://new-leader".into()))),
                ..Failure::new("stale_term", "HTTP 409")
            }),
            None => Ok(()),
        }
    }

    fn status_of(&self, follower: FollowerIndex) -> NodeStatus {
        NodeStatus {
            node_id: format!("f{follower}"),
            role: crate::config::Role::Follower,
            term: self.leader.load(Ordering::SeqCst),
            incarnation: follower as u64,
            following: Some(self.leader.load(Ordering::SeqCst)),
            filled: true,
            leader_url: None,
            public_url: None,
            resp_addr: None,
            version: Version::ZERO,
            keys: 0,
            hears_leader: true,
        }
    }
}

impl Transport for Fake {
    fn replicate(&self, follower: FollowerIndex, batch: Batch) -> BoxFuture<'_, Result<BatchAck>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            let latency = *self.latency.lock().expect("not poisoned");
            tokio::time::sleep(latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.stale()?;
            let fail = self.is_down(follower)
                || self
                    .failing_batches
                    .lock()
                    .expect("not poisoned")
                    .contains(&follower)
                || self
                    .fail_next
                    .lock()
                    .expect("not poisoned")
                    .get_mut(&follower)
                    .is_some_and(|n| {
                        let fail = *n > 0;
                        *n = n.saturating_sub(1);
                        fail
                    });
            self.received.lock().expect("not poisoned").push(Received {
                follower,
                versions: batch.writes.iter().map(|w| w.version).collect(),
                at: Instant::now(),
                answered: !fail,
            });
            if fail {
                return Err(Failure::new("server_error", "HTTP 500"));
            }
            let misanswer = (self.misanswer_next.lock().expect("not poisoned"))
                .get_mut(&follower)
                .is_some_and(|n| {
                    let misanswer = *n > 0;
                    *n = n.saturating_sub(1);
                    misanswer
                });
            let refused = self.refused.lock().expect("not poisoned");
            let acks = batch
                .writes
                .iter()
                .map(|write| EntryAck {
                    version: if misanswer {
                        Version::new(write.version.term, write.version.counter + 1000)
                    } else {
                        write.version
                    },
                    applied: !refused.contains(&write.version),
                    refused: refused
                        .contains(&write.version)
                        .then(|| "invalid key".to_owned()),
                })
                .collect();
            Ok(BatchAck {
                node_id: format!("f{follower}"),
                acks,
            })
        })
    }

    fn heartbeat(
        &self,
        follower: FollowerIndex,
        heartbeat: Heartbeat,
    ) -> BoxFuture<'_, Result<NodeStatus>> {
        Box::pin(async move {
            self.heartbeats.store(true, Ordering::SeqCst);
            *self.heard.lock().expect("not poisoned") = Some(heartbeat.settings);
            (self.heard_quorum).store(heartbeat.smallest_quorum, Ordering::SeqCst);
            if self.is_down(follower) {
                return Err(Failure::new("connect", "connection refused"));
            }
            self.stale()?;
            Ok(self.status_of(follower))
        })
    }

    fn status(&self, follower: FollowerIndex) -> BoxFuture<'_, Result<NodeStatus>> {
        Box::pin(async move { Ok(self.status_of(follower)) })
    }

    fn fence(&self, _: FollowerIndex, _: Fence) -> BoxFuture<'_, Result<FenceAck>> {
        Box::pin(async { Err(Failure::new("connect", "not in these tests")) })
    }

    fn transfer(
        &self,
        follower: FollowerIndex,
        transfer: StateTransfer,
    ) -> BoxFuture<'_, Result<TransferAck>> {
        Box::pin(async move {
            self.transfers.fetch_add(1, Ordering::SeqCst);
            Ok(TransferAck {
                node_id: format!("f{follower}"),
                replaced: false,
                version: transfer.version,
            })
        })
    }
}

const NO_LAG: Settings = Settings {
    write_quorum: 1,
    min_delay_ms: 0,
    max_delay_ms: 0,
    replicate_timeout_ms: 5_000,
    wait_point: WaitPoint::AfterCommit,
    auto_failover: false,
};

/// A leader with `followers` fake followers.
/// Version `counter` of term 7, the term of the [`leader`] of these tests.
fn v(counter: u64) -> Version {
    Version::new(7, counter)
}

fn leader(followers: usize, settings: Settings, backlog: usize) -> (Replicator, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let urls: Vec<reqwest::Url> = (0..followers)
        .map(|i| format!("http://f{i}:9000").parse().expect("a URL"))
        .collect();
    let leadership = Leadership {
        term: 7,
        incarnation: 42,
        public_url: None,
        resp_public_addr: None,
        settings,
        backlog,
        smallest_quorum: settings.write_quorum,
        wake_reads: Arc::default(),
        inherits: false,
    };
    let replica = SharedReplica::default();
    lock(&replica).term = 7;
    lock(&replica).store.begin_term(7, 0);
    let replicator = Replicator::new(
        leadership,
        &urls,
        Arc::clone(&fake) as Arc<dyn Transport>,
        replica,
        Arc::new(Metrics::new()),
        Arc::new(LagClock::tokio()),
    );
    fake.leader.store(replicator.term(), Ordering::SeqCst);
    (replicator, fake)
}

/// Applies a write of `key` on the leader and replicates it, as the PUT handler does.
async fn write(replicator: &Replicator, key: &str, quorum: usize) -> QuorumOutcome {
    let (entry, wait_point) = replicator
        .apply(key, Some("v".into()), quorum)
        .expect("the leader of its term");
    let write = Arc::new(Write::new(key.to_owned(), entry));
    replicator.replicate(write, quorum, wait_point).await
}

/// Starts `count` writes at once and waits for all their outcomes.
async fn concurrent_writes(
    replicator: &Replicator,
    count: usize,
    quorum: usize,
) -> Vec<QuorumOutcome> {
    writes_every(replicator, count, Duration::ZERO, quorum).await
}

/// Starts `count` writes, write `i` after `i * every`, and waits for all their outcomes.
async fn writes_every(
    replicator: &Replicator,
    count: usize,
    every: Duration,
    quorum: usize,
) -> Vec<QuorumOutcome> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let replicator = replicator.clone();
            tokio::spawn(async move {
                if !every.is_zero() {
                    tokio::time::sleep(every * i as u32).await;
                }
                write(&replicator, &format!("k{i}"), quorum).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("joined"));
    }
    outcomes
}

fn view(replicator: &Replicator, follower: FollowerIndex) -> FollowerView {
    replicator.followers()[follower].clone()
}

/// Every event published so far.
fn drain(events: &mut Subscription) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok().map(|stamped| stamped.event)).collect()
}

#[tokio::test(start_paused = true)]
async fn writes_due_together_share_a_batch() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    *fake.latency.lock().expect("not poisoned") = Duration::from_millis(5);
    let outcomes = concurrent_writes(&replicator, 200, 1).await;
    assert!(outcomes.iter().all(QuorumOutcome::reached));

    let received = fake.received(0);
    let mut versions: Vec<Version> = received.iter().flat_map(|r| r.versions.clone()).collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=200).map(v).collect::<Vec<_>>(),
        "each write sent once"
    );
    assert!(
        received.len() <= pipeline::MAX_IN_FLIGHT + 1,
        "200 writes due at once went in {} batches",
        received.len()
    );
    assert!(fake.most_in_flight.load(Ordering::SeqCst) <= pipeline::MAX_IN_FLIGHT);
    let follower = view(&replicator, 0);
    assert_eq!((follower.pending, follower.acked_version), (0, v(200)));
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_keeps_several_batches_in_flight_but_no_more() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    *fake.latency.lock().expect("not poisoned") = Duration::from_millis(100);
    // Writes arrive one every 10 ms while each batch takes 100 ms.
    let outcomes = writes_every(&replicator, 60, Duration::from_millis(10), 1).await;
    assert!(outcomes.iter().all(QuorumOutcome::reached));
    assert_eq!(
        fake.most_in_flight.load(Ordering::SeqCst),
        pipeline::MAX_IN_FLIGHT
    );
    let received = fake.received(0);
    assert!(
        received.len() < 60,
        "{} batches for 60 writes",
        received.len()
    );
    assert!(received.iter().any(|r| r.versions.len() > 1));
}

#[tokio::test(start_paused = true)]
async fn writes_wait_for_a_fast_batch_rather_than_going_in_a_second_one() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    // Each batch takes a millisecond less than SLOW_BATCH; a write arrives every millisecond
    // (the paused clock moves in whole milliseconds).
    *fake.latency.lock().expect("not poisoned") = pipeline::SLOW_BATCH - Duration::from_millis(1);
    let outcomes = writes_every(&replicator, 100, Duration::from_millis(1), 1).await;
    assert!(outcomes.iter().all(QuorumOutcome::reached));
    assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 1);
    // One batch per batch time (4 ms) over the 100 ms, and the first.
    let batches = fake.received(0).len();
    assert!(batches <= 26, "100 writes in {batches} batches");
}

#[tokio::test(start_paused = true)]
async fn a_message_is_due_its_lag_after_the_write_was_applied() {
    let settings = Settings {
        min_delay_ms: 120,
        max_delay_ms: 120,
        ..NO_LAG
    };
    let (replicator, fake) = leader(2, settings, 10_000);
    let started = Instant::now();
    let outcome = write(&replicator, "k", 2).await;
    assert!(outcome.reached());
    for follower in 0..2 {
        let received = fake.received(follower);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].at - started, Duration::from_millis(120));
    }
    assert_eq!(started.elapsed(), Duration::from_millis(120));
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_names_other_writes_counts_none_of_them() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    let mut events = replicator.events().subscribe();
    fake.misanswer_next
        .lock()
        .expect("not poisoned")
        .insert(0, 1);
    let outcomes = concurrent_writes(&replicator, 10, 1).await;
    for outcome in &outcomes {
        assert_eq!(outcome.acked_by, vec!["f0".to_owned()]);
    }
    let received = fake.received(0);
    assert!(
        received.len() >= 2,
        "the misanswered writes were sent again: {received:?}"
    );
    let acks: Vec<Version> = (drain(&mut events).iter())
        .filter_map(|e| match e {
            Event::Ack { version, .. } => Some(*version),
            _ => None,
        })
        .collect();
    let mut sorted = acks.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=10).map(v).collect::<Vec<_>>(),
        "acked once each"
    );
}

#[tokio::test(start_paused = true)]
async fn the_writes_of_a_failed_batch_are_retried_and_acked_exactly_once() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    let mut events = replicator.events().subscribe();
    fake.fail_next.lock().expect("not poisoned").insert(0, 2);
    let outcomes = concurrent_writes(&replicator, 10, 1).await;
    for outcome in &outcomes {
        assert_eq!(outcome.acked_by, vec!["f0".to_owned()]);
    }
    let received = fake.received(0);
    let failed = received.iter().filter(|r| !r.answered).count();
    assert_eq!(failed, 2, "{received:?}");
    let mut answered: Vec<Version> = received
        .iter()
        .filter(|r| r.answered)
        .flat_map(|r| r.versions.clone())
        .collect();
    answered.sort_unstable();
    assert_eq!(
        answered,
        (1..=10).map(v).collect::<Vec<_>>(),
        "acked once each"
    );

    let events = drain(&mut events);
    let acks: Vec<Version> = events
        .iter()
        .filter_map(|e| match e {
            Event::Ack { version, .. } => Some(*version),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 10);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Send { attempt: 3, .. }))
    );
    let follower = view(&replicator, 0);
    assert_eq!((follower.pending, follower.retrying), (0, 0));
    assert_eq!(follower.last_error, None);
}

#[tokio::test(start_paused = true)]
async fn the_backlog_bound_is_reached_at_exactly_replication_backlog_writes() {
    const BACKLOG: usize = 5;
    let (replicator, fake) = leader(1, NO_LAG, BACKLOG);
    Fake::set(&fake.failing_batches, 0, true);
    for i in 0..BACKLOG {
        write(&replicator, &format!("k{i}"), 0).await;
    }
    // Let the failing batches retry for a while: the writes stay pending, none is dropped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let follower = view(&replicator, 0);
    assert_eq!(follower.pending, BACKLOG, "{follower:?}");
    assert_eq!(follower.retrying, BACKLOG);
    assert!(!follower.transfer_pending, "{follower:?}");

    write(&replicator, "one-more", 0).await;
    let follower = view(&replicator, 0);
    assert!(follower.transfer_pending, "{follower:?}");
    assert_eq!(
        follower.pending, BACKLOG,
        "the write past the bound was not queued"
    );

    // The pending writes give up at their next failure, and the heartbeat sends the transfer.
    Fake::set(&fake.failing_batches, 0, false);
    replicator.spawn_heartbeats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let follower = view(&replicator, 0);
    assert_eq!(fake.transfers.load(Ordering::SeqCst), 1);
    assert_eq!(
        (follower.pending, follower.retrying),
        (0, 0),
        "{follower:?}"
    );
    assert_eq!(follower.transfers, 1);
    assert!(!follower.transfer_pending);
    assert_eq!(follower.state, FollowerState::Up);
}

/// Under `after_sync`, a write shows on the leader by the time its quorum wait ends, and one that
/// timed out shows once a state transfer carried it to the follower it lacked.
#[tokio::test(start_paused = true)]
async fn after_sync_shows_a_write_at_its_quorum_or_after_a_transfer() {
    let settings = Settings {
        replicate_timeout_ms: 1_000,
        wait_point: WaitPoint::AfterSync,
        ..NO_LAG
    };
    let (replicator, fake) = leader(2, settings, 100);
    let shown = |key: &str| lock(&replicator.replica).read(key).map(|e| e.version);
    let acked = write(&replicator, "a", 2).await;
    assert!(acked.reached(), "{acked:?}");
    assert!(shown("a").is_some(), "visible when its quorum wait ends");

    // Follower 1 is down: the write times out, hidden, and stays hidden when the leader gives
    // the follower up (10 s); back, it gets a state transfer, which is its ack.
    Fake::set(&fake.down, 1, true);
    let started = Instant::now();
    let timed_out = write(&replicator, "b", 2).await;
    assert!(!timed_out.reached(), "{timed_out:?}");
    assert_eq!(shown("b"), None, "hidden after its 503");
    replicator.spawn_heartbeats();
    tokio::time::sleep_until(started + GIVE_UP_AFTER_DOWN + Duration::from_millis(2_500)).await;
    assert!(view(&replicator, 1).transfer_pending);
    assert_eq!(shown("b"), None, "still hidden: no second ack yet");
    Fake::set(&fake.down, 1, false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.transfers.load(Ordering::SeqCst), 1, "one transfer");
    assert!(shown("b").is_some(), "the transfer was the second ack");
}

#[tokio::test(start_paused = true)]
async fn a_settings_change_goes_out_in_a_heartbeat_at_once() {
    let (replicator, fake) = leader(2, NO_LAG, 100);
    replicator.spawn_heartbeats();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let heard = || {
        fake.heard
            .lock()
            .expect("not poisoned")
            .map(|s| s.wait_point)
    };
    assert_eq!(heard(), Some(WaitPoint::AfterCommit), "the first heartbeat");
    let change = SettingsChange {
        wait_point: Some(WaitPoint::AfterSync),
        ..SettingsChange::default()
    };
    replicator.change_settings(change, 15_000).expect("valid");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        heard(),
        Some(WaitPoint::AfterSync),
        "heard 10 ms after the change, long before the next tick"
    );
}

/// A write with the smallest quorum of the term yet: every follower hears of it at once, in a
/// heartbeat, before the write's own batch arrives, so a failover then counts with it.
#[tokio::test(start_paused = true)]
async fn a_smaller_quorum_goes_out_in_a_heartbeat_at_once() {
    let lagged = Settings {
        write_quorum: 2,
        min_delay_ms: 100,
        max_delay_ms: 100,
        ..NO_LAG
    };
    let (replicator, fake) = leader(2, lagged, 100);
    replicator.spawn_heartbeats();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let heard = || fake.heard_quorum.load(Ordering::SeqCst);
    assert_eq!(heard(), 2, "the first heartbeat");
    let (outcome, heard_meanwhile) = tokio::join!(write(&replicator, "a", 1), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        (heard(), fake.received(0).len() + fake.received(1).len())
    });
    assert!(outcome.reached());
    assert_eq!(
        heard_meanwhile,
        (1, 0),
        "heard 10 ms after the write, before its batch (100 ms of lag) and the next tick"
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_down_for_ten_seconds_is_given_up_for_a_state_transfer() {
    let (replicator, fake) = leader(2, NO_LAG, 10_000);
    Fake::set(&fake.down, 1, true);
    let started = Instant::now();
    let outcome = write(&replicator, "k", 1).await;
    assert_eq!(outcome.acked_by, vec!["f0".to_owned()]);

    tokio::time::sleep_until(started + GIVE_UP_AFTER_DOWN - Duration::from_millis(500)).await;
    let follower = view(&replicator, 1);
    assert_eq!(
        (follower.pending, follower.retrying),
        (1, 1),
        "{follower:?}"
    );
    assert!(!follower.transfer_pending);
    let attempts = fake.received(1).len();
    assert!(attempts >= 5, "retried with backoff: {attempts} attempts");

    tokio::time::sleep_until(started + GIVE_UP_AFTER_DOWN + Duration::from_millis(2_500)).await;
    let follower = view(&replicator, 1);
    assert_eq!(
        (follower.pending, follower.retrying),
        (0, 0),
        "{follower:?}"
    );
    assert!(follower.transfer_pending);
    let given_up_at = fake.received(1).len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        fake.received(1).len(),
        given_up_at,
        "no retry after giving up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_follower_gets_nothing_until_restored_then_catches_up() {
    let settings = Settings {
        replicate_timeout_ms: 1_000,
        ..NO_LAG
    };
    let (replicator, fake) = leader(2, settings, 10_000);
    let cut = replicator.set_cut_off("f1:9000", true).expect("a follower");
    assert!(cut.cut_off);

    let started = Instant::now();
    let outcome = write(&replicator, "k", 2).await;
    assert_eq!(outcome.acked_by, vec!["f0".to_owned()]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "503 at the timeout"
    );
    assert!(
        fake.received(1).is_empty(),
        "nothing reached the cut-off follower"
    );
    let follower = view(&replicator, 1);
    assert_eq!(follower.pending, 1);
    assert!(follower.last_error.is_some_and(|e| e.contains("cut off")));

    replicator
        .set_cut_off("f1:9000", false)
        .expect("a follower");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let follower = view(&replicator, 1);
    assert_eq!(
        (follower.pending, follower.acked_version),
        (0, v(1)),
        "{follower:?}"
    );
    assert_eq!(fake.received(1).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn live_settings_apply_to_the_next_message_and_to_retries() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    let mut events = replicator.events().subscribe();
    let lag = |ms| SettingsChange {
        min_delay_ms: Some(ms),
        max_delay_ms: Some(ms),
        ..SettingsChange::default()
    };
    replicator.change_settings(lag(300), 15_000).expect("valid");
    let started = Instant::now();
    assert!(write(&replicator, "a", 1).await.reached());
    assert_eq!(fake.received(0)[0].at - started, Duration::from_millis(300));

    // A retry draws its lag from the settings of its own time.
    fake.fail_next.lock().expect("not poisoned").insert(0, 1);
    let waiting = tokio::spawn({
        let replicator = replicator.clone();
        async move { write(&replicator, "b", 1).await }
    });
    // Changed while its first attempt is on its way (it fails 300 ms after the write).
    tokio::time::sleep(Duration::from_millis(100)).await;
    replicator.change_settings(lag(40), 15_000).expect("valid");
    assert!(waiting.await.expect("joined").reached());
    let sends: Vec<(u32, f64)> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            Event::Send {
                attempt, delay_ms, ..
            } => Some((attempt, delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(sends, vec![(1, 300.0), (1, 300.0), (2, 40.0)]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_write_does_not_hold_back_the_others_of_its_batch() {
    let (replicator, fake) = leader(1, NO_LAG, 10_000);
    fake.refused.lock().expect("not poisoned").insert(v(2));
    let outcomes = concurrent_writes(&replicator, 3, 1).await;
    let reached: Vec<bool> = outcomes.iter().map(QuorumOutcome::reached).collect();
    assert_eq!(reached, vec![true, false, true]);
    let follower = view(&replicator, 0);
    assert!(
        follower.transfer_pending,
        "the transfer carries the refused write"
    );
    assert_eq!((follower.pending, follower.acked_version), (0, v(3)));
}

#[tokio::test(start_paused = true)]
async fn a_write_waits_no_longer_than_the_acks_that_can_still_come() {
    let (replicator, fake) = leader(2, NO_LAG, 1);
    Fake::set(&fake.failing_batches, 0, true);
    Fake::set(&fake.failing_batches, 1, true);
    // Both followers' backlogs (of one) fill up with the first write.
    write(&replicator, "a", 0).await;
    let started = Instant::now();
    let outcome = write(&replicator, "b", 2).await;
    assert!(!outcome.reached());
    assert_eq!(started.elapsed(), Duration::ZERO, "no follower will ack it");
}

#[tokio::test(start_paused = true)]
async fn a_follower_of_a_newer_term_deposes_the_leader_and_its_writes_fail() {
    let (replicator, fake) = leader(3, NO_LAG, 100);
    assert!(write(&replicator, "before", 1).await.reached());
    *fake.newer_term.lock().expect("not poisoned") = Some(9);
    let outcome = write(&replicator, "after", 1).await;
    assert!(
        !outcome.reached(),
        "a deposed leader's write got {outcome:?}"
    );
    assert!(replicator.is_deposed());
    let replica = lock(&replicator.replica);
    assert_eq!(replica.term, 9, "the node adopted the newer term");
    assert_eq!(replica.leader_url.as_deref(), Some("http://new-leader"));
}

#[tokio::test(start_paused = true)]
async fn every_batch_carries_the_smallest_quorum_of_the_term() {
    let (replicator, _fake) = leader(
        5,
        Settings {
            write_quorum: 3,
            ..NO_LAG
        },
        100,
    );
    assert_eq!(replicator.smallest_quorum(), 3);
    assert!(write(&replicator, "a", 2).await.reached());
    assert!(write(&replicator, "b", 3).await.reached());
    assert_eq!(
        replicator.smallest_quorum(),
        2,
        "a per-write quorum of 2 counts"
    );
}

/// A leader of five followers at quorum 3, with a replication timeout of 1 s, sending its
/// heartbeats.
fn five_followers_at_quorum_3() -> (Replicator, Arc<Fake>) {
    let settings = Settings {
        write_quorum: 3,
        replicate_timeout_ms: 1_000,
        ..NO_LAG
    };
    let (replicator, fake) = leader(5, settings, 100);
    replicator.spawn_heartbeats();
    (replicator, fake)
}

/// The partition case of THEORY section 8: the leader is cut off with two of its five followers
/// and lowers its quorum from 3 to 2. The three followers on the other side never hear of the
/// lower quorum, and a promotion there counts with 3 (it merges 3 >= 5 - 3 + 1): a write that
/// only followers 3 and 4 hold must not be acknowledged. Once three followers heard of quorum 2,
/// every set a promotion may count holds one of them, and writes with quorum 2 count.
#[tokio::test(start_paused = true)]
async fn a_lowered_quorum_counts_only_once_enough_followers_heard_of_it() {
    let (replicator, fake) = five_followers_at_quorum_3();
    for follower in 0..3 {
        Fake::set(&fake.down, follower, true);
    }
    let outcome = write(&replicator, "x", 2).await;
    assert_eq!(outcome.acks(), 2, "followers 3 and 4 hold it");
    assert!(
        !outcome.reached(),
        "only 2 of 5 followers heard of quorum 2"
    );
    let unannounced = Unannounced {
        floor: 3,
        heard: 2,
        unsynced: None,
    };
    assert_eq!(outcome.unannounced, Some(unannounced), "{outcome:?}");

    for follower in 0..3 {
        Fake::set(&fake.down, follower, false);
    }
    let outcome = write(&replicator, "y", 2).await;
    assert!(outcome.reached(), "{outcome:?}");
    assert_eq!(outcome.unannounced, None);
}

/// Once at least `WRITE_QUORUM` followers hold every write, the term's smallest quorum is
/// announced at the settings' quorum again, in a new epoch: a `?quorum=1` write does not make
/// every later promotion need all N followers. Not while fewer followers hold everything.
#[tokio::test(start_paused = true)]
async fn the_settings_quorum_is_announced_again_once_enough_followers_hold_every_write() {
    let (replicator, fake) = five_followers_at_quorum_3();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(write(&replicator, "low", 1).await.reached());
    assert_eq!(replicator.smallest_quorum(), 1);
    // Three followers go away before the next write: two hold it, too few for quorum 3.
    for follower in 0..3 {
        Fake::set(&fake.down, follower, true);
    }
    assert!(write(&replicator, "low again", 1).await.reached());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replicator.smallest_quorum(),
        1,
        "two followers hold everything"
    );
    for follower in 0..3 {
        Fake::set(&fake.down, follower, false);
    }
    // The three come back, catch up by retries, and hold everything: quorum 3 again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(replicator.shared.announced(), (1, 3));
    assert_eq!(
        fake.heard_quorum.load(Ordering::SeqCst),
        3,
        "heartbeats carry it"
    );
}

/// Found by CI under load: a `?quorum=1` write reached its quorum, and the floor dropped to 1
/// once three followers heard of it, but before its handler woke, a heartbeat raised the
/// announcement back to 3 (every follower held every write by then), and the floor with it.
/// The write then waited out its timeout and answered 503, though all its followers held it.
/// A write held by as many followers as the floor counts: any promotion counted safe merges
/// one of them, as for a write of quorum `floor`. Held by fewer, it does not.
#[tokio::test(start_paused = true)]
async fn a_write_held_by_as_many_followers_as_the_floor_counts_after_a_raise() {
    let (replicator, _fake) = five_followers_at_quorum_3();
    assert!(write(&replicator, "synced", 3).await.reached());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // No await from here to the raise: the heartbeats cannot step in between.
    let shared = &replicator.shared;
    shared.use_quorum(1);
    let (epoch, announced) = shared.announced();
    assert_eq!(announced, 1);
    for follower in 0..3 {
        shared.heard(follower, epoch, 1);
    }
    assert_eq!(shared.floor(), 1, "three followers heard of quorum 1");
    shared.try_raise();
    assert_eq!(
        shared.announced(),
        (epoch + 1, 3),
        "every follower holds everything"
    );
    assert_eq!(shared.floor(), 3, "the raise took the floor back to 3");

    let deadline = Instant::now() + Duration::from_secs(1);
    let held_by = |followers: std::ops::Range<usize>| {
        let tally = quorum::Tally::new(1, 5);
        followers.for_each(|follower| {
            tally.ack(follower);
        });
        tally
    };
    let tally = held_by(0..3);
    assert_eq!(
        shared.wait_for_floor(1, &tally, deadline).await,
        None,
        "three followers hold it: it counts"
    );
    let tally = held_by(0..2);
    let unannounced = Unannounced {
        floor: 3,
        heard: 0,
        unsynced: None,
    };
    assert_eq!(
        shared.wait_for_floor(1, &tally, deadline).await,
        Some(unannounced),
        "two followers hold it, and none heard of quorum 1 since the raise"
    );
    assert_eq!(
        Instant::now(),
        deadline,
        "it waited for more acks until the deadline"
    );
}

/// A follower refuses this leader's message because another node took its term there (two
/// leaders of one term, after a forced promotion): the leader steps down, and its waiting write
/// answers at once rather than at its timeout.
#[tokio::test(start_paused = true)]
async fn a_follower_taken_by_another_leader_of_the_term_deposes_this_one() {
    let (replicator, fake) = leader(3, NO_LAG, 100);
    replicator.spawn_heartbeats();
    fake.taken.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let outcome = write(&replicator, "k", 1).await;
    assert!(!outcome.reached());
    assert!(replicator.is_deposed());
    assert!(
        started.elapsed() < Duration::from_millis(5_000),
        "not its timeout"
    );
    let replica = lock(&replicator.replica);
    assert_eq!(replica.term, 7, "the term stays: it was taken, not passed");
    assert_eq!(replica.following, Some(7), "it holds its own term's state");
}

/// A leader steps down once: a refusal that comes back after the node followed a newer term's
/// leader (whose transfer set what it follows and the quorum it heard) changes none of that.
#[tokio::test(start_paused = true)]
async fn a_late_refusal_after_stepping_down_changes_nothing() {
    let (replicator, _fake) = leader(3, NO_LAG, 100);
    replicator.step_down(&mut lock(&replicator.replica));
    {
        // The newer term's leader took the node over and its transfer filled it.
        let mut replica = lock(&replicator.replica);
        replica.term = 9;
        replica.following = Some(9);
        replica.smallest_quorum = Some(1);
        replica.quorum_epoch = 4;
    }
    let late = Failure {
        kind: "term_taken",
        reason: "a heartbeat sent before the step down".into(),
        newer_term: None,
    };
    assert!(replicator.shared.refused(&late));
    let replica = lock(&replicator.replica);
    assert_eq!(
        (
            replica.following,
            replica.smallest_quorum,
            replica.quorum_epoch
        ),
        (Some(9), Some(1), 4),
        "what the newer term's transfer set stands"
    );
}

/// Under after_sync, the leader hides at most `REPLICATION_BACKLOG` writes that no quorum
/// acknowledged: the next is refused before it is applied, and a write that needs no quorum, or
/// one made once some became visible, goes through.
#[tokio::test(start_paused = true)]
async fn hidden_writes_are_bounded_by_the_replication_backlog() {
    const BACKLOG: usize = 3;
    let after_sync = Settings {
        wait_point: WaitPoint::AfterSync,
        replicate_timeout_ms: 100,
        ..NO_LAG
    };
    let (replicator, fake) = leader(1, after_sync, BACKLOG);
    Fake::set(&fake.down, 0, true);
    for i in 0..BACKLOG {
        let outcome = write(&replicator, &format!("k{i}"), 1).await;
        assert!(!outcome.reached(), "nobody acknowledges");
    }
    assert_eq!(lock(&replicator.replica).hidden.len(), BACKLOG);
    let refused = replicator.apply("one-more", Some("v".into()), 1);
    match refused {
        Err(Error::TooManyHidden { hidden, limit }) => assert_eq!((hidden, limit), (3, 3)),
        other => panic!("expected too_many_hidden, got {other:?}"),
    }
    assert_eq!(
        lock(&replicator.replica).store.version_of("one-more"),
        None,
        "refused before it was applied"
    );
    assert!(
        replicator.apply("async", Some("v".into()), 0).is_ok(),
        "quorum 0 hides nothing"
    );
}
