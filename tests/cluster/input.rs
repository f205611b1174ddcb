//! Bad input from clients: every refusal's status and JSON error, and connections that never
//! finish their request.

use std::time::Duration;

use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{CLUSTER_TOKEN, TestCluster, base, send, settings};

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

/// A client that writes a whole oversized body before it reads the answer, as Python's `urllib`
/// does, gets the JSON 413 rather than a connection reset: the node answers from the
/// `Content-Length`, then reads and discards the body before it closes (lingering close).
#[tokio::test]
async fn a_client_that_sends_its_whole_oversized_body_first_still_reads_the_413() {
    const BODY_BYTES: usize = 64 << 20;
    let cluster = TestCluster::start_up(LocalSettings {
        followers: 1,
        settings: Settings {
            write_quorum: 1,
            ..base()
        },
        ..settings()
    })
    .await;
    let mut stream = TcpStream::connect(cluster.leader.addr)
        .await
        .expect("connect");
    let exchange = async {
        let head = format!(
            "PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {BODY_BYTES}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..BODY_BYTES / chunk.len() {
            stream.write_all(&chunk).await?;
        }
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the exchange ends")
        .expect("the whole body is sent and the answer read, with no reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"payload_too_large""#),
        "{answer}"
    );
    assert_eq!(
        cluster.dump(&cluster.leader.url()).await,
        Some(Default::default())
    );
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
