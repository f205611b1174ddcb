//! Cluster tests: a leader and five followers as real processes on loopback.

#[path = "../common/mod.rs"]
mod common;
mod dashboard;
mod helpers;
mod linearizability;

use std::time::Duration;

use futures::future::join_all;
use helpers::{CLUSTER_TOKEN, NodeExt, TestCluster, base, eventually, send, settings};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

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
    assert!(body["version"].as_u64().is_some());
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
    cluster.followers[0].kill();

    let (status, body) = cluster.put("k", "default", None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "WRITE_QUORUM=5 applies: {body}"
    );
    assert_eq!(body["quorum"], 5);

    let (status, body) = cluster.put("k", "two", Some(2)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["quorum"].clone(), body["acks"].clone()),
        (json!(2), json!(2))
    );

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
            body["version"].as_u64().expect("version")
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
    assert_eq!(health["version"], 300);
    assert!(state.len() <= keys.len());
}

/// Bad input gets a 4xx JSON error from a real node, and changes nothing.
#[tokio::test]
async fn bad_input_table() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            ..base()
        },
        followers: 1,
        ..settings()
    })
    .await;
    let leader = cluster.leader.url();
    let follower = cluster.followers[0].url();
    let internal = cluster.followers[0]
        .internal_url()
        .expect("internal listener");
    let http = &cluster.http;
    let cases = [
        (
            http.put(format!("{leader}/kv/a")).body("{"),
            400,
            "invalid_json",
        ),
        (
            http.put(format!("{leader}/kv/a")).body(r#"{"value":1}"#),
            400,
            "invalid_body",
        ),
        (
            http.put(format!("{leader}/kv/a?quorum=2"))
                .body(r#"{"value":"v"}"#),
            400,
            "invalid_query",
        ),
        (
            http.put(format!("{leader}/kv/a?quorum=x"))
                .body(r#"{"value":"v"}"#),
            400,
            "invalid_query",
        ),
        (
            http.put(format!("{leader}/kv/{}", "k".repeat(1025)))
                .body(r#"{"value":"v"}"#),
            400,
            "invalid_key",
        ),
        (
            http.put(format!("{leader}/kv/")).body(r#"{"value":"v"}"#),
            400,
            "invalid_key",
        ),
        (http.get(format!("{leader}/kv/missing")), 404, "not_found"),
        (
            http.get(format!("{leader}/nowhere")),
            404,
            "route_not_found",
        ),
        (
            http.post(format!("{leader}/kv/a")),
            405,
            "method_not_allowed",
        ),
        (
            http.put(format!("{follower}/kv/a"))
                .body(r#"{"value":"v"}"#),
            421,
            "not_leader",
        ),
        (
            http.post(format!("{internal}/internal/replicate"))
                .bearer_auth(CLUSTER_TOKEN)
                .body("[]"),
            400,
            "invalid_body",
        ),
        (
            http.get(format!("{internal}/internal/status")),
            401,
            "unauthorized",
        ),
        (
            http.get(format!("{internal}/internal/status"))
                .bearer_auth("guess"),
            401,
            "unauthorized",
        ),
        // Internal routes are on their own listener only, which compose does not publish.
        (
            http.get(format!("{follower}/internal/status")),
            404,
            "route_not_found",
        ),
        (
            http.post(format!("{leader}/internal/replicate")),
            404,
            "route_not_found",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = send(request).await;
        assert_eq!(
            (got.as_u16(), body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["message"].is_string(), "{body}");
    }
    // A huge declared body is refused from its headers alone, before any of it is sent.
    let mut stream = TcpStream::connect(cluster.leader.addr)
        .await
        .expect("connect");
    let head = "PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n";
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send headers");
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).await.expect("read answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"payload_too_large""#),
        "{answer}"
    );

    for node in [&leader, &follower] {
        assert_eq!(
            cluster.dump(node).await,
            Some(Default::default()),
            "nothing was written"
        );
    }
}

/// SIGTERM stops a node promptly, even with a write still waiting for its quorum.
#[tokio::test]
async fn sigterm_stops_a_node_with_a_write_in_flight() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            replicate_timeout_ms: 30_000,
            ..base()
        },
        followers: 1,
        ..settings()
    })
    .await;
    cluster.followers[0].kill();
    let url = format!("{}/kv/k", cluster.leader.url());
    let pending = tokio::spawn(cluster.http.put(url).json(&json!({"value": "v"})).send());
    // The leader applies a write before waiting for its quorum: version 1 means it is waiting.
    eventually(Duration::from_secs(5), || async {
        let (_, health) = cluster.get(&cluster.leader.url(), "/health").await;
        if health["version"] == 1 {
            Ok(())
        } else {
            Err(format!("not yet applied: {health}"))
        }
    })
    .await
    .expect("write in flight");

    cluster.leader.signal(Signal::SIGTERM);
    // Far less than the 30 s the write would otherwise wait.
    let status = cluster
        .leader
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("leader exited");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        pending.await.expect("join").is_err(),
        "the pending write's connection was closed"
    );

    cluster.followers[0].restart().expect("restart");
    cluster.followers[0].signal(Signal::SIGTERM);
    let status = cluster.followers[0]
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("follower exited");
    assert!(status.success(), "clean exit: {status:?}");
}

/// Writes `count` keys `prefix0..` on the leader, `concurrency` at a time, with quorum 1; returns
/// the versions of the writes that were acknowledged.
async fn write_many(
    cluster: &TestCluster,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> Vec<u64> {
    let mut versions = Vec::new();
    let keys: Vec<usize> = (0..count).collect();
    for chunk in keys.chunks(concurrency) {
        let writes = chunk
            .iter()
            .map(|i| cluster.put_q1(format!("{prefix}{i}"), format!("v{i}")));
        for (status, body) in join_all(writes).await {
            if status == StatusCode::OK {
                versions.push(body["version"].as_u64().expect("version"));
            }
        }
    }
    versions
}

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
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 5,
            ..base()
        },
        ..settings()
    })
    .await;
    let versions = write_many(&cluster, "k", 100, 10).await;
    assert_eq!(versions.len(), 100);
    let (status, _) = cluster.delete("k7", Some(5)).await;
    assert_eq!(status, StatusCode::OK);
    let last_version = 101;

    cluster.leader.signal(Signal::SIGKILL);
    cluster.leader.restart().expect("restart");

    let (_, health) = cluster.get(&cluster.leader.url(), "/health").await;
    assert_eq!(
        health["version"], last_version,
        "versions continue where the followers are"
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
    assert!(
        body["version"].as_u64() > Some(last_version),
        "newer version: {body}"
    );
    let state = cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    assert_eq!(state.len(), 100);
}

