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

/// The `p` quantile (0 < p < 1) of the `k`-th smallest of `n` independent delays uniform in
/// [0, 1]: a Beta(k, n + 1 - k). Its distribution function is the chance that at least `k` of
/// the `n` fall at or below `x`, a binomial tail, which is inverted by bisection. Scaled to
/// [a, b], it is the theory's quantile of a write's latency at quorum `k` (THEORY section 3).
pub fn order_statistic_quantile(k: usize, n: usize, p: f64) -> f64 {
    let at_least_k_below = |x: f64| -> f64 {
        // Sum over j = k..=n of C(n, j) x^j (1 - x)^(n - j), the binomial coefficient built up
        // term by term.
        let mut total = 0.0;
        let mut choose = 1.0;
        for j in 0..=n {
            if j > 0 {
                choose = choose * (n + 1 - j) as f64 / j as f64;
            }
            if j >= k {
                total += choose * x.powi(j as i32) * (1.0 - x).powi((n - j) as i32);
            }
        }
        total
    };
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    // Each step halves the interval: 60 of them leave it far below any millisecond.
    for _ in 0..60 {
        let middle = (low + high) / 2.0;
        if at_least_k_below(middle) < p {
            low = middle;
        } else {
            high = middle;
        }
    }
    (low + high) / 2.0
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

    /// THEORY section 3's p99s for lag 0..1000 ms and five followers (602, 778, 894, 967 and
    /// 998 ms at quorums 1 to 5), and medians: the middle of five has its median in the middle,
    /// and the smallest and largest mirror each other.
    #[test]
    fn order_statistic_quantiles_match_the_theory() {
        let ms = |k, p| (1000.0 * order_statistic_quantile(k, 5, p)).round();
        let p99: Vec<f64> = (1..=5).map(|k| ms(k, 0.99)).collect();
        assert_eq!(p99, vec![602.0, 778.0, 894.0, 967.0, 998.0]);
        assert_eq!(ms(3, 0.5), 500.0);
        assert_eq!(ms(1, 0.5) + ms(5, 0.5), 1000.0);
        // The smallest of five: P(min <= x) = 1 - (1 - x)^5, so its median is 1 - 0.5^(1/5).
        let exact = 1000.0 * (1.0 - 0.5_f64.powf(0.2));
        assert_eq!(ms(1, 0.5), exact.round());
    }

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
