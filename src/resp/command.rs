//! What each RESP command does: the commands of Redis that a replicated key-value store has,
//! with Redis's semantics, on the node's own read and write paths (the same methods the HTTP
//! routes call). A command either answers at once or hands back a task whose reply comes later
//! (a write waiting for its quorum, `WAIT`); the connection answers both in order.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::wire::{Parts, Reply};
use crate::Version;
use crate::error::Error;
use crate::metrics::Protocol;
use crate::node::Node;
use crate::node::kv::{Writing, check_key};
use crate::replication::Replica;
use crate::replication::quorum::Tally;
use crate::replication::{FollowerState, FollowerView};
use crate::settings::WaitPoint;

/// The commands this server knows, for `COMMAND COUNT`.
pub const COMMANDS: [&str; 19] = [
    "PING",
    "ECHO",
    "SELECT",
    "QUIT",
    "HELLO",
    "GET",
    "MGET",
    "EXISTS",
    "DBSIZE",
    "SET",
    "DEL",
    "WAIT",
    "INFO",
    "ROLE",
    "COMMAND",
    "CLIENT",
    "RESET",
    "READONLY",
    "READWRITE",
];

/// What one connection remembers between its commands.
#[derive(Debug, Default)]
pub struct Session {
    /// The acks of the connection's last write and its version, which `WAIT` counts.
    last_write: Option<(Arc<Tally>, Version)>,
    /// `CLIENT SETNAME`.
    name: Option<Vec<u8>>,
    /// `QUIT` was sent: close after answering it.
    pub quit: bool,
}

/// A command's reply: at once, or from a task.
#[derive(Debug)]
pub enum Answer {
    /// The reply, at once.
    Now(Reply),
    /// The task whose result is the reply.
    Later {
        /// The task.
        task: JoinHandle<Reply>,
        /// A blocking command (`WAIT`): as in Redis, the connection runs nothing after it
        /// until it answers, and it stops when the client goes (it changes nothing). A write
        /// is not: the commands behind it run while it waits for its quorum.
        blocking: bool,
    },
}

impl Answer {
    /// The answer of a write, which does not block the connection.
    fn write(reply: impl Future<Output = Reply> + Send + 'static) -> Self {
        Self::later(reply, false)
    }

    /// The answer `reply` resolves to: at once when it is ready at its first poll (a `SET` at
    /// quorum 0, a `WAIT` its followers already satisfy), otherwise from a task that waits for
    /// it. The first poll costs nothing to undo: the task polls the same future again, with a
    /// waker that wakes it. A panic in the first poll is answered as one in the task would be,
    /// and the connection goes on.
    fn later(reply: impl Future<Output = Reply> + Send + 'static, blocking: bool) -> Self {
        let mut reply = Box::pin(reply);
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reply.as_mut().poll(&mut first)
        }));
        match polled {
            Ok(std::task::Poll::Ready(reply)) => Self::Now(reply),
            Ok(std::task::Poll::Pending) => Self::Later {
                task: tokio::spawn(reply),
                blocking,
            },
            Err(_) => Self::Now(Reply::err("the command failed: it panicked")),
        }
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self::Now(reply)
    }
}

/// What a command may use of its node.
#[derive(Clone, Debug)]
pub struct Context {
    /// The node the connection talks to.
    pub node: Arc<Node>,
    /// `MAX_VALUE_BYTES`.
    pub max_value_bytes: usize,
    /// The connection's number, for `CLIENT ID` and `HELLO`.
    pub id: u64,
}

