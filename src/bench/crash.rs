//! `bench --local --crash`: what a leader crash costs at each write quorum. For each quorum,
//! clients write fresh keys to a local cluster with the lag asked for; after [`CRASH_AFTER`]
//! the leader is killed (SIGKILL) in the middle of their writes, follower1 is promoted
//! (`POST /admin/promote`), and every write that was answered 200 is looked up in the new
//! leader's whole state. Then the old leader is started again, finds the new one and follows it,
//! and the next quorum's run kills the new leader.
//!
//! With a quorum of 1 or more none is lost: each such write is on at least one follower, and the
//! promoted follower merges every follower it reaches (all of them, here). With quorum 0 the
//! leader answers before any follower has the write, and what it answered in the last moments
//! before the crash is gone: the promotion says so, and must be forced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::target::Target;
use crate::client::Client;

/// The JSON file's name in the output folder.
pub const CRASH_FILE: &str = "crash_results.json";
/// How long the clients write before the leader is killed.
pub const CRASH_AFTER: Duration = Duration::from_secs(2);
/// Most writes one client sends in one run, a bound for a leader that does not die.
const MOST_PER_CLIENT: usize = 10_000;

/// What `bench --crash` measured: the content of `crash_results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Crash {
    /// The local cluster's smallest lag, in milliseconds.
    pub min_delay_ms: u64,
    /// The local cluster's largest lag, in milliseconds.
    pub max_delay_ms: u64,
    /// Clients writing at once.
    pub clients: usize,
    /// Seconds of writes before the crash.
    pub seconds_before_crash: f64,
    /// One entry per quorum, in the order measured.
    pub runs: Vec<CrashRun>,
}

/// One crash at one quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashRun {
    /// The quorum of every write of the run.
    pub quorum: usize,
    /// Writes answered 200 before the crash.
    pub acknowledged: usize,
    /// Of those, the ones the promoted follower does not hold.
    pub lost: usize,
    /// Followers the promotion merged, itself included.
    pub merged: usize,
    /// Whether the promotion said every acknowledged write is kept (a quorum-0 run is forced).
    pub safe: bool,
}

/// Runs one crash per quorum on the local cluster of `target`: kills its leader, promotes
/// follower1, and brings the old leader back as a follower in follower1's place, each time.
/// Each run writes its own keys (`crash-q{quorum}-c{client}-{i}`).
pub(super) async fn run(
    target: &mut Target,
    quorums: &[usize],
    clients: usize,
) -> Result<Vec<CrashRun>, String> {
    let mut runs = Vec::new();
    for &quorum in quorums {
        let stop = AtomicBool::new(false);
        let leader = target.leader.clone();
        let write = |client: usize| {
            let (leader, stop) = (leader.clone(), &stop);
            async move {
                let mut acknowledged = Vec::new();
                for i in 0..MOST_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (key, value) = (format!("crash-q{quorum}-c{client}-{i}"), format!("v{i}"));
                    if leader.put(&key, &value, Some(quorum)).await.is_ok() {
                        acknowledged.push((key, value));
                    }
                }
                acknowledged
            }
        };
        let writes = futures_util::future::join_all((0..clients).map(write));
        let local = target
            .local
            .as_mut()
            .ok_or("--crash kills the leader: run it with --local")?;
        let crash = async {
            tokio::time::sleep(CRASH_AFTER).await;
            local.leader.kill();
            stop.store(true, Ordering::Relaxed);
        };
        let (acknowledged, ()) = tokio::join!(writes, crash);
        let acknowledged: Vec<(String, String)> = acknowledged.into_iter().flatten().collect();
        let client = |url: String| {
            Url::parse(&url)
                .map_err(|err| err.to_string())
                .and_then(|url| Client::new(url).map_err(|err| err.to_string()))
        };
        // Asynchronous writes can only be promoted by force: the promotion refuses otherwise.
        let candidate = client(local.followers[0].url())?;
        let promotion = candidate
            .promote(quorum == 0)
            .await
            .map_err(|err| format!("cannot promote follower1: {err}"))?;
        let state = candidate.dump().await.map_err(|err| err.to_string())?;
        runs.push(CrashRun {
            quorum,
            acknowledged: acknowledged.len(),
            lost: lost(&acknowledged, &state),
            merged: promotion.merged,
            safe: promotion.safe,
        });
        // The old leader comes back, follows the new one, and takes follower1's place.
        local
            .leader
            .restart()
            .map_err(|err| format!("cannot restart the old leader: {err}"))?;
        std::mem::swap(&mut local.leader, &mut local.followers[0]);
        target.followers[0] = client(local.followers[0].url())?;
        target.leader = candidate;
        target.wait_all_up().await?;
    }
    Ok(runs)
}

/// How many of the `acknowledged` writes (key, value; every key written once) `state` lacks.
fn lost(acknowledged: &[(String, String)], state: &BTreeMap<String, String>) -> usize {
    acknowledged
        .iter()
        .filter(|(key, value)| state.get(key) != Some(value))
        .count()
}

/// The table `bench --crash` prints.
pub fn table(crash: &Crash) -> String {
    let mut lines = vec![format!(
        "leader killed after {:.1} s of writes from {} clients, lag {}..{} ms, then follower1 promoted",
        crash.seconds_before_crash, crash.clients, crash.min_delay_ms, crash.max_delay_ms
    )];
    lines.push(format!(
        "{:>6} {:>13} {:>6} {:>7}  promotion",
        "quorum", "acknowledged", "lost", "merged"
    ));
    for run in &crash.runs {
        lines.push(format!(
            "{:>6} {:>13} {:>6} {:>7}  {}",
            run.quorum,
            run.acknowledged,
            run.lost,
            run.merged,
            if run.safe { "safe" } else { "forced" }
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_lost_when_the_state_lacks_it_or_holds_another_value() {
        let acknowledged = [("a", "1"), ("b", "2"), ("c", "3")]
            .map(|(key, value)| (key.to_owned(), value.to_owned()));
        let state = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".into(), "9".into())]);
        assert_eq!(lost(&acknowledged, &state), 2);
        assert_eq!(lost(&acknowledged[..1], &state), 0);
    }
}
