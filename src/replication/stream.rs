//! The leader's end of a replication stream: one long-lived connection to a follower, on which
//! batches go out in the [binary form](super::wire::binary) without waiting for each other's
//! answers, and the follower answers them in order. [`HttpTransport`](super::HttpTransport) opens
//! one per follower (`POST /internal/stream`, upgraded) and sends every batch on it; a stream
//! that breaks fails the batches it carried, which the pipeline retries as any failed batch, on a
//! new stream.
//!
//! One task per stream owns the connection: it writes the batches handed to it, all those
//! waiting in one write, and hands each answer frame to the oldest batch still waiting; it
//! reads answers while it writes. It ends when the connection breaks or closes, or when the
//! [`Stream`] is dropped or aborted.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::transport::{Failure, Result, refusal};
use super::wire::binary::{self, Answer, Frames};
use super::wire::{Batch, BatchAck};
use crate::store::Version;

/// How long a stream may go unused before the leader opens a new one instead: well below how
/// long a follower keeps a silent stream open (`api::stream`'s idle limit), so that this side
/// lets go first, and a batch never goes out on a stream the follower is closing.
pub const IDLE: Duration = Duration::from_secs(20);
/// Most bytes of one answer: one ack per write of a batch, and a batch holds at most
/// [`MAX_BATCH_WRITES`](super::pipeline::MAX_BATCH_WRITES) writes.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Where a batch's answer goes.
type Reply = oneshot::Sender<Result<BatchAck>>;

/// The sending end of one stream.
#[derive(Debug)]
pub struct Stream {
    requests: mpsc::UnboundedSender<(Batch, Reply)>,
    task: AbortHandle,
    /// When a batch last went out on it.
    used: std::sync::Mutex<Instant>,
}

