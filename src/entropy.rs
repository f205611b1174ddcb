//! What a run depends on besides its input, in one place, so that the simulator can replace it:
//! every random choice a node makes, from one generator per thread (the simulated lag of each
//! message, the jitter of a retry's backoff, the incarnation a node draws at start-up), and the
//! wall clock. A node seeds the generator from the operating system and reads the system clock;
//! the simulator seeds the generator with the run's seed ([`seed`]) and sets a clock that
//! follows tokio's paused one ([`simulate_clock`]) on the one thread that runs every node, so
//! that a seed replays a run exactly.

use std::cell::{Cell, RefCell};
use std::ops::RangeInclusive;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
    /// When set: the wall clock is this many microseconds at this instant of tokio's clock.
    static CLOCK: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
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

/// From now on, on this thread, the wall clock reads `micros` microseconds since the Unix epoch
/// now, and follows tokio's clock (paused, in the simulator) from there.
pub fn simulate_clock(micros: u64) {
    CLOCK.with(|clock| clock.set(Some((Instant::now(), micros))));
}

/// Microseconds since the Unix epoch, by the wall clock (or the simulated one).
pub fn wall_clock_micros() -> u64 {
    match CLOCK.with(Cell::get) {
        Some((at, micros)) => micros + at.elapsed().as_micros() as u64,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64),
    }
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
