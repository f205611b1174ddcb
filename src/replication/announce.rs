//! The term's smallest write quorum as the leader announces it, and when a write's quorum
//! counts. Pure and synchronous: the leader's shared state holds one under a lock and tells it
//! what happened.
//!
//! A candidate counts with the smallest quorum that the followers it merges heard of (see
//! [`failover`](crate::failover)), so a write counts only at a quorum that any promotion counted
//! safe will know. The leader keeps three numbers:
//!
//! - the **announced** quorum, which every batch, heartbeat and state transfer carries: the
//!   smallest quorum any write of the term used since the last *raise*;
//! - the **floor**, the smallest quorum at which a write counts now: a write with a quorum below
//!   every earlier one waits until enough followers heard of it
//!   ([`super::quorum::established`]);
//! - the **epoch**, raised by a raise: once every write is held by at least `W` followers (the
//!   settings' write quorum, at most the one the term began with), the low quorums of older
//!   writes no longer matter, and the leader announces `W` again in a new epoch. A follower
//!   keeps the smallest quorum of the newest epoch it heard, so a message of an older epoch that
//!   arrives late cannot lower what it reports, and one that did not hear the raise yet reports
//!   less, which is only more careful.
//!
//! Without the raise, one `?quorum=1` write would make every later promotion of the term (and
//! every leader that inherits it) need all N followers.
//!
//! No write of a new term counts before enough followers hold the term's state (`N + 1 -
//! majority` of them, 2 of 5): a candidate must reach a majority of the nodes, which then
//! includes one of them (or this leader), and so learns of the term and its quorum. Before, a
//! candidate that reached only followers of the previous term would count with that term's
//! quorum, which the new leader's writes may be below.
//!
//! The announced quorum is never above a majority of the followers ([`ceiling`]): a promotion
//! must reach a majority of all nodes anyway, so a larger announcement would spare a candidate
//! little, and would make every lower quorum need that many followers to hear of it (with
//! `WRITE_QUORUM=5` announced, a `?quorum=3` write with one follower down could never count).

use super::quorum::{established, majority};
use super::wire::Epoch;
use crate::events::FollowerIndex;

/// The leader's announcement of its term's smallest quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    epoch: Epoch,
    announced: usize,
    floor: usize,
    /// Per follower: the smallest quorum of this epoch it confirmed hearing.
    heard: Vec<Option<usize>>,
    /// Per follower: whether it confirmed holding this term's state (it accepted a message of
    /// the term as one of its followers).
    synced: Vec<bool>,
}

impl Announcement {
    /// The announcement of a term that starts with `smallest` (at most the [`ceiling`]), which
    /// every follower hears first (its state transfer carries it), for `followers` followers.
    pub fn new(followers: usize, smallest: usize) -> Self {
        let smallest = smallest.min(ceiling(followers));
        Self {
            epoch: 0,
            announced: smallest,
            floor: smallest,
            heard: vec![None; followers],
            synced: vec![false; followers],
        }
    }

    /// What messages carry: the epoch and the announced quorum.
    pub fn announced(&self) -> (Epoch, usize) {
        (self.epoch, self.announced)
    }

    /// The smallest quorum at which a write counts now: above every quorum (`N + 1`) until
    /// enough followers hold the term's state ([`Announcement::synced`]).
    pub fn floor(&self) -> usize {
        match self.synced() {
            (synced, needed) if synced < needed => self.heard.len() + 1,
            _ => self.floor,
        }
    }

    /// Followers known to hold this term's state, and how many must before a write counts:
    /// `N + 1 - majority`, so that every majority of the nodes includes one of them or the
    /// leader.
    pub fn synced(&self) -> (usize, usize) {
        let followers = self.synced.len();
        let synced = self.synced.iter().filter(|&&synced| synced).count();
        (synced, followers + 1 - majority(followers))
    }

