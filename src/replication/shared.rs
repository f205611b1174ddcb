//! What a leader's fan-out, its pipelines and recovery share: its term and identity, the
//! replica, the links to the followers, the live settings, and the announced quorum and floor.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use super::announce::Announcement;
use super::hidden::{Hidden, Revealed};
use super::lag::LagClock;
use super::link::Link;
use super::quorum::{Tally, Unannounced};
use super::replica::{Replica, SharedReplica, lock};
use super::transport::{Failure, Transport};
use super::wire::{Epoch, Incarnation, Term};
use crate::events::{Event, Events, FollowerIndex, shorten};
use crate::metrics::Metrics;
use crate::settings::{Settings, WaitPoint};
use crate::signal::Signal;

/// What the fan-out, the pipelines and recovery share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) term: Term,
    /// This leader's incarnation, which its messages carry: its followers take no other node's
    /// messages of its term.
    pub(crate) incarnation: Incarnation,
    pub(crate) replica: SharedReplica,
    pub(crate) links: Vec<Link>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(super) settings: RwLock<Settings>,
    pub(super) backlog: usize,
    pub(super) metrics: Arc<Metrics>,
    pub(crate) events: Events,
    pub(super) clock: Arc<LagClock>,
    /// The leader's `PUBLIC_URL`, sent with its state transfers and heartbeats.
    pub(crate) public_url: Option<String>,
    /// The leader's `RESP_PUBLIC_ADDR`, sent with its heartbeats.
    pub(crate) resp_public_addr: Option<String>,
    /// The term's smallest quorum as announced to the followers, and the floor at which a write
    /// counts. Locked after the replica lock, when both are taken.
    pub(super) announcement: Mutex<Announcement>,
    /// The floor, published for the writes that wait for it to reach their quorum.
    pub(super) floor: Signal<usize>,
    /// The write quorum of the settings the term began with: a raise announces no more than
    /// this (nor than the live settings' quorum), so that raising the live quorum does not make
    /// every lower per-request quorum need all followers to hear of it.
    pub(super) raise_to: usize,
    /// Writes applied whose messages are not yet admitted to every follower's link: while
    /// there are any, the links do not show everything the leader holds (see `try_raise`).
    pub(super) applying: AtomicUsize,
    /// Turns true once this leader stepped down: its tasks end.
    pub(super) deposed: Signal<bool>,
    /// Woken when a hidden write becomes visible: reads waiting for a `min_version`, and for
    /// the state this leader inherited.
    pub(super) wake_reads: Arc<Notify>,
    /// Whether readers under `after_sync` may see the state this leader inherited; true from
    /// the start when it inherited nothing, and true for good once it is.
    pub(super) inherited_shown: AtomicBool,
    /// Woken each time a follower acknowledges a state transfer: the `WAIT`s counting the
    /// followers that hold a write.
    pub(crate) transfers: Notify,
}

impl Shared {
    pub(crate) fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn announcement(&self) -> MutexGuard<'_, Announcement> {
        // Every step under the lock leaves the announcement consistent.
        self.announcement
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The smallest write quorum of this term as announced, and its epoch: what every batch,
    /// heartbeat and state transfer carries.
    pub(crate) fn announced(&self) -> (Epoch, usize) {
        self.announcement().announced()
    }

    /// The smallest write quorum of this term as announced.
    pub(crate) fn smallest_quorum(&self) -> usize {
        self.announced().1
    }

    /// The smallest quorum at which a write of this term counts now.
    pub(crate) fn floor(&self) -> usize {
        self.announcement().floor()
    }

    /// How many of this term's followers hold the state this leader inherited, and how many
    /// must before its readers under `after_sync` see it; `None` once they may (and from then
    /// on). A leader's inherited state is what it held and merged when its term began: writes of
    /// older terms, some of which no quorum acknowledged. Shown at once, a reader could see one
    /// that only this node holds, which the next safe promotion, merging followers of the older
    /// term, does not have: a phantom read. Every follower that accepted a message of this term
    /// took its state transfer first, so it holds that state; once as many of them as the floor
    /// do, the state counts as a write of this term would ([`Announcement::holds_term_state`]).
    pub(crate) fn inherited_unshown(&self) -> Option<(usize, usize)> {
        if self.inherited_shown.load(Ordering::SeqCst) {
            return None;
        }
        let (held, needed) = self.announcement().holds_term_state();
        if held < needed {
            return Some((held, needed));
        }
        // Whoever shows it first wakes the reads waiting for it.
        if !self.inherited_shown.swap(true, Ordering::SeqCst) {
            self.wake_reads.notify_waiters();
        }
        None
    }

