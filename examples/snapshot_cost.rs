//! How long whole-store work holds the replica lock, before and after snapshots.
//!
//! A state transfer's copy, a fence's answer and `/dump` read the whole store. They used to do
//! it under the replica lock, which every request takes; now they take a snapshot under it (a
//! clone of the persistent map) and copy after it. This fills a store with `N` keys and times,
//! best of five, what the lock is held for now (the snapshot) and what it was held for before
//! (the copy a state transfer makes, which now runs after the lock).
//!
//! ```text
//! cargo run --release --example snapshot_cost -- 1000000
//! ```

use std::time::{Duration, Instant};

use semisync_kv::Store;
use semisync_kv::replication::wire::StateTransfer;

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut store = Store::new();
    store.begin_term(1, 0);
    for i in 0..keys {
        store.write(&format!("key-{i}"), Some(format!("value-{i}")));
    }
    let best = |work: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let started = Instant::now();
                work();
                started.elapsed()
            })
            .min()
            .unwrap_or(Duration::ZERO)
    };
    let snapshot = best(&|| drop(std::hint::black_box(store.clone())));
    let copy = best(&|| {
        let transfer = StateTransfer::of(&store, (1, 1), None, (0, 1), 1);
        drop(std::hint::black_box(transfer));
    });
    println!("{keys} keys");
    println!("lock held now, the snapshot:        {snapshot:?}");
    println!("lock held before, the copy itself:  {copy:?}");
    println!(
        "ratio: {:.0}x",
        copy.as_secs_f64() / snapshot.as_secs_f64().max(1e-9)
    );
}
