//! The RESP front end: Redis's protocol on `RESP_LISTEN_ADDR`, beside the HTTP API, so that
//! `redis-cli`, `redis-benchmark` and every Redis client work against the cluster. A second thin
//! front end over the same node: `SET` calls the write path `PUT /kv/{key}` calls, and answers
//! `+OK` once the write quorum acknowledged it; `WAIT` counts the followers that hold the
//! connection's last write, as in Redis.
//!
//! - `wire.rs`: the protocol itself, commands in and replies out, pure;
//! - `command.rs`: what each command does;
//! - this file: the listener and the connection loop, with the public API's limits.
//!
//! Commands on one connection answer in order. A write is applied and sent to the followers
//! as soon as it is read, and its wait for the quorum runs beside the commands behind it, so
//! that pipelined writes share the followers' batches; the replies still leave in order.

pub mod command;
pub mod wire;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::node::Node;
use crate::node::kv::MAX_KEY_BYTES;
use crate::server::{SHUTDOWN_GRACE, next_connection, stopped};
use command::{Answer, Context, Session};
use wire::{Limits, Reply};

/// Most commands of one connection waiting for their replies (pipelined writes waiting for
/// their quorum): past it, the connection reads no more until the oldest is answered.
const MAX_IN_FLIGHT: usize = 1024;
/// A connection that sends nothing for this long is closed (Redis's `timeout`, which it leaves
/// at 0; a public server here closes idle connections, as the HTTP listener does).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The RESP listener's limits, from the node's configuration.
#[derive(Clone, Copy, Debug)]
pub struct RespLimits {
    /// `MAX_VALUE_BYTES`.
    pub max_value_bytes: usize,
    /// Most open connections (`MAX_CONCURRENT_REQUESTS`).
    pub max_connections: usize,
    /// How long a command may take to arrive once its first byte did
    /// (`HEADER_READ_TIMEOUT_MS`, as for an HTTP request's head).
    pub command_timeout: Duration,
}

impl RespLimits {
    /// What a command may hold: a key and a value (`SET`), or up to 1024 keys (`MGET`,
    /// `DEL`, `EXISTS`), with room for their headers.
    fn wire(&self) -> Limits {
        let max_parts = 1 + 1024;
        Limits {
            max_bulk: self.max_value_bytes.max(MAX_KEY_BYTES),
            max_parts,
            max_command: (self.max_value_bytes.max(MAX_KEY_BYTES) + max_parts * MAX_KEY_BYTES)
                .saturating_add(max_parts * 32),
        }
    }
}

/// Accepts connections on `listener` and serves each until `stop` turns true. Then, as the
/// HTTP listener does, gives the commands in flight a short grace (`SHUTDOWN_GRACE`): each
/// connection reads no more commands, answers those it read (a `SET` waiting for its quorum
/// gets its `+OK` if the quorum comes in time) and closes; what is still open after the grace
/// is cut off.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    limits: RespLimits,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let ids = AtomicU64::new(1);
    let mut open = JoinSet::new();
    while let Some((stream, peer)) = next_connection(&listener, &mut stop).await {
        // The connections that ended, reaped as new ones come.
        while open.try_join_next().is_some() {}
        let context = Context {
            node: Arc::clone(&node),
            max_value_bytes: limits.max_value_bytes,
            id: ids.fetch_add(1, Ordering::Relaxed),
        };
        let permit = Arc::clone(&connections).try_acquire_owned();
        let stop = stop.clone();
        open.spawn(async move {
            let Ok(_permit) = permit else {
                refuse(stream).await;
                return;
            };
            if let Err(why) = connection(stream, context, limits, stop).await {
                debug!(%peer, %why, "RESP connection closed");
            }
        });
    }
    // No new connections during the grace: they are refused, not left in the backlog.
    drop(listener);
    let drained = async { while open.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        debug!(
            connections = open.len(),
            "RESP connections still open at shutdown were cut off"
        );
    }
    open.abort_all();
}

/// Redis's answer past `maxclients`.
async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::new();
    Reply::err("max number of clients reached").encode(&mut out);
    let _ = stream.write_all(&out).await;
}

/// A reply still to send, in the order its command came.
enum Slot {
    Ready(Reply),
    Waiting {
        task: tokio::task::JoinHandle<Reply>,
        /// A blocking command (`WAIT`): nothing after it runs until it answers, and its task
        /// stops when the client goes. A write's task is left to finish: its outcome goes to
        /// the metrics and the event feed.
        blocking: bool,
    },
}

impl Slot {
    /// Whether it holds up the commands behind it: a blocking command not yet answered.
    fn blocks(&self) -> bool {
        matches!(self, Self::Waiting { blocking: true, .. })
    }
}

/// What woke a connection.
enum Event {
    Answered(Reply),
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Late,
    /// The node is shutting down.
    Stop,
}