    /// Records that `follower` accepted a message that carried `quorum` in `epoch`; when that
    /// lowers the floor, shows the hidden writes that now count and wakes the writes waiting;
    /// when it makes the inherited state readable, wakes the reads waiting for it.
    pub(crate) fn heard(&self, follower: FollowerIndex, epoch: Epoch, quorum: usize) {
        let lowered = {
            let mut announcement = self.announcement();
            let lowered = announcement.heard(follower, epoch, quorum);
            // Published under the lock, so that the signal never shows an older floor.
            if let Some(floor) = lowered {
                self.floor.replace(floor);
            }
            lowered.is_some()
        };
        if lowered {
            // The floor read again under the replica lock: a raise may have come in between.
            self.reveal(|hidden| hidden.lower_floor(self.floor()));
        }
        if !self.inherited_shown.load(Ordering::SeqCst) {
            self.inherited_unshown();
        }
    }

    /// Waits until a write of `quorum` counts, `deadline` passes or this leader steps down;
    /// says why when the write does not count. It counts once the floor is at or below its
    /// quorum, or once as many followers as the floor hold it (`tally`, late acks included):
    /// every promotion counted safe merges `N - floor + 1` followers, so one of them, as for
    /// a write of quorum `floor`. Without the second way, a `?quorum=1` write acknowledged by
    /// every follower could still time out, when a raise announced a higher quorum again
    /// before enough followers heard of 1 (the raise is due once every write is held widely).
    pub(super) async fn wait_for_floor(
        &self,
        quorum: usize,
        tally: &Tally,
        deadline: Instant,
    ) -> Option<Unannounced> {
        let counted = async {
            loop {
                let held = tally.held();
                tokio::select! {
                    biased;
                    _ = self.floor.wait_for(|floor| floor <= quorum.max(held)) => return,
                    () = tally.held_by_more_than(held) => {}
                }
            }
        };
        tokio::select! {
            biased;
            _ = tokio::time::timeout_at(deadline, counted) => {}
            () = self.deposed() => {}
        }
        let announcement = self.announcement();
        let floor = announcement.floor();
        let heard = announcement.heard_at_most(quorum);
        let (synced, needed) = announcement.synced();
        (floor > quorum.max(tally.held())).then_some(Unannounced {
            floor,
            heard,
            unsynced: (synced < needed).then_some((synced, needed)),
        })
    }

    /// Counts `quorum` as used by a write of this term. When it is the smallest yet, every
    /// follower's heartbeat goes at once, rather than within 500 ms: a follower that the
    /// write's batch does not reach (yet) learns it too, and the floor can reach it.
    pub(super) fn use_quorum(&self, quorum: usize) {
        if self.announcement().lower(quorum) {
            self.wake_heartbeats();
        }
    }

    /// Announces the write quorum `W` of the live settings (at most the one the term began with)
    /// again, in a new epoch, once at least `W` followers hold every write the leader applied: a
    /// promotion that merges `N - W + 1` followers then meets each write, whatever quorum it was
    /// made with. Takes the replica lock, under which writes are applied, so that no write slips
    /// between the check and the raise.
    pub(crate) fn try_raise(&self) {
        let target = (self.settings().write_quorum)
            .min(self.raise_to)
            .min(super::announce::ceiling(self.links.len()));
        if target == 0 || self.smallest_quorum() >= target {
            return;
        }
        let replica = lock(&self.replica);
        if self.applying.load(Ordering::SeqCst) > 0 {
            return;
        }
        let holding = self.links.iter().filter(|link| link.holds_everything());
        if holding.count() < target {
            return;
        }
        let mut announcement = self.announcement();
        if !announcement.raise(target) {
            return;
        }
        self.floor.replace(announcement.floor());
        drop(announcement);
        drop(replica);
        self.wake_heartbeats();
    }

