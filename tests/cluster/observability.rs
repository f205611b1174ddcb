//! What the nodes tell about themselves: the metrics and the dashboard's event stream.

use std::time::Duration;

use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;
use tokio::time::Instant;

use crate::helpers::{TestCluster, base, settings};

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
            r#"semisync_writes_total{outcome="quorum_reached",protocol="http"}"#
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
