//! The wait point `after_sync`: the leader hides each write from its own readers until its
//! quorum of followers acknowledged it. Pure and synchronous, like the store it sits beside.
//!
//! Under `after_commit` (MySQL's `AFTER_COMMIT`, and semisync-kv's default) the leader applies a
//! write and shows it at once, then waits for the quorum. A reader of the leader may then see a
//! write that is acknowledged by no follower yet: if the client gets a 503, or the leader dies
//! before the acks came, the reader saw a write that may be lost (a *phantom read*). Under
//! `after_sync` (MySQL's `AFTER_SYNC`, "lossless") the leader applies the write to its store as
//! before, so versions and replication do not change, but [`Hidden`] keeps, for each key with
//! such a write, the newest entry whose quorum was reached: that is what the leader's readers
//! see. Acks keep counting after the client's answer, and a state transfer counts as an ack of
//! every write it carried, so a write that timed out becomes visible once enough acks came.
//!
//! Only writes made under `after_sync` are hidden: a write that readers could already see (made
//! under `after_commit`, or inherited by a promoted leader) stays visible, since hiding it again
//! would take back what a reader saw. A leader that steps down keeps hiding its writes until
//! its new leader's state transfer replaces its state.
//!
//! Why a per-key shadow and not a "visible up to version V" watermark: acks arrive out of order
//! (each message has its own lag), so write 7 may reach its quorum before write 6. A watermark
//! would hide 7 until 6 got there; per key, each write shows as soon as its own quorum holds it,
//! which is all a reader of that key can tell.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::events::FollowerIndex;
use crate::store::{Entry, Store, Version};

/// The writes a leader under `after_sync` made whose quorum has not acknowledged them yet,
/// hidden from its readers. Empty on a follower (but one that just stepped down), and under
/// `after_commit`.
#[derive(Clone, Debug, Default)]
pub struct Hidden {
    /// Each key with a hidden write: what its readers see instead.
    keys: HashMap<String, Shown>,
    /// Each hidden write, by version.
    writes: BTreeMap<Version, Pending>,
}

/// What the readers of a key with hidden writes see.
#[derive(Clone, Debug)]
struct Shown {
    /// The key's newest acknowledged entry; `None` when it has none (it reads as absent).
    entry: Option<Entry>,
    /// The versions of its hidden writes.
    hidden: BTreeSet<Version>,
}

impl Shown {
    /// Whether the store holds an entry of the key newer than every hidden write of it, which
    /// then shows: acknowledged elsewhere, and merged in by a promotion this node attempted
    /// after it stepped down (the only way a store moves past its hidden writes).
    fn overtaken_by(&self, stored: Option<&Entry>) -> bool {
        stored.is_some_and(|entry| self.hidden.last().is_none_or(|&v| entry.version > v))
    }
}

/// One hidden write.
#[derive(Clone, Debug)]
struct Pending {
    key: String,
    entry: Entry,
    /// Acks it needs to become visible.
    quorum: usize,
    /// The followers that hold it, each counted once.
    acked_by: BTreeSet<FollowerIndex>,
}

impl Pending {
    /// Whether its quorum holds it, at a quorum that counts above `floor`, or as many
    /// followers as the floor hold it (then every promotion counted safe merges one of them).
    fn counts(&self, floor: usize) -> bool {
        let acks = self.acked_by.len();
        acks >= self.quorum && (self.quorum >= floor || acks >= floor)
    }
}

/// A write that became visible on the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revealed {
    /// Its key.
    pub key: String,
    /// Its version.
    pub version: Version,
    /// The acks it had then.
    pub acks: usize,
}

impl Hidden {
    /// Whether no write is hidden.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Number of hidden writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Hides `entry`, which the leader has just written to `key` over `previous` (what the
    /// store held before), until `quorum` followers acknowledge it. A write with a quorum of 0
    /// shows at once, and ends the hiding of the key's older writes.
    pub fn hide(&mut self, key: &str, previous: Option<Entry>, entry: Entry, quorum: usize) {
        if quorum == 0 {
            if self.keys.contains_key(key) {
                self.show(key, entry);
            }
            return;
        }
        let version = entry.version;
        let shown = self.keys.entry(key.to_owned()).or_insert_with(|| Shown {
            // What readers see now: the key has no hidden write, so its entry in the store
            // is visible (acknowledged, or made before the wait point was after_sync).
            entry: previous,
            hidden: BTreeSet::new(),
        });
        shown.hidden.insert(version);
        self.writes.insert(
            version,
            Pending {
                key: key.to_owned(),
                entry,
                quorum,
                acked_by: BTreeSet::new(),
            },
        );
    }

