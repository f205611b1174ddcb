//! Latency summaries.

use serde::{Deserialize, Serialize};

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
