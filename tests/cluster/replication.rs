//! Replication through the leader: the quorum cases, per-request quorums, followers that refuse
//! writes, convergence under random lag, and the backlog bound of an unreachable follower.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;
use tokio::time::Instant;

use crate::common;
use crate::helpers::{TestCluster, base, semisync_kv, send, settings, write_many};

/// The lab's two quorum cases with follower5 stopped, then follower5 back.
#[tokio::test]
async fn quorum_cases_with_a_stopped_follower() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            replicate_timeout_ms: 1500,
            ..base()
        },
        ..settings()
    })
    .await;
    cluster.followers[4].kill();

    // Case A: quorum 3 of the four followers still up.
    let (status, body) = cluster.put("a", "1", Some(3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acks"], 3);
    assert!(
        !body["acked_by"]
            .as_array()
            .expect("list")
            .contains(&json!("follower5"))
    );

    // Case B: quorum 5 cannot be reached; 503 once the timeout passed, and nothing rolled back.
    let started = Instant::now();
    let (status, body) = cluster.put("b", "2", Some(5)).await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "quorum_timeout");
    assert_eq!(body["quorum"], 5);
    assert_eq!(
        body["acks"], 4,
        "the four live followers acknowledged: {body}"
    );
    assert_eq!(body["acked_by"].as_array().expect("list").len(), 4);
    assert_eq!(body["version"], "1.2", "the second write of term 1");
    assert!(
        waited >= Duration::from_millis(1500),
        "answered before the timeout: {waited:?}"
    );
    let (status, read) = cluster.get(&cluster.leader.url(), "/kv/b").await;
    assert_eq!(
        (status, &read["value"]),
        (StatusCode::OK, &json!("2")),
        "applied on the leader"
    );

    // follower5 back (empty): once the leader has caught it up, quorum 5 succeeds again.
    cluster.followers[4].restart().expect("restart");
    cluster.wait_follower(4, "up", Duration::from_secs(5)).await;
    let (status, body) = cluster.put("c", "3", Some(5)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acks"], 5);
}

/// `?quorum=N` overrides `WRITE_QUORUM` for one write.
#[tokio::test]
async fn per_request_quorum_override() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 5,
            replicate_timeout_ms: 1500,
            ..base()
        },
        ..settings()
    })
    .await;
    // With every follower up, all five hear of quorum 2 at once: the term's floor drops to 2.
    let (status, body) = cluster.put("k", "two", Some(2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["quorum"].clone(), body["acks"].clone()),
        (json!(2), json!(2))
    );

    cluster.followers[0].kill();
    let (status, body) = cluster.put("k", "default", None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "WRITE_QUORUM=5 applies: {body}"
    );
    assert_eq!(body["quorum"], 5);

    let (status, body) = cluster.put("k", "async", Some(0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acks"], 0, "quorum 0 answers without waiting: {body}");

    let (status, body) = cluster.delete("k", Some(4)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acks"], 4);

    let (status, body) = cluster.put("k", "x", Some(6)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_query");
}

/// A quorum below every one the term used counts only once as many followers heard of it as
/// the term's floor: with `WRITE_QUORUM=3` and three followers down, a write with quorum 2 is
/// acknowledged by the other two but answers `503 quorum_not_announced` (the three that are down
/// could be promoted together, knowing only quorum 3). Once one of them is back, the same write
/// counts.
#[tokio::test]
async fn a_quorum_lowered_while_followers_are_down_is_not_announced() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 3,
            replicate_timeout_ms: 1500,
            ..base()
        },
        ..settings()
    })
    .await;
    for follower in &mut cluster.followers[..3] {
        follower.kill();
    }
    let (status, body) = cluster.put("k", "two", Some(2)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "quorum_not_announced", "{body}");
    assert_eq!(
        (
            body["acks"].clone(),
            body["floor"].clone(),
            body["heard"].clone()
        ),
        (json!(2), json!(3), json!(2)),
        "{body}"
    );
    assert_eq!(body["applied_on_leader"], true);

    cluster.followers[0].restart().expect("restart");
    cluster.wait_follower(0, "up", Duration::from_secs(5)).await;
    let (status, body) = cluster.put("k", "two again", Some(2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// PUT and DELETE on a follower are refused with the leader's URL and change nothing.
#[tokio::test]
async fn followers_refuse_writes() {
    let cluster = TestCluster::start_up(settings()).await;
    let (status, _) = cluster.put("k", "v", None).await;
    assert_eq!(status, StatusCode::OK);
    cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");

    for follower in &cluster.followers {
        let url = format!("{}/kv/k", follower.url());
        for request in [
            cluster.http.put(&url).json(&json!({"value": "evil"})),
            cluster.http.delete(&url),
        ] {
            let (status, body) = send(request).await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
            assert_eq!(body["error"], "not_leader");
            assert_eq!(body["leader"], format!("{}/", cluster.leader.url()));
        }
        let (status, body) = cluster.get(&follower.url(), "/kv/k").await;
        assert_eq!(
            (status, body["value"].clone()),
            (StatusCode::OK, json!("v")),
            "{}",
            follower.id
        );
    }
}

/// Hundreds of concurrent writes and deletes to three keys under random lag reach the followers
/// in every order, yet every follower ends with the leader's state.
#[tokio::test]
async fn followers_converge_after_concurrent_writes_under_random_lag() {
    let settings = LocalSettings {
        settings: Settings {
            write_quorum: 1,
            max_delay_ms: 50,
            ..base()
        },
        ..settings()
    };
    let cluster = TestCluster::start_up(settings.clone()).await;
    let keys = ["x", "y", "z"];
    let writes = (0..300).map(|i| {
        let cluster = &cluster;
        async move {
            let key = keys[i % keys.len()];
            let (status, body) = if i % 7 == 6 {
                cluster.delete(key, None).await
            } else {
                cluster.put(key, &format!("v{i}"), None).await
            };
            assert_eq!(status, StatusCode::OK, "{body}");
            common::version(&body)
        }
    });
    let mut versions = join_all(writes).await;
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 300, "every write got its own version");

    let allowed = Duration::from_millis(settings.settings.max_delay_ms) + Duration::from_secs(5);
    let state = cluster
        .converged(allowed)
        .await
        .expect("followers converge");
    let (_, health) = cluster.get(&cluster.leader.url(), "/health").await;
    assert_eq!(health["version"], "1.300");
    assert!(state.len() <= keys.len());
}

/// While a follower is cut off, the leader keeps exactly `REPLICATION_BACKLOG` writes pending
/// for it: the write past the bound switches it to a state transfer instead of growing the
/// backlog, and the follower is caught up by that transfer once restored.
#[tokio::test]
async fn the_backlog_of_an_unreachable_follower_holds_exactly_replication_backlog_writes() {
    const BACKLOG: usize = 40;
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 0,
            ..base()
        },
        leader_env: vec![("REPLICATION_BACKLOG".into(), BACKLOG.to_string())],
        ..settings()
    })
    .await;
    let leader = cluster.leader.url();
    let (code, out, err) = semisync_kv(&["cut", "follower2", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");

    // Within the 10 s before the leader gives up on it, every write stays pending for it.
    assert_eq!(write_many(&cluster, "in", BACKLOG, 10).await.len(), BACKLOG);
    let follower = cluster.cluster_status().await["followers"][1].clone();
    assert_eq!(follower["pending"], BACKLOG, "{follower}");
    assert_eq!(follower["transfer_pending"], false, "{follower}");

    assert_eq!(write_many(&cluster, "past", 1, 1).await.len(), 1);
    let follower = cluster.cluster_status().await["followers"][1].clone();
    assert_eq!(follower["transfer_pending"], true, "{follower}");
    assert!(
        follower["pending"].as_u64() <= Some(BACKLOG as u64),
        "{follower}"
    );
    assert_eq!(write_many(&cluster, "more", 200, 20).await.len(), 200);
    let follower = cluster.cluster_status().await["followers"][1].clone();
    assert!(
        follower["pending"].as_u64() <= Some(BACKLOG as u64),
        "{follower}"
    );

    let (code, out, err) = semisync_kv(&["restore", "follower2", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    let follower = cluster.wait_follower(1, "up", Duration::from_secs(5)).await;
    assert!(follower["transfers"].as_u64() >= Some(2), "{follower}");
    let state = cluster
        .converged(Duration::from_secs(10))
        .await
        .expect("converged");
    assert_eq!(state.len(), BACKLOG + 201);
}
