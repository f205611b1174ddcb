//! The soak mode: closed-loop writes for a long time on a fixed key set, sampling every node's
//! resident memory, open file descriptors and threads, and fitting a line through each, so that
//! a leak shows as a slope.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One sample of one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the soak began.
    pub at_s: f64,
    /// Resident memory, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

/// A node's samples and their trends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeSoak {
    /// The node's id.
    pub node_id: String,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Least-squares slope of resident memory over the second half of the run, KiB per minute
    /// (the first half includes warm-up: connection pools, allocator arenas).
    pub rss_kib_per_min: f64,
    /// The same for file descriptors, per minute.
    pub fds_per_min: f64,
    /// The same for threads, per minute.
    pub threads_per_min: f64,
}

/// The soak run: the load, and each node's trends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Soak {
    /// Length of the run, seconds.
    pub seconds: f64,
    /// Clients writing in a loop.
    pub concurrency: usize,
    /// Keys written.
    pub keys: usize,
    /// Successful writes.
    pub writes: usize,
    /// Failed writes.
    pub failed: usize,
    /// One entry per node.
    pub nodes: Vec<NodeSoak>,
}

/// Reads one sample of process `pid` from /proc (Linux only).
pub fn sample(pid: u32, at: Duration) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        at_s: at.as_secs_f64(),
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
    })
}

/// Summarizes a node's samples.
pub fn summarize(node_id: String, samples: Vec<Sample>) -> NodeSoak {
    let second_half = &samples[samples.len() / 2..];
    let slope = |value: fn(&Sample) -> u64| {
        let points: Vec<(f64, f64)> = second_half
            .iter()
            .map(|s| (s.at_s / 60.0, value(s) as f64))
            .collect();
        least_squares_slope(&points)
    };
    NodeSoak {
        node_id,
        rss_kib_per_min: slope(|s| s.rss_kib),
        fds_per_min: slope(|s| s.fds),
        threads_per_min: slope(|s| s.threads),
        samples,
    }
}

/// The slope of the least-squares line through `points`; 0 for fewer than two.
pub fn least_squares_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

/// Samples every node in `pids` every `every` until `until`.
pub async fn sample_until(
    pids: &[(String, u32)],
    every: Duration,
    until: Instant,
) -> Vec<Vec<Sample>> {
    let started = Instant::now();
    let mut samples = vec![Vec::new(); pids.len()];
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        for ((_, pid), node) in pids.iter().zip(&mut samples) {
            node.extend(sample(*pid, started.elapsed()));
        }
        if Instant::now() >= until {
            return samples;
        }
    }
}

/// The soak's result as a table.
pub fn table(soak: &Soak) -> String {
    let mut lines = vec![
        format!(
            "soak: {:.0} s, {} clients, {} keys, {} writes ({} failed)",
            soak.seconds, soak.concurrency, soak.keys, soak.writes, soak.failed
        ),
        format!(
            "{:<10} {:>10} {:>10} {:>13} {:>5} {:>8} {:>8} {:>10}",
            "node", "rss start", "rss end", "rss KiB/min", "fds", "fds/min", "threads", "thr/min"
        ),
    ];
    for node in &soak.nodes {
        let (first, last) = (node.samples.first(), node.samples.last());
        let kib = |s: Option<&Sample>| s.map_or(0, |s| s.rss_kib);
        lines.push(format!(
            "{:<10} {:>10} {:>10} {:>13.1} {:>5} {:>8.2} {:>8} {:>10.2}",
            node.node_id,
            kib(first),
            kib(last),
            node.rss_kib_per_min,
            last.map_or(0, |s| s.fds),
            node.fds_per_min,
            last.map_or(0, |s| s.threads),
            node.threads_per_min
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let points: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((least_squares_slope(&points) - 3.0).abs() < 1e-9);
        assert_eq!(least_squares_slope(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let sample = sample(std::process::id(), Duration::ZERO).expect("a /proc sample");
        assert!(
            sample.rss_kib > 0 && sample.fds > 0 && sample.threads > 0,
            "{sample:?}"
        );
    }
}