/// A restarted leader whose followers hold different states (one was down during some writes)
/// ends with every node on one state, including the follower that comes back with writes the new
/// leader never saw.
#[tokio::test]
async fn a_follower_down_across_a_leader_restart_converges() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            ..base()
        },
        ..settings()
    })
    .await;
    assert_eq!(write_many(&cluster, "a", 50, 10).await.len(), 50);
    cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    cluster.followers[4].signal(Signal::SIGSTOP);
    cluster.leader.signal(Signal::SIGKILL);
    cluster.leader.restart().expect("restart");
    assert_eq!(write_many(&cluster, "b", 50, 10).await.len(), 50);
    cluster.followers[4].signal(Signal::SIGCONT);
    cluster.wait_follower(4, "up", Duration::from_secs(5)).await;
    let state = cluster
        .converged(Duration::from_secs(5))
        .await
        .expect("converged");
    assert_eq!(state.len(), 100);
}

/// A write that only one follower holds (an "orphan") while the leader restarts without it:
/// the new leader cannot know its version, so it takes versions from the clock, newer than any
/// the old leader issued. Its writes win over the orphan when a later leader merges both, and
/// every node converges.
#[tokio::test]
async fn an_orphan_write_on_an_absent_follower_does_not_win_over_newer_writes() {
    let mut cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            ..base()
        },
        ..settings()
    })
    .await;
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
    cluster.leader.restart().expect("restart"); // recovers without follower5
    let (status, new) = cluster.put("k", "new", Some(4)).await;
    assert_eq!(status, StatusCode::OK, "{new}");
    assert!(
        new["version"].as_u64() > old["version"].as_u64(),
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

/// Runs the `semisync-kv` binary with `args`; returns its exit code, stdout and stderr.
fn semisync_kv(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_semisync-kv"))
        .args(args)
        .output()
        .expect("run semisync-kv");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(output.stdout),
        text(output.stderr),
    )
}