    /// Sends every follower's heartbeat now.
    pub(super) fn wake_heartbeats(&self) {
        for link in &self.links {
            link.wake.notify_one();
        }
    }

    /// Steps down on learning of `term`, newer than this leader's, led from `leader_url`: the
    /// node adopts the term and follows, and this leader's tasks end. Its writes that no
    /// follower acknowledged go when the new leader's state transfer replaces its state.
    /// Returns whether it stepped down: a refusal naming this leader's own term (another leader
    /// of the same term) changes nothing.
    pub(crate) fn depose(&self, term: Term, leader_url: Option<&str>) -> bool {
        if term <= self.term {
            return false;
        }
        let mut replica = lock(&self.replica);
        self.step_down(&mut replica);
        let _ = replica.check_term(term, leader_url);
        true
    }

    /// What a leader does with a refusal of its message: steps down when the follower serves a
    /// newer term (adopting it), or when another node took this leader's own term there
    /// (`term_taken`: two leaders of one term, after a forced promotion; both step down, and a
    /// promotion with a newer term settles it). Returns whether it stepped down.
    pub(crate) fn refused(&self, failure: &Failure) -> bool {
        if let Some((term, leader)) = &failure.newer_term {
            if self.depose(*term, leader.as_deref()) {
                return true;
            }
        }
        if !failure.term_taken() {
            return false;
        }
        warn!(
            term = self.term,
            "another node leads this term: stepping down"
        );
        self.step_down(&mut lock(&self.replica));
        true
    }

    /// Steps this leader down: records in `replica` what a candidate must learn from it (it
    /// holds its own term's state, whose smallest quorum only it knows for sure), and ends its
    /// pipelines and heartbeats.
    pub(crate) fn step_down(&self, replica: &mut Replica) {
        // Once only: a refusal that comes back after the node followed a newer term's leader
        // must not put back what this leader recorded over what that leader's transfer set.
        if self.is_deposed() {
            return;
        }
        replica.following = Some(self.term);
        let (epoch, quorum) = self.announced();
        replica.quorum_epoch = epoch;
        replica.smallest_quorum = Some(quorum);
        // Its live settings, as its followers heard them: what it leads with if promoted again.
        replica.leader_settings = Some(self.settings());
        // It led until now: its silence, for automatic failover, counts from here, which gives
        // the newer term's leader `FAILOVER_AFTER_MS` to reach it.
        replica.heard_leader_at = Some(tokio::time::Instant::now());
        self.stop();
    }

    /// Counts acks on the hidden writes under `after_sync`: `count` does so under the replica
    /// lock, and the writes that became visible are announced. Under `after_commit` nothing is
    /// hidden, and the lock is not taken.
    pub(crate) fn reveal(&self, count: impl FnOnce(&mut Hidden) -> Vec<Revealed>) {
        if self.settings().wait_point != WaitPoint::AfterSync {
            return;
        }
        let revealed = count(&mut lock(&self.replica).hidden);
        self.announce(revealed);
    }

    /// Wakes the reads waiting for a `min_version`, and publishes a `visible` event for each
    /// write that became visible.
    pub(super) fn announce(&self, revealed: Vec<Revealed>) {
        if revealed.is_empty() {
            return;
        }
        self.wake_reads.notify_waiters();
        for Revealed { key, version, acks } in revealed {
            self.events.publish(|| Event::Visible {
                version,
                key: shorten(&key),
                acks,
            });
        }
    }

    /// Ends this leader's tasks.
    pub(crate) fn stop(&self) {
        if !self.deposed.replace(true) {
            warn!(term = self.term, "stepped down: a newer term has begun");
        }
    }

    /// Whether this leader stepped down.
    pub(crate) fn is_deposed(&self) -> bool {
        self.deposed.get()
    }

    /// Resolves once this leader stepped down.
    pub(crate) async fn deposed(&self) {
        self.deposed.wait_for(|deposed| deposed).await;
    }
}