/// Runs one command.
pub fn run(parts: Parts, session: &mut Session, context: &Context) -> Answer {
    let Some((name, args)) = parts.split_first() else {
        return Reply::err("empty command").into();
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let node = &context.node;
    let arity = |range: std::ops::RangeInclusive<usize>| {
        if range.contains(&args.len()) {
            Ok(())
        } else {
            Err(Reply::err(format!(
                "wrong number of arguments for '{}' command",
                name.to_ascii_lowercase()
            )))
        }
    };
    let result: Result<Answer, Reply> = match name.as_str() {
        "PING" => arity(0..=1).map(|()| match args.first() {
            None => Reply::Simple("PONG").into(),
            Some(message) => Reply::bulk(message.clone()).into(),
        }),
        "ECHO" => arity(1..=1).map(|()| Reply::bulk(args[0].clone()).into()),
        "SELECT" => arity(1..=1).map(|()| match args[0].as_slice() {
            b"0" => Reply::Simple("OK").into(),
            _ => Reply::err("DB index is out of range (semisync-kv has one database, 0)").into(),
        }),
        "QUIT" => {
            session.quit = true;
            Ok(Reply::Simple("OK").into())
        }
        "RESET" => {
            *session = Session::default();
            Ok(Reply::Simple("RESET").into())
        }
        "READONLY" | "READWRITE" => Ok(Reply::Simple("OK").into()),
        "HELLO" => hello(args, context),
        "GET" => arity(1..=1).and_then(|()| Ok(get(node, &args[0])?.into())),
        "MGET" => arity(1..=usize::MAX).and_then(|()| {
            let values: Result<Vec<Reply>, Reply> = args.iter().map(|key| get(node, key)).collect();
            Ok(Reply::Array(values?).into())
        }),
        "EXISTS" => arity(1..=usize::MAX).and_then(|()| {
            let replica = readable(node)?;
            let mut found = 0;
            for key in args {
                let entry = replica.read(&text(key, "key")?);
                found += i64::from(entry.is_some_and(|entry| entry.value.is_some()));
            }
            Ok(Reply::Integer(found).into())
        }),
        "DBSIZE" => arity(0..=0).map(|()| Reply::Integer(node.version_and_keys().1 as i64).into()),
        "SET" => arity(2..=usize::MAX).and_then(|()| set(args, session, context)),
        "DEL" => arity(1..=usize::MAX).and_then(|()| del(args, session, context)),
        "WAIT" => arity(2..=2).and_then(|()| wait(args, session, node)),
        "INFO" => Ok(Reply::bulk(info(node, args)).into()),
        "ROLE" => arity(0..=0).map(|()| role(node).into()),
        "COMMAND" => Ok(command(args).into()),
        "CLIENT" => arity(1..=usize::MAX).and_then(|()| client(args, session, context)),
        _ => Err(unknown(&name, args)),
    };
    result.unwrap_or_else(Answer::Now)
}

/// Redis's error for a command it does not have.
fn unknown(name: &str, args: &[Vec<u8>]) -> Reply {
    let shown: Vec<String> = (args.iter().take(3))
        .map(|arg| format!("'{}'", String::from_utf8_lossy(arg)))
        .collect();
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {}",
        name.to_ascii_lowercase(),
        shown.join(" ")
    ))
}

/// An argument as UTF-8 text: keys and values are text here, as in the HTTP API.
fn text(bytes: &[u8], what: &str) -> Result<String, Reply> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Reply::err(format!(
            "the {what} is not valid UTF-8: semisync-kv stores text, as its HTTP API does"
        ))
    })
}

/// A key argument: UTF-8, 1 to 1024 bytes, as a key in the HTTP API's path.
fn key_of(bytes: &[u8]) -> Result<String, Reply> {
    let key = text(bytes, "key")?;
    check_key(&key).map_err(Reply::err)?;
    Ok(key)
}

/// An argument as an integer, with Redis's error.
fn integer(bytes: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Reply::err("value is not an integer or out of range"))
}

