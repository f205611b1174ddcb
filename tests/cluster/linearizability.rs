//! Histories of real clusters for the linearizability checker, which lives in the library
//! ([`semisync_kv::sim::linearizability`]) because the simulator runs it too: each operation
//! timed by the wall clock from its call to its return.

use reqwest::StatusCode;
pub use semisync_kv::sim::linearizability::{Kind, Operation, linearizable};
use tokio::time::Instant;

use crate::helpers::send;

/// One operation of a recorded history: on which key, and what it did when.
pub type Recorded = (String, Operation);

/// Sends `request`, records it as an operation on `key` with its call and return times, and
/// returns the HTTP status. A write answered 503 is indeterminate: it may have taken effect.
pub async fn record(
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
        (Some(value), StatusCode::OK) => (Some(ret), Kind::Write(value)),
        (Some(value), StatusCode::SERVICE_UNAVAILABLE) => (None, Kind::Write(value)),
        (None, StatusCode::OK) => (
            Some(ret),
            Kind::Read(body["value"].as_str().map(String::from)),
        ),
        (None, StatusCode::NOT_FOUND) => (Some(ret), Kind::Read(None)),
        (_, status) => panic!("unexpected answer {status}: {body}"),
    };
    let operation = Operation { call, ret, kind };
    history
        .lock()
        .expect("history")
        .push((key.to_owned(), operation));
    status
}

/// Asserts that the history of each of `keys` in `history` is linearizable.
pub fn assert_linearizable(history: &[Recorded], keys: &[&str]) {
    for key in keys {
        let operations = history_of(history, key);
        assert!(linearizable(&operations), "{key}: {operations:#?}");
    }
}

/// The operations on `key`, in the order they were recorded.
pub fn history_of(history: &[Recorded], key: &str) -> Vec<Operation> {
    history
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, op)| op.clone())
        .collect()
}
