//! Every random choice a node makes, from one generator per thread: the simulated lag of each
//! message, the jitter of a retry's backoff, and the incarnation a node draws at start-up. A
//! node seeds it from the operating system; the simulator seeds it with
//! the run's seed ([`seed`]) on the one thread that runs every node, so that a seed replays a
//! run exactly.

use std::cell::RefCell;
use std::ops::RangeInclusive;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// Seeds this thread's generator: every draw on this thread from now on follows from `seed`.
pub fn seed(seed: u64) {
    RNG.with(|rng| *rng.borrow_mut() = SmallRng::seed_from_u64(seed));
}

/// Runs `draw` with this thread's generator.
pub fn with<T>(draw: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with(|rng| draw(&mut rng.borrow_mut()))
}

/// A number drawn uniformly from `range`.
pub fn range(range: RangeInclusive<f64>) -> f64 {
    with(|rng| rng.random_range(range))
}

/// A new incarnation: what identifies one run of a node.
pub fn incarnation() -> u64 {
    with(|rng| rng.random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_draws() {
        seed(7);
        let first: Vec<f64> = (0..5).map(|_| range(0.0..=1.0)).collect();
        seed(7);
        let again: Vec<f64> = (0..5).map(|_| range(0.0..=1.0)).collect();
        seed(8);
        let other: Vec<f64> = (0..5).map(|_| range(0.0..=1.0)).collect();
        assert_eq!(first, again);
        assert_ne!(first, other);
    }
}