/// The reply to `node`'s error, Redis's way: `READONLY` on a follower (naming the leader's RESP
/// address and URL, as far as it knows them), `NOQUORUM` when the quorum was not reached, `ERR`
/// with the message otherwise. It reads the replica: call it without holding it.
pub fn error_reply(node: &Node, err: &Error) -> Reply {
    match err {
        Error::NotLeader { .. } => {
            // Both as of one moment, so that they name the same leader.
            let (url, resp) = node.leader_addresses();
            let leader = match (resp, url) {
                (Some(resp), Some(url)) => format!("at {resp} (HTTP: {url})"),
                (Some(resp), None) => format!("at {resp}"),
                (None, Some(url)) => format!("at {url} (its RESP address is unknown here)"),
                (None, None) => "unknown to this node".to_owned(),
            };
            Reply::Error(format!(
                "READONLY You can't write against a read only replica. The leader is {leader}"
            ))
        }
        Error::QuorumTimeout(write) => Reply::Error(format!(
            "NOQUORUM applied on the leader, {} of {} acks after {} ms (version {}): not rolled \
             back, it keeps replicating, only not confirmed",
            write.acks, write.quorum, write.timeout_ms, write.version
        )),
        Error::QuorumNotAnnounced { .. } => Reply::Error(format!("NOQUORUM {err}")),
        // Refused before it was applied, as Redis refuses a write its replicas cannot take.
        Error::TooManyHidden { .. } => Reply::Error(format!("NOREPLICAS {err}")),
        // Not readable yet, as Redis answers while it loads its dataset: clients retry.
        Error::StateNotReplicated { .. } => Reply::Error(format!("LOADING {err}")),
        err => Reply::err(err),
    }
}

/// The replica, locked, for a read: refused while `GET /kv/{key}` would be
/// ([`Node::readable`]). The refusal is made once the lock is released, since a reply may read
/// the replica.
fn readable(node: &Node) -> Result<MutexGuard<'_, Replica>, Reply> {
    let replica = node.replica();
    match node.readable() {
        Ok(()) => Ok(replica),
        Err(err) => {
            drop(replica);
            Err(error_reply(node, &err))
        }
    }
}

fn get(node: &Node, key: &[u8]) -> Result<Reply, Reply> {
    let key = key_of(key)?;
    // What `GET /kv/{key}` shows, without waiting: under `after_sync` the leader's readers see
    // a write only once its quorum acknowledged it, and a new leader's state once enough
    // followers of its term hold it.
    let replica = readable(node)?;
    Ok(Reply::Bulk((replica.read(&key)).and_then(|entry| {
        entry.value.clone().map(String::into_bytes)
    })))
}

/// `SET key value`: a write at the live write quorum, answered `+OK` once the quorum
/// acknowledged it. Redis's options change what a write is (expiry, conditions); each is
/// refused by name rather than ignored.
fn set(args: &[Vec<u8>], session: &mut Session, context: &Context) -> Result<Answer, Reply> {
    if let Some(option) = args.get(2) {
        return Err(Reply::err(format!(
            "SET option '{}' is not supported: semisync-kv writes unconditionally and keeps values \
             without expiry (SET key value, and nothing more)",
            String::from_utf8_lossy(option)
        )));
    }
    let key = key_of(&args[0])?;
    let value = text(&args[1], "value")?;
    if value.len() > context.max_value_bytes {
        return Err(error_reply(
            &context.node,
            &Error::PayloadTooLarge {
                what: "value",
                limit: context.max_value_bytes,
            },
        ));
    }
    let writing = begin(context, session, key, Some(value))?;
    let node = Arc::clone(&context.node);
    Ok(Answer::write(async move {
        match writing.finish(&node, Protocol::Resp).await {
            Ok(_) => Reply::Simple("OK"),
            Err(err) => error_reply(&node, &err),
        }
    }))
}

/// Begins a write and makes it the one `WAIT` counts.
fn begin(
    context: &Context,
    session: &mut Session,
    key: String,
    value: Option<String>,
) -> Result<Writing, Reply> {
    let writing = (context.node)
        .begin_write(key, value, None)
        .map_err(|err| error_reply(&context.node, &err))?;
    session.last_write = Some((Arc::clone(writing.tally()), writing.version()));
    Ok(writing)
}

