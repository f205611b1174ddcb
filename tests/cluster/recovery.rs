//! Nodes that die, freeze or restart: each comes back to the leader's state by itself.

use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use semisync_kv::Version;
use serde_json::json;

use crate::common;

use crate::helpers::{NodeExt, TestCluster, eventually, send, settings, with_quorum, write_many};

/// A follower killed with SIGKILL and restarted empty catches up to the leader's full state by
/// itself, while writes keep flowing.
#[tokio::test]
async fn a_killed_follower_restarts_empty_and_catches_up() {
    let mut cluster = TestCluster::start_up(settings()).await;
    assert_eq!(write_many(&cluster, "before", 200, 20).await.len(), 200);
    cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged before");

    cluster.followers[2].signal(Signal::SIGKILL);
    let down = cluster
        .wait_follower(2, "down", Duration::from_secs(3))
        .await;
    assert!(down["last_error"].is_string(), "{down}");
    // Restart it while writes flow (the restart blocks until it listens, so off the runtime).
    let mut follower = cluster.followers.remove(2);
    let restart = tokio::task::spawn_blocking(move || {
        follower.restart().expect("restart");
        follower
    });
    let during = write_many(&cluster, "during", 200, 10).await;
    cluster
        .followers
        .insert(2, restart.await.expect("restarted"));
    assert_eq!(during.len(), 200);

    let follower = cluster.wait_follower(2, "up", Duration::from_secs(5)).await;
    assert!(
        follower["transfers"].as_u64() >= Some(2),
        "caught up by a state transfer: {follower}"
    );
    let state = cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged after restart");
    assert_eq!(state.len(), 400);
}

/// A follower frozen with SIGSTOP while writes flow gets every write it missed after SIGCONT.
#[tokio::test]
async fn a_frozen_follower_catches_up_after_sigcont() {
    let cluster = TestCluster::start_up(settings()).await;
    cluster.followers[0].signal(Signal::SIGSTOP);
    let writes = write_many(&cluster, "k", 300, 10).await;
    assert_eq!(writes.len(), 300);
    let frozen = cluster
        .wait_follower(0, "down", Duration::from_secs(3))
        .await;
    assert!(
        frozen["pending"].as_u64() > Some(0),
        "writes wait for it: {frozen}"
    );

    cluster.followers[0].signal(Signal::SIGCONT);
    cluster.wait_follower(0, "up", Duration::from_secs(5)).await;
    let state = cluster
        .converged(Duration::from_secs(10))
        .await
        .expect("converged after SIGCONT");
    assert_eq!(state.len(), 300);
    // The retries still sleeping in their backoff deliver and drain the pending work.
    eventually(Duration::from_secs(5), || async {
        let follower = cluster.cluster_status().await["followers"][0].clone();
        if follower["pending"] == 0 {
            Ok(())
        } else {
            Err(format!("{follower}"))
        }
    })
    .await
    .expect("nothing pending");
}