    /// Followers known to hold this term's state, and how many must before that state counts
    /// as a write of the term does: as many as the floor, and never fewer than
    /// [`Announcement::synced`] asks, so that every majority of the nodes includes one of them
    /// or this leader, whatever the floor (a floor lowered to 0 by asynchronous writes
    /// included: a candidate that reaches none of them counts with the older term's quorum).
    pub fn holds_term_state(&self) -> (usize, usize) {
        let (synced, needed) = self.synced();
        (synced, needed.max(self.floor))
    }

    /// A write of `quorum` was made: announces it if it is the smallest yet; returns whether it
    /// was (the followers should hear of it at once).
    pub fn lower(&mut self, quorum: usize) -> bool {
        let lower = quorum < self.announced;
        self.announced = self.announced.min(quorum);
        lower
    }

    /// `follower` accepted a message that carried `quorum` in `epoch`; returns the new floor when
    /// that lowered it. A confirmation of an older epoch says nothing of this one.
    pub fn heard(&mut self, follower: FollowerIndex, epoch: Epoch, quorum: usize) -> Option<usize> {
        let before = self.floor();
        // Any such message is of this term, accepted as one of its followers.
        *self.synced.get_mut(follower)? = true;
        let known = &mut self.heard[follower];
        if epoch == self.epoch && known.is_none_or(|known| quorum < known) {
            *known = Some(quorum);
            self.floor = established(self.floor, self.heard.iter().flatten().copied());
        }
        let after = self.floor();
        (after < before).then_some(after)
    }

    /// Followers known to have heard of `quorum` or a lower one in this epoch.
    pub fn heard_at_most(&self, quorum: usize) -> usize {
        let heard = self.heard.iter().flatten();
        heard.filter(|&&heard| heard <= quorum).count()
    }

    /// Announces `quorum` again in a new epoch, when it is above what is announced: the caller
    /// knows that every write is held by at least `quorum` followers. Returns whether it did.
    pub fn raise(&mut self, quorum: usize) -> bool {
        let quorum = quorum.min(ceiling(self.heard.len()));
        if quorum <= self.announced {
            return false;
        }
        self.epoch += 1;
        self.announced = quorum;
        // Never below the floor so far: an asynchronous write lowers what is announced to 0
        // without lowering the floor, and a raise from there to a live quorum of 1 would
        // otherwise let a write of 1 count that most followers never heard of.
        self.floor = self.floor.max(quorum);
        self.heard.iter_mut().for_each(|heard| *heard = None);
        true
    }
}