/// `DEL key...`: deletes each key that exists (a versioned tombstone each, at the live write
/// quorum) and answers how many it deleted, once every deletion's quorum acknowledged it.
fn del(args: &[Vec<u8>], session: &mut Session, context: &Context) -> Result<Answer, Reply> {
    let mut keys = Vec::with_capacity(args.len());
    for key in args {
        keys.push(key_of(key)?);
    }
    // Checked first: a follower deletes nothing, and says so even for a key it lacks.
    context
        .node
        .leader()
        .map_err(|err| error_reply(&context.node, &err))?;
    // Each deletion waits for its quorum in a task of its own, so that they wait side by
    // side, and every deletion begun is finished (its outcome counted and published), even
    // when a later one is refused.
    let finish = |writing: Writing| {
        let node = Arc::clone(&context.node);
        tokio::spawn(async move { writing.finish(&node, Protocol::Resp).await })
    };
    let mut deleting = Vec::new();
    let mut refused = None;
    for key in keys {
        // The store's newest entry, a write the wait point still hides included: a key
        // written and not yet confirmed is deleted too, as `DELETE /kv/{key}` would. A key
        // named twice counts once, as in Redis.
        let exists = (context.node.replica().store.entry(&key)).is_some_and(|e| e.value.is_some());
        if !exists {
            continue;
        }
        match begin(context, session, key, None) {
            Ok(writing) => deleting.push(finish(writing)),
            Err(reply) => {
                refused = Some(reply);
                break;
            }
        }
    }
    let node = Arc::clone(&context.node);
    Ok(Answer::write(async move {
        let deleted = deleting.len() as i64;
        let mut failed = refused;
        for deletion in deleting {
            let outcome = deletion.await;
            if failed.is_none() {
                failed = match outcome {
                    Ok(Ok(_)) => None,
                    Ok(Err(err)) => Some(error_reply(&node, &err)),
                    Err(err) => Some(Reply::err(format!("the deletion failed: {err}"))),
                };
            }
        }
        failed.unwrap_or(Reply::Integer(deleted))
    }))
}

/// `WAIT numreplicas timeout`: the number of followers that hold this connection's last
/// write, once `numreplicas` do or `timeout` ms passed (0: no limit), as Redis's `WAIT`. A
/// connection that wrote nothing yet counts the followers that are up.
fn wait(args: &[Vec<u8>], session: &Session, node: &Arc<Node>) -> Result<Answer, Reply> {
    let wanted = integer(&args[0])?;
    let timeout = integer(&args[1])?;
    if timeout < 0 {
        return Err(Reply::err("timeout is negative"));
    }
    let replicator = node
        .leader()
        .map_err(|_| Reply::err("WAIT cannot be used with replica instances"))?;
    let Some((tally, version)) = session.last_write.clone() else {
        let up = (replicator.followers().iter())
            .filter(|follower| follower.state == FollowerState::Up)
            .count();
        return Ok(Reply::Integer(up as i64).into());
    };
    let wanted = usize::try_from(wanted).unwrap_or(0);
    let reply = async move {
        // The followers that acknowledged the write, and those a state transfer carried it to.
        let enough = async {
            loop {
                // Registered before the count: a transfer acknowledged right after it wakes this.
                let transfer = replicator.transfer_acked().notified();
                let mut transfer = std::pin::pin!(transfer);
                transfer.as_mut().enable();
                // The acks still wanted, beside the followers a transfer gave the write: the
                // wait wakes once, when the last of them comes (or a follower is given up).
                let acks = wanted.saturating_sub(replicator.transferred(&tally, version));
                if tally.held() >= acks {
                    return;
                }
                tokio::select! {
                    () = tally.held_by(acks) => {}
                    () = transfer => {}
                }
            }
        };
        if timeout == 0 {
            enough.await;
        } else {
            let _ = tokio::time::timeout(Duration::from_millis(timeout as u64), enough).await;
        }
        Reply::Integer(replicator.holders(&tally, version) as i64)
    };
    Ok(Answer::later(reply, true))
}

