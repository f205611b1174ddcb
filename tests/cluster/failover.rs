//! Failover: the leader dies or freezes, `semisync-kv failover` promotes a follower, and no write
//! a client was told succeeded is lost (W >= 1); the old leader is fenced, steps down, and
//! follows the new one when it comes back.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use semisync_kv::Version;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common;
use crate::helpers::{NodeExt, TestCluster, base, eventually, semisync_kv, send, settings};
use crate::linearizability::{self, Kind, Operation, Recorded};

/// A cluster whose writes wait for `write_quorum` acks, with lag up to `max_delay_ms`.
fn cluster_settings(write_quorum: usize, min_delay_ms: u64, max_delay_ms: u64) -> LocalSettings {
    LocalSettings {
        settings: Settings {
            write_quorum,
            min_delay_ms,
            max_delay_ms,
            ..base()
        },
        ..settings()
    }
}

/// `semisync-kv failover --to URL --json [--force]`: the exit code, and the JSON answer or the
/// error text.
fn failover(to: &str, force: bool) -> (i32, Value, String) {
    let mut args = vec!["failover", "--to", to, "--json"];
    if force {
        args.push("--force");
    }
    let (code, stdout, stderr) = semisync_kv(&args);
    (
        code,
        serde_json::from_str(&stdout).unwrap_or_default(),
        stderr,
    )
}

/// One write of the client log: its key and unique value, the HTTP status, and the version the
/// leader gave it (also on a 503; unknown when the leader died before answering).
#[derive(Clone, Debug)]
struct Logged {
    key: String,
    value: String,
    status: Option<StatusCode>,
    version: Option<Version>,
}

