//! The clock of the simulated lag: what a message's task sleeps on until its lag has passed.
//!
//! tokio's timers fire on whole milliseconds (and the epoll timeout they sleep with is rounded
//! up to one), which added about a millisecond to every message on top of the lag that was
//! drawn for it. [`LagClock::precise`] instead keeps the waiting messages' deadlines in a heap
//! served by one thread of its own, which sleeps with the operating system's high-resolution
//! timer (tens of microseconds late, not a millisecond). [`LagClock::tokio`] uses tokio's timers,
//! for the unit tests and the simulator, which run on tokio's paused clock.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Where message tasks sleep until they are due.
#[derive(Debug)]
pub enum LagClock {
    /// tokio's timers: millisecond resolution, but they follow tokio's paused clock in tests.
    Tokio,
    /// A thread of its own with sub-millisecond precision.
    Precise(Precise),
}

impl LagClock {
    /// The precise clock; starts its thread, which ends when the clock is dropped.
    pub fn precise() -> std::io::Result<Self> {
        let timers = Arc::new(Timers::default());
        let thread = std::thread::Builder::new()
            .name("lag-clock".into())
            .spawn({
                let timers = Arc::clone(&timers);
                move || timers.serve()
            })?;
        Ok(Self::Precise(Precise {
            timers,
            thread: thread.thread().clone(),
        }))
    }

    /// tokio's timers.
    pub fn tokio() -> Self {
        Self::Tokio
    }

    /// Sleeps until `due`.
    pub async fn sleep_until(&self, due: Instant) {
        match self {
            LagClock::Tokio => tokio::time::sleep_until(due).await,
            LagClock::Precise(precise) => precise.sleep_until(due.into_std()).await,
        }
    }
}

/// The precise clock's handle.
#[derive(Debug)]
pub struct Precise {
    timers: Arc<Timers>,
    thread: Thread,
}

impl Precise {
    async fn sleep_until(&self, due: std::time::Instant) {
        if due <= std::time::Instant::now() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        let earliest = {
            let mut heap = self.timers.heap();
            let earliest = heap.peek().is_none_or(|first| due < first.due);
            heap.push(Timer { due, wake });
            earliest
        };
        if earliest {
            // The thread sleeps until the former first deadline: wake it to sleep less.
            self.thread.unpark();
        }
        // An error means the clock is gone, and with it the leader: nothing left to wait for.
        let _ = woken.await;
    }
}

impl Drop for Precise {
    fn drop(&mut self) {
        self.timers.stop.store(true, AtomicOrdering::Relaxed);
        self.thread.unpark();
    }
}

/// The deadlines of the waiting messages.
#[derive(Debug, Default)]
struct Timers {
    heap: Mutex<BinaryHeap<Timer>>,
    stop: AtomicBool,
}

impl Timers {
    fn heap(&self) -> MutexGuard<'_, BinaryHeap<Timer>> {
        // Every step under the lock leaves the heap consistent.
        self.heap.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The clock thread: wakes every message whose deadline has passed, then sleeps until the
    /// next deadline or until an earlier one is added.
    fn serve(&self) {
        while !self.stop.load(AtomicOrdering::Relaxed) {
            let next = {
                let mut heap = self.heap();
                let now = std::time::Instant::now();
                while heap.peek().is_some_and(|first| first.due <= now) {
                    if let Some(timer) = heap.pop() {
                        // An error means the message's task is gone (the leader stopped).
                        let _ = timer.wake.send(());
                    }
                }
                heap.peek().map(|first| first.due - now)
            };
            match next {
                Some(wait) => std::thread::park_timeout(wait),
                None => std::thread::park(),
            }
        }
    }
}

/// One waiting message: its deadline, and how to wake its task.
#[derive(Debug)]
struct Timer {
    due: std::time::Instant,
    wake: oneshot::Sender<()>,
}

// Ordered so that the max-heap's top is the earliest deadline.
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        other.due.cmp(&self.due)
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Timer {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Real time: each sleep ends at its deadline, in deadline order whatever the order they
    /// were started in, and well within a millisecond of it.
    #[tokio::test]
    async fn the_precise_clock_wakes_each_sleeper_at_its_deadline_in_order() {
        let clock = Arc::new(LagClock::precise().expect("a thread"));
        let start = Instant::now();
        let delays_us = [9_000u64, 3_000, 6_500, 3_250, 12_100, 0];
        let (done, mut woken) = tokio::sync::mpsc::unbounded_channel();
        for delay in delays_us {
            let (clock, done) = (Arc::clone(&clock), done.clone());
            tokio::spawn(async move {
                clock
                    .sleep_until(start + Duration::from_micros(delay))
                    .await;
                let _ = done.send((delay, start.elapsed()));
            });
        }
        drop(done);
        let mut order = Vec::new();
        while let Some((delay, elapsed)) = woken.recv().await {
            assert!(
                elapsed >= Duration::from_micros(delay),
                "{delay} µs: woken early, at {elapsed:?}"
            );
            order.push(delay);
        }
        let mut sorted = delays_us.to_vec();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
    }
}
