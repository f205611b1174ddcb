//! A Wing-Gong-Lowe linearizability checker for one register (one key): is there an order of the
//! operations, each placed between its call and its return, in which every read sees the last
//! write before it? Writes whose answer never came, or said the quorum was not reached, are
//! indeterminate: they may have taken effect at any point after their call, or never.
//!
//! The search linearizes, one at a time, an operation that could come first (it was called
//! before every remaining completed operation returned), and backtracks; states already seen
//! (the set of linearized operations and the register's value) are not searched again (Lowe,
//! "Testing for linearizability", 2017). An indeterminate write of a value no read saw is left
//! out first: it may never have happened, and a linearization that has it has no read of its
//! value before the next write, so leaving it out changes nothing. Kept, each of them doubles
//! the states to search: a history with many of them took minutes.
//!
//! The cluster tests feed it histories timed by the wall clock; the simulator feeds it
//! histories timed by a counter it steps at every call and every return, which orders them
//! exactly as they ran.

use std::collections::HashSet;

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A PUT (`Some`) or a DELETE (`None`).
    Write(Option<String>),
    /// A GET that saw this value (`None`: not found).
    Read(Option<String>),
}

/// One operation on the register: when it was called and when it returned, on any clock that
/// orders them as they happened.
#[derive(Clone, Debug)]
pub struct Operation {
    /// When it was called.
    pub call: u64,
    /// When it returned; `None` for an indeterminate operation (a write whose outcome is
    /// unknown).
    pub ret: Option<u64>,
    /// What it did.
    pub kind: Kind,
}

/// Whether `history` (on a register that starts empty) is linearizable.
pub fn linearizable(history: &[Operation]) -> bool {
    let read: HashSet<&Option<String>> = (history.iter())
        .filter_map(|op| match &op.kind {
            Kind::Read(value) => Some(value),
            Kind::Write(_) => None,
        })
        .collect();
    let history: Vec<Operation> = (history.iter())
        .filter(|op| {
            op.ret.is_some() || matches!(&op.kind, Kind::Write(value) if read.contains(value))
        })
        .cloned()
        .collect();
    let mut seen = HashSet::new();
    search(&history, &Done::new(history.len()), &None, &mut seen)
}

/// The operations linearized so far, a bit each.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Done(Vec<u64>);

impl Done {
    fn new(operations: usize) -> Self {
        Done(vec![0; operations.div_ceil(64)])
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn with(&self, i: usize) -> Self {
        let mut done = self.clone();
        done.0[i / 64] |= 1 << (i % 64);
        done
    }
}

fn search(
    history: &[Operation],
    done: &Done,
    state: &Option<String>,
    seen: &mut HashSet<(Done, Option<String>)>,
) -> bool {
    let remaining = || (0..history.len()).filter(|&i| !done.has(i));
    // Every completed operation linearized: the indeterminate ones left may never have happened.
    if remaining().all(|i| history[i].ret.is_none()) {
        return true;
    }
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    let first_return = remaining()
        .filter_map(|i| history[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for i in remaining().filter(|&i| history[i].call < first_return) {
        let next = match &history[i].kind {
            Kind::Write(value) => value.clone(),
            Kind::Read(seen_value) if seen_value == state => state.clone(),
            Kind::Read(_) => continue,
        };
        if search(history, &done.with(i), &next, seen) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: Option<u64>, kind: Kind) -> Operation {
        Operation { call, ret, kind }
    }
    fn w(v: &str) -> Kind {
        Kind::Write(Some(v.into()))
    }
    fn r(v: Option<&str>) -> Kind {
        Kind::Read(v.map(String::from))
    }

    #[test]
    fn sequential_history() {
        let history = [op(0, Some(1), w("a")), op(2, Some(3), r(Some("a")))];
        assert!(linearizable(&history));
        let stale = [
            op(0, Some(1), w("a")),
            op(2, Some(3), w("b")),
            op(4, Some(5), r(Some("a"))),
        ];
        assert!(
            !linearizable(&stale),
            "a read after a completed write must see it"
        );
    }

    #[test]
    fn concurrent_operations_may_go_either_way() {
        let history = [
            op(0, Some(10), w("a")),
            op(1, Some(2), r(None)),
            op(3, Some(4), r(Some("a"))),
        ];
        assert!(linearizable(&history));
        let flip_flop = [
            op(0, Some(10), w("a")),
            op(1, Some(2), r(Some("a"))),
            op(3, Some(4), r(None)),
        ];
        assert!(
            !linearizable(&flip_flop),
            "once seen, a write cannot be unseen"
        );
    }

    #[test]
    fn an_indeterminate_write_may_or_may_not_have_happened() {
        let seen = [op(0, None, w("a")), op(5, Some(6), r(Some("a")))];
        assert!(linearizable(&seen));
        let unseen = [op(0, None, w("a")), op(5, Some(6), r(None))];
        assert!(linearizable(&unseen));
        let before_its_call = [op(5, None, w("a")), op(0, Some(1), r(Some("a")))];
        assert!(!linearizable(&before_its_call));
    }

    /// Indeterminate writes nobody read are left out, which neither hides a violation nor
    /// makes a history of many of them slow.
    #[test]
    fn indeterminate_writes_nobody_read_change_nothing() {
        let mut history: Vec<Operation> = (0..100)
            .map(|i| op(i, None, w(&format!("lost-{i}"))))
            .collect();
        history.extend([op(0, Some(1), w("a")), op(200, Some(201), r(Some("a")))]);
        assert!(linearizable(&history));
        history.extend([op(300, Some(301), w("b")), op(400, Some(401), r(Some("a")))]);
        assert!(!linearizable(&history), "the stale read is still found");
    }

    /// Histories longer than one machine word of operations, as a simulated run makes: a
    /// stale read in the 300th operation is still found.
    #[test]
    fn long_histories_are_checked_whole() {
        let mut history: Vec<Operation> = (0..150)
            .flat_map(|i| {
                let value = format!("v{i}");
                [
                    op(4 * i, Some(4 * i + 1), w(&value)),
                    op(4 * i + 2, Some(4 * i + 3), r(Some(&value))),
                ]
            })
            .collect();
        assert!(linearizable(&history));
        history.push(op(1000, Some(1001), r(Some("v3"))));
        assert!(!linearizable(&history));
    }
}