/// The command-line client: no JSON quoting, clear output, exit codes scripts can use.
#[tokio::test]
async fn command_line_client() {
    let cluster = TestCluster::start_up(settings()).await;
    let leader = cluster.leader.url();
    let follower = cluster.followers[0].url();

    let (code, out, err) = semisync_kv(&["put", "greeting", "hello world", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(r#"OK greeting = "hello world" (version 1; 3 of 3 acks"#),
        "{out}"
    );

    let (code, out, _) = semisync_kv(&[
        "put", "a/b", "x", "--quorum", "5", "--leader", &leader, "--json",
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(
        (json["key"].clone(), json["acks"].clone()),
        (json!("a/b"), json!(5))
    );

    let (code, out, _) = semisync_kv(&["get", "greeting", "--node", &follower]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"greeting = "hello world" (version 1)"#)
    );
    let (code, out, _) = semisync_kv(&["get", "a/b", "--node", &follower]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"a/b = "x" (version 2)"#),
        "slashes survive the URL"
    );

    let (code, _, err) = semisync_kv(&["get", "nope", "--node", &leader]);
    assert_eq!(code, 1, "an error answer exits 1");
    assert!(err.contains("not_found"), "{err}");
    let (code, _, err) = semisync_kv(&["put", "k", "v", "--leader", &follower]);
    assert_eq!(code, 1);
    assert!(err.contains("not_leader"), "{err}");
    let (code, _, err) = semisync_kv(&["get", "k", "--node", "http://127.0.0.1:1"]);
    assert_eq!(code, 3, "an unreachable node exits 3: {err}");
    let (code, _, err) = semisync_kv(&["put", "k"]);
    assert_eq!(code, 2, "bad usage exits 2: {err}");

    let (code, out, _) = semisync_kv(&["delete", "greeting", "--leader", &leader]);
    assert_eq!(code, 0);
    assert!(out.starts_with("OK deleted greeting (version 3"), "{out}");
    let (code, out, _) = semisync_kv(&["dump", "--node", &leader]);
    assert_eq!((code, out.trim()), (0, r#"a/b = "x""#));
    let (_, out, _) = semisync_kv(&["dump", "--node", &leader, "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON"),
        json!({"a/b": "x"})
    );

    cluster.wait_follower(4, "up", Duration::from_secs(5)).await;
    let (code, out, _) = semisync_kv(&["status", "--leader", &leader]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("leader leader: version 3, 1 keys, write quorum 3"),
        "{out}"
    );
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("FOLLOWER")),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("follower")).count(),
        5,
        "{out}"
    );

    let (code, out, _) = semisync_kv(&["health", "--url", &follower]);
    assert_eq!(
        (code, out.trim()),
        (0, "ok: follower follower1 at version 3")
    );
    let (code, _, _) = semisync_kv(&["health", "--url", "http://127.0.0.1:1"]);
    assert_ne!(code, 0);
}

/// The benchmark against a local cluster of its own writes a JSON file with every field and
/// PNG charts of the stated size. (Its figures are measurements, not asserted.)
#[tokio::test]
async fn benchmark_writes_results_and_charts() {
    let out_dir = std::env::temp_dir().join(format!("semisync-bench-test-{}", std::process::id()));
    let out = out_dir.to_str().expect("UTF-8 path");
    let (code, stdout, stderr) = semisync_kv(&[
        "bench",
        "--local",
        "--writes",
        "12",
        "--concurrency",
        "3",
        "--quorums",
        "1,3,5",
        "--max-delay-ms",
        "50",
        "--settle-ms",
        "1000",
        "--throughput",
        "--throughput-seconds",
        "0.5",
        "--throughput-concurrency",
        "1,2",
        "--throughput-quorums",
        "1,2",
        "--out-dir",
        out,
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("theory ms"), "a table at the end: {stdout}");

    let text = std::fs::read_to_string(out_dir.join("benchmark_results.json")).expect("JSON file");
    let results: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let config = &results["config"];
    for field in [
        "min_delay_ms",
        "max_delay_ms",
        "replicate_timeout_ms",
        "writes",
        "concurrency",
    ] {
        assert!(config[field].is_u64(), "config.{field}: {config}");
    }
    assert_eq!(config["followers"].as_array().map(Vec::len), Some(5));
    assert_eq!(config["max_delay_ms"], 50);
    let quorums = results["quorums"].as_array().expect("quorums");
    assert_eq!(
        quorums
            .iter()
            .map(|q| q["quorum"].as_u64())
            .collect::<Vec<_>>(),
        [Some(1), Some(3), Some(5)]
    );
    for q in quorums {
        assert_eq!(q["sent"], 12, "{q}");
        assert_eq!(
            q["succeeded"]
                .as_u64()
                .zip(q["failed"].as_u64())
                .map(|(s, f)| s + f),
            Some(12)
        );
        for stat in ["mean", "p50", "p90", "p99", "max"] {
            assert!(q["latency_ms"][stat].is_number(), "latency_ms.{stat}: {q}");
        }
        let k = q["quorum"].as_f64().expect("quorum");
        assert_eq!(q["theoretical_mean_ms"].as_f64(), Some(k * 50.0 / 6.0));
        assert!(q["immediate_mismatching_followers"].is_u64(), "{q}");
        assert_eq!(
            q["settled_mismatching_followers"], 0,
            "replicas converged after settling: {q}"
        );
    }
    let runs = results["throughput"]["runs"]
        .as_array()
        .expect("throughput runs");
    assert_eq!(runs.len(), 4);
    for run in runs {
        assert!(
            run["writes_per_sec"].is_number() && run["latency_ms"]["p99"].is_number(),
            "{run}"
        );
    }

    for chart in ["quorum_latency.png", "throughput.png"] {
        let file = std::fs::File::open(out_dir.join(chart)).expect("chart file");
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("a PNG");
        let mut pixels = vec![0; decoder.output_buffer_size().expect("size")];
        let frame = decoder.next_frame(&mut pixels).expect("decodes");
        assert_eq!((frame.width, frame.height), (1600, 1000), "{chart}");
    }
    std::fs::remove_dir_all(&out_dir).expect("clean up");
}

/// A client that trickles its headers (slowloris) is cut off after HEADER_READ_TIMEOUT_MS
/// instead of holding a connection forever.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 1,
            ..base()
        },
        followers: 1,
        leader_env: vec![("HEADER_READ_TIMEOUT_MS".into(), "300".into())],
        ..settings()
    })
    .await;
    let mut stream = TcpStream::connect(cluster.leader.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send part");
    let mut buffer = [0; 1024];
    // Far longer than the 300 ms allowed; without the limit the read would never return.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
    match read.expect("the server closed the connection") {
        Ok(n) => assert!(
            n == 0 || String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&buffer[..n])
        ),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
}

/// One operation of a recorded history: on which key, and what it did when.
type Recorded = (String, linearizability::Operation);

/// Sends `request`, records it as an operation on `key` with its call and return times, and
/// returns the HTTP status. A write answered 503 is indeterminate: it may have taken effect.
async fn record(
    history: &std::sync::Mutex<Vec<Recorded>>,
    started: Instant,
    key: &str,
    write: Option<Option<String>>,
    request: reqwest::RequestBuilder,
) -> StatusCode {
    let call = started.elapsed().as_micros() as u64;
    let (status, body) = send(request).await;
    let ret = started.elapsed().as_micros() as u64;
    let (ret, kind) = match (write, status) {
        (Some(value), StatusCode::OK) => (Some(ret), linearizability::Kind::Write(value)),
        (Some(value), StatusCode::SERVICE_UNAVAILABLE) => {
            (None, linearizability::Kind::Write(value))
        }
        (None, StatusCode::OK) => (
            Some(ret),
            linearizability::Kind::Read(body["value"].as_str().map(String::from)),
        ),
        (None, StatusCode::NOT_FOUND) => (Some(ret), linearizability::Kind::Read(None)),
        (_, status) => panic!("unexpected answer {status}: {body}"),
    };
    let operation = linearizability::Operation { call, ret, kind };
    history
        .lock()
        .expect("history")
        .push((key.to_owned(), operation));
    status
}

/// The operations on `key`, in the order they were recorded.
fn history_of(history: &[Recorded], key: &str) -> Vec<linearizability::Operation> {
    history
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, op)| op.clone())
        .collect()
}

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

