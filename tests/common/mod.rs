//! Helpers shared by the test binaries: requests that return status and JSON, and polling with
//! a deadline instead of fixed sleeps.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

/// How often `eventually` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Sends a request and returns its status and JSON body.
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("node answers");
    let status = response.status();
    let text = response.text().await.expect("body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"));
    (status, json)
}

/// Polls `check` until it returns `Ok`, or fails with its last error once `within` has passed.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(err) if Instant::now() >= deadline => {
                return Err(format!("after {within:?}: {err}"));
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}
