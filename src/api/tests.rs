//! Router tests without sockets: every status code and error shape of the API, through
//! `tower::ServiceExt::oneshot`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, client_router, internal_router};
use crate::config::{Config, Role, parse_base_url};
use crate::error::StartError;
use crate::settings::{Settings, WaitPoint};

/// Nothing listens on port 1: messages to this "follower" fail at once.
const DEAD_FOLLOWER: &str = "http://127.0.0.1:1";

/// A node's configuration for tests that need no running cluster.
pub(crate) fn config(role: Role) -> Config {
    Config {
        role,
        node_id: Some(format!("{}-1", role.as_str())),
        listen_addr: "127.0.0.1:0".parse().expect("valid address"),
        followers: match role {
            Role::Leader => vec![parse_base_url(DEAD_FOLLOWER).expect("valid URL")],
            Role::Follower => vec![],
        },
        peers: vec![],
        leader_url: Some(parse_base_url("http://leader:8000").expect("valid URL")),
        public_url: None,
        settings: Settings {
            write_quorum: 0,
            min_delay_ms: 0,
            max_delay_ms: 0,
            replicate_timeout_ms: 100,
            wait_point: WaitPoint::AfterCommit,
            auto_failover: false,
        },
        replication_backlog: 100,
        internal_listen_addr: "127.0.0.1:0".parse().expect("valid address"),
        resp_listen_addr: None,
        resp_public_addr: None,
        cluster_token: None,
        cluster_token_file: None,
        header_read_timeout_ms: 1000,
        request_timeout_ms: None,
        max_concurrent_requests: 8,
        max_value_bytes: 16,
        failover_after_ms: 1500,
    }
}

/// A node's two routers over one state: `call` sends `/internal/...` to the internal one, as
/// the internal listener would receive it, and everything else to the public one.
#[derive(Clone)]
struct Node {
    public: Router,
    internal: Router,
}

fn node(config: &Config) -> Node {
    node_and_state(config).1
}

/// [`node`], with its state, for the tests that serve a replication stream on it.
fn node_and_state(config: &Config) -> (AppState, Node) {
    let state = AppState::new(config).expect("a valid configuration");
    if config.role == Role::Leader {
        state.lead_at_once();
    }
    let node = Node {
        public: client_router(state.clone()),
        internal: internal_router(state.clone()),
    };
    (state, node)
}

fn app(role: Role) -> Node {
    node(&config(role))
}

/// Sends one request and returns the status and the JSON body.
async fn call(app: &Node, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    call_with(app, method, uri, body, None).await
}

/// `call` with an optional `Authorization` header.
async fn call_with(
    app: &Node,
    method: &str,
    uri: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let request = request
        .body(body.map_or_else(Body::empty, |text| Body::from(text.to_owned())))
        .expect("valid request");
    let router = if uri.starts_with("/internal/") {
        &app.internal
    } else {
        &app.public
    };
    let (status, _, bytes) = exchange(router, request).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("{method} {uri}: body is not JSON ({err}): {bytes:?}"));
    (status, json)
}

/// Sends one request to `router` and reads the whole answer.
async fn exchange(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

/// A GET on one router, bypassing `call`'s dispatch and JSON parsing: the status and the body.
async fn get_raw(router: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::get(uri).body(Body::empty()).expect("request");
    let (status, _, bytes) = exchange(router, request).await;
    (status, bytes.to_vec())
}

/// Asserts an error response: its status, its stable code, and a non-empty message.
async fn assert_error(
    app: &Node,
    method: &str,
    uri: &str,
    body: Option<&str>,
    status: u16,
    code: &str,
) -> Value {
    let (got, json) = call(app, method, uri, body).await;
    assert_eq!(got.as_u16(), status, "{method} {uri} {body:?}: {json}");
    assert_eq!(json["error"], code, "{method} {uri} {body:?}: {json}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    json
}

#[tokio::test]
async fn health_names_role_and_node() {
    let (status, json) = call(&app(Role::Leader), "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "ok");
    assert_eq!(json["role"], "leader");
    assert_eq!(json["node_id"], "leader-1");
    let (_, json) = call(&app(Role::Follower), "GET", "/health", None).await;
    assert_eq!(json["role"], "follower");
}

#[tokio::test]
async fn put_then_get_then_delete_on_the_leader() {
    let app = app(Role::Leader);
    assert_error(&app, "GET", "/kv/a", None, 404, "not_found").await;

    let (status, json) = call(&app, "PUT", "/kv/a", Some(r#"{"value":"1"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["key"], "a");
    assert_eq!(json["value"], "1");
    assert_eq!(json["version"], "1.1");
    assert_eq!(json["quorum"], 0);
    assert_eq!(json["acks"], 0);
    assert_eq!(json["acked_by"], json!([]));
    assert!(json["latency_ms"].is_number());

    let (status, json) = call(&app, "GET", "/kv/a", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"key": "a", "value": "1", "version": "1.1"}));

    let (status, json) = call(&app, "GET", "/dump", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"a": "1"}));

    let (status, json) = call(&app, "DELETE", "/kv/a", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["version"], "1.2");
    assert_eq!(json["value"], Value::Null);
    assert_error(&app, "GET", "/kv/a", None, 404, "not_found").await;
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({}));

    let (status, _) = call(&app, "DELETE", "/kv/never-written", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "deleting a missing key is not an error"
    );
}

