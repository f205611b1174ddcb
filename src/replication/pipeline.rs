//! One follower's pipeline: the writes whose simulated lag has passed queue up here, and the
//! pipeline sends everything then due in **one** batch (on the follower's replication stream),
//! bounded in writes and bytes. While a batch is on its way, the writes that become due wait for
//! its answer and then go together in the next one (group commit), unless it is slow: once the
//! oldest batch in flight has been out for [`SLOW_BATCH`], the next one leaves without waiting,
//! up to [`MAX_IN_FLIGHT`] at once, so that it is already at the follower when the slow one's
//! answer comes (the stream answers in order). At zero lag batches hold whatever the clients
//! wrote meanwhile; at the lab's 0..1000 ms lag they are mostly of one write.
//!
//! Why not always keep several batches in flight: on a 2-core machine every extra batch is a
//! message the follower reads, applies under its lock and answers, and one at a time with large
//! batches wrote about a fifth more per second than four at a time (docs/measured.md, measured
//! when each batch was an HTTP request of its own).
//!
//! A batch that fails is not lost: each of its writes draws a new lag and comes back after the
//! follower's backoff, until the follower acknowledges it or a state transfer is due, which then
//! carries it. Each write is counted on its quorum [`Tally`] once, when its follower's answer
//! arrives.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, WeakUnboundedSender};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tracing::debug;

use super::link::Verdict;
use super::quorum::Tally;
use super::shared::Shared;
use super::transport::{Failure, Result};
use super::wire::{Batch, BatchAck, Epoch, Write};
use crate::events::{Event, FollowerIndex, millis};
use crate::store::Version;

/// Most writes in one batch.
pub const MAX_BATCH_WRITES: usize = 1024;
/// Most bytes of keys and values in one batch (a batch holds at least one write, however large).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Most batches on their way to one follower at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// How long a batch may be on its way before the next one leaves without waiting for it.
pub const SLOW_BATCH: Duration = Duration::from_millis(5);

/// One write on its way to one follower.
#[derive(Debug)]
pub struct Message {
    /// The write, shared by the messages to every follower.
    pub write: Arc<Write>,
    /// The write's quorum wait.
    pub tally: Arc<Tally>,
    /// When the leader applied the write: lags and latencies count from here.
    pub applied_at: Instant,
    /// 1 for the first attempt, then 2, 3, ... for retries: raised by each failure, so a
    /// write past 1 counts as retrying on its link.
    pub attempt: u32,
    /// The follower it goes to.
    pub follower: FollowerIndex,
}

/// The sending end of one follower's pipeline.
#[derive(Debug)]
pub struct Pipeline {
    queue: UnboundedSender<Message>,
}

impl Pipeline {
    /// Starts the pipeline of follower `index`; it runs until the pipeline is dropped or its
    /// leader steps down.
    pub(crate) fn spawn(shared: Arc<Shared>, index: FollowerIndex) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(shared, index, receiver, queue.downgrade()));
        Self { queue }
    }

    /// Hands `message` to the pipeline once `due`: a spawned task sleeps on the lag clock until
    /// then (the simulated lag), and a message already due goes in at once.
    pub(crate) fn schedule(&self, shared: &Arc<Shared>, message: Message, due: Instant) {
        schedule(shared, self.queue.clone(), message, due);
    }
}

fn schedule(shared: &Arc<Shared>, queue: UnboundedSender<Message>, message: Message, due: Instant) {
    if due <= Instant::now() {
        hand_over(&queue, message);
    } else {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            shared.clock.sleep_until(due).await;
            hand_over(&queue, message);
        });
    }
}

/// Puts `message` in its pipeline's queue. When the pipeline has ended (the leader stepped down
/// or is shutting down), no ack can come for it: its write stops waiting for this follower.
fn hand_over(queue: &UnboundedSender<Message>, message: Message) {
    if let Err(unsent) = queue.send(message) {
        unsent.0.tally.give_up(unsent.0.follower);
    }
}

/// A batch that came back: its messages, the smallest quorum it carried (with its epoch), and
/// the follower's answer.
type Returned = (Vec<Message>, (Epoch, usize), Result<BatchAck>);

