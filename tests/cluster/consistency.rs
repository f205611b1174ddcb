//! What reads see: linearizable on the leader, not on followers.

use std::time::Duration;

use futures::future::join_all;
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;
use tokio::time::Instant;

use crate::helpers::{NodeExt, TestCluster, base, eventually, settings};
use crate::linearizability::{self, history_of, record};

/// Several clients PUT, DELETE and GET a few keys on the leader while most followers are frozen
/// for a while, so that some writes time out; every key's history is linearizable, counting a
/// timed-out write as indeterminate.
#[tokio::test]
async fn reads_and_writes_on_the_leader_are_linearizable() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 2,
            max_delay_ms: 30,
            replicate_timeout_ms: 300,
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
    for key in keys {
        let operations = history_of(&history, key);
        assert!(
            linearizability::linearizable(&operations),
            "{key}: {operations:#?}"
        );
    }
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