/// `INFO [section]`: the replication section (role, term, followers, the quorum and the wait
/// point), and a short server section.
fn info(node: &Node, args: &[Vec<u8>]) -> Vec<u8> {
    let section = args
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let all = matches!(
        section.as_deref(),
        None | Some("all" | "default" | "everything")
    );
    let mut out = String::new();
    if all || section.as_deref() == Some("server") {
        out.push_str(&format!(
            "# Server\r\nsemisync_kv_version:{}\r\nnode_id:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            node.node_id()
        ));
    }
    if all || section.as_deref() == Some("replication") {
        out.push_str("# Replication\r\n");
        let health = node.health();
        match node.replicator() {
            Some(replicator) => {
                let followers = replicator.followers();
                let settings = replicator.settings();
                let up = (followers.iter())
                    .filter(|f| f.state == FollowerState::Up)
                    .count();
                out.push_str(&format!("role:master\r\nterm:{}\r\n", health.term));
                out.push_str(&format!("connected_slaves:{up}\r\n"));
                for (i, follower) in followers.iter().enumerate() {
                    let (host, port) = follower_host_and_port(follower);
                    let state = match follower.state {
                        FollowerState::Up => "online",
                        FollowerState::Down => "down",
                        FollowerState::CatchingUp => "catching_up",
                    };
                    out.push_str(&format!(
                        "slave{i}:id={},ip={host},port={port},state={state},offset={},version={},lag={}\r\n",
                        follower.node_id,
                        follower.acked_version.counter,
                        follower.acked_version,
                        follower.lag_versions
                    ));
                }
                out.push_str(&format!(
                    "master_repl_offset:{}\r\nversion:{}\r\nwrite_quorum:{}\r\nsmallest_quorum:{}\r\nwait_point:{}\r\n",
                    health.version.counter,
                    health.version,
                    settings.write_quorum,
                    replicator.smallest_quorum(),
                    match settings.wait_point {
                        WaitPoint::AfterCommit => "after_commit",
                        WaitPoint::AfterSync => "after_sync",
                    }
                ));
            }
            None => {
                let (leader, resp) = node.leader_addresses();
                let leader = leader.unwrap_or_default();
                let (host, port) = host_and_port_of(resp.as_deref());
                out.push_str(&format!(
                    "role:slave\r\nterm:{}\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_url:{leader}\r\nmaster_link_status:{}\r\nslave_repl_offset:{}\r\nversion:{}\r\n",
                    health.term,
                    if node.hears_leader() { "up" } else { "down" },
                    health.version.counter,
                    health.version,
                ));
            }
        }
    }
    out.into_bytes()
}

/// The host and port of a URL such as `http://kv-follower1:9000/`, or empty strings.
fn host_and_port(url: &str) -> (String, String) {
    reqwest::Url::parse(url).map_or((String::new(), String::new()), |url| {
        (
            url.host_str().unwrap_or_default().to_owned(),
            url.port_or_known_default()
                .map_or(String::new(), |p| p.to_string()),
        )
    })
}

/// Where a follower is reached, as `INFO` and `ROLE` name it: its RESP address
/// (`RESP_PUBLIC_ADDR`), or its internal URL's host and port until it told one.
fn follower_host_and_port(follower: &FollowerView) -> (String, String) {
    match follower.resp_addr.as_deref() {
        Some(addr) => host_and_port_of(Some(addr)),
        None => host_and_port(&follower.url),
    }
}

/// The host and port of a RESP address (`RESP_PUBLIC_ADDR`, host:port), or empty strings
/// without one.
fn host_and_port_of(addr: Option<&str>) -> (String, String) {
    addr.and_then(|addr| addr.rsplit_once(':')).map_or(
        (String::new(), String::new()),
        |(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (host.to_owned(), port.to_owned())
        },
    )
}

