//! What reads see: linearizable on the leader under both wait points, not on followers; on the
//! leader under `after_sync`, only writes their quorum acknowledged; on followers,
//! read-your-writes and monotonic reads with `min_version`.

use std::time::Duration;

use futures::future::join_all;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::{Settings, WaitPoint};
use serde_json::json;
use tokio::time::Instant;

use crate::common;
use crate::helpers::{NodeExt, TestCluster, base, eventually, send, settings};
use crate::linearizability::{self, history_of, record};

/// Several clients PUT, DELETE and GET a few keys on the leader while most followers are frozen
/// for a while, so that some writes time out; every key's history is linearizable, counting a
/// timed-out write as indeterminate.
#[tokio::test]
async fn reads_and_writes_on_the_leader_are_linearizable() {
    leader_history_is_linearizable(WaitPoint::AfterCommit).await;
}

/// The same under `after_sync`, where a timed-out write shows on the leader only once its
/// quorum acknowledged it, after the followers thaw.
#[tokio::test]
async fn reads_and_writes_on_the_leader_are_linearizable_after_sync() {
    leader_history_is_linearizable(WaitPoint::AfterSync).await;
}

async fn leader_history_is_linearizable(wait_point: WaitPoint) {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 2,
            max_delay_ms: 30,
            replicate_timeout_ms: 300,
            wait_point,
            ..base()
        },
        ..settings()
    })
    .await;
    let history = std::sync::Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let keys = ["x", "y"];
    let leader = cluster.leader.url();

    let client = |c: usize| {
        let (history, done, leader, http) = (&history, &done, &leader, &cluster.http);
        async move {
            for i in 0..30 {
                let key = keys[rand::random_range(0..keys.len())];
                let url = format!("{leader}/kv/{key}");
                match rand::random_range(0..6) {
                    0..=2 => {
                        let value = format!("c{c}-{i}");
                        let request = http.put(&url).json(&json!({ "value": value }));
                        record(history, started, key, Some(Some(value)), request).await;
                    }
                    3 => {
                        record(history, started, key, Some(None), http.delete(&url)).await;
                    }
                    _ => {
                        record(history, started, key, None, http.get(&url)).await;
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    // Freeze four followers after 20 operations and thaw them after 70: quorum 2 is out of
    // reach in between, so writes time out.
    let chaos = async {
        let reached = |n: usize| {
            let done = &done;
            eventually(Duration::from_secs(30), move || async move {
                let count = done.load(std::sync::atomic::Ordering::Relaxed);
                if count >= n {
                    Ok(())
                } else {
                    Err(format!("{count} operations"))
                }
            })
        };
        reached(20).await.expect("operations");
        for follower in &cluster.followers[1..] {
            follower.signal(Signal::SIGSTOP);
        }
        reached(70).await.expect("operations");
        for follower in &cluster.followers[1..] {
            follower.signal(Signal::SIGCONT);
        }
    };
    tokio::join!(join_all((0..4).map(client)), chaos);

    let history = history.into_inner().expect("history");
    let timed_out = history.iter().filter(|(_, op)| op.ret.is_none()).count();
    assert!(
        timed_out > 0,
        "some writes timed out while followers were frozen"
    );
    linearizability::assert_linearizable(&history, &keys);
}

/// What a reader polling the leader saw of one write.
struct Watched {
    /// When the reader first saw the value, counted from the write's start.
    first_seen: Option<Duration>,
    /// When the write was answered, counted from its start.
    answered: Duration,
    status: StatusCode,
    answer: serde_json::Value,
}

/// Writes `value` to `key` with `quorum` while a reader polls the leader for it, until 300 ms
/// after the answer.
async fn watch_write(cluster: &TestCluster, key: &str, value: &str, quorum: usize) -> Watched {
    let leader = cluster.leader.url();
    let started = Instant::now();
    let answered = std::sync::OnceLock::new();
    let write = async {
        let answer = cluster.put(key, value, Some(quorum)).await;
        let _ = answered.set(started.elapsed());
        answer
    };
    let reader = async {
        let url = format!("{leader}/kv/{key}");
        loop {
            let (_, read) = send(cluster.http.get(&url)).await;
            if read["value"] == value {
                return Some(started.elapsed());
            }
            if answered
                .get()
                .is_some_and(|&at| started.elapsed() > at + Duration::from_millis(300))
            {
                return None;
            }
        }
    };
    let ((status, answer), first_seen) = tokio::join!(write, reader);
    Watched {
        first_seen,
        answered: *answered.get().expect("answered"),
        status,
        answer,
    }
}

/// The wait point, shown with a reader polling the leader while one write waits for its
/// quorum. `after_sync`: the reader sees the write only after its acks, which the smallest lag
/// (200 ms) keeps from coming sooner; a write that times out (quorum 5, a follower cut off)
/// stays unseen until the follower is restored. `after_commit`: the reader sees the same
/// timed-out write before its 503.
#[tokio::test]
async fn after_sync_shows_a_write_on_the_leader_only_once_its_quorum_acknowledged_it() {
    let min_lag = Duration::from_millis(200);
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 3,
            min_delay_ms: 200,
            max_delay_ms: 300,
            replicate_timeout_ms: 1000,
            wait_point: WaitPoint::AfterSync,
            auto_failover: false,
        },
        ..settings()
    })
    .await;
    let leader = cluster.leader.url();

    let acked = watch_write(&cluster, "x", "acked", 3).await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.answer);
    assert_eq!(acked.answer["wait_point"], "after_sync");
    let seen = acked.first_seen.expect("seen once acknowledged");
    assert!(seen >= min_lag, "seen after {seen:?}, before any ack");

    let cut = format!("{leader}/admin/followers/follower1/cut");
    assert_eq!(send(cluster.http.post(cut)).await.0, StatusCode::OK);
    let hidden = watch_write(&cluster, "x", "hidden", 5).await;
    assert_eq!(
        hidden.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        hidden.answer
    );
    assert_eq!(hidden.answer["visible_on_leader"], false);
    assert_eq!(
        hidden.first_seen, None,
        "a write that timed out is not shown"
    );
    assert_eq!(cluster.get(&leader, "/kv/x").await.1["value"], "acked");
    let restore = format!("{leader}/admin/followers/follower1/restore");
    assert_eq!(send(cluster.http.post(restore)).await.0, StatusCode::OK);
    eventually(Duration::from_secs(20), || async {
        let (_, read) = cluster.get(&leader, "/kv/x").await;
        if read["value"] == "hidden" {
            Ok(())
        } else {
            Err(format!("the leader shows {read}"))
        }
    })
    .await
    .expect("shown once the restored follower acknowledged it");

    let change = json!({"wait_point": "after_commit"});
    let patch = cluster.http.patch(format!("{leader}/admin/settings"));
    assert_eq!(send(patch.json(&change)).await.0, StatusCode::OK);
    let cut = format!("{leader}/admin/followers/follower1/cut");
    assert_eq!(send(cluster.http.post(cut)).await.0, StatusCode::OK);
    let shown = watch_write(&cluster, "x", "shown", 5).await;
    assert_eq!(shown.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shown.answer["wait_point"], "after_commit");
    assert_eq!(shown.answer["visible_on_leader"], true);
    let seen = shown.first_seen.expect("seen at once");
    assert!(
        seen < shown.answered,
        "after_commit shows the write before its 503 ({seen:?}, answered after {:?})",
        shown.answered
    );
}

