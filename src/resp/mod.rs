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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::node::Node;
use crate::node::kv::MAX_KEY_BYTES;
use crate::server::next_connection;
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
    /// What a command may hold: a key and a value, and up to 1024 keys (`MGET`, `DEL`).
    fn wire(&self) -> Limits {
        Limits {
            max_bulk: self.max_value_bytes.max(MAX_KEY_BYTES),
            max_parts: 1 + 1024,
        }
    }
}

/// Accepts connections on `listener` and serves each until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    limits: RespLimits,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let ids = AtomicU64::new(1);
    while let Some((stream, peer)) = next_connection(&listener, &mut stop).await {
        let context = Context {
            node: Arc::clone(&node),
            max_value_bytes: limits.max_value_bytes,
            id: ids.fetch_add(1, Ordering::Relaxed),
        };
        let permit = Arc::clone(&connections).try_acquire_owned();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permit else {
                refuse(stream).await;
                return;
            };
            tokio::select! {
                ended = connection(stream, context, limits) => {
                    if let Err(why) = ended {
                        debug!(%peer, %why, "RESP connection closed");
                    }
                }
                _ = stopped(stop) => {}
            }
        });
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
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
        /// Whether to stop the task when the client goes (`WAIT`). A write's task is left to
        /// finish: its outcome goes to the metrics and the event feed.
        abort_on_close: bool,
    },
}

/// What woke a connection.
enum Event {
    Answered(Reply),
    Read(std::io::Result<usize>),
    Late,
}

/// Stops the `WAIT`s of a connection that closed: nobody reads their replies.
fn abort_waits(replies: &VecDeque<Slot>) {
    for slot in replies {
        if let Slot::Waiting {
            task,
            abort_on_close: true,
        } = slot
        {
            task.abort();
        }
    }
}

/// Serves one connection: reads commands, runs them, answers in order. Returns why it closed.
async fn connection(
    mut stream: TcpStream,
    context: Context,
    limits: RespLimits,
) -> Result<(), String> {
    let wire = limits.wire();
    let mut session = Session::default();
    let mut input: Vec<u8> = Vec::with_capacity(4096);
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    let mut replies: VecDeque<Slot> = VecDeque::new();
    // When the first byte of a command not yet whole arrived.
    let mut partial_since: Option<Instant> = None;
    let mut closing = false;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Every whole command in the buffer, in order.
        let mut used = 0;
        while !closing && replies.len() < MAX_IN_FLIGHT {
            match wire::parse(&input[used..], &wire) {
                Ok(Some((parts, taken))) => {
                    used += taken;
                    if parts.is_empty() {
                        continue;
                    }
                    replies.push_back(match command::run(parts, &mut session, &context) {
                        Answer::Now(reply) => Slot::Ready(reply),
                        Answer::Later {
                            task,
                            abort_on_close,
                        } => Slot::Waiting {
                            task,
                            abort_on_close,
                        },
                    });
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
        partial_since = match (input.is_empty(), partial_since) {
            (true, _) => None,
            (false, Some(since)) if used == 0 => Some(since),
            (false, _) => Some(Instant::now()),
        };

        // The replies that are ready, in order; then send them.
        while let Some(Slot::Ready(_)) = replies.front() {
            if let Some(Slot::Ready(reply)) = replies.pop_front() {
                reply.encode(&mut output);
            }
        }
        if !output.is_empty() {
            stream
                .write_all(&output)
                .await
                .map_err(|err| err.to_string())?;
            output.clear();
        }
        if closing && replies.is_empty() {
            return Ok(());
        }

        // Then wait for the oldest reply, or more bytes, or a deadline.
        let deadline = match partial_since {
            Some(since) => since + limits.command_timeout,
            None => Instant::now() + IDLE_TIMEOUT,
        };
        let reading = !closing && replies.len() < MAX_IN_FLIGHT;
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
            read = stream.read(&mut chunk), if reading => Event::Read(read),
            () = tokio::time::sleep_until(deadline), if idle => Event::Late,
        };
        match event {
            Event::Answered(reply) => {
                replies.pop_front();
                replies.push_front(Slot::Ready(reply));
            }
            Event::Read(Ok(0)) => {
                abort_waits(&replies);
                return Ok(());
            }
            Event::Read(Ok(n)) => input.extend_from_slice(&chunk[..n]),
            Event::Read(Err(err)) => {
                abort_waits(&replies);
                return Err(err.to_string());
            }
            Event::Late => {
                return Err(match partial_since {
                    Some(_) => "a command did not arrive whole in time".into(),
                    None => "idle".into(),
                });
            }
        }
    }
}
