//! What a simulated run did, and the checkers that read it afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::linearizability::{self, Kind, Operation};
use crate::store::Version;

/// A write a client was told succeeded (200).
#[derive(Clone, Debug)]
pub struct Acked {
    /// When the answer came, in simulated milliseconds.
    pub at_ms: u64,
    /// The slot and incarnation of the leader that answered, and its term.
    pub node: usize,
    pub incarnation: u64,
    pub term: u64,
    pub key: String,
    pub value: String,
    pub version: Version,
    /// The quorum it waited for (0: asynchronous, which promises nothing).
    pub quorum: usize,
}

/// A read on a leader under `after_sync`, which shows only writes its quorum acknowledged.
#[derive(Clone, Debug)]
pub struct SyncedRead {
    pub at_ms: u64,
    pub node: usize,
    pub incarnation: u64,
    pub term: u64,
    pub key: String,
    pub version: Version,
}

/// A write the leader applied (answered 200 or 503): its quorum and wait point, by version.
#[derive(Clone, Copy, Debug)]
pub struct Applied {
    pub quorum: usize,
    pub after_sync: bool,
}

/// A promotion or a leader's start that led, with what its answer said.
#[derive(Clone, Debug)]
pub struct Leading {
    pub node: usize,
    pub incarnation: u64,
    pub term: u64,
    /// Whether its answer said it may have lost acknowledged writes (forced, or not safe).
    pub may_lose: bool,
    /// Whether it was forced.
    pub forced: bool,
}

/// Everything a run recorded: the structured records the checkers read, and one line per
/// event for people.
#[derive(Debug, Default)]
pub struct History {
    pub lines: Vec<String>,
    pub acked: Vec<Acked>,
    pub synced_reads: Vec<SyncedRead>,
    /// Every write the leaders applied, by version.
    pub applied: BTreeMap<Version, Applied>,
    /// The writes made under `after_sync` that a switch back to `after_commit` showed before
    /// their quorum held them: from then on readers could see them, as writes made under
    /// `after_commit`, and they promise no more than those.
    pub shown_early: BTreeSet<Version>,
    pub leadings: Vec<Leading>,
    /// Per node slot and incarnation: the highest version seen, to catch one going back.
    pub versions: BTreeMap<(usize, u64), Version>,
    /// Versions that went back: (node, incarnation, from, to).
    pub went_back: Vec<(usize, u64, Version, Version)>,
    /// With automatic failover: when each election led, in simulated milliseconds.
    pub elections: Vec<u64>,
    /// With automatic failover, when no node led at the last heal: how long until one did.
    pub leader_after_heal_ms: Option<u64>,
    /// With automatic failover: why no leader was elected in time, when a person's safe
    /// promotion then led.
    pub not_elected: Option<String>,
    /// Every operation on every key for the linearizability checker, timed by a counter stepped
    /// at each call and each return: the writes that took effect or may have, and the reads a
    /// leader answered under `after_sync` while no node held a newer term.
    pub operations: Vec<(String, Operation)>,
    /// Keys the linearizability checker cannot judge, with why: a write on them that readers
    /// could see and that a safe promotion may still lose, as its quorum or wait point allows.
    pub unjudged: BTreeMap<String, String>,
}

impl History {
    /// Records one line for people.
    pub fn log(&mut self, at_ms: u64, line: impl std::fmt::Display) {
        self.lines.push(format!("{at_ms:>7} ms  {line}"));
    }

    /// The operations on each key the linearizability checker judges, or none when a promotion
    /// said it may have lost acknowledged writes: a read after it may then miss one, as the
    /// promotion said.
    pub fn judged(&self) -> BTreeMap<&str, Vec<Operation>> {
        let mut judged: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
        if self.leadings.iter().any(|leading| leading.may_lose) {
            return judged;
        }
        for (key, operation) in &self.operations {
            if !self.unjudged.contains_key(key) {
                judged.entry(key).or_default().push(operation.clone());
            }
        }
        judged
    }

    /// Records a node's latest version; notes it when it went back.
    pub fn observe_version(&mut self, node: usize, incarnation: u64, version: Version) {
        let seen = self.versions.entry((node, incarnation)).or_default();
        if version < *seen {
            self.went_back.push((node, incarnation, *seen, version));
        }
        *seen = (*seen).max(version);
    }
}

/// One node's state as its readers see it: key → (value, `None` for a tombstone; version).
pub type State = BTreeMap<String, (Option<String>, Version)>;

