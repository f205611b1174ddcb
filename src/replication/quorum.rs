//! The quorum wait of one write: the followers' acks are counted on a [`Tally`], and the
//! write's request handler waits on it until `quorum` of them arrived, no more can arrive, or
//! the deadline passed. Acks that come after the answer are not counted, but replication goes
//! on: that is what makes the wait *semi*-synchronous.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::events::FollowerIndex;

/// A majority of all the nodes of a leader of `followers` followers, itself included: what a
/// candidate must reach to take a term.
pub fn majority(followers: usize) -> usize {
    followers.div_ceil(2) + 1
}

/// The floor: the smallest quorum at which a write of this term counts, given the floor so far
/// and the smallest quorum each follower is known to have heard of (`heard`, one per follower
/// that confirmed any). A write with quorum `q` counts only when a promotion that merges
/// followers by the count of [`failover`](crate::failover) is sure to know `q`. That holds at
/// the term's start for the quorum it announces, which every follower hears first. It holds for
/// a lower `q` once `floor` followers heard of `q` or less: a promotion counted safe merges at
/// least `N - floor + 1` followers, so it merges one of those, counts with `q` or less, and so
/// merges `N - q + 1`, one of whom holds the write. Repeated while it lowers the floor.
pub fn established(floor: usize, heard: impl IntoIterator<Item = usize>) -> usize {
    let mut heard: Vec<usize> = heard.into_iter().collect();
    heard.sort_unstable();
    let mut floor = floor;
    // The `floor`-th smallest heard quorum: `floor` followers heard of it or less.
    while let Some(&lower) = floor.checked_sub(1).and_then(|i| heard.get(i)) {
        if lower >= floor {
            break;
        }
        floor = lower;
    }
    floor
}

/// The acks of one write, shared between its request handler and the followers' pipelines.
#[derive(Debug)]
pub struct Tally {
    state: Mutex<State>,
    /// Wakes the write's own quorum wait ([`Tally::wait`]), its one waiter: `notify_one` keeps
    /// a permit for a wake-up that comes before it waits.
    changed: Notify,
    /// Wakes every watcher of [`Tally::held`] at each ack: the floor's wait. (A Redis `WAIT`
    /// uses [`Tally::held_by`], which wakes it once.)
    held_changed: Notify,
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
    /// Followers that acknowledged, before or after the answer: those that hold the write.
    /// Each follower's message is acknowledged at most once.
    held: usize,
    /// Followers whose delivery gave up in favour of a state transfer: they never acknowledge
    /// this write, but a transfer may carry it ([`Replicator::holders`](super::Replicator::holders)).
    given_up: Vec<FollowerIndex>,
    /// The waits of [`Tally::held_by`], each with its number: dropping its sender, once `held`
    /// reaches that number or a follower is given up, wakes it.
    watchers: Vec<(usize, oneshot::Sender<()>)>,
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
                held: 0,
                given_up: Vec::new(),
                watchers: Vec::new(),
            }),
            changed: Notify::new(),
            held_changed: Notify::new(),
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
        state.held += 1;
        // Acks past the quorum are late even before the handler has woken to answer.
        let counted = !state.answered && state.acked_by.len() < state.quorum;
        if counted {
            state.acked_by.push(follower);
        }
        // Below its quorum, the write's handler waits for no single ack; past it, a write
        // whose quorum is below the floor may wait for the followers that hold it.
        if state.acked_by.len() >= state.quorum || state.answered || state.outstanding == 0 {
            self.changed.notify_one();
        }
        let held = state.held;
        state.watchers.retain_mut(|(wanted, _)| *wanted > held);
        drop(state);
        self.held_changed.notify_waiters();
        counted
    }

    /// The followers that hold the write: every ack so far, counted or late.
    pub fn held(&self) -> usize {
        self.state().held
    }

    /// The followers that will not acknowledge the write: their delivery gave up in favour of
    /// a state transfer.
    pub fn given_up(&self) -> Vec<FollowerIndex> {
        self.state().given_up.clone()
    }

    /// Waits until at least `wanted` followers hold the write (Redis's `WAIT`), or until one
    /// is given up ([`Tally::give_up`]): its caller counts again, since a state transfer may
    /// already hold the write for that follower. Any number of tasks may wait, and each is woken
    /// once, rather than at every ack.
    pub async fn held_by(&self, wanted: usize) {
        let reached = {
            let mut state = self.state();
            if state.held >= wanted {
                return;
            }
            // The waits given up (a `WAIT` that timed out) go first.
            state.watchers.retain(|(_, sender)| !sender.is_closed());
            let (sender, reached) = oneshot::channel();
            state.watchers.push((wanted, sender));
            reached
        };
        // Its sender is dropped once `held` reaches `wanted` or a follower is given up (or with
        // the tally, which the caller's `&self` keeps alive): either way the wait is over.
        let _ = reached.await;
    }

    /// Waits until more than `held` followers hold the write. Any number of tasks may wait.
    pub async fn held_by_more_than(&self, held: usize) {
        loop {
            // Registered before the check: an ack right after it wakes this task.
            let changed = self.held_changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.held() > held {
                return;
            }
            changed.await;
        }
    }

    /// Records that `follower` will not acknowledge this write (its delivery gave up in favour
    /// of a state transfer).
    pub fn give_up(&self, follower: FollowerIndex) {
        let mut state = self.state();
        state.given_up.push(follower);
        state.outstanding = state.outstanding.saturating_sub(1);
        if state.outstanding == 0 {
            self.changed.notify_one();
        }
        // Every `held_by` counts again: a transfer may already have given the write to it.
        state.watchers.clear();
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
            // Biased, as every `select!` of a node: a seed replays a simulated run exactly.
            let waited = tokio::select! {
                biased;
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

/// What became of the quorum wait for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumOutcome {
    /// Acks required.
    pub quorum: usize,
    /// How long the write waited for them at most (the timeout when it started).
    pub timeout: Duration,
    /// Node ids of the followers that acknowledged before the answer, in arrival order.
    pub acked_by: Vec<String>,
    /// When the write's quorum was below the term's floor at the answer (too few followers had
    /// heard of a quorum that low, see [`established`]): the write does not count,
    /// whatever its acks.
    pub unannounced: Option<Unannounced>,
}

/// Why a write acknowledged by its quorum does not count: its quorum is below the term's
/// floor, and too few followers heard of it for a promotion to be sure to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unannounced {
    /// The floor: the smallest quorum at which a write of this term counts now.
    pub floor: usize,
    /// The followers known to have heard of the write's quorum or a lower one; `floor` of
    /// them are needed.
    pub heard: usize,
    /// When no write of this new term counts yet: the followers known to hold its state, and
    /// how many must.
    pub unsynced: Option<(usize, usize)>,
}