impl Stream {
    /// Starts the task of a stream on `io`, a connection already upgraded.
    pub fn start<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(io, receiver)).abort_handle();
        Self {
            requests,
            task,
            used: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Whether a batch may still go out on it: its connection has not ended, and it has not been
    /// unused for [`IDLE`].
    pub fn usable(&self) -> bool {
        let used = *self.used.lock().unwrap_or_else(|e| e.into_inner());
        !self.requests.is_closed() && used.elapsed() < IDLE
    }

    /// Sends `batch` and waits for the follower's answer.
    pub async fn send(&self, batch: Batch) -> Result<BatchAck> {
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let (reply, answer) = oneshot::channel();
        self.requests.send((batch, reply)).map_err(|_| ended())?;
        answer.await.map_err(|_| ended())?
    }

    /// Ends the stream now: the batches still waiting on it fail.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a batch gets when its stream ended before its answer came.
fn ended() -> Failure {
    other("the replication stream ended before the answer came")
}

/// What the batches on a stream get when reading or writing it failed.
fn broke(err: &std::io::Error) -> Failure {
    other(&format!("the replication stream broke: {err}"))
}

fn other(reason: &str) -> Failure {
    Failure::new("other", reason)
}

/// The stream's task: writes the batches, matches the answers to them in order.
async fn run<IO: AsyncRead + AsyncWrite>(
    io: IO,
    mut requests: mpsc::UnboundedReceiver<(Batch, Reply)>,
) {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut frames = Frames::new(MAX_ANSWER_BYTES);
    // Each batch waiting for its answer, with the versions of its writes.
    let mut waiting: VecDeque<(Reply, Vec<Version>)> = VecDeque::new();
    // The bytes of the batches not yet written. They go out a write at a time inside the loop,
    // so that answers are read while a large batch is being written, and neither side can
    // block the other with a full socket buffer.
    let mut out = Vec::new();
    let mut sent = 0;
    let failure = loop {
        tokio::select! {
            biased;
            frame = frames.next(&mut reader) => match frame {
                Ok(Some(payload)) => {
                    let Some((reply, versions)) = waiting.pop_front() else {
                        break Some(other("the follower answered a batch it was not sent"));
                    };
                    let answer = answer(&payload);
                    // Acks that name other writes: the answers are out of step with the
                    // batches, and every later one would be too.
                    if let Ok(ack) = &answer
                        && !ack.names(versions)
                    {
                        waiting.push_front((reply, Vec::new()));
                        break Some(other("the follower's answers are out of step with the batches"));
                    }
                    let _ = reply.send(answer);
                }
                Ok(None) => break Some(other("the follower closed the replication stream")),
                Err(err) => break Some(broke(&err)),
            },
            request = requests.recv() => {
                // `None`: the `Stream` was dropped, and nobody waits for an answer any more.
                let Some((batch, reply)) = request else { break None };
                binary::encode_batch(&batch, &mut out);
                waiting.push_back((reply, versions(&batch)));
                while let Ok((batch, reply)) = requests.try_recv() {
                    binary::encode_batch(&batch, &mut out);
                    waiting.push_back((reply, versions(&batch)));
                }
            }
            written = writer.write(&out[sent..]), if sent < out.len() => match written {
                Ok(0) => break Some(other("the follower stopped reading the replication stream")),
                Ok(written) => {
                    sent += written;
                    if sent == out.len() {
                        out.clear();
                        sent = 0;
                    }
                }
                Err(err) => break Some(broke(&err)),
            },
        }
    };
    // Close the channel first, so that no batch joins a stream that has ended.
    requests.close();
    let failure = failure.unwrap_or_else(ended);
    for reply in (waiting.into_iter().map(|(reply, _)| reply))
        .chain(std::iter::from_fn(|| requests.try_recv().ok()).map(|(_, reply)| reply))
    {
        let _ = reply.send(Err(failure.clone()));
    }
}

/// The versions of a batch's writes, in order: what its answer's acks must name.
fn versions(batch: &Batch) -> Vec<Version> {
    batch.writes.iter().map(|write| write.version).collect()
}

/// The batch's result that an answer frame carries.
fn answer(payload: &[u8]) -> Result<BatchAck> {
    match binary::decode_answer(payload) {
        Ok(Answer::Acked(ack)) => Ok(ack),
        Ok(Answer::Refused { status, body }) => {
            let status = reqwest::StatusCode::from_u16(status)
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
            Err(refusal(status, &body))
        }
        Err(malformed) => Err(Failure::new(
            "other",
            format!("unreadable answer: {malformed}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::replication::wire::{EntryAck, Write};
    use crate::store::Version;

    fn batch(counter: u64) -> Batch {
        Batch {
            term: 1,
            smallest_quorum: 1,
            quorum_epoch: 0,
            leader: 7,
            writes: vec![Arc::new(Write {
                key: "k".to_owned(),
                value: Some(counter.to_string()),
                version: Version::new(1, counter),
            })],
        }
    }

    fn acked(counter: u64) -> Answer {
        Answer::Acked(BatchAck {
            node_id: "f".to_owned(),
            acks: vec![EntryAck {
                version: Version::new(1, counter),
                applied: true,
                refused: None,
            }],
        })
    }

    /// A stream to a follower at the other end of a pipe, and the sends of the batches
    /// `1..=count` on it, each in a task of its own.
    fn sending(count: u64) -> (Arc<Stream>, DuplexStream, Vec<JoinHandle<Result<BatchAck>>>) {
        let (leader, follower) = tokio::io::duplex(1 << 16);
        let stream = Arc::new(Stream::start(leader));
        let sends = (1..=count)
            .map(|counter| {
                let stream = Arc::clone(&stream);
                tokio::spawn(async move { stream.send(batch(counter)).await })
            })
            .collect();
        (stream, follower, sends)
    }

    /// The counters of the next `count` batches the follower reads, in the order they came.
    async fn received(follower: &mut DuplexStream, count: usize) -> Vec<u64> {
        let mut frames = Frames::new(1 << 20);
        let mut counters = Vec::new();
        for _ in 0..count {
            let frame = (frames.next(follower).await)
                .expect("read")
                .expect("a frame");
            let batch = binary::decode_batch(&frame).expect("a batch");
            counters.push(batch.writes[0].version.counter);
        }
        counters
    }

    #[tokio::test]
    async fn batches_in_flight_get_their_own_answers_in_order_and_a_refusal_is_a_failure() {
        let (_stream, mut follower, sends) = sending(3);
        // The follower reads the three batches, then answers them in the order they came.
        let counters = received(&mut follower, 3).await;
        let mut out = Vec::new();
        for &counter in &counters {
            let answer = if counter == 2 {
                Answer::Refused {
                    status: 409,
                    body: r#"{"error":"stale_term","term":4,"leader":"http://b"}"#.to_owned(),
                }
            } else {
                acked(counter)
            };
            binary::encode_answer(&answer, &mut out);
        }
        follower.write_all(&out).await.expect("written");
        for (counter, send) in (1..=3).zip(sends) {
            let result = send.await.expect("joined");
            if counter == 2 {
                let failure = result.expect_err("refused");
                assert_eq!(failure.kind, "stale_term");
                assert_eq!(failure.newer_term, Some((4, Some("http://b".to_owned()))));
            } else {
                let ack = result.expect("acked");
                assert_eq!(ack.acks[0].version, Version::new(1, counter));
            }
        }
    }

    #[tokio::test]
    async fn answers_out_of_step_with_the_batches_end_the_stream() {
        let (stream, mut follower, sends) = sending(2);
        received(&mut follower, 2).await;
        // The first answer names a write that neither batch holds.
        let mut out = Vec::new();
        binary::encode_answer(&acked(9), &mut out);
        follower.write_all(&out).await.expect("written");
        for send in sends {
            let failure = send.await.expect("joined").expect_err("out of step");
            assert!(failure.reason.contains("out of step"), "{failure}");
        }
        assert!(!stream.usable());
    }

    #[tokio::test]
    async fn a_stream_that_breaks_fails_the_batches_waiting_on_it_and_takes_no_more() {
        let (stream, follower, mut sends) = sending(1);
        tokio::task::yield_now().await;
        drop(follower);
        let failure = (sends.pop().expect("one send"))
            .await
            .expect("joined")
            .expect_err("the stream broke");
        assert_eq!(failure.kind, "other");
        // The task has ended: the stream says so, and a batch sent now fails at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stream.usable() {
            assert!(Instant::now() < deadline, "the stream still looks usable");
            tokio::task::yield_now().await;
        }
        assert!(stream.send(batch(2)).await.is_err());
    }
}
