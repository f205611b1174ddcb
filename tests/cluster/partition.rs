//! A network partition, made with `POST /admin/partition` on real processes: the old leader
//! keeps leading a minority side while the majority side promotes a follower. The minority
//! leader cannot get a write acknowledged at a quorum that the promotion did not know, so after
//! the heal nothing acknowledged is lost, one leader remains, and every node converges.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common;
use crate::helpers::{TestCluster, eventually, partition, semisync_kv, send, with_quorum};

/// The scenario of THEORY section 8: six nodes, `WRITE_QUORUM=3`, split into {leader,
/// follower4, follower5} and {follower1, follower2, follower3}. follower1 merges 3 >= 5 - 3 + 1
/// followers, but 3 of 6 nodes are no majority: it is promoted only with `--force`. On the other
/// side, the old leader's writes at quorum 2 (per request, then by the live setting) are
/// acknowledged by follower4 and follower5, but only those two heard of quorum 2, so they answer
/// `503 quorum_not_announced`.
/// After the heal, every write answered 200 is on every node, and the new leader is the only one.
#[tokio::test]
async fn the_minority_side_of_a_partition_cannot_acknowledge_a_lowered_quorum() {
    let cluster = TestCluster::start_up(with_quorum(3)).await;
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let (status, body) = cluster.put("before", "split", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    acknowledged.insert("before".into(), "split".into());

    let minority = [
        cluster.leader.url(),
        cluster.followers[3].url(),
        cluster.followers[4].url(),
    ];
    let lines = partition(&minority, &["follower1", "follower2", "follower3"]);
    assert!(
        lines.contains("leader: cut off from follower1, follower2, follower3"),
        "{lines}"
    );

    // Three nodes are no majority of six: without --force, follower1 does not take a term that
    // another candidate could take too.
    let promoted = cluster.followers[0].url();
    let (code, stdout, stderr) = semisync_kv(&["failover", "--to", &promoted, "--json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("it reached 3 of the 6 nodes"), "{stderr}");
    let (code, stdout, stderr) = semisync_kv(&["failover", "--to", &promoted, "--json", "--force"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let promotion: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(promotion["merged"], 3, "{promotion}");
    assert_eq!(promotion["forced"], true, "{promotion}");

    // The old leader still leads its side, with follower4 and follower5.
    let (status, body) = cluster.put("minority", "per-request", Some(2)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "quorum_not_announced", "{body}");
    assert_eq!(
        (body["acks"].clone(), body["floor"].clone()),
        (json!(2), json!(3))
    );
    let (status, body) = send(
        cluster
            .http
            .patch(format!("{}/admin/settings", cluster.leader.url()))
            .body(r#"{"write_quorum":2}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cluster.put("minority", "live setting", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "quorum_not_announced", "{body}");

    // Three nodes are no majority of six, and with two followers the new leader cannot reach
    // quorum 3 either: neither side acknowledges anything until the heal.
    let (status, body) = common::put(&cluster.http, &promoted, "majority", "w", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let everyone: Vec<String> = std::iter::once(cluster.leader.url())
        .chain(cluster.followers.iter().map(|f| f.url()))
        .collect();
    let lines = partition(&everyone, &[]);
    assert!(lines.contains("leader: connected to every peer"), "{lines}");

    // One leader: the old one steps down once it hears of the newer term.
    eventually(Duration::from_secs(10), || async {
        let (status, health) = cluster.get(&cluster.leader.url(), "/health").await;
        match health["role"].as_str() {
            Some("follower") => Ok(()),
            _ => Err(format!(
                "the old leader has not stepped down: {status} {health}"
            )),
        }
    })
    .await
    .expect("stepped down");
    // Caught up by state transfers, which replace what the minority side held.
    eventually(Duration::from_secs(10), || async {
        let (_, status) = cluster.get(&promoted, "/cluster").await;
        let followers = status["followers"].as_array().cloned().unwrap_or_default();
        match followers.iter().all(|follower| follower["state"] == "up") {
            true => Ok(()),
            false => Err(format!("not every follower is up: {status}")),
        }
    })
    .await
    .expect("every follower up");
    let (status, body) = common::put(&cluster.http, &promoted, "healed", "w", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    acknowledged.insert("healed".into(), "w".into());
    let others: Vec<(String, String)> = std::iter::once(&cluster.leader)
        .chain(&cluster.followers[1..])
        .map(|node| (node.id.clone(), node.url()))
        .collect();
    let state = common::converged(&cluster.http, &promoted, &others, Duration::from_secs(15))
        .await
        .expect("every node converges on the new leader's state");
    for (key, value) in &acknowledged {
        assert_eq!(
            state.get(key),
            Some(value),
            "acknowledged {key} lost: {state:?}"
        );
    }
    for node in &cluster.followers[1..] {
        let (_, health) = cluster.get(&node.url(), "/health").await;
        assert_eq!(health["role"], "follower", "{health}");
    }
}