/// Checks the run's invariants: returns what was violated, empty when nothing was.
pub fn check(history: &History, finals: &[State], leaders: &[usize]) -> Vec<String> {
    let mut violations = Vec::new();

    // Liveness of automatic failover: as live as a person running safe promotions.
    violations.extend(history.not_elected.clone());

    // One leader per term: every write answered 200 (at quorum 1 or more) names its leader and
    // term, and so does every leadership that was not forced. `force` gives this up: it skips
    // the majority that makes a term one node's, so two forced candidates at once can both take
    // a term and both acknowledge writes, each with followers that took the term from it, until
    // they meet at a follower (`term_taken`) or a newer term ends theirs. Their writes are left
    // out, as is a write of quorum 0, which involves no follower and promised nothing.
    let forced: BTreeSet<(u64, usize, u64)> = (history.leadings.iter())
        .filter(|leading| leading.forced)
        .map(|leading| (leading.term, leading.node, leading.incarnation))
        .collect();
    let mut by_term: BTreeMap<u64, BTreeSet<(usize, u64)>> = BTreeMap::new();
    let counted = |write: &&Acked| {
        write.quorum > 0 && !forced.contains(&(write.term, write.node, write.incarnation))
    };
    for write in history.acked.iter().filter(counted) {
        by_term
            .entry(write.term)
            .or_default()
            .insert((write.node, write.incarnation));
    }
    for leading in history.leadings.iter().filter(|leading| !leading.forced) {
        by_term
            .entry(leading.term)
            .or_default()
            .insert((leading.node, leading.incarnation));
    }
    for (term, nodes) in &by_term {
        if nodes.len() > 1 {
            violations.push(format!(
                "term {term} had {} leaders: {}",
                nodes.len(),
                describe_nodes(nodes)
            ));
        }
    }

    // Versions never go back on a node.
    for (node, incarnation, from, to) in &history.went_back {
        violations.push(format!(
            "n{node} (incarnation {incarnation:x}) went back from version {from} to {to}"
        ));
    }

    // Convergence: one leader, and every node holds what it holds.
    if leaders.len() != 1 {
        violations.push(format!(
            "after the last heal, {} nodes lead ({:?}); one should",
            leaders.len(),
            leaders
        ));
    }
    if let Some(first) = finals.first() {
        for (node, state) in finals.iter().enumerate().skip(1) {
            if state != first {
                violations.push(format!(
                    "n{node} did not converge on n0's state: {}",
                    difference(first, state)
                ));
            }
        }
    }

    // No acknowledged write lost, unless a promotion said it might lose writes (forced, or not
    // safe): what it may lose is the older terms', and a forced one also its own term's from
    // any other leader, since it may share that term with a leader it could not see (force
    // skips the majority that makes a term one node's).
    let reference = leaders.first().and_then(|&leader| finals.get(leader));
    if let Some(state) = reference {
        let excused = |term: u64, node: usize, incarnation: u64| {
            history.leadings.iter().any(|leading| {
                leading.may_lose
                    && (term < leading.term
                        || (leading.forced
                            && term == leading.term
                            && (node, incarnation) != (leading.node, leading.incarnation)))
            })
        };
        for write in &history.acked {
            if write.quorum == 0 || excused(write.term, write.node, write.incarnation) {
                continue;
            }
            let held = state.get(&write.key);
            // The workload only puts: a key the final state lacks lost every write of it.
            let kept = match held {
                Some((value, version)) if *version == write.version => {
                    value.as_deref() == Some(write.value.as_str())
                }
                Some((_, version)) => *version > write.version,
                None => false,
            };
            if !kept {
                violations.push(format!(
                    "lost: {} = {} (version {}, quorum {}, term {}, acked by n{} at {} ms); \
                     the final state has {:?}",
                    write.key,
                    write.value,
                    write.version,
                    write.quorum,
                    write.term,
                    write.node,
                    write.at_ms,
                    held
                ));
            }
        }
        // A leader's read under after_sync shows a write made under after_sync only once its
        // quorum acknowledged it: such a write must survive as a write answered 200 does. (A
        // write made before the switch to after_sync showed at once, one that a switch back to
        // after_commit showed before its quorum did so too, and one of quorum 0 promised
        // nothing.)
        for read in &history.synced_reads {
            let promised = (history.applied.get(&read.version))
                .is_some_and(|write| write.after_sync && write.quorum > 0)
                && !history.shown_early.contains(&read.version);
            if !promised || excused(read.term, read.node, read.incarnation) {
                continue;
            }
            let held = state.get(&read.key).map(|(_, version)| *version);
            if held.is_none_or(|version| version < read.version) {
                violations.push(format!(
                    "a read of {} on the leader n{} (term {}, after_sync) at {} ms showed \
                     version {}, which the final state lost (it has {:?})",
                    read.key, read.node, read.term, read.at_ms, read.version, held
                ));
            }
        }
    }
    violations.extend(check_linearizable(history));
    violations
}

/// Linearizability: the leader's reads under after_sync, with the writes, pass the checker the
/// cluster tests use, key by key. A leader replaced by a newer term still answers reads until it
/// hears of it (it holds no lease): those reads are not judged ([`History::judged`]).
pub fn check_linearizable(history: &History) -> Vec<String> {
    (history.judged().into_iter())
        .filter(|(_, operations)| !linearizability::linearizable(operations))
        .map(|(key, operations)| {
            format!(
                "{key} is not linearizable: {}",
                describe_operations(&operations)
            )
        })
        .collect()
}

/// A key's operations, one short item each: `w v7 3..9` (a write answered at 9), `w v8 12..?`
/// (no answer, or not confirmed), `r v7 14..15`, `r - 16..17` (not found).
fn describe_operations(operations: &[Operation]) -> String {
    let items: Vec<String> = (operations.iter())
        .map(|op| {
            let (kind, value) = match &op.kind {
                Kind::Write(value) => ("w", value),
                Kind::Read(value) => ("r", value),
            };
            let ret = op.ret.map_or_else(|| "?".to_owned(), |ret| ret.to_string());
            format!(
                "{kind} {} {}..{ret}",
                value.as_deref().unwrap_or("-"),
                op.call
            )
        })
        .collect();
    items.join(", ")
}

fn describe_nodes(nodes: &BTreeSet<(usize, u64)>) -> String {
    let mut text = String::new();
    for (node, incarnation) in nodes {
        let _ = write!(text, "n{node} (incarnation {incarnation:x}) ");
    }
    text.trim_end().to_owned()
}

/// The keys on which two states differ.
fn difference(a: &State, b: &State) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|key| a.get(*key) != b.get(*key))
        .map(|key| format!("{key}: {:?} vs {:?}", a.get(key), b.get(key)))
        .collect();
    differing.join("; ")
}