#[tokio::test]
async fn keys_may_contain_slashes_and_percent_escapes() {
    let app = app(Role::Leader);
    let (status, json) = call(&app, "PUT", "/kv/users/42%20x", Some(r#"{"value":"v"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["key"], "users/42 x");
    assert_eq!(
        call(&app, "GET", "/kv/users/42%20x", None).await.1["value"],
        "v"
    );
}

#[tokio::test]
async fn quorum_timeout_is_503_and_the_write_stays_applied() {
    let app = app(Role::Leader);
    let json = assert_error(
        &app,
        "PUT",
        "/kv/k?quorum=1",
        Some(r#"{"value":"v"}"#),
        503,
        "quorum_timeout",
    )
    .await;
    assert_eq!(json["version"], "1.1");
    assert_eq!(json["quorum"], 1);
    assert_eq!(json["acks"], 0);
    assert_eq!(json["acked_by"], json!([]));
    assert_eq!(json["applied_on_leader"], true);
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("not rolled back")),
        "{json}"
    );
    let (status, json) = call(&app, "GET", "/kv/k", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a timed-out write is not rolled back: {json}"
    );

    assert_error(
        &app,
        "DELETE",
        "/kv/k?quorum=1",
        None,
        503,
        "quorum_timeout",
    )
    .await;
    assert_error(&app, "GET", "/kv/k", None, 404, "not_found").await;
}

/// A leader whose term began under `after_sync` with a state it took over (a key it held
/// before it led) shows that state once enough followers of its term hold it. Its one follower
/// is down: `GET` waits `wait_ms`, then answers `503 state_not_replicated`, and so does `/dump`;
/// under `after_commit` it shows the state at once.
#[tokio::test]
async fn a_new_leader_under_after_sync_shows_what_it_took_over_once_its_followers_hold_it() {
    let mut config = config(Role::Leader);
    config.settings.wait_point = WaitPoint::AfterSync;
    config.settings.write_quorum = 1;
    let state = AppState::new(&config).expect("a valid configuration");
    let held = crate::store::Entry {
        value: Some("taken over".into()),
        version: crate::Version::new(0, 7),
    };
    state.replica().store.apply("k", held);
    state.lead_at_once();
    let app = Node {
        public: client_router(state.clone()),
        internal: internal_router(state),
    };
    let uri = "/kv/k?wait_ms=30";
    let json = assert_error(&app, "GET", uri, None, 503, "state_not_replicated").await;
    assert_eq!(
        (json["held"].as_u64(), json["needed"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(json["waited_ms"].as_u64() >= Some(30), "{json}");
    assert_error(&app, "GET", "/dump", None, 503, "state_not_replicated").await;
    let change = r#"{"wait_point":"after_commit"}"#;
    let (status, _) = call(&app, "PATCH", "/admin/settings", Some(change)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = call(&app, "GET", "/kv/k", None).await;
    assert_eq!(
        (status, &json["value"]),
        (StatusCode::OK, &json!("taken over"))
    );
}

#[tokio::test]
async fn writes_to_a_follower_are_refused_and_change_nothing() {
    let app = app(Role::Follower);
    let json = assert_error(
        &app,
        "PUT",
        "/kv/a",
        Some(r#"{"value":"1"}"#),
        421,
        "not_leader",
    )
    .await;
    assert_eq!(json["leader"], "http://leader:8000/");
    assert_error(&app, "DELETE", "/kv/a", None, 421, "not_leader").await;
    // Refused before the body is even read.
    assert_error(&app, "PUT", "/kv/a", Some("garbage"), 421, "not_leader").await;
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({}));
}

#[tokio::test]
async fn bad_bodies_are_400_or_413() {
    let app = app(Role::Leader);
    let cases: [(&str, u16, &str); 9] = [
        ("", 400, "invalid_json"),
        ("{", 400, "invalid_json"),
        ("not json", 400, "invalid_json"),
        (r#"{"value":5}"#, 400, "invalid_body"),
        (r#"{"value":null}"#, 400, "invalid_body"),
        (r#"{}"#, 400, "invalid_body"),
        (r#"["value"]"#, 400, "invalid_body"),
        (r#"{"value":"v","extra":1}"#, 400, "invalid_body"),
        (r#"{"value":"01234567890123456"}"#, 413, "payload_too_large"),
    ];
    for (body, status, code) in cases {
        assert_error(&app, "PUT", "/kv/a", Some(body), status, code).await;
    }
    let huge = format!(r#"{{"value":"{}"}}"#, "x".repeat(10_000));
    let json = assert_error(&app, "PUT", "/kv/a", Some(&huge), 413, "payload_too_large").await;
    assert!(json["limit_bytes"].is_number());
    assert_eq!(
        call(&app, "GET", "/dump", None).await.1,
        json!({}),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_value_at_the_limit_is_accepted() {
    let app = app(Role::Leader);
    let (status, json) = call(
        &app,
        "PUT",
        "/kv/a",
        Some(r#"{"value":"0123456789abcdef"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn bad_keys_and_query_strings_are_400() {
    let app = app(Role::Leader);
    let long_key = format!("/kv/{}", "k".repeat(1025));
    let ok_key = format!("/kv/{}", "k".repeat(1024));
    assert_error(&app, "GET", &long_key, None, 400, "invalid_key").await;
    assert_error(
        &app,
        "PUT",
        &long_key,
        Some(r#"{"value":"v"}"#),
        400,
        "invalid_key",
    )
    .await;
    assert_error(&app, "GET", &ok_key, None, 404, "not_found").await;
    assert_error(&app, "GET", "/kv/", None, 400, "invalid_key").await;
    assert_error(
        &app,
        "PUT",
        "/kv",
        Some(r#"{"value":"v"}"#),
        400,
        "invalid_key",
    )
    .await;
    assert_error(&app, "GET", "/kv/%FF", None, 400, "invalid_key").await;
    for query in ["quorum=2", "quorum=-1", "quorum=abc", "quorum=", "qourum=1"] {
        let uri = format!("/kv/a?{query}");
        assert_error(
            &app,
            "PUT",
            &uri,
            Some(r#"{"value":"v"}"#),
            400,
            "invalid_query",
        )
        .await;
        assert_error(&app, "DELETE", &uri, None, 400, "invalid_query").await;
    }
    assert_eq!(
        call(&app, "GET", "/dump", None).await.1,
        json!({}),
        "nothing was written"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = app(Role::Leader);
    assert_error(&app, "GET", "/nope", None, 404, "route_not_found").await;
    assert_error(&app, "PATCH", "/kv/a", None, 405, "method_not_allowed").await;
    assert_error(&app, "POST", "/health", None, 405, "method_not_allowed").await;
    assert_error(
        &app,
        "GET",
        "/internal/replicate",
        None,
        405,
        "method_not_allowed",
    )
    .await;
}

/// The follower's incarnation, as its heartbeat answer reports it.
async fn incarnation(app: &Node) -> u64 {
    let (_, status) = call(app, "GET", "/internal/status", None).await;
    status["incarnation"].as_u64().expect("incarnation")
}

/// A state transfer body from `leader` to the follower `app`.
async fn transfer(app: &Node, leader: u64, version: u64, entries: &str) -> String {
    let follower = incarnation(app).await;
    format!(
        r#"{{"term":{leader},"follower":{follower},"version":"7.{version}","entries":[{entries}]}}"#
    )
}

/// A state transfer's version has the same ceiling as every write's: a counter at `u64::MAX`
/// would make this node's next version wrap (when it leads), and every later transfer be
/// refused.
#[tokio::test]
async fn a_state_transfer_above_the_largest_version_is_refused() {
    let app = app(Role::Follower);
    for version in [9_007_199_254_740_992_u64, u64::MAX] {
        let body = transfer(&app, 7, version, "").await;
        assert_error(
            &app,
            "POST",
            "/internal/transfer",
            Some(&body),
            400,
            "invalid_body",
        )
        .await;
    }
    let (_, status) = call(&app, "GET", "/internal/status", None).await;
    assert_eq!(status["version"], "0.0", "{status}");
    assert_eq!(status["following"], Value::Null, "{status}");
}

/// Makes `app` (a follower) follow the leader of term 7 with an empty state.
async fn follow_leader_7(app: &Node) {
    let body = transfer(app, 7, 0, "").await;
    let (status, ack) = call(app, "POST", "/internal/transfer", Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["replaced"], true);
}

/// A batch from the leader of term 7 of the writes (JSON objects) `writes`.
fn batch(writes: &[&str]) -> String {
    batch_of(7, writes)
}

/// Appends the batch `json` (as `POST /internal/replicate` takes it) to `out` as a frame of the
/// replication stream.
fn stream_frame(json: &str, out: &mut Vec<u8>) {
    let batch: crate::replication::wire::Batch = serde_json::from_str(json).expect("a batch");
    crate::replication::wire::binary::encode_batch(&batch, out);
}

/// A batch from the leader of `term` of the writes (JSON objects) `writes`.
fn batch_of(term: u64, writes: &[&str]) -> String {
    format!(
        r#"{{"term":{term},"smallest_quorum":1,"writes":[{}]}}"#,
        writes.join(",")
    )
}

#[tokio::test]
async fn follower_applies_replicated_writes_by_version() {
    let app = app(Role::Follower);
    follow_leader_7(&app).await;
    let write = |value: &str, version: u64| {
        let value = if value == "null" {
            "null".to_owned()
        } else {
            format!("{value:?}")
        };
        batch(&[&format!(
            r#"{{"key":"k","value":{value},"version":"7.{version}"}}"#
        )])
    };
    let (status, ack) = call(&app, "POST", "/internal/replicate", Some(&write("new", 5))).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        ack,
        json!({"node_id": "follower-1", "acks": [{"version": "7.5", "applied": true}]})
    );

    let (status, ack) = call(&app, "POST", "/internal/replicate", Some(&write("old", 4))).await;
    assert_eq!(status, StatusCode::OK, "a late message is acknowledged");
    assert_eq!(ack["acks"][0]["applied"], false);
    assert_eq!(call(&app, "GET", "/kv/k", None).await.1["value"], "new");

    let (_, ack) = call(&app, "POST", "/internal/replicate", Some(&write("null", 6))).await;
    assert_eq!(ack["acks"][0]["applied"], true);
    assert_error(&app, "GET", "/kv/k", None, 404, "not_found").await;
    assert_eq!(call(&app, "GET", "/health", None).await.1["version"], "7.6");
}

#[tokio::test]
async fn a_batch_is_applied_in_one_request_and_a_bad_write_does_not_poison_it() {
    let app = app(Role::Follower);
    follow_leader_7(&app).await;
    let body = batch(&[
        r#"{"key":"a","value":"1","version":"7.1"}"#,
        r#"{"key":"","value":"empty key","version":"7.2"}"#,
        r#"{"key":"b","value":"2","version":"7.3"}"#,
        r#"{"key":"a","value":"old","version":"7.0"}"#,
        r#"{"key":"c","value":"no term","version":"0.5"}"#,
        r#"{"key":"b","value":null,"version":"7.4"}"#,
        r#"{"key":"a","value":"dup","version":"7.1"}"#,
    ]);
    let (status, ack) = call(&app, "POST", "/internal/replicate", Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let acks = ack["acks"].as_array().expect("acks");
    let summary: Vec<(&str, bool, bool)> = acks
        .iter()
        .map(|a| {
            (
                a["version"].as_str().expect("version"),
                a["applied"].as_bool().expect("applied"),
                a.get("refused").is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("7.1", true, false),
            ("7.2", false, true),
            ("7.3", true, false),
            ("7.0", false, true),
            ("0.5", false, true),
            ("7.4", true, false),
            ("7.1", false, false),
        ]
    );
    assert!(acks[1]["refused"].as_str().expect("why").contains("empty"));
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({"a": "1"}));
    assert_eq!(call(&app, "GET", "/health", None).await.1["version"], "7.4");

    // An empty batch is answered with no acks.
    let (status, ack) = call(&app, "POST", "/internal/replicate", Some(&batch(&[]))).await;
    assert_eq!((status, ack["acks"].clone()), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn follower_refuses_writes_of_a_leader_it_is_not_synced_with() {
    let app = app(Role::Follower);
    let body = &batch(&[r#"{"key":"k","value":"v","version":"7.1"}"#]);
    let json = assert_error(
        &app,
        "POST",
        "/internal/replicate",
        Some(body),
        409,
        "not_synced",
    )
    .await;
    assert_eq!(json["following"], Value::Null);
    follow_leader_7(&app).await;
    assert_eq!(
        call(&app, "POST", "/internal/replicate", Some(body))
            .await
            .0,
        StatusCode::OK
    );
    // A newer term's batch: the follower adopts the term, but holds none of that leader's
    // state until its transfer (it still holds term 7's); and the old term is over.
    let newer = &batch_of(8, &[r#"{"key":"k","value":"new","version":"7.2"}"#]);
    let json = assert_error(
        &app,
        "POST",
        "/internal/replicate",
        Some(newer),
        409,
        "not_synced",
    )
    .await;
    assert_eq!(json["following"], 7);
    assert_error(
        &app,
        "POST",
        "/internal/replicate",
        Some(body),
        409,
        "stale_term",
    )
    .await;
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({"k": "v"}));
}

/// The replication stream answers each batch as `POST /internal/replicate` does, in order, and
/// answers a frame that is not a batch with a 400 before it closes. Opening one needs the
/// `Upgrade` header.
#[tokio::test]
async fn the_replication_stream_answers_batches_as_the_json_route_does() {
    use crate::replication::wire::binary::{self, Answer, Frames};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// Sends `payloads` as frames and reads as many answers.
    async fn exchange(
        leader: &mut DuplexStream,
        frames: &mut Frames,
        payloads: &[Vec<u8>],
    ) -> Vec<Answer> {
        let mut bytes = Vec::new();
        for payload in payloads {
            bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        leader.write_all(&bytes).await.expect("sent");
        let mut answers = Vec::new();
        for _ in payloads {
            let frame = frames.next(leader).await.expect("read").expect("an answer");
            answers.push(binary::decode_answer(&frame).expect("an answer"));
        }
        answers
    }
    /// The status and JSON body of a refusal.
    fn refusal(answer: &Answer) -> (u16, Value) {
        let Answer::Refused { status, body } = answer else {
            panic!("acked where a refusal was expected: {answer:?}");
        };
        (*status, serde_json::from_str(body).expect("a JSON body"))
    }
    // A frame's payload: `exchange` adds the header.
    let encoded = |json: &str| {
        let mut bytes = Vec::new();
        stream_frame(json, &mut bytes);
        bytes[8..].to_vec()
    };

    let (state, app) = node_and_state(&config(Role::Follower));
    let json = assert_error(&app, "POST", "/internal/stream", None, 400, "invalid_body").await;
    assert!(
        json["message"]
            .as_str()
            .expect("a message")
            .contains("Upgrade")
    );

    let (mut leader, follower) = tokio::io::duplex(1 << 16);
    let serving = tokio::spawn(async move {
        super::stream::serve(&state, follower, Some("leader-1")).await;
    });
    let mut frames = Frames::new(1 << 20);
    let first = encoded(&batch(&[r#"{"key":"k","value":"v","version":"7.1"}"#]));
    let second = encoded(&batch(&[r#"{"key":"k","value":"w","version":"7.2"}"#]));

    // Not synced with term 7 yet, then synced: two batches sent together, answered in order.
    let answers = exchange(&mut leader, &mut frames, std::slice::from_ref(&first)).await;
    let (status, error) = refusal(&answers[0]);
    assert_eq!((status, &error["error"]), (409, &json!("not_synced")));
    follow_leader_7(&app).await;
    let answers = exchange(&mut leader, &mut frames, &[first, second]).await;
    for (counter, answer) in (1..).zip(&answers) {
        let Answer::Acked(ack) = answer else {
            panic!("batch 7.{counter} was refused: {answer:?}");
        };
        assert_eq!(ack.node_id, "follower-1");
        assert_eq!(ack.acks[0].version.to_string(), format!("7.{counter}"));
        assert!(ack.acks[0].applied);
    }
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({"k": "w"}));

    // Not a batch: a 400, then the stream ends.
    let answers = exchange(&mut leader, &mut frames, &[vec![1, 2, 3]]).await;
    let (status, error) = refusal(&answers[0]);
    assert_eq!((status, &error["error"]), (400, &json!("invalid_body")));
    assert!(
        frames
            .next(&mut leader)
            .await
            .expect("a clean end")
            .is_none()
    );
    serving.await.expect("the stream's task ended");
}

/// A leader that sends batches and reads no answers holds its follower back: the stream stops
/// reading (and applying) batches once 1 MiB of answers waits to be written, and goes on,
/// answering every batch in order, once the leader reads. On tokio's paused clock, a sleep
/// returns only once every task waits.
#[tokio::test(start_paused = true)]
async fn a_stream_whose_answers_are_not_read_stops_reading_at_its_limit() {
    use crate::replication::wire::binary::{self, Answer, Frames};
    use crate::replication::wire::{BatchAck, EntryAck};
    use crate::store::Version;
    use tokio::io::AsyncWriteExt;

    const BATCHES: u64 = 60_000;
    const PIPE: usize = 1 << 16;
    let (state, app) = node_and_state(&config(Role::Follower));
    follow_leader_7(&app).await;
    let mut frames_out = Vec::new();
    for counter in 1..=BATCHES {
        let write = format!(r#"{{"key":"k{counter}","value":"v","version":"7.{counter}"}}"#);
        stream_frame(&batch(&[&write]), &mut frames_out);
    }
    let answer_bytes = {
        let mut one = Vec::new();
        let ack = BatchAck {
            node_id: "follower-1".to_owned(),
            acks: vec![EntryAck {
                version: Version::new(7, 1),
                applied: true,
                refused: None,
            }],
        };
        binary::encode_answer(&Answer::Acked(ack), &mut one);
        one.len() as u64
    };
    let applied = || async {
        let version = call(&app, "GET", "/health", None).await.1["version"].clone();
        let version = version.as_str().expect("a version").to_owned();
        version
            .strip_prefix("7.")
            .expect("term 7")
            .parse::<u64>()
            .expect("a counter")
    };

    let (leader, follower) = tokio::io::duplex(PIPE);
    let (mut leader_reads, mut leader_writes) = tokio::io::split(leader);
    let serving = tokio::spawn(async move {
        super::stream::serve(&state, follower, Some("leader-1")).await;
    });
    let mut sending = Box::pin(async move {
        leader_writes.write_all(&frames_out).await.expect("sent");
        leader_writes
    });
    // The leader sends, and reads nothing, until every task waits.
    tokio::select! {
        _ = &mut sending => panic!("every batch went in without a read: nothing held it back"),
        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    }
    let held = applied().await;
    let limit = (1 << 20) + PIPE as u64 + answer_bytes;
    assert!(
        held < BATCHES && held * answer_bytes <= limit && held * answer_bytes > 1 << 20,
        "{held} batches of {BATCHES} applied with their answers unread ({answer_bytes} bytes each)"
    );

    // The leader reads: every batch is then applied and answered, in order.
    let reading = async {
        let mut frames = Frames::new(1 << 20);
        for counter in 1..=BATCHES {
            let frame = frames
                .next(&mut leader_reads)
                .await
                .expect("read")
                .expect("an answer");
            let Answer::Acked(ack) = binary::decode_answer(&frame).expect("an answer") else {
                panic!("batch 7.{counter} was refused");
            };
            assert_eq!(ack.acks[0].version, Version::new(7, counter));
        }
    };
    let (leader_writes, ()) = tokio::join!(sending, reading);
    assert_eq!(applied().await, BATCHES);
    // The leader closes the stream: the follower's end ends.
    drop((leader_reads, leader_writes));
    serving.await.expect("the stream's task ended");
}

/// Both ends of a replication stream over a pipe far smaller than what crosses it, with more
/// answers than the follower holds unsent (1 MiB): the leader's end reads answers while it
/// writes batches, the follower's end writes answers while it reads, so neither blocks the other
/// with a full buffer, and every batch gets its own answer. (Were the leader to write all its
/// batches before reading, the follower would stop reading at 1 MiB of answers: on the paused
/// clock, its idle limit would then close the stream and the batches would fail.)
#[tokio::test(start_paused = true)]
async fn a_stream_through_a_small_pipe_carries_more_than_either_buffer_both_ways() {
    use std::sync::Arc;

    use crate::replication::pipeline::MAX_BATCH_WRITES;
    use crate::replication::stream::Stream;
    use crate::replication::wire::{Batch, Write};
    use crate::store::Version;

    const BATCHES: u64 = 80;
    let (state, app) = node_and_state(&config(Role::Follower));
    follow_leader_7(&app).await;
    let (leader, follower) = tokio::io::duplex(1024);
    let serving = tokio::spawn(async move {
        super::stream::serve(&state, follower, Some("leader-1")).await;
    });
    let stream = Stream::start(leader);
    let per_batch = MAX_BATCH_WRITES as u64;
    let batches = (0..BATCHES).map(|b| Batch {
        term: 7,
        smallest_quorum: 1,
        quorum_epoch: 0,
        leader: 0,
        writes: (1..=per_batch)
            .map(|w| {
                let counter = b * per_batch + w;
                Arc::new(Write {
                    key: format!("k{}", counter % 100),
                    value: Some(counter.to_string()),
                    version: Version::new(7, counter),
                })
            })
            .collect(),
    });
    let answers = futures::future::join_all(batches.map(|batch| stream.send(batch))).await;
    for (b, answer) in (0..).zip(answers) {
        let ack = answer.unwrap_or_else(|err| panic!("batch {b} failed: {err:?}"));
        assert_eq!(ack.acks.len(), MAX_BATCH_WRITES);
        assert_eq!(ack.acks[0].version, Version::new(7, b * per_batch + 1));
    }
    let total = BATCHES * per_batch;
    let health = call(&app, "GET", "/health", None).await.1;
    assert_eq!(health["version"], format!("7.{total}"));
    drop(stream);
    serving.await.expect("the stream's task ended");
}

/// A node that is stopping applies no batch that reaches its stream, even one already there: the
/// stream closes without applying or answering it.
#[tokio::test]
async fn a_stopping_node_applies_no_batch_from_its_stream() {
    use crate::replication::wire::binary::Frames;
    use tokio::io::AsyncWriteExt;

    let (state, app) = node_and_state(&config(Role::Follower));
    follow_leader_7(&app).await;
    let (mut leader, follower) = tokio::io::duplex(1 << 16);
    let mut frame = Vec::new();
    stream_frame(
        &batch(&[r#"{"key":"k","value":"v","version":"7.1"}"#]),
        &mut frame,
    );
    // The batch is there before the stream is served, and the node is stopping.
    leader.write_all(&frame).await.expect("sent");
    state.stop();
    let serving = {
        let state = state.clone();
        tokio::spawn(async move { super::stream::serve(&state, follower, Some("leader-1")).await })
    };
    let mut frames = Frames::new(1 << 20);
    let answer = frames.next(&mut leader).await.expect("a clean end");
    assert!(answer.is_none(), "the stopping node answered a batch");
    serving.await.expect("the stream's task ended");
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({}));
}

/// A follower names its `LEADER_URL` in a 421 until a leader's state transfer gives that
/// leader's `PUBLIC_URL`; then it names that.
#[tokio::test]
async fn a_follower_names_the_public_url_its_leader_sent() {
    let app = app(Role::Follower);
    let put = || call(&app, "PUT", "/kv/a", Some(r#"{"value":"v"}"#));
    assert_eq!(put().await.1["leader"], "http://leader:8000/");
    let follower = incarnation(&app).await;
    let body = format!(
        r#"{{"term":7,"follower":{follower},"version":"7.0","leader_url":"http://localhost:8003/",
            "smallest_quorum":2,"entries":[]}}"#
    );
    let (status, ack) = call(&app, "POST", "/internal/transfer", Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let (status, error) = put().await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(error["leader"], "http://localhost:8003/");
    // The transfer also said the term's smallest quorum, which a candidate's fence reads.
    let fence = r#"{"term":8,"leader_url":"http://localhost:8001/"}"#;
    let (status, ack) = call(&app, "POST", "/internal/fence", Some(fence)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["smallest_quorum"], 2, "{ack}");
}

#[tokio::test]
async fn state_transfer_replaces_for_a_new_leader_and_merges_for_the_same() {
    let app = app(Role::Follower);
    let (_, status) = call(&app, "GET", "/internal/status", None).await;
    assert_eq!(status["following"], Value::Null);

    let entries = r#"{"key":"a","value":"1","version":"7.1"},{"key":"b","value":"2","version":"7.2"},
        {"key":"gone","value":null,"version":"7.3"}"#;
    let first = transfer(&app, 7, 3, entries).await;
    let (_, ack) = call(&app, "POST", "/internal/transfer", Some(&first)).await;
    assert_eq!(
        (ack["replaced"].clone(), ack["version"].clone()),
        (json!(true), json!("7.3"))
    );
    assert_eq!(
        call(&app, "GET", "/dump", None).await.1,
        json!({"a": "1", "b": "2"})
    );

    // The same leader: merged, so a newer live write survives an older transfer.
    let live = &batch(&[r#"{"key":"a","value":"live","version":"7.5"}"#]);
    assert_eq!(
        call(&app, "POST", "/internal/replicate", Some(live))
            .await
            .0,
        StatusCode::OK
    );
    let older = transfer(&app, 7, 4, r#"{"key":"a","value":"x","version":"7.4"}"#).await;
    let (_, ack) = call(&app, "POST", "/internal/transfer", Some(&older)).await;
    assert_eq!(ack["replaced"], false);
    assert_eq!(
        call(&app, "GET", "/dump", None).await.1,
        json!({"a": "live", "b": "2"})
    );

    // A new leader: replaced, which drops what that leader does not hold.
    let new_leader = transfer(&app, 9, 6, r#"{"key":"a","value":"L2","version":"7.6"}"#).await;
    let (_, ack) = call(&app, "POST", "/internal/transfer", Some(&new_leader)).await;
    assert_eq!(ack["replaced"], true);
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({"a": "L2"}));
    let (_, status) = call(&app, "GET", "/internal/status", None).await;
    assert_eq!(
        (status["term"].clone(), status["following"].clone()),
        (json!(9), json!(9))
    );
    assert_eq!(status["version"], "7.6");

    // The old term is over: its messages are refused, naming the new term.
    let late = transfer(&app, 7, 7, r#"{"key":"a","value":"old","version":"7.7"}"#).await;
    let error = assert_error(
        &app,
        "POST",
        "/internal/transfer",
        Some(&late),
        409,
        "stale_term",
    )
    .await;
    assert_eq!(error["term"], 9);
    let old = &batch(&[r#"{"key":"a","value":"old","version":"7.8"}"#]);
    assert_error(
        &app,
        "POST",
        "/internal/replicate",
        Some(old),
        409,
        "stale_term",
    )
    .await;
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({"a": "L2"}));
}

#[tokio::test]
async fn a_transfer_meant_for_an_earlier_run_is_refused() {
    let app = app(Role::Follower);
    let other_run = incarnation(&app).await.wrapping_add(1);
    let entries = r#"[{"key":"k","value":"v","version":"7.1"}]"#;
    let body =
        format!(r#"{{"term":7,"follower":{other_run},"version":"7.1","entries":{entries}}}"#);
    assert_error(
        &app,
        "POST",
        "/internal/transfer",
        Some(&body),
        409,
        "stale_transfer",
    )
    .await;
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({}));
    assert_eq!(
        call(&app, "GET", "/internal/status", None).await.1["following"],
        Value::Null
    );
}

#[tokio::test]
async fn replication_input_is_validated() {
    let app = app(Role::Follower);
    follow_leader_7(&app).await;
    // What cannot be read as a batch is refused whole; a readable batch with bad writes is
    // answered write by write (see above).
    let cases = [
        ("nope", 400, "invalid_json"),
        (
            &batch(&[r#"{"key":"k","version":"7.1"}"#]),
            400,
            "invalid_body",
        ),
        (
            r#"{"writes":[{"key":"k","value":"v","version":"7.1"}]}"#,
            400,
            "invalid_body",
        ),
        (
            &batch(&[r#"{"key":"k","value":"v","version":-1}"#]),
            400,
            "invalid_body",
        ),
        (
            r#"{"term":7,"smallest_quorum":1,"key":"k","value":"v","version":"7.1"}"#,
            400,
            "invalid_body",
        ),
        (
            r#"{"term":7,"smallest_quorum":1,"writes":{}}"#,
            400,
            "invalid_body",
        ),
        (
            r#"{"term":7,"writes":[{"key":"k","value":"v","version":"7.1"}]}"#,
            400,
            "invalid_body",
        ),
        (
            r#"{"term":9007199254740992,"smallest_quorum":1,"writes":[]}"#,
            400,
            "invalid_body",
        ),
        (
            r#"{"term":7,"smallest_quorum":1.5,"writes":[]}"#,
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(
            &app,
            "POST",
            "/internal/replicate",
            Some(body),
            status,
            code,
        )
        .await;
    }
    let me = incarnation(&app).await;
    let bad_transfers = [
        ("[]".to_owned(), 400, "invalid_body"),
        (
            format!(r#"{{"term":null,"follower":{me},"version":"7.1","entries":[]}}"#),
            400,
            "invalid_body",
        ),
        (
            transfer(&app, 7, 1, r#"{"key":"","value":"v","version":"7.1"}"#).await,
            400,
            "invalid_key",
        ),
        (
            transfer(&app, 7, 1, r#"{"key":"k","value":"v","version":"7.0"}"#).await,
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in bad_transfers {
        assert_error(
            &app,
            "POST",
            "/internal/transfer",
            Some(&body),
            status,
            code,
        )
        .await;
    }
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({}));

    // A value over this follower's own MAX_VALUE_BYTES is still taken: the leader checked it
    // against its own limit, and refusing it would leave this follower behind for good.
    let big = &batch(&[r#"{"key":"k","value":"01234567890123456","version":"7.1"}"#]);
    assert_eq!(
        call(&app, "POST", "/internal/replicate", Some(big)).await.0,
        StatusCode::OK
    );

    // A leader refuses a batch of its own term from another node (`term_taken`, which deposes
    // the sender): only one node leads a term.
    let leader = node(&config(Role::Leader));
    let body = &batch_of(1, &[r#"{"key":"k","value":"v","version":"7.1"}"#]);
    assert_error(
        &leader,
        "POST",
        "/internal/replicate",
        Some(body),
        409,
        "term_taken",
    )
    .await;
    let (status, json) = call(&leader, "GET", "/internal/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (json["role"].clone(), json["term"].clone()),
        (json!("leader"), json!(1))
    );
    assert_error(&leader, "GET", "/kv/k", None, 404, "not_found").await;
}

/// A fence adopts the candidate's term and answers the replica as it was, in one step: from then
/// on the node refuses the old leader's batches. A term not above the node's is refused.
#[tokio::test]
async fn a_fence_adopts_the_new_term_and_answers_the_state() {
    let app = app(Role::Follower);
    // Before any state transfer, it holds no leader's state: a candidate will not count it.
    let fence = r#"{"term":6,"leader_url":"http://localhost:8002/"}"#;
    let (status, ack) = call(&app, "POST", "/internal/fence", Some(fence)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["state"]["filled"], false, "{ack}");
    follow_leader_7(&app).await;
    let write = &batch(&[r#"{"key":"k","value":"acked","version":"7.3"}"#]);
    assert_eq!(
        call(&app, "POST", "/internal/replicate", Some(write))
            .await
            .0,
        StatusCode::OK
    );

    let fence = r#"{"term":8,"leader_url":"http://localhost:8003/"}"#;
    let (status, ack) = call(&app, "POST", "/internal/fence", Some(fence)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["was_leader"], false);
    assert_eq!(ack["smallest_quorum"], 1);
    assert_eq!(ack["state"]["following"], 7);
    assert_eq!(ack["state"]["filled"], true, "its transfer filled it");
    assert_eq!(
        ack["state"]["entries"],
        json!([{"key": "k", "value": "acked", "version": "7.3"}])
    );

    let late = &batch(&[r#"{"key":"k","value":"late","version":"7.4"}"#]);
    assert_error(
        &app,
        "POST",
        "/internal/replicate",
        Some(late),
        409,
        "stale_term",
    )
    .await;
    assert_error(
        &app,
        "POST",
        "/internal/fence",
        Some(fence),
        409,
        "stale_term",
    )
    .await;
    // A candidate is named as the leader once it leads (its heartbeat says so), not by its
    // fence: it may be refused.
    let put = || call(&app, "PUT", "/kv/k", Some(r#"{"value":"v"}"#));
    assert_ne!(put().await.1["leader"], "http://localhost:8003/");
    let heartbeat = json!({"term": 8, "leader_url": "http://localhost:8003/",
        "smallest_quorum": 1, "settings": config(Role::Leader).settings});
    let heartbeat = heartbeat.to_string();
    let (status, _) = call(&app, "POST", "/internal/heartbeat", Some(&heartbeat)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(put().await.1["leader"], "http://localhost:8003/");
    assert_eq!(call(&app, "GET", "/kv/k", None).await.1["value"], "acked");
}

/// A candidate refused after its fence leaves every node it fenced at its term, still holding
/// the ending term's state: what they heard of that term's smallest quorum stays theirs to
/// report, or the next promotion would count with none (and need all N followers), and
/// a write acknowledged by a quorum only the fenced nodes heard of could be lost.
#[tokio::test]
async fn a_fence_keeps_the_quorum_heard_of_the_term_whose_state_it_holds() {
    let app = app(Role::Follower);
    follow_leader_7(&app).await;
    let lowered = r#"{"term":7,"smallest_quorum":1,"writes":[]}"#;
    let (status, ack) = call(&app, "POST", "/internal/replicate", Some(lowered)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let refused_candidate = r#"{"term":8}"#;
    let (_, ack) = call(&app, "POST", "/internal/fence", Some(refused_candidate)).await;
    assert_eq!(ack["smallest_quorum"], 1, "{ack}");
    let next_candidate = r#"{"term":9}"#;
    let (status, ack) = call(&app, "POST", "/internal/fence", Some(next_candidate)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["state"]["following"], 7, "{ack}");
    assert_eq!(ack["smallest_quorum"], 1, "{ack}");
}

/// A leader that hears of a newer term steps down at once and names the new leader; its
/// metrics stop showing a leader's gauges.
#[tokio::test]
async fn a_leader_steps_down_on_a_newer_term() {
    let leader = app(Role::Leader);
    let put = || call(&leader, "PUT", "/kv/k", Some(r#"{"value":"v"}"#));
    assert_eq!(put().await.0, StatusCode::OK);
    let up = format!(r#"semisync_replica_up{{follower="{DEAD_FOLLOWER}/"}}"#);
    let timeout = "semisync_replicate_timeout_seconds";
    let led = scrape(&leader).await;
    assert_eq!(sample(&led, "semisync_leader"), Some(1.0), "{led}");
    assert_eq!(sample(&led, &up), Some(0.0), "{led}");
    assert_eq!(sample(&led, timeout), Some(0.1), "{led}");
    let heartbeat = json!({
        "term": 5,
        "leader_url": "http://localhost:8002/",
        "smallest_quorum": 2,
        "settings": config(Role::Leader).settings,
    });
    let (status, json) = call(
        &leader,
        "POST",
        "/internal/heartbeat",
        Some(&heartbeat.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        (json["role"].clone(), json["term"].clone()),
        (json!("follower"), json!(5))
    );
    let error = assert_error(
        &leader,
        "PUT",
        "/kv/k",
        Some(r#"{"value":"v"}"#),
        421,
        "not_leader",
    )
    .await;
    assert_eq!(error["leader"], "http://localhost:8002/");
    let (_, health) = call(&leader, "GET", "/health", None).await;
    assert_eq!(
        (health["role"].clone(), health["term"].clone()),
        (json!("follower"), json!(5))
    );
    let followed = scrape(&leader).await;
    assert_eq!(
        sample(&followed, "semisync_leader"),
        Some(0.0),
        "{followed}"
    );
    assert_eq!(sample(&followed, "semisync_term"), Some(5.0), "{followed}");
    assert_eq!(sample(&followed, &up), None, "{followed}");
    assert_eq!(sample(&followed, timeout), Some(0.0), "{followed}");
}

#[tokio::test]
async fn cluster_status_is_the_leaders() {
    let (status, json) = call(&app(Role::Leader), "GET", "/cluster", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["node_id"], "leader-1");
    assert_eq!(json["version"], "1.0", "term 1 began, nothing written yet");
    let followers = json["followers"].as_array().expect("followers");
    assert_eq!(followers.len(), 1);
    assert_eq!(followers[0]["url"], "http://127.0.0.1:1/");
    assert_eq!(followers[0]["pending"], 0);
    assert_error(
        &app(Role::Follower),
        "GET",
        "/cluster",
        None,
        421,
        "not_leader",
    )
    .await;
}

#[tokio::test]
async fn internal_routes_want_the_cluster_token_when_one_is_set() {
    let app = node(&Config {
        cluster_token: Some("s3cret".into()),
        ..config(Role::Follower)
    });
    let status = |authorization| call_with(&app, "GET", "/internal/status", None, authorization);
    let (code, body) = status(None).await;
    assert_eq!(
        (code.as_u16(), body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    for wrong in [
        "Bearer s3creT",
        "Bearer s3cret2",
        "Basic s3cret",
        "s3cret",
        "Bearer ",
    ] {
        assert_eq!(
            status(Some(wrong)).await.0,
            StatusCode::UNAUTHORIZED,
            "{wrong}"
        );
    }
    assert_eq!(status(Some("Bearer s3cret")).await.0, StatusCode::OK);

    // Refused before anything is read or applied.
    let write = batch(&[r#"{"key":"k","value":"v","version":"7.1"}"#]);
    let (code, _) = call_with(&app, "POST", "/internal/replicate", Some(&write), None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // The client API needs no token.
    assert_eq!(call(&app, "GET", "/health", None).await.0, StatusCode::OK);
}

/// The library checks the configuration it is given: a leader without followers is refused
/// with the setting named, not a panic.
#[tokio::test]
async fn the_state_refuses_a_configuration_that_cannot_work() {
    let err = AppState::new(&Config {
        followers: vec![],
        ..config(Role::Leader)
    })
    .expect_err("a leader needs followers");
    assert!(
        matches!(&err, StartError::Config(message) if message.contains("PEERS")),
        "{err}"
    );
}

/// The token is read once, at start-up: a token file that disappears later does not open the
/// internal routes.
#[tokio::test]
async fn the_token_read_at_start_up_stays_when_its_file_goes() {
    let path = std::env::temp_dir().join(format!("semisync-token-{}", std::process::id()));
    std::fs::write(&path, "s3cret\n").expect("write the token file");
    let app = node(&Config {
        cluster_token_file: Some(path.clone()),
        ..config(Role::Follower)
    });
    std::fs::remove_file(&path).expect("remove the token file");
    let status = |authorization| call_with(&app, "GET", "/internal/status", None, authorization);
    assert_eq!(status(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(status(Some("Bearer s3cret")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn internal_routes_are_not_on_the_public_router() {
    let app = app(Role::Follower);
    let (status, _) = get_raw(&app.public, "/internal/status").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn token_comparison() {
    assert!(super::constant_time_eq(b"abc", b"abc"));
    assert!(!super::constant_time_eq(b"abc", b"abd"));
    assert!(!super::constant_time_eq(b"abc", b"abcd"));
    assert!(!super::constant_time_eq(b"", b"a"));
}

#[tokio::test]
async fn a_request_over_the_time_limit_gets_408() {
    // A client that never finishes sending its body; the request may take 50 ms.
    let app = node(&Config {
        request_timeout_ms: Some(50),
        settings: Settings {
            replicate_timeout_ms: 10,
            ..config(Role::Leader).settings
        },
        ..config(Role::Leader)
    });
    let body = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
    let request = Request::put("/kv/k")
        .body(Body::from_stream(body))
        .expect("request");
    let (status, _, bytes) = exchange(&app.public, request).await;
    let json: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(
        (status.as_u16(), json["error"].as_str()),
        (408, Some("request_timeout")),
        "{json}"
    );
    assert_eq!(json["message"], "the request took longer than 50 ms");
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_get_503() {
    let app = node(&Config {
        max_concurrent_requests: 1,
        ..config(Role::Leader)
    });
    let slow = tokio::spawn({
        let app = app.clone();
        async move { call(&app, "PUT", "/kv/k?quorum=1", Some(r#"{"value":"v"}"#)).await }
    });
    // While the slow write holds the only permit (it waits 100 ms for its quorum), a second
    // request is shed. Poll until it is, up to a deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let shed = loop {
        let (status, json) = call(&app, "GET", "/health", None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shed: {status} {json}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    assert_eq!(shed["error"], "overloaded");
    assert_eq!(
        slow.await.expect("join").0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the write timed out"
    );
    assert_eq!(
        call(&app, "GET", "/health", None).await.0,
        StatusCode::OK,
        "the permit is back"
    );
}

#[tokio::test]
async fn each_node_describes_the_api_it_serves() {
    let (status, leader) = call(&app(Role::Leader), "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(leader["openapi"], "3.1.0");
    let kv = &leader["paths"]["/kv/{key}"];
    assert!(
        kv["get"].is_object() && kv["put"].is_object() && kv["delete"].is_object(),
        "{kv}"
    );
    assert!(leader["paths"]["/cluster"]["get"].is_object());
    let quorum = kv["put"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "quorum"))
        .expect("quorum parameter");
    assert_eq!(
        quorum["schema"]["maximum"], 1.0,
        "one follower in this test: {quorum}"
    );
    assert!(
        kv["put"]["responses"]["503"].is_object(),
        "the timeout is documented"
    );

    let (_, follower) = call(&app(Role::Follower), "GET", "/openapi.json", None).await;
    let kv = &follower["paths"]["/kv/{key}"];
    for write in ["put", "delete"] {
        let responses = kv[write]["responses"].as_object().expect("responses");
        assert_eq!(responses.keys().collect::<Vec<_>>(), ["421"], "{kv}");
    }
    assert!(follower["paths"]["/cluster"].is_null());
}

#[tokio::test]
async fn the_internal_listener_describes_the_batch_route_without_asking_for_the_token() {
    let app = node(&Config {
        cluster_token: Some("s3cret".into()),
        ..config(Role::Follower)
    });
    let request = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .expect("valid request");
    let (status, _, bytes) = exchange(&app.internal, request).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&bytes).expect("JSON");
    let replicate = &doc["paths"]["/internal/replicate"]["post"];
    let responses = replicate["responses"].as_object().expect("responses");
    assert_eq!(
        responses.keys().collect::<Vec<_>>(),
        ["200", "400", "401", "409", "413"]
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Version"]["pattern"], r"^[0-9]{1,16}\.[0-9]{1,16}$");
    assert!(
        schemas["Batch"]["properties"]["writes"].is_object(),
        "{schemas}"
    );
    assert!(doc["paths"]["/internal/status"]["get"].is_object());
    // The internal routes themselves still want the token.
    let (code, _) = call(&app, "GET", "/internal/status", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}

/// The value of the sample `name` (with its labels, as written) in a Prometheus exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The node's `/metrics` exposition.
async fn scrape(app: &Node) -> String {
    let (status, bytes) = get_raw(&app.public, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(bytes).expect("UTF-8")
}

#[tokio::test]
async fn metrics_count_writes_by_outcome() {
    let app = app(Role::Leader);
    let before = scrape(&app).await;
    assert_eq!(sample(&before, "semisync_version"), Some(0.0), "{before}");
    assert_eq!(sample(&before, "semisync_write_quorum"), Some(0.0));

    assert_eq!(
        call(&app, "PUT", "/kv/a?quorum=0", Some(r#"{"value":"1"}"#))
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = call(&app, "PUT", "/kv/b?quorum=1", Some(r#"{"value":"2"}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let after = scrape(&app).await;
    let reached = r#"semisync_writes_total{outcome="quorum_reached",protocol="http"}"#;
    let timed_out = r#"semisync_writes_total{outcome="quorum_timeout",protocol="http"}"#;
    assert_eq!(sample(&after, reached), Some(1.0), "{after}");
    assert_eq!(sample(&after, timed_out), Some(1.0), "{after}");
    assert_eq!(
        sample(&after, "semisync_write_duration_seconds_count"),
        Some(2.0),
        "{after}"
    );
    assert_eq!(sample(&after, "semisync_version"), Some(2.0));
    assert_eq!(sample(&after, "semisync_keys"), Some(2.0));
    let follower = r#"{follower="http://127.0.0.1:1/"}"#;
    assert_eq!(
        sample(&after, &format!("semisync_replica_up{follower}")),
        Some(0.0),
        "{after}"
    );
    let errors =
        r#"semisync_replication_errors_total{follower="http://127.0.0.1:1/",reason="connect"}"#;
    assert!(
        sample(&after, errors).is_some_and(|n| n >= 1.0),
        "the dead follower's errors: {after}"
    );
}

#[tokio::test]
async fn live_settings_change_the_next_write() {
    let app = app(Role::Leader);
    let (status, json) = call(&app, "GET", "/admin/settings", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json,
        json!({"write_quorum": 0, "min_delay_ms": 0, "max_delay_ms": 0,
            "replicate_timeout_ms": 100, "wait_point": "after_commit", "auto_failover": false})
    );

    // Only the fields named change; the next write waits for the new quorum and timeout.
    let change = r#"{"write_quorum": 1, "replicate_timeout_ms": 50}"#;
    let (status, json) = call(&app, "PATCH", "/admin/settings", Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["write_quorum"], 1);
    assert_eq!(json["replicate_timeout_ms"], 50);
    assert_eq!(json["max_delay_ms"], 0);
    let json = assert_error(
        &app,
        "PUT",
        "/kv/k",
        Some(r#"{"value":"v"}"#),
        503,
        "quorum_timeout",
    )
    .await;
    assert_eq!(
        (&json["quorum"], &json["timeout_ms"]),
        (&json!(1), &json!(50))
    );
    let (_, cluster) = call(&app, "GET", "/cluster", None).await;
    assert_eq!(cluster["write_quorum"], 1);
    assert_eq!(cluster["replicate_timeout_ms"], 50);

    // Bad changes are refused and change nothing.
    for (body, code) in [
        (r#"{"write_quorum": 2}"#, "invalid_settings"),
        (r#"{"min_delay_ms": 10}"#, "invalid_settings"),
        (r#"{"max_delay_ms": 60001}"#, "invalid_settings"),
        (r#"{"replicate_timeout_ms": 0}"#, "invalid_settings"),
        (r#"{"replicate_timeout_ms": 999999999}"#, "invalid_settings"),
        (r#"{"write_quorum": -1}"#, "invalid_body"),
        (r#"{"wait_point": "sometimes"}"#, "invalid_body"),
        (r#"{"auto_failover": "yes"}"#, "invalid_body"),
        (r#"{"quorum": 1}"#, "invalid_body"),
        (r#"{"write_quorum": "#, "invalid_json"),
    ] {
        assert_error(&app, "PATCH", "/admin/settings", Some(body), 400, code).await;
    }
    assert_eq!(
        call(&app, "GET", "/admin/settings", None).await.1["write_quorum"],
        1
    );

    // Automatic failover is a live setting too: the heartbeats carry it to the followers.
    let change = r#"{"auto_failover": true}"#;
    let (status, json) = call(&app, "PATCH", "/admin/settings", Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        (&json["auto_failover"], &json["write_quorum"]),
        (&json!(true), &json!(1))
    );
}

#[tokio::test]
async fn after_sync_hides_a_write_from_leader_reads_until_its_quorum_acknowledged_it() {
    // One follower that never answers: no write reaches a quorum of 1.
    let app = app(Role::Leader);
    let write = |key: &'static str| {
        let app = &app;
        async move {
            let uri = format!("/kv/{key}?quorum=1");
            let body = Some(r#"{"value":"v"}"#);
            assert_error(app, "PUT", &uri, body, 503, "quorum_timeout").await
        }
    };
    let json = write("committed").await;
    assert_eq!(json["wait_point"], "after_commit");
    assert_eq!(json["visible_on_leader"], true);
    let (status, json) = call(&app, "GET", "/kv/committed", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "after_commit shows it at once: {json}"
    );

    let change = r#"{"wait_point": "after_sync"}"#;
    let (status, json) = call(&app, "PATCH", "/admin/settings", Some(change)).await;
    assert_eq!(
        (status, &json["wait_point"]),
        (StatusCode::OK, &json!("after_sync"))
    );
    let json = write("synced").await;
    assert_eq!(json["wait_point"], "after_sync");
    assert_eq!(json["visible_on_leader"], false);
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("hidden from the leader's readers"),
        "{message}"
    );
    assert_error(&app, "GET", "/kv/synced", None, 404, "not_found").await;
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, "semisync_after_sync"), Some(1.0));
    assert_eq!(sample(&metrics, "semisync_hidden_writes"), Some(1.0));
    let (_, dump) = call(&app, "GET", "/dump", None).await;
    assert_eq!(dump, json!({"committed": "v"}), "the dump hides it too");
    // A version the leader wrote but does not show yet is waited for, never answered stale.
    let version = json["version"].as_str().unwrap_or_default();
    let uri = format!("/kv/synced?min_version={version}&wait_ms=10");
    let json = assert_error(&app, "GET", &uri, None, 503, "not_yet_replicated").await;
    assert_eq!(json["version"], Value::Null);
    // Delivered writes of a key already shown: the older value shows until the quorum.
    write("committed").await;
    let (_, json) = call(&app, "GET", "/kv/committed", None).await;
    assert_eq!(json["version"], "1.1", "{json}");

    // Back to after_commit: every hidden write shows.
    let change = r#"{"wait_point": "after_commit"}"#;
    let (status, _) = call(&app, "PATCH", "/admin/settings", Some(change)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "GET", "/kv/synced", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, json) = call(&app, "GET", "/kv/committed", None).await;
    assert_eq!(json["version"], "1.3", "{json}");
}

/// A leader under `after_sync` that steps down keeps hiding what it hid: its readers must not
/// see a write no quorum acknowledged, which the new leader's state transfer will erase.
#[tokio::test]
async fn a_deposed_leader_keeps_hiding_its_unacknowledged_writes() {
    let app = app(Role::Leader);
    let change = r#"{"wait_point": "after_sync"}"#;
    let (status, _) = call(&app, "PATCH", "/admin/settings", Some(change)).await;
    assert_eq!(status, StatusCode::OK);
    let body = Some(r#"{"value":"v"}"#);
    assert_error(&app, "PUT", "/kv/k?quorum=1", body, 503, "quorum_timeout").await;
    let fence = r#"{"term":99,"leader_url":"http://localhost:8001/"}"#;
    let (status, ack) = call(&app, "POST", "/internal/fence", Some(fence)).await;
    assert_eq!(
        (status, &ack["was_leader"]),
        (StatusCode::OK, &json!(true)),
        "{ack}"
    );
    assert_error(&app, "GET", "/kv/k", None, 404, "not_found").await;
    assert_eq!(call(&app, "GET", "/dump", None).await.1, json!({}));
    let metrics = scrape(&app).await;
    assert_eq!(sample(&metrics, "semisync_leader"), Some(0.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "semisync_hidden_writes"),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_follower_can_be_cut_off_and_restored() {
    // Two followers that have never answered: both are named by their host, 127.0.0.1, until
    // they do, so that name is ambiguous and host:port tells them apart.
    let mut leader = config(Role::Leader);
    leader
        .followers
        .push(parse_base_url("http://127.0.0.1:2").expect("valid URL"));
    let app = node(&leader);
    let (status, json) = call(&app, "POST", "/admin/followers/127.0.0.1:1/cut", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["cut_off"], true);
    let (_, cluster) = call(&app, "GET", "/cluster", None).await;
    assert_eq!(cluster["followers"][0]["cut_off"], true);
    assert_eq!(cluster["followers"][1]["cut_off"], false);
    let (status, json) = call(&app, "POST", "/admin/followers/127.0.0.1:1/restore", None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["cut_off"], false);

    let json = assert_error(
        &app,
        "POST",
        "/admin/followers/127.0.0.1/cut",
        None,
        409,
        "ambiguous_follower",
    )
    .await;
    assert_eq!(json["followers"].as_array().map(Vec::len), Some(2));
    let json = assert_error(
        &app,
        "POST",
        "/admin/followers/nobody/cut",
        None,
        404,
        "unknown_follower",
    )
    .await;
    assert_eq!(json["followers"], json!(["127.0.0.1", "127.0.0.1"]));
    assert_error(
        &app,
        "POST",
        "/admin/followers/%FF/cut",
        None,
        400,
        "invalid_path",
    )
    .await;
    assert_error(
        &app,
        "GET",
        "/admin/followers/127.0.0.1:1/cut",
        None,
        405,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn admin_requests_from_another_site_are_refused() {
    let app = app(Role::Leader);
    let request = |origin: &str| {
        Request::post("/admin/followers/127.0.0.1:1/cut")
            .header("host", "localhost:8000")
            .header("origin", origin)
            .body(Body::empty())
            .expect("request")
    };
    for origin in ["http://evil.example", "null", "http://localhost:8001"] {
        let (status, _, _) = exchange(&app.public, request(origin)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
    }
    // The dashboard's own requests carry this node as their origin.
    let (status, _, _) = exchange(&app.public, request("http://localhost:8000")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, cluster) = call(&app, "GET", "/cluster", None).await;
    assert_eq!(cluster["followers"][0]["cut_off"], true);
}

#[tokio::test]
async fn the_dashboard_and_admin_routes_are_the_leaders() {
    let leader = app(Role::Leader);
    for uri in ["/", "/ui"] {
        let request = Request::get(uri).body(Body::empty()).expect("request");
        let (status, headers, page) = exchange(&leader.public, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains("new EventSource('events')"));
        // Self-contained: nothing is loaded from another origin (the one URL is the SVG
        // namespace, which is a name, not a download).
        let page = page.replace("http://www.w3.org/2000/svg", "");
        for fetch in ["http:", "https:", "src=", "href=", "@import"] {
            assert!(!page.contains(fetch), "the page loads something: {fetch}");
        }
    }
    let response = leader
        .public
        .clone()
        .oneshot(
            Request::get("/events")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The stream opens with a snapshot of the cluster.
    let mut body = response.into_body();
    let frame = body
        .frame()
        .await
        .expect("a first message")
        .expect("readable");
    let text = String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned();
    let data = text.strip_prefix("data: ").expect("an SSE data line");
    let snapshot: Value = serde_json::from_str(data.trim()).expect("JSON");
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["cluster"]["followers"].as_array().map(Vec::len),
        Some(1)
    );

    let follower = app(Role::Follower);
    for (method, uri) in [
        ("GET", "/"),
        ("GET", "/events"),
        ("GET", "/admin/settings"),
        ("PATCH", "/admin/settings"),
        ("POST", "/admin/followers/f/cut"),
    ] {
        assert_error(&follower, method, uri, Some("{}"), 421, "not_leader").await;
    }
}

/// `min_version` on a follower: at once when the key is there, a wait that ends when the write
/// arrives, and `503 not_yet_replicated` with the version held when it does not come in time.
#[tokio::test]
async fn a_read_with_min_version_waits_for_that_version() {
    let app = app(Role::Follower);
    follow_leader_7(&app).await;
    let write = |version: u64| {
        batch(&[&format!(
            r#"{{"key":"k","value":"v{version}","version":"7.{version}"}}"#
        )])
    };
    let (status, _) = call(&app, "POST", "/internal/replicate", Some(&write(3))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = call(&app, "GET", "/kv/k?min_version=7.3&wait_ms=0", None).await;
    assert_eq!(
        (status, json["version"].clone()),
        (StatusCode::OK, json!("7.3"))
    );
    // An older term's version is older, whatever its counter.
    let (status, _) = call(&app, "GET", "/kv/k?min_version=6.900&wait_ms=0", None).await;
    assert_eq!(status, StatusCode::OK);

    let uri = "/kv/k?min_version=7.5&wait_ms=20";
    let error = assert_error(&app, "GET", uri, None, 503, "not_yet_replicated").await;
    assert_eq!(
        (error["version"].clone(), error["min_version"].clone()),
        (json!("7.3"), json!("7.5"))
    );
    // A newer term's version is newer, whatever its counter: a node holding only the older
    // term's write waits.
    let uri = "/kv/k?min_version=8.1&wait_ms=0";
    let error = assert_error(&app, "GET", uri, None, 503, "not_yet_replicated").await;
    assert_eq!(error["version"], json!("7.3"));
    let uri = "/kv/other?min_version=1.1&wait_ms=0";
    let error = assert_error(&app, "GET", uri, None, 503, "not_yet_replicated").await;
    assert_eq!(error["version"], Value::Null);

    // The write arrives while the read waits.
    let later = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        call(&app, "POST", "/internal/replicate", Some(&write(5)))
            .await
            .0
    };
    let waiting = call(&app, "GET", "/kv/k?min_version=7.5&wait_ms=5000", None);
    let ((status, json), applied) = tokio::join!(waiting, later);
    assert_eq!(applied, StatusCode::OK);
    assert_eq!(
        (status, json["value"].clone()),
        (StatusCode::OK, json!("v5"))
    );

    // A delete at that version or later is an answer too: the key is gone.
    let delete = batch(&[r#"{"key":"k","value":null,"version":"7.6"}"#]);
    call(&app, "POST", "/internal/replicate", Some(&delete)).await;
    assert_error(&app, "GET", "/kv/k?min_version=7.6", None, 404, "not_found").await;

    // What cannot be read is a 400; the wait must end before the request's own timeout.
    for uri in [
        "/kv/k?min_version=-1.1",
        "/kv/k?min_version=5",
        "/kv/k?min_version=1.5.2",
        "/kv/k?wait_ms=soon",
        "/kv/k?min_version=1.1&wait_ms=10100",
        "/kv/k?min_version=1.1&after=2",
        "/kv/k?min_version=1.9007199254740992",
    ] {
        assert_error(&app, "GET", uri, None, 400, "invalid_query").await;
    }
    let (_, error) = call(&app, "GET", "/kv/k?min_version=5", None).await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("term.counter"), "{message}");
}

/// `/admin/partition` isolates a peer named by node id or `host:port`, refuses a name that fits
/// no peer, and the internal listener then drops that peer's requests with `503 partitioned`,
/// naming this node in every answer; `DELETE` heals it.
#[tokio::test]
async fn a_partition_drops_the_named_peers_traffic_both_ways() {
    let state = AppState::new(&config(Role::Leader)).expect("a valid configuration");
    state.partition_table().learn(0, "follower-9");
    let app = Node {
        public: client_router(state.clone()),
        internal: internal_router(state),
    };
    let (status, view) = call(&app, "GET", "/admin/partition", None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["isolated"], json!([]));
    let unknown = r#"{"isolate":["follower-9","nobody"]}"#;
    let error = assert_error(
        &app,
        "POST",
        "/admin/partition",
        Some(unknown),
        404,
        "unknown_peer",
    )
    .await;
    assert_eq!(error["peers"], json!(["follower-9"]), "{error}");
    let not_a_list = r#"{"isolate":"follower-9"}"#;
    assert_error(
        &app,
        "POST",
        "/admin/partition",
        Some(not_a_list),
        400,
        "invalid_body",
    )
    .await;

    let status_from = |sender: &'static str| {
        let request = Request::get("/internal/status")
            .header(crate::partition::NODE_HEADER, sender)
            .body(Body::empty())
            .expect("request");
        let router = app.internal.clone();
        async move { exchange(&router, request).await }
    };
    let by_address = r#"{"isolate":["127.0.0.1:1"]}"#;
    let (status, view) = call(&app, "POST", "/admin/partition", Some(by_address)).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["isolated"], json!(["follower-9"]), "{view}");
    assert_eq!(view["peers"][0]["isolated"], true, "{view}");
    let (status, headers, body) = status_from("follower-9").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    let error: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(error["error"], "partitioned", "{error}");
    assert_eq!(headers[crate::partition::NODE_HEADER], "leader-1");
    assert_eq!(
        status_from("follower-8").await.0,
        StatusCode::OK,
        "not isolated"
    );

    let (status, view) = call(&app, "DELETE", "/admin/partition", None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["isolated"], json!([]));
    assert_eq!(status_from("follower-9").await.0, StatusCode::OK, "healed");
}

/// A promotion whose task panics is a fault of the node: `500 promotion_failed`, not a `409`
/// refusal, which would say the request was at fault.
#[tokio::test]
async fn a_panicked_promotion_is_a_500_not_a_refusal() {
    use axum::response::IntoResponse;
    let panicked = tokio::spawn(async { panic!("a bug") })
        .await
        .expect_err("the task panicked");
    let response = super::admin::task_failed(panicked).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(body["error"], "promotion_failed", "{body}");
}

/// A node takes each term from one node: after the transfer of leader 11's term 7, a batch or
/// heartbeat of term 7 from node 12 (a second leader of the term, after a forced promotion) is
/// refused with `409 term_taken`, which deposes the sender; leader 11 goes on.
#[tokio::test]
async fn a_second_leader_of_a_term_is_refused() {
    let app = app(Role::Follower);
    let follower = incarnation(&app).await;
    let transfer =
        format!(r#"{{"term":7,"leader":11,"follower":{follower},"version":"7.0","entries":[]}}"#);
    let (status, ack) = call(&app, "POST", "/internal/transfer", Some(&transfer)).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    let batch = |leader: u64| {
        format!(
            r#"{{"term":7,"leader":{leader},"smallest_quorum":1,"writes":[{{"key":"k","value":"v{leader}","version":"7.1"}}]}}"#
        )
    };
    let error = assert_error(
        &app,
        "POST",
        "/internal/replicate",
        Some(&batch(12)),
        409,
        "term_taken",
    )
    .await;
    assert_eq!(error["term"], 7, "{error}");
    let heartbeat = json!({"term": 7, "leader": 12, "smallest_quorum": 1,
        "settings": config(Role::Leader).settings});
    let heartbeat = heartbeat.to_string();
    assert_error(
        &app,
        "POST",
        "/internal/heartbeat",
        Some(&heartbeat),
        409,
        "term_taken",
    )
    .await;
    let (status, ack) = call(&app, "POST", "/internal/replicate", Some(&batch(11))).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(call(&app, "GET", "/kv/k", None).await.1["value"], "v11");
}