/// The leader killed and restarted keeps every write a live follower acknowledged, issues newer
/// versions, and every node converges on its state.
#[tokio::test]
async fn a_restarted_leader_recovers_from_its_followers() {
    let mut cluster = TestCluster::start_up(with_quorum(5)).await;
    let versions = write_many(&cluster, "k", 100, 10).await;
    assert_eq!(versions.len(), 100);
    let (status, _) = cluster.delete("k7", Some(5)).await;
    assert_eq!(status, StatusCode::OK);
    let last_version = Version::new(1, 101);

    cluster.leader.signal(Signal::SIGKILL);
    cluster.leader.restart().expect("restart");

    let (_, health) = cluster.get(&cluster.leader.url(), "/health").await;
    assert_eq!(
        common::version(&health),
        Version::new(2, 101),
        "a new term, its counter continuing where the followers are"
    );
    assert_eq!(health["keys"], 99);
    for i in [0, 50, 99] {
        let (status, body) = cluster
            .get(&cluster.leader.url(), &format!("/kv/k{i}"))
            .await;
        assert_eq!(
            (status, body["value"].clone()),
            (StatusCode::OK, json!(format!("v{i}")))
        );
    }
    let (status, _) = cluster.get(&cluster.leader.url(), "/kv/k7").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the delete survived too");

    let (status, body) = cluster.put("after", "restart", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(common::version(&body), Version::new(2, 102), "{body}");
    assert!(common::version(&body) > last_version);
    let state = cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    assert_eq!(state.len(), 100);
}

/// A restarted leader whose followers hold different states (one was down during some writes)
/// ends with every node on one state, including the follower that comes back with writes the new
/// leader never saw. With quorum 1 and a follower frozen, no takeover is safe (a write only the
/// frozen one acknowledged could be lost): the restarted node waits and says why, and leads
/// once the follower is back and it is promoted.
#[tokio::test]
async fn a_follower_down_across_a_leader_restart_converges() {
    let mut cluster = TestCluster::start_up(with_quorum(1)).await;
    assert_eq!(write_many(&cluster, "a", 50, 10).await.len(), 50);
    cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    cluster.followers[4].signal(Signal::SIGSTOP);
    cluster.leader.signal(Signal::SIGKILL);
    cluster.leader.restart().expect("restart");
    let leader = cluster.leader.url();
    let health = cluster.leader_waiting(Duration::from_secs(10)).await;
    assert_eq!(health["role"], "follower", "{health}");
    cluster.followers[4].signal(Signal::SIGCONT);
    let (status, promotion) = send(cluster.http.post(format!("{leader}/admin/promote"))).await;
    assert_eq!(status, StatusCode::OK, "{promotion}");
    assert_eq!(promotion["safe"], true, "{promotion}");
    assert_eq!(write_many(&cluster, "b", 50, 10).await.len(), 50);
    cluster.followers[4].signal(Signal::SIGCONT);
    cluster.wait_follower(4, "up", Duration::from_secs(5)).await;
    let state = cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    assert_eq!(state.len(), 100);
}

/// A write that only one follower holds (an "orphan") while the leader restarts without it and
/// is promoted by force: the new leader cannot know its version, so it takes versions from the
/// clock, newer than any the old leader issued. Its writes win over the orphan when a later leader merges both, and
/// every node converges.
#[tokio::test]
async fn an_orphan_write_on_an_absent_follower_does_not_win_over_newer_writes() {
    let mut cluster = TestCluster::start_up(with_quorum(1)).await;
    for follower in &mut cluster.followers[..4] {
        follower.kill();
    }
    let (status, old) = cluster.put("k", "old", Some(1)).await;
    assert_eq!(status, StatusCode::OK, "only follower5 can ack: {old}");
    assert_eq!(old["acked_by"], json!(["follower5"]));

    cluster.followers[4].signal(Signal::SIGSTOP);
    cluster.leader.kill();
    for follower in &mut cluster.followers[..4] {
        follower.restart().expect("restart"); // empty
    }
    // Restarted, it cannot lead safely without follower5 (every other node is empty): forced.
    cluster.leader.restart().expect("restart");
    let promote = format!("{}/admin/promote?force=true", cluster.leader.url());
    let (status, promotion) = eventually(Duration::from_secs(10), || async {
        match send(cluster.http.post(&promote)).await {
            (StatusCode::OK, promotion) => Ok((StatusCode::OK, promotion)),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await
    .expect("a forced promotion");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(promotion["forced"], true, "{promotion}");
    let (status, new) = cluster.put("k", "new", Some(4)).await;
    assert_eq!(status, StatusCode::OK, "{new}");
    assert!(
        common::version(&new) > common::version(&old),
        "newer: {new} vs {old}"
    );

    cluster.leader.kill();
    cluster.followers[4].signal(Signal::SIGCONT);
    cluster.leader.restart().expect("restart"); // merges follower5's orphan with the rest
    let (status, body) = cluster.get(&cluster.leader.url(), "/kv/k").await;
    assert_eq!(
        (status, body["value"].clone()),
        (StatusCode::OK, json!("new")),
        "{body}"
    );
    cluster
        .wait_follower(4, "up", Duration::from_secs(10))
        .await;
    let state = cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    assert_eq!(state["k"], "new");
}
