//! The nemesis: the faults a simulated run suffers, drawn from the run's seed.

use std::fmt;

use rand::RngExt;
use rand::rngs::SmallRng;

use super::network::Weather;
use crate::settings::WaitPoint;

/// One fault, or its repair.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// These nodes are cut off from the others, both ways.
    Split(Vec<usize>),
    /// Messages from the first node to the second are dropped; the other way works.
    OneWay(usize, usize),
    /// Every partition heals.
    Heal,
    /// The node crashes: its memory is lost.
    Crash(usize),
    /// A crashed node starts again, empty, with `ROLE=leader` when `leader`.
    Restart { node: usize, leader: bool },
    /// The node stops (`SIGSTOP`): it handles and sends nothing.
    Pause(usize),
    /// The node goes on (`SIGCONT`).
    Resume(usize),
    /// Message loss, duplication and delay change.
    Weather(Weather),
    /// `PATCH /admin/settings {"write_quorum": q}` on the leader.
    Quorum(usize),
    /// `PATCH /admin/settings {"wait_point": ...}` on the leader.
    WaitPoint(WaitPoint),
    /// `POST /admin/promote` on these nodes at once (one or two), with `force`.
    Promote { nodes: Vec<usize>, force: bool },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Split(side) => write!(f, "partition: {} | the rest", names(side)),
            Fault::OneWay(from, to) => write!(f, "one-way partition: n{from} -> n{to} dropped"),
            Fault::Heal => f.write_str("heal every partition"),
            Fault::Crash(node) => write!(f, "crash n{node}"),
            Fault::Restart { node, leader } => {
                let role = if *leader { "leader" } else { "follower" };
                write!(f, "restart n{node} with ROLE={role}")
            }
            Fault::Pause(node) => write!(f, "pause n{node}"),
            Fault::Resume(node) => write!(f, "resume n{node}"),
            Fault::Weather(weather) => write!(
                f,
                "network: {:.0}% lost, {:.0}% duplicated, delays up to {} ms",
                weather.loss * 100.0,
                weather.duplicate * 100.0,
                weather.max_delay_us as f64 / 1000.0
            ),
            Fault::Quorum(quorum) => write!(f, "set write_quorum={quorum} on the leader"),
            Fault::WaitPoint(point) => write!(f, "set wait_point={point} on the leader"),
            Fault::Promote { nodes, force } => {
                write!(
                    f,
                    "promote {}{}",
                    names(nodes),
                    if *force { " (force)" } else { "" }
                )
            }
        }
    }
}

fn names(nodes: &[usize]) -> String {
    let names: Vec<String> = nodes.iter().map(|node| format!("n{node}")).collect();
    names.join(" ")
}

/// What the nemesis knows of the cluster when it draws the next fault.
#[derive(Debug)]
pub struct Scene {
    pub nodes: usize,
    pub crashed: Vec<usize>,
    pub paused: Vec<usize>,
}

/// Draws the next fault.
pub fn draw(rng: &mut SmallRng, scene: &Scene) -> Fault {
    let nodes = scene.nodes;
    let any = |rng: &mut SmallRng| rng.random_range(0..nodes);
    loop {
        let fault = match rng.random_range(0..100) {
            0..15 => {
                let mut side: Vec<usize> = (0..nodes).filter(|_| rng.random_bool(0.4)).collect();
                if side.is_empty() || side.len() == nodes {
                    side = vec![any(rng)];
                }
                Fault::Split(side)
            }
            15..22 => {
                let from = any(rng);
                let to = (from + rng.random_range(1..nodes)) % nodes;
                Fault::OneWay(from, to)
            }
            22..34 => Fault::Heal,
            // At most two crashed at once: more is a disaster no promotion is meant to survive.
            34..42 if scene.crashed.len() < 2 => Fault::Crash(any(rng)),
            42..52 if !scene.crashed.is_empty() => Fault::Restart {
                node: scene.crashed[rng.random_range(0..scene.crashed.len())],
                leader: rng.random_bool(0.4),
            },
            52..58 => Fault::Pause(any(rng)),
            58..66 if !scene.paused.is_empty() => {
                Fault::Resume(scene.paused[rng.random_range(0..scene.paused.len())])
            }
            66..74 => Fault::Weather(Weather {
                loss: [0.0, 0.0, 0.05, 0.2][rng.random_range(0..4)],
                duplicate: [0.0, 0.1, 0.3][rng.random_range(0..3)],
                max_delay_us: [1_000, 10_000, 100_000, 600_000][rng.random_range(0..4)],
            }),
            74..82 => Fault::Quorum(rng.random_range(1..nodes)),
            82..86 => Fault::WaitPoint(if rng.random_bool(0.5) {
                WaitPoint::AfterSync
            } else {
                WaitPoint::AfterCommit
            }),
            86..100 => {
                let first = any(rng);
                let mut promoted = vec![first];
                if rng.random_bool(0.25) {
                    promoted.push((first + rng.random_range(1..nodes)) % nodes);
                }
                Fault::Promote {
                    nodes: promoted,
                    force: rng.random_bool(0.2),
                }
            }
            _ => continue,
        };
        return fault;
    }
}
