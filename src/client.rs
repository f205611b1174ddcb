//! A small HTTP client for a node's public API, used by the command line (`semisync-kv health`).

use std::time::Duration;

use reqwest::Url;

use crate::api::Health;

/// How long a probe may take in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the node at `base` for `/health`; an error says why it is not healthy.
pub async fn health(base: &Url) -> Result<Health, String> {
    let url = base
        .join("/health")
        .map_err(|err| format!("bad URL {base}: {err}"))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|err| format!("cannot build an HTTP client: {err}"))?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let health: Health = response
        .json()
        .await
        .map_err(|err| format!("{url}: unreadable answer: {err}"))?;
    if health.status != "ok" {
        return Err(format!("{url} reports status {:?}", health.status));
    }
    Ok(health)
}