/// `ROLE`, as Redis answers it: a leader's offset and followers, or a follower's leader.
fn role(node: &Node) -> Reply {
    let health = node.health();
    let offset = health.version.counter as i64;
    match node.replicator() {
        Some(replicator) => Reply::Array(vec![
            Reply::bulk("master"),
            Reply::Integer(offset),
            Reply::Array(
                (replicator.followers().iter())
                    .map(|follower| {
                        let (host, port) = follower_host_and_port(follower);
                        Reply::Array(vec![
                            Reply::bulk(host),
                            Reply::bulk(port),
                            Reply::bulk(follower.acked_version.counter.to_string()),
                        ])
                    })
                    .collect(),
            ),
        ]),
        None => {
            let (host, port) = host_and_port_of(node.leader_addresses().1.as_deref());
            Reply::Array(vec![
                Reply::bulk("slave"),
                Reply::bulk(host),
                Reply::Integer(port.parse().unwrap_or(0)),
                Reply::bulk(if node.hears_leader() {
                    "connected"
                } else {
                    "connect"
                }),
                Reply::Integer(offset),
            ])
        }
    }
}

/// `COMMAND`: enough for `redis-cli` to start (it asks `COMMAND DOCS` for its hints).
fn command(args: &[Vec<u8>]) -> Reply {
    match args.first().map(|s| s.to_ascii_uppercase()).as_deref() {
        Some(b"COUNT") => Reply::Integer(COMMANDS.len() as i64),
        None | Some(b"DOCS" | b"INFO" | b"LIST") => Reply::Array(Vec::new()),
        Some(other) => Reply::err(format!(
            "unknown subcommand '{}' of COMMAND",
            String::from_utf8_lossy(other)
        )),
    }
}

fn client(args: &[Vec<u8>], session: &mut Session, context: &Context) -> Result<Answer, Reply> {
    let sub = args[0].to_ascii_uppercase();
    Ok(match (sub.as_slice(), &args[1..]) {
        (b"SETNAME", [name]) => {
            session.name = Some(name.clone());
            Reply::Simple("OK").into()
        }
        (b"GETNAME", []) => Reply::Bulk(session.name.clone()).into(),
        (b"SETINFO", [_, _]) => Reply::Simple("OK").into(),
        (b"ID", []) => Reply::Integer(context.id as i64).into(),
        _ => {
            return Err(Reply::err(format!(
                "unknown subcommand or wrong number of arguments for 'CLIENT {}'",
                String::from_utf8_lossy(&args[0])
            )));
        }
    })
}

/// `HELLO [protover]`: RESP2 only. Answers as Redis does for version 2; version 3 is refused
/// with Redis's `NOPROTO`, and a client falls back to RESP2.
fn hello(args: &[Vec<u8>], context: &Context) -> Result<Answer, Reply> {
    if let Some(version) = args.first() {
        match integer(version) {
            Ok(2) => {}
            Ok(_) => {
                return Err(Reply::Error(
                    "NOPROTO sorry, this protocol version is not supported: semisync-kv speaks RESP2 only"
                        .into(),
                ));
            }
            Err(_) => {
                return Err(Reply::err(
                    "Protocol version is not an integer or out of range",
                ));
            }
        }
    }
    let role = match context.node.replicator() {
        Some(_) => "master",
        None => "replica",
    };
    Ok(Reply::Array(vec![
        Reply::bulk("server"),
        Reply::bulk("semisync-kv"),
        Reply::bulk("version"),
        Reply::bulk(env!("CARGO_PKG_VERSION")),
        Reply::bulk("proto"),
        Reply::Integer(2),
        Reply::bulk("id"),
        Reply::Integer(context.id as i64),
        Reply::bulk("mode"),
        Reply::bulk("standalone"),
        Reply::bulk("role"),
        Reply::bulk(role),
        Reply::bulk("modules"),
        Reply::Array(Vec::new()),
    ])
    .into())
}