/// Reads from followers are not linearizable: right after a write returned, a follower that
/// was not part of its quorum still answers the older value. (What the docs teach.)
#[tokio::test]
async fn reads_from_followers_are_not_linearizable() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            min_delay_ms: 200,
            max_delay_ms: 400,
            ..base()
        },
        ..settings()
    })
    .await;
    let history = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    for i in 0..5 {
        let value = format!("v{i}");
        let put = cluster
            .http
            .put(format!("{}/kv/x", cluster.leader.url()))
            .json(&json!({ "value": value }));
        let status = record(&history, started, "x", Some(Some(value)), put).await;
        assert_eq!(status, StatusCode::OK);
        for follower in &cluster.followers {
            let get = cluster.http.get(format!("{}/kv/x", follower.url()));
            record(&history, started, "x", None, get).await;
        }
    }
    let operations = history_of(&history.into_inner().expect("history"), "x");
    assert!(
        !linearizability::linearizable(&operations),
        "stale follower reads: {operations:#?}"
    );
}

/// Read-your-writes and monotonic reads on followers: clients write on the leader and read each
/// key back from a random follower with `min_version` set to the newest version they wrote or
/// read of it; under concurrent writes with lag, no answer is older. The same reads without
/// `min_version` are sometimes stale: that is what the parameter buys.
#[tokio::test]
async fn min_version_gives_read_your_writes_on_followers() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            max_delay_ms: 200,
            ..base()
        },
        ..settings()
    })
    .await;
    let leader = cluster.leader.url();
    let followers: Vec<String> = cluster.followers.iter().map(|f| f.url()).collect();
    let client = |c: usize| {
        let (http, leader, followers) = (&cluster.http, &leader, &followers);
        async move {
            let mut seen = std::collections::HashMap::new();
            let mut stale = 0;
            for i in 0..25 {
                let key = format!("c{c}-k{}", i % 3);
                let value = format!("c{c}-{i}");
                let (status, wrote) = common::put(http, leader, &key, &value, None).await;
                assert_eq!(status, StatusCode::OK, "{wrote}");
                let version = common::version(&wrote);
                seen.insert(key.clone(), version);
                let follower = &followers[rand::random_range(0..followers.len())];
                let plain = send(http.get(format!("{follower}/kv/{key}"))).await.1;
                stale += usize::from(
                    common::version_in(&plain, "version").unwrap_or_default() < version,
                );
                let min = seen[&key];
                let url = format!("{follower}/kv/{key}?min_version={min}&wait_ms=5000");
                let (status, read) = send(http.get(url)).await;
                assert_eq!(status, StatusCode::OK, "{follower}: {read}");
                let got = common::version(&read);
                assert!(
                    got >= min,
                    "{follower} answered version {got} below {min}: {read}"
                );
                if got == version {
                    assert_eq!(read["value"], value.as_str(), "{read}");
                }
                seen.insert(key, got);
            }
            stale
        }
    };
    let stale: usize = join_all((0..4).map(client)).await.into_iter().sum();
    assert!(
        stale > 0,
        "with lag, some plain follower reads right after a write are stale"
    );
}