/// Stops the `WAIT`s of a connection that closed: nobody reads their replies.
fn abort_waits(replies: &VecDeque<Slot>) {
    for slot in replies {
        if let Slot::Waiting {
            task,
            blocking: true,
        } = slot
        {
            task.abort();
        }
    }
}

/// Most bytes of replies a connection holds for a client that does not read them: past it,
/// the connection runs no more commands until the client has read some.
const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// Serves one connection: reads commands, runs them, answers in order. Reading and writing go
/// on side by side, so that a client that sends a long pipeline before it reads a reply is
/// not stuck behind its own replies. Once `stop` turns true, it runs no more commands, answers
/// those it ran, and closes. Returns why it closed.
async fn connection(
    stream: TcpStream,
    context: Context,
    limits: RespLimits,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let wire = limits.wire();
    let (mut reader, mut writer) = stream.into_split();
    let mut session = Session::default();
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    // Replies encoded, and how much of them the client has taken.
    let (mut output, mut sent): (Vec<u8>, usize) = (Vec::with_capacity(4096), 0);
    let mut replies: VecDeque<Slot> = VecDeque::new();
    // The bytes of the ready replies queued behind a waiting one.
    let mut queued = 0;
    // When the first byte of a command not yet whole arrived, and when the client last took
    // some of its replies.
    let mut partial_since: Option<Instant> = None;
    let mut taken_at = Instant::now();
    // After `QUIT` or a protocol error: answer what came before, then close.
    let mut closing = false;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Every whole command in the buffer, in order, while the client reads its replies.
        let mut used = 0;
        while !closing
            && replies.len() < MAX_IN_FLIGHT
            && output.len() + queued < MAX_OUTPUT
            && !replies.iter().any(Slot::blocks)
        {
            match wire::parse(&input[used..], &wire) {
                Ok(Some((parts, taken))) => {
                    used += taken;
                    if parts.is_empty() {
                        continue;
                    }
                    let slot = match command::run(parts, &mut session, &context) {
                        Answer::Now(reply) => Slot::Ready(reply),
                        Answer::Later { task, blocking } => Slot::Waiting { task, blocking },
                    };
                    if let Slot::Ready(reply) = &slot {
                        queued += reply.size();
                    }
                    replies.push_back(slot);
                    closing = session.quit;
                }
                Ok(None) => break,
                Err(err) => {
                    // Nothing says where the next command begins: answer, then close.
                    replies.push_back(Slot::Ready(Reply::err(format!("Protocol error: {err}"))));
                    closing = true;
                }
            }
        }
        input.drain(..used);
        partial_since = match (input.is_empty() || closing, partial_since) {
            (true, _) => None,
            (false, Some(since)) if used == 0 => Some(since),
            (false, _) => Some(Instant::now()),
        };

        // The replies that are ready, in order, into the output.
        while let Some(Slot::Ready(_)) = replies.front() {
            if let Some(Slot::Ready(reply)) = replies.pop_front() {
                queued = queued.saturating_sub(reply.size());
                reply.encode(&mut output);
            }
        }
        if closing && replies.is_empty() && sent == output.len() {
            linger(reader, writer).await;
            return Ok(());
        }

        // Then whichever comes first: the oldest reply, more bytes, the client taking some of
        // its replies, or a deadline.
        let deadline = match (partial_since, sent < output.len()) {
            (Some(since), _) => since + limits.command_timeout,
            (None, true) => taken_at + IDLE_TIMEOUT,
            (None, false) => Instant::now() + IDLE_TIMEOUT,
        };
        // Input waits behind a blocking command up to one command's worth; it is read on
        // meanwhile to notice the client leave.
        let reading = replies.len() < MAX_IN_FLIGHT
            && output.len() + queued < MAX_OUTPUT
            && input.len() < wire.max_command + wire::MAX_LINE;
        let writing = sent < output.len();
        let idle = replies.is_empty();
        let oldest = async {
            match replies.front_mut() {
                Some(Slot::Waiting { task, .. }) => task.await,
                _ => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            reply = oldest => Event::Answered(
                reply.unwrap_or_else(|err| Reply::err(format!("the command failed: {err}"))),
            ),
            read = reader.read(&mut chunk), if reading => Event::Read(read),
            wrote = writer.write(&output[sent..]), if writing => Event::Wrote(wrote),
            () = tokio::time::sleep_until(deadline), if idle => Event::Late,
            () = stopped(stop.clone()), if !closing => Event::Stop,
        };
        match event {
            Event::Answered(reply) => {
                replies.pop_front();
                queued += reply.size();
                replies.push_front(Slot::Ready(reply));
            }
            Event::Read(Ok(0)) => {
                abort_waits(&replies);
                return Ok(());
            }
            // While closing, what else comes is read to notice the client leave, and dropped.
            Event::Read(Ok(n)) if !closing => input.extend_from_slice(&chunk[..n]),
            Event::Read(Ok(_)) => {}
            Event::Wrote(Ok(n)) => {
                sent += n;
                taken_at = Instant::now();
                if sent == output.len() {
                    output.clear();
                    sent = 0;
                }
            }
            Event::Read(Err(err)) | Event::Wrote(Err(err)) => {
                abort_waits(&replies);
                return Err(err.to_string());
            }
            // As after `QUIT`: answer what came before, then close.
            Event::Stop => closing = true,
            Event::Late => {
                return Err(match partial_since {
                    Some(_) => "a command did not arrive whole in time".into(),
                    None if sent < output.len() => "the client read no reply in time".into(),
                    None => "idle".into(),
                });
            }
        }
    }
}

