//! Request parsing through the real routers: whatever the method, path, query and body, a node
//! answers a 2xx or a 4xx/5xx JSON error with `error` and `message`, never a 500 or a panic.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use semisync_kv::api::{AppState, client_router, internal_router};
use semisync_kv::config::{Config, Role, parse_base_url};
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
            followers: vec![],
            leader_url: Some(parse_base_url("http://leader:8000").unwrap()),
            write_quorum: 0,
            min_delay_ms: 0,
            max_delay_ms: 0,
            replicate_timeout_ms: 100,
            replication_backlog: 10,
            cluster_token: None,
            cluster_token_file: None,
            header_read_timeout_ms: 1000,
            request_timeout_ms: None,
            max_concurrent_requests: 16,
            max_value_bytes: 64,
        };
        let state = AppState::new(&config);
        Node { runtime, public: client_router(state.clone()), internal: internal_router(state) }
    })
}

const METHODS: [Method; 5] = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::PATCH];
const PATHS: [&str; 8] = [
    "/kv/", "/internal/replicate", "/internal/sync", "/internal/status", "/dump", "/health",
    "/internal/snapshot", "/cluster",
];

fuzz_target!(|data: &[u8]| {
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
    });
});
