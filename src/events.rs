//! The leader's live feed of replication events: every write, every message it sends with the
//! simulated lag drawn for it, every ack and failure, and every answer. The dashboard
//! (`GET /events`) animates them; nothing else depends on them.
//!
//! Events go out on a bounded broadcast channel. Publishing never waits: a subscriber that falls
//! more than [`CAPACITY`] events behind loses the oldest ones and is told how many, and the
//! dashboard then starts again from a fresh snapshot. With nobody subscribed an event is not even
//! built, so the feed costs nothing when no dashboard is open: one atomic load per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::settings::WaitPoint;
use crate::store::Version;

/// Events a subscriber may fall behind by before it loses some.
pub const CAPACITY: usize = 4096;

/// Longest key or value text an event carries; longer ones are cut, with an ellipsis.
const MAX_TEXT_CHARS: usize = 40;

/// A follower, by its position in the leader's `FOLLOWERS` list (and in `GET /cluster`).
pub type FollowerIndex = usize;

/// Something that happened in replication.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The leader applied a write and starts replicating it.
    Write {
        /// The write's version.
        version: Version,
        /// The key (cut to 40 characters).
        key: String,
        /// The value (cut to 40 characters); `null` for a delete.
        value: Option<String>,
        /// Acks the write waits for.
        quorum: usize,
        /// How long it waits for them, in milliseconds.
        timeout_ms: u64,
        /// When the leader's readers see it: at once (`after_commit`), or once its quorum
        /// acknowledged it (`after_sync`, announced by a `visible` event).
        wait_point: WaitPoint,
    },
    /// A message leaves for a follower; it arrives after `delay_ms`, its simulated lag.
    Send {
        /// The write's version.
        version: Version,
        /// The follower it goes to.
        follower: FollowerIndex,
        /// The simulated lag drawn for this message, in milliseconds, with a fraction: lags
        /// are drawn with sub-millisecond resolution. It counts from the write's application
        /// on the leader (first attempt) or from the end of the retry's backoff.
        delay_ms: f64,
        /// 1 for the first attempt, then 2, 3, ... for retries.
        attempt: u32,
    },
    /// A follower acknowledged the write.
    Ack {
        /// The write's version.
        version: Version,
        /// The follower that acknowledged.
        follower: FollowerIndex,
        /// Whether it applied the write (false: it held this or a newer version already).
        applied: bool,
        /// Time from the write to this ack, in milliseconds.
        latency_ms: f64,
    },
    /// Under the wait point `after_sync`: the write's quorum acknowledged it (before or after
    /// the client's answer), so the leader's readers now see it.
    Visible {
        /// The write's version.
        version: Version,
        /// The key (cut to 40 characters).
        key: String,
        /// The acks it had then.
        acks: usize,
    },
    /// A message could not be delivered.
    Failure {
        /// The write's version.
        version: Version,
        /// The follower it was for.
        follower: FollowerIndex,
        /// What went wrong.
        reason: String,
        /// True when the leader stopped retrying: a state transfer will carry the write.
        gave_up: bool,
    },
    /// The leader answered the client: 200 when the quorum was reached, 503 when the deadline
    /// passed first.
    Outcome {
        /// The write's version.
        version: Version,
        /// The HTTP status of the answer.
        status: u16,
        /// Acks the write waited for.
        quorum: usize,
        /// The followers whose acks were counted, in arrival order. Acks from the others come
        /// later: replication goes on after the answer.
        acked_by: Vec<FollowerIndex>,
        /// Time from the write to the answer, in milliseconds.
        latency_ms: f64,
    },
}

/// An [`Event`] and when it happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stamped {
    /// Milliseconds since the leader started.
    pub at_ms: f64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The publishing end of the feed.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Stamped>,
    epoch: Instant,
    /// Open subscriptions. Counted here because the channel's own count sits behind a lock
    /// that every write would take.
    watchers: Arc<AtomicUsize>,
}

/// One subscriber's end of the feed; it stops counting as a watcher when dropped.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Stamped>,
    watchers: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next event; an error says how many the subscriber missed, or that the feed ended.
    pub async fn recv(&mut self) -> Result<Stamped, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Stamped, broadcast::error::TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A feed with no subscriber yet; its clock starts now.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            epoch: Instant::now(),
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes the event `build` makes, if anybody is listening.
    pub fn publish(&self, build: impl FnOnce() -> Event) {
        if self.watchers.load(Ordering::Relaxed) > 0 {
            let at_ms = self.now_ms();
            // An error means the last subscriber left meanwhile: nobody to tell.
            let _ = self.sender.send(Stamped {
                at_ms,
                event: build(),
            });
        }
    }

    /// A new subscriber, which receives the events published from now on.
    pub fn subscribe(&self) -> Subscription {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver: self.sender.subscribe(),
            watchers: Arc::clone(&self.watchers),
        }
    }

    /// The feed's clock: milliseconds since the leader started.
    pub fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }
}

/// A duration in milliseconds with a fraction, as events carry it (exact for whole
/// milliseconds).
pub fn millis(duration: std::time::Duration) -> f64 {
    duration.as_nanos() as f64 / 1e6
}

/// `text` cut to 40 characters, with an ellipsis when it was longer.
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_subscribers_in_order_and_cost_nothing_without_them() {
        let events = Events::new();
        events.publish(|| unreachable!("nobody listens, so the event is not built"));
        let mut receiver = events.subscribe();
        for follower in 0..3 {
            events.publish(|| Event::Send {
                version: Version::new(1, 1),
                follower,
                delay_ms: 10.25,
                attempt: 1,
            });
        }
        for follower in 0..3 {
            let stamped = receiver.try_recv().expect("published");
            assert!(matches!(stamped.event, Event::Send { follower: f, .. } if f == follower));
        }
        let json = serde_json::to_value(Stamped {
            at_ms: 1.5,
            event: Event::Ack {
                version: Version::new(1, 7),
                follower: 2,
                applied: true,
                latency_ms: 3.0,
            },
        })
        .expect("serializable");
        assert_eq!(json["type"], "ack");
        assert_eq!(json["version"], "1.7");
        assert_eq!(json["at_ms"], 1.5);
        assert_eq!(json["follower"], 2);
        drop(receiver);
        events.publish(|| unreachable!("the last subscriber left"));
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
        let events = Events::new();
        let mut receiver = events.subscribe();
        for counter in 0..(CAPACITY as u64 + 10) {
            events.publish(|| Event::Failure {
                version: Version::new(1, counter),
                follower: 0,
                reason: "test".into(),
                gave_up: false,
            });
        }
        assert_eq!(
            receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        );
    }

    #[test]
    fn long_texts_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(50);
        let cut = shorten(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