/// Clients write unique values to the leader at `leader` until `stop`; keys are `k0..k{keys}`
/// when `keys` is set (so that later writes overwrite earlier ones), else unique. Returns the
/// client log.
async fn write_until(
    http: &reqwest::Client,
    leader: &str,
    clients: usize,
    keys: Option<usize>,
    stop: &AtomicBool,
) -> Vec<Logged> {
    let client = |c: usize| async move {
        let mut log = Vec::new();
        for i in 0..5_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let key = match keys {
                Some(keys) => format!("k{}", rand::random_range(0..keys)),
                None => format!("c{c}-{i}"),
            };
            let value = format!("c{c}-{i}");
            let request = http
                .put(format!("{leader}/kv/{key}"))
                .json(&json!({ "value": value }))
                .timeout(Duration::from_secs(10));
            let (status, version) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let body: Value = response.json().await.unwrap_or_default();
                    (Some(status), common::version_in(&body, "version"))
                }
                Err(_) => (None, None),
            };
            log.push(Logged {
                key,
                value,
                status,
                version,
            });
        }
        log
    };
    join_all((0..clients).map(client))
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every key's value and version on the node at `base`.
async fn versioned_state(
    http: &reqwest::Client,
    base: &str,
) -> BTreeMap<String, (String, Version)> {
    let dump = common::dump(http, base).await.expect("the node answers");
    let mut state = BTreeMap::new();
    for key in dump.keys() {
        let (status, body) = send(http.get(format!("{base}/kv/{key}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let value = body["value"].as_str().expect("value").to_owned();
        state.insert(key.clone(), (value, common::version(&body)));
    }
    state
}

/// The history check: every write answered 200 must be readable in `state`, with its own value
/// or a newer write's (a write of the log to that key with a higher version). Returns the
/// acknowledged writes that are not.
fn lost_writes(log: &[Logged], state: &BTreeMap<String, (String, Version)>) -> Vec<Logged> {
    let written: BTreeMap<&str, &Logged> = log.iter().map(|w| (w.value.as_str(), w)).collect();
    log.iter()
        .filter(|write| write.status == Some(StatusCode::OK))
        .filter(|write| {
            let acked = write.version.expect("a 200 has a version");
            let Some((value, version)) = state.get(&write.key) else {
                return true;
            };
            let Some(holder) = written.get(value.as_str()) else {
                panic!("{}: {value:?} was never written", write.key);
            };
            assert_eq!(
                holder.key, write.key,
                "{value:?} was written to another key"
            );
            if value == &write.value {
                assert_eq!(*version, acked, "{write:?} changed version");
                false
            } else {
                // Another write's value: it must be newer than this acknowledged one.
                *version <= acked
            }
        })
        .cloned()
        .collect()
}

/// Clients write for a while at quorum `quorum` with lag `min_delay_ms..=max_delay_ms`, and the
/// leader is SIGKILLed in the middle of their writes. Returns the cluster and the client log.
async fn crash(
    quorum: usize,
    min_delay_ms: u64,
    max_delay_ms: u64,
    keys: Option<usize>,
) -> (TestCluster, Vec<Logged>) {
    let mut cluster =
        TestCluster::start_up(cluster_settings(quorum, min_delay_ms, max_delay_ms)).await;
    let stop = AtomicBool::new(false);
    let leader = cluster.leader.url();
    let writes = write_until(&cluster.http, &leader, 6, keys, &stop);
    let crash = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.leader.signal(Signal::SIGKILL);
        stop.store(true, Ordering::Relaxed);
    };
    let (log, ()) = tokio::join!(writes, crash);
    cluster.leader.kill();
    (cluster, log)
}

/// How many writes of `log` were answered 200.
fn acknowledged(log: &[Logged]) -> usize {
    log.iter()
        .filter(|w| w.status == Some(StatusCode::OK))
        .count()
}

/// Every node but follower1, by id and URL: the followers once follower1 was promoted.
fn others(cluster: &TestCluster) -> Vec<(String, String)> {
    std::iter::once(&cluster.leader)
        .chain(&cluster.followers[1..])
        .map(|node| (node.id.clone(), node.url()))
        .collect()
}

/// Brings the killed old leader back (it starts with ROLE=leader, finds the new leader and
/// follows it), then checks that a new write succeeds and every node converges.
async fn rejoin_and_converge(cluster: &mut TestCluster) {
    cluster.leader.restart().expect("restart the old leader");
    let (http, new_leader) = (&cluster.http, cluster.followers[0].url());
    let old = cluster.leader.url();
    eventually(Duration::from_secs(10), || async {
        let (_, health) = send(http.get(format!("{old}/health"))).await;
        if health["role"] == "follower" {
            Ok(())
        } else {
            Err(format!("the old leader is not following: {health}"))
        }
    })
    .await
    .expect("the old leader follows");
    eventually(Duration::from_secs(10), || async {
        let (status, body) = common::put(http, &new_leader, "after", "failover", None).await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await
    .expect("a write after the failover succeeds");
    let state = common::converged(http, &new_leader, &others(cluster), Duration::from_secs(15))
        .await
        .expect("every node converges on the new leader");
    assert_eq!(state.get("after").map(String::as_str), Some("failover"));
}

/// For W = 1..5 with lag: concurrent writes, the leader killed, `failover`: every write answered
/// 200 is on the new leader, checked against the client log; then the cluster goes on.
#[tokio::test]
async fn failover_keeps_every_acknowledged_write() {
    for quorum in 1..=5 {
        let (mut cluster, log) = crash(quorum, 0, 100, Some(20)).await;
        let acknowledged = acknowledged(&log);
        assert!(
            acknowledged > 10,
            "W = {quorum}: only {acknowledged} writes acknowledged"
        );
        let (code, promotion, stderr) = failover(&cluster.followers[0].url(), false);
        assert_eq!(code, 0, "W = {quorum}: {stderr}");
        assert_eq!(promotion["safe"], true, "{promotion}");
        assert_eq!(promotion["merged"], 5, "{promotion}");
        // Announced at most a majority of the five followers.
        assert_eq!(promotion["smallest_quorum"], quorum.min(3), "{promotion}");
        assert_eq!(
            promotion["leader_url"],
            format!("{}/", cluster.followers[0].url())
        );
        let state = versioned_state(&cluster.http, &cluster.followers[0].url()).await;
        let lost = lost_writes(&log, &state);
        assert!(
            lost.is_empty(),
            "W = {quorum}: acknowledged writes lost: {lost:#?}"
        );
        rejoin_and_converge(&mut cluster).await;
    }
}

/// W = 0 (asynchronous): the leader answers before any follower has the write, so with a lag of
/// at least 200 ms the writes acknowledged just before the crash are lost. Promotion refuses
/// without --force, since no merge can keep them.
#[tokio::test]
async fn asynchronous_writes_are_lost_in_a_failover() {
    let (cluster, log) = crash(0, 200, 400, None).await;
    let to = cluster.followers[0].url();
    let (code, _, stderr) = failover(&to, false);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("promotion_refused") && stderr.contains("quorum 0"),
        "{stderr}"
    );
    let (code, promotion, stderr) = failover(&to, true);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(promotion["safe"], false, "{promotion}");
    assert_eq!(promotion["forced"], true, "{promotion}");
    assert!(
        promotion["guarantee"]
            .as_str()
            .expect("guarantee")
            .contains("may be lost"),
        "{promotion}"
    );
    let state = versioned_state(&cluster.http, &cluster.followers[0].url()).await;
    let lost = lost_writes(&log, &state);
    assert!(
        !lost.is_empty(),
        "asynchronous writes acknowledged just before the crash are lost ({} acknowledged)",
        acknowledged(&log)
    );
}

/// A cluster at quorum 3 whose write `k = v` every follower holds: the 200 came with the third
/// ack, and the promotions below must find the write on whichever followers they merge.
async fn quorum_3_with_k_everywhere() -> TestCluster {
    let cluster = TestCluster::start_up(cluster_settings(3, 0, 20)).await;
    let (status, body) = cluster.put("k", "v", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("every follower has the write");
    cluster
}

/// A promotion while the leader answers is refused (409 leader_alive); one that reaches fewer
/// followers than the smallest quorum needs is refused with a 409 that says why; --force
/// promotes anyway and says what may be lost.
#[tokio::test]
async fn promotion_refuses_without_enough_followers_unless_forced() {
    let mut cluster = quorum_3_with_k_everywhere().await;
    let to = cluster.followers[0].url();
    // While the leader answers, no promotion: 409 leader_alive, naming it.
    let (status, refused) = send(cluster.http.post(format!("{to}/admin/promote"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"], "leader_alive", "{refused}");
    cluster.leader.kill();
    for follower in &mut cluster.followers[2..] {
        follower.kill();
    }
    let (code, _, stderr) = failover(&to, false);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("promotion_refused") && stderr.contains("reaches 2 of 5 followers"),
        "{stderr}"
    );
    // Refused before the fence: the node is still a follower and can be promoted later.
    let (_, health) = cluster.get(&to, "/health").await;
    assert_eq!(health["role"], "follower");

    let (code, promotion, stderr) = failover(&to, true);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (promotion["safe"].clone(), promotion["forced"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(promotion["merged"], 2, "{promotion}");
    assert_eq!(promotion["kept_if_acked_by"], 4, "{promotion}");
    assert!(
        promotion["guarantee"]
            .as_str()
            .expect("guarantee")
            .contains("acknowledged by only 3 to 3 followers may be lost"),
        "{promotion}"
    );
    let (_, read) = cluster.get(&to, "/kv/k").await;
    assert_eq!(read["value"], "v", "the write every follower had is kept");

    // A node that already leads is not promoted again.
    let (code, _, stderr) = failover(&to, false);
    assert_eq!(code, 1);
    assert!(stderr.contains("already leads term"), "{stderr}");
}

/// Cuts the follower `index` off at the leader, so that no state transfer refills it, and
/// restarts it: it comes back empty, holding no leader's state. Returns its URL. (Its first
/// read waits until it serves: it listens from its restart, and serves once it has asked its
/// peers for the newest term.)
async fn restart_cut_off(cluster: &mut TestCluster, index: usize) -> String {
    let name = format!("follower{}", index + 1);
    let cut = format!("{}/admin/followers/{name}/cut", cluster.leader.url());
    assert_eq!(send(cluster.http.post(cut)).await.0, StatusCode::OK);
    cluster.followers[index].restart().expect("restart");
    let url = cluster.followers[index].url();
    assert_eq!(cluster.get(&url, "/dump").await.1, json!({}), "{name}");
    url
}

/// A follower restarted since it acknowledged writes has lost them. Cut off from the leader, so
/// that no state transfer refills it, it holds no leader's state, and a candidate does not count
/// it (it merges what it holds all the same): counted, it would have made this promotion look
/// safe.
#[tokio::test]
async fn a_restarted_follower_without_its_transfer_counts_for_nothing() {
    let mut cluster = quorum_3_with_k_everywhere().await;
    restart_cut_off(&mut cluster, 4).await;
    cluster.leader.kill();
    for follower in &mut cluster.followers[2..4] {
        follower.kill();
    }
    let to = cluster.followers[0].url();
    let (code, _, stderr) = failover(&to, false);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("reaches 2 of 5 followers that hold a leader's state"),
        "three answer, two count: {stderr}"
    );
    let (code, promotion, stderr) = failover(&to, true);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(promotion["merged"], 2, "{promotion}");
    let peers = promotion["peers"].as_array().expect("peers");
    let report = (peers.iter())
        .find(|peer| peer["node_id"] == "follower5")
        .expect("follower5's report");
    let why = report["error"].as_str().unwrap_or_default();
    assert!(why.contains("merged, not counted"), "{report}");
    let follower2 = (peers.iter())
        .find(|peer| peer["node_id"] == "follower2")
        .expect("follower2's report");
    assert_eq!(
        (&follower2["merged"], &follower2["error"]),
        (&json!(true), &Value::Null)
    );
    let (_, read) = cluster.get(&to, "/kv/k").await;
    assert_eq!(read["value"], "v", "the write follower1 and follower2 held");
}

/// The same rule for the candidate itself: follower1, restarted and cut off from its state
/// transfer, is promoted on the four others' states and counts 4 merged, not 5.
#[tokio::test]
async fn a_restarted_candidate_does_not_count_itself() {
    let mut cluster = quorum_3_with_k_everywhere().await;
    let to = restart_cut_off(&mut cluster, 0).await;
    cluster.leader.kill();
    let (code, promotion, stderr) = failover(&to, false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(promotion["merged"], 4, "{promotion}");
    assert_eq!(promotion["safe"], true, "{promotion}");
    let guarantee = promotion["guarantee"].as_str().unwrap_or_default();
    assert!(guarantee.contains("does not count itself"), "{promotion}");
    let (_, read) = cluster.get(&to, "/kv/k").await;
    assert_eq!(read["value"], "v", "merged from the four others");
}

/// Fencing: the leader freezes (SIGSTOP), a follower is promoted, the leader thaws (SIGCONT).
/// The writes it was sent meanwhile never get a 200 and never show on another node, and it
/// steps down within a couple of heartbeats. Restarted with ROLE=leader, it follows the new
/// leader too.
#[tokio::test]
async fn a_frozen_leader_is_fenced_and_steps_down() {
    let mut cluster = TestCluster::start_up(cluster_settings(1, 0, 20)).await;
    for i in 0..5 {
        let (status, body) = cluster.put(&format!("before{i}"), "v", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let old = cluster.leader.url();
    let new_leader = cluster.followers[0].url();
    // A live setting changed on the old leader reaches the followers with its next heartbeat
    // (no writes go on meanwhile, so every contact from now on is one).
    let http = &cluster.http;
    let change = json!({"replicate_timeout_ms": 4321});
    let (status, body) = send(http.patch(format!("{old}/admin/settings")).json(&change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = Instant::now();
    eventually(Duration::from_secs(5), || async {
        let (_, cluster) = send(http.get(format!("{old}/cluster"))).await;
        let since = changed.elapsed().as_millis() as u64;
        let followers = cluster["followers"].as_array().cloned().unwrap_or_default();
        let heard = |f: &Value| {
            f["last_contact_ms_ago"]
                .as_u64()
                .is_some_and(|ago| ago + 50 < since)
        };
        if followers.len() == 5 && followers.iter().all(heard) {
            Ok(())
        } else {
            Err(format!(
                "not every follower had a heartbeat since the change: {cluster}"
            ))
        }
    })
    .await
    .expect("a heartbeat after the change");

    cluster.leader.signal(Signal::SIGSTOP);
    let (code, promotion, stderr) = failover(&new_leader, false);
    assert_eq!(code, 0, "{stderr}");
    let term = promotion["term"].as_u64().expect("term");
    let (_, settings) = send(http.get(format!("{new_leader}/admin/settings"))).await;
    assert_eq!(
        settings["replicate_timeout_ms"], 4321,
        "the new leader carries the live settings on"
    );

    // Writes sent to the frozen leader wait in its socket until it thaws.
    let keys: Vec<String> = (0..5).map(|i| format!("fenced{i}")).collect();
    let fenced_writes = keys
        .iter()
        .map(|key| common::put(http, &old, key, "lost", None));
    let thaw = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.leader.signal(Signal::SIGCONT);
    };
    let (answers, ()) = tokio::join!(join_all(fenced_writes), thaw);
    for (status, body) in &answers {
        assert_ne!(
            *status,
            StatusCode::OK,
            "a fenced leader's write succeeded: {body}"
        );
    }
    eventually(Duration::from_secs(2), || async {
        let (_, health) = send(http.get(format!("{old}/health"))).await;
        if health["role"] == "follower" && health["term"] == term {
            Ok(())
        } else {
            Err(format!("the old leader has not stepped down: {health}"))
        }
    })
    .await
    .expect("the old leader steps down within a few heartbeats");
    let (status, error) = common::put(http, &old, "k", "v", None).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{error}");
    assert_eq!(error["leader"], format!("{new_leader}/"));

    // It converges on the new leader's state, which never held the fenced writes.
    let others = others(&cluster);
    let state = common::converged(http, &new_leader, &others, Duration::from_secs(15))
        .await
        .expect("converged");
    assert!(
        state.keys().all(|key| !key.starts_with("fenced")),
        "{state:?}"
    );
    assert_eq!(state.len(), 5, "{state:?}");

    // Restarted with ROLE=leader, the old leader finds the new one and follows it.
    cluster.leader.restart().expect("restart the old leader");
    let (_, health) = cluster.get(&old, "/health").await;
    assert_eq!(
        (health["role"].clone(), health["term"].clone()),
        (json!("follower"), json!(term))
    );
    let (status, error) = common::put(http, &old, "k", "v", None).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{error}");
    assert_eq!(error["leader"], format!("{new_leader}/"));
    let (status, body) = common::put(http, &new_leader, "after", "restart", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = common::converged(http, &new_leader, &others, Duration::from_secs(15))
        .await
        .expect("converged after the restart");
    assert!(
        state.keys().all(|key| !key.starts_with("fenced")),
        "{state:?}"
    );
}

/// Where a client of the linearizability test sends its operations: the node it last knew to
/// lead. On a 421 it follows the leader named; when that node does not answer, it asks every
/// node's /health for the one that leads.
struct Finder<'a> {
    http: &'a reqwest::Client,
    nodes: Vec<String>,
    leader: Mutex<String>,
}

impl Finder<'_> {
    fn leader(&self) -> String {
        self.leader.lock().expect("leader").clone()
    }

    async fn find(&self) {
        for node in &self.nodes {
            let Ok(answer) = self.http.get(format!("{node}/health")).send().await else {
                continue;
            };
            let health: Value = answer.json().await.unwrap_or_default();
            if health["role"] == "leader" {
                *self.leader.lock().expect("leader") = node.clone();
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// One operation, recorded with its call and return times. A write whose answer never came
    /// (the leader died) is indeterminate; a read is retried on the leader until it answers.
    async fn operate(
        &self,
        history: &Mutex<Vec<Recorded>>,
        started: Instant,
        key: &str,
        write: Option<String>,
    ) {
        let call = started.elapsed().as_micros() as u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (ret, kind) = loop {
            assert!(Instant::now() < deadline, "no leader answered for 20 s");
            let url = format!("{}/kv/{key}", self.leader());
            let request = match &write {
                Some(value) => self.http.put(&url).json(&json!({ "value": value })),
                None => self.http.get(&url),
            };
            let answer = request.timeout(Duration::from_secs(10)).send().await;
            let Ok(response) = answer else {
                if write.is_some() {
                    break (None, Kind::Write(write.clone()));
                }
                self.find().await;
                continue;
            };
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            let ret = Some(started.elapsed().as_micros() as u64);
            match (status, &write) {
                (StatusCode::MISDIRECTED_REQUEST, _) => match body["leader"].as_str() {
                    Some(leader) => {
                        *self.leader.lock().expect("leader") = leader.trim_end_matches('/').into();
                    }
                    None => self.find().await,
                },
                (StatusCode::OK, Some(value)) => break (ret, Kind::Write(Some(value.clone()))),
                (StatusCode::SERVICE_UNAVAILABLE, Some(value)) => {
                    break (None, Kind::Write(Some(value.clone())));
                }
                (StatusCode::OK, None) => {
                    break (ret, Kind::Read(body["value"].as_str().map(String::from)));
                }
                (StatusCode::NOT_FOUND, None) => break (ret, Kind::Read(None)),
                (status, _) => panic!("unexpected answer {status}: {body}"),
            }
        };
        let operation = Operation { call, ret, kind };
        history
            .lock()
            .expect("history")
            .push((key.to_owned(), operation));
    }
}

/// The per-key linearizability checker holds across a failover: clients read and write on the
/// leader, following 421s, while the leader is killed and follower1 promoted. The kill comes at
/// a quiet moment (no write in flight, and every write delivered): this lab is AFTER_COMMIT, so
/// a read on the leader can see a write that is on no follower yet, which a crash right then
/// would lose (the phantom read THEORY_BACKGROUND.md describes).
#[tokio::test]
async fn reads_and_writes_stay_linearizable_across_a_failover() {
    let cluster = TestCluster::start_up(cluster_settings(2, 0, 20)).await;
    let finder = Finder {
        http: &cluster.http,
        nodes: std::iter::once(&cluster.leader)
            .chain(&cluster.followers)
            .map(|node| node.url())
            .collect(),
        leader: Mutex::new(cluster.leader.url()),
    };
    let history = Mutex::new(Vec::new());
    let (done, in_flight, paused) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicBool::new(false),
    );
    let started = Instant::now();
    let keys = ["x", "y"];
    let client = |c: usize| {
        let (finder, history, done, in_flight, paused) =
            (&finder, &history, &done, &in_flight, &paused);
        async move {
            for i in 0..30 {
                while paused.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                let key = keys[rand::random_range(0..keys.len())];
                let write = (rand::random_range(0..2) == 0).then(|| format!("c{c}-{i}"));
                finder.operate(history, started, key, write).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let chaos = async {
        eventually(Duration::from_secs(30), || async {
            let count = done.load(Ordering::SeqCst);
            if count >= 30 {
                Ok(())
            } else {
                Err(format!("{count} operations"))
            }
        })
        .await
        .expect("operations");
        paused.store(true, Ordering::SeqCst);
        eventually(Duration::from_secs(30), || async {
            match in_flight.load(Ordering::SeqCst) {
                0 => Ok(()),
                n => Err(format!("{n} operations in flight")),
            }
        })
        .await
        .expect("quiet");
        // Longer than the largest lag: every write has reached every follower.
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.leader.signal(Signal::SIGKILL);
        paused.store(false, Ordering::SeqCst);
        let (code, _, stderr) = failover(&cluster.followers[0].url(), false);
        assert_eq!(code, 0, "{stderr}");
    };
    tokio::join!(join_all((0..4).map(client)), chaos);

    let history = history.into_inner().expect("history");
    assert_eq!(
        finder.leader(),
        cluster.followers[0].url(),
        "the clients found the new leader"
    );
    linearizability::assert_linearizable(&history, &keys);
}

/// What the write quorum buys when the leader crashes, through `semisync-kv bench --crash`:
/// clients write fresh keys with lag 200..400 ms, the leader is killed with SIGKILL, follower1
/// is promoted, and every write answered 200 is looked up in its state. With W >= 1 each is on a
/// follower, and the promotion merges every follower: none is lost. With W = 0 the writes
/// answered in the last 200 ms before the crash had reached no follower: some are lost, and the
/// promotion had to be forced.
#[tokio::test]
async fn the_benchmark_counts_the_writes_a_failover_loses() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-{}", std::process::id()));
    let out_dir = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) = semisync_kv(&[
        "bench",
        "--local",
        "--crash",
        "--quorums",
        "0,1,3,5",
        "--min-delay-ms",
        "200",
        "--max-delay-ms",
        "400",
        "--concurrency",
        "20",
        "--out-dir",
        &out_dir,
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    eprintln!("{stdout}");
    let json = std::fs::read_to_string(out.join("crash_results.json")).expect("crash_results.json");
    let crash: semisync_kv::bench::crash::Crash = serde_json::from_str(&json).expect("the JSON");
    let quorums: Vec<usize> = crash.runs.iter().map(|run| run.quorum).collect();
    assert_eq!(quorums, [0, 1, 3, 5]);
    for run in &crash.runs {
        assert!(run.acknowledged > 0, "{run:?}");
        assert_eq!(run.merged, 5, "{run:?}");
        assert_eq!(run.safe, run.quorum > 0, "{run:?}");
        if run.quorum == 0 {
            assert!(
                run.lost > 0,
                "asynchronous writes just before a crash are lost: {run:?}"
            );
        } else {
            assert_eq!(run.lost, 0, "no acknowledged write is lost: {run:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A node restarted with `ROLE=leader` takes over only by the same safe promotion as any
/// follower. The write `x` was acknowledged by follower3, follower4 and follower5 alone
/// (follower1 and follower2 were cut off); those three freeze, and the leader restarts: it
/// reaches only the two followers that answer, 3 of 6 nodes, no majority (and too few for
/// quorum 3), so it fences nobody, follows, and says why in `/health` rather than lead without
/// `x`. Once the three thaw, a promotion keeps `x`.
#[tokio::test]
async fn a_restarted_leader_leads_only_by_a_safe_count() {
    let mut cluster = TestCluster::start_up(cluster_settings(3, 0, 20)).await;
    let leader = cluster.leader.url();
    for name in ["follower1", "follower2"] {
        let cut = format!("{leader}/admin/followers/{name}/cut");
        assert_eq!(send(cluster.http.post(cut)).await.0, StatusCode::OK);
    }
    let (status, body) = cluster.put("x", "acked by three", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for follower in &cluster.followers[2..] {
        follower.signal(Signal::SIGSTOP);
    }
    cluster.leader.restart().expect("restart");
    let health = cluster.leader_waiting(Duration::from_secs(15)).await;
    assert_eq!(health["role"], "follower", "{health}");
    let why = health["waiting"].as_str().unwrap_or_default();
    assert!(why.contains("it reached 3 of the 6 nodes"), "{health}");

    for follower in &cluster.followers[2..] {
        follower.signal(Signal::SIGCONT);
    }
    let to = cluster.followers[2].url();
    let (code, promotion, stderr) = failover(&to, false);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(promotion["safe"], true, "{promotion}");
    let (_, read) = cluster.get(&to, "/kv/x").await;
    assert_eq!(read["value"], "acked by three", "{read}");
    eventually(Duration::from_secs(5), || async {
        let (_, health) = cluster.get(&leader, "/health").await;
        match health.get("waiting") {
            None => Ok(()),
            Some(_) => Err(format!("still waiting, not following: {health}")),
        }
    })
    .await
    .expect("it follows the new leader");
}
