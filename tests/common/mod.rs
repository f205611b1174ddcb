//! Helpers shared by the test binaries: requests that return status and JSON, polling with a
//! deadline instead of fixed sleeps, the questions every suite asks a cluster (its `/dump`,
//! whether it converged, the leader's view of a follower), and the rule for suites that need a
//! tool from outside cargo.

// Each test binary uses a part of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

/// How often `eventually` polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Set to `1` (as `.ci/run` does), a suite whose outside tool is missing fails instead of
/// skipping.
pub const REQUIRE_ALL: &str = "SEMISYNC_REQUIRE_ALL";

/// Called when a suite needs a tool from outside cargo (Docker, python3, Chromium) that is not
/// here, `why` saying what is wrong: prints one loud line on stderr, past the test harness's
/// capture, that names what is skipped, why, and how to install the tool, so the suite can
/// return and pass. Under `SEMISYNC_REQUIRE_ALL=1` it fails with that line instead.
pub fn skip_without_tool(suite: &str, why: &str, install: &str) {
    let line = format!("{suite}: {why}. To run it: {install}");
    if std::env::var(REQUIRE_ALL).is_ok_and(|value| value == "1") {
        panic!("{line} ({REQUIRE_ALL}=1 makes a missing tool a failure)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {line} ({REQUIRE_ALL}=1 makes this a failure)\n"
    );
}

/// `Ok` when `program args...` runs and exits 0, else why not.
pub fn runs(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Err(format!("`{program}` cannot be run ({err})")),
    }
}

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

/// `PUT {base}/kv/{key}` with `value`, and `?quorum=` when one is given.
pub async fn put(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    value: &str,
    quorum: Option<usize>,
) -> (StatusCode, Value) {
    let url = match quorum {
        Some(quorum) => format!("{base}/kv/{key}?quorum={quorum}"),
        None => format!("{base}/kv/{key}"),
    };
    send(http.put(url).json(&serde_json::json!({ "value": value }))).await
}

/// The version (`term.counter`) an answer's `field` carries, `None` when it carries none.
pub fn version_in(body: &Value, field: &str) -> Option<semisync_kv::Version> {
    body[field].as_str()?.parse().ok()
}

/// The version of a write's or a read's answer; panics, naming the answer, when it has none.
pub fn version(body: &Value) -> semisync_kv::Version {
    version_in(body, "version").unwrap_or_else(|| panic!("no version in {body}"))
}

/// A node's `/dump`, or `None` when it does not answer.
pub async fn dump(http: &reqwest::Client, base: &str) -> Option<BTreeMap<String, String>> {
    let response = http.get(format!("{base}/dump")).send().await.ok()?;
    response.json().await.ok()
}

/// Polls until each of `followers` (name, base URL) answers `/dump` with the leader's, up to
/// `within`; returns that state.
pub async fn converged(
    http: &reqwest::Client,
    leader: &str,
    followers: &[(String, String)],
    within: Duration,
) -> Result<BTreeMap<String, String>, String> {
    eventually(within, || async {
        let state = dump(http, leader).await.ok_or("leader does not answer")?;
        for (name, url) in followers {
            let dump = dump(http, url).await;
            if dump.as_ref() != Some(&state) {
                return Err(format!(
                    "{name} differs from the leader:\n  leader:   {state:?}\n  follower: {dump:?}"
                ));
            }
        }
        Ok(state)
    })
    .await
}

/// The leader's view of the follower `node_id` in its `/cluster` (`null` if it has none).
pub async fn follower_status(http: &reqwest::Client, leader: &str, node_id: &str) -> Value {
    let (status, cluster) = send(http.get(format!("{leader}/cluster"))).await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    let followers = cluster["followers"].as_array().cloned().unwrap_or_default();
    followers
        .into_iter()
        .find(|follower| follower["node_id"] == node_id)
        .unwrap_or_default()
}