impl QuorumOutcome {
    /// Number of acks received before the answer.
    pub fn acks(&self) -> usize {
        self.acked_by.len()
    }

    /// Whether the quorum was reached, at a quorum that counts.
    pub fn reached(&self) -> bool {
        self.acks() >= self.quorum && self.unannounced.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_floor_drops_once_as_many_followers_as_it_heard_of_a_lower_quorum() {
        assert_eq!(established(3, []), 3);
        assert_eq!(
            established(3, [2, 2]),
            3,
            "two heard of 2, three are needed"
        );
        assert_eq!(established(3, [2, 2, 3, 3, 3]), 3);
        assert_eq!(established(3, [2, 2, 2]), 2);
        assert_eq!(
            established(3, [2, 1, 2, 3]),
            2,
            "1 needs two who heard of 1"
        );
        assert_eq!(established(3, [1, 1, 1]), 1, "and from 2 to 1 at once");
        assert_eq!(established(5, [1, 1, 1, 1, 1]), 1);
        assert_eq!(established(5, [1, 1, 1, 1]), 5);
        assert_eq!(established(2, [0, 0]), 0);
        assert_eq!(established(0, [0]), 0);
    }

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

    /// A wait for a number of holders (Redis `WAIT`) ends when the count reaches it, not before,
    /// and a wait given up leaves the list at the next one.
    #[tokio::test(start_paused = true)]
    async fn a_wait_for_holders_ends_when_the_count_reaches_its_number() {
        let tally = Arc::new(Tally::new(0, 5));
        let wait = |wanted| {
            let tally = Arc::clone(&tally);
            tokio::spawn(async move { tally.held_by(wanted).await })
        };
        let (two, three) = (wait(2), wait(3));
        // A wait given up is dropped from the list at the next one.
        let given_up = wait(4);
        tokio::task::yield_now().await;
        given_up.abort();
        let _ = given_up.await;
        let four = wait(4);
        tokio::task::yield_now().await;
        assert_eq!(tally.state().watchers.len(), 3);

        tally.ack(0);
        tokio::task::yield_now().await;
        assert!(!two.is_finished() && !three.is_finished());
        tally.ack(1);
        tokio::task::yield_now().await;
        assert!(two.is_finished() && !three.is_finished());
        tally.ack(2);
        tokio::task::yield_now().await;
        assert!(three.is_finished() && !four.is_finished());
        assert_eq!(tally.state().watchers.len(), 1);
        // A number already reached ends at once.
        tally.held_by(3).await;
        // A follower given up ends every wait: its caller counts again, transfers included.
        tally.give_up(3);
        tokio::task::yield_now().await;
        assert!(four.is_finished());
    }

    /// The write's quorum wait and any number of watchers of its holders (the floor's wait) all
    /// wake: one ack is not one wake-up.
    #[tokio::test(start_paused = true)]
    async fn every_watcher_of_the_holders_wakes_beside_the_quorum_wait() {
        let tally = Arc::new(Tally::new(3, 5));
        let quorum = tokio::spawn({
            let tally = Arc::clone(&tally);
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                let acked = tally.wait(deadline, std::future::pending()).await;
                (acked, Instant::now() < deadline)
            }
        });
        let watchers: Vec<_> = (0..3)
            .map(|_| {
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    while tally.held() < 3 {
                        let held = tally.held();
                        tally.held_by_more_than(held).await;
                    }
                    tally.held()
                })
            })
            .collect();
        tokio::task::yield_now().await;
        for follower in [4, 0, 2] {
            tally.ack(follower);
            tokio::task::yield_now().await;
        }
        for watcher in watchers {
            let held = tokio::time::timeout(Duration::from_secs(1), watcher).await;
            assert_eq!(held.expect("woken").expect("joined"), 3);
        }
        assert_eq!(
            quorum.await.expect("joined"),
            (vec![4, 0, 2], true),
            "the quorum wait answered at its third ack, not at its deadline"
        );
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
        tally.give_up(1);
        tally.give_up(2);
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