/// `/metrics` on a real cluster: acks per follower, followers up, the follower's own version.
#[tokio::test]
async fn metrics_follow_replication() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            write_quorum: 2,
            ..base()
        },
        followers: 2,
        ..settings()
    })
    .await;
    for i in 0..3 {
        let (status, body) = cluster.put(&format!("k{i}"), "v", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let http = &cluster.http;
    let text = |base: String| async move {
        let response = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape");
        response.text().await.expect("text")
    };
    let leader = text(cluster.leader.url()).await;
    let line = |text: &str, prefix: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(prefix)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    };
    assert_eq!(
        line(
            &leader,
            r#"semisync_writes_total{outcome="quorum_reached"}"#
        ),
        Some(3.0),
        "{leader}"
    );
    for follower in &cluster.followers {
        let labels = format!(
            r#"{{follower="{}/"}}"#,
            follower.internal_url().expect("internal")
        );
        let acks = line(
            &leader,
            &format!("semisync_replica_ack_duration_seconds_count{labels}"),
        );
        assert_eq!(acks, Some(3.0), "{leader}");
        assert_eq!(
            line(&leader, &format!("semisync_replica_up{labels}")),
            Some(1.0),
            "{leader}"
        );
    }
    let follower = text(cluster.followers[0].url()).await;
    assert_eq!(line(&follower, "semisync_version"), Some(3.0), "{follower}");
}

