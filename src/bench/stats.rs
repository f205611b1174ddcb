//! Latency summaries and the table printed at the end of a benchmark.

use serde::{Deserialize, Serialize};

use super::{Results, StaleReads};

/// Mean and percentiles of a set of latencies, in milliseconds; all `null` when there are none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Arithmetic mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Latency {
    /// The summary of `samples` (nearest-rank percentiles).
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Self {
            mean: Some(sorted.iter().sum::<f64>() / sorted.len() as f64),
            p50: Some(rank(50.0)),
            p90: Some(rank(90.0)),
            p99: Some(rank(99.0)),
            max: sorted.last().copied(),
        }
    }
}

/// The results as a text table for the terminal.
pub fn table(results: &Results) -> String {
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let config = &results.config;
    let mut lines = vec![
        format!(
            "lag {}..{} ms, {} followers, {} writes per quorum, {} in flight, {} keys",
            config.min_delay_ms,
            config.max_delay_ms,
            config.followers.len(),
            config.writes,
            config.concurrency,
            config.keys
        ),
        format!(
            "{:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>10}",
            "quorum",
            "ok",
            "failed",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "theory ms",
            "diff now",
            "diff later",
            "over mean",
            "over p99"
        ),
    ];
    for q in &results.quorums {
        lines.push(format!(
            "{:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11.1} {:>9} {:>9} {:>10} {:>10}",
            q.quorum,
            q.succeeded,
            q.failed,
            ms(q.latency_ms.mean),
            ms(q.latency_ms.p50),
            ms(q.latency_ms.p90),
            ms(q.latency_ms.p99),
            ms(q.latency_ms.max),
            q.theoretical_mean_ms,
            q.immediate_mismatching_followers,
            q.settled_mismatching_followers,
            ms(q.overhead_ms.as_ref().and_then(|o| o.mean)),
            ms(q.overhead_ms.as_ref().and_then(|o| o.p99)),
        ));
    }
    let left_out: usize = results
        .quorums
        .iter()
        .filter_map(|q| q.overhead_ms.as_ref())
        .map(|o| o.left_out)
        .sum();
    lines.push(format!(
        "over: latency minus the write's ideal (the quorum-th smallest of its first-attempt \
         lags, from the leader's event feed){}",
        if left_out > 0 {
            format!("; {left_out} writes left out: the feed missed their lags")
        } else {
            String::new()
        }
    ));
    if let Some(throughput) = &results.throughput {
        lines.push(format!(
            "throughput (lag {}..{} ms, {:.0} s per run):",
            throughput.min_delay_ms, throughput.max_delay_ms, throughput.seconds
        ));
        lines.push(format!(
            "{:>6} {:>8} {:>10} {:>9} {:>9} {:>6}",
            "quorum", "clients", "writes/s", "p50 ms", "p99 ms", "failed"
        ));
        for run in &throughput.runs {
            lines.push(format!(
                "{:>6} {:>8} {:>10.0} {:>9} {:>9} {:>6}",
                run.quorum,
                run.concurrency,
                run.writes_per_sec,
                ms(run.latency_ms.p50),
                ms(run.latency_ms.p99),
                run.failed
            ));
        }
    }
    if let Some(stale) = &results.stale_reads {
        lines.extend(stale_table(stale));
    }
    lines.join("\n")
}

/// The stale-read lesson's lines: per wait point and quorum, the stale follower reads without
/// and with `min_version`, and how often the leader showed a write while it waited.
fn stale_table(stale: &StaleReads) -> Vec<String> {
    let mut lines = vec![
        format!(
            "stale reads: each write read back from a random follower right after its 200; the \
             leader read {:.0} ms into each write",
            stale.leader_peek_after_ms
        ),
        format!(
            "{:>12} {:>6} {:>14} {:>16} {:>8} {:>22}",
            "wait point",
            "quorum",
            "stale plain",
            "stale min_vers.",
            "not yet",
            "leader showed early"
        ),
    ];
    let ratio = |part: usize, whole: usize| format!("{part}/{whole}");
    for plain in stale.passes.iter().filter(|p| !p.min_version) {
        let Some(min) = stale.passes.iter().find(|p| {
            p.min_version && p.wait_point == plain.wait_point && p.quorum == plain.quorum
        }) else {
            continue;
        };
        lines.push(format!(
            "{:>12} {:>6} {:>14} {:>16} {:>8} {:>22}",
            plain.wait_point.as_str(),
            plain.quorum,
            ratio(plain.stale, plain.answered_reads()),
            ratio(min.stale, min.answered_reads()),
            min.not_yet_replicated,
            {
                let (showed, reads) = stale.leader_showed(plain.wait_point, plain.quorum);
                ratio(showed, reads)
            },
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        let latency = Latency::of(&samples);
        assert_eq!(latency.mean, Some(50.5));
        assert_eq!(latency.p50, Some(50.0));
        assert_eq!(latency.p90, Some(90.0));
        assert_eq!(latency.p99, Some(99.0));
        assert_eq!(latency.max, Some(100.0));
        assert_eq!(Latency::of(&[7.0]).p99, Some(7.0));
        assert_eq!(Latency::of(&[]), Latency::default());
    }
}