/// Closes a connection so that its last replies arrive: the write side first, then what the
/// client still sends is read and dropped (for up to 2 s or 1 MiB) until it closes too. A
/// socket closed with unread bytes would send a reset instead, and the client could lose the
/// error that says why (a command too long), as the HTTP listener's lingering close explains.
async fn linger(mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf) {
    let _ = writer.shutdown().await;
    let drain = async {
        let mut chunk = [0u8; 16 * 1024];
        let mut drained = 0;
        while drained < 1024 * 1024 {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::api::AppState;
    use crate::config::Role;

    /// Sends `bytes` on `client` and reads `reply` back, in a blocking task. Tokio's paused
    /// clock does not move while one runs, so the server handles the bytes at the instant they
    /// were sent, however long the kernel takes to hand them over.
    async fn exchange(client: &std::net::TcpStream, bytes: &'static [u8], reply: &'static [u8]) {
        let mut client = client.try_clone().expect("a second handle");
        tokio::task::spawn_blocking(move || {
            client.write_all(bytes).expect("sent");
            let mut got = vec![0; reply.len()];
            client.read_exact(&mut got).expect("still open");
            assert_eq!(got, reply);
        })
        .await
        .expect("the exchange ran");
    }

    /// Reads, the clock running, until the server closes `client`; returns what came.
    async fn until_closed(client: &std::net::TcpStream) -> Vec<u8> {
        let client = client.try_clone().expect("a second handle");
        client.set_nonblocking(true).expect("non-blocking");
        let mut client = TcpStream::from_std(client).expect("registered");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("a clean close");
        got
    }

    /// On a paused clock, which jumps to the next deadline whenever every task waits: a
    /// connection that sends a command now and then stays open however long it lasts, one that
    /// goes silent is closed `IDLE_TIMEOUT` after its last command, and one that sends a command
    /// in pieces is closed `command_timeout` after the command's first byte, not after its
    /// last.
    #[tokio::test(start_paused = true)]
    async fn a_connection_closes_when_idle_or_stalled_and_not_before() {
        let command_timeout = Duration::from_secs(2);
        let state = AppState::new(&crate::api::tests::config(Role::Follower)).expect("valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let limits = RespLimits {
            max_value_bytes: 16,
            max_connections: 4,
            command_timeout,
        };
        let (_stop, stop) = watch::channel(false);
        let server = serve(listener, Arc::clone(state.node()), limits, stop);

        let clients = async {
            let steady = std::net::TcpStream::connect(addr).expect("connects");
            for _ in 0..4 {
                tokio::time::sleep(IDLE_TIMEOUT * 2 / 3).await;
                exchange(&steady, b"PING\r\n", b"+PONG\r\n").await;
            }
            let silent_from = Instant::now();
            assert_eq!(until_closed(&steady).await, b"");
            let silent_for = silent_from.elapsed();
            assert!(
                silent_for >= IDLE_TIMEOUT && silent_for < IDLE_TIMEOUT + command_timeout,
                "closed after {silent_for:?} of silence"
            );

            // A command's first piece comes behind a whole one, whose answer says the server
            // has read both; the next piece comes within the timeout, and the last never.
            let stalled = std::net::TcpStream::connect(addr).expect("connects");
            tokio::time::sleep(command_timeout * 10).await;
            exchange(&stalled, b"PING\r\n*1\r\n", b"+PONG\r\n").await;
            let stalled_from = Instant::now();
            tokio::time::sleep(command_timeout * 3 / 4).await;
            (&stalled).write_all(b"$4\r\nPI").expect("sent");
            assert_eq!(until_closed(&stalled).await, b"");
            let stalled_for = stalled_from.elapsed();
            assert!(
                stalled_for >= command_timeout && stalled_for < command_timeout * 3 / 2,
                "closed after {stalled_for:?} of a command in pieces"
            );
        };
        tokio::select! {
            () = server => panic!("the listener stopped"),
            () = clients => {}
        }
    }
}
