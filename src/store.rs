//! The versioned in-memory map every node holds: pure, synchronous, no I/O. Start reading here.
//!
//! Every write carries a [`Version`] assigned by the leader, and a replica keeps, for each key, only
//! the entry with the highest version it has seen (last writer wins, where "last" means the
//! leader's order, not arrival order). Deletes are kept as versioned tombstones so that a delayed,
//! older write can never bring a deleted key back. Applying the same set of writes in any order,
//! with any duplicates, therefore ends in the same state: that is what makes replicas converge.
//!
//! The map is persistent (`imbl`): a clone shares its nodes with the original and costs the same
//! whatever the store's size, and each side then copies only the nodes it changes. So a node
//! takes a *snapshot* of its store under its lock at no cost, and does whole-store work (a state
//! transfer's copy, a fence's answer, a dump) on the snapshot, after releasing the lock.

use std::collections::BTreeMap;

use imbl::hashmap::{self, HashMap};

use serde::{Deserialize, Serialize};

pub use crate::version::Version;

/// What a key holds at a given version: a value, or a tombstone left by a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The value, or `None` for a tombstone (the key was deleted at this version).
    pub value: Option<String>,
    /// The leader's version of this write.
    pub version: Version,
}

impl Entry {
    /// An entry holding `value`.
    pub fn value(value: impl Into<String>, version: Version) -> Self {
        Self {
            value: Some(value.into()),
            version,
        }
    }

    /// A tombstone: the key was deleted at `version`.
    pub fn tombstone(version: Version) -> Self {
        Self {
            value: None,
            version,
        }
    }
}

/// The key-value map with per-key versions and tombstones. Cloning it takes a snapshot, in
/// constant time (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct Store {
    entries: HashMap<String, Entry>,
    /// Highest version applied so far, across all keys.
    latest: Version,
    /// Entries that hold a value (not tombstones), kept as they change: the heartbeat and
    /// `/health` ask for it under the lock, and counting would read the whole map.
    live: usize,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leader only: assigns the next version to a write of `value` (`None` deletes) and applies it.
    /// Assigning and applying in one step keeps the leader's own state in version order.
    pub fn write(&mut self, key: &str, value: Option<String>) -> Entry {
        let entry = Entry {
            value,
            version: self.latest.next(),
        };
        let old = self.entries.insert(key.to_owned(), entry.clone());
        self.count(
            old.is_some_and(|old| old.value.is_some()),
            entry.value.is_some(),
        );
        self.latest = entry.version;
        entry
    }

    /// Keeps the live-key count as a key that held a value (`was_live`) or not now holds one
    /// (`now_live`) or not.
    fn count(&mut self, was_live: bool, now_live: bool) {
        match (was_live, now_live) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
    }

    /// Applies a replicated write if it is newer than what the store holds for `key`.
    ///
    /// Returns whether the entry was applied. An older or equal version is ignored, which makes
    /// duplicates and late arrivals harmless.
    pub fn apply(&mut self, key: impl Into<String>, entry: Entry) -> bool {
        self.latest = self.latest.max(entry.version);
        let now_live = entry.value.is_some();
        let was_live = match self.entries.entry(key.into()) {
            hashmap::Entry::Occupied(current) if current.get().version >= entry.version => {
                return false;
            }
            hashmap::Entry::Occupied(mut current) => current.insert(entry).value.is_some(),
            hashmap::Entry::Vacant(slot) => {
                slot.insert(entry);
                false
            }
        };
        self.count(was_live, now_live);
        true
    }

    /// Applies every entry of a state transfer with [`Store::apply`]; returns how many were
    /// applied. Merging is safe while live replication goes on, since `apply` is commutative.
    pub fn merge(&mut self, entries: impl IntoIterator<Item = (String, Entry)>) -> usize {
        entries
            .into_iter()
            .map(|(key, entry)| self.apply(key, entry))
            .filter(|&applied| applied)
            .count()
    }

    /// A store of `entries`, as of the sender's `latest` version: what a state transfer that
    /// replaces a follower's state installs.
    pub fn of(entries: impl IntoIterator<Item = (String, Entry)>, latest: Version) -> Self {
        let mut store = Self::new();
        store.merge(entries);
        store.observe(latest);
        store
    }

    /// Every entry, tombstones included: what a state transfer sends.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(key, entry)| (key.as_str(), entry))
    }

    /// Raises the latest version to at least `version`, so that the next [`Store::write`] issues
    /// a newer one (a new leader continues after what its followers hold).
    pub fn observe(&mut self, version: Version) {
        self.latest = self.latest.max(version);
    }

    /// A new leader of `term` starts issuing versions of it, its counter continuing after the
    /// newest version it holds (at least `counter_from`: see `failover`): `term.counter + 1` is
    /// its first. Versions of a newer term beat every one of an older term, whatever their
    /// counters.
    pub fn begin_term(&mut self, term: crate::version::Term, counter_from: u64) {
        if term > self.latest.term {
            self.latest = Version::new(term, self.latest.counter.max(counter_from));
        }
    }

    /// The entry `key` holds, a tombstone included; `None` when it was never written here.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The version `key` holds, a tombstone's included; `None` when it was never written here.
    pub fn version_of(&self, key: &str) -> Option<Version> {
        self.entries.get(key).map(|entry| entry.version)
    }

    /// The live value and version of `key`; `None` when absent or deleted.
    pub fn get(&self, key: &str) -> Option<(&str, Version)> {
        let entry = self.entries.get(key)?;
        Some((entry.value.as_deref()?, entry.version))
    }

    /// Every live key with its value, sorted by key; tombstones are left out.
    pub fn dump(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter_map(|(key, entry)| Some((key.clone(), entry.value.clone()?)))
            .collect()
    }

    /// The highest version this store has applied or seen.
    pub fn latest_version(&self) -> Version {
        self.latest
    }

    /// Number of live keys (tombstones not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the store holds no live key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An owned copy of every entry of `store`, as a state transfer carries them.