/// The pipeline's loop: takes what is due, sends batches, and handles their answers, until the
/// replicator is gone or its leader stepped down.
async fn run(
    shared: Arc<Shared>,
    index: FollowerIndex,
    mut queue: UnboundedReceiver<Message>,
    retries: WeakUnboundedSender<Message>,
) {
    let mut pipeline = Worker {
        shared,
        index,
        retries,
        ready: VecDeque::new(),
        in_flight: JoinSet::new(),
        sent_at: Vec::new(),
    };
    let shared = Arc::clone(&pipeline.shared);
    let mut deposed = std::pin::pin!(shared.deposed());
    loop {
        while let Ok(message) = queue.try_recv() {
            pipeline.ready.push_back(message);
        }
        pipeline.send_ready();
        let has_room = pipeline.in_flight.len() < MAX_IN_FLIGHT;
        // When writes wait behind the batches in flight: the moment the newest counts as slow.
        let slow_at = pipeline
            .sent_at
            .iter()
            .map(|&(_, at)| at + SLOW_BATCH)
            .max()
            .filter(|_| has_room && !pipeline.ready.is_empty());
        // Biased, as every `select!` of a node, so that a seed replays a simulated run exactly:
        // a deposed leader stops first, and a batch's answer counts before new writes go out.
        tokio::select! {
            biased;
            () = &mut deposed => {
                // A deposed leader's writes wait for no more acks.
                let ready: Vec<Message> = pipeline.ready.drain(..).collect();
                pipeline.give_up(ready, "a newer term has begun: this leader stepped down");
                return;
            }
            Some(returned) = pipeline.in_flight.join_next_with_id() => {
                let id = match &returned {
                    Ok((id, _)) => *id,
                    Err(err) => err.id(),
                };
                pipeline.sent_at.retain(|&(sent, _)| sent != id);
                match returned {
                    Ok((_, (messages, quorum, result))) => {
                        pipeline.on_returned(messages, quorum, result);
                    }
                    Err(err) => debug!(%err, "a batch task ended without an answer"),
                }
            },
            received = queue.recv(), if has_room => match received {
                Some(message) => pipeline.ready.push_back(message),
                // The replicator is gone.
                None => return,
            },
            () = sleep_until(slow_at) => {},
        }
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The state of one follower's pipeline loop.
struct Worker {
    shared: Arc<Shared>,
    index: FollowerIndex,
    /// Where retried messages come back in; weak, so that the pipeline ends with the replicator.
    retries: WeakUnboundedSender<Message>,
    /// Due messages not yet in a batch, oldest first.
    ready: VecDeque<Message>,
    in_flight: JoinSet<Returned>,
    /// When each batch in flight left.
    sent_at: Vec<(Id, Instant)>,
}

impl Worker {
    /// Sends batches of the ready messages while there is room in flight; drops them instead
    /// when a state transfer is due.
    fn send_ready(&mut self) {
        let link = &self.shared.links[self.index];
        if !self.ready.is_empty() && link.transfer_due() {
            let dropped: Vec<Message> = self.ready.drain(..).collect();
            self.give_up(dropped, "a state transfer is due; it will carry this write");
            return;
        }
        let now = Instant::now();
        while self.in_flight.len() < MAX_IN_FLIGHT
            && !self.ready.is_empty()
            && self.sent_at.iter().all(|&(_, at)| now >= at + SLOW_BATCH)
        {
            let messages = take_batch(&mut self.ready);
            let (quorum_epoch, smallest_quorum) = self.shared.announced();
            let batch = Batch {
                term: self.shared.term,
                leader: self.shared.incarnation,
                smallest_quorum,
                quorum_epoch,
                writes: messages.iter().map(|m| Arc::clone(&m.write)).collect(),
            };
            let quorum = (quorum_epoch, smallest_quorum);
            let cut_off = link.cut_off();
            let transport = Arc::clone(&self.shared.transport);
            let index = self.index;
            let task = self.in_flight.spawn(async move {
                let result = match cut_off {
                    Some(failure) => Err(failure),
                    None => transport.replicate(index, batch).await,
                };
                (messages, quorum, result)
            });
            self.sent_at.push((task.id(), now));
        }
    }

    /// Handles a batch that carried the smallest quorum `quorum`: counts each acknowledged
    /// write on its tally, and gives up or retries the rest.
    fn on_returned(
        &mut self,
        messages: Vec<Message>,
        (epoch, quorum): (Epoch, usize),
        result: Result<BatchAck>,
    ) {
        // Each ack must name its write: an answer meant for another batch counts nothing.
        let answer = result.and_then(|answer| {
            if answer.names(messages.iter().map(|message| message.write.version)) {
                Ok(answer)
            } else {
                Err(Failure::new(
                    "other",
                    format!(
                        "the answer's {} acks do not name the batch's {} writes in order",
                        answer.acks.len(),
                        messages.len()
                    ),
                ))
            }
        });
        match answer {
            Ok(answer) => {
                // A follower accepts a batch only as one of this term's followers: it heard
                // of the quorum the batch carried.
                self.shared.heard(self.index, epoch, quorum);
                self.on_acks(messages, answer);
            }
            Err(failure) => self.on_failure(messages, &failure),
        }
    }

    fn on_acks(&mut self, messages: Vec<Message>, answer: BatchAck) {
        let (shared, index) = (&self.shared, self.index);
        let link = &shared.links[index];
        let now = Instant::now();
        let (acked, refused): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .zip(answer.acks)
            .partition(|(_, ack)| ack.refused.is_none());
        // Before the tallies: a write is visible on an `after_sync` leader by the time its
        // handler can answer 200.
        shared.reveal(|hidden| {
            (acked.iter())
                .filter_map(|(message, _)| hidden.ack(index, message.write.version, shared.floor()))
                .collect()
        });
        let mut latencies = Vec::with_capacity(acked.len());
        let (mut retried, mut newest) = (0, Version::ZERO);
        for (message, ack) in acked {
            let latency = now - message.applied_at;
            message.tally.ack(index);
            shared.events.publish(|| Event::Ack {
                version: message.write.version,
                follower: index,
                applied: ack.applied,
                latency_ms: millis(latency),
            });
            latencies.push(latency);
            retried += usize::from(message.attempt > 1);
            newest = newest.max(message.write.version);
        }
        if !latencies.is_empty() {
            link.on_acks(&answer.node_id, newest, &latencies, retried);
        }
        for (message, ack) in refused {
            let reason = ack.refused.unwrap_or_default();
            // A refusal that a retry cannot change: the state transfer carries the write.
            link.request_transfer(&reason);
            self.give_up(vec![message], &format!("refused: {reason}"));
        }
    }

    fn on_failure(&mut self, mut messages: Vec<Message>, failure: &Failure) {
        let shared = &self.shared;
        let link = &shared.links[self.index];
        // The follower serves a newer term, or another leader of this one: this leader was
        // deposed. Its writes stop here.
        if shared.refused(failure) {
            self.give_up(messages, "a newer term has begun: this leader stepped down");
            return;
        }
        shared
            .metrics
            .replication_error(link.url.as_str(), failure.kind);
        let first_failures = messages.iter().filter(|m| m.attempt == 1).count();
        // Each write that failed is on its next attempt, retried or given up: `on_failure`
        // counts it as retrying from now on.
        for message in &mut messages {
            message.attempt += 1;
        }
        match link.on_failure(failure, first_failures) {
            Verdict::GiveUp => self.give_up(messages, &failure.reason),
            Verdict::RetryAfter(pause) => {
                debug!(follower = %link.url, writes = messages.len(), error = %failure, ?pause, "retrying");
                let Some(queue) = self.retries.upgrade() else {
                    return;
                };
                let settings = shared.settings();
                let retry_at = Instant::now() + pause;
                for message in messages {
                    self.publish_failure(&message, &failure.reason, false);
                    let lag = settings.draw_lag();
                    shared.events.publish(|| Event::Send {
                        version: message.write.version,
                        follower: self.index,
                        delay_ms: millis(lag),
                        attempt: message.attempt,
                    });
                    schedule(shared, queue.clone(), message, retry_at + lag);
                }
            }
        }
    }

    /// Drops `messages` in favour of a state transfer; those past their first attempt were
    /// counted as retrying.
    fn give_up(&self, messages: Vec<Message>, reason: &str) {
        let retried = messages.iter().filter(|m| m.attempt > 1).count();
        for message in &messages {
            self.publish_failure(message, reason, true);
            message.tally.give_up(message.follower);
        }
        self.shared.links[self.index].release(messages.len(), retried);
    }

    fn publish_failure(&self, message: &Message, reason: &str, gave_up: bool) {
        self.shared.events.publish(|| Event::Failure {
            version: message.write.version,
            follower: self.index,
            reason: reason.to_owned(),
            gave_up,
        });
    }
}

/// Takes the oldest ready messages that fit in one batch: at most [`MAX_BATCH_WRITES`] writes
/// and [`MAX_BATCH_BYTES`] bytes, and at least one write.
fn take_batch(ready: &mut VecDeque<Message>) -> Vec<Message> {
    let mut bytes = 0;
    let mut count = 0;
    for message in ready.iter().take(MAX_BATCH_WRITES) {
        bytes += message.write.wire_bytes();
        if count > 0 && bytes > MAX_BATCH_BYTES {
            break;
        }
        count += 1;
    }
    ready.drain(..count).collect()
}