/// Reads Server-Sent Events from `response` until `done` says the messages so far suffice, or
/// fails after `within`.
async fn read_events(
    response: &mut reqwest::Response,
    within: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    let (mut messages, mut buffer) = (Vec::new(), String::new());
    while !done(&messages) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("not all events came within {within:?}: {messages:#?}"))
            .expect("stream readable")
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for data in event.lines().filter_map(|line| line.strip_prefix("data: ")) {
                messages.push(serde_json::from_str(data).expect("JSON event"));
            }
        }
    }
    messages
}

/// The dashboard's event stream carries each message with the lag drawn for it, every ack (the
/// late ones too) and the answer, in an order that can be replayed.
#[tokio::test]
async fn the_event_stream_shows_every_message_ack_and_answer() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            min_delay_ms: 20,
            max_delay_ms: 150,
            write_quorum: 2,
            ..base()
        },
        ..settings()
    })
    .await;
    let mut stream = cluster
        .http
        .get(format!("{}/events", cluster.leader.url()))
        .send()
        .await
        .expect("event stream");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (status, body) = cluster.put("watched", "v", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = body["version"].clone();

    let of_write = |messages: &[serde_json::Value], kind: &str| -> Vec<serde_json::Value> {
        messages
            .iter()
            .filter(|m| m["type"] == kind && m["version"] == version)
            .cloned()
            .collect()
    };
    let messages = read_events(&mut stream, Duration::from_secs(10), |messages| {
        of_write(messages, "ack").len() == 5 && of_write(messages, "outcome").len() == 1
    })
    .await;
    assert_eq!(messages[0]["type"], "snapshot", "the stream opens with one");
    let writes = of_write(&messages, "write");
    assert_eq!(writes.len(), 1, "{messages:#?}");
    assert_eq!(
        (&writes[0]["key"], &writes[0]["quorum"]),
        (&json!("watched"), &json!(2))
    );

    // First attempts only: a retry on a loaded machine would send a second message.
    let sends: Vec<_> = of_write(&messages, "send")
        .into_iter()
        .filter(|send| send["attempt"] == 1)
        .collect();
    let acks = of_write(&messages, "ack");
    let mut followers: Vec<u64> = sends
        .iter()
        .map(|s| s["follower"].as_u64().expect("index"))
        .collect();
    followers.sort_unstable();
    assert_eq!(followers, [0, 1, 2, 3, 4], "one message per follower");
    for send in &sends {
        let delay = send["delay_ms"].as_f64().expect("delay");
        assert!((20.0..=150.0).contains(&delay), "{send}");
        let ack = acks
            .iter()
            .find(|a| a["follower"] == send["follower"])
            .expect("every follower acked");
        // An ack comes after the lag drawn for its message, and the stream is in time order.
        assert!(
            ack["latency_ms"].as_f64().expect("latency") >= delay,
            "{send} {ack}"
        );
        assert!(
            ack["at_ms"].as_f64() >= send["at_ms"].as_f64(),
            "{send} {ack}"
        );
    }

    let outcome = &of_write(&messages, "outcome")[0];
    assert_eq!(outcome["status"], 200);
    let counted = outcome["acked_by"].as_array().expect("list");
    assert_eq!(counted.len(), 2, "{outcome}");
    for follower in counted {
        assert!(
            acks.iter().any(|a| &a["follower"] == follower),
            "a counted ack was published: {outcome}"
        );
    }
    // Every counted ack is in the stream before the outcome, which is what lets the dashboard
    // fill its quorum counter before it shows the answer.
    let position = |wanted: &serde_json::Value| {
        messages
            .iter()
            .position(|m| m == wanted)
            .expect("in the stream")
    };
    for follower in counted {
        let ack = acks
            .iter()
            .find(|a| &a["follower"] == follower)
            .expect("ack");
        assert!(position(ack) < position(outcome), "{ack} after {outcome}");
    }
}