/// The largest quorum a leader of `followers` followers announces: a majority of them.
pub fn ceiling(followers: usize) -> usize {
    followers / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_quorum_is_at_most_a_majority_of_the_followers() {
        assert_eq!(
            (1..=6).map(ceiling).collect::<Vec<_>>(),
            vec![1, 2, 2, 3, 3, 4]
        );
        let mut announcement = Announcement::new(5, 5);
        assert_eq!(announcement.announced(), (0, 3));
        announcement.lower(1);
        assert!(announcement.raise(5));
        assert_eq!(announcement.announced(), (1, 3));
    }

    /// Found by the simulator (seed 67920): a leader on the minority side of a partition made
    /// an asynchronous write, the live quorum was set to 1, and the raise to 1 made its floor 1:
    /// its `?quorum=1` writes then counted, and a safe promotion on the majority side lost them.
    #[test]
    fn a_raise_never_lowers_the_floor() {
        let mut announcement = Announcement::new(5, 3);
        assert!(announcement.lower(0), "an asynchronous write");
        assert_eq!(
            announcement.floor(),
            6,
            "no follower holds the term's state yet"
        );
        for follower in [3, 4] {
            announcement.heard(follower, 0, 0);
        }
        assert_eq!(
            announcement.floor(),
            3,
            "two of five heard of 0: not enough"
        );
        assert!(announcement.raise(1));
        assert_eq!(announcement.announced(), (1, 1));
        assert_eq!(
            announcement.floor(),
            3,
            "the floor stays until three hear of 1"
        );
        for follower in [0, 1, 2] {
            announcement.heard(follower, 1, 1);
        }
        assert_eq!(announcement.floor(), 1);
    }

    #[test]
    fn a_lowered_quorum_counts_once_as_many_followers_as_the_floor_heard_of_it() {
        let mut announcement = Announcement::new(5, 3);
        assert!(announcement.lower(2));
        assert!(!announcement.lower(3), "not the smallest");
        assert_eq!(announcement.announced(), (0, 2));
        assert_eq!(announcement.heard(3, 0, 2), None);
        assert_eq!(
            announcement.heard(4, 0, 2),
            Some(3),
            "two hold the term's state"
        );
        assert_eq!(
            (announcement.floor(), announcement.heard_at_most(2)),
            (3, 2)
        );
        assert_eq!(announcement.heard(0, 0, 2), Some(2), "three heard of it");
        assert_eq!(announcement.heard(1, 0, 2), None, "no lower");
    }

    /// A new leader's state counts, as a write of its term does, once as many followers as the
    /// floor hold it, and never fewer than two of five, a floor of 0 included.
    #[test]
    fn the_term_state_counts_once_as_many_followers_as_the_floor_hold_it() {
        let mut announcement = Announcement::new(5, 3);
        assert_eq!(announcement.holds_term_state(), (0, 3));
        announcement.heard(0, 0, 3);
        announcement.heard(1, 0, 3);
        assert_eq!(announcement.holds_term_state(), (2, 3), "the floor is 3");
        announcement.heard(2, 0, 3);
        assert_eq!(announcement.holds_term_state(), (3, 3));
        let low = Announcement::new(5, 1);
        assert_eq!(low.holds_term_state(), (0, 2), "two of five at least");
        let mut asynchronous = Announcement::new(5, 1);
        asynchronous.lower(0);
        asynchronous.heard(0, 0, 0);
        assert_eq!(
            asynchronous.holds_term_state(),
            (1, 2),
            "one follower heard of quorum 0: still two must hold the state"
        );
        assert_eq!(Announcement::new(5, 0).holds_term_state(), (0, 2));
    }

    /// A candidate that reaches only followers of the previous term would count with that
    /// term's quorum: no write of this term counts before two of the five followers hold its
    /// state, so that every majority of the six nodes includes one of them or this leader.
    #[test]
    fn no_write_counts_before_enough_followers_hold_the_terms_state() {
        let mut announcement = Announcement::new(5, 1);
        assert_eq!(announcement.synced(), (0, 2));
        assert_eq!(announcement.floor(), 6, "above every quorum");
        assert_eq!(announcement.heard(1, 0, 1), None);
        assert_eq!(announcement.heard(1, 0, 1), None, "one follower, twice");
        assert_eq!(announcement.heard(2, 0, 1), Some(1));
        assert_eq!(
            Announcement::new(1, 1).floor(),
            1,
            "a leader and one follower: none needed"
        );
    }

    #[test]
    fn a_raise_starts_an_epoch_whose_floor_is_the_raised_quorum() {
        let mut announcement = Announcement::new(5, 3);
        announcement.lower(1);
        for follower in 0..3 {
            announcement.heard(follower, 0, 1);
        }
        assert_eq!(announcement.floor(), 1);
        assert!(!announcement.raise(1), "nothing to raise");
        assert!(announcement.raise(3));
        assert_eq!(announcement.announced(), (1, 3));
        assert_eq!(
            (announcement.floor(), announcement.heard_at_most(1)),
            (3, 0)
        );
        assert_eq!(
            announcement.heard(4, 0, 1),
            None,
            "a late confirmation of epoch 0"
        );
        assert_eq!(announcement.heard_at_most(1), 0);
        announcement.lower(2);
        for follower in 0..3 {
            announcement.heard(follower, 1, 2);
        }
        assert_eq!(announcement.floor(), 2);
    }
}
