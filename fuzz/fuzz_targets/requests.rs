//! Request parsing through the real routers: whatever the method, path, query and body, a node
//! answers a 2xx or a 4xx/5xx JSON error with `error` and `message`, never a 500 or a panic.
//! Inputs that start with `B` are turned into a well-formed replication batch of arbitrary
//! writes (any key, value or version) from the leader the follower follows: it must answer 200
//! with one ack or refusal per write.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use semisync_kv::api::{AppState, client_router, internal_router};
use semisync_kv::config::{Config, Role, parse_base_url};
use semisync_kv::settings::Settings;
use tower::ServiceExt;

struct Node {
    runtime: tokio::runtime::Runtime,
    public: axum::Router,
    internal: axum::Router,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = Config {
            role: Role::Follower,
            node_id: Some("fuzz".into()),
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            internal_listen_addr: "127.0.0.1:0".parse().unwrap(),
            resp_listen_addr: None,
            resp_public_addr: None,
            followers: vec![],
            peers: vec![],
            leader_url: Some(parse_base_url("http://leader:8000").unwrap()),
            public_url: None,
            settings: Settings {
                write_quorum: 0,
                min_delay_ms: 0,
                max_delay_ms: 0,
                replicate_timeout_ms: 100,
                ..Settings::DEFAULT
            },
            replication_backlog: 10,
            cluster_token: None,
            cluster_token_file: None,
            header_read_timeout_ms: 1000,
            request_timeout_ms: None,
            max_concurrent_requests: 16,
            max_value_bytes: 64,
            failover_after_ms: 1500,
        };
        let state = AppState::new(&config).unwrap();
        let node = Node { runtime, public: client_router(state.clone()), internal: internal_router(state) };
        // Follow the leader of the last term, so that batches reach the apply path and no
        // fuzzed fence or heartbeat can start a newer term.
        node.runtime.block_on(async {
            let status = call(&node.internal, Method::GET, "/internal/status", Vec::new()).await.1;
            let transfer = serde_json::json!({
                "term": TERM, "follower": status["incarnation"], "version": "0.0", "entries": [],
            });
            let (code, _) = call(&node.internal, Method::POST, "/internal/transfer", transfer.to_string().into_bytes()).await;
            assert_eq!(code, 200);
        });
        node
    })
}

/// The term the fuzzed follower follows: the largest a message may carry, so that it stays the
/// newest.
const TERM: u64 = (1 << 53) - 1;

async fn call(router: &axum::Router, method: Method, uri: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let request = Request::builder().method(method).uri(uri).body(Body::from(body)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

/// A batch of writes made from `data`: each write takes a length byte for its key, the key's
/// bytes, 8 bytes of version (4 of term, 4 of counter: `term.counter`, zeros included, which the
/// follower refuses write by write) and a byte that makes the value null or a short string.
fn batch(mut data: &[u8]) -> (serde_json::Value, usize) {
    let mut writes = Vec::new();
    while let [len, rest @ ..] = data {
        let (key, rest) = rest.split_at((*len as usize % 8).min(rest.len()));
        let Some((version, rest)) = rest.split_first_chunk::<8>() else { break };
        let Some((value, rest)) = rest.split_first() else { break };
        writes.push(serde_json::json!({
            "key": String::from_utf8_lossy(key),
            "value": (value % 4 != 0).then(|| format!("v{value}")),
            "version": format!(
                "{}.{}",
                u32::from_le_bytes([version[0], version[1], version[2], version[3]]),
                u32::from_le_bytes([version[4], version[5], version[6], version[7]]),
            ),
        }));
        data = rest;
    }
    let count = writes.len();
    (serde_json::json!({"term": TERM, "smallest_quorum": 1, "writes": writes}), count)
}

const METHODS: [Method; 5] = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::PATCH];
// A read with `min_version` is fuzzed with `wait_ms=0`: a wait would only slow the fuzzer down.
const PATHS: [&str; 11] = [
    "/kv/", "/internal/replicate", "/internal/transfer", "/internal/status", "/dump", "/health",
    "/internal/fence", "/internal/heartbeat", "/cluster", "/kv/k?wait_ms=0&min_version=",
    "/internal/stream",
];

fuzz_target!(|data: &[u8]| {
    if let [b'B', rest @ ..] = data {
        let (body, writes) = batch(rest);
        let node = node();
        node.runtime.block_on(async {
            let (status, ack) =
                call(&node.internal, Method::POST, "/internal/replicate", body.to_string().into_bytes()).await;
            assert_eq!(status, 200, "{ack}");
            assert_eq!(ack["acks"].as_array().map(Vec::len), Some(writes), "{ack}");
        });
        return;
    }
    let [method, path, split, rest @ ..] = data else { return };
    let (suffix, body) = rest.split_at((*split as usize).min(rest.len()));
    let method = METHODS[*method as usize % METHODS.len()].clone();
    let base = PATHS[*path as usize % PATHS.len()];
    // The suffix goes into the path and query, percent-encoded where the URI needs it.
    let suffix: String = suffix
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'/' | b'?' | b'=' | b'&' | b'%' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let Ok(request) = Request::builder()
        .method(method)
        .uri(format!("{base}{suffix}"))
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    let node = node();
    let router = if base.starts_with("/internal/") { &node.internal } else { &node.public };
    node.runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        assert_ne!(status.as_u16(), 500);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
        if !status.is_success() {
            assert!(json["error"].is_string() && json["message"].is_string(), "{json}");
        }
        // This runtime runs spawned tasks only inside `block_on`: yield once so that the task
        // that discards an unread body (api/linger.rs) ends here instead of piling up.
        tokio::task::yield_now().await;
    });
});
