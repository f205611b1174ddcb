//! A Wing-Gong-Lowe linearizability checker for one register (one key): is there an order of the
//! operations, each placed between its call and its return, in which every read sees the last
//! write before it? Writes that timed out are indeterminate: they may have taken effect at any
//! point after their call, or never.
//!
//! The search linearizes, one at a time, an operation that could come first (it was called
//! before every remaining completed operation returned), and backtracks; states already seen
//! (the set of linearized operations and the register's value) are not searched again (Lowe,
//! "Testing for linearizability", 2017). An indeterminate write of a value no read saw is left
//! out first: it may never have happened, and a linearization that has it has no read of its
//! value before the next write, so leaving it out changes nothing. Kept, each of them doubles
//! the states to search: a history with many of them took minutes.

use std::collections::HashSet;

use reqwest::StatusCode;
use tokio::time::Instant;

use crate::helpers::send;

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A PUT (`Some`) or a DELETE (`None`).
    Write(Option<String>),
    /// A GET that saw this value (`None`: not found).
    Read(Option<String>),
}

/// One operation on the register, with times in microseconds since the test began.
#[derive(Clone, Debug)]
pub struct Operation {
    pub call: u64,
    /// `None` for an indeterminate operation (a write that timed out).
    pub ret: Option<u64>,
    pub kind: Kind,
}

/// Whether `history` (at most 128 operations, on a register that starts empty) is linearizable.
pub fn linearizable(history: &[Operation]) -> bool {
    assert!(
        history.len() <= 128,
        "the checker handles at most 128 operations per key"
    );
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
    search(&history, 0, &None, &mut seen)
}

fn search(
    history: &[Operation],
    done: u128,
    state: &Option<String>,
    seen: &mut HashSet<(u128, Option<String>)>,
) -> bool {
    let remaining = || (0..history.len()).filter(move |&i| done & (1 << i) == 0);
    // Every completed operation linearized: the indeterminate ones left may never have happened.
    if remaining().all(|i| history[i].ret.is_none()) {
        return true;
    }
    if !seen.insert((done, state.clone())) {
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
        if search(history, done | (1 << i), &next, seen) {
            return true;
        }
    }
    false
}

/// One operation of a recorded history: on which key, and what it did when.
pub type Recorded = (String, Operation);

/// Sends `request`, records it as an operation on `key` with its call and return times, and
/// returns the HTTP status. A write answered 503 is indeterminate: it may have taken effect.
pub async fn record(
    history: &std::sync::Mutex<Vec<Recorded>>,
    started: Instant,
    key: &str,
    write: Option<Option<String>>,
    request: reqwest::RequestBuilder,
) -> StatusCode {
    let call = started.elapsed().as_micros() as u64;
    let (status, body) = send(request).await;
    let ret = started.elapsed().as_micros() as u64;
    let (ret, kind) = match (write, status) {
        (Some(value), StatusCode::OK) => (Some(ret), Kind::Write(value)),
        (Some(value), StatusCode::SERVICE_UNAVAILABLE) => (None, Kind::Write(value)),
        (None, StatusCode::OK) => (
            Some(ret),
            Kind::Read(body["value"].as_str().map(String::from)),
        ),
        (None, StatusCode::NOT_FOUND) => (Some(ret), Kind::Read(None)),
        (_, status) => panic!("unexpected answer {status}: {body}"),
    };
    let operation = Operation { call, ret, kind };
    history
        .lock()
        .expect("history")
        .push((key.to_owned(), operation));
    status
}

/// Asserts that the history of each of `keys` in `history` is linearizable.
pub fn assert_linearizable(history: &[Recorded], keys: &[&str]) {
    for key in keys {
        let operations = history_of(history, key);
        assert!(linearizable(&operations), "{key}: {operations:#?}");
    }
}

/// The operations on `key`, in the order they were recorded.
pub fn history_of(history: &[Recorded], key: &str) -> Vec<Operation> {
    history
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, op)| op.clone())
        .collect()
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
}