    /// Whether the write of `version` is hidden.
    pub fn hides(&self, version: Version) -> bool {
        self.writes.contains_key(&version)
    }

    /// Counts `follower`'s ack of `version`; returns the write if that made it visible. A write
    /// whose quorum is below `floor`, the smallest quorum enough followers heard of (see
    /// [`quorum::established`](super::quorum::established)), stays hidden however many acks it
    /// has: a promotion might not know of its quorum.
    pub fn ack(
        &mut self,
        follower: FollowerIndex,
        version: Version,
        floor: usize,
    ) -> Option<Revealed> {
        let pending = self.writes.get_mut(&version)?;
        pending.acked_by.insert(follower);
        if !pending.counts(floor) {
            return None;
        }
        self.reveal(version)
    }

    /// Shows the write of `version`, which its quorum holds.
    fn reveal(&mut self, version: Version) -> Option<Revealed> {
        let pending = self.writes.remove(&version)?;
        let acks = pending.acked_by.len();
        self.show(&pending.key, pending.entry);
        Some(Revealed {
            key: pending.key,
            version,
            acks,
        })
    }

    /// Counts a state transfer to `follower` of the leader's state at `version` as its ack of
    /// every hidden write up to that version; returns the writes that became visible.
    pub fn ack_through(
        &mut self,
        follower: FollowerIndex,
        version: Version,
        floor: usize,
    ) -> Vec<Revealed> {
        let carried: Vec<Version> = self.writes.range(..=version).map(|(&v, _)| v).collect();
        carried
            .into_iter()
            .filter_map(|version| self.ack(follower, version, floor))
            .collect()
    }

    /// The floor dropped to `floor`: shows the writes whose quorum held them already and now
    /// counts.
    pub fn lower_floor(&mut self, floor: usize) -> Vec<Revealed> {
        let due: Vec<Version> = (self.writes.iter())
            .filter(|(_, pending)| pending.counts(floor))
            .map(|(&version, _)| version)
            .collect();
        due.into_iter()
            .filter_map(|version| self.reveal(version))
            .collect()
    }

    /// Each hidden write: its key and version, by version.
    pub fn writes(&self) -> impl Iterator<Item = (&str, Version)> {
        (self.writes.iter()).map(|(&version, pending)| (pending.key.as_str(), version))
    }

