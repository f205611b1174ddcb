//! The simulated network: a [`Transport`] that hands each message to the peer's [`Node`] in
//! the same process, after a drawn delay, through the faults the nemesis set: partitions (a
//! blocked direction between two nodes), lost and duplicated messages, paused and crashed
//! nodes. A message that gets no answer makes its sender wait out its timeout, as over TCP; a
//! request whose sender gave up is still delivered when it arrives (a paused node handles it
//! when it resumes), which is how messages come late and out of order.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::RngExt;
use reqwest::StatusCode;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::entropy;
use crate::error::{Error, ErrorBody};
use crate::events::FollowerIndex;
use crate::node::Node;
use crate::replication::transport::{BoxFuture, Failure, Result, Transport, refusal};
use crate::replication::wire::{
    Batch, BatchAck, Fence, FenceAck, Heartbeat, NodeStatus, StateTransfer, TransferAck,
};
use crate::signal::Signal;

/// How long a sender waits for an answer, per exchange; shorter than `HttpTransport`'s for a
/// transfer (the simulated stores are small).
const BATCH_TIMEOUT: Duration = Duration::from_secs(2);
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The message faults in force.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weather {
    /// Chance that a request, or its answer, is lost.
    pub loss: f64,
    /// Chance that a request is delivered twice.
    pub duplicate: f64,
    /// The longest one-way delay, in microseconds (drawn uniformly from 0).
    pub max_delay_us: u64,
}

impl Weather {
    /// A quiet network: nothing lost or repeated, up to 1 ms each way.
    pub const CALM: Weather = Weather {
        loss: 0.0,
        duplicate: 0.0,
        max_delay_us: 1000,
    };
}

/// The six nodes' slots and the faults between them.
#[derive(Debug)]
pub struct Net {
    state: Mutex<State>,
    /// Per node: whether it is paused (`SIGSTOP`); a paused node handles nothing and sends
    /// nothing until it resumes.
    paused: Vec<Signal<bool>>,
}

#[derive(Debug)]
struct State {
    /// The node running in each slot; `None` while crashed.
    nodes: Vec<Option<Arc<Node>>>,
    /// Blocked directions: `(from, to)` drops every message from `from` to `to`.
    blocked: BTreeSet<(usize, usize)>,
    weather: Weather,
}