/// Cutting a follower off from the CLI: the leader sees it down, writes that need it time out,
/// it misses writes, and once restored it catches up by itself. Settings change live.
#[tokio::test]
async fn a_follower_cut_off_from_the_cli_misses_writes_and_catches_up_when_restored() {
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            replicate_timeout_ms: 5000,
            ..base()
        },
        ..settings()
    })
    .await;
    let leader = cluster.leader.url();

    let (code, out, err) = semisync_kv(&[
        "settings",
        "--leader",
        &leader,
        "--write-quorum",
        "5",
        "--replicate-timeout-ms",
        "2000",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "write quorum 5, lag 0..20 ms, timeout 2000 ms");
    let (code, _, err) = semisync_kv(&["settings", "--leader", &leader, "--min-delay-ms", "99"]);
    assert_eq!(code, 1, "min above max is refused");
    assert!(err.contains("invalid_settings"), "{err}");

    let (code, out, err) = semisync_kv(&["cut", "follower2", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("follower2 cut off"), "{out}");
    let follower = cluster
        .wait_follower(1, "down", Duration::from_secs(5))
        .await;
    assert_eq!(follower["cut_off"], true);
    let (_, out, _) = semisync_kv(&["status", "--leader", &leader]);
    assert!(out.contains("cut_off"), "{out}");

    // The new default quorum (5) cannot be reached without follower2: 503 after 2 s.
    let (status, body) = cluster.put("missed", "1", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (&body["quorum"], &body["timeout_ms"]),
        (&json!(5), &json!(2000))
    );
    let acked_by = body["acked_by"].as_array().expect("list");
    assert!(!acked_by.contains(&json!("follower2")), "{body}");
    let (status, body) = cluster.put("also-missed", "2", Some(4)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cut = cluster.followers[1].url();
    let dump = cluster
        .dump(&cut)
        .await
        .expect("follower2 still answers clients");
    assert!(!dump.contains_key("missed"), "{dump:?}");

    let (code, out, err) = semisync_kv(&["restore", "follower2", "--leader", &leader]);
    assert_eq!(code, 0, "{out}{err}");
    cluster
        .wait_follower(1, "up", Duration::from_secs(10))
        .await;
    let state = cluster
        .converged(Duration::from_secs(15))
        .await
        .expect("follower2 catches up");
    assert_eq!(state.len(), 2);
}