    /// Forgets every hidden write, with the state that held them: a state transfer replaced
    /// it, or the node begins to lead with what it merged.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.writes.clear();
    }

    /// Forgets every ack of the hidden writes, which stay hidden: the node begins to lead a
    /// new term, whose followers may no longer hold what acknowledged them in its earlier
    /// term (another leader's state transfer replaced their state since). The new term's state
    /// transfers count again.
    pub fn forget_acks(&mut self) {
        for pending in self.writes.values_mut() {
            pending.acked_by.clear();
        }
    }

    /// Shows every hidden write, as the store holds it: the wait point went back to
    /// `after_commit`. Returns those that became visible, the newest of each key.
    pub fn show_all(&mut self) -> Vec<Revealed> {
        let mut revealed: Vec<Revealed> = std::mem::take(&mut self.keys)
            .into_iter()
            .filter_map(|(key, shown)| {
                let version = *shown.hidden.last()?;
                let acks = self.writes.get(&version).map_or(0, |w| w.acked_by.len());
                Some(Revealed { key, version, acks })
            })
            .collect();
        self.writes.clear();
        revealed.sort_by_key(|r| r.version);
        revealed
    }

    /// What a reader of `key` sees: its newest acknowledged entry (a tombstone included), or
    /// the store's when it has no hidden write or the store's is newer than all of them.
    pub fn read<'a>(&'a self, key: &str, store: &'a Store) -> Option<&'a Entry> {
        let stored = store.entry(key);
        match self.keys.get(key) {
            Some(shown) if !shown.overtaken_by(stored) => shown.entry.as_ref(),
            _ => stored,
        }
    }

    /// Every live key a reader sees, with its value, sorted by key.
    pub fn dump(&self, store: &Store) -> BTreeMap<String, String> {
        let mut dump = store.dump();
        for (key, shown) in &self.keys {
            if shown.overtaken_by(store.entry(key)) {
                continue;
            }
            match shown.entry.as_ref().and_then(|entry| entry.value.clone()) {
                Some(value) => dump.insert(key.clone(), value),
                None => dump.remove(key),
            };
        }
        dump
    }

    /// Shows `entry` for `key`, unless a newer one shows already. The key's older hidden writes
    /// can no longer show: they go. Once none is left, the store's entry is what shows.
    fn show(&mut self, key: &str, entry: Entry) {
        let Some(shown) = self.keys.get_mut(key) else {
            return;
        };
        let version = entry.version;
        if shown.entry.as_ref().is_none_or(|e| e.version < version) {
            shown.entry = Some(entry);
        }
        let newer = shown.hidden.split_off(&version.next());
        for older in std::mem::replace(&mut shown.hidden, newer) {
            self.writes.remove(&older);
        }
        if shown.hidden.is_empty() {
            self.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader store and its shadow, written to as the write path does.
    #[derive(Default)]
    struct Leader {
        store: Store,
        hidden: Hidden,
    }

    impl Leader {
        fn write(&mut self, key: &str, value: Option<&str>, quorum: usize) -> Version {
            let previous = self.store.entry(key).cloned();
            let entry = self.store.write(key, value.map(str::to_owned));
            let version = entry.version;
            self.hidden.hide(key, previous, entry, quorum);
            version
        }

        fn read(&self, key: &str) -> Option<(Option<&str>, Version)> {
            let entry = self.hidden.read(key, &self.store)?;
            Some((entry.value.as_deref(), entry.version))
        }
    }

    #[test]
    fn a_write_shows_once_its_quorum_acknowledged_it() {
        let mut leader = Leader::default();
        let v1 = leader.write("k", Some("a"), 2);
        assert_eq!(
            leader.read("k"),
            None,
            "no ack yet: the key reads as absent"
        );
        assert!(!leader.hidden.dump(&leader.store).contains_key("k"));
        assert!(leader.hidden.hides(v1));
        assert_eq!(leader.hidden.ack(3, v1, 0), None);
        assert_eq!(leader.hidden.ack(3, v1, 0), None, "a follower counts once");
        assert_eq!(leader.read("k"), None);
        let revealed = leader
            .hidden
            .ack(0, v1, 0)
            .expect("the second ack shows it");
        assert_eq!((revealed.key.as_str(), revealed.version), ("k", v1));
        assert_eq!(revealed.acks, 2);
        assert_eq!(leader.read("k"), Some((Some("a"), v1)));
        assert!(leader.hidden.is_empty());
        assert!(!leader.hidden.hides(v1));
        assert_eq!(
            leader.hidden.ack(4, v1, 0),
            None,
            "a late ack changes nothing"
        );
    }

    #[test]
    fn until_then_the_newest_acknowledged_write_of_the_key_shows() {
        let mut leader = Leader::default();
        let v1 = leader.write("k", Some("a"), 1);
        leader.hidden.ack(0, v1, 0).expect("visible");
        let v2 = leader.write("k", Some("b"), 1);
        let v3 = leader.write("k", None, 1);
        assert_eq!(leader.read("k"), Some((Some("a"), v1)));
        assert_eq!(leader.hidden.dump(&leader.store)["k"], "a");
        // Acks arrive out of order: the delete shows, and the older write never will.
        assert!(leader.hidden.ack(2, v3, 0).is_some());
        assert_eq!(leader.read("k"), Some((None, v3)), "a tombstone");
        assert!(leader.hidden.is_empty(), "v2 can never show: it went");
        assert_eq!(leader.hidden.ack(1, v2, 0), None);
        assert_eq!(leader.read("k"), Some((None, v3)));
    }

    #[test]
    fn an_older_write_that_reaches_its_quorum_later_shows_until_the_newer_does() {
        let mut leader = Leader::default();
        let v1 = leader.write("k", Some("a"), 2);
        let v2 = leader.write("k", Some("b"), 1);
        assert!(leader.hidden.ack(0, v1, 0).is_none());
        assert!(leader.hidden.ack(1, v1, 0).is_some());
        assert_eq!(leader.read("k"), Some((Some("a"), v1)));
        assert!(leader.hidden.ack(0, v2, 0).is_some());
        assert_eq!(leader.read("k"), Some((Some("b"), v2)));
        assert!(leader.hidden.is_empty());
    }

    #[test]
    fn other_keys_and_quorum_zero_show_at_once() {
        let mut leader = Leader::default();
        leader.write("free", Some("x"), 0);
        assert_eq!(leader.read("free"), Some((Some("x"), Version::new(0, 1))));
        let v2 = leader.write("k", Some("a"), 3);
        assert_eq!(leader.hidden.len(), 1);
        // An asynchronous write to the same key is newer than the hidden one: it shows.
        let v3 = leader.write("k", Some("b"), 0);
        assert_eq!(leader.read("k"), Some((Some("b"), v3)));
        assert!(leader.hidden.is_empty());
        assert_eq!(leader.hidden.ack(0, v2, 0), None);
    }

    #[test]
    fn a_state_transfer_acknowledges_every_write_it_carried() {
        let mut leader = Leader::default();
        let v1 = leader.write("a", Some("1"), 2);
        let v2 = leader.write("b", Some("2"), 1);
        let transferred = leader.store.latest_version();
        let v3 = leader.write("c", Some("3"), 1);
        leader.hidden.ack(4, v1, 0);
        let revealed = leader.hidden.ack_through(2, transferred, 0);
        let versions: Vec<Version> = revealed.iter().map(|r| r.version).collect();
        assert_eq!(versions, vec![v1, v2]);
        assert_eq!(leader.read("c"), None, "written after the transfer's copy");
        assert_eq!(leader.hidden.ack_through(2, v3, 0).len(), 1);
        assert!(leader.hidden.is_empty());
    }

    #[test]
    fn a_newer_entry_merged_into_the_store_shows_over_the_hidden_writes() {
        let mut leader = Leader::default();
        let v1 = leader.write("k", Some("a"), 1);
        leader.hidden.ack(0, v1, 0).expect("visible");
        let v2 = leader.write("k", Some("b"), 3);
        leader.write("j", Some("c"), 3);
        assert_eq!(leader.read("k"), Some((Some("a"), v1)));
        // A stepped-down leader's promotion merged a newer leader's writes, then was refused.
        let newest = Version::new(v2.term + 1, 1);
        let newer = |value: Option<&str>| Entry {
            value: value.map(str::to_owned),
            version: newest,
        };
        let merged = [
            ("k".to_owned(), newer(Some("z"))),
            ("j".to_owned(), newer(None)),
        ];
        leader.store.merge(merged);
        assert_eq!(leader.read("k"), Some((Some("z"), newest)));
        assert_eq!(leader.read("j"), Some((None, newest)), "a merged tombstone");
        let dump = leader.hidden.dump(&leader.store);
        assert_eq!(dump, BTreeMap::from([("k".to_owned(), "z".to_owned())]));
    }

    #[test]
    fn showing_all_shows_what_the_store_holds() {
        let mut leader = Leader::default();
        leader.write("k", Some("a"), 5);
        let v2 = leader.write("k", Some("b"), 5);
        leader.hidden.ack(1, v2, 0);
        let v3 = leader.write("j", Some("c"), 5);
        let revealed = leader.hidden.show_all();
        let shown: Vec<(&str, Version, usize)> = (revealed.iter())
            .map(|r| (r.key.as_str(), r.version, r.acks))
            .collect();
        assert_eq!(shown, vec![("k", v2, 1), ("j", v3, 0)]);
        assert!(leader.hidden.is_empty());
        assert_eq!(leader.read("k"), Some((Some("b"), v2)));
        assert_eq!(leader.hidden.dump(&leader.store)["j"], "c");
    }

    #[test]
    fn a_write_below_the_floor_shows_only_once_the_floor_drops_to_its_quorum() {
        let mut leader = Leader::default();
        let v1 = leader.write("k", Some("a"), 2);
        let v2 = leader.write("j", Some("b"), 1);
        assert_eq!(leader.hidden.ack(0, v1, 3), None);
        assert_eq!(
            leader.hidden.ack(1, v1, 3),
            None,
            "2 acks, but quorum 2 < floor 3"
        );
        assert_eq!(leader.hidden.ack(1, v2, 3), None);
        assert!(leader.hidden.lower_floor(3).is_empty());
        let shown: Vec<Version> = (leader.hidden.lower_floor(2).iter())
            .map(|r| r.version)
            .collect();
        assert_eq!(shown, vec![v1], "quorum 1 is still below the floor");
        assert_eq!(leader.read("k"), Some((Some("a"), v1)));
        assert_eq!(leader.read("j"), None);
        assert_eq!(leader.hidden.lower_floor(1).len(), 1);
        assert_eq!(leader.read("j"), Some((Some("b"), v2)));
        // Held by as many followers as the floor, a write counts whatever its quorum.
        let v3 = leader.write("i", Some("c"), 1);
        assert_eq!(leader.hidden.ack(0, v3, 2), None);
        assert!(leader.hidden.ack(1, v3, 2).is_some());
    }
}
