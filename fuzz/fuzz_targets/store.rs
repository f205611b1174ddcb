//! The store's apply path: any sequence of versioned writes, applied in the order given and in
//! version order, ends in the same state, and applying it twice changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use semisync_kv::{Entry, Store, Version};

fuzz_target!(|data: &[u8]| {
    // Each 3 bytes: a key (one of 4), a version (term 1..=8, counter 1..=32: writes of a newer
    // term with smaller counters too), and a value or a delete.
    let writes: Vec<(String, Entry)> = data
        .chunks_exact(3)
        .map(|c| {
            let key = format!("k{}", c[0] % 4);
            let version = Version::new(u64::from(c[1] >> 5) + 1, u64::from(c[1] & 31) + 1);
            let value = (c[2] % 5 != 0).then(|| format!("v{}", c[2]));
            (key, Entry { value, version })
        })
        .collect();
    // The leader never issues one version twice: keep the first write of each version.
    let mut seen = std::collections::HashSet::new();
    let writes: Vec<_> = writes.into_iter().filter(|(_, e)| seen.insert(e.version)).collect();

    let mut arrival = Store::new();
    for (key, entry) in &writes {
        arrival.apply(key, entry.clone());
    }
    let mut ordered = Store::new();
    let mut by_version = writes.clone();
    by_version.sort_by_key(|(_, e)| e.version);
    for (key, entry) in &by_version {
        ordered.apply(key, entry.clone());
    }
    assert_eq!(arrival.dump(), ordered.dump());
    assert_eq!(arrival.latest_version(), ordered.latest_version());

    let before = arrival.dump();
    for (key, entry) in &writes {
        assert!(!arrival.apply(key, entry.clone()), "a duplicate is never applied");
    }
    assert_eq!(arrival.dump(), before);
    let copy: Vec<_> = ordered.entries().map(|(key, entry)| (key.to_owned(), entry.clone())).collect();
    assert_eq!(arrival.merge(copy), 0, "a copy of the same state changes nothing");
});