impl Net {
    /// A network of `size` empty slots.
    pub fn new(size: usize) -> Self {
        Self {
            state: Mutex::new(State {
                nodes: vec![None; size],
                blocked: BTreeSet::new(),
                weather: Weather::CALM,
            }),
            paused: (0..size).map(|_| Signal::new(false)).collect(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node in slot `index`, unless it crashed.
    pub fn node(&self, index: usize) -> Option<Arc<Node>> {
        self.state().nodes[index].clone()
    }

    /// Every slot's node.
    pub fn nodes(&self) -> Vec<Option<Arc<Node>>> {
        self.state().nodes.clone()
    }

    /// Puts `node` in slot `index` (a start or a restart).
    pub fn place(&self, index: usize, node: Option<Arc<Node>>) -> Option<Arc<Node>> {
        std::mem::replace(&mut self.state().nodes[index], node)
    }

    /// Whether slot `index` still runs the node of `incarnation`.
    pub fn runs(&self, index: usize, incarnation: u64) -> bool {
        self.state().nodes[index]
            .as_ref()
            .is_some_and(|node| node.incarnation() == incarnation)
    }

    /// Blocks (or unblocks) the direction `from` → `to`.
    pub fn block(&self, from: usize, to: usize, blocked: bool) {
        let mut state = self.state();
        if blocked {
            state.blocked.insert((from, to));
        } else {
            state.blocked.remove(&(from, to));
        }
    }

    /// Heals every partition.
    pub fn heal(&self) {
        self.state().blocked.clear();
    }

    /// Sets the message faults.
    pub fn set_weather(&self, weather: Weather) {
        self.state().weather = weather;
    }

    /// Pauses or resumes node `index`.
    pub fn pause(&self, index: usize, paused: bool) {
        self.paused[index].replace(paused);
    }

    /// Whether node `index` is paused.
    pub fn is_paused(&self, index: usize) -> bool {
        self.paused[index].get()
    }

    /// Waits while node `index` is paused.
    pub async fn running(&self, index: usize) {
        self.paused[index].wait_for(|paused| !paused).await;
    }

    /// Whether a message from `from` to `to` gets through now: not blocked, not lost.
    fn passes(&self, from: usize, to: usize) -> bool {
        let state = self.state();
        let loss = state.weather.loss;
        !state.blocked.contains(&(from, to)) && !entropy::with(|rng| rng.random_bool(loss))
    }

    /// One way's delay.
    fn delay(&self) -> Duration {
        let max = self.state().weather.max_delay_us;
        Duration::from_micros(entropy::with(|rng| rng.random_range(0..=max)))
    }

    /// How many times a request is delivered: twice, now and then.
    fn copies(&self) -> usize {
        let duplicate = self.state().weather.duplicate;
        1 + usize::from(entropy::with(|rng| rng.random_bool(duplicate)))
    }
}

/// One node's transport: its slot, its incarnation, and the slot of each of its peers.
#[derive(Debug)]
pub struct SimTransport {
    net: Arc<Net>,
    from: usize,
    incarnation: u64,
    /// The slot of each peer, in `PEERS` order.
    peers: Vec<usize>,
}

impl SimTransport {
    /// The transport of the node of `incarnation` in slot `from`.
    pub fn new(net: Arc<Net>, from: usize, incarnation: u64, peers: Vec<usize>) -> Self {
        Self {
            net,
            from,
            incarnation,
            peers,
        }
    }

    /// Sends a request to peer `peer` and waits for its answer until `timeout`: `handle` is
    /// what the peer does with it.
    fn exchange<M, T>(
        &self,
        peer: FollowerIndex,
        message: M,
        timeout: Duration,
        handle: fn(&Node, M) -> std::result::Result<T, Error>,
    ) -> BoxFuture<'_, Result<T>>
    where
        M: Clone + Send + 'static,
        T: Send + 'static,
    {
        Box::pin(async move {
            let to = self.peers[peer];
            let from = self.from;
            // A paused sender sends nothing until it resumes.
            self.net.running(from).await;
            if !self.net.runs(from, self.incarnation) {
                return Err(Failure::new("connect", "this node crashed"));
            }
            let deadline = Instant::now() + timeout;
            let (answer, answered) = oneshot::channel();
            let net = Arc::clone(&self.net);
            tokio::spawn(deliver(net, from, to, message, handle, answer));
            let result = match tokio::time::timeout_at(deadline, answered).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => {
                    // Lost on the way: the sender learns it only from its timeout.
                    tokio::time::sleep_until(deadline).await;
                    Err(Failure::new("timeout", "no answer (lost)"))
                }
                Err(_) => Err(Failure::new("timeout", "no answer in time")),
            };
            // An answer that came while this node was paused is read when it resumes.
            self.net.running(from).await;
            result
        })
    }
}

/// Carries a request from `from` to `to` (twice, if the weather duplicates it: the copies
/// race, each with its own delays), has the node there handle it, and carries the first
/// answer back.
async fn deliver<M: Clone + Send + 'static, T: Send + 'static>(
    net: Arc<Net>,
    from: usize,
    to: usize,
    message: M,
    handle: fn(&Node, M) -> std::result::Result<T, Error>,
    answer: oneshot::Sender<Result<T>>,
) {
    let answer = Arc::new(Mutex::new(Some(answer)));
    let copies: Vec<_> = (0..net.copies())
        .map(|_| {
            let (net, message, answer) = (Arc::clone(&net), message.clone(), Arc::clone(&answer));
            tokio::spawn(async move {
                let Some(result) = carry(&net, from, to, message, handle).await else {
                    return;
                };
                let answer = answer.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(answer) = answer {
                    let _ = answer.send(result);
                }
            })
        })
        .collect();
    for copy in copies {
        let _ = copy.await;
    }
}

/// One copy's round trip; `None` when it or its answer is lost.
async fn carry<M, T>(
    net: &Net,
    from: usize,
    to: usize,
    message: M,
    handle: fn(&Node, M) -> std::result::Result<T, Error>,
) -> Option<Result<T>> {
    if !net.passes(from, to) {
        return None;
    }
    tokio::time::sleep(net.delay()).await;
    // A paused node reads its socket when it resumes.
    net.running(to).await;
    let result = match net.node(to) {
        None => Err(Failure::new("connect", "connection refused")),
        Some(node) => handle(&node, message).map_err(|err| {
            let status = err.status_and_code().0;
            let body = serde_json::to_string(&ErrorBody::from(&err)).unwrap_or_default();
            refusal(
                StatusCode::from_u16(status.as_u16()).unwrap_or_default(),
                &body,
            )
        }),
    };
    if !net.passes(to, from) {
        return None;
    }
    tokio::time::sleep(net.delay()).await;
    Some(result)
}

impl Transport for SimTransport {
    fn replicate(&self, follower: FollowerIndex, batch: Batch) -> BoxFuture<'_, Result<BatchAck>> {
        self.exchange(follower, batch, BATCH_TIMEOUT, Node::receive_batch)
    }

    fn heartbeat(
        &self,
        follower: FollowerIndex,
        heartbeat: Heartbeat,
    ) -> BoxFuture<'_, Result<NodeStatus>> {
        self.exchange(follower, heartbeat, STATUS_TIMEOUT, Node::receive_heartbeat)
    }

    fn transfer(
        &self,
        follower: FollowerIndex,
        transfer: StateTransfer,
    ) -> BoxFuture<'_, Result<TransferAck>> {
        self.exchange(follower, transfer, TRANSFER_TIMEOUT, Node::receive_transfer)
    }

    fn status(&self, peer: FollowerIndex) -> BoxFuture<'_, Result<NodeStatus>> {
        self.exchange(peer, (), STATUS_TIMEOUT, |node, ()| Ok(node.status()))
    }

    fn fence(&self, peer: FollowerIndex, fence: Fence) -> BoxFuture<'_, Result<FenceAck>> {
        self.exchange(peer, fence, FENCE_TIMEOUT, Node::receive_fence)
    }
}