#[cfg(test)]
pub(crate) fn copy(store: &Store) -> Vec<(String, Entry)> {
    store
        .entries()
        .map(|(key, entry)| (key.to_owned(), entry.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version `counter` of term 0, the term of a store no leader began one in.
    fn v(counter: u64) -> Version {
        Version::new(0, counter)
    }

    #[test]
    fn leader_writes_get_increasing_versions() {
        let mut store = Store::new();
        assert_eq!(store.write("a", Some("1".into())).version, v(1));
        assert_eq!(store.write("b", Some("2".into())).version, v(2));
        assert_eq!(store.write("a", Some("3".into())).version, v(3));
        assert_eq!(store.get("a"), Some(("3", v(3))));
        assert_eq!(store.latest_version(), v(3));
    }

    #[test]
    fn apply_keeps_the_newest_version_per_key() {
        let mut store = Store::new();
        assert!(store.apply("k", Entry::value("new", v(5))));
        assert!(
            !store.apply("k", Entry::value("old", v(4))),
            "older version must be ignored"
        );
        assert!(
            !store.apply("k", Entry::value("dup", v(5))),
            "equal version is a duplicate"
        );
        assert_eq!(store.get("k"), Some(("new", v(5))));
        assert!(store.apply("k", Entry::value("newer", v(6))));
        assert_eq!(store.get("k"), Some(("newer", v(6))));
    }

    #[test]
    fn tombstone_hides_the_key_and_blocks_older_writes() {
        let mut store = Store::new();
        store.apply("k", Entry::value("v", v(1)));
        assert!(store.apply("k", Entry::tombstone(v(3))));
        assert_eq!(store.get("k"), None);
        assert!(
            !store.apply("k", Entry::value("late", v(2))),
            "a late PUT must not resurrect"
        );
        assert_eq!(store.get("k"), None);
        assert!(store.dump().is_empty());
        assert_eq!(store.len(), 0);
        assert!(store.apply("k", Entry::value("again", v(4))));
        assert_eq!(store.get("k"), Some(("again", v(4))));
    }

    #[test]
    fn tombstone_for_an_unknown_key_is_remembered() {
        let mut store = Store::new();
        assert!(store.apply("k", Entry::tombstone(v(7))));
        assert!(!store.apply("k", Entry::value("v", v(6))));
        assert_eq!(store.get("k"), None);
        assert_eq!(store.latest_version(), v(7));
    }

    #[test]
    fn leader_delete_of_a_missing_key_still_takes_a_version() {
        let mut store = Store::new();
        let entry = store.write("missing", None);
        assert_eq!(entry, Entry::tombstone(v(1)));
        assert_eq!(store.get("missing"), None);
    }

    #[test]
    fn merge_of_a_copy_and_a_store_of_it() {
        let mut leader = Store::new();
        leader.write("a", Some("1".into()));
        leader.write("b", Some("2".into()));
        leader.write("a", None);

        let mut stale = Store::new();
        stale.apply("a", Entry::value("0", v(1)));
        stale.apply("orphan", Entry::value("x", v(9)));
        assert_eq!(
            stale.merge(copy(&leader)),
            2,
            "the tombstone of a and b are news"
        );
        assert_eq!(stale.get("a"), None, "the tombstone travels with the copy");
        assert_eq!(stale.get("b"), Some(("2", v(2))));
        assert_eq!(
            stale.get("orphan"),
            Some(("x", v(9))),
            "merge keeps what the sender lacks"
        );

        let replaced = Store::of(copy(&leader), leader.latest_version());
        assert_eq!(
            replaced.dump(),
            leader.dump(),
            "a store of the copy holds only what the sender holds"
        );
        assert_eq!(replaced.latest_version(), v(3));
    }

    #[test]
    fn observe_moves_the_next_version_past_what_followers_hold() {
        let mut store = Store::new();
        store.observe(v(41));
        assert_eq!(store.write("k", Some("v".into())).version, v(42));
        store.observe(v(7));
        assert_eq!(
            store.latest_version(),
            v(42),
            "observe never lowers the version"
        );
    }

    /// A clone is a snapshot: writes to either side after it do not show in the other.
    #[test]
    fn a_snapshot_keeps_what_the_store_held_when_it_was_taken() {
        let mut store = Store::new();
        store.write("a", Some("1".into()));
        store.write("b", Some("2".into()));
        let snapshot = store.clone();
        store.write("a", Some("changed".into()));
        store.write("b", None);
        store.write("c", Some("new".into()));
        assert_eq!(
            snapshot.dump(),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!((snapshot.len(), snapshot.latest_version()), (2, v(2)));
        assert_eq!(store.dump().len(), 2);
        assert_eq!(store.get("a"), Some(("changed", v(3))));
    }

    /// A new leader's versions are of its term, their counter continuing after what it holds:
    /// they beat every version of an older term, an orphan with a larger counter included.
    #[test]
    fn a_new_term_continues_the_counter_and_beats_older_terms() {
        let mut follower = Store::new();
        follower.apply("k", Entry::value("orphan", Version::new(1, 90)));
        let mut leader = Store::new();
        leader.apply("k", Entry::value("kept", Version::new(1, 41)));
        leader.begin_term(2, 0);
        let new = leader.write("k", Some("new".into()));
        assert_eq!(new.version, Version::new(2, 42));
        assert!(
            follower.apply("k", new),
            "a newer term wins over a larger counter"
        );
        assert_eq!(follower.get("k"), Some(("new", Version::new(2, 42))));
        leader.begin_term(3, 1_000);
        assert_eq!(leader.write("k", None).version, Version::new(3, 1_001));
        leader.begin_term(3, 5_000);
        assert_eq!(
            leader.latest_version(),
            Version::new(3, 1_001),
            "a term begins once"
        );
    }

    /// Every permutation of a history containing overwrites, deletes and a duplicate ends in the
    /// leader's state.
    #[test]
    fn any_arrival_order_converges_to_the_leader_state() {
        let mut leader = Store::new();
        let ops: [(&str, Option<&str>); 6] = [
            ("a", Some("1")),
            ("b", Some("2")),
            ("a", None),
            ("b", Some("3")),
            ("a", Some("4")),
            ("c", None),
        ];
        let mut history: Vec<(String, Entry)> = ops
            .iter()
            .map(|(key, value)| (key.to_string(), leader.write(key, value.map(String::from))))
            .collect();
        history.push(history[1].clone());

        let mut order: Vec<usize> = (0..history.len()).collect();
        let mut permutations = 0;
        loop {
            let mut replica = Store::new();
            for &i in &order {
                let (key, entry) = &history[i];
                replica.apply(key, entry.clone());
            }
            assert_eq!(replica.dump(), leader.dump(), "order {order:?}");
            assert_eq!(replica.latest_version(), leader.latest_version());
            permutations += 1;
            if !next_permutation(&mut order) {
                break;
            }
        }
        assert_eq!(permutations, 5040);
    }

    /// Lexicographic next permutation; false once the last one has been produced.
    fn next_permutation(items: &mut [usize]) -> bool {
        let Some(i) = items.windows(2).rposition(|w| w[0] < w[1]) else {
            return false;
        };
        let j = items
            .iter()
            .rposition(|&x| x > items[i])
            .expect("exists since items[i+1] > items[i]");
        items.swap(i, j);
        items[i + 1..].reverse();
        true
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A client operation on the leader: a PUT (Some) or a DELETE (None) of one of a few keys.
    fn operation() -> impl Strategy<Value = (String, Option<String>)> {
        let key = prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(String::from);
        (key, prop::option::of("[a-z]{0,3}"))
    }

    proptest! {
        /// Whatever the writes and deletes, delivered in any order with any duplicates, every
        /// replica ends in the leader's state.
        #[test]
        fn replicas_converge_on_the_leader(
            operations in prop::collection::vec(operation(), 0..40),
            replicas in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::collection::vec(any::<prop::sample::Index>(), 0..80)),
                1..4,
            ),
        ) {
            let mut leader = Store::new();
            let history: Vec<(String, Entry)> = operations
                .into_iter()
                .map(|(key, value)| { let entry = leader.write(&key, value); (key, entry) })
                .collect();
            for (seed, extra) in replicas {
                // Every message at least once, in a shuffled order, plus duplicates.
                let mut order: Vec<usize> = (0..history.len()).collect();
                if !order.is_empty() {
                    let rotation = seed.index(order.len());
                    order.rotate_left(rotation);
                    for (i, pick) in extra.iter().enumerate() {
                        let len = order.len();
                        order.swap(i % len, pick.index(len));
                    }
                    order.extend(extra.iter().map(|pick| pick.index(history.len())));
                }
                let mut replica = Store::new();
                for i in order {
                    let (key, entry) = &history[i];
                    replica.apply(key, entry.clone());
                }
                prop_assert_eq!(replica.dump(), leader.dump());
                prop_assert_eq!(replica.latest_version(), leader.latest_version());
                prop_assert_eq!(replica.len(), replica.dump().len());
            }
            prop_assert_eq!(leader.len(), leader.dump().len());
        }

        /// A state transfer merged into a replica that already has part of the history, while
        /// the rest still arrives, changes nothing about the outcome.
        #[test]
        fn a_merged_snapshot_commutes_with_live_writes(
            operations in prop::collection::vec(operation(), 1..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut leader = Store::new();
            let history: Vec<(String, Entry)> = operations
                .into_iter()
                .map(|(key, value)| { let entry = leader.write(&key, value); (key, entry) })
                .collect();
            let cut = cut.index(history.len());
            let mut at_cut = Store::new();
            for (key, entry) in &history[..cut] {
                at_cut.apply(key, entry.clone());
            }
            let mut replica = Store::new();
            for (key, entry) in history[cut..].iter().rev() {
                replica.apply(key, entry.clone());
            }
            replica.merge(copy(&at_cut));
            prop_assert_eq!(replica.dump(), leader.dump());
            prop_assert_eq!(replica.len(), leader.dump().len());
        }
    }
}