/// `min_version` on a follower that is cut off: `503 not_yet_replicated` with the version it
/// holds; once restored, the same read succeeds, and a read of a version already there
/// answers without waiting.
#[tokio::test]
async fn min_version_on_a_cut_off_follower_is_not_yet_replicated() {
    let cluster = TestCluster::start_up(settings()).await;
    let leader = cluster.leader.url();
    let follower = cluster.followers[0].url();
    let (status, first) = cluster.put("k", "first", None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first = common::version(&first);
    cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    let at_once = format!("{follower}/kv/k?min_version={first}&wait_ms=0");
    assert_eq!(cluster.get(&at_once, "").await.1["value"], "first");

    let (status, _) = send(
        cluster
            .http
            .post(format!("{leader}/admin/followers/follower1/cut")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, second) = cluster.put("k", "second", None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second = common::version(&second);
    let waiting = format!("{follower}/kv/k?min_version={second}&wait_ms=200");
    let (status, error) = cluster.get(&waiting, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert_eq!(error["error"], "not_yet_replicated");
    assert_eq!(
        common::version_in(&error, "version"),
        Some(first),
        "{error}"
    );

    let (status, _) = send(
        cluster
            .http
            .post(format!("{leader}/admin/followers/follower1/restore")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let restored = format!("{follower}/kv/k?min_version={second}&wait_ms=10000");
    let (status, read) = cluster.get(&restored, "").await;
    assert_eq!(
        (status, read["value"].clone()),
        (StatusCode::OK, json!("second"))
    );
}
