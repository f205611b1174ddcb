//! The quorum wait of one write: the followers' acks are counted on a [`Tally`], and the
//! write's request handler waits on it until `quorum` of them arrived, no more can arrive, or
//! the deadline passed. Acks that come after the answer are not counted, but replication goes
//! on: that is what makes the wait *semi*-synchronous.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::events::FollowerIndex;

/// The acks of one write, shared between its request handler and the followers' pipelines.
#[derive(Debug)]
pub struct Tally {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Acks the write waits for.
    quorum: usize,
    /// Followers that acknowledged before the answer, in arrival order.
    acked_by: Vec<FollowerIndex>,
    /// Followers that may still acknowledge: neither acked nor given up.
    outstanding: usize,
    /// The answer was given: later acks are not counted.
    answered: bool,
}

impl Tally {
    /// A tally for a write that waits for `quorum` acks out of `followers`.
    pub fn new(quorum: usize, followers: usize) -> Self {
        Self {
            state: Mutex::new(State {
                quorum,
                acked_by: Vec::with_capacity(quorum),
                outstanding: followers,
                answered: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every step under the lock leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `follower`'s ack; returns whether it came before the answer.
    pub fn ack(&self, follower: FollowerIndex) -> bool {
        let mut state = self.state();
        state.outstanding = state.outstanding.saturating_sub(1);
        // Acks past the quorum are late even before the handler has woken to answer.
        if state.answered || state.acked_by.len() >= state.quorum {
            return false;
        }
        state.acked_by.push(follower);
        if state.acked_by.len() >= state.quorum || state.outstanding == 0 {
            self.changed.notify_one();
        }
        true
    }

    /// Records that `follower` will not acknowledge this write (its delivery gave up in favour
    /// of a state transfer).
    pub fn give_up(&self) {
        let mut state = self.state();
        state.outstanding = state.outstanding.saturating_sub(1);
        if state.outstanding == 0 {
            self.changed.notify_one();
        }
    }

    /// Waits until the quorum is reached, no more acks can come, `deadline` passes or `stop`
    /// resolves (the leader stepped down); then closes the tally and returns the followers whose
    /// acks were counted, in arrival order.
    pub async fn wait(
        &self,
        deadline: Instant,
        stop: impl std::future::Future<Output = ()>,
    ) -> Vec<FollowerIndex> {
        let mut stop = std::pin::pin!(stop);
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.state();
                if state.acked_by.len() >= state.quorum || state.outstanding == 0 {
                    state.answered = true;
                    return std::mem::take(&mut state.acked_by);
                }
            }
            // `notify_one` keeps a permit when nobody waits yet, so an ack that lands between
            // the check and this await is not missed.
            let waited = tokio::select! {
                waited = tokio::time::timeout_at(deadline, changed) => waited.is_ok(),
                () = &mut stop => false,
            };
            if !waited {
                let mut state = self.state();
                state.answered = true;
                return std::mem::take(&mut state.acked_by);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_at_the_quorum_and_counts_no_later_ack() {
        let tally = Arc::new(Tally::new(2, 5));
        let waiter = tokio::spawn({
            let tally = Arc::clone(&tally);
            async move {
                tally
                    .wait(
                        Instant::now() + Duration::from_secs(5),
                        std::future::pending(),
                    )
                    .await
            }
        });
        assert!(tally.ack(3));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one ack of two");
        assert!(tally.ack(1));
        assert!(!tally.ack(2), "past the quorum, before the handler woke");
        assert_eq!(waiter.await.expect("joined"), vec![3, 1]);
        assert!(!tally.ack(0), "an ack after the answer is not counted");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_the_acks_so_far() {
        let tally = Tally::new(3, 5);
        tally.ack(4);
        let started = Instant::now();
        let acked = tally
            .wait(started + Duration::from_millis(250), std::future::pending())
            .await;
        assert_eq!(acked, vec![4]);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_early_when_no_more_acks_can_come() {
        let tally = Tally::new(3, 3);
        tally.ack(0);
        tally.give_up();
        tally.give_up();
        let started = Instant::now();
        assert_eq!(
            tally
                .wait(started + Duration::from_secs(5), std::future::pending())
                .await,
            vec![0]
        );
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "nothing left to wait for"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quorum_of_zero_answers_at_once() {
        let tally = Tally::new(0, 5);
        assert_eq!(
            tally.wait(Instant::now(), std::future::pending()).await,
            Vec::<usize>::new()
        );
    }
}
